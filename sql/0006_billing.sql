-- Billing: which meters are billed, and export price series.
--
-- devices.role says what a meter measures: the grid connection (billed by
-- `report costs`), a sub-meter, or a PV inverter's output. NULL = not
-- declared. Set with `shellyctl device set-role ID grid|submeter|pv`.
ALTER TABLE devices ADD COLUMN role text CHECK (role IN ('grid', 'submeter', 'pv'));

-- tariff_prices holds two series per tariff: `import` (a dynamic tariff's
-- energy prices) and `export` (the market price that values net-billing
-- export, e.g. RCE per 15 minutes). Existing rows are import prices.
ALTER TABLE tariff_prices ADD COLUMN series text NOT NULL DEFAULT 'import'
    CHECK (series IN ('import', 'export'));
ALTER TABLE tariff_prices DROP CONSTRAINT tariff_prices_pkey;
ALTER TABLE tariff_prices ADD PRIMARY KEY (tariff_name, series, start_ts);
