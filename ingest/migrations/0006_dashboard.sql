-- The operators' dashboard (issue 9): what the console's overview and alarm
-- pages read, kept by ingest's dashboard sampler (ingest/src/dashboard.rs).
--
-- ingest_minutes: per UTC minute, readings stored, batches, readings
-- quarantined and the largest ingest lag seen (stored time minus reading time
-- of the newest reading per meter). The sampler takes the numbers from
-- cluster-wide totals in this schema (metering.gateways' counters, the
-- quarantine's ids), so one sampler at a time writes them (an advisory lock)
-- whatever the number of replicas; rows older than 8 days are dropped.
CREATE TABLE IF NOT EXISTS metering.ingest_minutes (
    minute      timestamptz PRIMARY KEY,
    readings    bigint NOT NULL DEFAULT 0,
    batches     bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    lag_ms_max  bigint,
    samples     integer NOT NULL DEFAULT 0
);

-- Where the last sample left the totals (one row).
CREATE TABLE IF NOT EXISTS metering.dashboard_cursor (
    id             integer PRIMARY KEY CHECK (id = 1),
    readings       bigint NOT NULL,
    batches        bigint NOT NULL,
    quarantine_id  bigint NOT NULL,
    sampled_at     timestamptz NOT NULL
);

-- Alarms with since-when: a row opens when a meter's newest reading first
-- carries the alarm and closes (cleared_at) when its newest reading no longer
-- does. At most one open row per meter and alarm.
CREATE TABLE IF NOT EXISTS metering.meter_alarms (
    id          bigserial PRIMARY KEY,
    meter_id    text NOT NULL,
    alarm       text NOT NULL,
    since       timestamptz NOT NULL,
    cleared_at  timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS meter_alarms_open
    ON metering.meter_alarms (meter_id, alarm) WHERE cleared_at IS NULL;
CREATE INDEX IF NOT EXISTS meter_alarms_meter ON metering.meter_alarms (meter_id, since);

-- Meter search by id prefix (meter_id never changes, so this index costs the
-- hot high-water-mark updates nothing: they stay HOT).
CREATE INDEX IF NOT EXISTS meters_id_prefix ON metering.meters (meter_id text_pattern_ops);

-- Quarantine by reason over the last hour and day.
CREATE INDEX IF NOT EXISTS quarantine_received ON metering.quarantine (received_at);
