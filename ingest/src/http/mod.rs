//! The metering API under `/api/v1` (JSON, bearer roles), its OpenAPI 3.1
//! document, and the open operational routes (`/health`, `/ready`,
//! `/metrics`). One file per resource:
//!
//! - [`meters`]: meters, a meter's readings and daily usage (viewer);
//! - [`gateways`]: gateways and gaps (viewer);
//! - [`quarantine`]: the quarantine, in pages (operator);
//! - [`registry`]: `PUT /api/v1/meters`, registering meters (operator);
//! - [`dashboard`]: the operators' dashboard (viewer; a meter's quarantined
//!   readings: operator).
//!
//! The types each operation takes and answers are `waterworks_api::ingest`'s;
//! the document ([`openapi`]) is generated from them and from the handlers'
//! `#[utoipa::path]`s, and a copy is committed as `docs/openapi/ingest.json`
//! (`tests/openapi.rs` fails when it is stale).
//!
//! Limits (`[limits]` in the configuration): queries run on the API's own
//! pool with a `statement_timeout` (past it: 503); `/api/v1` serves at most
//! `api_max_concurrent_requests` at once (one more: 503 at once, with
//! `Retry-After`) and answers within `api_request_timeout_ms` (else 503
//! `timeout`); the quarantine is read in pages of at most
//! `api_max_response_bytes` of rows, continued with `cursor`. In front of
//! all of it, the rate limits of `[http_limits]` (429).
//!
//! This module must never answer an error with anything but
//! [`ErrorBody`], nor show a database error to the caller.

pub mod dashboard;
pub mod gateways;
pub mod meters;
pub mod quarantine;
pub mod registry;

use crate::config::LimitsConfig;
use crate::consumer::Shared;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use tokio::sync::Semaphore;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder};
use utoipa::OpenApi;
use waterworks_api::ingest::WhoAmI;
use waterworks_api::ErrorBody;
use waterworks_service::auth::{require, ApiTokens, Caller, Role};
use waterworks_service::error::{ApiError, ErrorCode};
use waterworks_service::ops::{self, ReadyCheck};
use waterworks_wire::MeterId;

pub(crate) type S = Arc<Shared>;

/// The whole HTTP surface of one replica.
pub fn router(
    shared: S,
    tokens: Arc<ApiTokens>,
    limits: &LimitsConfig,
    rates: Arc<waterworks_service::limits::Limits>,
) -> Router {
    let viewer = Router::new()
        .route("/api/v1/whoami", get(whoami))
        .merge(meters::routes())
        .merge(gateways::routes())
        .merge(dashboard::viewer_routes());
    let operator = Router::new()
        .merge(quarantine::routes())
        .merge(registry::routes())
        .merge(dashboard::operator_routes());
    let api = require(viewer, tokens.clone(), Role::Viewer)
        .merge(require(operator, tokens, Role::Operator))
        .route("/api/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .with_state(shared.clone())
        .layer(axum::middleware::from_fn_with_state(
            RequestLimits {
                slots: Arc::new(Semaphore::new(limits.api_max_concurrent_requests.max(1))),
                timeout: StdDuration::from_millis(limits.api_request_timeout_ms.max(1)),
                page_bytes: limits.api_max_response_bytes,
            },
            limit_requests,
        ));
    let ready: ReadyCheck = Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&shared.pool)
                .await
                .map_err(|_| "database unreachable".to_string())?;
            if !shared.broker_connected.load(Ordering::Relaxed) {
                return Err("broker not connected or subscriptions not acknowledged".into());
            }
            Ok(())
        })
    });
    // Rate limits per token and per IP first (429), then the bounds above;
    // health, readiness and metrics stay outside both.
    ops::routes(ready).merge(waterworks_service::limits::admit_layer(api, rates))
}

/// `GET /api/v1/whoami`.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth", operation_id = "whoami",
    summary = "Who the bearer token belongs to: name and role (viewer and up; the console's sign-in)",
    extensions(("x-role" = json!("viewer"))),
    responses((status = 200, description = "the caller", body = WhoAmI)))]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "auth", operation_id = "openapi",
    summary = "This document (no token needed)",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json",
        body = Object)))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(openapi_pretty);
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such operation; see /api/v1/openapi.json".into())
}

/// The `/api/v1` limits: concurrent requests, time per request, bytes per
/// quarantine page (read by the handler from the request's extensions).
#[derive(Clone)]
struct RequestLimits {
    slots: Arc<Semaphore>,
    timeout: StdDuration,
    page_bytes: usize,
}

/// Bytes of rows one quarantine page may carry.
#[derive(Clone, Copy)]
pub(crate) struct PageBytes(pub usize);

/// Refuses a request at once when `api_max_concurrent_requests` are being
/// served (503 `unavailable`, `Retry-After: 1`): a flood is shed, never
/// queued. Cuts a request off after `api_request_timeout_ms` (503
/// `timeout`; its query is cancelled with it).
async fn limit_requests(State(l): State<RequestLimits>, mut req: Request, next: Next) -> Response {
    let Ok(_slot) = l.slots.clone().try_acquire_owned() else {
        metrics::counter!("ingest_api_refused_total", "why" => "busy").increment(1);
        return refusal(
            ErrorCode::Unavailable,
            "too many requests at once; retry shortly",
        );
    };
    req.extensions_mut().insert(PageBytes(l.page_bytes));
    match tokio::time::timeout(l.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            metrics::counter!("ingest_api_refused_total", "why" => "timeout").increment(1);
            refusal(ErrorCode::Timeout, "the request took too long")
        }
    }
}

fn refusal(code: ErrorCode, message: &str) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorBody::new(code, message)),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A database failure as the caller sees it: a query cancelled by the API's
/// `statement_timeout` is 503 (try a narrower request or later); anything
/// else is an internal error (logged, never shown).
pub(crate) fn db_error(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
            tracing::warn!(error = %e, "api query cancelled by statement_timeout");
            ApiError::Unavailable
        }
        sqlx::Error::PoolTimedOut => ApiError::Unavailable,
        _ => ApiError::internal(e),
    }
}

/// A query string as `T`, refused with 400 and the one error body (axum's
/// own rejection is plain text).
pub(crate) struct Q<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequestParts<St> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A meter id from the path (`{id}`), refused with 400 when malformed.
pub(crate) struct MeterPath(pub MeterId);

impl<St: Send + Sync> FromRequestParts<St> for MeterPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        MeterId::parse(id)
            .map(MeterPath)
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

/// A bound or shape the document states, checked (400 when out of it).
pub(crate) fn checked<T>(r: Result<T, String>) -> Result<T, ApiError> {
    r.map_err(ApiError::BadRequest)
}

/// 404 unless the meter is registered.
pub(crate) async fn known_meter(s: &Shared, id: &MeterId) -> Result<(), ApiError> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM metering.meters WHERE meter_id = $1")
            .bind(id.as_str())
            .fetch_optional(&s.api_pool)
            .await
            .map_err(db_error)?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::NotFound(format!("no meter {id}")))
}

const DESCRIPTION: &str = "Readings, daily usage, meters, gateways, gaps, the quarantine and the \
operators' dashboard, kept by ingest; and the meter registry (PUT /api/v1/meters).\n\n\
Every operation but this document needs a bearer token; each states the role it needs \
(`x-role`, and in its description): viewer reads; operator also sees the quarantine and \
registers meters; admin may do everything (a clerk reads as a viewer does).\n\n\
Every error is one body (`ErrorBody`: `error`, `message`, and `problems` with `invalid`). \
Limits on every /api/v1 request: the rate limits per token and per client address answer \
429 with `Retry-After`; at most `limits.api_max_concurrent_requests` are served at once \
(one more: 503 at once, `Retry-After: 1`); a request is answered within \
`limits.api_request_timeout_ms` (else 503 `timeout`); its queries run with \
`statement_timeout = limits.api_statement_timeout_ms` (one cancelled by it: 503).";

#[derive(OpenApi)]
#[openapi(
    info(title = "Waterworks metering API (ingest)", description = DESCRIPTION),
    paths(
        whoami,
        openapi_json,
        meters::list,
        meters::readings,
        meters::daily,
        registry::put_meters,
        gateways::list,
        gateways::gaps,
        quarantine::page,
        dashboard::overview,
        dashboard::alarms,
        dashboard::search,
        dashboard::silent,
        dashboard::meter,
        dashboard::meter_quarantine,
    ),
    components(schemas(
        ErrorBody,
        waterworks_api::ErrorCode,
        waterworks_api::error::Problem,
        waterworks_api::ingest::MeterStatus,
        waterworks_api::ingest::Window,
        waterworks_api::ingest::Alarm,
        waterworks_api::ingest::QuarantineReason,
    )),
    modifiers(&CommonAnswers),
    tags(
        (name = "meters", description = "Meters, readings, daily usage and the registry"),
        (name = "gateways", description = "Gateways and gaps"),
        (name = "quarantine", description = "What ingest refused, and why"),
        (name = "dashboard", description = "The operators' dashboard"),
        (name = "auth", description = "The caller, and this document"),
    )
)]
pub struct IngestApi;

/// Adds what every operation shares: the bearer scheme; on each operation
/// with a role, its security requirement, 401 and (above viewer) 403, and
/// the role in its description; on every operation, 429 and 503.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let error = |what: &str| {
            ResponseBuilder::new().description(what).content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            let ops = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let role = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("x-role"))
                    .and_then(|r| r.as_str())
                    .map(str::to_string);
                let answers = &mut op.responses.responses;
                if let Some(role) = &role {
                    op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                    answers.insert(
                        "401".into(),
                        RefOr::T(
                            error("unauthorized: no bearer token, or not a valid one")
                                .header("WWW-Authenticate", HeaderBuilder::new().build())
                                .build(),
                        ),
                    );
                    if role != "viewer" {
                        answers.insert(
                            "403".into(),
                            RefOr::T(
                                error(&format!(
                                    "forbidden: the token's role is not {role}{}",
                                    if role == "admin" { "" } else { " or admin" }
                                ))
                                .build(),
                            ),
                        );
                    }
                    let needs = if role == "admin" {
                        "Role: admin.".to_string()
                    } else {
                        format!("Role: {role} (or admin).")
                    };
                    op.description = Some(match op.description.take() {
                        Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                        _ => needs,
                    });
                }
                answers.insert(
                    "429".into(),
                    RefOr::T(
                        error("too_many_requests: over the rate limit of the token or the client address")
                            .header(
                                "Retry-After",
                                HeaderBuilder::new()
                                    .schema(
                                        utoipa::openapi::ObjectBuilder::new().schema_type(
                                            utoipa::openapi::schema::Type::Integer,
                                        ),
                                    )
                                    .description(Some("seconds"))
                                    .build(),
                            )
                            .build(),
                    ),
                );
                answers.insert(
                    "503".into(),
                    RefOr::T(
                        error("unavailable (too many requests at once, a query past its time limit, no database connection) or timeout (past the request's time limit)")
                            .build(),
                    ),
                );
            }
        }
    }
}

/// The OpenAPI document, as served and as committed.
pub fn openapi() -> utoipa::openapi::OpenApi {
    IngestApi::openapi()
}

/// The document as served (pretty JSON with a final newline, as committed).
pub fn openapi_pretty() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}
