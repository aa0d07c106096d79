-- billing's period_reads_v1 on metering.daily (same contract, same results):
-- whole days inside the period come from the daily rows (one index probe per
-- meter), only the two boundary days read individual readings. The former
-- implementation scanned the whole history; it stays as
-- metering.period_reads_by_scan, the reference the tests compare against.

-- Readings (hot or compacted) with from_ts <= ts <= to_ts.
CREATE OR REPLACE FUNCTION metering.readings_in(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (meter_id text, ts timestamptz, volume_l bigint)
LANGUAGE sql STABLE AS $fn$
    SELECT r.meter_id, r.ts, r.volume_l
    FROM metering.readings r
    WHERE r.ts >= from_ts AND r.ts <= to_ts
    UNION ALL
    SELECT c.meter_id, u.ts, u.volume_l
    FROM metering.readings_compact c,
         LATERAL metering.unpack_day(c.first_ts, c.first_volume_l, c.dts_us, c.dvolume_l,
                                     c.flow_lph, c.alarms) u
    WHERE c.day >= (from_ts AT TIME ZONE 'UTC')::date
      AND c.day <= (to_ts AT TIME ZONE 'UTC')::date
      AND u.ts >= from_ts AND u.ts <= to_ts
$fn$;

CREATE OR REPLACE FUNCTION metering.period_reads_by_scan(period_start timestamptz, period_end timestamptz)
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

-- Contract v1, unchanged: per meter, start read = the last reading at or
-- before period_start, else the first reading after it within the period;
-- end read = the last reading at or before period_end; reads = readings in
-- [period_start, period_end]; only meters with an end read appear.
CREATE OR REPLACE FUNCTION metering.period_reads_v1(period_start timestamptz, period_end timestamptz)
RETURNS TABLE (meter_id text, start_ts timestamptz, start_volume_l bigint,
               end_ts timestamptz, end_volume_l bigint, reads bigint)
LANGUAGE sql STABLE AS $fn$
    WITH b AS (
        SELECT (period_start AT TIME ZONE 'UTC')::date AS sd,
               (period_end AT TIME ZONE 'UTC')::date AS ed
    ), bt AS (
        SELECT sd, ed,
               sd::timestamp AT TIME ZONE 'UTC' AS sd_ts,
               ed::timestamp AT TIME ZONE 'UTC' AS ed_ts
        FROM b
    ),
    -- The start day, from its midnight to its end or period_end.
    s AS (
        SELECT r.* FROM bt, metering.readings_in(bt.sd_ts,
            least(period_end, bt.sd_ts + interval '1 day' - interval '1 microsecond')) r
    ),
    -- The end day, from its midnight to period_end (empty when it is the start day).
    e AS (
        SELECT r.* FROM bt, metering.readings_in(bt.ed_ts, period_end) r WHERE bt.ed > bt.sd
    ),
    s_before AS (
        SELECT DISTINCT ON (s.meter_id) s.meter_id, s.ts, s.volume_l
        FROM s WHERE s.ts <= period_start ORDER BY s.meter_id, s.ts DESC
    ), s_after AS (
        SELECT DISTINCT ON (s.meter_id) s.meter_id, s.ts, s.volume_l
        FROM s WHERE s.ts > period_start ORDER BY s.meter_id, s.ts
    ), s_count AS (
        SELECT s.meter_id, count(*) AS n FROM s WHERE s.ts >= period_start GROUP BY s.meter_id
    ), e_last AS (
        SELECT DISTINCT ON (e.meter_id) e.meter_id, e.ts, e.volume_l
        FROM e ORDER BY e.meter_id, e.ts DESC
    ), e_count AS (
        SELECT e.meter_id, count(*) AS n FROM e GROUP BY e.meter_id
    ), per_meter AS (
        SELECT m.meter_id,
               coalesce(sb.ts, d_before_s.last_ts, sa.ts, d_after_s.first_ts) AS start_ts,
               coalesce(sb.volume_l, d_before_s.last_volume_l, sa.volume_l, d_after_s.first_volume_l)
                   AS start_volume_l,
               coalesce(el.ts, CASE WHEN bt.ed > bt.sd THEN NULL ELSE sl.ts END, d_before_e.last_ts)
                   AS end_ts,
               coalesce(el.volume_l, CASE WHEN bt.ed > bt.sd THEN NULL ELSE sl.volume_l END,
                        d_before_e.last_volume_l) AS end_volume_l,
               coalesce(sc.n, 0) + coalesce(ec.n, 0) + coalesce(mid.n, 0) AS reads
        FROM bt CROSS JOIN metering.meters m
        LEFT JOIN s_before sb ON sb.meter_id = m.meter_id
        LEFT JOIN s_after sa ON sa.meter_id = m.meter_id
        LEFT JOIN s_count sc ON sc.meter_id = m.meter_id
        LEFT JOIN e_last el ON el.meter_id = m.meter_id
        LEFT JOIN e_count ec ON ec.meter_id = m.meter_id
        -- the last reading of the start day up to period_end (the end read
        -- when the period starts and ends on the same day)
        LEFT JOIN LATERAL (
            SELECT s.ts, s.volume_l FROM s WHERE s.meter_id = m.meter_id
            ORDER BY s.ts DESC LIMIT 1) sl ON true
        LEFT JOIN LATERAL (
            SELECT d.last_ts, d.last_volume_l FROM metering.daily d
            WHERE d.meter_id = m.meter_id AND d.day < bt.sd
            ORDER BY d.day DESC LIMIT 1) d_before_s ON true
        LEFT JOIN LATERAL (
            SELECT d.first_ts, d.first_volume_l FROM metering.daily d
            WHERE d.meter_id = m.meter_id AND d.day > bt.sd AND d.day <= bt.ed
              AND d.first_ts <= period_end
            ORDER BY d.day LIMIT 1) d_after_s ON true
        LEFT JOIN LATERAL (
            SELECT d.last_ts, d.last_volume_l FROM metering.daily d
            WHERE d.meter_id = m.meter_id AND d.day < bt.ed
            ORDER BY d.day DESC LIMIT 1) d_before_e ON true
        LEFT JOIN LATERAL (
            SELECT sum(d.reads) AS n FROM metering.daily d
            WHERE d.meter_id = m.meter_id AND d.day > bt.sd AND d.day < bt.ed) mid ON true
    )
    SELECT p.meter_id, p.start_ts, p.start_volume_l, p.end_ts, p.end_volume_l, p.reads::bigint
    FROM per_meter p
    WHERE p.end_ts IS NOT NULL
    ORDER BY p.meter_id
$fn$;
