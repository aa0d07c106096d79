//! Issue 4's acceptance, end to end: the broker is stopped for hours of
//! simulated polling, then restarted; every reading the gateway polled is
//! stored in PostgreSQL, in order per meter, none twice.
//!
//! simulator (Modbus TCP) → gateway (spool) → a private Mosquitto → ingest
//! (its own fresh database) → PostgreSQL. The clock is manual: while the
//! broker is down for a few seconds of real time, the clock advances eight
//! hours slot by slot and the meters keep being polled into the spool.
//!
//! The private broker keeps its sessions across the restart (`persistence
//! true`, in the test's temp folder, like deploy/mosquitto/mosquitto.conf):
//! with `persistence false` a restart forgets ingest's subscription, and a
//! batch the gateway resends before ingest has subscribed again is
//! acknowledged by the broker and delivered to no one (MQTT 3.1.1 gives the
//! publisher no way to tell). Needs `mosquitto` on PATH and PostgreSQL at
//! DATABASE_URL.

mod common;

use chrono::{DateTime, Duration, DurationRound, Utc};
use common::{field, fresh_database, unique};
use edge_firmware::sim::{ConsumptionKind, Fault, SimMeter};
use gateway::config::UplinkConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration as StdDuration;
use tokio_util::sync::CancellationToken;
use waterworks_test_support::mosquitto::{log_to, Mosquitto};
use waterworks_wire::clock::{Clock, ManualClock};
use waterworks_wire::{GatewayId, MeterId};

const METERS: usize = 24;
const ROUNDS_BEFORE: usize = 4;
/// Eight simulated hours of 15-minute rounds with the broker down.
const ROUNDS_DOWN: usize = 32;
const ROUNDS_AFTER: usize = 4;

/// `mosquitto -c` on a free loopback port with a config of the test's own
/// (`waterworks_test_support::mosquitto`): sessions kept in `dir` across a
/// restart, no queue limit.
fn start_broker(dir: &Path) -> Mosquitto {
    let d = dir.display();
    Mosquitto::start_in(
        dir,
        &format!(
            "allow_anonymous true\npersistence true\npersistence_location {d}/\n\
             max_inflight_messages 0\nmax_queued_messages 0\n{}",
            log_to(dir)
        ),
    )
}

async fn wait_round(rx: &mut tokio::sync::watch::Receiver<gateway::Progress>, slot: DateTime<Utc>) {
    field::wait_progress(rx, 20, &format!("round {slot} spooled"), |p| {
        p.last_round == Some(slot)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_end_to_end_every_reading_once_in_order() {
    let prefix = unique("go");
    let db_url = fresh_database(&format!("ww_test_{prefix}")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = start_broker(dir.path());
    let broker_url = format!("mqtt://127.0.0.1:{}", broker.port);

    // Ingest, on its own database, subscribed to the private broker.
    let mut icfg = ingest::IngestConfig::new(
        &db_url,
        ingest::config::MqttConfig::new(&broker_url, format!("{prefix}-ingest")),
    );
    icfg.http_listen = ([127, 0, 0, 1], 0).into();
    let ingest = ingest::Ingest::build(icfg).await.expect("ingest starts");
    let pool = ingest.pool();
    let stop_ingest = CancellationToken::new();
    let ingest_task = tokio::spawn(ingest.run_until_stopped(stop_ingest.clone()));

    // The meters. The clock starts half a day ago (aligned), so the whole run
    // lies in ingest's window (not too old, not in the future).
    let q = Duration::minutes(15);
    let start = Utc::now().duration_trunc(q).expect("aligned") - Duration::hours(12);
    let manual = ManualClock::new(start);
    let clock = Clock::Manual(manual.clone());
    let gw = GatewayId::parse(format!("{prefix}-gw")).expect("gateway id");
    let meters: Vec<SimMeter> = (0..METERS)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("{prefix}-m{i:02}")).expect("meter id"),
            kind: if i % 6 == 5 {
                ConsumptionKind::Commercial
            } else {
                ConsumptionKind::Household { households: 1 }
            },
            initial_volume_l: 2_000_000 + i as u64 * 3_331,
            fault: Fault::None,
        })
        .collect();
    let (sim, stop_sim) = field::simulate(&meters, 12, 4, &clock).await;
    field::register(&pool, &gw, &meters).await;

    // The gateway.
    let config = field::gateway_config(
        &gw,
        &sim,
        UplinkConfig {
            url: broker_url.clone(),
            client_id: Some(format!("{prefix}-gw")),
            max_inflight: 8,
            ..UplinkConfig::default()
        },
        &dir.path().join("spool"),
    );
    let stop_gw = CancellationToken::new();
    let handle = gateway::start(config, clock.clone(), stop_gw.clone())
        .await
        .expect("gateway starts");
    let mut progress = handle.progress.clone();

    let mut slot = start;
    let mut slots = Vec::new();
    let drive = |slot: &mut DateTime<Utc>, slots: &mut Vec<DateTime<Utc>>| {
        slots.push(*slot);
        *slot += q;
        manual.set(*slot);
    };
    for _ in 0..ROUNDS_BEFORE {
        wait_round(&mut progress, slot).await;
        drive(&mut slot, &mut slots);
    }
    let before = progress
        .wait_for(|p| p.acked_seq as usize >= ROUNDS_BEFORE)
        .await
        .map(|p| p.clone());
    assert!(before.is_ok(), "rounds before the outage acknowledged");

    // The outage: eight simulated hours polled into the spool.
    broker.stop();
    let down = std::time::Instant::now();
    for _ in 0..ROUNDS_DOWN {
        wait_round(&mut progress, slot).await;
        drive(&mut slot, &mut slots);
    }
    let during = progress.borrow().clone();
    assert!(
        during.pending_batches as usize >= ROUNDS_DOWN - 1,
        "the outage's rounds wait in the spool: {during:?}"
    );
    // At least a few seconds of real time down, whatever the machine's speed.
    if let Some(rest) = StdDuration::from_secs(3).checked_sub(down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    broker.restart();

    // New rounds keep coming while the backlog drains.
    for _ in 0..ROUNDS_AFTER {
        wait_round(&mut progress, slot).await;
        drive(&mut slot, &mut slots);
    }
    // The clock rests on one more slot, which is polled too.
    wait_round(&mut progress, slot).await;
    slots.push(slot);
    let total_rounds = ROUNDS_BEFORE + ROUNDS_DOWN + ROUNDS_AFTER + 1;
    field::wait_progress(&mut progress, 30, "spool drained", |p| {
        p.spooled_seq as usize == total_rounds && p.acked_seq == p.spooled_seq
    })
    .await;

    // What the gateway polled: the simulator's registers at each slot,
    // decoded by the profile (the gateway's own sim test checks that equality
    // reading by reading).
    let polled = field::polled(&sim, &meters, &slots);
    assert_eq!(polled.len(), METERS * total_rounds);

    // Ingest stores what arrived; wait until the count stops short of nothing.
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM metering.readings_v1 WHERE meter_id LIKE $1 || '%'",
        )
        .bind(&prefix)
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    let deadline = std::time::Instant::now() + StdDuration::from_secs(30);
    while (count().await as usize) < polled.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    // A moment more, so that a duplicate arriving late would be seen.
    tokio::time::sleep(StdDuration::from_millis(500)).await;

    let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT meter_id, ts, volume_l FROM metering.readings_v1 \
          WHERE meter_id LIKE $1 || '%' ORDER BY meter_id, ts",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .expect("read back");
    let quarantined: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM metering.quarantine WHERE gateway_id = $1 OR meter_id LIKE $2 || '%'",
    )
    .bind(gw.as_str())
    .bind(&prefix)
    .fetch_one(&pool)
    .await
    .expect("quarantine");
    assert_eq!(quarantined, 0, "nothing quarantined");
    assert_eq!(
        rows.len(),
        polled.len(),
        "stored count equals polled count (none lost, none twice)"
    );
    let stored: BTreeMap<(String, DateTime<Utc>), i64> = rows
        .iter()
        .map(|(m, ts, v)| ((m.clone(), *ts), *v))
        .collect();
    assert_eq!(stored.len(), rows.len(), "no (meter, ts) stored twice");
    assert_eq!(stored, polled, "every polled reading stored with its value");
    // Per meter, in order of ts: every slot, one apart, volumes never falling.
    for m in &meters {
        let series: Vec<&(String, DateTime<Utc>, i64)> =
            rows.iter().filter(|r| r.0 == m.meter_id.as_str()).collect();
        assert_eq!(series.len(), total_rounds, "{}", m.meter_id);
        for (k, w) in series.windows(2).enumerate() {
            assert_eq!(w[1].1 - w[0].1, q, "{} slot {k}", m.meter_id);
            assert!(w[1].2 >= w[0].2, "{} volume falls at slot {k}", m.meter_id);
        }
    }

    stop_gw.cancel();
    handle.wait().await.expect("gateway stops cleanly");
    stop_sim.cancel();
    stop_ingest.cancel();
    let _ = ingest_task.await;
    pool.close().await;
}
