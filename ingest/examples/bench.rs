//! End-to-end ingest benchmark against the floor measured in the same run.
//!
//! `cargo run --release -p ingest --example bench [-- METERS ROUNDS GATEWAYS]`
//! (default 100 meters × 2977 rounds on 4 gateways, like the demo's month).
//! Publishes every round through the real Mosquitto (`MQTT_URL`) from
//! concurrent simulated gateways into a fresh database, waits until every
//! reading is committed, then `COPY`s the same rows (binary, 20 000 a batch)
//! into the same table of another fresh database. Prints readings/s of both
//! and the ratio. Publishers keep at most `WINDOW_MSGS` messages ahead of the
//! committed count, because Mosquitto drops QoS 1 messages beyond a session's
//! `max_queued_messages` (1000 by default).

use chrono::{Duration, DurationRound, Utc};
use ingest::registry::{register_meters, MeterRegistration};
use ingest::vee::Row;
use ingest::{Ingest, IngestConfig, MqttConfig};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use sqlx::PgPool;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use waterworks_wire::reading::{Reading, ReadingBatch};
use waterworks_wire::{GatewayId, MeterId};

const WINDOW_MSGS: i64 = 400;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let meters = *args.first().unwrap_or(&100);
    let rounds = *args.get(1).unwrap_or(&2977);
    let gateways = (*args.get(2).unwrap_or(&4)).clamp(1, meters);
    let total = (meters * rounds) as i64;
    let db_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mqtt_url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let run = format!(
        "b{}x{}",
        std::process::id(),
        Utc::now().timestamp() % 100_000
    );

    let db_e2e = fresh_db(&db_url, &format!("ingest_bench_{run}_e2e")).await;
    let db_copy = fresh_db(&db_url, &format!("ingest_bench_{run}_copy")).await;

    let mut mqtt = MqttConfig::new(&mqtt_url, format!("ingest-bench-{run}"));
    mqtt.subscription = format!("$share/bench{run}/waterworks/v1/+/readings");
    let mut cfg = IngestConfig::new(&db_e2e, mqtt);
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    let ingest = Ingest::build(cfg).await.expect("build ingest");
    let pool = ingest.pool();
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingest.run_until_stopped(stop.clone()));

    let gw_ids: Vec<String> = (0..gateways).map(|g| format!("bench{run}-gw{g}")).collect();
    let meter_gw = |m: usize| m % gateways;
    let regs: Vec<MeterRegistration> = (0..meters)
        .map(|m| MeterRegistration {
            meter_id: MeterId::parse(format!("bench{run}-m{m:05}")).unwrap(),
            gateway_id: GatewayId::parse(gw_ids[meter_gw(m)].clone()).unwrap(),
            profile_id: "waterworks-sim-v1".into(),
            max_flow_lph: Some(5_000.0),
        })
        .collect();
    register_meters(&pool, &regs).await.unwrap();
    // Readings end an hour ago, so none is in the future.
    let end = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(15))
        .unwrap();
    let start = end - Duration::minutes(15 * rounds as i64);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await; // subscribe

    let batches = |g: usize| -> Vec<ReadingBatch> {
        let mine: Vec<usize> = (0..meters).filter(|m| meter_gw(*m) == g).collect();
        (0..rounds)
            .map(|r| ReadingBatch {
                gateway_id: GatewayId::parse(gw_ids[g].clone()).unwrap(),
                batch_seq: r as u64 + 1,
                readings: mine
                    .iter()
                    .map(|&m| Reading {
                        meter_id: regs[m].meter_id.clone(),
                        ts: start + Duration::minutes(15 * r as i64),
                        volume_l: (m as u64) * 1_000_000 + (r as u64) * 25,
                        flow_lph: Some(100.0),
                        alarms: vec![],
                    })
                    .collect(),
            })
            .collect()
    };
    let all: Vec<Vec<ReadingBatch>> = (0..gateways).map(batches).collect();
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
    let msgs_per_round = gateways as i64;

    println!(
        "ingest bench: {meters} meters × {rounds} rounds = {total} readings, {gateways} gateways"
    );
    let t0 = Instant::now();
    let mut pubs = Vec::new();
    for (g, list) in payloads.into_iter().enumerate() {
        let pool = pool.clone();
        let url = mqtt_url.clone();
        let id = format!("bench{run}-pub{g}");
        let per_msg = (total / (rounds as i64 * msgs_per_round)).max(1);
        pubs.push(tokio::spawn(async move {
            let rest = url.trim_start_matches("mqtt://");
            let (host, port) = rest.rsplit_once(':').unwrap();
            let mut o = MqttOptions::new(id, host, port.parse().unwrap());
            o.set_max_packet_size(4 << 20, 4 << 20).set_inflight(100);
            let (client, mut el) = AsyncClient::new(o, 256);
            let poller = tokio::spawn(async move { while el.poll().await.is_ok() {} });
            for (i, (topic, payload)) in list.into_iter().enumerate() {
                // Stay within a window of the committed count (all publishers together).
                if i % 50 == 0 {
                    loop {
                        let stored: i64 = sqlx::query_scalar(
                            "SELECT coalesce(sum(readings),0)::int8 FROM metering.gateways",
                        )
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                        let published = (i as i64) * msgs_per_round * per_msg;
                        if published - stored < WINDOW_MSGS * per_msg {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = client.disconnect().await;
            poller.abort();
        }));
    }
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(readings),0)::int8 FROM metering.gateways")
                .fetch_one(&pool)
                .await
                .unwrap();
        if n >= total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(t0.elapsed().as_secs() < 600, "stalled at {n} of {total}");
    }
    let e2e = t0.elapsed().as_secs_f64();
    for p in pubs {
        let _ = p.await;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM metering.readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dups: i64 = sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM metering.readings GROUP BY meter_id, ts HAVING count(*) > 1) d").fetch_one(&pool).await.unwrap();
    stop.cancel();
    let _ = task.await;

    // The floor: COPY of the same rows into the same table, same batches.
    let copy_pool = PgPool::connect(&db_copy).await.unwrap();
    ingest::migrate(&copy_pool).await.unwrap();
    let parts = ingest::db::Partitions::default();
    let days: Vec<_> = rows
        .iter()
        .map(|r| r.ts.date_naive())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    parts.ensure(&copy_pool, &days).await.unwrap();
    let t1 = Instant::now();
    for chunk in rows.chunks(20_000) {
        let mut tx = copy_pool.begin().await.unwrap();
        let mut c = tx.copy_in_raw(ingest::copy::COPY_READINGS).await.unwrap();
        c.send(ingest::copy::encode(chunk)).await.unwrap();
        c.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let copy = t1.elapsed().as_secs_f64();
    let e2e_rate = total as f64 / e2e;
    let copy_rate = total as f64 / copy;
    println!("end to end (Mosquitto → ingest → PostgreSQL): {stored} stored, {dups} duplicated keys, {e2e:.2} s, {e2e_rate:.0} readings/s");
    println!(
        "raw binary COPY of the same rows:              {copy:.2} s, {copy_rate:.0} readings/s"
    );
    println!("ratio end-to-end / COPY: {:.2}", e2e_rate / copy_rate);
    let bytes: i64 = sqlx::query_scalar("SELECT sum(pg_total_relation_size(inhrelid))::int8 FROM pg_inherits WHERE inhparent = 'metering.readings'::regclass").fetch_one(&copy_pool).await.unwrap();
    println!(
        "hot storage: {:.1} bytes per reading on disk",
        bytes as f64 / total as f64
    );
    copy_pool.close().await;
    pool.close().await;
    let admin = PgPool::connect(&db_url).await.unwrap();
    for db in [&db_e2e, &db_copy] {
        let name = db.rsplit('/').next().unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
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
