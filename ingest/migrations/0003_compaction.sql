-- Closed days compacted: one row per meter and UTC day, readings in
-- delta-encoded arrays (ts as microseconds since the previous reading,
-- volume as litres since the previous reading; both 0 for the first).
-- Constant deltas compress well when TOAST kicks in. Billing and the API read
-- both forms through metering.readings_v1, unchanged in shape.
CREATE TABLE IF NOT EXISTS metering.readings_compact (
    meter_id       text NOT NULL,
    day            date NOT NULL,
    n              integer NOT NULL,
    first_ts       timestamptz NOT NULL,
    first_volume_l bigint NOT NULL,
    dts_us         bigint[] NOT NULL,
    dvolume_l      bigint[] NOT NULL,
    -- NULL when no reading of the day had a flow; else one element each.
    flow_lph       double precision[],
    -- NULL when no reading of the day had an alarm; else one element each:
    -- the alarm names joined by ',' (NULL element: none).
    alarms         text[],
    PRIMARY KEY (meter_id, day)
);
-- Rows over 2 kB (a full day of 15-minute reads) are toasted; with the
-- default target only the biggest array would be compressed, just enough to
-- fit 2 kB. A low target compresses every array (they are delta-encoded, so
-- regular meters compress to a few bytes a reading).
ALTER TABLE metering.readings_compact SET (toast_tuple_target = 128);

-- The readings of one compacted meter-day, in time order.
CREATE OR REPLACE FUNCTION metering.unpack_day(
    first_ts timestamptz, first_volume_l bigint, dts_us bigint[], dvolume_l bigint[],
    flow_lph double precision[], alarms text[])
RETURNS TABLE (ts timestamptz, volume_l bigint, flow_lph double precision, alarms text[])
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT first_ts + (sum(u.dt) OVER w) * interval '1 microsecond',
           first_volume_l + (sum(u.dv) OVER w)::bigint,
           u.f,
           string_to_array(u.a, ',')
    FROM unnest(dts_us, dvolume_l, flow_lph, alarms) WITH ORDINALITY AS u(dt, dv, f, a, i)
    WINDOW w AS (ORDER BY u.i)
$fn$;

-- Billing's view v1, same shape: hot readings, then compacted ones.
CREATE OR REPLACE VIEW metering.readings_v1 AS
SELECT meter_id, ts, volume_l, flow_lph, coalesce(alarms, '{}'::text[]) AS alarms
FROM metering.readings
UNION ALL
SELECT c.meter_id, u.ts, u.volume_l, u.flow_lph, coalesce(u.alarms, '{}'::text[])
FROM metering.readings_compact c,
     LATERAL metering.unpack_day(c.first_ts, c.first_volume_l, c.dts_us, c.dvolume_l,
                                 c.flow_lph, c.alarms) u;

-- Moves the hot readings of one UTC day into readings_compact (merged with
-- what an earlier compaction of the day left there: late readings land hot
-- and are folded in by the next run) and empties the day's partition.
-- The partition is locked ACCESS EXCLUSIVE up front: the lock waits for the
-- writers and readers using it, keeps new ones out until commit (so no
-- reading is compacted twice or truncated unseen), and is never upgraded
-- later (an EXCLUSIVE lock upgraded for the TRUNCATE deadlocks with a writer
-- between its lookup and its COPY). Queries touching the day wait for the
-- compaction of that one day. Returns the meter-days written.
CREATE OR REPLACE FUNCTION metering.compact_day(day date) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    part text := 'readings_' || to_char(day, 'YYYYMMDD');
    written bigint;
    has_hot boolean;
BEGIN
    IF to_regclass('metering.' || part) IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM metering.%I)', part) INTO has_hot;
    IF NOT has_hot THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE metering.%I IN ACCESS EXCLUSIVE MODE', part);
    EXECUTE format($q$
        WITH hot AS (
            SELECT meter_id, ts, volume_l, flow_lph, array_to_string(alarms, ',') AS a
            FROM metering.%I
        ), old AS (
            SELECT c.meter_id, u.ts, u.volume_l, u.flow_lph, array_to_string(u.alarms, ',') AS a
            FROM metering.readings_compact c,
                 LATERAL metering.unpack_day(c.first_ts, c.first_volume_l, c.dts_us,
                                             c.dvolume_l, c.flow_lph, c.alarms) u
            WHERE c.day = $1 AND c.meter_id IN (SELECT DISTINCT meter_id FROM hot)
        ), d AS (
            SELECT meter_id, ts, volume_l, flow_lph, a,
                   coalesce((extract(epoch FROM ts - lag(ts) OVER w) * 1000000)::bigint, 0) AS dt,
                   coalesce(volume_l - lag(volume_l) OVER w, 0) AS dv
            FROM (SELECT * FROM hot UNION ALL SELECT * FROM old) x
            WINDOW w AS (PARTITION BY meter_id ORDER BY ts)
        )
        INSERT INTO metering.readings_compact AS c
            (meter_id, day, n, first_ts, first_volume_l, dts_us, dvolume_l, flow_lph, alarms)
        SELECT meter_id, $1, count(*), min(ts), (array_agg(volume_l ORDER BY ts))[1],
               array_agg(dt ORDER BY ts), array_agg(dv ORDER BY ts),
               CASE WHEN bool_or(flow_lph IS NOT NULL) THEN array_agg(flow_lph ORDER BY ts) END,
               CASE WHEN bool_or(a IS NOT NULL) THEN array_agg(a ORDER BY ts) END
        FROM d GROUP BY meter_id
        ON CONFLICT (meter_id, day) DO UPDATE SET
            n = excluded.n, first_ts = excluded.first_ts,
            first_volume_l = excluded.first_volume_l, dts_us = excluded.dts_us,
            dvolume_l = excluded.dvolume_l, flow_lph = excluded.flow_lph,
            alarms = excluded.alarms
    $q$, part) USING day;
    GET DIAGNOSTICS written = ROW_COUNT;
    EXECUTE format('TRUNCATE metering.%I', part);
    RETURN written;
END
$fn$;
