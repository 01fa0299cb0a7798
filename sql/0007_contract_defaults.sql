-- Schema contract (README "Schema contract"): a row that a user's own SQL
-- inserts with only a table's contract columns is accepted.
--
-- energy_intervals.source (which interval database a record came from) had
-- no default, so `INSERT INTO energy_intervals (device_id, channel,
-- start_ts, end_ts, energy_wh)` failed. Rows without it are taken to come
-- from the three-phase meters' interval database, the usual case; a
-- metadata-only change, instant on large tables.
ALTER TABLE energy_intervals ALTER COLUMN source SET DEFAULT 'emdata:0';
