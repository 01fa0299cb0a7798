-- switch_readings by month of ts (see 0010).
SELECT shellyctl_partition_table('switch_readings', 'ts');
