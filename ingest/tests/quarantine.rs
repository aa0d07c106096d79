//! The quarantine is bounded: equal refusals (gateway, reason, payload
//! digest) are one row with a count and first/last seen, a stored payload is
//! a prefix with the whole payload's digest and length, and rows not seen
//! again within the retention are swept, a bounded number per pass. Written
//! through the real writer into a real database.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use ingest::vee::{self, MsgMeta, QUARANTINE_PAYLOAD_PREFIX_BYTES};
use ingest::writer::{self, BatchInput};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// One message per payload, all on `gw`'s readings topic, received at `at`.
fn junk_input(gw: &str, payloads: &[Vec<u8>], at: DateTime<Utc>) -> BatchInput {
    let topic = format!("waterworks/v1/{gw}/readings");
    let mut input = BatchInput::default();
    for (i, p) in payloads.iter().enumerate() {
        let mut meta = MsgMeta {
            topic: topic.clone(),
            received_at: at,
            gateway_id: None,
            batch_seq: None,
        };
        let d = vee::decode_message(i, &mut meta, p);
        input.metas.push(meta);
        input.decoded.push(d);
    }
    input
}

async fn write(pool: &PgPool, input: &BatchInput) {
    let partitions = ingest::db::Partitions::default();
    writer::write_batch(pool, &partitions, input, window())
        .await
        .expect("write");
}

async fn setup() -> (String, PgPool) {
    let db = fresh_database().await;
    let pool = PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    (db, pool)
}

/// 2 MiB of junk that is not JSON, varied by `k`.
fn big_junk(k: u8) -> Vec<u8> {
    let mut v = vec![b'#'; waterworks_wire::reading::MAX_PAYLOAD_BYTES];
    v[0] = k;
    v
}

#[tokio::test]
async fn equal_refusals_are_one_row_with_a_count_and_a_capped_payload() {
    let (db, pool) = setup().await;
    let gw = unique("gwq");
    let other = unique("gwr");
    let t0 = Utc::now() - Duration::minutes(10);
    let junk = big_junk(b'A');
    // The same junk twice in one batch, then three more times in later
    // batches, plus one different junk and the same junk from another gateway.
    write(&pool, &junk_input(&gw, &[junk.clone(), junk.clone()], t0)).await;
    for k in 1..=3 {
        write(
            &pool,
            &junk_input(&gw, std::slice::from_ref(&junk), t0 + Duration::minutes(k)),
        )
        .await;
    }
    write(&pool, &junk_input(&gw, &[big_junk(b'B')], t0)).await;
    write(&pool, &junk_input(&other, std::slice::from_ref(&junk), t0)).await;

    type Row = (
        String,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
        i32,
        Vec<u8>,
        Vec<u8>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT gateway_id, seen_count, received_at, last_seen_at, payload_len, payload, digest
               FROM metering.quarantine ORDER BY gateway_id, seen_count DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "one row per (gateway, reason, digest)");
    let (g, seen, first, last, len, payload, digest) = &rows[0];
    assert_eq!(g, &gw);
    assert_eq!(*seen, 5, "five sightings of the same junk");
    assert_eq!(
        first.timestamp_micros(),
        t0.timestamp_micros(),
        "first seen"
    );
    assert_eq!(
        last.timestamp_micros(),
        (t0 + Duration::minutes(3)).timestamp_micros(),
        "last seen"
    );
    assert_eq!(*len as usize, junk.len(), "the original length is kept");
    assert_eq!(
        payload.len(),
        QUARANTINE_PAYLOAD_PREFIX_BYTES,
        "a prefix only"
    );
    assert_eq!(&payload[..], &junk[..QUARANTINE_PAYLOAD_PREFIX_BYTES]);
    assert_eq!(
        &digest[..],
        &Sha256::digest(&junk)[..],
        "the whole payload's digest"
    );
    assert_eq!(
        rows[1].1, 1,
        "the other junk of the same gateway is its own row"
    );
    assert_eq!(
        rows[2].0, other,
        "another gateway's equal junk is its own row"
    );
    let bytes: i64 = count(
        &pool,
        "SELECT sum(octet_length(payload))::int8 FROM metering.quarantine",
    )
    .await;
    assert_eq!(bytes, 3 * QUARANTINE_PAYLOAD_PREFIX_BYTES as i64);
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn a_refused_reading_too_large_is_kept_as_a_prefix_with_a_short_detail() {
    let (db, pool) = setup().await;
    let gw = unique("gwq");
    // A sound envelope whose one reading is junk: a meter id of 1 MiB.
    let huge = "x".repeat(1 << 20);
    let payload = format!(
        r#"{{"gateway_id":"{gw}","batch_seq":1,"readings":[{{"meter_id":"{huge}","ts":"2026-01-01T00:00:00Z","volume_l":"nope"}}]}}"#
    );
    write(&pool, &junk_input(&gw, &[payload.into_bytes()], Utc::now())).await;
    let (reading, detail): (serde_json::Value, String) =
        sqlx::query_as("SELECT reading, detail FROM metering.quarantine")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reading["truncated"], true, "{reading}");
    assert!(reading["bytes"].as_u64().unwrap() > 1 << 20);
    assert!(reading.to_string().len() < 2 * vee::QUARANTINE_READING_MAX_BYTES);
    assert!(detail.chars().count() <= vee::QUARANTINE_DETAIL_MAX_CHARS + 1);
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn rows_not_seen_within_the_retention_are_swept_a_bounded_number_per_pass() {
    let (db, pool) = setup().await;
    let gw = unique("gwq");
    let now = Utc::now();
    let old = now - Duration::days(40);
    // Five distinct junk rows last seen 40 days ago, two seen today, and one
    // first seen 40 days ago but seen again today (it stays).
    let olds: Vec<Vec<u8>> = (0..5)
        .map(|k| format!("old junk {k}").into_bytes())
        .collect();
    write(&pool, &junk_input(&gw, &olds, old)).await;
    let fresh: Vec<Vec<u8>> = (0..2)
        .map(|k| format!("new junk {k}").into_bytes())
        .collect();
    write(&pool, &junk_input(&gw, &fresh, now)).await;
    let again = b"seen then and now".to_vec();
    write(&pool, &junk_input(&gw, std::slice::from_ref(&again), old)).await;
    write(&pool, &junk_input(&gw, &[again], now)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.quarantine").await,
        8
    );

    let swept = ingest::db::sweep_quarantine(&pool, now, 30, 2)
        .await
        .unwrap();
    assert_eq!(swept, 2, "at most max_rows per pass");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.quarantine").await,
        6
    );
    let swept = ingest::db::sweep_quarantine(&pool, now, 30, 100)
        .await
        .unwrap();
    assert_eq!(swept, 3, "the rest of the expired rows");
    let swept = ingest::db::sweep_quarantine(&pool, now, 30, 100)
        .await
        .unwrap();
    assert_eq!(swept, 0, "nothing else is expired");
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT convert_from(payload, 'UTF8'), seen_count FROM metering.quarantine ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        vec![
            ("new junk 0".to_string(), 1),
            ("new junk 1".to_string(), 1),
            ("seen then and now".to_string(), 2),
        ]
    );
    // A retention of 0 days expires everything last seen before now.
    let later = now + Duration::seconds(1);
    assert_eq!(
        ingest::db::sweep_quarantine(&pool, later, 0, 100)
            .await
            .unwrap(),
        3
    );
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn the_migration_merges_equal_rows_and_caps_stored_payloads() {
    // Migrations up to 0007 (the table as it was), rows as they were
    // written then, then the rest: 0008 merges and caps them.
    let db = fresh_database().await;
    let pool = PgPool::connect(&db).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.as_str() < "0008" {
            std::fs::copy(e.path(), dir.path().join(&name)).unwrap();
        }
    }
    let old = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    waterworks_service::db::migrate_schema(&pool, "metering", &old, 0x5757_494E_0001)
        .await
        .unwrap();
    let big = vec![b'z'; 100_000];
    for at in [
        "2026-11-01T00:00:00Z",
        "2026-11-02T00:00:00Z",
        "2026-11-03T00:00:00Z",
    ] {
        sqlx::query(
            "INSERT INTO metering.quarantine (received_at, gateway_id, topic, reason, detail, payload)
             VALUES ($1::timestamptz, 'gw-old', 't', 'malformed', 'not json', $2)",
        )
        .bind(at)
        .bind(&big)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO metering.quarantine (gateway_id, topic, reason, detail, reading, meter_id, ts)
         VALUES ('gw-old', 't', 'spike', 's', '{\"volume_l\": 5}', 'm1', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    ingest::migrate(&pool).await.unwrap();
    let rows: Vec<(String, i64, i32, i32, String)> = sqlx::query_as(
        "SELECT reason, seen_count, coalesce(payload_len, -1), coalesce(octet_length(payload), -1),
                to_char(last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
           FROM metering.quarantine ORDER BY reason",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        ("malformed".into(), 3, 100_000, 4096, "2026-11-03".into())
    );
    assert_eq!((rows[1].1, rows[1].2, rows[1].3), (1, -1, -1));
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn a_gateway_holds_a_bounded_number_of_rows_per_reason_and_counts_the_rest() {
    use waterworks_wire::reading::{Reading, ReadingBatch};
    use waterworks_wire::{GatewayId, MeterId};
    let (db, pool) = setup().await;
    let gw = unique("gwq");
    let cap = vee::QUARANTINE_MAX_ROWS_PER_GATEWAY_REASON as usize;
    // Readings for meters nobody registered: each a distinct refusal.
    let unknown = |from: usize, n: usize, seq: u64| ReadingBatch {
        gateway_id: GatewayId::parse(gw.clone()).unwrap(),
        batch_seq: seq,
        readings: (from..from + n)
            .map(|i| Reading {
                meter_id: MeterId::parse(format!("nobody-{i}")).unwrap(),
                ts: base_ts(),
                volume_l: 1,
                flow_lph: None,
                alarms: vec![],
            })
            .collect(),
    };
    let rows = |r: &'static str| {
        let pool = pool.clone();
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM metering.quarantine WHERE reason = $1")
                    .bind(r)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n as usize
        }
    };
    write(&pool, &input(&unknown(0, cap - 10, 1))).await;
    assert_eq!(rows("unknown_meter").await, cap - 10);
    // 60 more: 10 fill the cap, 50 are counted in the overflow row.
    write(&pool, &input(&unknown(cap - 10, 60, 2))).await;
    assert_eq!(rows("unknown_meter").await, cap + 1);
    let overflow = |pool: PgPool| async move {
        let (n, detail, payload): (i64, String, Option<Vec<u8>>) = sqlx::query_as(
            "SELECT seen_count, detail, payload FROM metering.quarantine
              WHERE reason = 'unknown_meter' AND digest = $1",
        )
        .bind(vee::overflow_digest().to_vec())
        .fetch_one(&pool)
        .await
        .unwrap();
        (n, detail, payload)
    };
    let (n, detail, payload) = overflow(pool.clone()).await;
    assert_eq!(n, 50);
    assert!(detail.starts_with("overflow"), "{detail}");
    assert!(payload.is_none());
    write(&pool, &input(&unknown(cap + 50, 7, 3))).await;
    assert_eq!(rows("unknown_meter").await, cap + 1, "still capped");
    assert_eq!(overflow(pool.clone()).await.0, 57);
    let seen: i64 = count(
        &pool,
        "SELECT sum(seen_count)::int8 FROM metering.quarantine WHERE reason = 'unknown_meter'",
    )
    .await;
    assert_eq!(seen as usize, cap - 10 + 60 + 7, "every refusal is counted");
    // The cap is per reason: junk from the same gateway still gets its row.
    write(&pool, &junk_input(&gw, &[b"junk".to_vec()], Utc::now())).await;
    assert_eq!(rows("malformed").await, 1);
    pool.close().await;
    drop_database(&db).await;
}
