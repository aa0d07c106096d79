//! Accounts: search and detail (viewer); upsert and reductions (admin).

use super::bills::live_bills;
use super::{
    api_error, db_error, like_escape, limit, search_text, Answer, AppState, Body, HttpError, Query,
};
use crate::period::Period;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use waterworks_api::billing::{
    Account, AccountDetail, AccountHeader, AccountHit, AccountSearch, AccountSearchQuery,
    MeterInstallation, ReductionsOutcome, ReductionsRequest, UpsertOutcome, HISTORY_MONTHS,
    MAX_ACCOUNTS_PER_REQUEST, MAX_METERS_LISTED, MAX_REDUCTIONS, MAX_REDUCTION_BYTES, MAX_SEARCH,
};
use waterworks_api::ErrorBody;
use waterworks_service::auth::Caller;
use waterworks_service::error::ApiError;

pub(super) fn viewer() -> Router<AppState> {
    Router::new()
        .route("/api/v1/accounts", get(search_accounts))
        .route("/api/v1/accounts/{no}", get(get_account))
}

pub(super) fn admin() -> Router<AppState> {
    Router::new()
        .route("/api/v1/accounts", post(upsert_accounts))
        .route("/api/v1/accounts/{no}/reductions", put(set_reductions))
}

/// Accounts whose number or meter id matches exactly or by prefix, or whose
/// customer or address contains the text, with their current meters.
#[utoipa::path(get, path = "/api/v1/accounts", tag = "accounts",
    params(AccountSearchQuery),
    responses((status = 200, body = AccountSearch), (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_accounts(
    State(s): State<AppState>,
    Query(q): Query<AccountSearchQuery>,
) -> Answer<AccountSearch> {
    let limit = limit(q.limit, 50, MAX_SEARCH)?;
    let Some(text) = search_text(&q.q)? else {
        return Ok(Json(AccountSearch {
            accounts: Vec::new(),
            truncated: false,
        }));
    };
    let esc = like_escape(&text);
    let accounts: Vec<AccountHit> = sqlx::query_as(
        "SELECT a.account_no, a.customer, a.address, a.usage_type, a.billing_group, \
                coalesce((SELECT array_agg(m.meter_id ORDER BY m.installed_at) \
                            FROM billing.meter_installations m \
                           WHERE m.account_no = a.account_no AND m.removed_at IS NULL), '{}') AS meters \
           FROM billing.accounts a \
          WHERE a.account_no IN ( \
                SELECT account_no FROM billing.accounts \
                 WHERE account_no = $1 OR account_no LIKE $2 OR customer ILIKE $3 OR address ILIKE $3 \
                UNION \
                SELECT account_no FROM billing.meter_installations \
                 WHERE meter_id = $1 OR meter_id LIKE $2) \
          ORDER BY (a.account_no = $1) DESC, a.account_no LIMIT $4",
    )
    .bind(&text)
    .bind(format!("{esc}%"))
    .bind(format!("%{esc}%"))
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    let truncated = accounts.len() as i64 == limit;
    Ok(Json(AccountSearch {
        accounts,
        truncated,
    }))
}

/// An account's own fields and meter history, or `None`.
pub(crate) async fn load_header(
    s: &AppState,
    no: &str,
) -> Result<Option<AccountHeader>, HttpError> {
    let Some(mut a) = sqlx::query_as::<_, AccountHeader>(
        "SELECT account_no, customer, address, usage_type, diameter_mm, households, \
                sewer_connected, levy_exempt, reductions, billing_group \
           FROM billing.accounts WHERE account_no = $1",
    )
    .bind(no)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    else {
        return Ok(None);
    };
    a.meters = sqlx::query_as::<_, MeterInstallation>(
        "SELECT meter_id, installed_at, removed_at FROM billing.meter_installations \
          WHERE account_no = $1 ORDER BY installed_at LIMIT $2",
    )
    .bind(no)
    .bind(MAX_METERS_LISTED)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    Ok(Some(a))
}

/// An account, its meters, its balance and its last 12 live bills.
#[utoipa::path(get, path = "/api/v1/accounts/{no}", tag = "accounts",
    params(("no" = String, Path, description = "The account number")),
    responses((status = 200, body = AccountDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn get_account(
    State(s): State<AppState>,
    Path(no): Path<String>,
) -> Answer<AccountDetail> {
    let account = load_header(&s, &no)
        .await?
        .ok_or_else(|| HttpError::from(ApiError::NotFound(format!("no account {no:?}"))))?;
    let last: Option<String> = sqlx::query_scalar(
        "SELECT max(period) FROM billing.bills WHERE account_no = $1 AND status <> 'cancelled'",
    )
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    let bills = match last.and_then(|p| p.parse::<Period>().ok()) {
        Some(last) => {
            let first = last.add_months(-(HISTORY_MONTHS as i32 - 1));
            let mut b = live_bills(&s, &no, first, last).await?;
            b.reverse();
            b
        }
        None => Vec::new(),
    };
    let (open_krw, credit_krw): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(amount_krw) FILTER (WHERE ledger_account = '1100'), 0)::int8, \
                coalesce(-sum(amount_krw) FILTER (WHERE ledger_account = '2200'), 0)::int8 \
           FROM billing.postings WHERE party = $1 AND ledger_account IN ('1100', '2200')",
    )
    .bind(&no)
    .fetch_one(&s.pool)
    .await
    .map_err(db_error)?;
    Ok(Json(AccountDetail {
        account,
        open_krw,
        credit_krw,
        bills,
    }))
}

/// Create or update accounts (all or nothing); each account's meter history
/// is replaced by the one given.
#[utoipa::path(post, path = "/api/v1/accounts", tag = "accounts",
    request_body(content = Vec<Account>, description = "At most 10,000 accounts"),
    responses((status = 200, body = UpsertOutcome), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn upsert_accounts(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(accounts): Body<Vec<Account>>,
) -> Answer<UpsertOutcome> {
    if accounts.len() > MAX_ACCOUNTS_PER_REQUEST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ACCOUNTS_PER_REQUEST} accounts per request"
        ))
        .into());
    }
    // What the document bounds, checked here (the rest is the accounts'
    // own validation, 422).
    for a in &accounts {
        if a.meters.len() > MAX_METERS_LISTED as usize
            || a.meters
                .iter()
                .any(|m| m.meter_id.is_empty() || m.meter_id.chars().count() > 64)
        {
            return Err(ApiError::BadRequest(format!(
                "account {:?}: at most {MAX_METERS_LISTED} meters, each meter_id 1-64 characters",
                a.account_no.chars().take(64).collect::<String>()
            ))
            .into());
        }
    }
    let accounts: Vec<crate::accounts::Account> = accounts
        .into_iter()
        .map(crate::accounts::Account::from)
        .collect();
    // The audit record is written in the change's transaction.
    crate::accounts::upsert_accounts_audited(&s.pool, &accounts, &caller.name)
        .await
        .map_err(api_error)?;
    Ok(Json(UpsertOutcome {
        upserted: accounts.len(),
    }))
}

/// Grant or withdraw reductions: the account's reductions from now on.
#[utoipa::path(put, path = "/api/v1/accounts/{no}/reductions", tag = "accounts",
    params(("no" = String, Path, description = "The account number")),
    request_body = ReductionsRequest,
    responses((status = 200, body = ReductionsOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn set_reductions(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(no): Path<String>,
    Body(req): Body<ReductionsRequest>,
) -> Answer<ReductionsOutcome> {
    if req.reductions.len() > MAX_REDUCTIONS {
        return Err(ApiError::BadRequest(format!("at most {MAX_REDUCTIONS} reductions")).into());
    }
    if req.reductions.iter().any(|r| r.len() > MAX_REDUCTION_BYTES) {
        return Err(HttpError::Invalid(format!(
            "a reduction's name is at most {MAX_REDUCTION_BYTES} bytes"
        )));
    }
    // The audit record is written in the change's transaction.
    let found = crate::accounts::set_reductions(&s.pool, &no, &req.reductions, &caller.name)
        .await
        .map_err(api_error)?;
    if !found {
        return Err(ApiError::NotFound(format!("no account {no:?}")).into());
    }
    Ok(Json(ReductionsOutcome {
        account_no: no,
        reductions: req.reductions,
    }))
}
