-- `listen`: the minute-logging state of each pushed switch channel (last
-- minute decided, values current since when), kept with the rows it
-- produced, so a restart neither duplicates nor loses minutes.
CREATE TABLE power_log_state (
    device_id   text NOT NULL,
    channel     integer NOT NULL,
    state       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, channel)
);
