//! Replays straight into the writer (no broker): a reading refused once is
//! refused once, however often and with whatever `batch_seq` it comes back,
//! and a late reading is checked against its stored neighbours.

mod common;
use common::*;
use ingest::db::Partitions;
use ingest::writer::{write_batch, BatchOutcome};
use waterworks_wire::reading::ReadingBatch;

async fn write(pool: &sqlx::PgPool, b: &ReadingBatch) -> BatchOutcome {
    write_batch(pool, &Partitions::default(), &input(b), window())
        .await
        .expect("write")
}

async fn state(pool: &sqlx::PgPool) -> (String, Vec<(String, String)>) {
    let (_, stored): (i64, String) = sqlx::query_as(STORED_DIGEST).fetch_one(pool).await.unwrap();
    let q: Vec<(String, String)> =
        sqlx::query_as("SELECT reason, reading::text FROM metering.quarantine ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    (stored, q)
}

#[tokio::test]
async fn a_replayed_backwards_reading_is_neither_stored_nor_quarantined_again() {
    let db = fresh_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    let gw = unique("gwr");
    let meters = vec![format!("{gw}-m0")];
    register(&pool, &gw, &meters, Some(1_000.0)).await;

    // Rounds 0..5 in one batch; round 3's totalizer drops (a backflow).
    let mut b = round(&gw, 5, &meters, 0);
    b.readings = (0..5)
        .map(|r| round(&gw, 5, &meters, r).readings.remove(0))
        .collect();
    b.readings[3].volume_l = 5;
    let first = write(&pool, &b).await;
    assert_eq!(first.stored, 4);
    assert_eq!(first.quarantined.get("backwards"), Some(&1));
    let after_first = state(&pool).await;
    assert_eq!(after_first.1.len(), 1);

    // The same batch again, then with a lower batch_seq (a fresh spool).
    for seq in [5, 1] {
        b.batch_seq = seq;
        let again = write(&pool, &b).await;
        assert_eq!(
            (again.stored, again.backfilled, again.duplicates),
            (0, 0, 5),
            "seq {seq}: {again:?}"
        );
        assert!(again.quarantined.is_empty(), "seq {seq}: {again:?}");
        assert_eq!(state(&pool).await, after_first, "seq {seq}");
    }

    // A late reading never seen before is checked against its stored
    // neighbours: between rounds 2 (20 L) and 4 (40 L).
    let mut late = round(&gw, 1, &meters, 0);
    late.readings[0].ts = base_ts() + chrono::Duration::minutes(40);
    late.readings[0].volume_l = 45; // above the next stored read
    let out = write(&pool, &late).await;
    assert_eq!(out.quarantined.get("backwards"), Some(&1), "{out:?}");
    late.readings[0].volume_l = 30;
    let out = write(&pool, &late).await;
    assert_eq!(out.backfilled, 1, "{out:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.readings_v1").await,
        5
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.quarantine").await,
        2
    );

    pool.close().await;
    drop_database(&db).await;
}
