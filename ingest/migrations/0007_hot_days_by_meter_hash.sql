-- A hot day partition holds every meter's readings of the day (100 000
-- meters × 96 reads = 9.6 M rows). It has no per-meter index on purpose: a
-- btree on (meter_id, ts) made COPY 5-7× slower here. So one meter's readings
-- of today (a meter page's 15-minute chart, the late-reading checks) meant a
-- scan of the whole day: 0.7-0.9 s at 100 000 meters.
--
-- From now on each day partition is itself split into 16 hash partitions on
-- meter_id: a query naming its meter scans 1/16 of the day (8 M rows: 0.7 s
-- -> 12-25 ms), and COPY still appends without any index but the BRIN on ts
-- (4 M rows: 3.0-4.2 s plain vs 3.2-3.4 s split, within this machine's
-- noise). Day partitions made before this migration stay as they are; the
-- queries, compaction (LOCK/TRUNCATE of the day's table reach its
-- sub-partitions) and retention (DROP of the day's table) work on both.
CREATE OR REPLACE FUNCTION metering.ensure_day_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    name text := 'readings_' || to_char(day, 'YYYYMMDD');
    parts constant int := 16;
BEGIN
    IF to_regclass('metering.' || name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS metering.%I PARTITION OF metering.readings
           FOR VALUES FROM (%L) TO (%L) PARTITION BY HASH (meter_id)',
        name,
        (day::timestamp AT TIME ZONE 'UTC'),
        ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    FOR i IN 0 .. parts - 1 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS metering.%I PARTITION OF metering.%I
               FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
            name || '_h' || lpad(i::text, 2, '0'), name, parts, i);
    END LOOP;
    RETURN true;
END
$fn$;
