//! The gateway against edge-firmware's simulator over real loopback TCP and
//! the real Mosquitto: every healthy meter is read each round with exactly the
//! values the simulator serves at that slot; a dead meter, one answering
//! exceptions, a slow one and one read with a wrong word order are each
//! reported and none stops the others.

mod common;

use chrono::Duration as ChronoDuration;
use common::*;
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::profile::DeviceProfile;
use waterworks_wire::{topic, GatewayId, MeterId, ReadingBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_the_simulated_fleet_by_profile() {
    let start = t("2026-10-01T00:00:00Z");
    let manual = ManualClock::new(start);
    let clock = Clock::Manual(manual.clone());
    let gw = unique("gw-sim");
    let n = 60;
    let fault = |i: usize| match i {
        7 => Fault::Dead,
        8 => Fault::Exceptions,
        9 => Fault::Slow { delay_ms: 50 },
        13 => Fault::Leak,
        _ => Fault::None,
    };
    let meters: Vec<SimMeter> = (0..n)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("{gw}-{i:03}")).unwrap(),
            kind: if i % 10 == 5 {
                ConsumptionKind::Commercial
            } else {
                ConsumptionKind::Household {
                    households: 1 + (i % 3) as u32,
                }
            },
            initial_volume_l: 1_000_000 + i as u64 * 1_000,
            fault: fault(i),
        })
        .collect();
    let sim = Simulator::bind(
        SimConfig {
            host: "127.0.0.1".parse().unwrap(),
            meters_per_port: 20,
            seed: 7,
            meters,
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let stop_sim = CancellationToken::new();
    tokio::spawn(sim.clone().run(stop_sim.clone()));

    // Meter 11 is read with a profile whose volume has the wrong word order.
    let dir = tempfile::tempdir().unwrap();
    let broker = PrivateBroker::start(dir.path()).await;
    let sim_profile = std::fs::read_to_string(sim_profile_path()).unwrap();
    let wrong = sim_profile
        .replace("id = \"waterworks-sim-v1\"", "id = \"sim-wrong-order\"")
        .replacen("word_order = \"ABCD\"", "word_order = \"CDAB\"", 1);
    std::fs::write(dir.path().join("wrong.toml"), &wrong).unwrap();
    let addrs = sim.addresses();
    let list: Vec<_> = addrs
        .iter()
        .map(|a| (a.meter_id.to_string(), a.addr, a.unit_id))
        .collect();
    let mut text = config_text(&gw, &list, broker.port, &dir.path().join("spool"));
    text = text.replacen("profiles = [", "profiles = [\"wrong.toml\", ", 1);
    let m11 = format!("meter_id = \"{gw}-011\"");
    let at = text.find(&m11).unwrap();
    let pat = "profile = \"waterworks-sim-v1\"";
    let rel = text[at..].find(pat).unwrap();
    text.replace_range(
        at + rel..at + rel + pat.len(),
        "profile = \"sim-wrong-order\"",
    );
    std::fs::write(dir.path().join("gw.toml"), &text).unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();
    let profile = DeviceProfile::load(&sim_profile_path()).unwrap();
    let plan = profile.read_plan();

    let gid = GatewayId::parse(gw.clone()).unwrap();
    let (mut msgs, stop_watch) = watch_topic(broker.port, &topic::readings(&gid)).await;
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    let rounds = 6;
    let q = ChronoDuration::minutes(15);
    let mut slot = start;
    for _ in 0..rounds {
        wait_progress(&mut progress, "round", |p| p.last_round == Some(slot)).await;
        slot += q;
        manual.set(slot);
    }
    wait_progress(&mut progress, "all acked", |p| {
        p.pending_batches == 0 && p.acked_seq == rounds
    })
    .await;
    shutdown.cancel();
    handle.wait().await.unwrap();

    let mut batches = vec![];
    while batches.len() < rounds as usize {
        let (_, payload, _) = tokio::time::timeout(Duration::from_secs(5), msgs.recv())
            .await
            .unwrap()
            .unwrap();
        batches.push(ReadingBatch::decode(&payload).unwrap());
    }
    let excluded: Vec<String> = [7, 8, 11].iter().map(|i| format!("{gw}-{i:03}")).collect();
    for (k, b) in batches.iter().enumerate() {
        assert_eq!(b.batch_seq, k as u64 + 1);
        let at = start + q * k as i32;
        assert_eq!(
            b.readings.len(),
            n - 3,
            "all but dead, exceptions and wrong order"
        );
        let mut by_id = HashMap::new();
        for r in &b.readings {
            assert!(
                !excluded.contains(&r.meter_id.to_string()),
                "{}",
                r.meter_id
            );
            assert_eq!(r.ts, at);
            by_id.insert(r.meter_id.clone(), r);
        }
        for a in &addrs {
            if excluded.contains(&a.meter_id.to_string()) {
                continue;
            }
            let regs = sim.registers_at(&a.meter_id, at).unwrap();
            let answers: Vec<Vec<u16>> = plan
                .requests
                .iter()
                .map(|r| regs[r.address as usize..(r.address + r.count) as usize].to_vec())
                .collect();
            let want = profile.decode(&plan, &answers).unwrap();
            let got = by_id[&a.meter_id];
            assert_eq!(got.volume_l, want.volume_l, "{} at {at}", a.meter_id);
            assert_eq!(got.flow_lph, want.flow_lph);
            assert_eq!(got.alarms, want.alarms);
        }
    }
    stop_watch.cancel();
    stop_sim.cancel();
}
