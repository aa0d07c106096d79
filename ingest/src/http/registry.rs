//! `PUT /api/v1/meters` (operator): registers a batch of meters. The body
//! is checked whole by [`crate::registry_api::validate`] and written in one
//! transaction by [`crate::registry::register`].

use super::{Q, S};
use crate::registry::{self, Actor, Outcome};
use crate::registry_api::{too_large_bytes, validate, BatchError, MAX_BATCH_BYTES};
use crate::IngestError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Extension, Json, Router};
use waterworks_api::ingest::{
    MeterBatch, MeterOutcome, RegisterQuery, RegisterReport, RegistrationOutcome,
};
use waterworks_api::ErrorBody;
use waterworks_service::auth::Caller;
use waterworks_service::error::ApiError;

pub(super) fn routes() -> Router<S> {
    Router::new().route("/api/v1/meters", put(put_meters))
}

const SUMMARY: &str = "Register a batch of meters";
const DESCRIPTION: &str = "At most 10000 meters and 4 MiB of body (else 413). Every item is \
checked before anything is written: one bad item refuses the whole batch with 422, every problem \
listed by index, field and reason (malformed or duplicate meter_id, malformed gateway_id, a device \
profile ingest does not know, max_flow_lph not a number above 0 and at most 10000000, an unknown \
field). A good batch is one transaction: meters new to ingest are created, those whose gateway, \
profile or maximum flow differ are changed (a meter moving to another gateway waits for both \
gateways' writers and keeps its high-water mark; the new gateway's readings at or before it are \
checked as late), the rest are left untouched; each created or changed meter gets a row in \
metering.registry_audit (token name, role, before, after) in the same transaction. The same batch \
again changes nothing. With dry_run=true the answer is the same and nothing is written. \
Operator or admin; viewer and clerk get 403.";

/// `PUT /api/v1/meters[?dry_run=true]` (operator, admin).
#[utoipa::path(put, path = "/api/v1/meters", tag = "meters", operation_id = "register_meters",
    summary = SUMMARY, description = DESCRIPTION,
    extensions(("x-role" = json!("operator"))),
    params(RegisterQuery),
    request_body(content = MeterBatch, content_type = "application/json"),
    responses(
        (status = 200, description = "what the batch did (or, on a dry run, would do)", body = RegisterReport),
        (status = 400, description = "bad_request: not JSON, not {\"meters\": [...]}, an empty list, or a bad dry_run", body = ErrorBody),
        (status = 413, description = "too_large: more than 10000 meters or 4 MiB of body; nothing was written", body = ErrorBody),
        (status = 422, description = "invalid: every bad item in `problems`; nothing was written", body = ErrorBody),
    ))]
pub(super) async fn put_meters(
    State(s): State<S>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<RegisterQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES as u64) {
        return too_large_bytes().into_response();
    }
    // Past the limit (a body without a length that keeps coming) or cut off.
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BATCH_BYTES).await else {
        return too_large_bytes().into_response();
    };
    let meters = match validate(&bytes) {
        Ok(m) => m,
        Err(e) => {
            let why = match &e {
                BatchError::Malformed(_) => "malformed",
                BatchError::TooLarge(_) => "too_large",
                BatchError::Invalid(_) => "invalid",
            };
            metrics::counter!("ingest_registry_batches_refused_total", "why" => why).increment(1);
            return e.into_response();
        }
    };
    let actor = Actor {
        name: caller.name.clone(),
        role: caller.role.as_str().to_string(),
    };
    let dry_run = q.dry_run.unwrap_or(false);
    match registry::register(&s.api_pool, &meters, &actor, dry_run).await {
        Ok(report) => {
            tracing::info!(
                caller = %caller.name, dry_run = report.dry_run, created = report.created,
                changed = report.changed, moved = report.moved, unchanged = report.unchanged,
                "meter registry batch"
            );
            Json(answer(report)).into_response()
        }
        Err(e) => unavailable_or_internal(e).into_response(),
    }
}

/// The registry's report as the contract states it.
fn answer(r: registry::RegisterReport) -> RegisterReport {
    RegisterReport {
        dry_run: r.dry_run,
        created: r.created,
        changed: r.changed,
        moved: r.moved,
        unchanged: r.unchanged,
        meters: r
            .meters
            .into_iter()
            .map(|m| MeterOutcome {
                meter_id: m.meter_id,
                outcome: match m.outcome {
                    Outcome::Created => RegistrationOutcome::Created,
                    Outcome::Changed => RegistrationOutcome::Changed,
                    Outcome::Unchanged => RegistrationOutcome::Unchanged,
                },
                moved_from_gateway_id: m.moved_from_gateway_id,
            })
            .collect(),
    }
}

/// A failed registration as the caller sees it: a timeout, a lost
/// connection, a deadlock or serialization failure is 503 (retry the same
/// batch: nothing of it was written); anything else is internal (logged).
fn unavailable_or_internal(e: IngestError) -> ApiError {
    let timed_out = matches!(&e, IngestError::Db(sqlx::Error::Database(d))
        if d.code().as_deref() == Some("57014"));
    if timed_out || e.is_transient() {
        tracing::warn!(error = %e, "meter registry batch not written");
        ApiError::Unavailable
    } else {
        ApiError::internal(e)
    }
}
