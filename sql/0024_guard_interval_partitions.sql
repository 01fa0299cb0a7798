-- The statement trigger of 0020 notes other writers' statements on
-- energy_intervals. PostgreSQL fires a statement-level trigger only for the
-- table a statement names: an INSERT, UPDATE, DELETE or TRUNCATE addressed
-- to a partition (energy_intervals_p202612, _default, _history) went
-- unnoticed, and reports billed slots that no longer matched the records.
-- Every partition gets the same trigger; a statement through the parent
-- still fires only the parent's (shellyctl's writers are not noted either
-- way). New partitions get it from shellyctl_guard_interval_partitions(),
-- which db::partitions calls whenever it made one.
CREATE FUNCTION shellyctl_guard_interval_partitions() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part regclass;
    made integer := 0;
BEGIN
    FOR part IN
        SELECT t.relid FROM pg_partition_tree('energy_intervals') t
         WHERE t.relid <> 'energy_intervals'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_trigger g
                            WHERE g.tgrelid = t.relid AND g.tgname = 'energy_intervals_foreign_write')
    LOOP
        BEGIN
            EXECUTE format('CREATE TRIGGER energy_intervals_foreign_write
                                AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                                FOR EACH STATEMENT EXECUTE FUNCTION energy_intervals_note_foreign_write()', part);
            made := made + 1;
        EXCEPTION WHEN duplicate_object THEN
            NULL; -- guarded by a concurrent session
        END;
    END LOOP;
    RETURN made;
END $$;

SELECT shellyctl_guard_interval_partitions();
