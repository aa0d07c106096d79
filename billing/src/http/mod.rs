//! The billing HTTP API: one router per resource, the roles each route
//! needs, and the OpenAPI 3.1 document generated from the handlers.
//!
//! - open: `POST /api/v1/quote` ([`quote`]), `GET /api/v1/openapi.json`;
//! - viewer: bills, their entries, notices and searches ([`bills`]), runs
//!   ([`runs`]), the trial balance ([`ledger`]), reports ([`reports`]), the
//!   audit log ([`audit`]), account search and detail ([`accounts`]);
//! - clerk: start a run, release, cancel, rebill and adjust a bill, record
//!   and import payments ([`payments`]);
//! - admin: upsert accounts, set reductions.
//!
//! Every answer is a type of [`waterworks_api::billing`]; every error is
//! [`waterworks_api::ErrorBody`]. Handlers never build JSON by hand, and an
//! operation's role lives twice only by design: in the router (which
//! enforces it) and in its `x-role` (which documents it); the OpenAPI test
//! checks the two agree.

pub mod accounts;
pub mod audit;
pub mod bills;
pub mod ledger;
mod openapi;
pub mod payments;
pub mod quote;
pub mod reports;
pub mod runs;

pub use openapi::{openapi, ApiDoc};

use crate::tariff::TariffBook;
use crate::usage::HoldPolicy;
use crate::BillingError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::sync::Arc;
use waterworks_api::{ErrorBody, ErrorCode};
use waterworks_service::auth::{require, ApiTokens, Role};
use waterworks_service::error::ApiError;
use waterworks_service::limits::Limits;
use waterworks_service::ops::{routes, ReadyCheck};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) pool: PgPool,
    pub(crate) book: Arc<TariffBook>,
    pub(crate) policy: HoldPolicy,
    pub(crate) max_page_bytes: usize,
}

/// The whole service: open, viewer, clerk and admin routes, the limits
/// around them, and the probes and `/metrics` outside the limits.
pub(crate) fn router(state: AppState, tokens: Arc<ApiTokens>, limits: Arc<Limits>) -> Router {
    let ready_pool = state.pool.clone();
    let ready: ReadyCheck = Arc::new(move || {
        let pool = ready_pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|_| "database unreachable".to_string())
        })
    });
    let open = Router::new()
        .merge(quote::open())
        .route("/api/v1/openapi.json", axum::routing::get(openapi::serve))
        .merge(waterworks_service::auth::whoami(tokens.clone()));
    let viewer = Router::new()
        .merge(bills::viewer())
        .merge(runs::viewer())
        .merge(ledger::viewer())
        .merge(reports::viewer())
        .merge(audit::viewer())
        .merge(accounts::viewer());
    // Reads (reports, searches, lists) get the request deadline; writes
    // (a billing run) are left to finish, bound per statement instead.
    let viewer = waterworks_service::limits::deadline_layer(
        require(viewer, tokens.clone(), Role::Viewer),
        limits.clone(),
    );
    let clerk = Router::new()
        .merge(bills::clerk())
        .merge(runs::clerk())
        .merge(payments::clerk());
    let clerk = require(clerk, tokens.clone(), Role::Clerk);
    let admin = require(accounts::admin(), tokens.clone(), Role::Admin);
    let master = crate::master::http::routes(state.pool.clone(), &state.book, tokens);
    let api = open
        .merge(viewer)
        .merge(clerk)
        .merge(admin)
        .with_state(state)
        .merge(master);
    // Probes and /metrics stay outside the limits.
    waterworks_service::limits::admit_layer(api, limits).merge(routes(ready))
}

/// An error answer: [`ApiError`] for everything the service crate knows,
/// plus the statuses only a request's own shape produces here (413).
#[derive(Debug)]
pub enum HttpError {
    Api(ApiError),
    /// 413: the body is over the operation's limit.
    TooLarge(String),
    /// 422: the request is well-formed (schema-valid) but what it asks for
    /// is at fault: a usage type the tariff lacks, an unknown reduction, a
    /// zero adjustment, an empty bank file.
    Invalid(String),
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError::Api(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::Api(e) => e.into_response(),
            HttpError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(ErrorBody::new(ErrorCode::TooLarge, m)),
            )
                .into_response(),
            HttpError::Invalid(m) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ErrorBody::new(ErrorCode::Invalid, m)),
            )
                .into_response(),
        }
    }
}

/// What a handler answers.
pub type Answer<T> = Result<Json<T>, HttpError>;

/// An extractor's rejection as the one error body, with axum's status:
/// 413 when the body was over its limit, 422 when it is JSON of the wrong
/// shape (a field of the wrong type, a date that is no date, an unknown
/// field), 400 otherwise (not JSON, not UTF-8, a bad query string).
fn rejected(status: StatusCode, text: String) -> HttpError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => HttpError::TooLarge(text),
        StatusCode::UNPROCESSABLE_ENTITY => HttpError::Invalid(text),
        _ => HttpError::Api(ApiError::BadRequest(text)),
    }
}

/// A query string, refused with 400 `bad_request` when it does not parse.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// A JSON body, refused with 400 (or 413 over the body limit).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// A UTF-8 text body (a bank file), refused with 400 (or 413).
pub struct Text(pub String);

impl<S: Send + Sync> FromRequest<S> for Text {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        String::from_request(req, state)
            .await
            .map(Text)
            .map_err(|e| rejected(e.status(), e.body_text()))
    }
}

/// A numeric id from the path (`what` names it in the error).
pub(crate) fn parse_id(id: &str, what: &str) -> Result<i64, HttpError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("{what} id {id:?} is not a number")).into())
}

/// A period from a query or body, refused with 400.
pub(crate) fn parse_period(p: &str) -> Result<crate::Period, HttpError> {
    p.parse()
        .map_err(|e: crate::period::PeriodError| ApiError::BadRequest(e.to_string()).into())
}

/// `limit` within `1..=max`, or 400 (the document states the bounds).
pub(crate) fn limit(given: Option<i64>, default: i64, max: i64) -> Result<i64, HttpError> {
    match given {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => {
            Err(ApiError::BadRequest(format!("limit {n} must be between 1 and {max}")).into())
        }
    }
}

/// A database error as the caller may see it ([`ApiError::from_db`]: NUL
/// text is 422, a statement past its time limit 503, anything else
/// internal).
pub(crate) fn db_error(e: sqlx::Error) -> HttpError {
    ApiError::from_db(&e).into()
}

/// Maps a billing error to what the caller may see.
pub(crate) fn api_error(e: BillingError) -> HttpError {
    use crate::corrections::CorrectionError;
    use crate::ledger::LedgerError;
    use crate::payments::BankFileError;
    use crate::run::ReleaseError;
    let invalid = |e: &dyn std::fmt::Display| HttpError::Invalid(e.to_string());
    let api = |e: ApiError| HttpError::Api(e);
    match e {
        BillingError::Ledger(e @ (LedgerError::NoBill(_) | LedgerError::UnknownAccount(_))) => {
            api(ApiError::NotFound(e.to_string()))
        }
        BillingError::Ledger(
            e @ (LedgerError::NotIssued(..)
            | LedgerError::KeyConflict(_)
            | LedgerError::OverAdjusted { .. }),
        ) => api(ApiError::Conflict(e.to_string())),
        BillingError::Ledger(e) => invalid(&e),
        BillingError::Correction(
            e @ (CorrectionError::Unpriced(..) | CorrectionError::NoAccount(_)),
        ) => api(ApiError::Conflict(e.to_string())),
        BillingError::Correction(e) => invalid(&e),
        BillingError::BankFile(e @ BankFileError::TooLarge) => HttpError::TooLarge(e.to_string()),
        BillingError::BankFile(e) => invalid(&e),
        BillingError::Account(e) => invalid(&e),
        BillingError::Release(e @ ReleaseError::NotFound(_)) => {
            api(ApiError::NotFound(e.to_string()))
        }
        BillingError::Release(e) => api(ApiError::Conflict(e.to_string())),
        e @ BillingError::RunInProgress { .. } => api(ApiError::Conflict(e.to_string())),
        BillingError::Tariff(e) => invalid(&e),
        BillingError::Db(sqlx::Error::Database(d))
            if matches!(d.code().as_deref(), Some("23P01") | Some("23505"))
                && d.table() == Some("meter_installations") =>
        {
            HttpError::Invalid(
                "an installation overlaps or repeats another of the same meter or premises; nothing was written"
                    .into(),
            )
        }
        BillingError::Db(e) => db_error(e),
        e => api(ApiError::internal(e)),
    }
}

/// A search text: 1-100 characters, trimmed; `None` when only blanks are
/// left (a search for nothing finds nothing).
pub(crate) fn search_text(q: &str) -> Result<Option<String>, HttpError> {
    use waterworks_api::billing::MAX_QUERY_CHARS;
    let n = q.chars().count();
    if n == 0 || n > MAX_QUERY_CHARS {
        return Err(ApiError::BadRequest(format!(
            "q (search text) must be 1-{MAX_QUERY_CHARS} characters"
        ))
        .into());
    }
    let q = q.trim();
    Ok((!q.is_empty()).then(|| q.to_string()))
}

/// `%` and `_` are LIKE wildcards; a search for them means the characters.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_search_texts_are_checked_not_clamped() {
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(limit(Some(1000), 100, 1000).unwrap(), 1000);
        assert!(limit(Some(1001), 100, 1000).is_err());
        assert!(limit(Some(0), 100, 1000).is_err());
        assert_eq!(like_escape("50%_a\\"), "50\\%\\_a\\\\");
        assert!(search_text("").is_err());
        assert_eq!(search_text("  ").unwrap(), None);
        assert!(search_text(&"x".repeat(101)).is_err());
        assert_eq!(search_text(" 대전 ").unwrap().as_deref(), Some("대전"));
    }
}
