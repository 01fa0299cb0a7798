-- Dynamic tariffs: energy prices per hour or quarter-hour, imported with
-- `shellyctl tariff prices import`. A correction re-imports the same
-- start times (upsert), and reports pick it up immediately.

ALTER TABLE tariffs ADD CONSTRAINT tariffs_name_valid_from_key UNIQUE (name, valid_from);

CREATE TABLE tariff_prices (
    tariff_name  text NOT NULL,
    start_ts     timestamptz NOT NULL,
    end_ts       timestamptz NOT NULL,
    price        numeric NOT NULL,     -- net energy price per kWh, in the tariff's currency
    imported_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (end_ts > start_ts),
    PRIMARY KEY (tariff_name, start_ts)
);
