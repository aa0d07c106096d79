//! Throughput of MQTT-native meters: edge-firmware's MQTT meter simulator
//! publishes one round of N meters to a private Mosquitto; the gateway maps,
//! spools (fsync per batch) and acknowledges them, and forwards the batches
//! upstream to the same broker. Reports readings per second from the round's
//! start until the last reading is seen upstream, for Mosquitto's default
//! window (`max_inflight_messages 20`) and an unlimited one.
//!
//! `cargo run --release -p gateway --example mqtt_meters_bench -- 10000`
//! (needs `mosquitto` on PATH).

use edge_firmware::sim::mqtt::{run_mqtt, MqttSimConfig};
use edge_firmware::sim::{ConsumptionKind, Fault, SimMeter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, MeterId, ReadingBatch};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

async fn run(n: usize, window: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages {window}\nmax_queued_messages 0\n"
        ),
    )
    .expect("config");
    let mut broker = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto on PATH");
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let start = chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let manual = ManualClock::new(start - chrono::Duration::minutes(15));
    let clock = Clock::Manual(manual.clone());
    let gw = format!("bench-mq-{}", std::process::id());
    let id = |i: usize| MeterId::parse(format!("{gw}-{i:05}")).expect("id");
    let mut text = format!("gateway_id = \"{gw}\"\n\n");
    for i in 0..n {
        text.push_str(&format!(
            "[[meters]]\nmeter_id = \"{}\"\ntransport = {{ mqtt = {{ broker = \"mqtt://127.0.0.1:{port}\", topic = \"{gw}/m/+/reading\" }} }}\n",
            id(i)
        ));
    }
    text.push_str(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{port}\"\nack = \"broker\"\n[spool]\ndir = \"spool\"\n"
    ));
    std::fs::write(dir.path().join("gw.toml"), text).expect("write config");
    let config = gateway::load_config(&dir.path().join("gw.toml")).expect("config");

    // Upstream watcher: counts forwarded readings.
    let mut o = MqttOptions::new(format!("{gw}-watch"), "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (watch, mut el) = AsyncClient::new(o, 64);
    let gid = GatewayId::parse(gw.clone()).expect("gw id");
    watch
        .subscribe(topic::readings(&gid), QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    tokio::spawn(async move {
        let _keep = watch;
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                if let Ok(b) = ReadingBatch::decode(&p.payload) {
                    let _ = tx.send(b.readings.len());
                }
            }
        }
    });

    // Raw watcher: when the simulator's last publication reached the broker.
    let mut o = MqttOptions::new(format!("{gw}-raw"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (raw, mut raw_el) = AsyncClient::new(o, 64);
    raw.subscribe(format!("{gw}/m/+/reading"), QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        let _keep = raw;
        let mut k = 0;
        while let Ok(ev) = raw_el.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = ev {
                k += 1;
                if k % n == 0 {
                    let _ = raw_tx.send(Instant::now());
                }
            }
        }
    });

    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .expect("gateway");
    let stop_sim = CancellationToken::new();
    let sim = tokio::spawn(run_mqtt(
        MqttSimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: port,
            client_id: format!("{gw}-sim"),
            topic_prefix: format!("{gw}/m"),
            interval_s: 900,
            seed: 3,
            meters: (0..n)
                .map(|i| SimMeter {
                    meter_id: id(i),
                    kind: ConsumptionKind::Household { households: 1 },
                    initial_volume_l: 1_000_000,
                    fault: Fault::None,
                })
                .collect(),
        },
        clock.clone(),
        stop_sim.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    manual.set(start);
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(k)) => seen += k,
            _ => panic!("only {seen} of {n} readings forwarded"),
        }
    }
    let live = n as f64 / t0.elapsed().as_secs_f64();
    let published = raw_rx.recv().await.expect("raw round");
    let sim_rate = n as f64 / (published - t0).as_secs_f64();

    // Backlog: the gateway is away while the next round is published (its
    // persistent session queues it at the broker), then drains it.
    shutdown.cancel();
    let _ = handle.wait().await;
    manual.set(start + chrono::Duration::minutes(15));
    raw_rx.recv().await.expect("second raw round");
    let config = gateway::load_config(&dir.path().join("gw.toml")).expect("config");
    let t1 = Instant::now();
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .expect("gateway restarts");
    let mut seen = 0;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some(k)) => seen += k,
            _ => panic!(
                "only {seen} of {n} backlog readings forwarded; gateway {:?}",
                *handle.progress.borrow()
            ),
        }
    }
    let backlog = n as f64 / t1.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = handle.wait().await;
    stop_sim.cancel();
    let _ = sim.await;
    println!(
        "broker max_inflight_messages {window}: live round {live:.0} readings/s (simulator publishing alone: {sim_rate:.0}/s); backlog drained {backlog:.0} readings/s (gateway start included)"
    );
    let _ = broker.kill();
    let _ = broker.wait();
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    println!(
        "MQTT-native meters, {n} per round: publish → mapped, spooled, acked → forwarded upstream"
    );
    for window in [20, 0] {
        run(n, window).await;
    }
}
