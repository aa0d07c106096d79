//! HTTP handlers for the ledger, payments, corrections, reports and account
//! administration (roles are applied by the router in `service`). Every
//! change is attributed to the caller's token name in the audit log.

use super::AppState;
use crate::accounts::Account;
use crate::corrections::{AdjustmentRequest, CorrectionError, RebillRequest};
use crate::ledger::{LedgerError, PaymentRequest};
use crate::period::Period;
use crate::run::{ReleaseError, SqlReads};
use crate::BillingError;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::NaiveDate;
use serde::Deserialize;
use sqlx::Row;
use waterworks_service::auth::Caller;
use waterworks_service::error::ApiError;

type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Maps a billing error to what the caller may see.
pub(crate) fn api_error(e: BillingError) -> ApiError {
    match e {
        BillingError::Ledger(e @ LedgerError::NoBill(_)) => ApiError::NotFound(e.to_string()),
        BillingError::Ledger(
            e @ (LedgerError::NotIssued(..)
            | LedgerError::KeyConflict(_)
            | LedgerError::OverAdjusted { .. }),
        ) => ApiError::Conflict(e.to_string()),
        BillingError::Ledger(e) => ApiError::BadRequest(e.to_string()),
        BillingError::Correction(e @ CorrectionError::Unpriced(..)) => {
            ApiError::Conflict(e.to_string())
        }
        BillingError::Correction(e) => ApiError::BadRequest(e.to_string()),
        BillingError::BankFile(e) => ApiError::BadRequest(e.to_string()),
        BillingError::Account(e) => ApiError::BadRequest(e.to_string()),
        BillingError::Release(e @ ReleaseError::NotFound(_)) => ApiError::NotFound(e.to_string()),
        BillingError::Release(e) => ApiError::Conflict(e.to_string()),
        BillingError::Db(e) => ApiError::from_db(&e),
        e => ApiError::internal(e),
    }
}

fn bill_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("bill id {id:?} is not a number")))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    #[default]
    Json,
    Csv,
}

fn respond<T: serde::Serialize>(
    format: Format,
    v: &T,
    csv: impl FnOnce(&T) -> String,
) -> Result<Response, ApiError> {
    Ok(match format {
        Format::Json => Json(serde_json::to_value(v).map_err(ApiError::internal)?).into_response(),
        Format::Csv => {
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv(v)).into_response()
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatQuery {
    #[serde(default)]
    format: Format,
}

pub(crate) async fn trial_balance(
    State(s): State<AppState>,
    q: Result<Query<FormatQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tb = crate::reports::trial_balance(&s.pool)
        .await
        .map_err(api_error)?;
    respond(q.format, &tb, |t| t.to_csv())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgeingQuery {
    as_of: Option<NaiveDate>,
    /// Arrears: bills older than this many days (default 30).
    min_days: Option<i64>,
    #[serde(default)]
    format: Format,
}

pub(crate) async fn ageing(
    State(s): State<AppState>,
    q: Result<Query<AgeingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let as_of = q.as_of.unwrap_or_else(crate::corrections::today);
    let a = crate::reports::ageing(&s.pool, as_of)
        .await
        .map_err(api_error)?;
    respond(q.format, &a, |a| a.to_csv())
}

pub(crate) async fn arrears(
    State(s): State<AppState>,
    q: Result<Query<AgeingQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let as_of = q.as_of.unwrap_or_else(crate::corrections::today);
    let a = crate::reports::arrears(&s.pool, as_of, q.min_days.unwrap_or(30).max(0))
        .await
        .map_err(api_error)?;
    respond(q.format, &a, |a| a.to_csv())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryQuery {
    period: Period,
    group: Option<String>,
    #[serde(default)]
    format: Format,
}

pub(crate) async fn run_summary(
    State(s): State<AppState>,
    q: Result<Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let r = crate::reports::run_summary(&s.pool, &q.period, q.group.as_deref())
        .await
        .map_err(api_error)?;
    respond(q.format, &r, |r| r.to_csv())
}

/// The entries naming a bill, with their postings.
pub(crate) async fn bill_entries(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = bill_id(&id)?;
    let rows = sqlx::query(
        "SELECT e.entry_id, e.source, e.idem_key, e.effective_on, e.memo, e.created_by, e.created_at, \
                p.ledger_account, p.component, p.amount_krw \
           FROM billing.journal_entries e JOIN billing.postings p USING (entry_id) \
          WHERE e.entry_id IN (SELECT entry_id FROM billing.postings \
                 WHERE party = (SELECT account_no FROM billing.bills WHERE bill_id = $1) AND bill_id = $1) \
          ORDER BY e.entry_id, p.ledger_account LIMIT 1000",
    )
    .bind(id)
    .fetch_all(&s.pool)
    .await
    .map_err(ApiError::internal)?;
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for r in rows {
        let get = |r: &sqlx::postgres::PgRow| -> Result<_, sqlx::Error> {
            Ok((
                r.try_get::<i64, _>(0)?,
                serde_json::json!({ "account": r.try_get::<String, _>(7)?,
                    "part": r.try_get::<Option<String>, _>(8)?, "amount_krw": r.try_get::<i64, _>(9)? }),
            ))
        };
        let (entry_id, posting) = get(&r).map_err(ApiError::internal)?;
        if entries.last().is_none_or(|e| e["entry_id"] != entry_id) {
            let head = || -> Result<serde_json::Value, sqlx::Error> {
                Ok(serde_json::json!({
                    "entry_id": entry_id,
                    "source": r.try_get::<String, _>(1)?,
                    "key": r.try_get::<String, _>(2)?,
                    "effective_on": r.try_get::<NaiveDate, _>(3)?,
                    "memo": r.try_get::<String, _>(4)?,
                    "created_by": r.try_get::<String, _>(5)?,
                    "created_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>(6)?,
                    "postings": [],
                }))
            };
            entries.push(head().map_err(ApiError::internal)?);
        }
        if let Some(serde_json::Value::Array(p)) =
            entries.last_mut().and_then(|e| e.get_mut("postings"))
        {
            p.push(posting);
        }
    }
    Ok(Json(
        serde_json::json!({ "bill_id": id, "entries": entries }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    target: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn audit(
    State(s): State<AppState>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let log = crate::corrections::audit_log(&s.pool, q.target.as_deref(), q.limit.unwrap_or(100))
        .await
        .map_err(api_error)?;
    Ok(Json(serde_json::json!({ "audit": log })))
}

pub(crate) async fn post_payment(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Body<PaymentRequest>,
) -> Result<Json<crate::payments::PaymentOutcome>, ApiError> {
    let p = body(b)?;
    crate::payments::record_payment(&s.pool, &p, &caller.name)
        .await
        .map(Json)
        .map_err(api_error)
}

pub(crate) async fn import_payments(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    text: String,
) -> Result<Json<crate::payments::ImportOutcome>, ApiError> {
    crate::payments::import_bank_file(&s.pool, &text, &caller.name)
        .await
        .map(Json)
        .map_err(api_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelRequest {
    reason: String,
}

pub(crate) async fn cancel(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    b: Body<CancelRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = bill_id(&id)?;
    let req = body(b)?;
    crate::corrections::cancel_bill(&s.pool, id, &req.reason, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(
        serde_json::json!({ "bill_id": id, "status": "cancelled" }),
    ))
}

pub(crate) async fn rebill(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    b: Body<RebillRequest>,
) -> Result<Json<crate::corrections::RebillOutcome>, ApiError> {
    let id = bill_id(&id)?;
    let req = body(b)?;
    crate::corrections::rebill(
        &s.pool,
        &s.book,
        id,
        &req,
        &SqlReads(&s.pool),
        &s.policy,
        &caller.name,
    )
    .await
    .map(Json)
    .map_err(api_error)
}

pub(crate) async fn adjust(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    b: Body<AdjustmentRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = bill_id(&id)?;
    let req = body(b)?;
    let entry_id = crate::corrections::adjust_bill(&s.pool, id, &req, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(
        serde_json::json!({ "bill_id": id, "entry_id": entry_id }),
    ))
}

/// Accounts upserted per request at most.
pub const MAX_ACCOUNTS_PER_REQUEST: usize = 10_000;

pub(crate) async fn upsert_accounts(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Body<Vec<Account>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let accounts = body(b)?;
    if accounts.len() > MAX_ACCOUNTS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ACCOUNTS_PER_REQUEST} accounts per request"
        )));
    }
    // The audit record is written in the change's transaction.
    crate::accounts::upsert_accounts_audited(&s.pool, &accounts, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(serde_json::json!({ "upserted": accounts.len() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReductionsRequest {
    reductions: Vec<String>,
}

pub(crate) async fn set_reductions(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    UrlPath(no): UrlPath<String>,
    b: Body<ReductionsRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req = body(b)?;
    if req.reductions.len() > 16 || req.reductions.iter().any(|r| r.len() > 64) {
        return Err(ApiError::BadRequest(
            "at most 16 reductions of at most 64 bytes".into(),
        ));
    }
    // The audit record is written in the change's transaction.
    let found = crate::accounts::set_reductions(&s.pool, &no, &req.reductions, &caller.name)
        .await
        .map_err(api_error)?;
    if !found {
        return Err(ApiError::NotFound(format!("no account {no:?}")));
    }
    Ok(Json(
        serde_json::json!({ "account_no": no, "reductions": req.reductions }),
    ))
}
