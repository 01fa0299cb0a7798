-- How far back raw rows have been dropped by retention (per table). A
-- minute before this point may have lost some of its raw readings, so its
-- one-minute aggregate (power_readings_1m) can never be computed again from
-- them: `minutes rebuild` (and the adoption of a default partition) leave
-- such minutes as they are, and never replace an aggregate by one of fewer
-- readings (sql/0016, src/db/minutes.rs).
CREATE TABLE raw_dropped (
    table_name      text PRIMARY KEY,
    dropped_before  timestamptz NOT NULL
);
