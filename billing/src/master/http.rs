//! The HTTP API of master data, one router ([`routes`]):
//!
//! - viewer: `GET /api/v1/master/{customers,premises,meters}?q=&limit=`
//!   (searches) and `GET /api/v1/master/{customers,premises,meters}/{key}`
//!   (details: a customer's premises; a premises' customer and
//!   installations; a meter's installations);
//! - admin: `PUT /api/v1/master/{customers,premises,meters,installations}`
//!   `[?dry_run=true]`, a batch (see [`super`]): 200 with an
//!   [`UpsertReport`], 400 for a body that is not the documented shape, 413
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

fn answer(outcome: super::BatchOutcome) -> Result<Json<UpsertReport>, Failure> {
    outcome.map(Json).map_err(Failure::invalid)
}

/// Inserts or updates customers.
#[utoipa::path(put, path = "/api/v1/master/customers", params(UpsertQuery),
    request_body = CustomersBatch,
    responses(
        (status = 200, body = UpsertReport, description = "What was (or would be) created, changed, left unchanged"),
        (status = 400, body = ErrorBody, description = "Not a batch"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A concurrent change; nothing written"),
        (status = 413, body = ErrorBody, description = "Too many items or bytes"),
        (status = 422, body = ErrorBody, description = "Every problem; nothing written"),
        (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_customers(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let b: CustomersBatch = parse(body)?;
    bound(b.customers.len())?;
    answer(super::upsert_customers(&s.pool, &b.customers, &caller.name, q.dry_run).await?)
}

/// Inserts or updates premises (수용가).
#[utoipa::path(put, path = "/api/v1/master/premises", params(UpsertQuery),
    request_body = PremisesBatch,
    responses(
        (status = 200, body = UpsertReport, description = "What was (or would be) created, changed, left unchanged"),
        (status = 400, body = ErrorBody, description = "Not a batch"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A concurrent change; nothing written"),
        (status = 413, body = ErrorBody, description = "Too many items or bytes"),
        (status = 422, body = ErrorBody, description = "Every problem (unknown usage type, diameter, customer...); nothing written"),
        (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_premises(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let b: PremisesBatch = parse(body)?;
    bound(b.premises.len())?;
    answer(
        super::upsert_premises(&s.pool, &s.catalogue, &b.premises, &caller.name, q.dry_run).await?,
    )
}

/// Inserts or updates meters (billing's record; ingest's registry is filled
/// through ingest's own `PUT /api/v1/meters`).
#[utoipa::path(put, path = "/api/v1/master/meters", params(UpsertQuery),
    request_body = MetersBatch,
    responses(
        (status = 200, body = UpsertReport, description = "What was (or would be) created, changed, left unchanged"),
        (status = 400, body = ErrorBody, description = "Not a batch"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A concurrent change; nothing written"),
        (status = 413, body = ErrorBody, description = "Too many items or bytes"),
        (status = 422, body = ErrorBody, description = "Every problem; nothing written"),
        (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_meters(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let b: MetersBatch = parse(body)?;
    bound(b.meters.len())?;
    answer(super::upsert_meters(&s.pool, &s.catalogue, &b.meters, &caller.name, q.dry_run).await?)
}

/// Inserts or updates installations (which meter at which premises, when).
#[utoipa::path(put, path = "/api/v1/master/installations", params(UpsertQuery),
    request_body = InstallationsBatch,
    responses(
        (status = 200, body = UpsertReport, description = "What was (or would be) created, changed, left unchanged"),
        (status = 400, body = ErrorBody, description = "Not a batch"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A concurrent change; nothing written"),
        (status = 413, body = ErrorBody, description = "Too many items or bytes"),
        (status = 422, body = ErrorBody, description = "Every problem (overlaps, a meter in two places, dates in the future...); nothing written"),
        (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("admin"))))]
pub(crate) async fn put_installations(
    State(s): State<MasterState>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<UpsertQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UpsertReport>, Failure> {
    let q = query(q)?;
    let b: InstallationsBatch = parse(body)?;
    bound(b.installations.len())?;
    answer(super::upsert_installations(&s.pool, &b.installations, &caller.name, q.dry_run).await?)
}

fn limit(q: &SearchQuery) -> i64 {
    q.limit.unwrap_or(50)
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
    responses((status = 200, body = Vec<Customer>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_customers(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Customer>>, Failure> {
    let q = query(q)?;
    Ok(Json(
        super::search_customers(&s.pool, &q.q, limit(&q)).await?,
    ))
}

/// A customer and the premises billed to them.
#[utoipa::path(get, path = "/api/v1/master/customers/{id}",
    params(("id" = String, Path, description = "Customer number")),
    responses((status = 200, body = CustomerDetail), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)),
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
    responses((status = 200, body = Vec<Premises>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_premises(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Premises>>, Failure> {
    let q = query(q)?;
    Ok(Json(
        super::search_premises(&s.pool, &q.q, limit(&q)).await?,
    ))
}

/// A premises with its customer and installations.
#[utoipa::path(get, path = "/api/v1/master/premises/{no}",
    params(("no" = String, Path, description = "수용가번호")),
    responses((status = 200, body = PremisesDetail), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)),
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
    responses((status = 200, body = Vec<Meter>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 500, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn search_meters(
    State(s): State<MasterState>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Vec<Meter>>, Failure> {
    let q = query(q)?;
    Ok(Json(super::search_meters(&s.pool, &q.q, limit(&q)).await?))
}

/// A meter with its installations.
#[utoipa::path(get, path = "/api/v1/master/meters/{id}",
    params(("id" = String, Path, description = "Meter id")),
    responses((status = 200, body = MeterDetail), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)),
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
