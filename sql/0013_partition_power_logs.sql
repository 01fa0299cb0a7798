-- power_logs by month of "timestamp" (see 0010).
SELECT shellyctl_partition_table('power_logs', 'timestamp');
