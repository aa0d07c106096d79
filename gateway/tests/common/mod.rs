//! Test helpers: an in-process fake Modbus TCP device, a broker watcher, configs.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::Clock;

pub const MQTT_HOST: &str = "127.0.0.1";
pub const MQTT_PORT: u16 = 1883;

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn sim_profile_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/waterworks-sim-v1.toml")
}

/// How a fake unit behaves.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Volume = base + whole minutes since 2026-10-01T00:00Z of the clock.
    Good { base_l: u64 },
    /// Answers every read with exception 04.
    Exceptions,
    /// Never answers.
    Dead,
}

/// The registers of the sim profile for a volume.
pub fn sim_registers(volume_l: u64, flow_dlph: i32, alarms: u16) -> [u16; 16] {
    let mut r = [0u16; 16];
    for i in 0..4 {
        r[i] = (volume_l >> (48 - 16 * i)) as u16;
        r[8 + i] = r[i];
    }
    r[4] = (flow_dlph as u32 >> 16) as u16;
    r[5] = flow_dlph as u32 as u16;
    r[6] = alarms;
    r
}

pub fn expected_volume(base_l: u64, at: DateTime<Utc>) -> u64 {
    base_l + ((at - t("2026-10-01T00:00:00Z")).num_minutes().max(0) as u64)
}

#[derive(Clone)]
struct FakeService {
    units: std::sync::Arc<HashMap<u8, Unit>>,
    clock: Clock,
}

type Fut = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for FakeService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Fut;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = self.units.get(&req.slave).copied();
        let now = self.clock.now();
        Box::pin(async move {
            let (addr, cnt, input) = match req.request {
                tokio_modbus::Request::ReadInputRegisters(a, c) => (a, c, true),
                tokio_modbus::Request::ReadHoldingRegisters(a, c) => (a, c, false),
                _ => return Err(ExceptionCode::IllegalFunction),
            };
            let base_l = match unit {
                None => return Err(ExceptionCode::GatewayTargetDevice),
                Some(Unit::Exceptions) => return Err(ExceptionCode::ServerDeviceFailure),
                Some(Unit::Dead) => std::future::pending().await,
                Some(Unit::Good { base_l }) => base_l,
            };
            let regs = sim_registers(expected_volume(base_l, now), 125, 0);
            let words: Option<Vec<u16>> = (addr..addr.saturating_add(cnt))
                .map(|a| regs.get(a as usize).copied())
                .collect();
            let words = words.ok_or(ExceptionCode::IllegalDataAddress)?;
            Ok(if input {
                Response::ReadInputRegisters(words)
            } else {
                Response::ReadHoldingRegisters(words)
            })
        })
    }
}

/// Serves `units` on a fresh loopback port until `shutdown`.
pub async fn fake_device(
    units: HashMap<u8, Unit>,
    clock: Clock,
    shutdown: CancellationToken,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = FakeService {
        units: std::sync::Arc::new(units),
        clock,
    };
    let server = tokio_modbus::server::tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = move |stream, _addr| {
            let s = service.clone();
            async move { Ok(Some((s, stream))) }
        };
        let _ = server
            .serve_until(&on_connected, |_e| {}, shutdown.cancelled_owned())
            .await;
    });
    addr
}

/// A unique name per test run (ids on the shared broker must not collide).
pub fn unique(prefix: &str) -> String {
    waterworks_test_support::unique(&format!("{prefix}-"))
}

/// Collects every message on `filter` from the broker at `port` into a channel.
pub async fn watch_topic(
    port: u16,
    filter: &str,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, bool)>,
    CancellationToken,
) {
    watch(port, filter, "watch", true, |p| {
        (p.topic.clone(), p.payload.to_vec(), p.retain)
    })
    .await
}

/// Subscribes to `filter` (QoS 1) as a fresh client and sends what `map`
/// makes of each message into a channel, until the token is cancelled;
/// returns once the broker acknowledged the subscription.
async fn watch<T: Send + 'static>(
    port: u16,
    filter: &str,
    client: &str,
    clean_session: bool,
    map: fn(&rumqttc::Publish) -> T,
) -> (tokio::sync::mpsc::UnboundedReceiver<T>, CancellationToken) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(unique(client), MQTT_HOST, port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(clean_session);
    let (client, mut el) = AsyncClient::new(o, 64);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let stop2 = stop.clone();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            tokio::select! {
                _ = stop2.cancelled() => break,
                ev = el.poll() => match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = subscribed_tx.take() { let _ = t.send(()); }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(map(&p));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
        .await
        .expect("subscribed in time")
        .unwrap();
    (rx, stop)
}

pub fn config_text(
    gateway_id: &str,
    meters: &[(String, SocketAddr, u8)],
    mqtt_port: u16,
    spool: &Path,
) -> String {
    let mut s = format!(
        "gateway_id = \"{gateway_id}\"\nprofiles = [{:?}]\n\n[poll]\ninterval_s = 900\nrequest_timeout_ms = 200\nretries = 1\nretry_backoff_ms = 20\n\n",
        sim_profile_path().display().to_string()
    );
    for (id, addr, unit) in meters {
        s.push_str(&format!(
            "[[meters]]\nmeter_id = \"{id}\"\ntransport = {{ tcp = \"{addr}\" }}\nunit_id = {unit}\nprofile = \"waterworks-sim-v1\"\n\n"
        ));
    }
    s.push_str(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nack = \"broker\"\nclient_id = \"{gateway_id}-c\"\nmax_inflight = 8\n\n[spool]\ndir = {:?}\nmax_bytes = 16777216\n",
        spool.display().to_string()
    ));
    s
}

/// Waits (bounded) until `progress` satisfies `f`.
pub async fn wait_progress(
    rx: &mut tokio::sync::watch::Receiver<gateway::Progress>,
    what: &str,
    f: impl Fn(&gateway::Progress) -> bool,
) {
    let ok = matches!(
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|p| f(p))).await,
        Ok(Ok(_))
    );
    if !ok {
        panic!("timed out waiting for {what}; progress {:?}", *rx.borrow());
    }
}

/// A private Mosquitto for tests that stop the broker (never the shared one),
/// from `waterworks-test-support`.
pub struct PrivateBroker {
    pub port: u16,
    broker: waterworks_test_support::mosquitto::Mosquitto,
}

impl PrivateBroker {
    /// Starts `mosquitto -c conf` on a free loopback port, with persistence in
    /// `dir` so that persistent sessions survive a restart.
    pub async fn start(dir: &Path) -> PrivateBroker {
        Self::start_with(dir, "").await
    }

    /// Like [`start`](Self::start), with `extra` lines appended to the config
    /// (they apply to its one listener, e.g. `certfile ...` for TLS).
    pub async fn start_with(dir: &Path, extra: &str) -> PrivateBroker {
        let settings = format!(
            "user root\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_inflight_messages 0\nmax_queued_messages 100000\n{}{extra}",
            dir.display(),
            waterworks_test_support::mosquitto::log_to(dir),
        );
        let broker = waterworks_test_support::mosquitto::Mosquitto::start_in(dir, &settings);
        PrivateBroker {
            port: broker.port,
            broker,
        }
    }

    pub async fn restart(&mut self) {
        self.broker.restart();
    }

    /// Stops the broker (SIGTERM, so it saves its persistent sessions) and waits.
    pub fn stop(&mut self) {
        self.broker.stop();
    }
}

/// Like [`watch_topic`] but with a persistent session (fixed client id,
/// clean_session = false) that keeps collecting across broker restarts.
pub async fn watch_topic_persistent(
    port: u16,
    filter: &str,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    CancellationToken,
) {
    watch(port, filter, "pwatch", false, |p| p.payload.to_vec()).await
}

/// A gateway config (see [`config_text`]) for one meter `{gw}-m1` on `dev`
/// unit 1, publishing over `mqtts://` to the broker on `port` and trusting
/// the CA file `ca_file` (relative to `dir`, where it is written as `gw.toml`).
pub fn tls_config(
    dir: &Path,
    gw: &str,
    dev: SocketAddr,
    port: u16,
    ca_file: &str,
) -> gateway::GatewayConfig {
    let text = config_text(
        gw,
        &[(format!("{gw}-m1"), dev, 1)],
        port,
        &dir.join("spool"),
    )
    .replace("url = \"mqtt://", "url = \"mqtts://")
    .replace(
        "max_inflight = 8\n",
        &format!("max_inflight = 8\ntls_ca_file = \"{ca_file}\"\n"),
    );
    std::fs::write(dir.join("gw.toml"), text).unwrap();
    gateway::load_config(&dir.join("gw.toml")).unwrap()
}
