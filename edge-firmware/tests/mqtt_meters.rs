//! MQTT-native meters publish their readings to the shared broker
//! (MQTT_URL, default mqtt://127.0.0.1:1883), each test under its own topic prefix.
#![cfg(feature = "std")]

use chrono::{Duration, TimeZone, Utc};
use edge_firmware::registers;
use edge_firmware::sim::mqtt::{reading_topic, run_mqtt, MqttSimConfig};
use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{MeterId, Reading};

fn broker() -> (String, u16) {
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .expect("MQTT_URL is mqtt://host:port");
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("MQTT_URL port")),
        None => (rest.to_string(), 1883),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_native_meters_publish_deterministic_readings() {
    let (host, port) = broker();
    let tag = format!(
        "ef-test-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let prefix = format!("{tag}/meters");
    let meters = vec![
        SimMeter {
            meter_id: MeterId::parse("mq-1").unwrap(),
            kind: ConsumptionKind::Household { households: 1 },
            initial_volume_l: 10,
            fault: Fault::Leak,
        },
        SimMeter {
            meter_id: MeterId::parse("mq-2").unwrap(),
            kind: ConsumptionKind::Commercial,
            initial_volume_l: 20,
            fault: Fault::Slow { delay_ms: 20 },
        },
        SimMeter {
            meter_id: MeterId::parse("mq-3").unwrap(),
            kind: ConsumptionKind::Bathhouse,
            initial_volume_l: 30,
            fault: Fault::Dead,
        },
    ];

    // Subscribe first, and wait for the broker's SUBACK.
    let (sub, mut events) =
        AsyncClient::new(MqttOptions::new(format!("{tag}-sub"), &host, port), 64);
    sub.subscribe(format!("{prefix}/+/reading"), QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the test needs Mosquitto at {host}:{port} (MQTT_URL): {e}"),
            Err(_) => panic!("no SUBACK from {host}:{port}"),
        }
    }

    let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
    let clock = ManualClock::new(start);
    let stop = CancellationToken::new();
    let run = tokio::spawn(run_mqtt(
        MqttSimConfig {
            broker_host: host.clone(),
            broker_port: port,
            client_id: format!("{tag}-pub"),
            topic_prefix: prefix.clone(),
            interval_s: 900,
            seed: 5,
            meters: meters.clone(),
        },
        Clock::Manual(clock.clone()),
        stop.clone(),
    ));

    let mut got: BTreeMap<(String, chrono::DateTime<Utc>), Reading> = BTreeMap::new();
    let mut advanced = false;
    while got.len() < 4 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.poll())
            .await
            .expect("readings arrive")
            .unwrap();
        if let Event::Incoming(Packet::Publish(p)) = ev {
            let r: Reading = serde_json::from_slice(&p.payload).expect("a contract v1 reading");
            assert_eq!(p.topic, reading_topic(&prefix, &r.meter_id));
            got.insert((r.meter_id.to_string(), r.ts), r);
            if got.len() == 2 && !advanced {
                advanced = true;
                clock.set(start + Duration::minutes(15));
            }
        }
    }
    stop.cancel();
    run.await.unwrap().unwrap();

    // The same meters served over Modbus show the same values at the same slots.
    let sim = Simulator::bind(
        SimConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            meters_per_port: 247,
            seed: 5,
            meters,
        },
        Clock::System,
    )
    .await
    .unwrap();
    let slots = [start, start + Duration::minutes(15)];
    let keys: Vec<_> = got.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            ("mq-1".to_string(), slots[0]),
            ("mq-1".to_string(), slots[1]),
            ("mq-2".to_string(), slots[0]),
            ("mq-2".to_string(), slots[1]),
        ],
        "the dead meter publishes nothing"
    );
    for ((id, ts), r) in &got {
        let img = sim
            .registers_at(&MeterId::parse(id.as_str()).unwrap(), *ts)
            .unwrap();
        assert_eq!(r.volume_l, registers::get_u64(&img, registers::REG_VOLUME));
        assert_eq!(
            r.flow_lph,
            Some(f64::from(registers::get_i32(&img, registers::REG_FLOW)) / 10.0)
        );
    }
    assert_eq!(
        got[&("mq-1".to_string(), slots[0])].alarms,
        [waterworks_wire::Alarm::Leak]
    );
}
