//! `period_reads_v1` on the daily table gives the same rows as the reference
//! scan of every reading (`metering.period_reads_by_scan`), for periods that
//! start and end before, inside, on and between readings, at midnight, on
//! one day or across several, with hot and compacted days.

mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use sqlx::PgPool;

type PeriodRead = (String, DateTime<Utc>, i64, DateTime<Utc>, i64, i64);

async fn reads(pool: &PgPool, f: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<PeriodRead> {
    sqlx::query_as(&format!(
        "SELECT meter_id, start_ts, start_volume_l, end_ts, end_volume_l, reads
           FROM metering.{f}($1, $2) ORDER BY meter_id"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn period_reads_on_daily_equal_the_reference_scan() {
    let db = fresh_database().await;
    let gw = unique("gwr");
    let r = start(config_for(&db, &unique("grp"), &unique("ingr"), &gw)).await;
    let meters: Vec<String> = (0..4).map(|i| format!("{gw}-m{i}")).collect();
    register(&r.pool, &gw, &meters, None).await;
    let mut p = Publisher::connect(&unique("pub")).await;
    // m0 every round, m1 every 5th, m2 from round 150, m3 never: 3 days.
    let mut stored = 0;
    for k in 0..288i64 {
        let mut b = round(&gw, k as u64 + 1, &meters, k);
        let keep = |m: &str| {
            m == meters[0] || (m == meters[1] && k % 5 == 0) || (m == meters[2] && k >= 150)
        };
        b.readings.retain(|x| keep(x.meter_id.as_str()));
        stored += b.readings.len() as i64;
        p.publish(&b).await;
    }
    p.flush().await;
    wait_for(
        &r.pool,
        "SELECT count(*) FROM metering.readings_v1",
        stored,
        20,
    )
    .await;
    // The first day compacted, the others hot.
    ingest::db::compact_day(&r.pool, base_ts().date_naive())
        .await
        .unwrap();

    let b = base_ts();
    let points: Vec<DateTime<Utc>> = [
        -60,
        0,
        7,
        15,
        23 * 60 + 59,
        24 * 60,
        24 * 60 + 8 * 60 + 1,
        37 * 60 + 30,
        48 * 60 + 30,
        72 * 60,
        96 * 60,
    ]
    .iter()
    .map(|m| b + Duration::minutes(*m))
    .collect();
    let mut compared = 0;
    for (i, from) in points.iter().enumerate() {
        for to in &points[i..] {
            let scan = reads(&r.pool, "period_reads_by_scan", *from, *to).await;
            let daily = reads(&r.pool, "period_reads_v1", *from, *to).await;
            assert_eq!(daily, scan, "period {from} .. {to}");
            compared += scan.len();
        }
    }
    assert!(compared > 100, "the periods cover readings ({compared})");

    p.close().await;
    r.stop().await;
    drop_database(&db).await;
}
