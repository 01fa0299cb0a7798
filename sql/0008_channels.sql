-- Metered channels of every kind, and what each channel measures.
--
-- switch_readings also holds `pm1:N` channels (PM Mini Gen3, Plug PM Gen3:
-- a power meter without an output): `component` says which, and is part of
-- the key so a device with both never mixes them.
ALTER TABLE switch_readings ADD COLUMN component text NOT NULL DEFAULT 'switch'
    CHECK (component IN ('switch', 'pm1'));
ALTER TABLE switch_readings DROP CONSTRAINT switch_readings_pkey;
ALTER TABLE switch_readings ADD PRIMARY KEY (device_id, component, channel, ts);

-- What a channel of a multi-channel meter measures (EM Gen3, Pro EM, the
-- 3EM in its monophase profile: independent circuits). `channel` is the
-- phase letter the channel's readings and intervals are stored under
-- (em1:0 / em1data:0 → 'A', em1:1 → 'B', em1:2 → 'C').
-- Set with `shellyctl device set-role ID:CHANNEL grid|submeter|pv|load`.
CREATE TABLE device_channels (
    device_id  text NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('A', 'B', 'C')),
    role       text NOT NULL CHECK (role IN ('grid', 'submeter', 'pv', 'load')),
    PRIMARY KEY (device_id, channel)
);
