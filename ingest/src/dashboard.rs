//! The operators' dashboard data (issue 9), under `/api/v1/dashboard/...`,
//! and the sampler that keeps it.
//!
//! The sampler ([`sample`], every [`SAMPLE_INTERVAL_S`]) turns cluster-wide
//! totals already in the schema (`metering.gateways`' stored-reading and
//! batch counters, the quarantine's ids, the meters' high-water marks) into
//! per-minute rows of `metering.ingest_minutes`, and tracks alarms with
//! since-when in `metering.meter_alarms`. It reads what the writer keeps and
//! never touches the writer's path: one sampler at a time (an advisory lock)
//! does the work, so any number of replicas may run it.
//!
//! Routes (every list bounded by `limit`, at most [`MAX_ROWS`]):
//! - viewer: `GET /api/v1/dashboard/overview?window=hour|day`,
//!   `GET /api/v1/dashboard/alarms?alarm=&limit=`,
//!   `GET /api/v1/dashboard/meters?q=&limit=` (id prefix),
//!   `GET /api/v1/dashboard/silent?hours=&limit=`,
//!   `GET /api/v1/dashboard/meters/{id}`;
//! - operator: `GET /api/v1/dashboard/meters/{id}/quarantine?limit=`.

use crate::consumer::Shared;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{require, ApiTokens, Role};
use waterworks_service::error::ApiError;

/// Seconds between two samples.
pub const SAMPLE_INTERVAL_S: u64 = 10;
/// Most rows any one dashboard list carries.
pub const MAX_ROWS: i64 = 1_000;
/// Per-minute rows are kept this many days.
pub const MINUTES_KEPT_DAYS: i32 = 8;
/// Cleared alarms are kept this many days.
pub const CLEARED_ALARMS_KEPT_DAYS: i32 = 90;
/// The alarms the dashboard names (others are shown as they come).
pub const KNOWN_ALARMS: &[&str] = &["leak", "burst", "backflow", "tamper", "low_battery"];
/// Advisory lock key of the sampler (one at a time across replicas).
const SAMPLER_LOCK: i64 = 0x5757_4441_5348; // "WWDASH"

type S = Arc<Shared>;

pub fn routes(tokens: Arc<ApiTokens>) -> Router<S> {
    let viewer = Router::new()
        .route("/api/v1/dashboard/overview", get(overview))
        .route("/api/v1/dashboard/alarms", get(alarms))
        .route("/api/v1/dashboard/meters", get(search))
        .route("/api/v1/dashboard/silent", get(silent))
        .route("/api/v1/dashboard/meters/{id}", get(meter));
    let operator = Router::new().route(
        "/api/v1/dashboard/meters/{id}/quarantine",
        get(meter_quarantine),
    );
    require(viewer, tokens.clone(), Role::Viewer).merge(require(operator, tokens, Role::Operator))
}

/// Samples every [`SAMPLE_INTERVAL_S`] until `shutdown`. A failed sample is
/// logged and the next one tries again (the cursor makes it catch up).
pub async fn sample(shared: S, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_INTERVAL_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sample_once(&shared.pool).await {
            Ok(true) => metrics::counter!("ingest_dashboard_samples_total").increment(1),
            Ok(false) => {}
            // A sample cut short by the shutdown (pool closing) is no news.
            Err(e) if shutdown.is_cancelled() => {
                tracing::debug!(error = %e, "dashboard sample stopped by the shutdown");
            }
            Err(e) => {
                metrics::counter!("ingest_dashboard_sample_errors_total").increment(1);
                tracing::warn!(error = %e, "dashboard sample failed");
            }
        }
    }
}

/// One sample; `false` when another replica holds the sampler lock.
pub async fn sample_once(pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SAMPLER_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(false);
    }
    let (readings, batches): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(readings), 0)::bigint, coalesce(sum(batches), 0)::bigint
           FROM metering.gateways",
    )
    .fetch_one(&mut *tx)
    .await?;
    let quarantine_id: i64 =
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM metering.quarantine")
            .fetch_one(&mut *tx)
            .await?;
    let cursor: Option<(i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT readings, batches, quarantine_id, sampled_at FROM metering.dashboard_cursor
          WHERE id = 1 FOR UPDATE",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((prev_readings, prev_batches, prev_q, prev_at)) = cursor {
        let quarantined: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM metering.quarantine WHERE id > $1 AND id <= $2",
        )
        .bind(prev_q)
        .bind(quarantine_id)
        .fetch_one(&mut *tx)
        .await?;
        // Lag: how long after its time the newest reading of each meter
        // stored since the last sample was stored.
        let lag_ms: Option<i64> = sqlx::query_scalar(
            "SELECT (max(extract(epoch FROM last_seen_at - last_ts)) * 1000)::bigint
               FROM metering.meters WHERE last_seen_at > $1 AND last_ts IS NOT NULL",
        )
        .bind(prev_at)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO metering.ingest_minutes (minute, readings, batches, quarantined, lag_ms_max, samples)
             VALUES (date_trunc('minute', now()), $1, $2, $3, $4, 1)
             ON CONFLICT (minute) DO UPDATE SET
                 readings = metering.ingest_minutes.readings + excluded.readings,
                 batches = metering.ingest_minutes.batches + excluded.batches,
                 quarantined = metering.ingest_minutes.quarantined + excluded.quarantined,
                 lag_ms_max = greatest(metering.ingest_minutes.lag_ms_max, excluded.lag_ms_max),
                 samples = metering.ingest_minutes.samples + 1",
        )
        .bind((readings - prev_readings).max(0))
        .bind((batches - prev_batches).max(0))
        .bind(quarantined)
        .bind(lag_ms.map(|l| l.max(0)))
        .execute(&mut *tx)
        .await?;
    }
    // The first sample only sets the cursor: history is not one minute's work.
    sqlx::query(
        "INSERT INTO metering.dashboard_cursor (id, readings, batches, quarantine_id, sampled_at)
         VALUES (1, $1, $2, $3, now())
         ON CONFLICT (id) DO UPDATE SET readings = $1, batches = $2, quarantine_id = $3, sampled_at = now()",
    )
    .bind(readings)
    .bind(batches)
    .bind(quarantine_id)
    .execute(&mut *tx)
    .await?;
    track_alarms(&mut tx).await?;
    sqlx::query(
        "DELETE FROM metering.ingest_minutes WHERE minute < now() - make_interval(days => $1)",
    )
    .bind(MINUTES_KEPT_DAYS)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM metering.meter_alarms WHERE cleared_at < now() - make_interval(days => $1)",
    )
    .bind(CLEARED_ALARMS_KEPT_DAYS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Opens a row for each alarm a meter's newest reading carries that has no
/// open row (since: that reading's time), and closes open rows whose alarm
/// the newest reading no longer carries.
async fn track_alarms(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO metering.meter_alarms (meter_id, alarm, since)
         SELECT m.meter_id, a.alarm, coalesce(m.last_ts, now())
           FROM metering.meters m, unnest(m.last_alarms) AS a(alarm)
          WHERE cardinality(coalesce(m.last_alarms, '{}')) > 0
         ON CONFLICT (meter_id, alarm) WHERE cleared_at IS NULL DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE metering.meter_alarms x SET cleared_at = now()
          WHERE x.cleared_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM metering.meters m
                             WHERE m.meter_id = x.meter_id
                               AND x.alarm = ANY (coalesce(m.last_alarms, '{}')))",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn limit(l: Option<i64>, default: i64) -> i64 {
    l.unwrap_or(default).clamp(1, MAX_ROWS)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// `hour` (per-minute points, default) or `day` (per-15-minute points).
    window: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Bucket {
    t: DateTime<Utc>,
    readings: i64,
    batches: i64,
    quarantined: i64,
    lag_ms_max: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ReasonCount {
    reason: String,
    last_hour: i64,
    last_day: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Counts {
    meters: i64,
    silent_24h: i64,
    gateways: i64,
    gateways_online: i64,
    active_alarms: i64,
}

/// `GET /api/v1/dashboard/overview?window=hour|day`: per-bucket readings,
/// batches, quarantined and lag; readings per second over the last full
/// minute; quarantine by reason (last hour, last day); fleet counts.
async fn overview(
    State(s): State<S>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (span_s, step_s) = match q.window.as_deref() {
        None | Some("hour") => (3600i64, 60i64),
        Some("day") => (86_400, 900),
        Some(other) => return Err(ApiError::BadRequest(format!("unknown window {other:?}"))),
    };
    let buckets: Vec<Bucket> = sqlx::query_as(
        "WITH b AS (
             SELECT generate_series(
                 to_timestamp(floor(extract(epoch FROM now() - make_interval(secs => $1)) / $2) * $2),
                 to_timestamp(floor(extract(epoch FROM now()) / $2) * $2),
                 make_interval(secs => $2)) AS t)
         SELECT b.t, coalesce(sum(m.readings), 0)::bigint AS readings,
                coalesce(sum(m.batches), 0)::bigint AS batches,
                coalesce(sum(m.quarantined), 0)::bigint AS quarantined,
                max(m.lag_ms_max) AS lag_ms_max
           FROM b LEFT JOIN metering.ingest_minutes m
             ON m.minute >= b.t AND m.minute < b.t + make_interval(secs => $2)
          GROUP BY b.t ORDER BY b.t",
    )
    .bind(span_s as f64)
    .bind(step_s as f64)
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let last_minute: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT readings, lag_ms_max FROM metering.ingest_minutes
          WHERE minute = date_trunc('minute', now()) - interval '1 minute'",
    )
    .fetch_optional(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let latest_lag: Option<i64> = sqlx::query_scalar(
        "SELECT lag_ms_max FROM metering.ingest_minutes
          WHERE lag_ms_max IS NOT NULL AND minute > now() - interval '1 hour'
          ORDER BY minute DESC LIMIT 1",
    )
    .fetch_optional(&s.api_pool)
    .await
    .map_err(ApiError::internal)?
    .flatten();
    let reasons: Vec<ReasonCount> = sqlx::query_as(
        "SELECT reason,
                coalesce(sum(seen_count) FILTER (WHERE last_seen_at > now() - interval '1 hour'), 0)::int8
                    AS last_hour,
                sum(seen_count)::int8 AS last_day
           FROM metering.quarantine WHERE last_seen_at > now() - interval '1 day'
          GROUP BY reason ORDER BY reason",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let counts: Counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM metering.meters) AS meters,
                (SELECT count(*) FROM metering.meters
                  WHERE last_ts IS NULL OR last_ts < now() - interval '24 hours') AS silent_24h,
                (SELECT count(*) FROM metering.gateways) AS gateways,
                (SELECT count(*) FROM metering.gateways WHERE status = 'online') AS gateways_online,
                (SELECT count(*) FROM metering.meter_alarms WHERE cleared_at IS NULL) AS active_alarms",
    )
    .fetch_one(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({
        "window": if span_s == 3600 { "hour" } else { "day" },
        "step_s": step_s,
        "buckets": buckets,
        "readings_per_s": last_minute.map(|(r, _)| r as f64 / 60.0).unwrap_or(0.0),
        "lag_ms": latest_lag,
        "quarantine_by_reason": reasons,
        "counts": counts,
        "sample_interval_s": SAMPLE_INTERVAL_S,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmQuery {
    alarm: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AlarmOut {
    meter_id: String,
    gateway_id: String,
    alarm: String,
    since: DateTime<Utc>,
    last_ts: Option<DateTime<Utc>>,
    last_volume_l: Option<i64>,
}

/// `GET /api/v1/dashboard/alarms?alarm=&limit=`: open alarms, newest first,
/// with counts by alarm.
async fn alarms(
    State(s): State<S>,
    Query(q): Query<AlarmQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(a) = &q.alarm {
        if a.is_empty() || a.len() > 64 {
            return Err(ApiError::BadRequest("bad alarm name".into()));
        }
    }
    let rows: Vec<AlarmOut> = sqlx::query_as(
        "SELECT x.meter_id, m.gateway_id, x.alarm, x.since, m.last_ts, m.last_volume_l
           FROM metering.meter_alarms x JOIN metering.meters m USING (meter_id)
          WHERE x.cleared_at IS NULL AND ($1::text IS NULL OR x.alarm = $1)
          ORDER BY x.since DESC, x.meter_id LIMIT $2",
    )
    .bind(&q.alarm)
    .bind(limit(q.limit, 200))
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT alarm, count(*) FROM metering.meter_alarms WHERE cleared_at IS NULL
          GROUP BY alarm ORDER BY alarm",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let counts: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(a, n)| (a, n.into())).collect();
    Ok(Json(
        serde_json::json!({ "counts": counts, "alarms": rows }),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct MeterRow {
    meter_id: String,
    gateway_id: String,
    profile_id: String,
    max_flow_lph: Option<f64>,
    last_ts: Option<DateTime<Utc>>,
    last_volume_l: Option<i64>,
    last_alarms: Option<Vec<String>>,
    last_seen_at: Option<DateTime<Utc>>,
}

const METER_COLUMNS: &str = "meter_id, gateway_id, profile_id, max_flow_lph, last_ts, last_volume_l, last_alarms, last_seen_at";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/dashboard/meters?q=&limit=`: meters whose id starts with `q`.
async fn search(
    State(s): State<S>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let prefix = q.q.unwrap_or_default();
    if prefix.len() > 128 {
        return Err(ApiError::BadRequest("search text too long".into()));
    }
    let pattern = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let rows: Vec<MeterRow> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters WHERE meter_id LIKE $1
          ORDER BY meter_id LIMIT $2"
    ))
    .bind(pattern)
    .bind(limit(q.limit, 50))
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "meters": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilentQuery {
    hours: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/dashboard/silent?hours=N&limit=`: meters without a reading
/// for `hours` (default 24), the longest silent first, and how many in all.
async fn silent(
    State(s): State<S>,
    Query(q): Query<SilentQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 400) as i32;
    let rows: Vec<MeterRow> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters
          WHERE last_ts IS NULL OR last_ts < now() - make_interval(hours => $1)
          ORDER BY last_ts ASC NULLS FIRST, meter_id LIMIT $2"
    ))
    .bind(hours)
    .bind(limit(q.limit, 200))
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM metering.meters
          WHERE last_ts IS NULL OR last_ts < now() - make_interval(hours => $1)",
    )
    .bind(hours)
    .fetch_one(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(
        serde_json::json!({ "hours": hours, "total": total, "meters": rows }),
    ))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AlarmSpan {
    alarm: String,
    since: DateTime<Utc>,
    cleared_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/dashboard/meters/{id}`: the meter, its open alarms with
/// since-when and its last 20 alarm spans.
async fn meter(
    State(s): State<S>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row: Option<MeterRow> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters WHERE meter_id = $1"
    ))
    .bind(&id)
    .fetch_optional(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    let Some(row) = row else {
        return Err(ApiError::NotFound(format!("no meter {id:?}")));
    };
    let spans: Vec<AlarmSpan> = sqlx::query_as(
        "SELECT alarm, since, cleared_at FROM metering.meter_alarms
          WHERE meter_id = $1 ORDER BY since DESC LIMIT 20",
    )
    .bind(&id)
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "meter": row, "alarms": spans })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<i64>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct QuarantinedReading {
    id: i64,
    received_at: DateTime<Utc>,
    gateway_id: Option<String>,
    batch_seq: Option<i64>,
    reason: String,
    detail: String,
    ts: Option<DateTime<Utc>>,
    reading: Option<serde_json::Value>,
}

/// `GET /api/v1/dashboard/meters/{id}/quarantine?limit=` (operator): the
/// meter's quarantined readings, newest first.
async fn meter_quarantine(
    State(s): State<S>,
    Path(id): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows: Vec<QuarantinedReading> = sqlx::query_as(
        "SELECT id, received_at, gateway_id, batch_seq, reason, detail, ts, reading
           FROM metering.quarantine WHERE meter_id = $1
          ORDER BY ts DESC NULLS LAST, id DESC LIMIT $2",
    )
    .bind(&id)
    .bind(limit(q.limit, 100))
    .fetch_all(&s.api_pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "meter_id": id, "items": rows })))
}
