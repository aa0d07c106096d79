//! The delivery acknowledgement a commit reports for its gateways (published
//! by the consumer after the commit): it never covers a batch that is not
//! committed, whatever order the batches of one gateway commit in (two
//! replicas on a shared subscription), and a replay reports it again.

mod common;
use common::*;
use ingest::db::Partitions;
use ingest::writer::{write_batch, BatchOutcome};
use waterworks_wire::topic::Ack;

async fn write(pool: &sqlx::PgPool, gw: &str, seq: u64, meters: &[String], r: i64) -> BatchOutcome {
    let b = round(gw, seq, meters, r);
    write_batch(pool, &Partitions::default(), &input(&b), window())
        .await
        .expect("write")
}

fn ack_of(out: &BatchOutcome, gw: &str) -> Ack {
    out.acks
        .iter()
        .find(|(g, _)| g == gw)
        .map(|(_, a)| a.clone())
        .expect("an ack for the gateway")
}

#[tokio::test]
async fn out_of_order_commits_never_acknowledge_a_missing_batch() {
    let db = fresh_database().await;
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    let gw = unique("gwa");
    let meters = vec![format!("{gw}-m0"), format!("{gw}-m1")];
    register(&pool, &gw, &meters, None).await;

    let a = ack_of(&write(&pool, &gw, 1, &meters, 0).await, &gw);
    assert_eq!(
        a,
        Ack {
            batch_seq: 1,
            ranges: vec![]
        }
    );
    // Batch 3 commits before batch 2 (another replica holds it).
    let a = ack_of(&write(&pool, &gw, 3, &meters, 2).await, &gw);
    assert_eq!(
        a,
        Ack {
            batch_seq: 1,
            ranges: vec![[3, 3]]
        }
    );
    assert!(!a.covers(2));
    // 5 before 4 as well.
    let a = ack_of(&write(&pool, &gw, 5, &meters, 4).await, &gw);
    assert_eq!(
        a,
        Ack {
            batch_seq: 1,
            ranges: vec![[3, 3], [5, 5]]
        }
    );
    // 2 arrives: 1..=3 contiguous; 4 still missing.
    let a = ack_of(&write(&pool, &gw, 2, &meters, 1).await, &gw);
    assert_eq!(
        a,
        Ack {
            batch_seq: 3,
            ranges: vec![[5, 5]]
        }
    );
    // A replay of 2 stores nothing and reports the same ack.
    let out = write(&pool, &gw, 2, &meters, 1).await;
    assert_eq!(out.stored, 0);
    assert_eq!(ack_of(&out, &gw), a);
    let a = ack_of(&write(&pool, &gw, 4, &meters, 3).await, &gw);
    assert_eq!(
        a,
        Ack {
            batch_seq: 5,
            ranges: vec![]
        }
    );
    pool.close().await;
}
