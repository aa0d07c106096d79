-- Ingest looks up quarantined readings by (meter_id, ts) so that a replay
-- neither stores nor quarantines again a reading refused before.
CREATE INDEX IF NOT EXISTS quarantine_meter_ts ON metering.quarantine (meter_id, ts)
    WHERE reading IS NOT NULL;
