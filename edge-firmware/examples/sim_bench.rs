//! meter-sim benchmark: `cargo run --release -p edge-firmware --example sim_bench [meters]`.
//!
//! Reports, on this machine:
//! - the firmware core's step rate (simulated meter-minutes per second) and the
//!   cost of the demo's driver pattern (100 meters × 2,977 quarter-hour jumps);
//! - register reads per second the simulator answers over Modbus TCP on
//!   loopback (function 04, all 16 registers, several client connections);
//! - memory per simulated meter (resident set growth after binding the fleet,
//!   and the size of the per-meter state).
//!
//! A benchmark is a program, not a timed test: it prints ratios against the
//! floors the brief sets, measured in the same run.

use chrono::{Duration, TimeZone, Utc};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use tokio_modbus::client::Reader;
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::MeterId;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn fleet(n: usize) -> Vec<SimMeter> {
    (0..n)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("bench-{i:05}")).unwrap(),
            kind: match i % 10 {
                0 => ConsumptionKind::Commercial,
                1 => ConsumptionKind::Household { households: 12 },
                _ => ConsumptionKind::Household { households: 1 },
            },
            initial_volume_l: (i as u64) * 1_000,
            fault: Fault::None,
        })
        .collect()
}

async fn bind(meters: Vec<SimMeter>, clock: Clock) -> Simulator {
    Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 1,
            meters,
        },
        clock,
    )
    .await
    .expect("bind the simulator")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let month = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();

    // 1. The demo's driver pattern: 100 meters, 2,977 jumps of 15 minutes,
    //    starting nine months after the epoch (the first read catches up).
    let sim = bind(fleet(100), Clock::System).await;
    let ids: Vec<MeterId> = sim.addresses().into_iter().map(|a| a.meter_id).collect();
    let t0 = Instant::now();
    for id in &ids {
        sim.registers_at(id, month).unwrap();
    }
    let catch_up = t0.elapsed();
    let t0 = Instant::now();
    for jump in 1..2977 {
        let t = month + Duration::minutes(15 * jump);
        for id in &ids {
            sim.registers_at(id, t).unwrap();
        }
    }
    let month_reads = t0.elapsed();
    let minutes = 100.0 * (month - edge_firmware::sim::sim_epoch()).num_minutes() as f64;
    println!(
        "driver pattern, 100 meters: catch-up from the epoch {:.2} s ({:.1} M meter-minutes/s); \
         2,976 quarter-hour jumps {:.2} s (floor: well under 60 s, ratio {:.0}x)",
        catch_up.as_secs_f64(),
        minutes / catch_up.as_secs_f64() / 1e6,
        month_reads.as_secs_f64(),
        60.0 / (catch_up + month_reads).as_secs_f64()
    );
    drop(sim);

    // 2. Memory per meter.
    let before = rss_bytes();
    let manual = ManualClock::new(month);
    let sim = bind(fleet(n), Clock::Manual(manual.clone())).await;
    let after = rss_bytes();
    println!(
        "memory: {n} meters bound, resident set +{:.1} MiB = {} B per meter",
        (after.saturating_sub(before)) as f64 / 1_048_576.0,
        after.saturating_sub(before) / n as u64
    );

    // 3. Register reads over TCP. Every meter first catches up to the month
    //    (as in the demo); then clients read at the current clock time.
    let t0 = Instant::now();
    sim.warm_up(month);
    println!(
        "catch-up of {n} meters to 2026-10-01 (warm_up, all cores): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let stop = CancellationToken::new();
    let addrs = sim.addresses();
    tokio::spawn(sim.clone().run(stop.clone()));
    let clients = 8usize;
    let per_client = 20_000usize;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        // Each connection reads the meters of one port in turn.
        let port = addrs[(c * 997) % addrs.len()].addr;
        let units: Vec<u8> = addrs
            .iter()
            .filter(|a| a.addr == port)
            .map(|a| a.unit_id)
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut ctx = tokio_modbus::client::tcp::connect_slave(port, Slave(units[0]))
                .await
                .expect("connect");
            for i in 0..per_client {
                ctx.set_slave(Slave(units[(i * 13) % units.len()]));
                ctx.read_input_registers(0, 16)
                    .await
                    .expect("transport")
                    .expect("no exception");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reads = clients * per_client;
    let dt = t0.elapsed();
    println!(
        "Modbus TCP: {reads} reads of 16 registers by {clients} connections in {:.2} s = {:.0} reads/s",
        dt.as_secs_f64(),
        reads as f64 / dt.as_secs_f64()
    );
    // Quarter-hour jumps while serving: one fleet-wide advance.
    manual.set(month + Duration::minutes(15));
    let t0 = Instant::now();
    for a in &addrs {
        sim.registers_at(&a.meter_id, manual.now()).unwrap();
    }
    println!(
        "one quarter-hour jump for all {n} meters: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "firmware core state (Meter): {} B per meter",
        std::mem::size_of::<edge_firmware::Meter>()
    );
    stop.cancel();
}
