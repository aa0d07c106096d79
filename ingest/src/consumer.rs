//! (Long because the MQTT task, the collectors and the writer loops are one pipeline that shares private message, batch and ack-token types and the in-flight budget; split by stage, those would all become public.)
//!
//! The MQTT shell: one task polls rumqttc's event loop (an MQTT 5 session by
//! default, MQTT 3.1.1 with `mqtt.protocol = "v311"`) and hands publishes to
//! the collector; the collector decodes them and closes batches; the writer
//! commits each batch and only then acknowledges its messages.
//!
//! ```text
//! broker --> mqtt task --(inbound, by gateway)--> collector --(1 batch)--> writer --> PostgreSQL
//!               ^              (one per lane)                                      |
//!               +------------------------- acks after commit ----------------------+
//! ```
//!
//! Bounds: the inbound channels hold `max_inflight` messages in all, and
//! every message holds its payload's bytes of `limits.max_inflight_bytes`
//! ([`crate::budget`]) until it is acknowledged (when either is spent, the
//! event loop is not polled: TCP backpressure); per lane one batch
//! waits for the writer while another is written. Nothing is acknowledged before commit, so
//! a crash anywhere loses nothing: the broker redelivers.

use crate::config::{BatchConfig, IngestConfig, MqttProtocol};
use crate::db::Partitions;
use crate::vee::{self, MsgMeta, Window};
use crate::writer::{self, BatchInput};
use crate::IngestError;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rumqttc::v5;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use waterworks_wire::topic::{self, Topic};

/// A batch closes when no message arrived for this long (light load is
/// written at once; under load the queue never idles).
pub const IDLE_CLOSE_MS: u64 = 2;
/// Backoff bounds between attempts to reach the broker or write a batch.
pub const RETRY_MIN_MS: u64 = 100;
pub const RETRY_MAX_MS: u64 = 5_000;
/// Failed attempts after which a multi-message batch is written message by
/// message, and a lone message refused by the store for a non-transient
/// reason is quarantined (and acknowledged) instead of blocking the stream.
pub const ATTEMPTS_BEFORE_ISOLATING: u32 = 3;
/// Bound of rumqttc's request channel, which carries our PUBACKs to the
/// event loop. The event loop is the only thing that drains it, and it takes
/// at most one request per poll while a network read brings up to ten
/// publishes; and it is not polled at all while the pipeline is full. With a
/// small bound, acks of committed batches filled the channel, blocked the
/// writer, stalled the pipeline and so the polling: a deadlock (seen with an
/// unlimited broker window; `tests/faults.rs` has the regression test). The
/// acks queued here never exceed the broker's in-flight window
/// (`max_inflight_messages`, 5000 in deploy/mosquitto), far below this bound;
/// an ack request is a few dozen bytes. If it ever filled, the writer would
/// wait (messages stay unacknowledged and are redelivered after a
/// reconnect: no loss, no duplicate).
pub const ACK_CHANNEL_CAPACITY: usize = 1 << 20;
/// Independent writers, each with its own collector, batches, transaction
/// and connection. Messages are routed by gateway, so one gateway's batches
/// stay in order and the lanes take disjoint gateway locks (a meter belongs
/// to one gateway; see `writer::lock_gateways`; replicas sharing a gateway
/// wait for each other, never deadlock: locks are taken in key order). Two
/// lanes keep PostgreSQL busy while the other lane decodes,
/// validates or waits for a round trip (see README: benchmark).
pub const WRITER_LANES: usize = 2;
/// Status topics are subscribed without sharing (every replica records them).
pub const STATUS_SUBSCRIPTION: &str = waterworks_wire::topic::STATUS_FILTER;

/// One received publish: its topic, payload and what acknowledges it.
pub(crate) struct Message {
    topic: String,
    payload: Bytes,
    ack: AckToken,
    /// Its share of the in-flight byte budget, held until the message is
    /// dropped (after its acknowledgement).
    budget: Option<crate::budget::BytePermit>,
}

/// What a PUBACK needs: the packet id, and whether the message wants one
/// (QoS 1; the subscription is QoS 1, so the broker sends nothing higher).
#[derive(Debug, Clone, Copy)]
struct AckToken {
    pkid: u16,
    qos1: bool,
}

struct Inbound {
    message: Message,
    received_at: DateTime<Utc>,
}

struct Batch {
    input: BatchInput,
    messages: Vec<Message>,
}

/// `(host, port, tls)` of an `mqtt://host[:port]` (1883) or
/// `mqtts://host[:port]` (8883, TLS) URL, read by the workspace's one parser
/// (`waterworks_service::mqtt_url`).
fn broker_address(url: &str) -> Result<(String, u16, bool), IngestError> {
    let u = waterworks_service::mqtt_url::MqttUrl::parse(url)
        .map_err(|e| IngestError::Config(format!("mqtt url: {e}")))?;
    Ok((u.host, u.port, u.tls))
}

/// The transport of `cfg`: TCP, or TLS trusting `tls_ca_file` (else the
/// system roots).
fn transport(
    cfg: &crate::config::MqttConfig,
    tls: bool,
) -> Result<rumqttc::Transport, IngestError> {
    if !tls {
        if cfg.tls_ca_file.is_some() {
            return Err(IngestError::Config(
                "mqtt.tls_ca_file is only used with an mqtts:// url".into(),
            ));
        }
        return Ok(rumqttc::Transport::Tcp);
    }
    install_crypto_provider();
    Ok(match &cfg.tls_ca_file {
        Some(path) => {
            let ca = std::fs::read(path).map_err(|e| {
                IngestError::Config(format!("mqtt.tls_ca_file {}: {e}", path.display()))
            })?;
            rumqttc::Transport::tls(ca, None, None)
        }
        None => rumqttc::Transport::tls_with_default_config(),
    })
}

/// Selects rustls's process-wide crypto provider (aws-lc-rs, the one the
/// workspace's TLS already uses) before rumqttc builds a TLS client. The
/// `waterworks` binary links rustls with both aws-lc-rs and ring (the
/// console's HTTP client), and rustls then cannot pick one by itself: the
/// MQTT task panicked at the first `mqtts://` connection. Idempotent.
fn install_crypto_provider() {
    // Err only when a provider is already installed: that one is kept.
    let _ = rumqttc::tokio_rustls::rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Username and password of `cfg`, if it has a username.
fn credentials(cfg: &crate::config::MqttConfig) -> Result<Option<(String, String)>, IngestError> {
    let password = cfg.resolve_password().map_err(IngestError::Config)?;
    Ok(cfg.username.clone().map(|u| {
        (
            u,
            password.map(|p| p.expose().to_string()).unwrap_or_default(),
        )
    }))
}

/// Largest packet ingest accepts: one full gateway batch plus headers.
const MAX_PACKET_BYTES: usize = waterworks_wire::reading::MAX_PAYLOAD_BYTES + 4096;

/// The MQTT 3.1.1 session: persistent (`clean_session = false`), manual acks.
pub fn mqtt_options(cfg: &crate::config::MqttConfig) -> Result<rumqttc::MqttOptions, IngestError> {
    let (host, port, tls) = broker_address(&cfg.url)?;
    let mut o = rumqttc::MqttOptions::new(cfg.client_id.clone(), host, port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_max_packet_size(MAX_PACKET_BYTES, 64 * 1024)
        .set_transport(transport(cfg, tls)?);
    if let Some((u, p)) = credentials(cfg)? {
        o.set_credentials(u, p);
    }
    Ok(o)
}

/// The MQTT 5 session: `clean_start = false` with a session expiry interval
/// (persistent), manual acks, and a Receive Maximum bounding what the broker
/// sends before it sees acknowledgements. No topic aliases (every publish
/// carries its topic).
pub fn mqtt5_options(cfg: &crate::config::MqttConfig) -> Result<v5::MqttOptions, IngestError> {
    let (host, port, tls) = broker_address(&cfg.url)?;
    if cfg.receive_maximum == 0 {
        return Err(IngestError::Config(
            "mqtt.receive_maximum must be at least 1".into(),
        ));
    }
    let mut o = v5::MqttOptions::new(cfg.client_id.clone(), host, port);
    o.set_clean_start(false)
        .set_session_expiry_interval(Some(cfg.session_expiry_s))
        .set_receive_maximum(Some(cfg.receive_maximum))
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_max_packet_size(Some(MAX_PACKET_BYTES as u32))
        .set_transport(transport(cfg, tls)?);
    if let Some((u, p)) = credentials(cfg)? {
        o.set_credentials(u, p);
    }
    Ok(o)
}

/// Checks the MQTT settings without connecting.
pub fn check_mqtt(cfg: &crate::config::MqttConfig) -> Result<(), IngestError> {
    match cfg.protocol {
        MqttProtocol::V5 => mqtt5_options(cfg).map(|_| ()),
        MqttProtocol::V311 => mqtt_options(cfg).map(|_| ()),
    }
}

/// rumqttc's client handle, either protocol: subscribes, acknowledges,
/// disconnects.
#[derive(Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// rumqttc's event loop, either protocol.
enum Events {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the pipeline cares about in an event.
enum Event {
    Connected {
        session_present: bool,
    },
    /// The broker acknowledged one of our subscriptions.
    SubAck,
    Publish(Message),
    Other,
    Lost(String),
    /// The broker refused the connection for a reason retrying cannot fix
    /// (credentials, authorization, client id): fatal.
    Refused(String),
}

impl Client {
    fn new(cfg: &crate::config::MqttConfig, cap: usize) -> Result<(Client, Events), IngestError> {
        Ok(match cfg.protocol {
            MqttProtocol::V311 => {
                let (c, e) = rumqttc::AsyncClient::new(mqtt_options(cfg)?, cap);
                (Client::V311(c), Events::V311(Box::new(e)))
            }
            MqttProtocol::V5 => {
                let (c, e) = v5::AsyncClient::new(mqtt5_options(cfg)?, cap);
                (Client::V5(c), Events::V5(Box::new(e)))
            }
        })
    }

    fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    async fn ack(&self, m: &Message) -> Result<(), String> {
        if !m.ack.qos1 {
            return Ok(());
        }
        match self {
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = m.ack.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p = v5::mqttbytes::v5::Publish::new(
                    "",
                    v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                p.pkid = m.ack.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Publishes a gateway's delivery acknowledgement (QoS 1, retained).
    async fn publish_ack(&self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .publish(topic, v5::mqttbytes::QoS::AtLeastOnce, true, payload)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    fn try_disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl Events {
    async fn poll(&mut self) -> Event {
        match self {
            Events::V311(e) => {
                use rumqttc::{Event as E, Packet as P};
                match e.poll().await {
                    Ok(E::Incoming(P::ConnAck(a))) => Event::Connected {
                        session_present: a.session_present,
                    },
                    Ok(E::Incoming(P::SubAck(_))) => Event::SubAck,
                    Ok(E::Incoming(P::Publish(p))) => Event::Publish(Message {
                        ack: AckToken {
                            pkid: p.pkid,
                            qos1: p.qos == rumqttc::QoS::AtLeastOnce,
                        },
                        topic: p.topic,
                        payload: p.payload,
                        budget: None,
                    }),
                    Ok(_) => Event::Other,
                    Err(rumqttc::ConnectionError::ConnectionRefused(code))
                        if code != rumqttc::ConnectReturnCode::ServiceUnavailable =>
                    {
                        Event::Refused(format!("{code:?}"))
                    }
                    Err(e) => Event::Lost(e.to_string()),
                }
            }
            Events::V5(e) => {
                use v5::mqttbytes::v5::Packet as P;
                use v5::Event as E;
                match e.poll().await {
                    Ok(E::Incoming(P::ConnAck(a))) => Event::Connected {
                        session_present: a.session_present,
                    },
                    Ok(E::Incoming(P::SubAck(_))) => Event::SubAck,
                    Ok(E::Incoming(P::Publish(p))) => Event::Publish(Message {
                        ack: AckToken {
                            pkid: p.pkid,
                            qos1: p.qos == v5::mqttbytes::QoS::AtLeastOnce,
                        },
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        budget: None,
                    }),
                    Ok(E::Incoming(P::Disconnect(d))) => {
                        // The connection error that follows reconnects.
                        tracing::warn!(reason = ?d.reason_code, "the broker sent DISCONNECT");
                        Event::Other
                    }
                    Ok(_) => Event::Other,
                    Err(v5::ConnectionError::ConnectionRefused(code))
                        if !matches!(
                            code,
                            v5::mqttbytes::v5::ConnectReturnCode::ServiceUnavailable
                                | v5::mqttbytes::v5::ConnectReturnCode::ServerUnavailable
                                | v5::mqttbytes::v5::ConnectReturnCode::ServerBusy
                                | v5::mqttbytes::v5::ConnectReturnCode::ConnectionRateExceeded
                                | v5::mqttbytes::v5::ConnectReturnCode::QuotaExceeded
                        ) =>
                    {
                        Event::Refused(format!("{code:?}"))
                    }
                    Err(e) => Event::Lost(e.to_string()),
                }
            }
        }
    }
}

pub struct Shared {
    pub pool: PgPool,
    /// The API's own pool (with its `statement_timeout`), apart from the writers'.
    pub api_pool: PgPool,
    /// Payload bytes received and not yet acknowledged (`limits.max_inflight_bytes`).
    pub inflight: crate::budget::ByteBudget,
    pub partitions: Partitions,
    pub broker_connected: AtomicBool,
}

/// Runs the pipeline until `shutdown`; then finishes the batch being written,
/// acknowledges it and disconnects.
pub async fn run(
    cfg: IngestConfig,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let (client, eventloop) = Client::new(
        &cfg.mqtt,
        ACK_CHANNEL_CAPACITY.max(cfg.mqtt.max_inflight * 2 + 64),
    )?;
    let lanes = WRITER_LANES.max(1);
    let per_lane = (cfg.mqtt.max_inflight / lanes).max(1);
    let mut in_txs = Vec::with_capacity(lanes);
    let mut in_rxs = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel::<Inbound>(per_lane);
        in_txs.push(tx);
        in_rxs.push(rx);
    }
    let mqtt_stop = CancellationToken::new();

    let mqtt = tokio::spawn(mqtt_loop(
        eventloop,
        client.clone(),
        in_txs,
        cfg.mqtt.username.clone(),
        shared.clone(),
        vec![
            cfg.mqtt.subscription.clone(),
            STATUS_SUBSCRIPTION.to_string(),
        ],
        mqtt_stop.clone(),
        shutdown.clone(),
    ));
    let window = WindowCfg {
        retention_days: cfg.retention_days,
        max_future_skew_s: cfg.max_future_skew_s,
    };
    let mut collectors = Vec::with_capacity(lanes);
    let mut writers = Vec::with_capacity(lanes);
    for in_rx in in_rxs {
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        collectors.push(tokio::spawn(collect(
            in_rx,
            batch_tx,
            cfg.batch.clone(),
            shutdown.clone(),
        )));
        writers.push(tokio::spawn(write_loop(
            batch_rx,
            client.clone(),
            shared.clone(),
            window,
            shutdown.clone(),
        )));
    }
    let mut writer_result = Ok(());
    for w in writers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => writer_result = Err(e),
            Err(e) => tracing::error!(error = %e, "writer task failed"),
        }
    }
    for c in collectors {
        let _ = c.await;
    }
    // Give the event loop a moment to send the last acks, then leave.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.try_disconnect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    mqtt_stop.cancel();
    match mqtt.await {
        Ok(Err(e)) => return Err(e),
        Err(e) => tracing::error!(error = %e, "mqtt task failed"),
        Ok(Ok(())) => {}
    }
    writer_result
}

/// The lane of a topic: its gateway's, so one gateway's messages stay in
/// order and every meter (registered to one gateway) is written by one lane.
fn lane_of(topic: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let gateway = topic.split('/').nth(2).unwrap_or(topic);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    gateway.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

#[allow(clippy::too_many_arguments)]
async fn mqtt_loop(
    mut eventloop: Events,
    client: Client,
    txs: Vec<mpsc::Sender<Inbound>>,
    username: Option<String>,
    shared: Arc<Shared>,
    subscriptions: Vec<String>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let mut backoff_ms = RETRY_MIN_MS;
    // Subscriptions of this connection not yet acknowledged. The replica
    // counts as connected (and /ready) only once all are: before that, a
    // fresh session's broker drops what is published (a first start).
    let mut unacked_subs = 0usize;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Event::Connected { session_present } => {
                backoff_ms = RETRY_MIN_MS;
                tracing::info!(session_present, "connected to broker");
                unacked_subs = subscriptions.len();
                for s in &subscriptions {
                    if let Err(e) = client.try_subscribe(s) {
                        tracing::error!(error = %e, subscription = %s, "subscribe failed");
                    }
                }
            }
            Event::SubAck => {
                unacked_subs = unacked_subs.saturating_sub(1);
                if unacked_subs == 0 && !shared.broker_connected.swap(true, Ordering::Relaxed) {
                    tracing::info!("subscriptions acknowledged");
                }
            }
            Event::Publish(mut message) => {
                metrics::counter!("ingest_messages_total").increment(1);
                // While the byte budget is spent this waits: the socket is
                // not read (backpressure), nothing is dropped.
                message.budget = tokio::select! {
                    _ = stop.cancelled() => break,
                    p = shared.inflight.acquire(message.payload.len()) => Some(p),
                };
                let inbound = Inbound {
                    message,
                    received_at: Utc::now(),
                };
                // When the pipeline is full this waits: the socket is not read
                // (backpressure). After shutdown the receiver is gone and the
                // message is left unacknowledged for the broker to redeliver.
                let tx = &txs[lane_of(&inbound.message.topic, txs.len())];
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tx.send(inbound) => {}
                }
            }
            Event::Other => {}
            Event::Refused(code) => {
                shared.broker_connected.store(false, Ordering::Relaxed);
                metrics::counter!("ingest_broker_refusals_total").increment(1);
                let user = username.as_deref().unwrap_or("(anonymous)");
                tracing::error!(code = %code, user, "the broker refused ingest's connection; check mqtt.username, the password and the broker's ACL");
                return Err(IngestError::Config(format!(
                    "the broker refused the connection ({code}) for user {user}: check mqtt.username, mqtt.password_file / MQTT_PASSWORD and the broker's ACL"
                )));
            }
            Event::Lost(e) if shutdown.is_cancelled() => {
                // Our own disconnect (or a loss while draining): no reconnect,
                // nothing to warn about. Unacknowledged messages are
                // redelivered to the next session.
                shared.broker_connected.store(false, Ordering::Relaxed);
                tracing::info!(error = %e, "broker connection closed on shutdown");
                stop.cancelled().await;
                break;
            }
            Event::Lost(e) => {
                shared.broker_connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, backoff_ms, "broker connection lost; reconnecting");
                metrics::counter!("ingest_broker_errors_total").increment(1);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
            }
        }
    }
    shared.broker_connected.store(false, Ordering::Relaxed);
    Ok(())
}

/// Groups messages into batches; decodes as they arrive (pipelined with the
/// writer). A batch is full at `max_readings` or `max_bytes`; it is ready
/// after `max_wait_ms` or an idle input ([`IDLE_CLOSE_MS`]), and a ready
/// batch is handed over as soon as the writer can take it: while the writer
/// is busy, the batch keeps growing (up to full) instead of closing small.
/// A light load is written at once; a heavy one in large batches, so the
/// per-transaction costs (round trips, commit flush) shrink per reading.
async fn collect(
    mut rx: mpsc::Receiver<Inbound>,
    tx: mpsc::Sender<Batch>,
    cfg: BatchConfig,
    shutdown: CancellationToken,
) {
    let idle = Duration::from_millis(IDLE_CLOSE_MS);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let deadline = Instant::now() + Duration::from_millis(cfg.max_wait_ms);
        let mut batch = Batch {
            input: BatchInput::default(),
            messages: Vec::new(),
        };
        let (mut readings, mut bytes) = (0usize, 0usize);
        let mut input_open = true;
        let mut next = Some(first);
        let permit = loop {
            if let Some(m) = next.take() {
                bytes += m.message.payload.len();
                readings += add(&mut batch, m);
            }
            let full = readings >= cfg.max_readings || bytes >= cfg.max_bytes;
            if full || !input_open {
                match tx.reserve().await {
                    Ok(p) => break p,
                    Err(_) => return,
                }
            }
            match rx.try_recv() {
                Ok(m) => {
                    next = Some(m);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    input_open = false;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now < deadline {
                match tokio::time::timeout((deadline - now).min(idle), rx.recv()).await {
                    Ok(Some(m)) => {
                        next = Some(m);
                        continue;
                    }
                    Ok(None) => {
                        input_open = false;
                        continue;
                    }
                    Err(_) => {} // the input idles: ready
                }
            }
            // Ready: hand it over when the writer can take it; meanwhile
            // keep adding what arrives.
            tokio::select! {
                biased;
                p = tx.reserve() => match p {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                m = rx.recv() => match m {
                    Some(m) => next = Some(m),
                    None => input_open = false,
                },
            }
        };
        metrics::histogram!("ingest_batch_readings").record(readings as f64);
        permit.send(batch);
        if !input_open {
            return;
        }
    }
}

/// Decodes one message into the batch; returns how many readings it brought.
fn add(batch: &mut Batch, m: Inbound) -> usize {
    let idx = batch.input.metas.len();
    let mut meta = MsgMeta {
        topic: m.message.topic.clone(),
        received_at: m.received_at,
        gateway_id: None,
        batch_seq: None,
    };
    if let Some(Topic::Status(gw)) = topic::parse(&m.message.topic) {
        let status = String::from_utf8_lossy(&m.message.payload)
            .chars()
            .take(32)
            .collect::<String>();
        batch
            .input
            .statuses
            .push((gw.to_string(), status, m.received_at));
        meta.gateway_id = Some(gw.to_string());
        batch.input.metas.push(meta);
        batch.input.decoded.push(vee::Decoded::default());
    } else {
        let decoded = vee::decode_message(idx, &mut meta, &m.message.payload);
        let n = decoded.readings.len();
        batch.input.metas.push(meta);
        batch.input.decoded.push(decoded);
        batch.messages.push(m.message);
        return n;
    }
    batch.messages.push(m.message);
    0
}

#[derive(Debug, Clone, Copy)]
struct WindowCfg {
    retention_days: u32,
    max_future_skew_s: u64,
}

impl WindowCfg {
    fn now(self) -> Window {
        Window {
            now: Utc::now(),
            retention_days: self.retention_days,
            max_future_skew_s: self.max_future_skew_s,
        }
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Batch>,
    client: Client,
    shared: Arc<Shared>,
    window: WindowCfg,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    while let Some(batch) = rx.recv().await {
        let mut parts = vec![batch];
        while let Some(b) = parts.pop() {
            match write_with_retry(&shared, &b.input, window, &shutdown).await {
                WriteResult::Done(acks) => {
                    // Committed: tell the gateways (their spools may now
                    // forget these batches), then release the messages.
                    publish_acks(&client, acks).await;
                    ack_all(&client, &b.messages).await
                }
                WriteResult::Isolate => {
                    if b.messages.len() > 1 {
                        tracing::warn!(
                            messages = b.messages.len(),
                            "batch keeps failing; writing its messages one by one"
                        );
                        parts.extend(split(b).into_iter().rev());
                    } else {
                        refuse_whole(&shared, &b, window).await;
                        ack_all(&client, &b.messages).await;
                    }
                }
                WriteResult::Stopped => return Ok(()),
            }
        }
    }
    Ok(())
}

enum WriteResult {
    /// Committed; the gateways' acknowledgements to publish.
    Done(Vec<(String, waterworks_wire::topic::Ack)>),
    Isolate,
    Stopped,
}

async fn write_with_retry(
    shared: &Shared,
    input: &BatchInput,
    window: WindowCfg,
    shutdown: &CancellationToken,
) -> WriteResult {
    let mut backoff_ms = RETRY_MIN_MS;
    let mut permanent_failures = 0;
    loop {
        let started = Instant::now();
        match writer::write_batch(&shared.pool, &shared.partitions, input, window.now()).await {
            Ok(out) => {
                metrics::histogram!("ingest_batch_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("ingest_batches_total").increment(1);
                metrics::counter!("ingest_readings_stored_total")
                    .increment(out.stored + out.backfilled);
                metrics::counter!("ingest_readings_backfilled_total").increment(out.backfilled);
                metrics::counter!("ingest_duplicates_total").increment(out.duplicates);
                metrics::counter!("ingest_seq_gaps_total").increment(out.seq_gaps);
                metrics::counter!("ingest_seq_resets_total").increment(out.seq_resets);
                for (reason, n) in &out.quarantined {
                    metrics::counter!("ingest_quarantined_total", "reason" => *reason)
                        .increment(*n);
                }
                tracing::debug!(
                    readings = input.readings(),
                    messages = input.metas.len(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    ?out,
                    "batch committed"
                );
                gateway_metrics(input, &out.acks);
                return WriteResult::Done(out.acks);
            }
            Err(e) => {
                metrics::counter!("ingest_write_retries_total").increment(1);
                if !e.is_transient() {
                    permanent_failures += 1;
                    if permanent_failures >= ATTEMPTS_BEFORE_ISOLATING {
                        tracing::error!(error = %e, "batch refused by the store");
                        return WriteResult::Isolate;
                    }
                }
                tracing::warn!(error = %e, backoff_ms, "batch write failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return WriteResult::Stopped,
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                }
                backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
            }
        }
    }
}

fn split(b: Batch) -> Vec<Batch> {
    let Batch { input, messages } = b;
    let mut statuses = input.statuses.into_iter();
    input
        .metas
        .into_iter()
        .zip(input.decoded)
        .zip(messages)
        .map(|((meta, mut decoded), p)| {
            for c in &mut decoded.readings {
                c.msg = 0;
            }
            for q in &mut decoded.quarantine {
                q.msg = 0;
            }
            let st: Vec<_> = match topic::parse(&meta.topic) {
                Some(Topic::Status(_)) => statuses.next().into_iter().collect(),
                _ => vec![],
            };
            Batch {
                input: BatchInput {
                    metas: vec![meta],
                    decoded: vec![decoded],
                    statuses: st,
                },
                messages: vec![p],
            }
        })
        .collect()
}

/// A lone message the store refuses for a non-transient reason: keep it in
/// quarantine (raw) so the stream moves on. Retries until that insert works.
async fn refuse_whole(shared: &Shared, b: &Batch, window: WindowCfg) {
    let meta = b.input.metas.first().cloned();
    let payload = b
        .messages
        .first()
        .map(|p| vee::PayloadSample::of(&p.payload))
        .unwrap_or_else(|| vee::PayloadSample::of(&[]));
    let input = BatchInput {
        metas: meta.into_iter().collect(),
        decoded: vec![vee::Decoded {
            header: None,
            readings: vec![],
            quarantine: vec![vee::Quarantined {
                msg: 0,
                reason: vee::Reason::Malformed,
                detail: "the store refused this message; kept whole for inspection".into(),
                payload: Some(payload),
                reading: None,
                meter_id: None,
                ts: None,
            }],
        }],
        statuses: vec![],
    };
    let mut backoff_ms = RETRY_MIN_MS;
    while let Err(e) =
        writer::write_batch(&shared.pool, &shared.partitions, &input, window.now()).await
    {
        tracing::error!(error = %e, "cannot quarantine a refused message; retrying");
        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
    }
    metrics::counter!("ingest_quarantined_total", "reason" => vee::Reason::Malformed.as_str())
        .increment(1);
}

/// Publishes each gateway's acknowledgement (after the commit that it
/// reports). A failure is only logged: the next commit of that gateway, or
/// its replay of the batches (which stores nothing twice), publishes again.
async fn publish_acks(client: &Client, acks: Vec<(String, waterworks_wire::topic::Ack)>) {
    for (gw, ack) in acks {
        let Ok(id) = waterworks_wire::GatewayId::parse(&gw) else {
            continue;
        };
        if let Err(e) = client.publish_ack(topic::ack(&id), ack.encode()).await {
            tracing::debug!(error = %e, gateway = %gw, "ack not published");
            return;
        }
        metrics::counter!("ingest_acks_published_total").increment(1);
    }
}

/// Most gateways given their own Prometheus series; later ones are counted
/// in `ingest_gateway_series_refused_total` only (cardinality bound: a
/// gateway id comes from the topic, and a broken or hostile publisher could
/// invent ids; the broker's ACL already limits ids to provisioned users).
pub const MAX_GATEWAY_SERIES: usize = 2000;

static GATEWAY_SERIES: std::sync::Mutex<Option<std::collections::HashSet<String>>> =
    std::sync::Mutex::new(None);

/// Whether `gw` may have its own series (it has one, or there is room).
fn gateway_series(gw: &str) -> bool {
    let mut g = GATEWAY_SERIES.lock().expect("series lock");
    let set = g.get_or_insert_with(Default::default);
    if set.contains(gw) {
        return true;
    }
    if set.len() >= MAX_GATEWAY_SERIES {
        metrics::counter!("ingest_gateway_series_refused_total").increment(1);
        return false;
    }
    set.insert(gw.to_string());
    true
}

/// After a commit: per gateway, the batch it acknowledged up to
/// contiguously, when its last batch was committed (the age is
/// `time() - ingest_gateway_last_commit_timestamp_seconds`), and its
/// status from the retained status topic (1 online, 0 offline); and the
/// consumer lag (oldest message of the batch, received to committed).
fn gateway_metrics(input: &BatchInput, acks: &[(String, waterworks_wire::topic::Ack)]) {
    let now = Utc::now();
    if let Some(oldest) = input.metas.iter().map(|m| m.received_at).min() {
        let lag = (now - oldest).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::gauge!("ingest_consumer_lag_seconds").set(lag);
        metrics::histogram!("ingest_consumer_lag_seconds_hist").record(lag);
    }
    for (gw, ack) in acks {
        if gateway_series(gw) {
            metrics::gauge!("ingest_gateway_acked_batch_seq", "gateway" => gw.clone())
                .set(ack.batch_seq as f64);
            metrics::gauge!("ingest_gateway_last_commit_timestamp_seconds", "gateway" => gw.clone())
                .set(now.timestamp() as f64);
        }
    }
    for (gw, status, _) in &input.statuses {
        if gateway_series(gw) {
            let v = if status == topic::STATUS_ONLINE {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("ingest_gateway_online", "gateway" => gw.clone()).set(v);
        }
    }
}

async fn ack_all(client: &Client, messages: &[Message]) {
    for p in messages {
        if let Err(e) = client.ack(p).await {
            // The event loop is gone (shutdown): the broker redelivers, and
            // the readings are already stored, so the replay changes nothing.
            tracing::debug!(error = %e, "ack not sent");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_keeps_one_lane_for_readings_and_status() {
        for gw in ["gw-1", "gw-2", "north-17", "x"] {
            for lanes in 1..5 {
                let r = lane_of(&format!("waterworks/v1/{gw}/readings"), lanes);
                let s = lane_of(&format!("waterworks/v1/{gw}/status"), lanes);
                assert_eq!(r, s);
                assert!(r < lanes);
            }
        }
        assert_eq!(lane_of("junk", 2), lane_of("junk", 2));
    }
}
