//! Meters (viewer): the list with its filters, one meter's stored readings
//! and its daily usage. Registering meters is [`super::registry`].

use super::{checked, db_error, known_meter, MeterPath, Q, S};
use crate::vee::EXPECTED_READ_INTERVAL_S;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration, Utc};
use waterworks_api::ingest::{
    Daily, DailyQuery, Day, Meter, MeterList, MeterStatus, MetersQuery, Reading, Readings,
    ReadingsQuery, MAX_ROWS,
};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/api/v1/meters", get(list))
        .route("/api/v1/meters/{id}/readings", get(readings))
        .route("/api/v1/meters/{id}/daily", get(daily))
}

/// The columns of [`Meter`].
pub(crate) const METER_COLUMNS: &str = "meter_id, gateway_id, profile_id, max_flow_lph, last_ts, last_volume_l, last_alarms, last_seen_at";

/// `GET /api/v1/meters?status=silent&hours=N | status=alarm [&gateway_id]`.
#[utoipa::path(get, path = "/api/v1/meters", tag = "meters", operation_id = "list_meters",
    summary = "Meters, optionally by status or gateway",
    extensions(("x-role" = json!("viewer"))),
    params(MetersQuery),
    responses(
        (status = 200, description = "meters by id", body = MeterList),
        (status = 400, description = "bad_request: a parameter out of its bounds", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(s): State<S>,
    Q(q): Q<MetersQuery>,
) -> Result<Json<MeterList>, ApiError> {
    let (hours, limit) = checked(q.check())?;
    let filter = match q.status.unwrap_or(MeterStatus::All) {
        MeterStatus::All => "TRUE",
        MeterStatus::Silent => {
            "(last_ts IS NULL OR last_ts < now() - make_interval(hours => $1::int))"
        }
        MeterStatus::Alarm => "cardinality(coalesce(last_alarms, '{}')) > 0",
    };
    let sql = format!(
        "SELECT {METER_COLUMNS} FROM metering.meters
          WHERE {filter} AND ($1::int IS NOT NULL) AND ($2::text IS NULL OR gateway_id = $2)
          ORDER BY meter_id LIMIT $3"
    );
    let meters: Vec<Meter> = sqlx::query_as(&sql)
        .bind(hours as i32)
        .bind(q.gateway_id)
        .bind(limit)
        .fetch_all(&s.api_pool)
        .await
        .map_err(db_error)?;
    Ok(Json(MeterList { meters }))
}

/// `GET /api/v1/meters/{id}/readings?from&to&limit` (default: the last day).
#[utoipa::path(get, path = "/api/v1/meters/{id}/readings", tag = "meters",
    operation_id = "meter_readings",
    summary = "Stored readings of one meter, in time order",
    extensions(("x-role" = json!("viewer"))),
    params(("id" = String, Path, description = "meter id", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ReadingsQuery),
    responses(
        (status = 200, description = "readings in time order", body = Readings),
        (status = 400, description = "bad_request: a malformed id or a parameter out of its bounds", body = ErrorBody),
        (status = 404, description = "not_found: no such meter", body = ErrorBody),
    ))]
pub(super) async fn readings(
    State(s): State<S>,
    MeterPath(id): MeterPath,
    Q(q): Q<ReadingsQuery>,
) -> Result<Json<Readings>, ApiError> {
    let limit = checked(q.check())?;
    let to = q.to.unwrap_or_else(Utc::now);
    let from = q
        .from
        .unwrap_or_else(|| to.checked_sub_signed(Duration::days(1)).unwrap_or(to));
    known_meter(&s, &id).await?;
    let readings: Vec<Reading> = sqlx::query_as(
        "SELECT ts, volume_l, flow_lph, alarms FROM metering.readings_v1
          WHERE meter_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts LIMIT $4",
    )
    .bind(id.as_str())
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(&s.api_pool)
    .await
    .map_err(db_error)?;
    Ok(Json(Readings {
        meter_id: id.to_string(),
        from,
        to,
        readings,
    }))
}

/// `GET /api/v1/meters/{id}/daily?from&to` (UTC days; default: the last 31).
#[utoipa::path(get, path = "/api/v1/meters/{id}/daily", tag = "meters",
    operation_id = "meter_daily",
    summary = "Daily usage of one meter, UTC days",
    extensions(("x-role" = json!("viewer"))),
    params(("id" = String, Path, description = "meter id", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        DailyQuery),
    responses(
        (status = 200, description = "days in order", body = Daily),
        (status = 400, description = "bad_request: a malformed id or parameter", body = ErrorBody),
        (status = 404, description = "not_found: no such meter", body = ErrorBody),
    ))]
pub(super) async fn daily(
    State(s): State<S>,
    MeterPath(id): MeterPath,
    Q(q): Q<DailyQuery>,
) -> Result<Json<Daily>, ApiError> {
    let to = q.to.unwrap_or_else(|| Utc::now().date_naive());
    let earliest = to.checked_sub_signed(Duration::days(MAX_ROWS - 1));
    let from = q
        .from
        .or_else(|| to.checked_sub_signed(Duration::days(30)))
        .unwrap_or(to);
    // The documented cap: a longer range answers its last MAX_ROWS days.
    let from = earliest.map_or(from, |e| from.max(e));
    known_meter(&s, &id).await?;
    let expected = (86_400 / EXPECTED_READ_INTERVAL_S) as i32;
    let days: Vec<Day> = sqlx::query_as(
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
    Ok(Json(Daily {
        meter_id: id.to_string(),
        days,
    }))
}
