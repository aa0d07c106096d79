//! Fault tests on private instances: ingest SIGKILLed under load and
//! restarted, and PostgreSQL crashed and restarted under load. Afterwards the
//! stored set equals the published set exactly (count and digest), no key is
//! stored twice, and daily usage counts every reading once.

mod common;
use common::private::{Mosquitto, PgCluster};
use common::*;
use sqlx::PgPool;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use waterworks_wire::reading::ReadingBatch;

type Set = Vec<(String, chrono::DateTime<chrono::Utc>, i64)>;

/// Rounds of `meters` on one gateway, and the set of readings they carry.
fn load(gw: &str, meters: usize, rounds: usize) -> (Vec<ReadingBatch>, Vec<String>, Set) {
    let ids: Vec<String> = (0..meters).map(|i| format!("{gw}-m{i:03}")).collect();
    let batches: Vec<ReadingBatch> = (0..rounds)
        .map(|r| round(gw, r as u64 + 1, &ids, r as i64))
        .collect();
    let set = batches.iter().flat_map(round_set).collect();
    (batches, ids, set)
}

/// Publishes every batch (QoS 1), `pace` apart, and waits for every PUBACK.
fn publish_paced(
    url: String,
    batches: Vec<ReadingBatch>,
    pace: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut p = Publisher::connect_to(&url, &unique("pub")).await;
        for b in &batches {
            p.publish(b).await;
            tokio::time::sleep(pace).await;
        }
        p.flush().await;
        p.close().await;
    })
}

async fn try_count(pool: &PgPool) -> Option<i64> {
    // Through the view: a restarted replica compacts closed days (hot and
    // compacted readings together are the stored set).
    sqlx::query_scalar("SELECT count(*) FROM metering.readings_v1")
        .fetch_one(pool)
        .await
        .ok()
}

/// Waits until at least `n` readings are stored.
async fn until_stored(pool: &PgPool, n: i64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while try_count(pool).await.unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} stored after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the whole set, then checks it exactly.
async fn assert_stored_exactly(pool: &PgPool, set: &Set, secs: u64) {
    let want = set.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let n = try_count(pool).await.unwrap_or(0);
        if n >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {want} stored after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let anything still in flight land, so a duplicate would show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (n, d): (i64, String) = sqlx::query_as(STORED_DIGEST).fetch_one(pool).await.unwrap();
    assert_eq!(n, want, "stored count");
    assert_eq!(d, digest(set), "stored digest");
    assert_eq!(
        count(pool, "SELECT count(*) FROM (SELECT 1 FROM metering.readings_v1 GROUP BY meter_id, ts HAVING count(*) > 1) d").await,
        0,
        "no key stored twice"
    );
    assert_eq!(
        count(
            pool,
            "SELECT coalesce(sum(reads), 0)::int8 FROM metering.daily"
        )
        .await,
        want,
        "daily usage counts each reading once"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM metering.quarantine").await,
        0
    );
}

/// The replica as a real process (the `ingest-replica` binary).
struct ChildReplica {
    child: Child,
}

impl ChildReplica {
    fn spawn(config: &std::path::Path) -> ChildReplica {
        let child = Command::new(env!("CARGO_BIN_EXE_ingest-replica"))
            .arg(config)
            .env_remove("DATABASE_URL")
            .env_remove("MQTT_URL")
            .env(
                "RUST_LOG",
                std::env::var("CHILD_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ingest-replica");
        ChildReplica { child }
    }

    /// SIGKILL: no drain, no final acks, no disconnect.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for ChildReplica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_then_restart_stores_exactly_the_published_set() {
    let broker = Mosquitto::start();
    let db = fresh_database().await;
    let pool = PgPool::connect(&db).await.unwrap();
    ingest::migrate(&pool).await.unwrap();
    let gw = unique("gwk");
    let (batches, ids, set) = load(&gw, 40, 250);
    register(&pool, &gw, &ids, Some(1_000.0)).await;

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ingest.toml");
    std::fs::write(
        &conf,
        format!(
            r#"database_url = "{db}"
http_listen = "127.0.0.1:0"
max_db_connections = 4
[mqtt]
url = "{}"
client_id = "{}"
subscription = "$share/{}/waterworks/v1/+/readings"
[batch]
max_readings = 2000
"#,
            broker.url(),
            unique("ingk"),
            unique("grp"),
        ),
    )
    .unwrap();

    let replica = ChildReplica::spawn(&conf);
    // The first session must exist before publishing (the broker keeps
    // messages only for sessions it knows).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = publish_paced(broker.url(), batches, Duration::from_millis(8));
    let total = set.len() as i64;

    until_stored(&pool, total / 4, 30).await;
    replica.kill();
    let stored_at_kill = try_count(&pool).await.unwrap();
    let replica = ChildReplica::spawn(&conf);
    until_stored(&pool, (total * 3 / 5).max(stored_at_kill + 1), 30).await;
    replica.kill();
    let replica = ChildReplica::spawn(&conf);

    publisher.await.unwrap();
    assert!(stored_at_kill < total, "the first kill came under load");
    assert_stored_exactly(&pool, &set, 30).await;
    drop(replica);
    pool.close().await;
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_under_load_then_restart_stores_exactly_the_published_set() {
    let broker = Mosquitto::start();
    let pg = PgCluster::start();
    let db = fresh_database_at(&pg.url()).await;
    let gw = unique("gwp");
    let (batches, ids, set) = load(&gw, 40, 250);
    let mut cfg = config(&db, &unique("grp"), &unique("ingp"));
    cfg.mqtt.url = broker.url();
    cfg.batch.max_readings = 2_000;
    let replica = start(cfg).await;
    register(&replica.pool, &gw, &ids, Some(1_000.0)).await;
    let pool = PgPool::connect(&db).await.unwrap();

    let publisher = publish_paced(broker.url(), batches, Duration::from_millis(8));
    let total = set.len() as i64;
    until_stored(&pool, total / 4, 30).await;
    let pg = tokio::task::spawn_blocking(move || {
        pg.crash();
        std::thread::sleep(Duration::from_secs(2));
        pg.up();
        pg
    })
    .await
    .unwrap();
    let after_restart = try_count(&pool).await.unwrap_or(0);
    publisher.await.unwrap();
    assert!(after_restart < total, "the crash came under load");
    assert_stored_exactly(&pool, &set, 30).await;
    replica.stop().await;
    pool.close().await;
    drop(pg);
}

/// Regression: with an unlimited broker window, acknowledgements of committed
/// batches used to fill rumqttc's request channel while the event loop was
/// not polled (pipeline full), and the replica stalled for good. A narrow
/// pipeline and small batches make many acks per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_an_unlimited_broker_window_never_stalls_the_acks() {
    let broker = Mosquitto::start();
    let db = fresh_database().await;
    let gws: Vec<String> = (0..4).map(|_| unique("gwf")).collect();
    let mut cfg = config(&db, &unique("grp"), &unique("ingf"));
    cfg.mqtt.url = broker.url();
    cfg.mqtt.max_inflight = 8;
    // MQTT 5: the largest window a client can grant (the broker's is unlimited).
    cfg.mqtt.receive_maximum = u16::MAX;
    cfg.batch.max_readings = 40;
    let replica = start(cfg).await;
    let mut set = Vec::new();
    let mut pubs = Vec::new();
    for gw in &gws {
        let (batches, ids, s) = load(gw, 4, 300);
        register(&replica.pool, gw, &ids, None).await;
        set.extend(s);
        pubs.push(publish_paced(broker.url(), batches, Duration::ZERO));
    }
    for p in pubs {
        p.await.unwrap();
    }
    let pool = PgPool::connect(&db).await.unwrap();
    assert_stored_exactly(&pool, &set, 30).await;
    replica.stop().await;
    pool.close().await;
    drop_database(&db).await;
}
