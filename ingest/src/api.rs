//! The metering query API under `/api/v1` (JSON, bearer roles), plus the open
//! operational routes. Every list is bounded (`limit`, at most
//! [`MAX_ROWS`]); errors never carry database detail.
//!
//! Limits (`[limits]` in the configuration): queries run on the API's own
//! pool with a `statement_timeout` (past it: 503); `/api/v1` serves at most
//! `api_max_concurrent_requests` at once (one more: 503 `busy` at once, with
//! `Retry-After`) and answers within `api_request_timeout_ms` (else 503
//! `timeout`); the quarantine is read in pages of at most
//! `api_max_response_bytes` of rows, continued with `cursor`.

use crate::config::LimitsConfig;
use crate::consumer::Shared;
use crate::vee::{Reason, EXPECTED_READ_INTERVAL_S};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tokio::sync::Semaphore;
use waterworks_service::auth::{require, ApiTokens, Role};
use waterworks_service::error::ApiError;
use waterworks_service::ops::{self, ReadyCheck};
use waterworks_wire::MeterId;

/// Most rows any one response carries.
pub const MAX_ROWS: i64 = 10_000;
/// The OpenAPI document, hand-written beside this file.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

type S = Arc<Shared>;

pub fn router(
    shared: S,
    tokens: Arc<ApiTokens>,
    limits: &LimitsConfig,
    rates: Arc<waterworks_service::limits::Limits>,
) -> Router {
    let viewer = Router::new()
        .route("/api/v1/meters", get(meters))
        .route("/api/v1/meters/{id}/readings", get(readings))
        .route("/api/v1/meters/{id}/daily", get(daily))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/gaps", get(gaps));
    let operator = Router::new()
        .route("/api/v1/quarantine", get(quarantine))
        .route("/api/v1/meters", put(crate::registry_api::put_meters));
    let api = require(viewer, tokens.clone(), Role::Viewer)
        .merge(waterworks_service::auth::whoami(tokens.clone()))
        .merge(crate::dashboard::routes(tokens.clone()))
        .merge(require(operator, tokens, Role::Operator))
        .route(
            "/api/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI_JSON,
                )
            }),
        )
        .with_state(shared.clone())
        .layer(axum::middleware::from_fn_with_state(
            RequestLimits {
                slots: Arc::new(Semaphore::new(limits.api_max_concurrent_requests.max(1))),
                timeout: StdDuration::from_millis(limits.api_request_timeout_ms.max(1)),
                page_bytes: limits.api_max_response_bytes,
            },
            limit_requests,
        ));
    let ready: ReadyCheck = Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&shared.pool)
                .await
                .map_err(|_| "database unreachable".to_string())?;
            if !shared.broker_connected.load(Ordering::Relaxed) {
                return Err("broker not connected or subscriptions not acknowledged".into());
            }
            Ok(())
        })
    });
    // Rate limits per token and per IP first (429), then the bounds above;
    // health, readiness and metrics stay outside both.
    waterworks_service::limits::admit_layer(api, rates).merge(ops::routes(ready))
}

/// The `/api/v1` limits: concurrent requests, time per request, bytes per
/// quarantine page (read by the handler from the request's extensions).
#[derive(Clone)]
struct RequestLimits {
    slots: Arc<Semaphore>,
    timeout: StdDuration,
    page_bytes: usize,
}

/// Bytes of rows one quarantine page may carry.
#[derive(Clone, Copy)]
struct PageBytes(usize);

/// Refuses a request at once when `api_max_concurrent_requests` are being
/// served (503 `busy`, `Retry-After: 1`): a flood is shed, never queued.
/// Cuts a request off after `api_request_timeout_ms` (503 `timeout`; its
/// query is cancelled with it).
async fn limit_requests(State(l): State<RequestLimits>, mut req: Request, next: Next) -> Response {
    let Ok(_slot) = l.slots.clone().try_acquire_owned() else {
        metrics::counter!("ingest_api_refused_total", "why" => "busy").increment(1);
        let mut r = refusal("busy", "too many requests at once; retry shortly");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    req.extensions_mut().insert(PageBytes(l.page_bytes));
    match tokio::time::timeout(l.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!("ingest_api_refused_total", "why" => "timeout").increment(1);
            refusal("timeout", "the request took too long")
        }
    }
}

fn refusal(code: &str, message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

/// A database failure as the caller sees it: a query cancelled by the API's
/// `statement_timeout` is 503 (try a narrower request or later); anything
/// else is an internal error (logged, never shown).
fn db_error(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
            tracing::warn!(error = %e, "api query cancelled by statement_timeout");
            ApiError::Unavailable
        }
        sqlx::Error::PoolTimedOut => ApiError::Unavailable,
        _ => ApiError::internal(e),
    }
}

fn meter_id(id: String) -> Result<MeterId, ApiError> {
    MeterId::parse(id).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn limit(l: Option<i64>) -> i64 {
    l.unwrap_or(1000).clamp(1, MAX_ROWS)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ReadingOut {
    ts: DateTime<Utc>,
    volume_l: i64,
    flow_lph: Option<f64>,
    alarms: Vec<String>,
}

/// `GET /api/v1/meters/{id}/readings?from&to&limit` (default: the last day).
async fn readings(
    State(s): State<S>,
    Path(id): Path<String>,
    Query(q): Query<Range>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = meter_id(id)?;
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q.from.unwrap_or(to - Duration::days(1));
    if from > to {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    known_meter(&s, &id).await?;
    let rows: Vec<ReadingOut> = sqlx::query_as(
        "SELECT ts, volume_l, flow_lph, alarms FROM metering.readings_v1
          WHERE meter_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts LIMIT $4",
    )
    .bind(id.as_str())
    .bind(from)
    .bind(to)
    .bind(limit(q.limit))
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(serde_json::json!({
        "meter_id": id, "from": from, "to": to, "readings": rows
    })))
}

async fn known_meter(s: &Shared, id: &MeterId) -> Result<(), ApiError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM metering.meters WHERE meter_id = $1")
            .bind(id.as_str())
            .fetch_optional(&s.api_pool)
            .await
            .map_err(db_error)?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::NotFound(format!("no meter {id}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayRange {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct DailyOut {
    day: NaiveDate,
    first_ts: DateTime<Utc>,
    first_volume_l: i64,
    last_ts: DateTime<Utc>,
    last_volume_l: i64,
    /// Last read of the day minus the last read of the day before (or the
    /// day's first read when the day before has none).
    consumption_l: i64,
    reads: i32,
    alarm_reads: i32,
    /// `actual` (every expected read present) or `gap`.
    quality: String,
}

/// `GET /api/v1/meters/{id}/daily?from&to` (UTC days; default: the last 31).
async fn daily(
    State(s): State<S>,
    Path(id): Path<String>,
    Query(q): Query<DayRange>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = meter_id(id)?;
    let to = q.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = q.from.unwrap_or(to - Duration::days(30));
    if from > to || (to - from).num_days() > MAX_ROWS {
        return Err(ApiError::BadRequest("bad day range".into()));
    }
    known_meter(&s, &id).await?;
    let expected = (86_400 / EXPECTED_READ_INTERVAL_S) as i32;
    let rows: Vec<DailyOut> = sqlx::query_as(
        "SELECT day, first_ts, first_volume_l, last_ts, last_volume_l, consumption_l, reads, alarm_reads,
                CASE WHEN reads >= $4 AND prev_day = day - 1 THEN 'actual' ELSE 'gap' END AS quality
           FROM (SELECT d.*,
                        d.last_volume_l - coalesce(lag(d.last_volume_l) OVER w, d.first_volume_l) AS consumption_l,
                        lag(d.day) OVER w AS prev_day
                   FROM metering.daily d
                  WHERE d.meter_id = $1 AND d.day >= $2::date - 1 AND d.day <= $3
                 WINDOW w AS (ORDER BY d.day)) x
          WHERE day >= $2 ORDER BY day",
    )
    .bind(id.as_str())
    .bind(from)
    .bind(to)
    .bind(expected)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(serde_json::json!({ "meter_id": id, "days": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterQuery {
    /// `silent` (no read for `hours`), `alarm` (newest read carries alarms), or absent.
    status: Option<String>,
    hours: Option<i64>,
    gateway_id: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MeterOut {
    meter_id: String,
    gateway_id: String,
    profile_id: String,
    max_flow_lph: Option<f64>,
    last_ts: Option<DateTime<Utc>>,
    last_volume_l: Option<i64>,
    last_alarms: Option<Vec<String>>,
    last_seen_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/meters?status=silent&hours=N | status=alarm [&gateway_id]`.
async fn meters(
    State(s): State<S>,
    Query(q): Query<MeterQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter = match q.status.as_deref() {
        None | Some("all") => "TRUE",
        Some("silent") => "(last_ts IS NULL OR last_ts < now() - make_interval(hours => $1::int))",
        Some("alarm") => "cardinality(coalesce(last_alarms, '{}')) > 0",
        Some(other) => return Err(ApiError::BadRequest(format!("unknown status {other:?}"))),
    };
    let hours = q.hours.unwrap_or(24).clamp(0, 24 * 3660) as i32;
    let sql = format!(
        "SELECT meter_id, gateway_id, profile_id, max_flow_lph, last_ts, last_volume_l, last_alarms, last_seen_at
           FROM metering.meters
          WHERE {filter} AND ($1::int IS NOT NULL) AND ($2::text IS NULL OR gateway_id = $2)
          ORDER BY meter_id LIMIT $3"
    );
    let rows: Vec<MeterOut> = sqlx::query_as(&sql)
        .bind(hours)
        .bind(q.gateway_id)
        .bind(limit(q.limit))
        .fetch_all(&s.api_pool)
        .await
        .map_err(db_error)?;
    Ok(Json(serde_json::json!({ "meters": rows })))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct GatewayOut {
    gateway_id: String,
    status: Option<String>,
    status_at: Option<DateTime<Utc>>,
    last_batch_seq: Option<i64>,
    last_batch_at: Option<DateTime<Utc>>,
    batches: i64,
    readings: i64,
    seq_resets: i32,
    open_seq_gaps: i64,
    meters: i64,
}

/// `GET /api/v1/gateways`: online status, last batch, open sequence gaps.
async fn gateways(State(s): State<S>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows: Vec<GatewayOut> = sqlx::query_as(
        "SELECT g.gateway_id, g.status, g.status_at, g.last_batch_seq, g.last_batch_at, g.batches,
                g.readings, g.seq_resets,
                (SELECT count(*) FROM metering.gaps x
                  WHERE x.kind = 'batch_seq' AND x.filled_at IS NULL AND x.gateway_id = g.gateway_id) AS open_seq_gaps,
                (SELECT count(*) FROM metering.meters m WHERE m.gateway_id = g.gateway_id) AS meters
           FROM metering.gateways g ORDER BY g.gateway_id LIMIT $1",
    )
    .bind(MAX_ROWS)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(serde_json::json!({ "gateways": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapQuery {
    gateway_id: Option<String>,
    meter_id: Option<String>,
    open: Option<bool>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct GapOut {
    id: i64,
    kind: String,
    gateway_id: Option<String>,
    meter_id: Option<String>,
    from_seq: Option<i64>,
    to_seq: Option<i64>,
    from_ts: Option<DateTime<Utc>>,
    to_ts: Option<DateTime<Utc>>,
    detected_at: DateTime<Utc>,
    filled_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/gaps?gateway_id&meter_id&open=true`.
async fn gaps(
    State(s): State<S>,
    Query(q): Query<GapQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows: Vec<GapOut> = sqlx::query_as(
        "SELECT id, kind, gateway_id, meter_id, from_seq, to_seq, from_ts, to_ts, detected_at, filled_at
           FROM metering.gaps
          WHERE ($1::text IS NULL OR gateway_id = $1) AND ($2::text IS NULL OR meter_id = $2)
            AND (NOT coalesce($3, false) OR filled_at IS NULL)
          ORDER BY id DESC LIMIT $4",
    )
    .bind(q.gateway_id)
    .bind(q.meter_id)
    .bind(q.open)
    .bind(limit(q.limit))
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(serde_json::json!({ "gaps": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineQuery {
    reason: Option<String>,
    limit: Option<i64>,
    /// `next_cursor` of the previous page: rows with a smaller id.
    cursor: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct QuarantineOut {
    id: i64,
    /// When this content was first seen.
    received_at: DateTime<Utc>,
    /// When it was last seen, and how many times in all.
    last_seen_at: DateTime<Utc>,
    seen_count: i64,
    gateway_id: Option<String>,
    topic: String,
    batch_seq: Option<i64>,
    reason: String,
    detail: String,
    reading: Option<serde_json::Value>,
    /// The stored prefix (at most 4096 bytes, bytea escape format) of the
    /// payload of a message refused whole.
    payload: Option<String>,
    /// The whole payload's length in bytes and SHA-256 (hex).
    payload_len: Option<i32>,
    payload_sha256: Option<String>,
    meter_id: Option<String>,
    ts: Option<DateTime<Utc>>,
}

/// `GET /api/v1/quarantine?reason=&limit=&cursor=` (operator), newest first
/// (by first seen), with occurrences and rows by reason. A page ends after
/// `limit` rows or before the row that would take its rows past
/// `limits.api_max_response_bytes` (it always holds one row); `next_cursor`
/// (absent on the last page) continues it.
async fn quarantine(
    State(s): State<S>,
    axum::Extension(PageBytes(page_bytes)): axum::Extension<PageBytes>,
    Query(q): Query<QuarantineQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use futures::TryStreamExt;
    if let Some(r) = &q.reason {
        if Reason::parse(r).is_none() {
            return Err(ApiError::BadRequest(format!("unknown reason {r:?}")));
        }
    }
    let limit = limit(q.limit);
    let mut rows = sqlx::query_as::<_, QuarantineOut>(
        "SELECT id, received_at, last_seen_at, seen_count, gateway_id, topic, batch_seq, reason, detail,
                reading, encode(substring(payload from 1 for 4096), 'escape') AS payload, payload_len,
                CASE WHEN payload IS NOT NULL THEN encode(digest, 'hex') END AS payload_sha256,
                meter_id, ts
           FROM metering.quarantine
          WHERE ($1::text IS NULL OR reason = $1) AND ($2::int8 IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3",
    )
    .bind(&q.reason)
    .bind(q.cursor)
    .bind(limit + 1)
    .fetch(&s.api_pool);
    let mut items: Vec<serde_json::Value> = Vec::new();
    let (mut bytes, mut more, mut cut) = (0usize, false, false);
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        if items.len() as i64 == limit {
            more = true;
            break;
        }
        let v = serde_json::to_value(&row).map_err(ApiError::internal)?;
        let size = serde_json::to_vec(&v).map_err(ApiError::internal)?.len() + 1;
        if !items.is_empty() && bytes + size > page_bytes {
            cut = true;
            break;
        }
        bytes += size;
        items.push(v);
    }
    drop(rows);
    let next_cursor = (more || cut)
        .then(|| items.last().and_then(|v| v["id"].as_i64()))
        .flatten();
    let by_reason: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT reason, sum(seen_count)::int8, count(*) FROM metering.quarantine
          GROUP BY reason ORDER BY reason",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    let counts: serde_json::Map<String, serde_json::Value> = by_reason
        .iter()
        .map(|(r, n, _)| (r.clone(), (*n).into()))
        .collect();
    let distinct: serde_json::Map<String, serde_json::Value> = by_reason
        .into_iter()
        .map(|(r, _, n)| (r, n.into()))
        .collect();
    Ok(Json(serde_json::json!({
        "counts": counts,
        "rows": distinct,
        "items": items,
        "next_cursor": next_cursor,
        "truncated": cut,
    })))
}
