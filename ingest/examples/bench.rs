//! End-to-end ingest benchmark against the floor measured in the same run.
//!
//! `cargo run --release -p ingest --example bench [-- METERS ROUNDS GATEWAYS REPEATS]`
//! (default 400 meters × 2977 rounds — a month — on 8 gateways, 5
//! repetitions; `100 2977 4` is the demo's 100 meters and month, on 4
//! gateways).
//!
//! 1. Starts a PRIVATE Mosquitto on a free port with the settings ingest
//!    needs in production (`deploy/mosquitto/mosquitto.conf`: no per-session
//!    queue limit, window 5000).
//! 2. Each repetition: two fresh databases of `DATABASE_URL`, one in-process
//!    ingest replica on the first, warmed up by a few readings of other
//!    gateways; then, in alternating order, each after a `CHECKPOINT`:
//!    - end to end: concurrent simulated gateways (their own runtime, so
//!      their CPU is counted apart) publish every round (QoS 1) as fast as
//!      the broker takes them; the clock stops when the last reading is
//!      committed (polled in `metering.gateways`); the stored set is checked;
//!    - the floor: binary `COPY` of the same rows, 20 000 a transaction, into
//!      the same table of the other database.
//! 3. The median and worst ratio over the repetitions.
//! 4. After the last: bytes per reading on disk, and latency: other gateways
//!    publish at a steady 10 000 readings/s for `LATENCY_SECONDS`; a poller
//!    reads each gateway's committed `batch_seq` every millisecond;
//!    publish-to-commit = first poll that sees the message's seq committed −
//!    its publish time (±1 ms poll resolution).

/// The allocator the service binaries use.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use ingest::registry::{register_meters, MeterRegistration};
use ingest::vee::Row;
use ingest::{Ingest, IngestConfig, MqttConfig};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use sqlx::PgPool;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use waterworks_wire::reading::{Reading, ReadingBatch};
use waterworks_wire::{GatewayId, MeterId};

/// Steady rate of the latency phase, and its length.
const LATENCY_RATE: u64 = 10_000;
const LATENCY_SECONDS: u64 = 5;
const LATENCY_GATEWAYS: usize = 4;
const LATENCY_METERS_PER_GATEWAY: usize = 25;

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages 5000\n"
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto on PATH");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Broker {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway_rounds(
    gw: &GatewayId,
    meters: &[MeterId],
    start: DateTime<Utc>,
    rounds: usize,
    base_volume: u64,
) -> Vec<ReadingBatch> {
    (0..rounds)
        .map(|r| ReadingBatch {
            gateway_id: gw.clone(),
            batch_seq: r as u64 + 1,
            readings: meters
                .iter()
                .enumerate()
                .map(|(i, m)| Reading {
                    meter_id: m.clone(),
                    ts: start + Duration::minutes(15 * r as i64),
                    volume_l: base_volume + (i as u64) * 1_000_000 + (r as u64) * 25,
                    flow_lph: Some(100.0),
                    alarms: vec![],
                })
                .collect(),
        })
        .collect()
}

async fn publisher(port: u16, id: String) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20).set_inflight(200);
    let (client, mut el) = AsyncClient::new(o, 1024);
    let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    (client, poller)
}

async fn committed(pool: &PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(readings), 0)::int8 FROM metering.gateways WHERE gateway_id LIKE $1 || '%'",
    )
    .bind(prefix)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What one repetition measured.
struct Rep {
    e2e_s: f64,
    copy_s: f64,
    cpu_e2e: Cpu,
    cpu_copy: Cpu,
}

/// The workload: gateways, their meters, and every round's payload.
struct Load {
    tp: String,
    warm: String,
    warmup: Vec<(String, Vec<u8>)>,
    lat: String,
    lat_gws: Vec<GatewayId>,
    lat_fleet: Vec<Vec<MeterId>>,
    total: i64,
    regs: Vec<MeterRegistration>,
    month: Vec<chrono::NaiveDate>,
    rows: Vec<Row>,
    payloads: Vec<Vec<(String, Vec<u8>)>>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() {
    waterworks_service::telemetry::init("warn");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let meters = *args.first().unwrap_or(&400);
    let rounds = *args.get(1).unwrap_or(&2977);
    let gateways = (*args.get(2).unwrap_or(&8)).clamp(1, meters);
    let repeats = (*args.get(3).unwrap_or(&5)).max(1);
    let total = (meters * rounds) as i64;
    let db_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let run = format!(
        "b{}x{}",
        std::process::id(),
        Utc::now().timestamp() % 100_000
    );
    let broker = Broker::start();
    let admin = PgPool::connect(&db_url).await.expect("database");
    // The simulated gateways publish from their own runtime (two threads,
    // like ingest's), so their CPU is counted apart.
    let gateways_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(GATEWAY_THREADS)
        .enable_all()
        .build()
        .unwrap();

    // Throughput fleet (one per run; every repetition stores it into fresh
    // databases) and the latency fleet (other gateways and meters).
    let tp = format!("bench{run}-t");
    let lat = format!("bench{run}-l");
    let gw_ids: Vec<GatewayId> = (0..gateways)
        .map(|g| GatewayId::parse(format!("{tp}gw{g}")).unwrap())
        .collect();
    let lat_gws: Vec<GatewayId> = (0..LATENCY_GATEWAYS)
        .map(|g| GatewayId::parse(format!("{lat}gw{g}")).unwrap())
        .collect();
    let fleet: Vec<Vec<MeterId>> = (0..gateways)
        .map(|g| {
            (0..meters)
                .filter(|m| m % gateways == g)
                .map(|m| MeterId::parse(format!("{tp}m{m:06}")).unwrap())
                .collect()
        })
        .collect();
    let lat_fleet: Vec<Vec<MeterId>> = (0..LATENCY_GATEWAYS)
        .map(|g| {
            (0..LATENCY_METERS_PER_GATEWAY)
                .map(|m| MeterId::parse(format!("{lat}g{g}m{m:04}")).unwrap())
                .collect()
        })
        .collect();
    // A few readings from yet other gateways warm each fresh ingest up
    // (connections, prepared statements) before the clock starts, as a
    // running service is.
    let warm = format!("bench{run}-w");
    let warm_gws: Vec<GatewayId> = (0..LATENCY_GATEWAYS)
        .map(|g| GatewayId::parse(format!("{warm}gw{g}")).unwrap())
        .collect();
    let warm_fleet: Vec<Vec<MeterId>> = (0..LATENCY_GATEWAYS)
        .map(|g| vec![MeterId::parse(format!("{warm}g{g}m0")).unwrap()])
        .collect();
    let regs: Vec<MeterRegistration> = gw_ids
        .iter()
        .zip(&fleet)
        .chain(lat_gws.iter().zip(&lat_fleet))
        .chain(warm_gws.iter().zip(&warm_fleet))
        .flat_map(|(gw, ms)| {
            ms.iter().map(|m| MeterRegistration {
                meter_id: m.clone(),
                gateway_id: gw.clone(),
                profile_id: "waterworks-sim-v1".into(),
                max_flow_lph: Some(5_000.0),
            })
        })
        .collect();
    // Readings end an hour ago, so none is in the future.
    let end = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(15))
        .unwrap();
    let start = end - Duration::minutes(15 * rounds as i64);
    // Day partitions of the whole span exist before the clock starts, in
    // both databases (in production the maintenance task creates them
    // ahead; the floor gets them too).
    let month: Vec<_> = (0..=(rounds as i64 / 96 + 1))
        .map(|d| (start + Duration::days(d)).date_naive())
        .collect();
    let all: Vec<Vec<ReadingBatch>> = gw_ids
        .iter()
        .zip(&fleet)
        .map(|(gw, ms)| gateway_rounds(gw, ms, start, rounds, 0))
        .collect();
    let rows: Vec<Row> = all
        .iter()
        .flatten()
        .flat_map(|b| {
            b.readings.iter().map(|r| Row {
                msg: 0,
                meter_id: r.meter_id.to_string(),
                ts: r.ts,
                volume_l: r.volume_l as i64,
                flow_lph: r.flow_lph,
                alarms: vec![],
            })
        })
        .collect();
    let payloads: Vec<Vec<(String, Vec<u8>)>> = all
        .iter()
        .map(|bs| {
            bs.iter()
                .map(|b| (waterworks_wire::topic::readings(&b.gateway_id), b.encode()))
                .collect()
        })
        .collect();
    drop(all);
    let warmup: Vec<(String, Vec<u8>)> = warm_gws
        .iter()
        .zip(&warm_fleet)
        .flat_map(|(gw, ms)| gateway_rounds(gw, ms, start, 1, 0))
        .map(|b| (waterworks_wire::topic::readings(&b.gateway_id), b.encode()))
        .collect();
    let load = Load {
        tp,
        warm,
        warmup,
        lat,
        lat_gws,
        lat_fleet,
        total,
        regs,
        month,
        rows,
        payloads,
    };

    println!(
        "ingest bench: {meters} meters × {rounds} rounds = {total} readings, {gateways} gateways ({} readings a message), private Mosquitto :{}; {repeats} repetitions, end to end and the COPY floor each on fresh databases, alternating which goes first, after a CHECKPOINT",
        meters / gateways,
        broker.port
    );
    let mut reps = Vec::with_capacity(repeats);
    for i in 0..repeats {
        let last = i + 1 == repeats;
        let rep = repetition(
            gateways_rt.handle(),
            &db_url,
            &admin,
            &broker,
            &run,
            i,
            &load,
            last,
        )
        .await;
        let (e2e_rate, copy_rate) = (total as f64 / rep.e2e_s, total as f64 / rep.copy_s);
        println!(
            "#{}: end to end {:.2} s = {e2e_rate:.0} readings/s; COPY {:.2} s = {copy_rate:.0} readings/s; ratio {:.2}\n    CPU s end to end: PostgreSQL {:.2}, ingest {:.2}, gateways {:.2}, Mosquitto {:.2}; COPY: PostgreSQL {:.2}, client {:.2}",
            i + 1,
            rep.e2e_s,
            rep.copy_s,
            e2e_rate / copy_rate,
            rep.cpu_e2e.pg,
            rep.cpu_e2e.ingest,
            rep.cpu_e2e.gateways,
            rep.cpu_e2e.broker,
            rep.cpu_copy.pg,
            rep.cpu_copy.ingest,
        );
        reps.push(rep);
    }
    let mut ratios: Vec<f64> = reps.iter().map(|r| r.copy_s / r.e2e_s).collect();
    let mut e2e: Vec<f64> = reps.iter().map(|r| total as f64 / r.e2e_s).collect();
    let mut copy: Vec<f64> = reps.iter().map(|r| total as f64 / r.copy_s).collect();
    let mut cpu_ratio: Vec<f64> = reps
        .iter()
        .map(|r| r.cpu_copy.total() / r.cpu_e2e.total().max(1e-9))
        .collect();
    let worst = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "end to end (Mosquitto → ingest → PostgreSQL), median of {repeats}: {:.0} readings/s",
        median(&mut e2e)
    );
    println!(
        "raw binary COPY of the same rows, median:     {:.0} readings/s",
        median(&mut copy)
    );
    println!(
        "ratio end-to-end / COPY: median {:.2}, worst {worst:.2} (goal: at least 0.8 and 150000 readings/s)",
        median(&mut ratios)
    );
    // CPU time is what the 2 shared cores really limit; it barely depends on
    // what else runs on the machine, unlike the wall-clock rates above.
    println!(
        "CPU-bound ratio (COPY floor CPU / end-to-end CPU, all processes), median: {:.2}",
        median(&mut cpu_ratio)
    );
    admin.close().await;
    gateways_rt.shutdown_background();
}

/// One repetition: fresh databases, an ingest replica on one; end to end and
/// the floor in alternating order (`i` even: end to end first); on the last,
/// storage figures and the latency phase too.
#[allow(clippy::too_many_arguments)]
async fn repetition(
    gateways_rt: &tokio::runtime::Handle,
    db_url: &str,
    admin: &PgPool,
    broker: &Broker,
    run: &str,
    i: usize,
    load: &Load,
    last: bool,
) -> Rep {
    let db_e2e = fresh_db(db_url, &format!("ingest_bench_{run}_{i}_e2e")).await;
    let db_copy = fresh_db(db_url, &format!("ingest_bench_{run}_{i}_copy")).await;
    let mqtt_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let mut mqtt = MqttConfig::new(&mqtt_url, format!("ingest-bench-{run}-{i}"));
    mqtt.subscription = format!("$share/bench{run}x{i}/waterworks/v1/+/readings");
    let mut cfg = IngestConfig::new(&db_e2e, mqtt);
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    // Batch bound override for experiments (default: the service's).
    if let Some(n) = std::env::var("BENCH_MAX_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.batch.max_readings = n;
    }
    if i == 0 {
        println!(
            "batches of at most {} readings / {} bytes",
            cfg.batch.max_readings, cfg.batch.max_bytes
        );
    }
    let ingest = Ingest::build(cfg).await.expect("build ingest");
    let ready = ingest.broker_ready();
    let pool = ingest.pool();
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingest.run_until_stopped(stop.clone()));
    register_meters(&pool, &load.regs).await.unwrap();
    let parts = ingest::db::Partitions::default();
    parts.ensure(&pool, &load.month).await.unwrap();
    let copy_pool = PgPool::connect(&db_copy).await.unwrap();
    ingest::migrate(&copy_pool).await.unwrap();
    // (Partitions remembers what it created: one per database.)
    ingest::db::Partitions::default()
        .ensure(&copy_pool, &load.month)
        .await
        .unwrap();
    while !ready() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (client, poller) = publisher(broker.port, format!("bench{run}-{i}-warm")).await;
    for (topic, payload) in &load.warmup {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    while committed(&pool, &load.warm).await < load.warmup.len() as i64 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let _ = client.disconnect().await;
    poller.abort();

    let (e2e_s, cpu_e2e, copy_s, cpu_copy) = if i % 2 == 0 {
        let (a, b) = end_to_end(gateways_rt, admin, &pool, broker, run, i, load).await;
        let (c, d) = copy_floor(admin, &copy_pool, broker, load).await;
        (a, b, c, d)
    } else {
        let (c, d) = copy_floor(admin, &copy_pool, broker, load).await;
        let (a, b) = end_to_end(gateways_rt, admin, &pool, broker, run, i, load).await;
        (a, b, c, d)
    };

    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM metering.readings WHERE meter_id LIKE $1 || '%'")
            .bind(&load.tp)
            .fetch_one(&pool)
            .await
            .unwrap();
    let dups: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM metering.readings GROUP BY meter_id, ts HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, load.total, "stored set differs from the published");
    assert_eq!(dups, 0, "duplicated keys");

    if last {
        println!("every repetition: {stored} stored, {dups} duplicated keys");
        storage(&copy_pool, load).await;
        latency(
            &pool,
            broker.port,
            run,
            &load.lat,
            &load.lat_gws,
            &load.lat_fleet,
        )
        .await;
    }
    copy_pool.close().await;
    stop.cancel();
    let _ = task.await;
    pool.close().await;
    for db in [&db_e2e, &db_copy] {
        let name = db.rsplit('/').next().unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(admin)
            .await;
    }
    Rep {
        e2e_s,
        copy_s,
        cpu_e2e,
        cpu_copy,
    }
}

/// Publishes every round through the broker and waits until the last
/// reading is committed.
async fn end_to_end(
    gateways_rt: &tokio::runtime::Handle,
    admin: &PgPool,
    pool: &PgPool,
    broker: &Broker,
    run: &str,
    i: usize,
    load: &Load,
) -> (f64, Cpu) {
    // The gateways' own copies of their payloads, made before the clock starts.
    let lists = load.payloads.clone();
    sqlx::query("CHECKPOINT").execute(admin).await.unwrap();
    let cpu0 = CpuMeter::start(pool, broker.child.id()).await;
    let t0 = Instant::now();
    let mut pubs = Vec::new();
    for (g, list) in lists.into_iter().enumerate() {
        let port = broker.port;
        let id = format!("bench{run}-{i}-pub{g}");
        pubs.push(gateways_rt.spawn(async move {
            let (client, poller) = publisher(port, id).await;
            for (topic, payload) in list {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            (client, poller)
        }));
    }
    loop {
        let n = committed(pool, &load.tp).await;
        if n >= load.total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(
            t0.elapsed().as_secs() < 600,
            "stalled at {n} of {}",
            load.total
        );
    }
    let e2e = t0.elapsed().as_secs_f64();
    let cpu = cpu0.stop(pool).await;
    for p in pubs {
        let (client, poller) = p.await.unwrap();
        let _ = client.disconnect().await;
        poller.abort();
    }
    (e2e, cpu)
}

/// The floor: binary COPY of the same rows into the same table of another
/// fresh database, 20 000 a transaction.
async fn copy_floor(
    admin: &PgPool,
    copy_pool: &PgPool,
    broker: &Broker,
    load: &Load,
) -> (f64, Cpu) {
    sqlx::query("CHECKPOINT").execute(admin).await.unwrap();
    let cpu1 = CpuMeter::start(copy_pool, broker.child.id()).await;
    let t1 = Instant::now();
    for chunk in load.rows.chunks(20_000) {
        let mut tx = copy_pool.begin().await.unwrap();
        let mut c = tx.copy_in_raw(ingest::copy::COPY_READINGS).await.unwrap();
        c.send(ingest::copy::encode(chunk)).await.unwrap();
        c.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let copy = t1.elapsed().as_secs_f64();
    (copy, cpu1.stop(copy_pool).await)
}

/// Bytes per reading on disk, hot and after compaction (in the floor's
/// database, which holds exactly the rows).
async fn storage(copy_pool: &PgPool, load: &Load) {
    let bytes: i64 = sqlx::query_scalar("SELECT sum(pg_total_relation_size(relid))::int8 FROM pg_partition_tree('metering.readings') WHERE isleaf").fetch_one(copy_pool).await.unwrap();
    println!(
        "hot storage: {:.1} bytes per reading on disk",
        bytes as f64 / load.total as f64
    );
    let days: std::collections::BTreeSet<_> = load.rows.iter().map(|r| r.ts.date_naive()).collect();
    let t2 = Instant::now();
    for day in &days {
        ingest::db::compact_day(copy_pool, *day).await.unwrap();
    }
    let compact_s = t2.elapsed().as_secs_f64();
    let cbytes: i64 =
        sqlx::query_scalar("SELECT pg_total_relation_size('metering.readings_compact')::int8")
            .fetch_one(copy_pool)
            .await
            .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM metering.readings")
        .fetch_one(copy_pool)
        .await
        .unwrap();
    println!(
        "compacted: {:.1} bytes per reading on disk ({} days in {compact_s:.2} s, {left} left hot)",
        cbytes as f64 / load.total as f64,
        days.len()
    );
}

/// Publishes at a steady `LATENCY_RATE` and measures publish-to-commit.
async fn latency(
    pool: &PgPool,
    port: u16,
    run: &str,
    prefix: &str,
    gws: &[GatewayId],
    fleet: &[Vec<MeterId>],
) {
    let per_msg = fleet[0].len() as u64;
    let msgs_per_s = LATENCY_RATE / per_msg;
    let rounds = (msgs_per_s * LATENCY_SECONDS) as usize / gws.len();
    let start = (Utc::now() - Duration::days(7))
        .duration_trunc(Duration::days(1))
        .unwrap();
    let batches: Vec<Vec<ReadingBatch>> = gws
        .iter()
        .zip(fleet)
        .map(|(gw, ms)| gateway_rounds(gw, ms, start, rounds, 0))
        .collect();
    let (client, poller) = publisher(port, format!("bench{run}-lat")).await;
    let interval = std::time::Duration::from_nanos(1_000_000_000 / msgs_per_s);
    let done = CancellationToken::new();
    // The committed seq of each gateway, seen every millisecond.
    let watcher = {
        let pool = pool.clone();
        let done = done.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut seen: HashMap<String, Vec<(u64, Instant)>> = HashMap::new();
            while !done.is_cancelled() {
                let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT gateway_id, last_batch_seq FROM metering.gateways WHERE gateway_id LIKE $1 || '%'",
                )
                .bind(&prefix)
                .fetch_all(&pool)
                .await
                .unwrap();
                let now = Instant::now();
                for (gw, seq) in rows {
                    let list = seen.entry(gw).or_default();
                    let seq = seq.unwrap_or(0) as u64;
                    if list.last().is_none_or(|l| l.0 < seq) {
                        list.push((seq, now));
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            seen
        })
    };
    let mut sent: Vec<(String, u64, Instant)> = Vec::new();
    let t0 = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for r in 0..rounds {
        for (g, list) in batches.iter().enumerate() {
            ticker.tick().await;
            let b = &list[r];
            let at = Instant::now();
            client
                .publish(
                    waterworks_wire::topic::readings(&b.gateway_id),
                    QoS::AtLeastOnce,
                    false,
                    b.encode(),
                )
                .await
                .unwrap();
            sent.push((gws[g].to_string(), b.batch_seq, at));
        }
    }
    let publish_s = t0.elapsed().as_secs_f64();
    let want = (rounds * gws.len()) as i64 * per_msg as i64;
    while committed(pool, prefix).await < want {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    done.cancel();
    let seen = watcher.await.unwrap();
    let _ = client.disconnect().await;
    poller.abort();
    let mut lat_ms: Vec<f64> = sent
        .iter()
        .filter_map(|(gw, seq, at)| {
            let list = seen.get(gw)?;
            let i = list.partition_point(|(s, _)| s < seq);
            list.get(i)
                .map(|(_, t)| t.duration_since(*at).as_secs_f64() * 1e3)
        })
        .collect();
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat_ms[((lat_ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "latency at {:.0} readings/s ({} messages of {per_msg} over {publish_s:.1} s): publish-to-commit p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        want as f64 / publish_s,
        sent.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

async fn fresh_db(base: &str, name: &str) -> String {
    let admin = PgPool::connect(base).await.expect("database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// CPU seconds (user + system) of one process, from /proc (Linux).
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of this process's threads named `name` (the publishers'
/// runtime), from /proc (Linux).
fn threads_cpu_s(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            Some((ticks(11) + ticks(12)) / 100.0)
        })
        .sum()
}

/// Name of the publishers' runtime threads (the simulated gateways run on
/// their own runtime so their CPU is counted apart from ingest's).
const GATEWAY_THREADS: &str = "bench-gateways";

/// CPU used during a phase by the PostgreSQL backends of one database,
/// this process and the broker.
struct CpuMeter {
    backends: HashMap<u32, f64>,
    me: f64,
    gateways: f64,
    broker: (u32, f64),
}

async fn backends(pool: &PgPool) -> Vec<u32> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    pids.into_iter().map(|p| p as u32).collect()
}

impl CpuMeter {
    async fn start(pool: &PgPool, broker_pid: u32) -> CpuMeter {
        CpuMeter {
            backends: backends(pool)
                .await
                .into_iter()
                .map(|p| (p, proc_cpu_s(p)))
                .collect(),
            me: proc_cpu_s(std::process::id()),
            gateways: threads_cpu_s(GATEWAY_THREADS),
            broker: (broker_pid, proc_cpu_s(broker_pid)),
        }
    }

    /// CPU seconds since start.
    async fn stop(self, pool: &PgPool) -> Cpu {
        let pg: f64 = backends(pool)
            .await
            .into_iter()
            .map(|p| proc_cpu_s(p) - self.backends.get(&p).copied().unwrap_or(0.0))
            .sum();
        let gateways = threads_cpu_s(GATEWAY_THREADS) - self.gateways;
        Cpu {
            pg,
            ingest: proc_cpu_s(std::process::id()) - self.me - gateways,
            gateways,
            broker: proc_cpu_s(self.broker.0) - self.broker.1,
        }
    }
}

/// CPU seconds of a phase: PostgreSQL backends of its database, this process
/// without the publishers (ingest, or the COPY client), the publishers, the
/// broker.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    pg: f64,
    ingest: f64,
    gateways: f64,
    broker: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.pg + self.ingest + self.gateways + self.broker
    }
}
