-- The newest row of a device in switch_readings and power_logs (health):
-- their keys put component and channel before the time, so without an
-- index on (device_id, time) PostgreSQL walks the time index backwards and
-- filters by device, which for a device with no rows there (a meter has
-- no switch channels) reads the whole table. Partitions made later get
-- the index from their parent.
CREATE INDEX switch_readings_device_ts_idx ON switch_readings (device_id, ts);
CREATE INDEX power_logs_device_timestamp_idx ON power_logs (device_id, "timestamp");
