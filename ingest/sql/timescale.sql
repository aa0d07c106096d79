-- TimescaleDB layout of metering.readings, applied by ingest::timescale once,
-- right after the migrations, when the extension is available and the native
-- partitioned table is still empty (a fresh installation). NOT exercised by
-- the test suite (the extension is not installed here): see ingest/README.md.
--
-- Replaces the native day partitions with a hypertable of one-day chunks,
-- compressed after two days (segmented by meter, ordered by time: the
-- counterpart of metering.readings_compact), and adds a continuous aggregate
-- of daily usage. metering.daily stays maintained by the writer (billing's
-- contract reads it); the aggregate is for dashboards and cross-checks.
-- Retention: ingest calls drop_chunks instead of dropping partitions.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE metering.readings_hyper (
    meter_id  text NOT NULL,
    ts        timestamptz NOT NULL,
    volume_l  bigint NOT NULL,
    flow_lph  double precision,
    alarms    text[]
);
SELECT create_hypertable('metering.readings_hyper', 'ts',
                         chunk_time_interval => interval '1 day');
ALTER TABLE metering.readings_hyper SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id',
    timescaledb.compress_orderby = 'ts'
);
SELECT add_compression_policy('metering.readings_hyper', interval '2 days');

-- Swap: the empty native table goes (and the view over it, recreated below).
DROP TABLE metering.readings CASCADE;
ALTER TABLE metering.readings_hyper RENAME TO readings;

-- Chunks are created by TimescaleDB: the service's partition hook is a no-op.
CREATE OR REPLACE FUNCTION metering.ensure_day_partition(day date) RETURNS boolean
LANGUAGE sql AS $fn$ SELECT false $fn$;

-- Billing's view v1, as in migration 0003 (readings_compact stays empty here:
-- compact_day finds no day partition and does nothing).
CREATE OR REPLACE VIEW metering.readings_v1 AS
SELECT meter_id, ts, volume_l, flow_lph, coalesce(alarms, '{}'::text[]) AS alarms
FROM metering.readings
UNION ALL
SELECT c.meter_id, u.ts, u.volume_l, u.flow_lph, coalesce(u.alarms, '{}'::text[])
FROM metering.readings_compact c,
     LATERAL metering.unpack_day(c.first_ts, c.first_volume_l, c.dts_us, c.dvolume_l,
                                 c.flow_lph, c.alarms) u;

CREATE MATERIALIZED VIEW metering.daily_cagg WITH (timescaledb.continuous) AS
SELECT meter_id,
       time_bucket(interval '1 day', ts) AS day,
       first(volume_l, ts) AS first_volume_l,
       last(volume_l, ts) AS last_volume_l,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       count(*) AS reads
FROM metering.readings
GROUP BY meter_id, time_bucket(interval '1 day', ts)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('metering.daily_cagg',
    start_offset => interval '30 days',
    end_offset => interval '1 hour',
    schedule_interval => interval '1 hour');
