-- Operations: when each job last ran and succeeded, per device (`health`),
-- and one-minute aggregates of power_readings kept after the raw rows
-- expire (`retention`).

CREATE TABLE job_runs (
    job           text NOT NULL,               -- snapshot, ingest-intervals, ...
    device_id     text NOT NULL DEFAULT '',    -- '' for jobs not tied to a device
    last_run      timestamptz NOT NULL,
    last_success  timestamptz,
    last_failure  timestamptz,
    last_error    text,
    runs          bigint NOT NULL DEFAULT 0,
    failures      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (job, device_id)
);

CREATE TABLE power_readings_1m (
    device_id          text NOT NULL,
    minute             timestamptz NOT NULL,
    readings           integer NOT NULL,
    total_power_w_min  numeric, total_power_w_avg  numeric, total_power_w_max  numeric,
    phase_a_power_w_min numeric, phase_a_power_w_avg numeric, phase_a_power_w_max numeric,
    phase_b_power_w_min numeric, phase_b_power_w_avg numeric, phase_b_power_w_max numeric,
    phase_c_power_w_min numeric, phase_c_power_w_avg numeric, phase_c_power_w_max numeric,
    phase_a_voltage_v_min numeric, phase_a_voltage_v_avg numeric, phase_a_voltage_v_max numeric,
    phase_b_voltage_v_min numeric, phase_b_voltage_v_avg numeric, phase_b_voltage_v_max numeric,
    phase_c_voltage_v_min numeric, phase_c_voltage_v_avg numeric, phase_c_voltage_v_max numeric,
    phase_a_current_a_min numeric, phase_a_current_a_avg numeric, phase_a_current_a_max numeric,
    phase_b_current_a_min numeric, phase_b_current_a_avg numeric, phase_b_current_a_max numeric,
    phase_c_current_a_min numeric, phase_c_current_a_avg numeric, phase_c_current_a_max numeric,
    PRIMARY KEY (device_id, minute)
);
CREATE INDEX power_readings_1m_minute_idx ON power_readings_1m (minute);
