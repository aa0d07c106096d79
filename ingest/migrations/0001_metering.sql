-- Ingest's schema `metering`: the meter registry, the readings time series
-- (native range partitions by UTC day, created by the service), daily usage,
-- quarantine, gateways and gaps, and billing's read contract v1.
-- Every name is schema-qualified: the migration history lives in
-- metering._sqlx_migrations.

CREATE TABLE IF NOT EXISTS metering.meters (
    meter_id      text PRIMARY KEY,
    gateway_id    text NOT NULL,
    profile_id    text NOT NULL,
    max_flow_lph  double precision,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    -- High-water mark kept by ingest: the newest stored reading. Every stored
    -- reading of the meter has ts <= last_ts; that invariant is what lets the
    -- readings table go without a unique index (see ingest/README.md).
    last_ts       timestamptz,
    last_volume_l bigint,
    last_alarms   text[],
    last_seen_at  timestamptz
);
CREATE INDEX IF NOT EXISTS meters_gateway ON metering.meters (gateway_id);

-- No primary key on purpose: exactly-once is enforced by ingest under a row
-- lock on metering.meters (high-water mark plus a check of late readings).
CREATE TABLE IF NOT EXISTS metering.readings (
    meter_id  text NOT NULL,
    ts        timestamptz NOT NULL,
    volume_l  bigint NOT NULL,
    flow_lph  double precision,
    alarms    text[]
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS readings_ts_brin ON metering.readings USING brin (ts);

-- Creates the day partition holding `day` (UTC) if missing. Callers serialize
-- with an advisory lock; IF NOT EXISTS covers the rest.
CREATE OR REPLACE FUNCTION metering.ensure_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    name text := 'readings_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass('metering.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS metering.%I PARTITION OF metering.readings
           FOR VALUES FROM (%L) TO (%L)',
        name,
        (day::timestamp AT TIME ZONE 'UTC'),
        ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    RETURN true;
END
$fn$;

-- Daily usage per meter and UTC day, maintained by ingest in the transaction
-- that stores the readings (late readings move first/last and the count).
CREATE TABLE IF NOT EXISTS metering.daily (
    meter_id       text NOT NULL,
    day            date NOT NULL,
    first_ts       timestamptz NOT NULL,
    first_volume_l bigint NOT NULL,
    last_ts        timestamptz NOT NULL,
    last_volume_l  bigint NOT NULL,
    reads          integer NOT NULL,
    alarm_reads    integer NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, day)
);

CREATE TABLE IF NOT EXISTS metering.quarantine (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    gateway_id  text,
    topic       text NOT NULL,
    batch_seq   bigint,
    reason      text NOT NULL,
    detail      text NOT NULL,
    -- The whole message when it could not be decoded (or was refused whole).
    payload     bytea,
    -- The one reading refused, as received.
    reading     jsonb,
    meter_id    text,
    ts          timestamptz
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON metering.quarantine (reason, received_at);

CREATE TABLE IF NOT EXISTS metering.gateways (
    gateway_id     text PRIMARY KEY,
    last_batch_seq bigint,
    last_batch_at  timestamptz,
    batches        bigint NOT NULL DEFAULT 0,
    readings       bigint NOT NULL DEFAULT 0,
    seq_resets     integer NOT NULL DEFAULT 0,
    status         text,
    status_at      timestamptz
);

-- Gaps: a jump in a gateway's batch_seq (kind 'batch_seq', from_seq..to_seq
-- missing) or a meter missing expected reads (kind 'meter_reads', no read
-- strictly between from_ts and to_ts). filled_at is set when the missing
-- batches arrive late.
CREATE TABLE IF NOT EXISTS metering.gaps (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('batch_seq', 'meter_reads')),
    gateway_id  text,
    meter_id    text,
    from_seq    bigint,
    to_seq      bigint,
    from_ts     timestamptz,
    to_ts       timestamptz,
    detected_at timestamptz NOT NULL DEFAULT now(),
    filled_at   timestamptz
);
CREATE INDEX IF NOT EXISTS gaps_open ON metering.gaps (gateway_id) WHERE filled_at IS NULL;
CREATE INDEX IF NOT EXISTS gaps_meter ON metering.gaps (meter_id, from_ts);

-- ===== Billing's read contract, version 1 (never changes shape) =====

CREATE OR REPLACE VIEW metering.readings_v1 AS
SELECT meter_id, ts, volume_l, flow_lph, coalesce(alarms, '{}'::text[]) AS alarms
FROM metering.readings;

CREATE OR REPLACE FUNCTION metering.period_reads_v1(period_start timestamptz, period_end timestamptz)
RETURNS TABLE (meter_id text, start_ts timestamptz, start_volume_l bigint,
               end_ts timestamptz, end_volume_l bigint, reads bigint)
LANGUAGE sql STABLE AS $fn$
    WITH ends AS (
        SELECT DISTINCT ON (r.meter_id) r.meter_id, r.ts, r.volume_l
        FROM metering.readings_v1 r
        WHERE r.ts <= period_end
        ORDER BY r.meter_id, r.ts DESC
    ), before_start AS (
        SELECT DISTINCT ON (r.meter_id) r.meter_id, r.ts, r.volume_l
        FROM metering.readings_v1 r
        WHERE r.ts <= period_start
        ORDER BY r.meter_id, r.ts DESC
    ), after_start AS (
        SELECT DISTINCT ON (r.meter_id) r.meter_id, r.ts, r.volume_l
        FROM metering.readings_v1 r
        WHERE r.ts > period_start AND r.ts <= period_end
        ORDER BY r.meter_id, r.ts ASC
    ), counts AS (
        SELECT r.meter_id, count(*) AS n
        FROM metering.readings_v1 r
        WHERE r.ts >= period_start AND r.ts <= period_end
        GROUP BY r.meter_id
    )
    SELECT e.meter_id,
           coalesce(b.ts, a.ts), coalesce(b.volume_l, a.volume_l),
           e.ts, e.volume_l,
           coalesce(c.n, 0)
    FROM ends e
    LEFT JOIN before_start b ON b.meter_id = e.meter_id
    LEFT JOIN after_start a ON a.meter_id = e.meter_id
    LEFT JOIN counts c ON c.meter_id = e.meter_id
    ORDER BY e.meter_id
$fn$;
