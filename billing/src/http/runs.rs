//! Billing runs: the list and one run with its progress (viewer); starting
//! one (clerk). A month not over yet in Korea answers 409 `period_not_over`
//! unless forced with a reason, which the audit log keeps.

use super::{
    api_error, db_error, parse_id, parse_period, Answer, AppState, Body, HttpError, Query,
};
use crate::run::{run_billing_with, RunRequest, SqlReads};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use waterworks_api::billing::{
    HeldBill, Run, RunDetail, RunList, RunOutcome, RunProgress, RunsQuery, StartRun,
    MAX_REASON_CHARS, MAX_RUNS_LISTED,
};
use waterworks_api::{ErrorBody, ErrorCode};
use waterworks_service::auth::Caller;
use waterworks_service::error::ApiError;

pub(super) fn viewer() -> Router<AppState> {
    Router::new()
        .route("/api/v1/billing-runs", get(list_runs))
        .route("/api/v1/billing-runs/{id}", get(get_run))
}

pub(super) fn clerk() -> Router<AppState> {
    Router::new().route("/api/v1/billing-runs", axum::routing::post(post_run))
}

const RUN_COLUMNS: &str = "run_id, period, billing_group, status, started_at, finished_at, outcome";

/// Runs, newest first (at most 200).
#[utoipa::path(get, path = "/api/v1/billing-runs", tag = "runs",
    params(RunsQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn list_runs(
    State(s): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Answer<RunList> {
    let period = q.period.as_deref().map(parse_period).transpose()?;
    let runs: Vec<Run> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM billing.runs WHERE ($1::text IS NULL OR period = $1) \
          ORDER BY run_id DESC LIMIT $2"
    ))
    .bind(period.map(|p| p.to_string()))
    .bind(MAX_RUNS_LISTED)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    Ok(Json(RunList { runs }))
}

/// One run with its progress: the period's live bills of the group written
/// so far, against the group's accounts.
#[utoipa::path(get, path = "/api/v1/billing-runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "The run's id")),
    responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn get_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Answer<RunDetail> {
    let id = parse_id(&id, "run")?;
    let run: Run = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM billing.runs WHERE run_id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| HttpError::from(ApiError::NotFound(format!("no billing run {id}"))))?;
    // Progress without an index on bills.run_id (runs write bills as fast as
    // they can): the period's live bills of the group's accounts, through
    // the accounts' group index and the bills' (period, account) index.
    let progress: RunProgress = sqlx::query_as(
        "SELECT accounts, bills_written, held, \
                CASE WHEN accounts > 0 THEN least(bills_written * 100 / accounts, 100) ELSE 100 END \
                  AS percent \
           FROM (SELECT (SELECT count(*) FROM billing.accounts WHERE billing_group = $2)::int8 AS accounts, \
                        count(b.bill_id)::int8 AS bills_written, \
                        count(b.bill_id) FILTER (WHERE b.status = 'held')::int8 AS held \
                   FROM billing.accounts a \
                   JOIN billing.bills b ON b.account_no = a.account_no AND b.period = $1 \
                                       AND b.status <> 'cancelled' \
                  WHERE a.billing_group = $2) c",
    )
    .bind(&run.period)
    .bind(&run.group)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    Ok(Json(RunDetail { run, progress }))
}

/// The wire form of what a run did.
pub(crate) fn outcome(o: crate::run::RunOutcome) -> RunOutcome {
    RunOutcome {
        run_id: o.run_id,
        period: o.period.to_string(),
        group: o.group,
        dry_run: o.dry_run,
        accounts: o.accounts,
        bills_created: o.bills_created,
        bills_existing: o.bills_existing,
        held: o.held,
        estimated: o.estimated,
        usage_m3: o.usage_m3,
        totals_by_component: o.totals_by_component,
        totals_by_usage_type: o.totals_by_usage_type,
        total_krw: o.total_krw,
        holds: o
            .holds
            .into_iter()
            .map(|h| HeldBill {
                account_no: h.account_no,
                reasons: h.reasons,
            })
            .collect(),
    }
}

/// Run billing for a period and group; `dry_run` previews. A month not over
/// in Korea answers 409 `period_not_over` (with `billable_from`) unless
/// `force` with a `reason` (kept in the audit log).
#[utoipa::path(post, path = "/api/v1/billing-runs", tag = "runs",
    request_body = StartRun,
    responses((status = 200, body = RunOutcome), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`period_not_over` (with `period` and `billable_from`), or a run of the period and group in progress"),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn post_run(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(start): Body<StartRun>,
) -> Result<axum::response::Response, HttpError> {
    let period = parse_period(&start.period)?;
    if start.group.is_empty() || start.group.chars().count() > 64 {
        return Err(ApiError::BadRequest("group must be 1-64 characters".into()).into());
    }
    if start.reason.is_some() && !start.force {
        return Err(HttpError::Invalid(
            "reason is only for a forced run (\"force\": true)".into(),
        ));
    }
    if start
        .reason
        .as_deref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON_CHARS} characters"
        ))
        .into());
    }
    let force_reason = match (start.force, start.reason.as_deref()) {
        (true, None) => Some(""),
        (true, Some(r)) => Some(r),
        (false, _) => None,
    };
    let forced = match crate::run::admit(&period, chrono::Utc::now(), force_reason) {
        Ok(f) => f,
        Err(e @ crate::run::RunRefused::NotOver { billable_from, .. }) => {
            let mut body = ErrorBody::new(ErrorCode::PeriodNotOver, e.to_string());
            body.period = Some(period.to_string());
            body.billable_from = Some(billable_from);
            return Ok((StatusCode::CONFLICT, Json(body)).into_response());
        }
        Err(e @ crate::run::RunRefused::ReasonMissing) => {
            return Err(HttpError::Invalid(e.to_string()))
        }
    };
    let req = RunRequest {
        period,
        group: start.group,
        dry_run: start.dry_run,
    };
    if let (Some(reason), false) = (&forced, req.dry_run) {
        crate::run::record_forced_run(&s.pool, &req, reason, &caller.name)
            .await
            .map_err(|e| HttpError::from(ApiError::internal(e)))?;
    }
    let o = run_billing_with(&s.pool, &s.book, &req, &SqlReads(&s.pool), &s.policy)
        .await
        .map_err(api_error)?;
    Ok(Json(outcome(o)).into_response())
}
