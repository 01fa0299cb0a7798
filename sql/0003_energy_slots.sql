-- Energy per 15-minute slot, phase and device: a faithful running sum of
-- energy_intervals, kept by statement-level triggers (one aggregation per
-- COPY or INSERT, over its transition table), so it can never disagree with
-- the intervals, whoever writes them. Reports over months and years read
-- these slots instead of every record. A record that crosses a slot
-- boundary is shared pro rata by time between the slots it covers.
-- Slots start at multiples of 15 minutes since the epoch (every tariff
-- boundary at a quarter hour of local time falls on one).
-- The trigger functions run with jit = off: generate_series' row estimate
-- makes the planner JIT-compile each statement (about 0.45 s) for work that
-- takes milliseconds.

CREATE TABLE energy_slots (
    device_id   text NOT NULL,
    slot_start  timestamptz NOT NULL,
    channel     text NOT NULL,
    import_wh   numeric NOT NULL DEFAULT 0,
    export_wh   numeric NOT NULL DEFAULT 0,
    covered     interval NOT NULL DEFAULT '0',   -- time of the slot covered by records
    PRIMARY KEY (device_id, slot_start, channel)
);

-- The statement that adds (sign 1) or removes (sign -1) the rows of `src`
-- (a transition table, or energy_intervals itself) to or from the slots.
CREATE FUNCTION energy_slots_sql(src text, sign integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT format($f$
    INSERT INTO energy_slots AS s (device_id, slot_start, channel, import_wh, export_wh, covered)
    SELECT device_id, slot, channel, %2$s * COALESCE(sum(i), 0), %2$s * COALESCE(sum(e), 0), %2$s * sum(c)
      FROM (
        SELECT device_id, date_bin('15 minutes', start_ts, timestamptz 'epoch') AS slot, channel,
               energy_wh AS i, returned_energy_wh AS e, end_ts - start_ts AS c
          FROM %1$I
         WHERE end_ts <= date_bin('15 minutes', start_ts, timestamptz 'epoch') + interval '15 minutes'
        UNION ALL
        SELECT r.device_id, g.slot, r.channel, r.energy_wh * o.share, r.returned_energy_wh * o.share, o.overlap
          FROM %1$I r,
               LATERAL generate_series(date_bin('15 minutes', r.start_ts, timestamptz 'epoch'),
                                       r.end_ts - interval '1 microsecond', interval '15 minutes') AS g(slot),
               LATERAL (SELECT LEAST(r.end_ts, g.slot + interval '15 minutes') - GREATEST(r.start_ts, g.slot) AS overlap) ov,
               LATERAL (SELECT ov.overlap AS overlap,
                               EXTRACT(EPOCH FROM ov.overlap) / EXTRACT(EPOCH FROM r.end_ts - r.start_ts) AS share) o
         WHERE r.end_ts > date_bin('15 minutes', r.start_ts, timestamptz 'epoch') + interval '15 minutes'
      ) x
     GROUP BY device_id, slot, channel
    ON CONFLICT (device_id, slot_start, channel) DO UPDATE SET
        import_wh = s.import_wh + EXCLUDED.import_wh,
        export_wh = s.export_wh + EXCLUDED.export_wh,
        covered = s.covered + EXCLUDED.covered
$f$, src, sign)
$$;

CREATE FUNCTION energy_slots_on_insert() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
    EXECUTE energy_slots_sql('new_rows', 1);
    RETURN NULL;
END $$;

CREATE FUNCTION energy_slots_on_delete() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
    EXECUTE energy_slots_sql('old_rows', -1);
    RETURN NULL;
END $$;

CREATE FUNCTION energy_slots_on_update() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $$
BEGIN
    EXECUTE energy_slots_sql('old_rows', -1);
    EXECUTE energy_slots_sql('new_rows', 1);
    RETURN NULL;
END $$;

CREATE FUNCTION energy_slots_on_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE energy_slots;
    RETURN NULL;
END $$;

CREATE TRIGGER energy_slots_insert AFTER INSERT ON energy_intervals
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION energy_slots_on_insert();
CREATE TRIGGER energy_slots_delete AFTER DELETE ON energy_intervals
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION energy_slots_on_delete();
CREATE TRIGGER energy_slots_update AFTER UPDATE ON energy_intervals
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION energy_slots_on_update();
CREATE TRIGGER energy_slots_truncate AFTER TRUNCATE ON energy_intervals
    FOR EACH STATEMENT EXECUTE FUNCTION energy_slots_on_truncate();

-- Data that is already there.
DO $$ BEGIN EXECUTE energy_slots_sql('energy_intervals', 1); END $$;
