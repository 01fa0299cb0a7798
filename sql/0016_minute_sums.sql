-- One-minute aggregates written with the raw readings instead of by
-- retention: every writer of power_readings adds its row to its minute in
-- the same statement, so retention only drops whole months (no
-- aggregation to wait for). A running average cannot be merged exactly,
-- so each column keeps its sum and count, and `<column>_avg` becomes a
-- generated column: sum / count is what avg() computes for numeric.
-- Then the raw readings still kept are aggregated once.
DO $$
DECLARE
    cols text[] := ARRAY['total_power_w', 'phase_a_power_w', 'phase_b_power_w', 'phase_c_power_w',
                         'phase_a_voltage_v', 'phase_b_voltage_v', 'phase_c_voltage_v',
                         'phase_a_current_a', 'phase_b_current_a', 'phase_c_current_a'];
    add_sums text;
    set_sums text;
    drop_avgs text;
    add_avgs text;
BEGIN
    -- An old aggregate's count per column is not known: every reading of
    -- the minute had the value when the average is not null (a meter
    -- reports a phase always or never). One statement for all columns, so
    -- the table is rewritten once.
    SELECT string_agg(format('ADD COLUMN %I numeric, ADD COLUMN %I integer NOT NULL DEFAULT 0', c || '_sum', c || '_n'), ', '),
           string_agg(format('%I = %I * readings, %I = CASE WHEN %I IS NULL THEN 0 ELSE readings END',
                             c || '_sum', c || '_avg', c || '_n', c || '_avg'), ', '),
           string_agg(format('DROP COLUMN %I', c || '_avg'), ', '),
           string_agg(format('ADD COLUMN %I numeric GENERATED ALWAYS AS (%I / NULLIF(%I, 0)) STORED',
                             c || '_avg', c || '_sum', c || '_n'), ', ')
      INTO add_sums, set_sums, drop_avgs, add_avgs
      FROM unnest(cols) AS c;
    EXECUTE 'ALTER TABLE power_readings_1m ' || add_sums;
    EXECUTE 'UPDATE power_readings_1m SET ' || set_sums;
    EXECUTE 'ALTER TABLE power_readings_1m ' || drop_avgs;
    EXECUTE 'ALTER TABLE power_readings_1m ' || add_avgs;
END $$;

-- The raw readings kept so far (retention used to aggregate them only when
-- they expired), merged into a minute already aggregated, if any.
DO $$
DECLARE
    cols text[] := ARRAY['total_power_w', 'phase_a_power_w', 'phase_b_power_w', 'phase_c_power_w',
                         'phase_a_voltage_v', 'phase_b_voltage_v', 'phase_c_voltage_v',
                         'phase_a_current_a', 'phase_b_current_a', 'phase_c_current_a'];
    targets text;
    aggs text;
    merge text;
BEGIN
    SELECT string_agg(format('%I, %I, %I, %I', c || '_min', c || '_sum', c || '_n', c || '_max'), ', '),
           string_agg(format('min(%I), sum(%I), count(%I), max(%I)', c, c, c, c), ', '),
           string_agg(format('%1$I = LEAST(a.%1$I, EXCLUDED.%1$I), %2$I = GREATEST(a.%2$I, EXCLUDED.%2$I),
                              %3$I = COALESCE(a.%3$I + EXCLUDED.%3$I, a.%3$I, EXCLUDED.%3$I), %4$I = a.%4$I + EXCLUDED.%4$I',
                             c || '_min', c || '_max', c || '_sum', c || '_n'), ', ')
      INTO targets, aggs, merge
      FROM unnest(cols) AS c;
    EXECUTE format('INSERT INTO power_readings_1m AS a (device_id, minute, readings, %s)
                    SELECT device_id, date_trunc(''minute'', ts, ''UTC''), count(*), %s
                      FROM power_readings GROUP BY 1, 2
                    ON CONFLICT (device_id, minute) DO UPDATE SET readings = a.readings + EXCLUDED.readings, %s',
                   targets, aggs, merge);
END $$;
