-- power_readings by month of ts (see 0010).
SELECT shellyctl_partition_table('power_readings', 'ts');
