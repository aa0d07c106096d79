//! The meter registry's batch check: `PUT /api/v1/meters` (served by
//! [`crate::http::registry`]) hands its body here.
//!
//! The body is [`waterworks_api::ingest::MeterBatch`]: `{"meters":
//! [{meter_id, gateway_id, profile_id, max_flow_lph?}, ...]}`, at most
//! [`MAX_BATCH_METERS`] meters and [`MAX_BATCH_BYTES`] bytes (else 413).
//! Every item is checked before anything is written ([`validate`], pure):
//! the body is read as JSON values rather than straight into the type so
//! that one bad item refuses the whole batch with 422 and every problem
//! listed by index, field and reason, not only serde's first. A good batch
//! is one transaction ([`crate::registry::register`]): idempotent, audited,
//! and answering how many meters were created, changed (and of those moved
//! to another gateway) and left unchanged. `?dry_run=true` answers the same
//! and writes nothing.
//!
//! This module must never write anything: it only checks.

use crate::registry::{known_profiles, MeterRegistration};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
pub use waterworks_api::error::Problem;
use waterworks_api::error::{ErrorBody, ErrorCode};
pub use waterworks_api::ingest::{MAX_BATCH_BYTES, MAX_BATCH_METERS, MAX_FLOW_LPH_LIMIT};
use waterworks_service::error::ApiError;
use waterworks_wire::{GatewayId, MeterId};

/// The fields of one registration; any other is refused.
const FIELDS: [&str; 4] = ["meter_id", "gateway_id", "profile_id", "max_flow_lph"];

fn problem(index: usize, field: &str, reason: impl Into<String>) -> Problem {
    Problem {
        index,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Why a batch is refused before it reaches the database.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// Not the documented shape at all (400).
    #[error("{0}")]
    Malformed(String),
    /// Over [`MAX_BATCH_METERS`] or [`MAX_BATCH_BYTES`] (413).
    #[error("{0}")]
    TooLarge(String),
    /// Items at fault (422), every one listed.
    #[error("{} problem(s) in the batch; nothing was written", .0.len())]
    Invalid(Vec<Problem>),
}

impl IntoResponse for BatchError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            BatchError::Malformed(m) => ApiError::BadRequest(m).into_response(),
            BatchError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(ErrorBody::new(ErrorCode::TooLarge, message)),
            )
                .into_response(),
            BatchError::Invalid(problems) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ErrorBody {
                    problems,
                    ..ErrorBody::new(ErrorCode::Invalid, message)
                }),
            )
                .into_response(),
        }
    }
}

/// Checks a whole batch and returns its registrations, or every problem.
/// Pure: the device profiles are [`known_profiles`].
pub fn validate(body: &[u8]) -> Result<Vec<MeterRegistration>, BatchError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(too_large_bytes());
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| BatchError::Malformed(format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(top) = v else {
        return Err(BatchError::Malformed(
            "the body must be an object {\"meters\": [...]}".into(),
        ));
    };
    if let Some(k) = top.keys().find(|k| *k != "meters") {
        return Err(BatchError::Malformed(format!("unknown field {k:?}")));
    }
    let Some(serde_json::Value::Array(items)) = top.get("meters") else {
        return Err(BatchError::Malformed(
            "\"meters\" must be an array of registrations".into(),
        ));
    };
    if items.is_empty() {
        return Err(BatchError::Malformed("\"meters\" is empty".into()));
    }
    if items.len() > MAX_BATCH_METERS {
        return Err(BatchError::TooLarge(format!(
            "{} meters in one batch; at most {MAX_BATCH_METERS} are allowed",
            items.len()
        )));
    }
    let mut problems = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    let mut first_at: HashMap<MeterId, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(m) = item_of(i, item, &mut problems) else {
            continue;
        };
        if let Some(&first) = first_at.get(&m.meter_id) {
            problems.push(problem(
                i,
                "meter_id",
                format!("meter {} is also at index {first}", m.meter_id),
            ));
            continue;
        }
        first_at.insert(m.meter_id.clone(), i);
        out.push(m);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(BatchError::Invalid(problems))
    }
}

pub(crate) fn too_large_bytes() -> BatchError {
    BatchError::TooLarge(format!(
        "the body is larger than {MAX_BATCH_BYTES} bytes; send the meters in smaller batches"
    ))
}

/// One item, every problem of it pushed to `problems` (`None` if any).
fn item_of(
    i: usize,
    item: &serde_json::Value,
    problems: &mut Vec<Problem>,
) -> Option<MeterRegistration> {
    let Some(obj) = item.as_object() else {
        problems.push(problem(i, "", "a registration must be an object"));
        return None;
    };
    let before = problems.len();
    for k in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(problem(i, k, "unknown field"));
    }
    let text = |field: &str, problems: &mut Vec<Problem>| match obj.get(field) {
        None | Some(serde_json::Value::Null) => {
            problems.push(problem(i, field, "missing"));
            None
        }
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(problem(i, field, "must be a string"));
            None
        }
    };
    let meter_id = text("meter_id", problems).and_then(|s| {
        MeterId::parse(s)
            .map_err(|e| problems.push(problem(i, "meter_id", e.to_string())))
            .ok()
    });
    let gateway_id = text("gateway_id", problems).and_then(|s| {
        GatewayId::parse(s)
            .map_err(|e| problems.push(problem(i, "gateway_id", e.to_string())))
            .ok()
    });
    let profile = text("profile_id", problems).and_then(|s| match known_profiles().get(&s) {
        Some(p) => Some(p),
        None => {
            let mut known: Vec<&str> = known_profiles().keys().map(String::as_str).collect();
            known.sort_unstable();
            problems.push(problem(
                i,
                "profile_id",
                format!("unknown device profile {s:?}; known: {}", known.join(", ")),
            ));
            None
        }
    });
    let max_flow_lph = match obj.get("max_flow_lph") {
        // Absent: the profile's Q4; null: no spike rule for this meter.
        None => profile.and_then(|p| p.max_flow_lph),
        Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && f > 0.0 && f <= MAX_FLOW_LPH_LIMIT => Some(f),
            _ => {
                problems.push(problem(
                    i,
                    "max_flow_lph",
                    format!("must be a number of litres per hour above 0 and at most {MAX_FLOW_LPH_LIMIT}, or null"),
                ));
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    Some(MeterRegistration {
        meter_id: meter_id?,
        gateway_id: gateway_id?,
        profile_id: profile?.id.clone(),
        max_flow_lph,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(body: &str) -> Vec<Problem> {
        match validate(body.as_bytes()) {
            Err(BatchError::Invalid(p)) => p,
            other => panic!("expected 422 problems, got {other:?}"),
        }
    }

    #[test]
    fn a_good_item_takes_the_profiles_q4_unless_given() {
        let m = validate(
            br#"{"meters": [
                {"meter_id": "m-1", "gateway_id": "gw-1", "profile_id": "waterworks-sim-v1"},
                {"meter_id": "m-2", "gateway_id": "gw-1", "profile_id": "waterworks-sim-v1", "max_flow_lph": 2500},
                {"meter_id": "m-3", "gateway_id": "gw-1", "profile_id": "waterworks-sim-v1", "max_flow_lph": null}
            ]}"#,
        )
        .unwrap();
        assert_eq!(m[0].max_flow_lph, Some(3125.0));
        assert_eq!(m[1].max_flow_lph, Some(2500.0));
        assert_eq!(m[2].max_flow_lph, None);
    }

    #[test]
    fn every_bad_item_is_listed_with_its_index_and_field() {
        let p = problems(
            r#"{"meters": [
                {"meter_id": "m/1", "gateway_id": "", "profile_id": "nope", "max_flow_lph": -1, "colour": 1},
                {"meter_id": "m-2", "gateway_id": "gw", "profile_id": "waterworks-sim-v1"},
                {"meter_id": "m-2", "gateway_id": "gw", "profile_id": "waterworks-sim-v1"},
                7,
                {"gateway_id": 5, "profile_id": "tuf-2000m", "max_flow_lph": "fast"}
            ]}"#,
        );
        let at: Vec<(usize, &str)> = p.iter().map(|p| (p.index, p.field.as_str())).collect();
        assert_eq!(
            at,
            [
                (0, "colour"),
                (0, "meter_id"),
                (0, "gateway_id"),
                (0, "profile_id"),
                (0, "max_flow_lph"),
                (2, "meter_id"),
                (3, ""),
                (4, "meter_id"),
                (4, "gateway_id"),
                (4, "max_flow_lph"),
            ]
        );
        assert!(p[5].reason.contains("also at index 1"), "{:?}", p[5]);
        assert!(p[3].reason.contains("unknown device profile"));
    }

    #[test]
    fn shapes_and_sizes_are_refused_before_items() {
        assert!(matches!(validate(b"nope"), Err(BatchError::Malformed(_))));
        assert!(matches!(validate(b"[]"), Err(BatchError::Malformed(_))));
        assert!(matches!(
            validate(br#"{"meters": []}"#),
            Err(BatchError::Malformed(_))
        ));
        assert!(matches!(
            validate(br#"{"meters": [], "x": 1}"#),
            Err(BatchError::Malformed(_))
        ));
        let many = format!(
            "{{\"meters\": [{}]}}",
            vec!["{}"; MAX_BATCH_METERS + 1].join(",")
        );
        assert!(matches!(
            validate(many.as_bytes()),
            Err(BatchError::TooLarge(_))
        ));
        assert!(matches!(
            validate(&vec![b' '; MAX_BATCH_BYTES + 1]),
            Err(BatchError::TooLarge(_))
        ));
        for flow in ["0", "1e300", "10000001"] {
            let body = format!(
                r#"{{"meters": [{{"meter_id": "m", "gateway_id": "g", "profile_id": "tuf-2000m", "max_flow_lph": {flow}}}]}}"#
            );
            assert_eq!(problems(&body)[0].field, "max_flow_lph", "{flow}");
        }
    }
}
