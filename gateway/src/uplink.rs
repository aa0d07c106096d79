//! The MQTT uplink: sends spooled batches in order, and lets them leave the
//! spool only once ingest has committed them (or, with `uplink.ack =
//! "broker"`, once the broker has PUBACKed them).
//!
//! Each connection is a fresh rumqttc client whose event loop this task drives
//! itself. Publishes are matched to their packet ids through the
//! `Outgoing::Publish` events (emitted in request order). The broker's PUBACK
//! moves the in-flight window (`uplink.max_inflight`, which also rate-limits
//! the replay of a backlog while new rounds keep being spooled).
//!
//! End-to-end delivery (`ack = "ingest"`, the default): the uplink subscribes
//! to its own `waterworks/v1/{gateway_id}/ack` (retained, QoS 1), where
//! ingest publishes, after each commit, which of this gateway's batches it has
//! committed ([`waterworks_wire::topic::Ack`]). The spool's done mark moves
//! over the acknowledged batches only; a broker that PUBACKed a batch and then
//! lost it (killed before its autosave, `max_queued_bytes` reached, an ACL
//! refusal) costs nothing: when no acknowledgement covers the oldest batch
//! sent for `uplink.ack_timeout_s`, every unacknowledged batch is sent again
//! in order (ingest stores nothing twice). The timeout doubles on each replay
//! that brings no progress, up to [`REPLAY_MAX`], so a long ingest outage does
//! not flood the broker with copies; it falls back on the next progress.
//! An ack naming a batch above the last one spooled is ignored (it belongs to
//! an earlier sequence of this gateway id, before its spool was replaced).
//! When the connection fails, everything unacknowledged is resent in order on
//! the next one.
//!
//! Status: retained `online` after each CONNACK, `offline` as the last will and,
//! on a clean shutdown, published before DISCONNECT (the broker does not send a
//! will after a clean disconnect). Unacknowledged batches and the age of the
//! oldest are in `gateway_spool_pending_batches`,
//! `gateway_uplink_oldest_unacked_age_seconds` and [`Progress`].

use crate::config::{parse_uplink_url, AckMode, UplinkConfig, UplinkUrl};
use crate::spool::Spool;
use crate::Progress;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use waterworks_wire::topic::Ack;
use waterworks_wire::{topic, GatewayId};

/// First pause after a failed connection; doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for the spool to drain before keeping the rest on disk.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for ingest's acknowledgement between two replays.
pub const REPLAY_MAX: Duration = Duration::from_secs(600);
/// Bound of the first-send times kept for the age of the oldest
/// unacknowledged batch (one entry per second of sending at most; when full,
/// newer sends join the last entry and the age reported is an upper bound).
pub const SENT_TIMES_MAX: usize = 65_536;
/// How often the unacknowledged age gauge is refreshed.
const AGE_TICK: Duration = Duration::from_secs(1);
/// Largest MQTT packet either way: a full batch and its header.
pub const MAX_PACKET_BYTES: usize = waterworks_wire::reading::MAX_PAYLOAD_BYTES + 4096;

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink url: {0}")]
    Url(String),
    #[error("uplink TLS CA file {path}: {message}")]
    TlsCa { path: String, message: String },
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("spool task failed: {0}")]
    Join(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Status,
    Batch(u64),
}

pub(crate) struct Uplink {
    pub config: UplinkConfig,
    pub gateway_id: GatewayId,
    pub spool: Arc<Mutex<Spool>>,
    pub spooled: Arc<Notify>,
    pub progress: watch::Sender<Progress>,
    /// Cancelled when the poller has stopped: flush what is left, then leave.
    pub poller_stopped: CancellationToken,
}

/// What the uplink knows about batches sent and not yet acknowledged by
/// ingest; survives reconnects (not restarts: after a restart the batches in
/// the spool count as sent at start).
struct Tracker {
    /// The current wait before a replay.
    replay_after: Duration,
    /// When the unacknowledged batches are sent again.
    replay_at: Option<tokio::time::Instant>,
    /// `(highest batch sent, when first sent)`, ascending.
    sent_times: VecDeque<(u64, std::time::Instant)>,
    /// Highest batch ever sent by this process.
    max_sent: u64,
}

impl Tracker {
    fn record_send(&mut self, seq: u64) {
        if seq <= self.max_sent {
            return;
        }
        self.max_sent = seq;
        let now = std::time::Instant::now();
        let full = self.sent_times.len() >= SENT_TIMES_MAX;
        match self.sent_times.back_mut() {
            Some(last) if full || now.duration_since(last.1) < Duration::from_secs(1) => {
                last.0 = seq
            }
            _ => self.sent_times.push_back((seq, now)),
        }
    }

    /// Age of the oldest batch sent and not acknowledged (`done`: the spool's done mark).
    fn oldest_unacked_age(&mut self, done: u64) -> Duration {
        while self.sent_times.front().is_some_and(|f| f.0 <= done) {
            self.sent_times.pop_front();
        }
        self.sent_times
            .front()
            .map_or(Duration::ZERO, |f| f.1.elapsed())
    }
}

enum SessionEnd {
    /// The connection failed; retry after a pause. `was_up`: it had been
    /// connected, so the pause starts again from the shortest.
    Failed { was_up: bool },
    /// Shutdown: flushed or timed out.
    Done,
}

impl Uplink {
    pub async fn run(self) -> Result<(), UplinkError> {
        let url = parse_uplink_url(&self.config.url).map_err(UplinkError::Url)?;
        let tls_ca = match (&self.config.tls_ca_file, url.tls) {
            (Some(path), true) => Some(std::fs::read(path).map_err(|e| UplinkError::TlsCa {
                path: path.display().to_string(),
                message: e.to_string(),
            })?),
            _ => None,
        };
        let mut pause = RECONNECT_MIN;
        let mut flush_deadline: Option<tokio::time::Instant> = None;
        let mut tracker = Tracker {
            replay_after: self.ack_timeout(),
            replay_at: None,
            sent_times: VecDeque::new(),
            max_sent: 0,
        };
        {
            // Batches left in the spool by the last run count as sent now.
            let s = self.spool.lock().expect("spool lock");
            if s.pending_batches() > 0 {
                tracker
                    .sent_times
                    .push_back((s.last_seq(), std::time::Instant::now()));
            }
        }
        metrics::gauge!("gateway_uplink_connected").set(0.0);
        loop {
            match self
                .session(&url, tls_ca.as_deref(), &mut flush_deadline, &mut tracker)
                .await?
            {
                SessionEnd::Done => break,
                SessionEnd::Failed { was_up } => {
                    metrics::gauge!("gateway_uplink_connected").set(0.0);
                    metrics::counter!("gateway_uplink_disconnects_total").increment(1);
                    if was_up {
                        pause = RECONNECT_MIN;
                    }
                    let wait = tokio::time::sleep(pause);
                    pause = (pause * 2).min(RECONNECT_MAX);
                    tokio::select! {
                        _ = wait => {}
                        _ = self.poller_stopped.cancelled(), if flush_deadline.is_none() => {
                            flush_deadline = Some(tokio::time::Instant::now() + FLUSH_TIMEOUT);
                        }
                        _ = sleep_until_opt(flush_deadline) => {}
                    }
                    if flush_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        tracing::warn!(
                            pending = self.pending(),
                            "uplink down at shutdown; batches stay in the spool"
                        );
                        break;
                    }
                }
            }
        }
        metrics::gauge!("gateway_uplink_connected").set(0.0);
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.lock().expect("spool lock").persist_state())
            .await
            .map_err(|e| UplinkError::Join(e.to_string()))??;
        Ok(())
    }

    fn ack_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.ack_timeout_s.max(1))).min(REPLAY_MAX)
    }

    fn end_to_end(&self) -> bool {
        self.config.ack == AckMode::Ingest
    }

    fn pending(&self) -> u64 {
        self.spool.lock().expect("spool lock").pending_batches()
    }

    fn options(&self, url: &UplinkUrl, tls_ca: Option<&[u8]>) -> MqttOptions {
        let (host, port) = (url.host.as_str(), url.port);
        let client_id = self
            .config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("waterworks-gw-{}", self.gateway_id));
        let mut o = MqttOptions::new(client_id, host, port);
        o.set_keep_alive(Duration::from_secs(u64::from(self.config.keep_alive_s)));
        o.set_inflight(self.config.max_inflight);
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        o.set_last_will(LastWill::new(
            topic::status(&self.gateway_id),
            topic::STATUS_OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
        if url.tls {
            install_crypto_provider();
            o.set_transport(match tls_ca {
                Some(ca) => rumqttc::Transport::tls(ca.to_vec(), None, None),
                None => rumqttc::Transport::tls_with_default_config(),
            });
        }
        if let Some(u) = &self.config.username {
            o.set_credentials(
                u.clone(),
                self.config
                    .password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            );
        }
        o
    }

    async fn session(
        &self,
        url: &UplinkUrl,
        tls_ca: Option<&[u8]>,
        flush_deadline: &mut Option<tokio::time::Instant>,
        tracker: &mut Tracker,
    ) -> Result<SessionEnd, UplinkError> {
        let window = usize::from(self.config.max_inflight);
        let (client, mut events) = AsyncClient::new(self.options(url, tls_ca), window + 8);
        let readings_topic = topic::readings(&self.gateway_id);
        let status_topic = topic::status(&self.gateway_id);
        let ack_topic = topic::ack(&self.gateway_id);
        let mut age_tick = tokio::time::interval(AGE_TICK);
        age_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Publishes in the order handed to the client, with their packet id once known.
        let mut sent: VecDeque<(Sent, Option<u16>)> = VecDeque::new();
        // Highest batch handed to this connection.
        let mut cursor = self.spool.lock().expect("spool lock").done_seq();
        let mut connected = false;
        let mut closing = false;
        loop {
            if connected && !closing {
                // Fill the window in order.
                let in_flight = sent
                    .iter()
                    .filter(|(s, _)| matches!(s, Sent::Batch(_)))
                    .count();
                let mut room = window.saturating_sub(in_flight);
                while room > 0 {
                    let next = {
                        let spool = self.spool.lock().expect("spool lock");
                        match spool.next_pending_after(cursor) {
                            Some(seq) => spool.read(seq)?.map(|p| (seq, p)),
                            None => None,
                        }
                    };
                    let Some((seq, payload)) = next else { break };
                    if client
                        .try_publish(&readings_topic, QoS::AtLeastOnce, false, payload)
                        .is_err()
                    {
                        break;
                    }
                    sent.push_back((Sent::Batch(seq), None));
                    tracker.record_send(seq);
                    cursor = seq;
                    room -= 1;
                }
                if flush_deadline.is_some() && sent.is_empty() && self.pending() == 0 {
                    closing = true;
                    self.say_offline_and_disconnect(&client, &status_topic);
                }
            }
            if let Some(d) = *flush_deadline {
                if tokio::time::Instant::now() >= d && !closing {
                    tracing::warn!(
                        pending = self.pending(),
                        "flush timed out at shutdown; the rest stays in the spool"
                    );
                    closing = true;
                    self.say_offline_and_disconnect(&client, &status_topic);
                }
            }
            let deadline = flush_deadline.map(|d| d + Duration::from_secs(1));
            tokio::select! {
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(broker = %self.config.url, "uplink connected");
                        metrics::gauge!("gateway_uplink_connected").set(1.0);
                        connected = true;
                        if self.end_to_end() {
                            if let Err(e) = client.try_subscribe(&ack_topic, QoS::AtLeastOnce) {
                                tracing::error!(error = %e, topic = %ack_topic, "cannot subscribe to ingest's acks");
                            }
                        }
                        if client
                            .try_publish(&status_topic, QoS::AtLeastOnce, true, topic::STATUS_ONLINE)
                            .is_ok()
                        {
                            sent.push_back((Sent::Status, None));
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(slot) = sent.iter_mut().find(|(_, p)| p.is_none()) {
                            slot.1 = Some(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(i) = sent.iter().position(|(_, p)| *p == Some(ack.pkid)) {
                            let (what, _) = sent.remove(i).expect("found");
                            if !self.end_to_end() {
                                let oldest_unacked = sent.iter().find_map(|(s, _)| match s {
                                    Sent::Batch(seq) => Some(*seq),
                                    Sent::Status => None,
                                });
                                let through = oldest_unacked.map_or(cursor, |s| s - 1);
                                self.ack_through(through).await?;
                            } else if matches!(what, Sent::Batch(_)) && tracker.replay_at.is_none() {
                                // The broker has it; ingest's ack is due within the timeout.
                                tracker.replay_at = Some(tokio::time::Instant::now() + tracker.replay_after);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if self.end_to_end() && p.topic == ack_topic => {
                        match Ack::decode(&p.payload) {
                            Ok(ack) => {
                                if let Some(done) = self.ingest_ack(ack).await? {
                                    cursor = cursor.max(done);
                                    tracker.replay_after = self.ack_timeout();
                                    tracker.replay_at = (self.pending() > 0 && cursor > done)
                                        .then(|| tokio::time::Instant::now() + tracker.replay_after);
                                    let age = tracker.oldest_unacked_age(done);
                                    self.publish_age(age);
                                }
                            }
                            Err(e) => {
                                metrics::counter!("gateway_uplink_acks_ignored_total").increment(1);
                                tracing::warn!(error = %e, "unreadable ack from ingest; ignored");
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) if closing => {
                        return Ok(SessionEnd::Done);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if closing {
                            return Ok(SessionEnd::Done);
                        }
                        tracing::warn!(broker = %self.config.url, error = %e, unacked = sent.len(),
                            "uplink connection failed; unacknowledged batches will be resent");
                        return Ok(SessionEnd::Failed { was_up: connected });
                    }
                },
                _ = self.spooled.notified(), if !closing => {}
                _ = sleep_until_opt(tracker.replay_at), if connected && !closing => {
                    tracker.replay_at = None;
                    let (done, pending) = {
                        let s = self.spool.lock().expect("spool lock");
                        (s.done_seq(), s.pending_batches())
                    };
                    if pending > 0 && cursor > done {
                        let age = tracker.oldest_unacked_age(done);
                        tracing::warn!(pending, done_seq = done, sent_through = cursor,
                            waited_s = tracker.replay_after.as_secs(), oldest_unacked_s = age.as_secs(),
                            "ingest has not acknowledged the batches the broker accepted; sending them again");
                        metrics::counter!("gateway_uplink_replays_total").increment(1);
                        cursor = done;
                        tracker.replay_after = (tracker.replay_after * 2).min(REPLAY_MAX);
                    }
                }
                _ = age_tick.tick(), if self.end_to_end() => {
                    let done = self.spool.lock().expect("spool lock").done_seq();
                    let age = tracker.oldest_unacked_age(done);
                    self.publish_age(age);
                }
                _ = self.poller_stopped.cancelled(), if flush_deadline.is_none() => {
                    *flush_deadline = Some(tokio::time::Instant::now() + FLUSH_TIMEOUT);
                }
                _ = sleep_until_opt(deadline) => {
                    return Ok(SessionEnd::Done);
                }
            }
        }
    }

    fn say_offline_and_disconnect(&self, client: &AsyncClient, status_topic: &str) {
        let _ = client.try_publish(status_topic, QoS::AtMostOnce, true, topic::STATUS_OFFLINE);
        let _ = client.try_disconnect();
    }

    /// Moves the spool's done mark over the batches `ack` covers; returns
    /// the new mark if it moved.
    async fn ingest_ack(&self, ack: Ack) -> Result<Option<u64>, UplinkError> {
        let (done, last) = {
            let s = self.spool.lock().expect("spool lock");
            (s.done_seq(), s.last_seq())
        };
        if ack.highest() > last {
            metrics::counter!("gateway_uplink_acks_ignored_total").increment(1);
            tracing::warn!(ack_highest = ack.highest(), last_spooled = last,
                "ack names batches this gateway never spooled (an earlier spool of this id?); ignored");
            return Ok(None);
        }
        let through = ack.advance(done, last);
        if through <= done {
            return Ok(None);
        }
        self.ack_through(through).await?;
        Ok(Some(through))
    }

    fn publish_age(&self, age: Duration) {
        metrics::gauge!("gateway_uplink_oldest_unacked_age_seconds").set(age.as_secs_f64());
        let secs = age.as_secs();
        self.progress.send_if_modified(|p| {
            let changed = p.oldest_unacked_age_s != secs;
            p.oldest_unacked_age_s = secs;
            changed
        });
    }

    async fn ack_through(&self, seq: u64) -> Result<(), UplinkError> {
        let spool = self.spool.clone();
        let (done, pending) = tokio::task::spawn_blocking(move || {
            let mut s = spool.lock().expect("spool lock");
            s.ack_through(seq)
                .map(|()| (s.done_seq(), s.pending_batches()))
        })
        .await
        .map_err(|e| UplinkError::Join(e.to_string()))??;
        metrics::gauge!("gateway_spool_pending_batches").set(pending as f64);
        let before = self.progress.borrow().acked_seq;
        metrics::counter!("gateway_uplink_batches_acked_total")
            .increment(done.saturating_sub(before));
        // Publish under the spool's lock, from its state now (the poller may
        // have spooled more since); see Spooler::write.
        let s = self.spool.lock().expect("spool lock");
        let (done, pending) = (s.done_seq().max(done), s.pending_batches());
        self.progress.send_if_modified(|p| {
            let changed = p.acked_seq != done || p.pending_batches != pending;
            p.acked_seq = done;
            p.pending_batches = pending;
            changed
        });
        drop(s);
        Ok(())
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// rumqttc builds its TLS configuration from rustls' process-wide crypto
/// provider, which rustls picks by itself only when exactly one is compiled
/// in; a binary that also links ring (the console's HTTP client) has two. The
/// uplink installs aws-lc-rs (the one sqlx uses) unless a provider is already
/// installed.
pub fn install_crypto_provider() {
    use rumqttc::tokio_rustls::rustls::crypto::{aws_lc_rs, CryptoProvider};
    if CryptoProvider::get_default().is_none() {
        // Losing the race to another thread's install is fine: one is set.
        let _ = aws_lc_rs::default_provider().install_default();
    }
}
