-- `listen`: idle told apart from silence, and every metering component.
--
-- power_logs and power_log_state also hold `pm1:N` channels (PM Mini Gen3,
-- Plug PM Gen3): `component` says which, and is part of the key, so pm1:0
-- and switch:0 of one device never mix. A user's INSERT without it logs a
-- switch channel, as before.
ALTER TABLE power_logs ADD COLUMN component text NOT NULL DEFAULT 'switch'
    CHECK (component IN ('switch', 'pm1'));
ALTER TABLE power_logs DROP CONSTRAINT power_logs_pkey;
ALTER TABLE power_logs ADD PRIMARY KEY (device_id, component, channel, "timestamp");

ALTER TABLE power_log_state ADD COLUMN component text NOT NULL DEFAULT 'switch'
    CHECK (component IN ('switch', 'pm1'));
ALTER TABLE power_log_state DROP CONSTRAINT power_log_state_pkey;
ALTER TABLE power_log_state ADD PRIMARY KEY (device_id, component, channel);

-- When each pushed device was connected to `listen`. A session still open
-- (disconnected_at NULL) is connected now, or was left open by a listen
-- that crashed: the next listen closes it with reason 'listen restarted'.
CREATE TABLE listen_sessions (
    device_id        text NOT NULL,
    connected_at     timestamptz NOT NULL,
    disconnected_at  timestamptz,
    reason           text,
    peer             text,
    PRIMARY KEY (device_id, connected_at),
    CHECK (disconnected_at IS NULL OR disconnected_at >= connected_at)
);
CREATE INDEX listen_sessions_open_idx ON listen_sessions (device_id) WHERE disconnected_at IS NULL;

-- Active periods of logged channels: the minutes [started_at, ended_at)
-- each have a power_logs row; ended_at is the first minute after them
-- below the threshold (or not filled after a long silence), NULL while the
-- period runs.
CREATE TABLE activity (
    device_id   text NOT NULL,
    component   text NOT NULL DEFAULT 'switch' CHECK (component IN ('switch', 'pm1')),
    channel     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    PRIMARY KEY (device_id, component, channel, started_at),
    CHECK (ended_at IS NULL OR ended_at > started_at)
);
