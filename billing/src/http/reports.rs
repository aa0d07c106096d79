//! Reports (viewer): receivables ageing, arrears and the billing run
//! summary, each as JSON or CSV (`?format=csv`, `text/csv`).

use super::{api_error, parse_period, AppState, HttpError, Query};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use waterworks_api::billing::{
    Ageing, AgeingQuery, Arrears, ArrearsQuery, ReportFormat, RunSummary, SummaryQuery,
    MAX_MIN_DAYS,
};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn viewer() -> Router<AppState> {
    Router::new()
        .route("/api/v1/reports/ageing", get(ageing))
        .route("/api/v1/reports/arrears", get(arrears))
        .route("/api/v1/reports/run-summary", get(run_summary))
}

/// A report as JSON, or as CSV for a spreadsheet.
pub(super) fn respond<T: serde::Serialize>(
    format: ReportFormat,
    v: &T,
    csv: impl FnOnce(&T) -> String,
) -> Result<Response, HttpError> {
    Ok(match format {
        ReportFormat::Json => Json(v).into_response(),
        ReportFormat::Csv => {
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv(v)).into_response()
        }
    })
}

/// Receivables ageing: 0-30, 31-60, 61-90 and 90+ days from each bill's date.
#[utoipa::path(get, path = "/api/v1/reports/ageing", tag = "reports",
    params(AgeingQuery),
    responses((status = 200, description = "Open receivables by age",
            content((Ageing = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn ageing(
    State(s): State<AppState>,
    Query(q): Query<AgeingQuery>,
) -> Result<Response, HttpError> {
    let as_of = q.as_of.unwrap_or_else(crate::corrections::today);
    let a = crate::reports::ageing(&s.pool, as_of)
        .await
        .map_err(api_error)?;
    respond(q.format.unwrap_or_default(), &a, |a| a.to_csv())
}

/// Customers with a bill open longer than `min_days`, largest overdue first.
#[utoipa::path(get, path = "/api/v1/reports/arrears", tag = "reports",
    params(ArrearsQuery),
    responses((status = 200, description = "Customers in arrears",
            content((Arrears = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn arrears(
    State(s): State<AppState>,
    Query(q): Query<ArrearsQuery>,
) -> Result<Response, HttpError> {
    let min_days = q.min_days.unwrap_or(30);
    if !(0..=MAX_MIN_DAYS).contains(&min_days) {
        return Err(ApiError::BadRequest(format!(
            "min_days {min_days} must be between 0 and {MAX_MIN_DAYS}"
        ))
        .into());
    }
    let as_of = q.as_of.unwrap_or_else(crate::corrections::today);
    let a = crate::reports::arrears(&s.pool, as_of, min_days)
        .await
        .map_err(api_error)?;
    respond(q.format.unwrap_or_default(), &a, |a| a.to_csv())
}

/// A period's issued bills by usage type and component (optionally one
/// billing group's).
#[utoipa::path(get, path = "/api/v1/reports/run-summary", tag = "reports",
    params(SummaryQuery),
    responses((status = 200, description = "The run summary",
            content((RunSummary = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn run_summary(
    State(s): State<AppState>,
    Query(q): Query<SummaryQuery>,
) -> Result<Response, HttpError> {
    let period = parse_period(&q.period)?;
    if q.group
        .as_ref()
        .is_some_and(|g| g.is_empty() || g.chars().count() > 64)
    {
        return Err(ApiError::BadRequest("group must be 1-64 characters".into()).into());
    }
    let r = crate::reports::run_summary(&s.pool, &period, q.group.as_deref())
        .await
        .map_err(api_error)?;
    respond(q.format.unwrap_or_default(), &r, |r| r.to_csv())
}
