//! The readings batch of MQTT contract v1 (see `docs/mqtt-contract.md`).
//!
//! ```json
//! {"gateway_id": "gw-01", "batch_seq": 42, "readings": [{"meter_id": "m-0001",
//!  "ts": "2026-10-01T00:15:00Z", "volume_l": 1234567, "flow_lph": 12.5, "alarms": ["leak"]}]}
//! ```
//!
//! `volume_l` is the meter's totalizer in whole litres and is always an integer:
//! a float, a negative number or a string there is a decoding error, never a guess.
//! Decoding comes in two strengths: [`ReadingBatch::decode`] refuses the whole
//! batch on any fault (for producers checking themselves), and
//! [`ReadingBatch::decode_lenient`] keeps every good reading and hands back each
//! bad one with its raw JSON and reason (for ingest, whose quarantine keeps them).

use crate::ids::{GatewayId, MeterId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Most readings a batch may carry; a gateway splits larger rounds.
pub const MAX_READINGS_PER_BATCH: usize = 10_000;
/// Largest payload accepted, in bytes (about 100 bytes per reading).
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;

/// Alarm flags a meter raises. The wire names are stable (snake_case); the
/// HTTP APIs show the same names (`waterworks-api` re-exports this type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum Alarm {
    /// Flow never fell to zero for 24 hours.
    Leak,
    /// Flow above the meter's maximum.
    Burst,
    /// Water flowing back through the meter.
    Backflow,
    /// Magnet or opened cover detected.
    Tamper,
    LowBattery,
    /// No water in the pipe (ultrasonic and electromagnetic meters).
    EmptyPipe,
}

impl Alarm {
    pub const ALL: [Alarm; 6] = [
        Alarm::Leak,
        Alarm::Burst,
        Alarm::Backflow,
        Alarm::Tamper,
        Alarm::LowBattery,
        Alarm::EmptyPipe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Alarm::Leak => "leak",
            Alarm::Burst => "burst",
            Alarm::Backflow => "backflow",
            Alarm::Tamper => "tamper",
            Alarm::LowBattery => "low_battery",
            Alarm::EmptyPipe => "empty_pipe",
        }
    }

    pub fn parse(s: &str) -> Option<Alarm> {
        Alarm::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One read of one meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    pub meter_id: MeterId,
    /// When the register was read (UTC, whole seconds on the wire).
    #[serde(with = "ts_seconds")]
    pub ts: DateTime<Utc>,
    /// Totalizer in whole litres.
    pub volume_l: u64,
    /// Instantaneous flow in litres per hour, when the meter reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_lph: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<Alarm>,
}

/// A gateway's batch. `batch_seq` rises by one per batch and survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingBatch {
    pub gateway_id: GatewayId,
    pub batch_seq: u64,
    pub readings: Vec<Reading>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {0} bytes; at most {MAX_PAYLOAD_BYTES} are accepted")]
    TooLarge(usize),
    #[error("batch carries {0} readings; at most {MAX_READINGS_PER_BATCH} are accepted")]
    TooManyReadings(usize),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("malformed batch: {0}")]
    Batch(String),
}

/// The header of a batch decoded leniently, with each reading decoded on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientBatch {
    pub gateway_id: GatewayId,
    pub batch_seq: u64,
    pub readings: Vec<Result<Reading, BadReading>>,
}

/// A reading that did not decode: its raw JSON and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct BadReading {
    pub raw: serde_json::Value,
    pub reason: String,
}

impl ReadingBatch {
    /// Encodes the batch as contract v1 JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a batch of plain fields always serializes")
    }

    /// Strict decoding: any fault refuses the whole batch.
    pub fn decode(payload: &[u8]) -> Result<ReadingBatch, DecodeError> {
        check_size(payload)?;
        let batch: ReadingBatch =
            serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
        if batch.readings.len() > MAX_READINGS_PER_BATCH {
            return Err(DecodeError::TooManyReadings(batch.readings.len()));
        }
        Ok(batch)
    }

    /// Lenient decoding: the header must be sound; each reading stands alone.
    pub fn decode_lenient(payload: &[u8]) -> Result<LenientBatch, DecodeError> {
        check_size(payload)?;
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
        let serde_json::Value::Object(mut obj) = value else {
            return Err(DecodeError::Batch(
                "the payload is not a JSON object".into(),
            ));
        };
        let gateway_id = match obj.remove("gateway_id") {
            Some(v) => serde_json::from_value::<GatewayId>(v)
                .map_err(|e| DecodeError::Batch(format!("gateway_id: {e}")))?,
            None => return Err(DecodeError::Batch("missing field `gateway_id`".into())),
        };
        let batch_seq = match obj.remove("batch_seq") {
            Some(v) => v.as_u64().ok_or_else(|| {
                DecodeError::Batch(format!(
                    "batch_seq: expected a non-negative integer, got {v}"
                ))
            })?,
            None => return Err(DecodeError::Batch("missing field `batch_seq`".into())),
        };
        let readings = match obj.remove("readings") {
            Some(serde_json::Value::Array(items)) => items,
            Some(other) => {
                return Err(DecodeError::Batch(format!(
                    "readings: expected an array, got {}",
                    json_kind(&other)
                )))
            }
            None => return Err(DecodeError::Batch("missing field `readings`".into())),
        };
        if let Some(extra) = obj.keys().next() {
            return Err(DecodeError::Batch(format!("unknown field `{extra}`")));
        }
        if readings.len() > MAX_READINGS_PER_BATCH {
            return Err(DecodeError::TooManyReadings(readings.len()));
        }
        let readings = readings
            .into_iter()
            .map(
                |raw| match serde_path_to_error::deserialize::<_, Reading>(&raw) {
                    Ok(r) => Ok(r),
                    Err(e) => Err(BadReading {
                        reason: format!("{}: {}", e.path(), e.inner()),
                        raw,
                    }),
                },
            )
            .collect();
        Ok(LenientBatch {
            gateway_id,
            batch_seq,
            readings,
        })
    }
}

fn check_size(payload: &[u8]) -> Result<(), DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// RFC 3339 in UTC with whole seconds (`2026-10-01T00:15:00Z`); any offset is
/// accepted on input and converted to UTC.
mod ts_seconds {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("ts {s:?} is not RFC 3339: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"{"gateway_id": "gw-01", "batch_seq": 42, "readings": [{"meter_id": "m-1",
        "ts": "2026-10-01T00:15:00Z", "volume_l": 1234567, "flow_lph": 12.5, "alarms": ["leak"]}]}"#;

    #[test]
    fn decodes_the_design_example() {
        let b = ReadingBatch::decode(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(b.batch_seq, 42);
        assert_eq!(b.readings[0].volume_l, 1_234_567);
        assert_eq!(b.readings[0].alarms, vec![Alarm::Leak]);
        let again = ReadingBatch::decode(&b.encode()).unwrap();
        assert_eq!(again, b);
        assert!(String::from_utf8(b.encode())
            .unwrap()
            .contains("\"2026-10-01T00:15:00Z\""));
    }

    #[test]
    fn volume_must_be_an_integer() {
        let bad = EXAMPLE.replace("1234567", "1234567.5");
        assert!(ReadingBatch::decode(bad.as_bytes()).is_err());
        let lenient = ReadingBatch::decode_lenient(bad.as_bytes()).unwrap();
        let err = lenient.readings[0].as_ref().unwrap_err();
        assert!(
            err.reason.contains("volume_l") || err.reason.contains("integer"),
            "{}",
            err.reason
        );
    }

    #[test]
    fn lenient_keeps_good_readings_beside_bad_ones() {
        let payload = r#"{"gateway_id":"gw-01","batch_seq":1,"readings":[
            {"meter_id":"m-1","ts":"2026-10-01T00:00:00Z","volume_l":5},
            {"meter_id":"m-2","ts":"yesterday","volume_l":5},
            {"meter_id":"m-3","ts":"2026-10-01T00:00:00Z","volume_l":-1},
            {"meter_id":"m-4","ts":"2026-10-01T00:00:00Z","volume_l":7,"alarms":["smoke"]}]}"#;
        let b = ReadingBatch::decode_lenient(payload.as_bytes()).unwrap();
        let ok: Vec<_> = b.readings.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(b.readings.len(), 4);
    }

    #[test]
    fn header_faults_refuse_the_batch() {
        for p in [
            "[]",
            r#"{"batch_seq":1,"readings":[]}"#,
            r#"{"gateway_id":"g","batch_seq":-1,"readings":[]}"#,
            r#"{"gateway_id":"g/x","batch_seq":1,"readings":[]}"#,
            r#"{"gateway_id":"g","batch_seq":1,"readings":{}}"#,
            r#"{"gateway_id":"g","batch_seq":1,"readings":[],"x":1}"#,
        ] {
            assert!(ReadingBatch::decode_lenient(p.as_bytes()).is_err(), "{p}");
        }
    }

    proptest! {
        #[test]
        fn lenient_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ReadingBatch::decode_lenient(&bytes);
            let _ = ReadingBatch::decode(&bytes);
        }

        #[test]
        fn encode_decode_round_trips(seq in any::<u64>(), vol in any::<u64>(), secs in 0i64..4_000_000_000) {
            let b = ReadingBatch {
                gateway_id: GatewayId::parse("gw").unwrap(),
                batch_seq: seq,
                readings: vec![Reading {
                    meter_id: MeterId::parse("m").unwrap(),
                    ts: DateTime::from_timestamp(secs, 0).unwrap(),
                    volume_l: vol,
                    flow_lph: None,
                    alarms: vec![Alarm::Backflow],
                }],
            };
            prop_assert_eq!(ReadingBatch::decode(&b.encode()).unwrap(), b);
        }
    }
}
