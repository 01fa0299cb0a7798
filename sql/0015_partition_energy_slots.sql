-- energy_slots by month of slot_start (see 0010 and 0014).
SELECT shellyctl_partition_table('energy_slots', 'slot_start');
