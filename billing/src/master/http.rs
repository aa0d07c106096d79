//! The HTTP API of master data, one router ([`routes`]):
//!
//! - viewer: `GET /api/v1/master/{customers,premises,meters}?q=&limit=`
//!   (searches) and `GET /api/v1/master/{customers,premises,meters}/{key}`
//!   (details: a customer's premises; a premises' customer and
//!   installations; a meter's installations);
//! - admin: `PUT /api/v1/master/{customers,premises,meters,installations}`
//!   `[?dry_run=true][&reason=]`, a batch (see [`super`]): 200 with an
//!   [`UpsertReport`], 400 for a body that is not the documented shape or a
//!   reason that is not 1-500 characters without NUL (the reason goes into
//!   the batch's audit record), 413
//!   `too_large` over [`MAX_BATCH_ITEMS`] items or [`MAX_BATCH_BYTES`]
//!   bytes, 422 `invalid` with every problem, nothing written.
//!
//! Every answer that is not 200 is a [`ErrorBody`]; database errors are
//! logged, never shown.

use super::{Catalogue, MAX_BATCH_BYTES, MAX_BATCH_ITEMS};
use crate::tariff::TariffBook;
use crate::BillingError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::sync::Arc;
use waterworks_api::error::Problem;
use waterworks_api::master::{
    Customer, CustomerDetail, CustomersBatch, InstallationsBatch, Meter, MeterDetail, MetersBatch,
    Premises, PremisesBatch, PremisesDetail, SearchQuery, UpsertQuery, UpsertReport,
    DEFAULT_SEARCH_LIMIT, MAX_REASON_CHARS, MAX_SEARCH_CHARS, MAX_SEARCH_LIMIT,
};
use waterworks_api::{ErrorBody, ErrorCode};
use waterworks_service::auth::{require, ApiTokens, Caller, Role};

/// What the handlers share.
#[derive(Clone)]
pub struct MasterState {
    pool: PgPool,
    catalogue: Arc<Catalogue>,
}

/// The master-data routes over `pool`, checking premises and meters against
/// `book`'s usage types and diameters: viewer reads, admin writes.
pub fn routes(pool: PgPool, book: &TariffBook, tokens: Arc<ApiTokens>) -> Router {
    let state = MasterState {
        pool,
        catalogue: Arc::new(Catalogue::from_book(book)),
    };
    let viewer = require(
        Router::new()
            .route("/api/v1/master/customers", get(search_customers))
            .route("/api/v1/master/customers/{id}", get(customer_detail))
            .route("/api/v1/master/premises", get(search_premises))
            .route("/api/v1/master/premises/{no}", get(premises_detail))
            .route("/api/v1/master/meters", get(search_meters))
            .route("/api/v1/master/meters/{id}", get(meter_detail)),
        tokens.clone(),
        Role::Viewer,
    );
    let admin = require(
        Router::new()
            .route(
                "/api/v1/master/customers",
                axum::routing::put(put_customers),
            )
            .route("/api/v1/master/premises", axum::routing::put(put_premises))
            .route("/api/v1/master/meters", axum::routing::put(put_meters))
            .route(
                "/api/v1/master/installations",
                axum::routing::put(put_installations),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        tokens,
        Role::Admin,
    );
    viewer.merge(admin).with_state(state)
}

/// The OpenAPI description of these routes (merged into billing's document).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    put_customers,
    put_premises,
    put_meters,
    put_installations,
    search_customers,
    customer_detail,
    search_premises,
    premises_detail,
    search_meters,
    meter_detail
))]
pub struct MasterApi;

/// An error answer: status and [`ErrorBody`].
pub(crate) struct Failure(StatusCode, ErrorBody);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl Failure {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Failure(status, ErrorBody::new(code, message))
    }

    fn invalid(problems: Vec<Problem>) -> Self {
        let mut body = ErrorBody::new(
            ErrorCode::Invalid,
            format!(
                "{} problem(s) in the batch; nothing was written",
                problems.len()
            ),
        );
        body.problems = problems;
        Failure(StatusCode::UNPROCESSABLE_ENTITY, body)
    }
}

impl From<BillingError> for Failure {
    fn from(e: BillingError) -> Self {
        if let BillingError::Db(sqlx::Error::Database(d)) = &e {
            match d.code().as_deref() {
                // A concurrent writer made an installation overlap (exclusion
                // constraint at commit): nothing was written; retry.
                Some("23P01") | Some("23505") | Some("23503") => {
                    return Failure::new(
                        StatusCode::CONFLICT,
                        ErrorCode::Conflict,
                        "the batch conflicts with a change made at the same time; nothing was written, send it again",
                    )
                }
                // Text PostgreSQL cannot store: the request's fault.
                Some("22021") => {
                    return Failure::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        ErrorCode::Invalid,
                        "text must not contain NUL characters",
                    )
                }
                Some("57014") => {
                    return Failure::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrorCode::Timeout,
                        "the request took too long; send smaller batches or retry later",
                    )
                }
                _ => {}
            }
        }
        tracing::error!(error = %e, "master data request failed");
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }
}

/// The body of a batch: 413 over the byte limit, 400 when not the shape.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the body is over {MAX_BATCH_BYTES} bytes: split the batch"),
            )
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.body_text(),
            )
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("not a batch: {e}"),
        )
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    q.map(|Query(q)| q).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        )
    })
}

/// Who writes and why: the caller and `?reason=` (1-500 characters, no NUL;
/// else 400).
fn author<'a>(caller: &'a Caller, q: &'a UpsertQuery) -> Result<super::Author<'a>, Failure> {
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m);
    if let Some(r) = &q.reason {
        let n = r.chars().count();
        if n == 0 || n > MAX_REASON_CHARS {
            return Err(bad(format!(
                "reason must be 1-{MAX_REASON_CHARS} characters (it has {n})"
            )));
        }
        if r.contains('\0') {
            return Err(bad("reason must not contain NUL characters".into()));
        }
    }
    Ok(super::Author {
        actor: &caller.name,
        reason: q.reason.as_deref(),
    })
}

fn bound(n: usize) -> Result<(), Failure> {
    if n > MAX_BATCH_ITEMS {
        return Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("{n} items: at most {MAX_BATCH_ITEMS} in one batch"),
        ));
    }
    if n == 0 {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the batch is empty",
        ));
    }
    Ok(())
}

/// What a batch `PUT` answers (every one alike; the 422 problems name the
/// rule each item broke).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description of answers, never built
enum BatchAnswers {
    /// What was (or would be) created, changed, left unchanged.
    #[response(status = 200)]
    Done(UpsertReport),
    /// Not a batch of the documented shape, or a `reason` out of bounds.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No valid bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "Not an admin")]
    Forbidden(ErrorBody),
    /// A concurrent change; nothing written, send it again.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Too many items or bytes.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Every problem, by item and field; nothing written.
    #[response(status = 422)]
    Invalid(ErrorBody),
    #[response(status = 500, description = "Internal error (logged)")]
    Internal(ErrorBody),
}

/// What a search answers.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description of answers, never built
enum SearchErrors {
    /// `q` or `limit` out of bounds.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    #[response(status = 401, description = "No valid bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 500, description = "Internal error (logged)")]
    Internal(ErrorBody),
}

/// What a detail answers besides 200.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description of answers, never built
enum DetailErrors {
    #[response(status = 401, description = "No valid bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "No such key")]
    NotFound(ErrorBody),
    #[response(status = 500, description = "Internal error (logged)")]
    Internal(ErrorBody),
}

fn answer(outcome: super::BatchOutcome) -> Result<Json<UpsertReport>, Failure> {
    outcome.map(Json).map_err(Failure::invalid)
}

/// Inserts or updates customers. Refused (422): a customer number twice in
/// the batch, a blank name, text over 200 characters or with control
/// characters.
#[utoipa::path(put, path = "/api/v1/master/customers", params(UpsertQuery),
    request_body = CustomersBatch,
    responses(BatchAnswers),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_customers(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let who = author(&caller, &q)?;
    let b: CustomersBatch = parse(body)?;
    bound(b.customers.len())?;
    answer(super::upsert_customers(&s.pool, &b.customers, who, q.dry_run).await?)
}

/// Inserts or updates premises (수용가). Refused (422): a 수용가번호 twice,
/// a customer that does not exist, a usage type or diameter the tariff does
/// not price.
#[utoipa::path(put, path = "/api/v1/master/premises", params(UpsertQuery),
    request_body = PremisesBatch,
    responses(BatchAnswers),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_premises(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let who = author(&caller, &q)?;
    let b: PremisesBatch = parse(body)?;
    bound(b.premises.len())?;
    answer(super::upsert_premises(&s.pool, &s.catalogue, &b.premises, who, q.dry_run).await?)
}

/// Inserts or updates meters (billing's record; ingest's registry is filled
/// through ingest's own `PUT /api/v1/meters`). Refused (422): a meter id
/// twice, a diameter the tariff does not price, a manufacture or 검정 date
/// in the future or out of order.
#[utoipa::path(put, path = "/api/v1/master/meters", params(UpsertQuery),
    request_body = MetersBatch,
    responses(BatchAnswers),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_meters(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let who = author(&caller, &q)?;
    let b: MetersBatch = parse(body)?;
    bound(b.meters.len())?;
    answer(super::upsert_meters(&s.pool, &s.catalogue, &b.meters, who, q.dry_run).await?)
}

/// Inserts or updates installations (which meter at which premises, when).
/// Refused (422): a premises or meter that does not exist, removal before
/// installation, dates in the future, installations of one premises or one
/// meter that overlap.
#[utoipa::path(put, path = "/api/v1/master/installations", params(UpsertQuery),
    request_body = InstallationsBatch,
    responses(BatchAnswers),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_installations(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let who = author(&caller, &q)?;
    let b: InstallationsBatch = parse(body)?;
    bound(b.installations.len())?;
    answer(super::upsert_installations(&s.pool, &b.installations, who, q.dry_run).await?)
}

/// A search's text and `limit` within the document's bounds, or 400.
fn search(q: &SearchQuery) -> Result<(&str, i64), Failure> {
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m);
    if q.q.chars().count() > MAX_SEARCH_CHARS {
        return Err(bad(format!("q is over {MAX_SEARCH_CHARS} characters")));
    }
    if q.q.contains('\0') {
        return Err(bad("q must not contain NUL characters".into()));
    }
    match q.limit {
        None => Ok((&q.q, DEFAULT_SEARCH_LIMIT)),
        Some(n) if (1..=MAX_SEARCH_LIMIT).contains(&n) => Ok((&q.q, n)),
        Some(n) => Err(bad(format!(
            "limit {n} must be between 1 and {MAX_SEARCH_LIMIT}"
        ))),
    }
}

fn not_found(what: &str) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no {what}"),
    )
}

/// Customers by number prefix or name substring.
#[utoipa::path(get, path = "/api/v1/master/customers", params(SearchQuery),
    responses((status = 200, body = Vec<Customer>), SearchErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_customers(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Customer>>, Failure> {
    let q = query(q)?;
    Ok(Json({
        let (text, limit) = search(&q)?;
        super::search_customers(&s.pool, text, limit).await?
    }))
}

/// A customer and the premises billed to them.
#[utoipa::path(get, path = "/api/v1/master/customers/{id}",
    params(("id" = String, Path, description = "Customer number")),
    responses((status = 200, body = CustomerDetail), DetailErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn customer_detail(
    State(s): State<MasterState>,
    Path(id): Path<String>,
) -> Result<Json<CustomerDetail>, Failure> {
    super::customer_detail(&s.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("such customer"))
}

/// Premises by 수용가번호 or route prefix, or address or customer substring.
#[utoipa::path(get, path = "/api/v1/master/premises", params(SearchQuery),
    responses((status = 200, body = Vec<Premises>), SearchErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_premises(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Premises>>, Failure> {
    let q = query(q)?;
    Ok(Json({
        let (text, limit) = search(&q)?;
        super::search_premises(&s.pool, text, limit).await?
    }))
}

/// A premises with its customer and installations.
#[utoipa::path(get, path = "/api/v1/master/premises/{no}",
    params(("no" = String, Path, description = "수용가번호")),
    responses((status = 200, body = PremisesDetail), DetailErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn premises_detail(
    State(s): State<MasterState>,
    Path(no): Path<String>,
) -> Result<Json<PremisesDetail>, Failure> {
    super::premises_detail(&s.pool, &no)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("such premises"))
}

/// Meters by id or serial prefix.
#[utoipa::path(get, path = "/api/v1/master/meters", params(SearchQuery),
    responses((status = 200, body = Vec<Meter>), SearchErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_meters(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Meter>>, Failure> {
    let q = query(q)?;
    Ok(Json({
        let (text, limit) = search(&q)?;
        super::search_meters(&s.pool, text, limit).await?
    }))
}

/// A meter with its installations.
#[utoipa::path(get, path = "/api/v1/master/meters/{id}",
    params(("id" = String, Path, description = "Meter id")),
    responses((status = 200, body = MeterDetail), DetailErrors),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn meter_detail(
    State(s): State<MasterState>,
    Path(id): Path<String>,
) -> Result<Json<MeterDetail>, Failure> {
    super::meter_detail(&s.pool, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("such meter"))
}
