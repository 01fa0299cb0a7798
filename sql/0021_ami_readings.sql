-- The distribution operator's own hourly meter data (AMI), imported from
-- the portal's exports (`shellyctl ami import`): per point of delivery and
-- hour, energy taken and fed in, and where the export has them the DSO's
-- hourly-balanced values. One row per hour; a corrected file replaces the
-- hours it covers.
CREATE TABLE ami_readings (
    pod                  text NOT NULL CHECK (length(pod) BETWEEN 1 AND 64),
    hour_start           timestamptz NOT NULL,
    import_kwh           numeric NOT NULL CHECK (import_kwh >= 0),
    export_kwh           numeric NOT NULL CHECK (export_kwh >= 0),
    balanced_import_kwh  numeric CHECK (balanced_import_kwh >= 0),
    balanced_export_kwh  numeric CHECK (balanced_export_kwh >= 0),
    source_sha256        text NOT NULL,
    imported_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pod, hour_start)
);
