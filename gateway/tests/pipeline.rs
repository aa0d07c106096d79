//! The gateway end to end against a fake Modbus device and the real Mosquitto
//! at 127.0.0.1:1883, on a manual clock.

mod common;

use chrono::Duration as ChronoDuration;
use common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, ReadingBatch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_on_the_manual_clock_reach_the_broker_in_order_and_seq_survives_restart() {
    let start = t("2026-10-01T00:00:00Z");
    let manual = ManualClock::new(start);
    let clock = Clock::Manual(manual.clone());
    let stop_device = CancellationToken::new();
    let units = HashMap::from([
        (1, Unit::Good { base_l: 1_000 }),
        (2, Unit::Good { base_l: 2_000 }),
        (3, Unit::Good { base_l: 3_000 }),
        (4, Unit::Exceptions),
        (5, Unit::Dead),
    ]);
    let dev = fake_device(units, clock.clone(), stop_device.clone()).await;
    let gw = unique("gw-pipe");
    let meters: Vec<_> = (1..=5u8).map(|u| (format!("{gw}-m{u}"), dev, u)).collect();
    let spool = tempfile::tempdir().unwrap();
    let cfg_path = spool.path().join("gw.toml");
    std::fs::write(
        &cfg_path,
        config_text(&gw, &meters, MQTT_PORT, &spool.path().join("spool")),
    )
    .unwrap();
    let config = gateway::load_config(&cfg_path).unwrap();
    let gid = GatewayId::parse(gw.clone()).unwrap();
    let (mut msgs, stop_watch) = watch_topic(MQTT_PORT, &format!("waterworks/v1/{gw}/#")).await;

    let shutdown = CancellationToken::new();
    let handle = gateway::start(config.clone(), clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    let q = ChronoDuration::minutes(15);
    let mut slot = start;
    for _ in 0..5 {
        let started = std::time::Instant::now();
        wait_progress(&mut progress, "round", |p| p.last_round == Some(slot)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a dead meter must not hold the round long"
        );
        slot += q;
        manual.set(slot);
    }
    wait_progress(&mut progress, "all acked", |p| {
        p.acked_seq == 5 && p.pending_batches == 0
    })
    .await;
    shutdown.cancel();
    handle.wait().await.unwrap();

    // What the broker saw: online status, batches 1..=5 in order, 3 readings each at the slot time.
    let mut batches = vec![];
    let mut statuses = vec![];
    while let Ok(Some((topic_name, payload, _))) =
        tokio::time::timeout(Duration::from_millis(500), msgs.recv()).await
    {
        if topic_name == topic::readings(&gid) {
            batches.push(ReadingBatch::decode(&payload).unwrap());
        } else {
            statuses.push(String::from_utf8(payload).unwrap());
        }
    }
    assert_eq!(statuses.first().map(String::as_str), Some("online"));
    assert_eq!(statuses.last().map(String::as_str), Some("offline"));
    let seqs: Vec<u64> = batches.iter().map(|b| b.batch_seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    for (i, b) in batches.iter().enumerate() {
        let at = start + q * i as i32;
        assert_eq!(b.readings.len(), 3, "good meters only");
        for (r, base) in b.readings.iter().zip([1_000, 2_000, 3_000]) {
            assert_eq!(r.ts, at);
            assert_eq!(r.volume_l, expected_volume(base, at));
            assert_eq!(r.flow_lph, Some(12.5));
        }
    }

    // Restart on the same spool: batch_seq continues.
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .unwrap();
    let mut progress = handle.progress.clone();
    assert_eq!(progress.borrow().spooled_seq, 5);
    wait_progress(&mut progress, "round after restart", |p| {
        p.last_round == Some(slot)
    })
    .await;
    wait_progress(&mut progress, "acked after restart", |p| p.acked_seq == 6).await;
    shutdown.cancel();
    handle.wait().await.unwrap();
    let mut seqs = vec![];
    while let Ok(Some((topic_name, payload, _))) =
        tokio::time::timeout(Duration::from_millis(500), msgs.recv()).await
    {
        if topic_name == topic::readings(&gid) {
            seqs.push(ReadingBatch::decode(&payload).unwrap().batch_seq);
        }
    }
    assert_eq!(seqs, vec![6]);
    stop_watch.cancel();
    stop_device.cancel();
}
