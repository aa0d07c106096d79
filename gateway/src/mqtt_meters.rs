//! MQTT-native meters: meters with their own radio that publish their
//! readings to a (local) broker instead of being polled.
//!
//! Meters sharing a broker and a topic filter form one *source*: one MQTT
//! connection (client id [`Source::client_id`], persistent session, QoS 1
//! subscription, manual acknowledgements). Each message is
//! mapped to a [`Reading`] by JSON pointers ([`map_message`]); the readings go
//! through the same spool and uplink as polled ones. A message is
//! acknowledged to the meters' broker only after its reading is in the spool
//! (fsync), so a gateway that dies in between gets it again from the broker
//! (persistent session) instead of losing it.
//!
//! Bounds: a source buffers at most `uplink.batch_max_readings` messages, for
//! at most [`LINGER`] of real time and no longer than a pause of
//! [`IDLE_FLUSH`] in the messages, before it spools them as one batch
//! and acknowledges them (in the order received, as MQTT requires); while it
//! writes, it reads nothing more, so the broker holds the rest. A message over
//! [`MAX_MESSAGE_BYTES`] or one that does not map (bad JSON, a missing or
//! malformed field, a meter this source does not serve) is counted in
//! `gateway_mqtt_messages_total{outcome}`, logged with its reason (at most one
//! line per [`BAD_LOG_INTERVAL`] per source, with the number left unlogged)
//! and acknowledged: it would be just as wrong next time. A reading equal in
//! meter and timestamp to one of the meter's last [`RECENT_TS_PER_METER`]
//! (a redelivery) is dropped as a duplicate.
//!
//! Acknowledgements reach rumqttc's event loop through its request channel,
//! which it reads one request per turn while it reads up to ten packets per
//! turn from the network; under a flood (a broker resending a backlog, which
//! Mosquitto does without its in-flight window) they queue in order in the
//! source, up to [`MAX_UNSENT_ACK_BUFFERS`] buffers; past that the connection
//! is dropped and opened again, and the broker resends what was not
//! acknowledged (already spooled: dropped as duplicates).

use crate::config::{parse_uplink_url, GatewayConfig, JsonMapping, Transport};
use crate::poll::MAX_PLAUSIBLE_VOLUME_L;
use crate::{GatewayError, Spooler};
use chrono::{DateTime, Timelike, Utc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use rust_decimal::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use waterworks_wire::{Alarm, MeterId, Reading};

/// Largest message accepted from a meter; a larger one is refused as bad.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest MQTT packet the connection reads at all (above it the connection
/// fails; Mosquitto's `message_size_limit` should be set below it).
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Longest real time a received reading waits for others before its batch is spooled.
pub const LINGER: Duration = Duration::from_millis(200);
/// A pause this long in the messages spools what was received at once: the
/// broker sends only its window of unacknowledged messages (Mosquitto's
/// `max_inflight_messages`, 20 by default) and then waits for our acks.
pub const IDLE_FLUSH: Duration = Duration::from_millis(5);
/// At most one log line about bad messages per source in this time.
pub const BAD_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before reconnecting to the meters' broker; doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Acknowledgements waiting for the event loop, in buffers' worth
/// (`batch_max_readings` each), before the connection is dropped and started
/// again (the broker then resends what was not acknowledged).
pub const MAX_UNSENT_ACK_BUFFERS: usize = 16;
/// Timestamps remembered per meter to drop redelivered readings.
pub const RECENT_TS_PER_METER: usize = 8;
/// How long a stopping source waits for its last acknowledgements to leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a message did not become a reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("message is {0} bytes; at most {MAX_MESSAGE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not JSON: {0}")]
    Json(String),
    #[error("{what} (`{pointer}`) is missing")]
    Missing { what: &'static str, pointer: String },
    #[error("{what} (`{pointer}`): {message}")]
    Invalid {
        what: &'static str,
        pointer: String,
        message: String,
    },
    #[error("meter {0} is not configured on this gateway for this topic")]
    UnknownMeter(String),
}

impl MapError {
    /// The `outcome` label of `gateway_mqtt_messages_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            MapError::UnknownMeter(_) => "unknown_meter",
            _ => "bad",
        }
    }
}

/// Maps one message to a reading by `mapping`; `meters` are the meters the
/// source serves (`None`: any).
pub fn map_message(
    mapping: &JsonMapping,
    meters: Option<&HashSet<MeterId>>,
    payload: &[u8],
) -> Result<Reading, MapError> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(MapError::TooLarge(payload.len()));
    }
    let doc: Value = serde_json::from_slice(payload).map_err(|e| MapError::Json(e.to_string()))?;
    let get = |pointer: &str| doc.pointer(pointer).filter(|v| !v.is_null());
    let required = |what: &'static str, pointer: &str| -> Result<&Value, MapError> {
        get(pointer).ok_or_else(|| MapError::Missing {
            what,
            pointer: pointer.to_string(),
        })
    };
    let invalid = |what: &'static str, pointer: &str, message: String| MapError::Invalid {
        what,
        pointer: pointer.to_string(),
        message,
    };

    let p = &mapping.meter_id;
    let id = required("meter id", p)?
        .as_str()
        .ok_or_else(|| invalid("meter id", p, "not a string".into()))?;
    let meter_id = MeterId::parse(id).map_err(|e| invalid("meter id", p, e.to_string()))?;
    if meters.is_some_and(|m| !m.contains(&meter_id)) {
        return Err(MapError::UnknownMeter(meter_id.to_string()));
    }

    let p = &mapping.ts;
    let ts = parse_ts(required("timestamp", p)?).map_err(|m| invalid("timestamp", p, m))?;

    let p = &mapping.volume;
    let volume = number(required("volume", p)?).map_err(|m| invalid("volume", p, m))?;
    let volume = volume
        .checked_mul(mapping.volume_scale)
        .and_then(|v| v.checked_mul(mapping.volume_unit.to_base()))
        .ok_or_else(|| invalid("volume", p, "out of range".into()))?;
    if volume < Decimal::ZERO {
        return Err(invalid(
            "volume",
            p,
            format!("{volume} L is negative; a totalizer cannot be"),
        ));
    }
    // Floored, as a register read: never claim water that has not passed.
    let volume_l = volume
        .floor()
        .to_u64()
        .filter(|v| *v <= MAX_PLAUSIBLE_VOLUME_L)
        .ok_or_else(|| {
            invalid(
                "volume",
                p,
                format!("{volume} L is above {MAX_PLAUSIBLE_VOLUME_L} L"),
            )
        })?;

    let flow_lph = match &mapping.flow {
        Some(p) => match get(p) {
            Some(v) => {
                let raw = number(v).map_err(|m| invalid("flow", p, m))?;
                let f = raw
                    .checked_mul(mapping.flow_scale)
                    .and_then(|v| v.checked_mul(mapping.flow_unit.to_base()))
                    .and_then(|v| v.to_f64())
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| invalid("flow", p, "out of range".into()))?;
                Some(f)
            }
            None => None,
        },
        None => None,
    };

    let mut alarms = Vec::new();
    if let Some(p) = &mapping.alarms {
        if let Some(v) = get(p) {
            let items = v
                .as_array()
                .ok_or_else(|| invalid("alarms", p, "not an array of alarm names".into()))?;
            for item in items {
                let name = item
                    .as_str()
                    .ok_or_else(|| invalid("alarms", p, format!("{item} is not a name")))?;
                if let Some(a) = Alarm::parse(name) {
                    alarms.push(a);
                }
            }
            alarms.sort();
            alarms.dedup();
        }
    }
    Ok(Reading {
        meter_id,
        ts,
        volume_l,
        flow_lph,
        alarms,
    })
}

/// An RFC 3339 string or seconds since 1970, truncated to whole seconds.
fn parse_ts(v: &Value) -> Result<DateTime<Utc>, String> {
    let ts = match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("{s:?} is not RFC 3339: {e}"))?,
        Value::Number(n) => {
            let secs = n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite())
                        .map(|f| f.floor() as i64)
                })
                .ok_or_else(|| format!("{n} is not a number of seconds"))?;
            DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("{secs} s is out of range"))?
        }
        other => {
            return Err(format!(
                "{other} is neither RFC 3339 nor seconds since 1970"
            ))
        }
    };
    Ok(ts.with_nanosecond(0).unwrap_or(ts))
}

/// A JSON number or a decimal string, exactly.
fn number(v: &Value) -> Result<Decimal, String> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Decimal::from(u))
            } else if let Some(i) = n.as_i64() {
                Ok(Decimal::from(i))
            } else {
                // Through its shortest decimal text, so 0.1 stays 0.1.
                let text = n.to_string();
                Decimal::from_str(&text)
                    .or_else(|_| Decimal::from_scientific(&text))
                    .map_err(|_| format!("{n} is out of range"))
            }
        }
        Value::String(s) => Decimal::from_str(s.trim())
            .or_else(|_| Decimal::from_scientific(s.trim()))
            .map_err(|_| format!("{s:?} is not a number")),
        other => Err(format!("{other} is not a number")),
    }
}

/// The last few timestamps of each meter: a reading seen again (the broker
/// redelivers what was spooled but not yet acknowledged when a connection
/// drops) is dropped instead of spooled twice.
#[derive(Default)]
struct RecentReadings {
    by_meter: HashMap<MeterId, VecDeque<DateTime<Utc>>>,
}

impl RecentReadings {
    /// Whether (meter, ts) was seen lately; remembers it if not.
    fn seen(&mut self, meter: &MeterId, ts: DateTime<Utc>) -> bool {
        let recent = self.by_meter.entry(meter.clone()).or_default();
        if recent.contains(&ts) {
            return true;
        }
        if recent.len() == RECENT_TS_PER_METER {
            recent.pop_front();
        }
        recent.push_back(ts);
        false
    }
}

/// Meters sharing one broker and topic filter: one subscription.
#[derive(Debug, Clone)]
pub struct Source {
    pub index: usize,
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub mapping: JsonMapping,
    pub meters: HashSet<MeterId>,
}

impl Source {
    /// The MQTT client id of this source's persistent session:
    /// `waterworks-gw-{gateway_id}-mqtt-{crc32 of broker and topic, hex}`, so
    /// it stays the same when the config's meters are reordered (a new id
    /// would strand what the broker queued for the old one).
    pub fn client_id(&self, gateway_id: &waterworks_wire::GatewayId) -> String {
        let key = format!("{}:{} {}", self.host, self.port, self.topic);
        format!(
            "waterworks-gw-{gateway_id}-mqtt-{:08x}",
            crc32fast::hash(key.as_bytes())
        )
    }
}

/// The sources of a (validated) config, in the order of their first meter.
pub fn sources(config: &GatewayConfig) -> Result<Vec<Source>, String> {
    let mut out: Vec<Source> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for m in &config.meters {
        let Transport::Mqtt(mq) = &m.transport else {
            continue;
        };
        let i = match by_key.get(&m.transport.link_key()) {
            Some(i) => *i,
            None => {
                let url = parse_uplink_url(&mq.broker)?;
                out.push(Source {
                    index: out.len(),
                    host: url.host,
                    port: url.port,
                    topic: mq.topic.clone(),
                    mapping: mq.mapping.clone(),
                    meters: HashSet::new(),
                });
                by_key.insert(m.transport.link_key(), out.len() - 1);
                out.len() - 1
            }
        };
        out[i].meters.insert(m.meter_id.clone());
    }
    Ok(out)
}

/// Logs bad messages at most once per [`BAD_LOG_INTERVAL`].
struct BadLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl BadLog {
    fn note(&mut self, source: &Source, topic: &str, e: &MapError) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < BAD_LOG_INTERVAL) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(source = source.index, subscription = %source.topic, topic, reason = %e,
            unlogged_since_last = self.suppressed, "MQTT meter message refused");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

enum SessionEnd {
    Failed { was_up: bool },
    Done,
}

/// Runs one source until `shutdown`; fails only when the spool does.
pub(crate) async fn run_source(
    source: Source,
    client_id: String,
    spooler: Arc<Spooler>,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let mut pause = RECONNECT_MIN;
    let mut recent = RecentReadings::default();
    let mut bad_log = BadLog {
        last: None,
        suppressed: 0,
    };
    tracing::info!(source = source.index, broker = %format!("{}:{}", source.host, source.port),
        topic = %source.topic, meters = source.meters.len(), "MQTT meter source starting");
    loop {
        let end = session(
            &source,
            &client_id,
            &spooler,
            &mut recent,
            &mut bad_log,
            &shutdown,
        )
        .await?;
        match end {
            SessionEnd::Done => return Ok(()),
            SessionEnd::Failed { was_up } => {
                if was_up {
                    pause = RECONNECT_MIN;
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                pause = (pause * 2).min(RECONNECT_MAX);
            }
        }
    }
}

async fn session(
    source: &Source,
    client_id: &str,
    spooler: &Spooler,
    recent: &mut RecentReadings,
    bad_log: &mut BadLog,
    shutdown: &CancellationToken,
) -> Result<SessionEnd, GatewayError> {
    let max_buffered = spooler.batch_max_readings();
    let mut o = MqttOptions::new(client_id, &source.host, source.port);
    o.set_keep_alive(Duration::from_secs(30));
    // A persistent session: what arrives while the gateway is away waits in
    // the broker, and what was not acknowledged is delivered again.
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    // The client's request channel carries our acknowledgements to the event
    // loop, which takes them only between the network reads it is also
    // doing: acknowledgements wait in `unsent` (in order) for room in it.
    let (client, mut events) = AsyncClient::new(o, max_buffered + 16);
    let max_unsent = MAX_UNSENT_ACK_BUFFERS * max_buffered;
    let mut readings: Vec<Reading> = Vec::with_capacity(max_buffered.min(1024));
    let mut acks: Vec<Publish> = Vec::new();
    let mut unsent: VecDeque<Publish> = VecDeque::new();
    let mut first_at: Option<Instant> = None;
    let mut last_at = Instant::now();
    let mut was_up = false;
    loop {
        while let Some(p) = unsent.front() {
            if client.try_ack(p).is_err() {
                break;
            }
            unsent.pop_front();
        }
        if unsent.len() > max_unsent {
            tracing::warn!(source = source.index, unsent = unsent.len(),
                "MQTT meter source: acknowledgements are not leaving (a broker without an in-flight window?); reconnecting, the broker resends");
            return Ok(SessionEnd::Failed { was_up });
        }
        let linger = first_at.map(|t| (t + LINGER).min(last_at + IDLE_FLUSH));
        let flush_now = tokio::select! {
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    was_up = true;
                    tracing::info!(source = source.index, topic = %source.topic, "MQTT meter source connected");
                    if let Err(e) = client.try_subscribe(&source.topic, QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "cannot subscribe; reconnecting");
                        return Ok(SessionEnd::Failed { was_up });
                    }
                    false
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                        tracing::error!(source = source.index, topic = %source.topic,
                            "the meters' broker refused the subscription (ACL?); MQTT meters of this source are not read");
                    }
                    false
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let outcome = match map_message(&source.mapping, Some(&source.meters), &p.payload) {
                        Ok(r) => {
                            if recent.seen(&r.meter_id, r.ts) {
                                "duplicate"
                            } else {
                                readings.push(r);
                                "ok"
                            }
                        }
                        Err(e) => {
                            bad_log.note(source, &p.topic, &e);
                            e.outcome()
                        }
                    };
                    metrics::counter!("gateway_mqtt_messages_total", "outcome" => outcome).increment(1);
                    acks.push(p);
                    last_at = Instant::now();
                    first_at.get_or_insert(last_at);
                    acks.len() >= max_buffered
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(source = source.index, error = %e, buffered = readings.len(),
                        "MQTT meter source: connection failed; reconnecting");
                    // Keep what was received (the broker may send it again: the
                    // duplicate check and ingest's idempotence absorb that).
                    spooler.write(std::mem::take(&mut readings)).await?;
                    return Ok(SessionEnd::Failed { was_up });
                }
            },
            _ = sleep_until_opt(linger) => true,
            _ = shutdown.cancelled() => {
                spooler.write(std::mem::take(&mut readings)).await?;
                unsent.extend(acks.drain(..));
                // Best effort: what is not acknowledged comes again next time.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    loop {
                        while let Some(p) = unsent.front() {
                            if client.try_ack(p).is_err() {
                                break;
                            }
                            unsent.pop_front();
                        }
                        if unsent.is_empty() && client.try_disconnect().is_ok() {
                            break;
                        }
                        if events.poll().await.is_err() {
                            break;
                        }
                    }
                    loop {
                        match events.poll().await {
                            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                return Ok(SessionEnd::Done);
            }
        };
        if flush_now {
            spooler.write(std::mem::take(&mut readings)).await?;
            first_at = None;
            unsent.extend(acks.drain(..));
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> JsonMapping {
        JsonMapping::default()
    }

    #[test]
    fn maps_the_simulators_reading() {
        let msg = br#"{"meter_id":"m-1","ts":"2026-10-01T00:15:00Z","volume_l":1234567,"flow_lph":12.5,"alarms":["leak","nope"]}"#;
        let r = map_message(&mapping(), None, msg).unwrap();
        assert_eq!(r.meter_id.as_str(), "m-1");
        assert_eq!(r.ts.to_rfc3339(), "2026-10-01T00:15:00+00:00");
        assert_eq!(r.volume_l, 1_234_567);
        assert_eq!(r.flow_lph, Some(12.5));
        assert_eq!(r.alarms, vec![Alarm::Leak]);
    }

    #[test]
    fn maps_nested_pointers_units_and_scales() {
        let m = JsonMapping {
            meter_id: "/dev/id".into(),
            ts: "/t".into(),
            volume: "/data/0/total".into(),
            volume_unit: waterworks_wire::profile::Unit::CubicMetre,
            volume_scale: Decimal::new(1, 3),
            flow: Some("/data/0/q".into()),
            flow_unit: waterworks_wire::profile::Unit::CubicMetrePerHour,
            flow_scale: Decimal::ONE,
            alarms: None,
        };
        // 1,234,567.9 m3 x 0.001 = 1,234.5679 m3 = 1,234,567.9 L, floored.
        let msg =
            br#"{"dev":{"id":"m-9"},"t":1790813700.75,"data":[{"total":"1234567.9","q":0.5}]}"#;
        let r = map_message(&m, None, msg).unwrap();
        assert_eq!(r.volume_l, 1_234_567);
        assert_eq!(r.flow_lph, Some(500.0));
        assert_eq!(r.ts.timestamp(), 1_790_813_700);
        assert!(r.alarms.is_empty());
    }

    #[test]
    fn bad_messages_say_why() {
        let m = mapping();
        let known: HashSet<MeterId> = [MeterId::parse("m-1").unwrap()].into();
        let cases: [(&[u8], &str); 8] = [
            (b"not json", "not JSON"),
            (br#"{"ts":"2026-10-01T00:00:00Z","volume_l":1}"#, "meter id"),
            (br#"{"meter_id":"m-1","volume_l":1}"#, "timestamp"),
            (
                br#"{"meter_id":"m-1","ts":"yesterday","volume_l":1}"#,
                "RFC 3339",
            ),
            (
                br#"{"meter_id":"m-1","ts":"2026-10-01T00:00:00Z"}"#,
                "volume",
            ),
            (
                br#"{"meter_id":"m-1","ts":"2026-10-01T00:00:00Z","volume_l":-5}"#,
                "negative",
            ),
            (
                br#"{"meter_id":"m-1","ts":"2026-10-01T00:00:00Z","volume_l":"x"}"#,
                "not a number",
            ),
            (
                br#"{"meter_id":"m-2","ts":"2026-10-01T00:00:00Z","volume_l":1}"#,
                "not configured",
            ),
        ];
        for (msg, want) in cases {
            let e = map_message(&m, Some(&known), msg).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            map_message(&m, None, &big),
            Err(MapError::TooLarge(_))
        ));
        let huge = br#"{"meter_id":"m-1","ts":"2026-10-01T00:00:00Z","volume_l":1e300}"#;
        assert!(map_message(&m, None, huge).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_payload(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = map_message(&JsonMapping::default(), None, &bytes);
        }

        #[test]
        fn never_panics_on_json_shapes(v in r#"\{"meter_id":("m-1"|1|null),"ts":("2026-10-01T00:00:00Z"|-1e30|9e18|"x"),"volume_l":(-1|0|1.5|"7"|1e19|\[\]),"alarms":(\[\]|\["leak"\]|7)\}"#) {
            let _ = map_message(&JsonMapping::default(), None, v.as_bytes());
        }
    }
}
