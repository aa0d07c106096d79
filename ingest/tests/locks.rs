//! Exactly-once under the per-gateway locks, straight into the writer (no
//! broker): concurrent writers of the same batch (replicas handed the same
//! message twice) store it once, and the registry waits for a writer of the
//! gateway a meter leaves before it moves the meter.

mod common;
use common::*;
use ingest::db::Partitions;
use ingest::writer::{lock_gateways, write_batch};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_batch_store_it_once() {
    let db = fresh_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    let gw = unique("gwl");
    let meters: Vec<String> = (0..20).map(|m| format!("{gw}-m{m}")).collect();
    register(&pool, &gw, &meters, None).await;
    // Twelve rounds of twenty meters in one message.
    let mut b = round(&gw, 1, &meters, 0);
    b.readings = (0..12)
        .flat_map(|r| round(&gw, 1, &meters, r).readings)
        .collect();
    let partitions = Partitions::default();
    let writers = (0..4).map(|_| {
        let (pool, input, partitions) = (pool.clone(), input(&b), &partitions);
        async move { write_batch(&pool, partitions, &input, window()).await }
    });
    let outs = futures::future::join_all(writers).await;
    let stored: u64 = outs.iter().map(|o| o.as_ref().unwrap().stored).sum();
    let dups: u64 = outs.iter().map(|o| o.as_ref().unwrap().duplicates).sum();
    assert_eq!(stored, 240, "{outs:?}");
    assert_eq!(dups, 3 * 240, "{outs:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.readings").await,
        240
    );
    assert_eq!(
        count(&pool, "SELECT sum(reads) FROM metering.daily").await,
        240
    );
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_meter_waits_for_the_writer_of_its_old_gateway() {
    let db = fresh_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    let (a, b) = (unique("gwa"), unique("gwb"));
    let meters = vec![format!("{a}-m0")];
    register(&pool, &a, &meters, None).await;

    // A writer of gateway A holds its lock (mid-batch).
    let mut tx = pool.begin().await.unwrap();
    lock_gateways(&mut tx, &[a.as_str()]).await.unwrap();
    let mover = {
        let (pool, b, meters) = (pool.clone(), b.clone(), meters.clone());
        tokio::spawn(async move { register(&pool, &b, &meters, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!mover.is_finished(), "the move did not wait for A's writer");
    let gw: String = sqlx::query_scalar("SELECT gateway_id FROM metering.meters")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(gw, a);
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), mover)
        .await
        .expect("the move goes on once A's writer commits")
        .unwrap();
    let gw: String = sqlx::query_scalar("SELECT gateway_id FROM metering.meters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gw, b);
    pool.close().await;
    drop_database(&db).await;
}
