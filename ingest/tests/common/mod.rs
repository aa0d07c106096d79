//! Test helpers: a fresh database per test, a replica on port 0 with a unique
//! share group and client id, a publisher, and a tiny HTTP client.
#![allow(dead_code)]

pub mod private;

use chrono::{DateTime, Duration, DurationRound, Utc};
use ingest::registry::{register_meters, MeterRegistration};
use ingest::{Ingest, IngestConfig, MqttConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};
use waterworks_wire::reading::{Reading, ReadingBatch};
use waterworks_wire::{GatewayId, MeterId};

pub const VIEWER: &str = "viewer-7d2f9b4e1a6c83d0f5b8e2a9c4d7f1b6e3a0";
pub const OPERATOR: &str = "operator-4a9e1c7f3b6d20e8a5c1f9b3d7e4a2c8f0b6";

pub fn unique(prefix: &str) -> String {
    waterworks_test_support::unique(prefix)
}

pub fn database_url() -> String {
    waterworks_test_support::postgres::server_url()
}

pub fn mqtt_url() -> String {
    waterworks_test_support::mqtt_url()
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    fresh_database_at(&database_url()).await
}

/// Creates an empty database on the server of `base` and returns its URL.
pub async fn fresh_database_at(base: &str) -> String {
    waterworks_test_support::postgres::create_database(base, &unique("ingest_t")).await
}

pub fn config(db: &str, group: &str, client_id: &str) -> IngestConfig {
    let mut mqtt = MqttConfig::new(mqtt_url(), client_id);
    mqtt.subscription = format!("$share/{group}/waterworks/v1/+/readings");
    let mut c = IngestConfig::new(db, mqtt);
    c.http_listen = "127.0.0.1:0".parse().unwrap();
    c.max_db_connections = 4;
    c.tokens = vec![
        TokenConfig::inline("v", Role::Viewer, VIEWER),
        TokenConfig::inline("o", Role::Operator, OPERATOR),
    ];
    c
}

/// [`config`] subscribed only to the readings of the test's own gateways
/// (the broker is shared: other tests publish on it at the same time).
pub fn config_for(db: &str, group: &str, client_id: &str, gw: &str) -> IngestConfig {
    let mut c = config(db, group, client_id);
    c.mqtt.subscription = format!(
        "$share/{group}/{}",
        waterworks_wire::topic::readings(&GatewayId::parse(gw).unwrap())
    );
    c
}

/// A SQL list literal of the test's own gateway ids (`'a', 'b'`), to keep
/// counts on the shared broker's traffic to the test's own rows.
pub fn own(gws: &[&str]) -> String {
    gws.iter()
        .map(|g| {
            assert!(g
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            format!("'{g}'")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct Replica {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), ingest::IngestError>>,
}

pub async fn start(config: IngestConfig) -> Replica {
    let ingest = Ingest::build(config).await.expect("build");
    let addr = ingest.http_addr();
    let pool = ingest.pool();
    let stop = CancellationToken::new();
    let task = tokio::spawn(ingest.run_until_stopped(stop.clone()));
    let r = Replica {
        addr,
        pool,
        stop,
        task,
    };
    // Ready means subscribed to the broker too.
    waterworks_test_support::net::wait_ok(
        r.addr,
        "/ready",
        "the replica",
        std::time::Duration::from_secs(5),
    )
    .await;
    // The subscription is sent right after CONNACK; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    r
}

impl Replica {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("clean stop");
    }
}

pub async fn register(pool: &PgPool, gw: &str, meters: &[String], max_flow_lph: Option<f64>) {
    let regs: Vec<MeterRegistration> = meters
        .iter()
        .map(|m| MeterRegistration {
            meter_id: MeterId::parse(m.clone()).unwrap(),
            gateway_id: GatewayId::parse(gw).unwrap(),
            profile_id: "waterworks-sim-v1".into(),
            max_flow_lph,
        })
        .collect();
    register_meters(pool, &regs).await.expect("register");
}

/// Midnight (UTC) four to five days back: inside retention, and the longest
/// load of the tests (300 rounds of 15 minutes, 75 h) still ends a day in the
/// past. (Three days back, the last rounds were in the future between
/// midnight and 03:00 UTC and were quarantined `future`.)
pub fn base_ts() -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        (Utc::now() - Duration::days(4))
            .duration_trunc(Duration::days(1))
            .unwrap()
    })
}

/// One received message as the writer takes it (decoded, no statuses).
pub fn input(b: &ReadingBatch) -> ingest::writer::BatchInput {
    let mut meta = ingest::vee::MsgMeta {
        topic: waterworks_wire::topic::readings(&b.gateway_id),
        received_at: Utc::now(),
        gateway_id: None,
        batch_seq: None,
    };
    let decoded = ingest::vee::decode_message(0, &mut meta, &b.encode());
    ingest::writer::BatchInput {
        metas: vec![meta],
        decoded: vec![decoded],
        statuses: vec![],
    }
}

/// The validation window of the writer tests: now, 400 days of retention.
pub fn window() -> ingest::vee::Window {
    ingest::vee::Window {
        now: Utc::now(),
        retention_days: 400,
        max_future_skew_s: 900,
    }
}

/// One round: every meter read at `base + round × 15 min`, 10 L per round.
pub fn round(gw: &str, seq: u64, meters: &[String], r: i64) -> ReadingBatch {
    ReadingBatch {
        gateway_id: GatewayId::parse(gw).unwrap(),
        batch_seq: seq,
        readings: meters
            .iter()
            .enumerate()
            .map(|(i, m)| Reading {
                meter_id: MeterId::parse(m.clone()).unwrap(),
                ts: base_ts() + Duration::minutes(15 * r),
                volume_l: 1_000 * i as u64 + 10 * r as u64,
                flow_lph: Some(40.0),
                alarms: vec![],
            })
            .collect(),
    }
}

/// A publisher that waits for every PUBACK.
pub struct Publisher {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    acked: tokio::sync::watch::Receiver<u64>,
    sent: u64,
}

impl Publisher {
    pub async fn connect(id: &str) -> Publisher {
        Self::connect_to(&mqtt_url(), id).await
    }

    pub async fn connect_to(url: &str, id: &str) -> Publisher {
        let u = waterworks_service::mqtt_url::MqttUrl::parse(url).expect("a broker URL");
        let mut o = MqttOptions::new(id, u.host, u.port);
        o.set_max_packet_size(4 << 20, 4 << 20)
            .set_inflight(100)
            .set_keep_alive(std::time::Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut n = 0;
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
        });
        Publisher {
            client,
            task,
            acked,
            sent: 0,
        }
    }

    pub async fn publish_raw(&mut self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        self.sent += 1;
    }

    pub async fn publish(&mut self, b: &ReadingBatch) {
        let topic = waterworks_wire::topic::readings(&b.gateway_id);
        self.publish_raw(&topic, b.encode()).await;
    }

    pub async fn flush(&mut self) {
        let want = self.sent;
        self.acked.wait_for(|n| *n >= want).await.unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.task.abort();
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until `sql` (a count) reaches `want`, or fails after `secs`.
pub async fn wait_for(pool: &PgPool, sql: &str, want: i64, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let n = count(pool, sql).await;
        if n >= want {
            assert_eq!(n, want, "{sql}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {sql} = {n}, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// GET over plain HTTP/1.1; returns (status, body).
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Decodes a body that may be chunked.
pub fn json(body: &str) -> serde_json::Value {
    if let Ok(v) = serde_json::from_str(body) {
        return v;
    }
    // chunked: size line, data, ..., 0
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Drops a database made by [`fresh_database`] (never a shared one).
pub async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap();
    assert!(
        name.starts_with("ingest_t"),
        "only test databases are dropped"
    );
    waterworks_test_support::postgres::drop_database(&database_url(), url).await;
}

/// The digest of a set of readings `(meter_id, ts, volume_l)`, computed the
/// same way as [`STORED_DIGEST`] computes it in the database.
pub fn digest(set: &[(String, DateTime<Utc>, i64)]) -> String {
    use sha2::{Digest, Sha256};
    let mut v: Vec<&(String, DateTime<Utc>, i64)> = set.iter().collect();
    v.sort_by(|a, b| (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)));
    let text = v
        .iter()
        .map(|(m, ts, vol)| format!("{m}|{}|{vol}", ts.timestamp_micros()))
        .collect::<Vec<_>>()
        .join("\n");
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Count and digest of every stored reading (through the billing view).
pub const STORED_DIGEST: &str = "SELECT count(*), coalesce(encode(sha256(convert_to(string_agg(
        meter_id || '|' || (extract(epoch FROM ts) * 1000000)::int8 || '|' || volume_l, E'\\n'
        ORDER BY meter_id COLLATE \"C\", ts), 'UTF8')), 'hex'), '')
    FROM metering.readings_v1";

/// Every reading of `round` for these meters, as [`digest`] takes them.
pub fn round_set(b: &ReadingBatch) -> Vec<(String, DateTime<Utc>, i64)> {
    b.readings
        .iter()
        .map(|r| (r.meter_id.to_string(), r.ts, r.volume_l as i64))
        .collect()
}
