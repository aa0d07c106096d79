//! Gateway benchmarks, each printed beside a floor measured in the same run.
//!
//! ```text
//! cargo build --release -p gateway --bins --examples && \
//!   $CARGO_TARGET_DIR/release/examples/gateway_bench [meters]
//! ```
//!
//! 1. Polling: the release `waterworks-gateway` binary polls N simulated meters
//!    (edge-firmware's simulator over loopback TCP, default 10,000) on 5-second
//!    rounds; reported: meters polled per second of round time, meters polled
//!    per CPU-second of the gateway process, and its resident memory. Floor:
//!    one tokio-modbus client reading the same simulator back to back.
//! 2. Replay: a spool of 1,000 batches of 1,000 readings is drained by the binary
//!    to a private Mosquitto; reported: readings per second from start to the
//!    last batch received. Floor: rumqttc publishing the same payloads at QoS 1.
//!
//! Needs `mosquitto` on PATH; uses a private broker, never the shared one.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, clippy::all)]
mod common;

use common::PrivateBroker;
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_modbus::client::Reader;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::Clock;
use waterworks_wire::{GatewayId, MeterId, Reading, ReadingBatch};

const ROUND_S: u32 = 5;
const ROUNDS: u64 = 3;
const REPLAY_BATCHES: u64 = 1000;
const REPLAY_READINGS: usize = 1000;

fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples")
        .join("waterworks-gateway");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p gateway --bins",
        bin.display()
    );
    bin
}

fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields after the command: state is [0]; utime [11], stime [12] in clock ticks (100 Hz)
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn proc_mem_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

fn metric_sum(body: &str, prefix: &str, must_contain: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(must_contain))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let bin = gateway_binary();
    let dir = tempfile::tempdir().unwrap();
    let broker = PrivateBroker::start(dir.path()).await;

    // ---- 1. polling
    let meters: Vec<SimMeter> = (0..n)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("bench-{i:05}")).unwrap(),
            kind: ConsumptionKind::Household { households: 1 },
            initial_volume_l: 100_000 + i as u64,
            fault: Fault::None,
        })
        .collect();
    let sim = Simulator::bind(
        SimConfig {
            host: "127.0.0.1".parse().unwrap(),
            meters_per_port: 200,
            seed: 1,
            meters,
        },
        // The simulator's registers at a fixed instant just after its epoch: its
        // cost per read stays constant, so the figures are the gateway's.
        Clock::Manual(waterworks_wire::clock::ManualClock::new(
            edge_firmware::sim::sim_epoch() + chrono::Duration::minutes(1),
        )),
    )
    .await
    .unwrap();
    let stop_sim = CancellationToken::new();
    tokio::spawn(sim.clone().run(stop_sim.clone()));
    let addrs = sim.addresses();

    // Floor: one client, back-to-back reads of the whole map.
    let floor_reads_per_s = {
        let a = &addrs[0];
        let mut ctx = tokio_modbus::client::tcp::connect_slave(a.addr, tokio_modbus::Slave(1))
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut k = 0u64;
        while t0.elapsed() < Duration::from_secs(2) {
            use tokio_modbus::slave::SlaveContext;
            ctx.set_slave(tokio_modbus::Slave(1 + (k % 200) as u8));
            let _ = ctx.read_input_registers(0, 16).await.unwrap().unwrap();
            k += 1;
        }
        k as f64 / t0.elapsed().as_secs_f64()
    };

    let metrics_port = free_port();
    let mut text = format!(
        "gateway_id = \"bench-gw\"\nprofiles = [{:?}]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[poll]\ninterval_s = {ROUND_S}\nmax_concurrent = 64\n\n",
        common::sim_profile_path().display().to_string()
    );
    for a in &addrs {
        text.push_str(&format!(
            "[[meters]]\nmeter_id = \"{}\"\ntransport = {{ tcp = \"{}\" }}\nunit_id = {}\nprofile = \"waterworks-sim-v1\"\n\n",
            a.meter_id, a.addr, a.unit_id
        ));
    }
    text.push_str(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{}\"\nack = \"broker\"\n\n[spool]\ndir = {:?}\n",
        broker.port,
        dir.path().join("spool-poll").display().to_string()
    ));
    let cfg = dir.path().join("poll.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let rss_configured_kb = {
        // Before the first round: configured, profiles loaded, nothing polled yet.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proc_mem_kb(pid, "VmRSS:")
    };
    let cpu0 = proc_cpu_s(pid);
    let deadline = Instant::now() + Duration::from_secs(u64::from(ROUND_S) * (ROUNDS + 3) + 60);
    let body = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = scrape(metrics_addr).await;
        if metric_sum(&body, "gateway_round_seconds_count", "") >= ROUNDS as f64
            || Instant::now() > deadline
        {
            break body;
        }
    };
    let cpu = proc_cpu_s(pid) - cpu0;
    let rss_kb = proc_mem_kb(pid, "VmRSS:");
    let hwm_kb = proc_mem_kb(pid, "VmHWM:");
    let rounds = metric_sum(&body, "gateway_round_seconds_count", "");
    let round_s = metric_sum(&body, "gateway_round_seconds_sum", "");
    let polled_ok = metric_sum(&body, "gateway_polls_total{", "outcome=\"ok\"");
    let polled_bad = metric_sum(&body, "gateway_polls_total{", "") - polled_ok;
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    stop_sim.cancel();

    // ---- 2. replay
    let gw = GatewayId::parse("bench-replay").unwrap();
    let spool_dir = dir.path().join("spool-replay");
    let mut payloads = Vec::new();
    {
        let (mut spool, _) = gateway::spool::Spool::open(&spool_dir, 1 << 30).unwrap();
        let ts = chrono::Utc::now();
        for b in 0..REPLAY_BATCHES {
            let batch = ReadingBatch {
                gateway_id: gw.clone(),
                batch_seq: spool.next_seq(),
                readings: (0..REPLAY_READINGS)
                    .map(|i| Reading {
                        meter_id: MeterId::parse(format!("bench-{i:05}")).unwrap(),
                        ts,
                        volume_l: 1_000_000 + b * 10 + i as u64,
                        flow_lph: Some(12.5),
                        alarms: vec![],
                    })
                    .collect(),
            };
            let p = batch.encode();
            spool.append(batch.batch_seq, &p).unwrap();
            payloads.push(p);
        }
    }
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let (mut msgs, stop_watch) =
        common::watch_topic(broker.port, &waterworks_wire::topic::readings(&gw)).await;
    let cfg = dir.path().join("replay.toml");
    std::fs::write(
        &cfg,
        format!(
            "gateway_id = \"{gw}\"\n\n[uplink]\nurl = \"mqtt://127.0.0.1:{}\"\nack = \"broker\"\n\n[spool]\ndir = {:?}\nmax_bytes = 1073741824\n",
            broker.port,
            spool_dir.display().to_string()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = 0;
    while got < REPLAY_BATCHES {
        match tokio::time::timeout(Duration::from_secs(30), msgs.recv()).await {
            Ok(Some((_, _, _))) => got += 1,
            _ => break,
        }
    }
    let replay_s = t0.elapsed().as_secs_f64();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    stop_watch.cancel();

    // Floor: rumqttc publishing the same payloads, QoS 1, window 32, until the last PUBACK.
    let floor_replay_s = {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut o = MqttOptions::new("bench-floor", "127.0.0.1", broker.port);
        o.set_max_packet_size(4 << 20, 4 << 20);
        o.set_inflight(32);
        let (client, mut el) = AsyncClient::new(o, 64);
        let t0 = Instant::now();
        let topic = waterworks_wire::topic::readings(&GatewayId::parse("bench-floor").unwrap());
        tokio::spawn(async move {
            for p in payloads {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, p)
                    .await
                    .unwrap();
            }
        });
        let mut acks = 0;
        while acks < REPLAY_BATCHES {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = el.poll().await {
                acks += 1;
            }
        }
        t0.elapsed().as_secs_f64()
    };

    let readings = (REPLAY_BATCHES as usize * REPLAY_READINGS) as f64;
    let per_s_round = if round_s > 0.0 {
        polled_ok / round_s
    } else {
        0.0
    };
    println!(
        "gateway benchmark ({n} meters configured, {} cores)",
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!("polling: {rounds} rounds, {polled_ok} reads ok, {polled_bad} failed");
    println!(
        "  meters/s during rounds: {per_s_round:.0}   floor (1 client, back to back): {floor_reads_per_s:.0}/s   ratio {:.2}",
        per_s_round / floor_reads_per_s
    );
    println!(
        "  meters per CPU-second of the gateway process: {:.0} ({cpu:.2} s CPU)",
        polled_ok / cpu.max(0.001)
    );
    println!(
        "  resident memory: {} KiB configured, {} KiB after rounds, {} KiB peak",
        rss_configured_kb, rss_kb, hwm_kb
    );
    println!(
        "replay: {got}/{REPLAY_BATCHES} batches ({:.1} MB) in {replay_s:.2} s = {:.0} readings/s (incl. process start)",
        bytes as f64 / 1e6,
        readings / replay_s
    );
    println!(
        "  floor (rumqttc QoS 1 publish of the same payloads): {floor_replay_s:.2} s = {:.0} readings/s   ratio {:.2}",
        readings / floor_replay_s,
        floor_replay_s / replay_s
    );
}
