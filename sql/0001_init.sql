-- shellyctl schema, version 1.
-- Table and column names listed in README "Schema contract" are stable:
-- later migrations add, never rename.
-- Energy and money are NUMERIC (exact); time is timestamptz (UTC).

CREATE TABLE devices (
    device_id    text PRIMARY KEY,          -- e.g. shelly3em63g3-aabbccddeeff
    host         text,                      -- where shellyctl last reached it
    model        text,                      -- e.g. S3EM-003CXCEU63
    gen          integer,
    app          text,
    fw_id        text,
    fw_version   text,
    profile      text,                      -- triphase | monophase | NULL
    mac          text,
    name         text,
    auth_enabled boolean,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz
);

-- Live meter readings: one row per meter per snapshot (or pushed frame).
CREATE TABLE power_readings (
    ts                         timestamptz NOT NULL,   -- when shellyctl read it
    device_id                  text NOT NULL REFERENCES devices (device_id),
    source                     text NOT NULL DEFAULT 'poll' CHECK (source IN ('poll', 'push')),
    meter                      text NOT NULL DEFAULT 'em:0',  -- em:0 (triphase) | em1 (monophase)
    total_power_w              numeric,
    phase_a_power_w            numeric,
    phase_b_power_w            numeric,
    phase_c_power_w            numeric,
    phase_a_voltage_v          numeric,
    phase_b_voltage_v          numeric,
    phase_c_voltage_v          numeric,
    phase_a_current_a          numeric,
    phase_b_current_a          numeric,
    phase_c_current_a          numeric,
    total_apparent_power_va    numeric,
    phase_a_apparent_power_va  numeric,
    phase_b_apparent_power_va  numeric,
    phase_c_apparent_power_va  numeric,
    phase_a_pf                 numeric,
    phase_b_pf                 numeric,
    phase_c_pf                 numeric,
    phase_a_freq_hz            numeric,
    phase_b_freq_hz            numeric,
    phase_c_freq_hz            numeric,
    total_current_a            numeric,
    neutral_current_a          numeric,
    device_ts                  timestamptz,            -- the device's sys.unixtime
    PRIMARY KEY (device_id, ts)
);
CREATE INDEX power_readings_ts_idx ON power_readings (ts);

-- Live per-channel readings of switch/plug devices (switch:N).
CREATE TABLE switch_readings (
    ts                        timestamptz NOT NULL,
    device_id                 text NOT NULL REFERENCES devices (device_id),
    channel                   integer NOT NULL CHECK (channel >= 0),
    source                    text NOT NULL DEFAULT 'poll' CHECK (source IN ('poll', 'push')),
    output                    boolean,
    apower_w                  numeric,
    voltage_v                 numeric,
    current_a                 numeric,
    pf                        numeric,
    freq_hz                   numeric,
    energy_total_wh           numeric,   -- aenergy.total, the device's lifetime counter
    returned_energy_total_wh  numeric,   -- ret_aenergy.total
    temperature_c             numeric,
    device_ts                 timestamptz,
    PRIMARY KEY (device_id, channel, ts)
);
CREATE INDEX switch_readings_ts_idx ON switch_readings (ts);

-- The meter's own interval records (EMData / EM1Data): the source of truth
-- for energy. One row per channel (phase) per recording period.
-- No foreign key to devices: this is the bulk table (about 2 million rows a
-- year per 1-minute meter) and FK checks cost a third of a bulk load; the
-- jobs that write here upsert the devices row first.
CREATE TABLE energy_intervals (
    device_id                text NOT NULL,
    channel                  text NOT NULL,          -- A | B | C (phases; em1data:0..2 too) | N (neutral currents)
    start_ts                 timestamptz NOT NULL,
    end_ts                   timestamptz NOT NULL,
    energy_wh                numeric,                -- imported active energy in the period
    returned_energy_wh       numeric,                -- exported active energy in the period
    -- Net average active power over the period, derived exactly from the energies.
    avg_power_w              numeric GENERATED ALWAYS AS (trim_scale(
        (energy_wh - COALESCE(returned_energy_wh, 0)) * 3600
        / EXTRACT(EPOCH FROM (end_ts - start_ts)))) STORED,
    min_power_w              numeric,
    max_power_w              numeric,
    min_apparent_power_va    numeric,
    max_apparent_power_va    numeric,
    avg_voltage_v            numeric,
    min_voltage_v            numeric,
    max_voltage_v            numeric,
    avg_current_a            numeric,
    min_current_a            numeric,
    max_current_a            numeric,
    fund_energy_wh           numeric,
    fund_returned_energy_wh  numeric,
    lag_reactive_varh        numeric,
    lead_reactive_varh       numeric,
    source                   text NOT NULL,          -- emdata:0 | em1data:N
    meta                     jsonb NOT NULL DEFAULT '{}'::jsonb,  -- every other value the device gave
    ingested_at              timestamptz NOT NULL DEFAULT now(),
    CHECK (end_ts > start_ts),
    -- The unique key, ordered so that it also serves per-device time-range
    -- queries (reports, gaps); a separate start_ts index would cost a fifth
    -- of every bulk load.
    CONSTRAINT energy_intervals_key UNIQUE (device_id, start_ts, channel, end_ts)
);

-- Where interval ingestion continues, per device and data component.
CREATE TABLE ingest_cursors (
    device_id   text NOT NULL REFERENCES devices (device_id),
    component   text NOT NULL,           -- emdata:0 | em1data:N
    next_ts     timestamptz NOT NULL,    -- first record time not yet ingested
    period_s    integer,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, component)
);

CREATE TABLE tariffs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'fixed' CHECK (kind IN ('fixed', 'dynamic')),
    currency    text NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    rules       jsonb NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX tariffs_name_idx ON tariffs (name, valid_from);

-- One row per alert rule (and device): the episode state machine.
CREATE TABLE alert_state (
    rule_key           text PRIMARY KEY,
    device_id          text,
    state              text NOT NULL DEFAULT 'armed' CHECK (state IN ('armed', 'firing')),
    episode_started_at timestamptz,
    last_fired_at      timestamptz,
    last_cleared_at    timestamptz,
    last_event_id      bigint,
    details            jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alert_events (
    id               bigserial PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    rule_key         text NOT NULL,
    device_id        text,
    kind             text NOT NULL DEFAULT 'fired' CHECK (kind IN ('fired', 'cleared', 'test')),
    value_w          numeric,
    threshold_w      numeric,
    window_start     timestamptz,
    window_end       timestamptz,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    delivery_status  text NOT NULL DEFAULT 'pending'
                     CHECK (delivery_status IN ('pending', 'delivered', 'failed', 'given_up', 'not_required')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX alert_events_pending_idx ON alert_events (next_attempt_at)
    WHERE delivery_status IN ('pending', 'failed');

-- Minute logs of switch channels pushed over WebSocket (`listen`).
CREATE TABLE power_logs (
    "timestamp"      timestamptz NOT NULL,
    device_id        text NOT NULL,
    channel          integer NOT NULL,
    apower_w         numeric,
    voltage_v        numeric,
    current_a        numeric,
    energy_total_wh  numeric,
    PRIMARY KEY (device_id, channel, "timestamp")
);
CREATE INDEX power_logs_timestamp_idx ON power_logs ("timestamp");
