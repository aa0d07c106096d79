//! Broker outage: a private Mosquitto is stopped while the meters keep being
//! polled, then restarted; every batch arrives, in order, and the spool drains.

mod common;

use chrono::Duration as ChronoDuration;
use common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, ReadingBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = PrivateBroker::start(dir.path()).await;
    let start = t("2026-10-01T00:00:00Z");
    let manual = ManualClock::new(start);
    let clock = Clock::Manual(manual.clone());
    let stop_device = CancellationToken::new();
    let units: HashMap<u8, Unit> = (1..=20)
        .map(|u| {
            (
                u,
                Unit::Good {
                    base_l: u as u64 * 10_000,
                },
            )
        })
        .collect();
    let dev = fake_device(units, clock.clone(), stop_device.clone()).await;
    let gw = unique("gw-outage");
    let meters: Vec<_> = (1..=20u8)
        .map(|u| (format!("{gw}-m{u:02}"), dev, u))
        .collect();
    std::fs::write(
        dir.path().join("gw.toml"),
        config_text(&gw, &meters, broker.port, &dir.path().join("spool")),
    )
    .unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();
    let gid = GatewayId::parse(gw.clone()).unwrap();
    let (mut msgs, stop_watch) = watch_topic_persistent(broker.port, &topic::readings(&gid)).await;

    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    let q = ChronoDuration::minutes(15);
    let mut slot = start;
    let step = |progress: &mut tokio::sync::watch::Receiver<gateway::Progress>,
                slot: &mut chrono::DateTime<chrono::Utc>| {
        let s = *slot;
        *slot += q;
        manual.set(*slot);
        let _ = progress;
        s
    };
    // Three rounds with the broker up.
    for _ in 0..3 {
        wait_progress(&mut progress, "round", |p| p.last_round == Some(slot)).await;
        step(&mut progress, &mut slot);
    }
    wait_progress(&mut progress, "acked before outage", |p| p.acked_seq == 3).await;

    // Outage: a day of rounds (96) is polled and spooled while the broker is down.
    broker.stop();
    for _ in 0..96 {
        wait_progress(&mut progress, "round during outage", |p| {
            p.last_round == Some(slot)
        })
        .await;
        step(&mut progress, &mut slot);
    }
    wait_progress(&mut progress, "spooled", |p| p.spooled_seq == 99).await;
    assert!(
        progress.borrow().pending_batches >= 90,
        "{:?}",
        *progress.borrow()
    );
    broker.restart().await;

    // The backlog drains while new rounds keep coming.
    for _ in 0..3 {
        wait_progress(&mut progress, "round after outage", |p| {
            p.last_round == Some(slot)
        })
        .await;
        step(&mut progress, &mut slot);
    }
    wait_progress(&mut progress, "drained", |p| {
        p.acked_seq >= 102 && p.acked_seq == p.spooled_seq && p.pending_batches == 0
    })
    .await;
    shutdown.cancel();
    handle.wait().await.unwrap();

    let mut first_seen: Vec<u64> = vec![];
    let mut per_meter: HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> = HashMap::new();
    let mut dupes = 0;
    while let Ok(Some(payload)) = tokio::time::timeout(Duration::from_secs(2), msgs.recv()).await {
        let b = ReadingBatch::decode(&payload).unwrap();
        if first_seen.contains(&b.batch_seq) {
            dupes += 1;
            continue;
        }
        first_seen.push(b.batch_seq);
        for r in b.readings {
            per_meter
                .entry(r.meter_id.to_string())
                .or_default()
                .push(r.ts);
        }
        if first_seen.len() == 102 {
            break;
        }
    }
    if first_seen.len() != 102 {
        let _ = std::fs::copy(
            dir.path().join("mosquitto.log"),
            "/tmp/gw-outage-mosquitto.log",
        );
    }
    assert_eq!(
        first_seen,
        (1..=102).collect::<Vec<u64>>(),
        "every batch, in order"
    );
    assert_eq!(per_meter.len(), 20);
    for (m, ts) in &per_meter {
        assert_eq!(ts.len(), 102, "{m}");
        assert!(
            ts.windows(2).all(|w| w[1] - w[0] == q),
            "{m}: in order, no gap"
        );
    }
    eprintln!("duplicates seen by the watcher (at-least-once): {dupes}");
    stop_watch.cancel();
    stop_device.cancel();
}
