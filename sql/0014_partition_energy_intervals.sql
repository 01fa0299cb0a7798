-- energy_intervals by month of start_ts (see 0010).
--
-- The statement-level triggers with transition tables that kept
-- energy_slots go: partitions cannot have them, and neither TimescaleDB
-- hypertables nor Citus distributed tables support them. Slots are now
-- written in the same statement as the records they come from (the ingest
-- page's transaction), and `shellyctl slots rebuild|check` repairs and
-- verifies any range (src/db/slots.rs).
DROP TRIGGER energy_slots_insert ON energy_intervals;
DROP TRIGGER energy_slots_delete ON energy_intervals;
DROP TRIGGER energy_slots_update ON energy_intervals;
DROP TRIGGER energy_slots_truncate ON energy_intervals;
DROP FUNCTION energy_slots_on_insert();
DROP FUNCTION energy_slots_on_delete();
DROP FUNCTION energy_slots_on_update();
DROP FUNCTION energy_slots_on_truncate();
DROP FUNCTION energy_slots_sql(text, integer);

SELECT shellyctl_partition_table('energy_intervals', 'start_ts');
