//! MQTT-native meters: edge-firmware's MQTT meter simulator publishes to a
//! private Mosquitto; the gateway subscribes, maps each message, spools and
//! forwards it. Every reading the simulator published for a configured meter
//! arrives upstream exactly as published, including those published while the
//! gateway was stopped (persistent session); bad messages and unknown meters
//! are refused without stopping anything.

mod common;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use common::*;
use edge_firmware::sim::mqtt::{reading_topic, run_mqtt, MqttSimConfig};
use edge_firmware::sim::{ConsumptionKind, Fault, SimMeter};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{topic, GatewayId, MeterId, Reading, ReadingBatch};

type Key = (String, DateTime<Utc>);

/// Receives until `want` distinct (meter, ts) keys are in `into`, or panics after 15 s.
async fn collect_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    into: &mut BTreeMap<Key, Reading>,
    want: usize,
    parse: impl Fn(&[u8]) -> Vec<Reading>,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while into.len() < want {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, payload, _))) => {
                for r in parse(&payload) {
                    into.insert((r.meter_id.to_string(), r.ts), r);
                }
            }
            _ => panic!("{what}: {} of {want} readings", into.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_native_meters_through_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let broker = PrivateBroker::start(dir.path()).await;
    let start = t("2026-10-01T00:00:00Z");
    let manual = ManualClock::new(start);
    let clock = Clock::Manual(manual.clone());
    let gw = unique("gw-mq");
    let prefix = format!("{gw}/meters");
    let id = |i: usize| MeterId::parse(format!("{gw}-r{i:02}")).unwrap();
    // 12 radios: 10 configured on the gateway (one of them dead), 2 not.
    let sim_meters: Vec<SimMeter> = (0..12)
        .map(|i| SimMeter {
            meter_id: id(i),
            kind: ConsumptionKind::Household { households: 1 },
            initial_volume_l: 500_000 + i as u64 * 777,
            fault: if i == 3 { Fault::Dead } else { Fault::None },
        })
        .collect();
    let configured = 10;

    let mut text = format!("gateway_id = \"{gw}\"\n\n[poll]\ninterval_s = 900\n\n");
    for i in 0..configured {
        text.push_str(&format!(
            "[[meters]]\nmeter_id = \"{}\"\ntransport = {{ mqtt = {{ broker = \"mqtt://127.0.0.1:{}\", topic = \"{prefix}/+/reading\" }} }}\n\n",
            id(i),
            broker.port
        ));
    }
    text.push_str(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{}\"\nack = \"broker\"\nmax_inflight = 8\n\n[spool]\ndir = \"spool\"\nmax_bytes = 16777216\n",
        broker.port
    ));
    std::fs::write(dir.path().join("gw.toml"), &text).unwrap();
    let config = gateway::load_config(&dir.path().join("gw.toml")).unwrap();
    let summary = gateway::check_config(&dir.path().join("gw.toml")).unwrap();
    assert!(summary.contains("1 MQTT subscription"), "{summary}");

    let gid = GatewayId::parse(gw.clone()).unwrap();
    let (mut upstream, stop_up) = watch_topic(broker.port, &topic::readings(&gid)).await;
    let (mut published, stop_pub) = watch_topic(broker.port, &format!("{prefix}/+/reading")).await;

    let shutdown = CancellationToken::new();
    let handle = gateway::start(config.clone(), clock.clone(), shutdown.clone())
        .await
        .unwrap();
    // A bad message, then a probe reading (a day before the run) published
    // until it comes out upstream: then the gateway's subscription is in place.
    let poke = {
        use rumqttc::{AsyncClient, MqttOptions, QoS};
        let (c, mut el) =
            AsyncClient::new(MqttOptions::new(unique("poke"), MQTT_HOST, broker.port), 8);
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        let probe = format!(
            r#"{{"meter_id":"{}","ts":"2026-09-30T00:00:00Z","volume_l":1}}"#,
            id(0)
        );
        let mut seen = false;
        for _ in 0..50 {
            c.publish(
                reading_topic(&prefix, &id(0)),
                QoS::AtLeastOnce,
                false,
                "{not json",
            )
            .await
            .unwrap();
            c.publish(
                reading_topic(&prefix, &id(0)),
                QoS::AtLeastOnce,
                false,
                probe.clone(),
            )
            .await
            .unwrap();
            if let Ok(Some((_, payload, _))) =
                tokio::time::timeout(Duration::from_millis(200), upstream.recv()).await
            {
                let b = ReadingBatch::decode(&payload).unwrap();
                assert!(b.readings.iter().all(|r| r.ts == t("2026-09-30T00:00:00Z")));
                seen = true;
                break;
            }
        }
        assert!(seen, "the probe reading never came out upstream");
        // Later copies of the probe are dropped as duplicates; drain what came.
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(300), upstream.recv()).await
        {}
        c
    };

    let stop_sim = CancellationToken::new();
    let sim = tokio::spawn(run_mqtt(
        MqttSimConfig {
            broker_host: "127.0.0.1".into(),
            broker_port: broker.port,
            client_id: unique("mqsim"),
            topic_prefix: prefix.clone(),
            interval_s: 900,
            seed: 11,
            meters: sim_meters,
        },
        clock.clone(),
        stop_sim.clone(),
    ));

    // The probe (dated before the run) is left out of the comparison.
    let parse_batch = |p: &[u8]| {
        ReadingBatch::decode(p)
            .unwrap()
            .readings
            .into_iter()
            .filter(|r| r.ts >= start)
            .collect()
    };
    let parse_reading = |p: &[u8]| {
        serde_json::from_slice::<Reading>(p)
            .into_iter()
            .filter(|r| r.ts >= start)
            .collect()
    };
    let mut got: BTreeMap<Key, Reading> = BTreeMap::new();
    let mut sent: BTreeMap<Key, Reading> = BTreeMap::new();
    let healthy = configured - 1; // meter 3 is dead
    let q = ChronoDuration::minutes(15);
    let mut slot = start;
    let mut rounds = 0;
    for _ in 0..3 {
        rounds += 1;
        collect_until(
            &mut published,
            &mut sent,
            rounds * 11,
            parse_reading,
            "published",
        )
        .await;
        collect_until(
            &mut upstream,
            &mut got,
            rounds * healthy,
            parse_batch,
            "forwarded",
        )
        .await;
        slot += q;
        manual.set(slot);
    }

    // The gateway stops; two rounds are published while it is away.
    shutdown.cancel();
    handle.wait().await.unwrap();
    for _ in 0..2 {
        rounds += 1;
        collect_until(
            &mut published,
            &mut sent,
            rounds * 11,
            parse_reading,
            "published",
        )
        .await;
        slot += q;
        manual.set(slot);
    }
    let shutdown = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), shutdown.clone())
        .await
        .unwrap();
    rounds += 1;
    collect_until(
        &mut published,
        &mut sent,
        rounds * 11,
        parse_reading,
        "published",
    )
    .await;
    collect_until(
        &mut upstream,
        &mut got,
        rounds * healthy,
        parse_batch,
        "forwarded after restart",
    )
    .await;
    let mut progress = handle.progress.clone();
    wait_progress(&mut progress, "drained", |p| {
        p.pending_batches == 0 && p.acked_seq == p.spooled_seq
    })
    .await;

    let want: BTreeMap<Key, Reading> = sent
        .into_iter()
        .filter(|((m, _), _)| (0..configured).any(|i| id(i).as_str() == m))
        .collect();
    assert_eq!(want.len(), rounds * healthy);
    assert_eq!(
        got, want,
        "every reading of a configured meter, as published"
    );

    shutdown.cancel();
    handle.wait().await.unwrap();
    drop(poke);
    stop_sim.cancel();
    let _ = sim.await;
    stop_up.cancel();
    stop_pub.cancel();
}
