-- The point of delivery (PPE / the DSO's meter number) a grid meter
-- measures: `shellyctl device set-role ID grid --pod POD` links the Shelly
-- to the DSO's hourly data (ami_readings) for `report reconcile`.
ALTER TABLE devices ADD COLUMN pod text CHECK (pod IS NULL OR length(pod) BETWEEN 1 AND 64);
