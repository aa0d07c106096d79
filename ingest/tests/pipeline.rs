//! End to end through the real Mosquitto and PostgreSQL: exactly-once,
//! quarantine by reason, the billing contract, and the HTTP API.

mod common;
use chrono::Duration;
use common::*;

type Ts = chrono::DateTime<chrono::Utc>;
type PeriodRead = (String, Ts, i64, Ts, i64, i64);

/// Files in ingest/migrations.
const READINGS: &str = "SELECT count(*) FROM metering.readings_v1";

#[tokio::test]
async fn stores_each_reading_once_and_quarantines_the_rest() {
    let db = fresh_database().await;
    let gw = unique("gw");
    let other_gw = unique("gwo");
    let r = start(config_for(&db, &unique("grp"), &unique("ing"), &gw)).await;
    let mine = own(&[&gw, &other_gw]);
    let quarantined =
        format!("SELECT count(*) FROM metering.quarantine WHERE gateway_id IN ({mine})");
    let meters: Vec<String> = (0..5).map(|i| format!("{gw}-m{i}")).collect();
    register(&r.pool, &gw, &meters, Some(1_000.0)).await;
    register(&r.pool, &other_gw, &[format!("{other_gw}-m0")], None).await;

    let mut p = Publisher::connect(&unique("pub")).await;
    for k in 0..8 {
        p.publish(&round(&gw, k + 1, &meters, k as i64)).await;
    }
    p.flush().await;
    wait_for(&r.pool, READINGS, 40, 20).await;

    // Replay: the same rounds again with the sequence restarted at 1 (a
    // fresh spool), and a redelivery of one batch: nothing changes.
    for k in 0..8 {
        p.publish(&round(&gw, k + 1, &meters, k as i64)).await;
    }
    // Then rounds 8..10 with a seq jump (a gap of batch 10..11 in the new run).
    p.publish(&round(&gw, 9, &meters, 8)).await;
    p.publish(&round(&gw, 12, &meters, 9)).await;

    // Faults, one per reason.
    let topic =
        waterworks_wire::topic::readings(&waterworks_wire::GatewayId::parse(gw.clone()).unwrap());
    p.publish_raw(&topic, b"{not json".to_vec()).await; // malformed (whole)
    let mut b = round(&gw, 13, &meters[..1], 10);
    b.gateway_id = waterworks_wire::GatewayId::parse(other_gw.clone()).unwrap();
    p.publish_raw(&topic, b.encode()).await; // wrong_gateway (whole: topic ≠ payload)
    let mut b = round(&gw, 14, &meters, 10);
    b.readings[0].meter_id = waterworks_wire::MeterId::parse("nobody").unwrap(); // unknown_meter
    b.readings[1].meter_id = waterworks_wire::MeterId::parse(format!("{other_gw}-m0")).unwrap(); // wrong_gateway
    b.readings[2].volume_l = 0; // backwards
    b.readings[3].volume_l += 100_000; // spike
    b.readings[4].ts = chrono::Utc::now() + Duration::days(2); // future
    p.publish(&b).await;
    let mut b = round(&gw, 15, &meters[..2], 3);
    b.readings[0].volume_l += 1; // conflict with the stored round 3
    b.readings[1].ts = chrono::Utc::now() - Duration::days(500); // too_old
    p.publish(&b).await;
    // A bad reading beside a good one: the good one is stored.
    let good_and_bad = format!(
        r#"{{"gateway_id":"{gw}","batch_seq":16,"readings":[{{"meter_id":"{m}","ts":"{ts}","volume_l":"lots"}},{{"meter_id":"{m}","ts":"{ts}","volume_l":{v}}}]}}"#,
        m = meters[0],
        ts = (base_ts() + Duration::minutes(150)).to_rfc3339(),
        v = 100,
    );
    p.publish_raw(&topic, good_and_bad.into_bytes()).await;
    p.flush().await;

    wait_for(&r.pool, &quarantined, 10, 20).await;
    wait_for(&r.pool, READINGS, 51, 20).await;
    let reasons: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT reason, count(*) FROM metering.quarantine WHERE gateway_id IN ({mine})
          GROUP BY reason ORDER BY reason"
    ))
    .fetch_all(&r.pool)
    .await
    .unwrap();
    let reasons: Vec<(&str, i64)> = reasons.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    assert_eq!(
        reasons,
        vec![
            ("backwards", 1),
            ("conflict", 1),
            ("future", 1),
            ("malformed", 2),
            ("spike", 1),
            ("too_old", 1),
            ("unknown_meter", 1),
            ("wrong_gateway", 2),
        ]
    );
    assert_eq!(
        count(&r.pool, "SELECT count(*) FROM (SELECT meter_id, ts FROM metering.readings GROUP BY 1, 2 HAVING count(*) > 1) d").await,
        0,
        "no key stored twice"
    );
    let whole: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM metering.quarantine
          WHERE reason = 'malformed' AND payload IS NOT NULL AND gateway_id = $1",
    )
    .bind(&gw)
    .fetch_one(&r.pool)
    .await
    .unwrap();
    assert_eq!(whole.as_deref(), Some(&b"{not json"[..]));

    // Gaps: seq 10..11 missing after the reset.
    let gaps: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT from_seq, to_seq FROM metering.gaps WHERE kind = 'batch_seq' AND filled_at IS NULL AND gateway_id = $1",
    )
    .bind(&gw)
    .fetch_all(&r.pool)
    .await
    .unwrap();
    assert!(gaps.contains(&(10, 11)), "{gaps:?}");

    // Billing's contract: period = rounds 2..=9 (ts base+30min .. base+135min).
    let start = base_ts() + Duration::minutes(25);
    let end = base_ts() + Duration::minutes(135);
    let reads: Vec<PeriodRead> =
        sqlx::query_as("SELECT meter_id, start_ts, start_volume_l, end_ts, end_volume_l, reads FROM metering.period_reads_v1($1, $2)")
            .bind(start)
            .bind(end)
            .fetch_all(&r.pool)
            .await
            .unwrap();
    let m1 = reads.iter().find(|x| x.0 == meters[1]).unwrap();
    assert_eq!(
        m1.1,
        base_ts() + Duration::minutes(15),
        "last read at or before the start"
    );
    assert_eq!((m1.2, m1.4, m1.5), (1_010, 1_090, 8));

    // Daily usage follows the stored readings.
    let (reads_day, first, last): (i32, i64, i64) = sqlx::query_as(
        "SELECT reads, first_volume_l, last_volume_l FROM metering.daily WHERE meter_id = $1",
    )
    .bind(&meters[2])
    .fetch_one(&r.pool)
    .await
    .unwrap();
    assert_eq!((reads_day, first, last), (10, 2_000, 2_090));

    // HTTP.
    let path = format!(
        "/api/v1/meters/{}/readings?from={}&to={}",
        meters[0],
        (base_ts() - Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        (base_ts() + Duration::hours(5)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    assert_eq!(get(r.addr, &path, None).await.0, 401);
    let (st, body) = get(r.addr, &path, Some(VIEWER)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["readings"].as_array().unwrap().len(), 11);
    let (st, body) = get(
        r.addr,
        &format!("/api/v1/meters/{}/daily?from=2000-01-01", meters[0]),
        Some(VIEWER),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["days"][0]["reads"], 11);
    assert_eq!(
        get(r.addr, "/api/v1/quarantine?reason=spike", Some(VIEWER))
            .await
            .0,
        403
    );
    let (st, body) = get(r.addr, "/api/v1/quarantine?reason=spike", Some(OPERATOR)).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["items"].as_array().unwrap().len(), 1);
    let (st, body) = get(r.addr, "/api/v1/gateways", Some(VIEWER)).await;
    assert_eq!(st, 200);
    assert!(body.contains(&gw));
    let (st, body) = get(r.addr, "/api/v1/meters?status=silent&hours=1", Some(VIEWER)).await;
    assert_eq!(st, 200);
    assert_eq!(json(&body)["meters"].as_array().unwrap().len(), 6);
    assert_eq!(get(r.addr, "/api/v1/openapi.json", None).await.0, 200);
    assert_eq!(get(r.addr, "/health", None).await.0, 200);
    let (st, body) = get(r.addr, "/metrics", None).await;
    assert_eq!(st, 200);
    let _ = body; // the recorder is process-wide; its content is checked elsewhere

    p.close().await;
    r.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_concurrent_safe() {
    let db = fresh_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let (a, b) = tokio::join!(ingest::migrate(&pool), ingest::migrate(&pool));
    a.unwrap();
    b.unwrap();
    ingest::migrate(&pool).await.unwrap();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering._sqlx_migrations").await,
        migrations()
    );
    pool.close().await;
    drop_database(&db).await;
}

/// The migrations shipped in `ingest/migrations`.
fn migrations() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("ingest/migrations")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count() as i64
}
