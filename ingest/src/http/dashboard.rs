//! The operators' dashboard under `/api/v1/dashboard/...`, read from what
//! the sampler ([`crate::dashboard`]) keeps. Every list is bounded by
//! `limit`, at most [`waterworks_api::ingest::DASHBOARD_MAX_ROWS`].
//!
//! - viewer: `overview`, `alarms`, `meters` (id prefix), `silent`,
//!   `meters/{id}`;
//! - operator: `meters/{id}/quarantine`.

use super::meters::METER_COLUMNS;
use super::{checked, db_error, MeterPath, Q, S};
use crate::dashboard::SAMPLE_INTERVAL_S;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;
use waterworks_api::ingest::{
    Alarm, AlarmList, AlarmSpan, AlarmsQuery, Bucket, FleetCounts, Meter, MeterDetail, MeterList,
    MeterQuarantine, MeterQuarantineQuery, OpenAlarm, Overview, OverviewQuery, QuarantinedReading,
    ReasonCount, SearchQuery, SilentMeters, SilentQuery, Window,
};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn viewer_routes() -> Router<S> {
    Router::new()
        .route("/api/v1/dashboard/overview", get(overview))
        .route("/api/v1/dashboard/alarms", get(alarms))
        .route("/api/v1/dashboard/meters", get(search))
        .route("/api/v1/dashboard/silent", get(silent))
        .route("/api/v1/dashboard/meters/{id}", get(meter))
}

pub(super) fn operator_routes() -> Router<S> {
    Router::new().route(
        "/api/v1/dashboard/meters/{id}/quarantine",
        get(meter_quarantine),
    )
}

/// `GET /api/v1/dashboard/overview?window=hour|day`: per-bucket readings,
/// batches, quarantined and lag; readings per second over the last full
/// minute; quarantine by reason (last hour, last day); fleet counts.
#[utoipa::path(get, path = "/api/v1/dashboard/overview", tag = "dashboard",
    operation_id = "dashboard_overview",
    summary = "The operators' overview",
    description = "Per-minute (window=hour) or per-15-minute (window=day) readings stored, \
batches, readings quarantined and largest ingest lag; readings per second over the last full \
minute; quarantine counts by reason (times seen, of the rows last seen within the last hour and \
day); fleet counts. Kept by the dashboard sampler every 10 s.",
    extensions(("x-role" = json!("viewer"))),
    params(OverviewQuery),
    responses(
        (status = 200, description = "the overview", body = Overview),
        (status = 400, description = "bad_request: an unknown window", body = ErrorBody),
    ))]
pub(super) async fn overview(
    State(s): State<S>,
    Q(q): Q<OverviewQuery>,
) -> Result<Json<Overview>, ApiError> {
    let window = q.window.unwrap_or(Window::Hour);
    let (span_s, step_s) = match window {
        Window::Hour => (3600i64, 60i64),
        Window::Day => (86_400, 900),
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
    .map_err(db_error)?;
    let last_minute: Option<i64> = sqlx::query_scalar(
        "SELECT readings FROM metering.ingest_minutes
          WHERE minute = date_trunc('minute', now()) - interval '1 minute'",
    )
    .fetch_optional(&s.api_pool)
    .await
    .map_err(db_error)?;
    let lag_ms: Option<i64> = sqlx::query_scalar(
        "SELECT lag_ms_max FROM metering.ingest_minutes
          WHERE lag_ms_max IS NOT NULL AND minute > now() - interval '1 hour'
          ORDER BY minute DESC LIMIT 1",
    )
    .fetch_optional(&s.api_pool)
    .await
    .map_err(db_error)?
    .flatten();
    let quarantine_by_reason: Vec<ReasonCount> = sqlx::query_as(
        "SELECT reason,
                coalesce(sum(seen_count) FILTER (WHERE last_seen_at > now() - interval '1 hour'), 0)::int8
                    AS last_hour,
                sum(seen_count)::int8 AS last_day
           FROM metering.quarantine WHERE last_seen_at > now() - interval '1 day'
          GROUP BY reason ORDER BY reason",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    let counts: FleetCounts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM metering.meters) AS meters,
                (SELECT count(*) FROM metering.meters
                  WHERE last_ts IS NULL OR last_ts < now() - interval '24 hours') AS silent_24h,
                (SELECT count(*) FROM metering.gateways) AS gateways,
                (SELECT count(*) FROM metering.gateways WHERE status = 'online') AS gateways_online,
                (SELECT count(*) FROM metering.meter_alarms WHERE cleared_at IS NULL) AS active_alarms",
    )
    .fetch_one(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(Overview {
        window,
        step_s,
        buckets,
        readings_per_s: last_minute.map(|r| r as f64 / 60.0).unwrap_or(0.0),
        lag_ms,
        quarantine_by_reason,
        counts,
        sample_interval_s: SAMPLE_INTERVAL_S,
    }))
}

/// `GET /api/v1/dashboard/alarms?alarm=&limit=`: open alarms, newest first,
/// with counts by alarm.
#[utoipa::path(get, path = "/api/v1/dashboard/alarms", tag = "dashboard",
    operation_id = "dashboard_alarms",
    summary = "Open alarms with since-when, newest first, and counts by alarm",
    extensions(("x-role" = json!("viewer"))),
    params(AlarmsQuery),
    responses(
        (status = 200, description = "open alarms", body = AlarmList),
        (status = 400, description = "bad_request: an unknown alarm or a limit out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn alarms(
    State(s): State<S>,
    Q(q): Q<AlarmsQuery>,
) -> Result<Json<AlarmList>, ApiError> {
    let limit = checked(q.check())?;
    let alarms: Vec<OpenAlarm> = sqlx::query_as(
        "SELECT x.meter_id, m.gateway_id, x.alarm, x.since, m.last_ts, m.last_volume_l
           FROM metering.meter_alarms x JOIN metering.meters m USING (meter_id)
          WHERE x.cleared_at IS NULL AND ($1::text IS NULL OR x.alarm = $1)
          ORDER BY x.since DESC, x.meter_id LIMIT $2",
    )
    .bind(q.alarm)
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    let counts: Vec<(Alarm, i64)> = sqlx::query_as(
        "SELECT alarm, count(*) FROM metering.meter_alarms WHERE cleared_at IS NULL
          GROUP BY alarm ORDER BY alarm",
    )
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(AlarmList {
        counts: counts.into_iter().collect::<BTreeMap<_, _>>(),
        alarms,
    }))
}

/// `GET /api/v1/dashboard/meters?q=&limit=`: meters whose id starts with `q`.
#[utoipa::path(get, path = "/api/v1/dashboard/meters", tag = "dashboard",
    operation_id = "dashboard_search",
    summary = "Meters whose id starts with q",
    extensions(("x-role" = json!("viewer"))),
    params(SearchQuery),
    responses(
        (status = 200, description = "meters by id", body = MeterList),
        (status = 400, description = "bad_request: q is not the beginning of a meter id, or a limit out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn search(
    State(s): State<S>,
    Q(q): Q<SearchQuery>,
) -> Result<Json<MeterList>, ApiError> {
    let limit = checked(q.check())?;
    let prefix = q.q.unwrap_or_default();
    // Ids hold no `%` or `\`; `_` is a LIKE wildcard and is escaped.
    let pattern = format!("{}%", prefix.replace('_', "\\_"));
    let meters: Vec<Meter> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters WHERE meter_id LIKE $1
          ORDER BY meter_id LIMIT $2"
    ))
    .bind(pattern)
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(MeterList { meters }))
}

/// `GET /api/v1/dashboard/silent?hours=N&limit=`: meters without a reading
/// for `hours` (default 24), the longest silent first, and how many in all.
#[utoipa::path(get, path = "/api/v1/dashboard/silent", tag = "dashboard",
    operation_id = "dashboard_silent",
    summary = "Meters without a reading for `hours`, longest silent first, and how many in all",
    extensions(("x-role" = json!("viewer"))),
    params(SilentQuery),
    responses(
        (status = 200, description = "silent meters", body = SilentMeters),
        (status = 400, description = "bad_request: a parameter out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn silent(
    State(s): State<S>,
    Q(q): Q<SilentQuery>,
) -> Result<Json<SilentMeters>, ApiError> {
    let (hours, limit) = checked(q.check())?;
    let meters: Vec<Meter> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters
          WHERE last_ts IS NULL OR last_ts < now() - make_interval(hours => $1)
          ORDER BY last_ts ASC NULLS FIRST, meter_id LIMIT $2"
    ))
    .bind(hours as i32)
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM metering.meters
          WHERE last_ts IS NULL OR last_ts < now() - make_interval(hours => $1)",
    )
    .bind(hours as i32)
    .fetch_one(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(SilentMeters {
        hours,
        total,
        meters,
    }))
}

/// `GET /api/v1/dashboard/meters/{id}`: the meter, its open alarms with
/// since-when and its last 20 alarm spans.
#[utoipa::path(get, path = "/api/v1/dashboard/meters/{id}", tag = "dashboard",
    operation_id = "dashboard_meter",
    summary = "One meter with its last 20 alarm spans (since, cleared_at)",
    extensions(("x-role" = json!("viewer"))),
    params(("id" = String, Path, description = "meter id", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "the meter", body = MeterDetail),
        (status = 400, description = "bad_request: a malformed id", body = ErrorBody),
        (status = 404, description = "not_found: no such meter", body = ErrorBody),
    ))]
pub(super) async fn meter(
    State(s): State<S>,
    MeterPath(id): MeterPath,
) -> Result<Json<MeterDetail>, ApiError> {
    let meter: Option<Meter> = sqlx::query_as(&format!(
        "SELECT {METER_COLUMNS} FROM metering.meters WHERE meter_id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(&s.api_pool)
    .await
    .map_err(db_error)?;
    let Some(meter) = meter else {
        return Err(ApiError::NotFound(format!("no meter {id}")));
    };
    let alarms: Vec<AlarmSpan> = sqlx::query_as(
        "SELECT alarm, since, cleared_at FROM metering.meter_alarms
          WHERE meter_id = $1 ORDER BY since DESC LIMIT 20",
    )
    .bind(id.as_str())
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(MeterDetail { meter, alarms }))
}

/// `GET /api/v1/dashboard/meters/{id}/quarantine?limit=` (operator): the
/// meter's quarantined readings, newest first.
#[utoipa::path(get, path = "/api/v1/dashboard/meters/{id}/quarantine", tag = "dashboard",
    operation_id = "dashboard_meter_quarantine",
    summary = "A meter's quarantined readings, newest first",
    extensions(("x-role" = json!("operator"))),
    params(("id" = String, Path, description = "meter id", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        MeterQuarantineQuery),
    responses(
        (status = 200, description = "quarantined readings (none for a meter ingest does not know)", body = MeterQuarantine),
        (status = 400, description = "bad_request: a malformed id or a limit out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn meter_quarantine(
    State(s): State<S>,
    MeterPath(id): MeterPath,
    Q(q): Q<MeterQuarantineQuery>,
) -> Result<Json<MeterQuarantine>, ApiError> {
    let limit = checked(q.check())?;
    let items: Vec<QuarantinedReading> = sqlx::query_as(
        "SELECT id, received_at, gateway_id, batch_seq, reason, detail, ts, reading
           FROM metering.quarantine WHERE meter_id = $1
          ORDER BY ts DESC NULLS LAST, id DESC LIMIT $2",
    )
    .bind(id.as_str())
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(MeterQuarantine {
        meter_id: id.to_string(),
        items,
    }))
}
