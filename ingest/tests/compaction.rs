//! Compaction of closed days: reads through `metering.readings_v1` (and the
//! API and `period_reads_v1`) are identical before and after; a late reading
//! for a compacted day lands exactly once (a redelivered one changes nothing,
//! a conflicting one is quarantined), and the next compaction folds it in.

mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use sqlx::PgPool;
use waterworks_wire::reading::{Alarm, ReadingBatch};

type Stored = (String, DateTime<Utc>, i64, Option<f64>, Vec<String>);
type PeriodRead = (String, DateTime<Utc>, i64, DateTime<Utc>, i64, i64);

async fn all_readings(pool: &PgPool) -> Vec<Stored> {
    sqlx::query_as(
        "SELECT meter_id, ts, volume_l, flow_lph, alarms FROM metering.readings_v1
          ORDER BY meter_id, ts",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn period(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<PeriodRead> {
    sqlx::query_as(
        "SELECT meter_id, start_ts, start_volume_l, end_ts, end_volume_l, reads
           FROM metering.period_reads_v1($1, $2)",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Rounds with some variety: a missing flow now and then, and alarms.
fn varied(gw: &str, seq: u64, meters: &[String], r: i64) -> ReadingBatch {
    let mut b = round(gw, seq, meters, r);
    for (i, x) in b.readings.iter_mut().enumerate() {
        if (r + i as i64) % 7 == 0 {
            x.flow_lph = None;
        }
        if (r + i as i64) % 11 == 0 {
            x.alarms = vec![Alarm::Leak, Alarm::Tamper];
        }
    }
    b
}

#[tokio::test]
async fn compaction_keeps_reads_identical_and_late_readings_land_once() {
    let db = fresh_database().await;
    let gw = unique("gwc");
    let r = start(config_for(&db, &unique("grp"), &unique("ingc"), &gw)).await;
    let quarantined = format!(
        "SELECT count(*) FROM metering.quarantine WHERE gateway_id IN ({})",
        own(&[&gw])
    );
    let meters: Vec<String> = (0..3).map(|i| format!("{gw}-m{i}")).collect();
    register(&r.pool, &gw, &meters, Some(1_000.0)).await;
    let mut p = Publisher::connect(&unique("pub")).await;
    const ROUNDS: i64 = 150; // 37.5 hours: two UTC days
    const MISSING: [i64; 2] = [40, 41]; // a meter_reads gap 39..42 per meter
    for k in 0..ROUNDS {
        if !MISSING.contains(&k) {
            p.publish(&varied(&gw, k as u64 + 1, &meters, k)).await;
        }
    }
    p.flush().await;
    let total = 3 * (ROUNDS - MISSING.len() as i64);
    wait_for(
        &r.pool,
        "SELECT count(*) FROM metering.readings_v1",
        total,
        20,
    )
    .await;

    let before = all_readings(&r.pool).await;
    let (from, to) = (
        base_ts() + Duration::minutes(100),
        base_ts() + Duration::hours(30),
    );
    let period_before = period(&r.pool, from, to).await;
    let path = format!(
        "/api/v1/meters/{}/readings?from={}&to={}&limit=1000",
        meters[1],
        base_ts().format("%Y-%m-%dT%H:%M:%SZ"),
        (base_ts() + Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let api_before = get(r.addr, &path, Some(VIEWER)).await.1;

    let day0 = base_ts().date_naive();
    let day1 = day0 + Duration::days(1);
    assert_eq!(ingest::db::compact_day(&r.pool, day0).await.unwrap(), 3);
    assert_eq!(ingest::db::compact_day(&r.pool, day1).await.unwrap(), 3);
    assert_eq!(
        count(&r.pool, "SELECT count(*) FROM metering.readings").await,
        0
    );
    assert_eq!(
        count(
            &r.pool,
            "SELECT sum(n)::int8 FROM metering.readings_compact"
        )
        .await,
        total
    );
    assert_eq!(all_readings(&r.pool).await, before, "readings_v1 unchanged");
    assert_eq!(period(&r.pool, from, to).await, period_before);
    assert_eq!(get(r.addr, &path, Some(VIEWER)).await.1, api_before);
    // Nothing hot left: compacting again writes nothing.
    assert_eq!(ingest::db::compact_day(&r.pool, day0).await.unwrap(), 0);

    // Late readings for the compacted day 0: one new (between rounds 0 and 1),
    // one redelivered (same value), one conflicting.
    let mut late = round(&gw, 500, &meters, 3);
    late.readings[0].ts = base_ts() + Duration::minutes(7);
    late.readings[0].volume_l = 5;
    late.readings[1] = varied(&gw, 0, &meters, 3).readings[1].clone();
    late.readings[2].volume_l += 3;
    p.publish(&late).await;
    p.flush().await;
    wait_for(&r.pool, &quarantined, 1, 20).await;
    wait_for(
        &r.pool,
        "SELECT count(*) FROM metering.readings_v1",
        total + 1,
        20,
    )
    .await;
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM metering.quarantine WHERE gateway_id = $1")
            .bind(&gw)
            .fetch_one(&r.pool)
            .await
            .unwrap();
    assert_eq!(reason, "conflict");

    let mut want = before.clone();
    want.push((
        meters[0].clone(),
        base_ts() + Duration::minutes(7),
        5,
        Some(40.0),
        vec![],
    ));
    want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(all_readings(&r.pool).await, want, "late reading once, hot");
    assert_eq!(ingest::db::compact_day(&r.pool, day0).await.unwrap(), 1);
    assert_eq!(
        count(&r.pool, "SELECT count(*) FROM metering.readings").await,
        0
    );
    assert_eq!(all_readings(&r.pool).await, want, "and folded in, once");
    assert_eq!(
        count(
            &r.pool,
            "SELECT coalesce(sum(reads), 0)::int8 FROM metering.daily"
        )
        .await,
        total + 1
    );

    // Round 40 arrives late into the compacted day: the gap 39..42 closes
    // and what is still missing (40..42, 30 min) opens again, found between
    // the hot late reading and its compacted neighbour.
    p.publish(&varied(&gw, 501, &meters, 40)).await;
    p.flush().await;
    wait_for(
        &r.pool,
        "SELECT count(*) FROM metering.readings_v1",
        total + 4,
        20,
    )
    .await;
    let open: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT meter_id, from_ts, to_ts FROM metering.gaps
          WHERE kind = 'meter_reads' AND filled_at IS NULL AND gateway_id = $1 ORDER BY meter_id",
    )
    .bind(&gw)
    .fetch_all(&r.pool)
    .await
    .unwrap();
    let t = |k: i64| base_ts() + Duration::minutes(15 * k);
    let want: Vec<_> = meters.iter().map(|m| (m.clone(), t(40), t(42))).collect();
    assert_eq!(open, want);

    p.close().await;
    r.stop().await;
    drop_database(&db).await;
}
