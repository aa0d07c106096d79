//! The billing service: configuration, the HTTP API and its lifecycle.
//!
//! - open: `/health`, `/ready`, `/metrics`, `POST /api/v1/quote` (the public fee
//!   calculator), `GET /api/v1/openapi.json`;
//! - viewer: `GET /api/v1/bills?period=YYYY-MM[&account_no&status&after_id&limit]`
//!   (a page: at most `limit` rows and `max_page_bytes` of JSON; `next_after_id`
//!   continues it),
//!   `GET /api/v1/bills/{id}`, `GET /api/v1/billing-runs?period=`;
//!   ledger and reports: `GET /api/v1/ledger/trial-balance`,
//!   `GET /api/v1/reports/{ageing,arrears,run-summary}` (`?format=csv`),
//!   `GET /api/v1/bills/{id}/entries`, `GET /api/v1/audit`;
//! - clerk: `POST /api/v1/billing-runs` (`{"period","group","dry_run"}`; a
//!   month not over yet in Korea answers 409 `period_not_over` unless
//!   `"force": true, "reason": "..."`, which the audit log keeps),
//!   `POST /api/v1/bills/{id}/release` (issue a held bill after review),
//!   `POST /api/v1/payments`, `POST /api/v1/payments/import` (a bank file),
//!   `POST /api/v1/bills/{id}/{cancel,rebill,adjustments}`;
//! - viewer, for the console ([`console_api`]): `GET /api/v1/accounts?q=`,
//!   `GET /api/v1/accounts/{no}`, `GET /api/v1/bills/search?q=`,
//!   `GET /api/v1/bills/{id}/notice`, `GET /api/v1/billing-runs/{id}`;
//! - admin: `POST /api/v1/accounts`, `PUT /api/v1/accounts/{no}/reductions`.

use crate::period::Period;
use crate::run::{run_billing_with, RunRequest, SqlReads};
use crate::tariff::{quote, QuoteRequest, TariffBook};
use crate::usage::HoldPolicy;
use crate::BillingError;
use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{require, ApiTokens, Role, TokenConfig};
use waterworks_service::error::ApiError;
use waterworks_service::limits::{HttpLimits, Limits};
use waterworks_service::ops::{routes, ReadyCheck};

/// Bills returned per page at most.
pub const MAX_PAGE: i64 = 1_000;

/// The billing service's configuration (TOML; `deny_unknown_fields`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// PostgreSQL URL, as the service's role (a member of
    /// `waterworks_billing`, not the schema's owner).
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// Whether the service applies the `billing` migrations at start
    /// (default false). In production the owner role migrates
    /// (`waterworks migrate`, the Kubernetes Job) and the service only
    /// checks that every migration it needs is applied, refusing to start
    /// otherwise. True is for a development database where one role owns
    /// everything; [`BillingConfig::new`], the in-process constructor of the
    /// demo and the tests, sets it.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// Where the HTTP API listens (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub http_listen: SocketAddr,
    /// The tariff file (e.g. `fixtures/tariffs/daejeon.toml`).
    pub tariff_file: PathBuf,
    /// Bearer tokens and their roles; without any, only the open routes answer.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Database connections at most (a bound: requests wait for a free one).
    #[serde(default = "default_pool_max")]
    pub db_pool_max: u32,
    /// When bills are held for review instead of issued.
    #[serde(default)]
    pub hold_policy: HoldPolicy,
    /// Longest a single SQL statement of the API may run, in milliseconds
    /// (default 60 000): PostgreSQL cancels it and the caller gets a clean
    /// error. Migrations at start are not bound by it.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Rate limits per token and IP, requests at once, read deadline.
    #[serde(default)]
    pub http_limits: HttpLimits,
    /// Bytes of JSON a list page holds at most (default 4 MiB); a page ends
    /// early when it would exceed this, and its cursor continues from there.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
}

fn default_database_url() -> String {
    "postgres://postgres@127.0.0.1:5432/postgres".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn default_pool_max() -> u32 {
    8
}
fn default_statement_timeout_ms() -> u64 {
    60_000
}
fn default_max_page_bytes() -> usize {
    4 * 1024 * 1024
}

impl BillingConfig {
    /// Defaults for everything but the tariff file, except that the service
    /// migrates at start (`migrate_on_start`: in-process use, demo and tests).
    pub fn new(database_url: &str, tariff_file: PathBuf) -> Self {
        Self {
            database_url: database_url.into(),
            migrate_on_start: true,
            http_listen: default_listen(),
            tariff_file,
            tokens: Vec::new(),
            db_pool_max: default_pool_max(),
            hold_policy: HoldPolicy::default(),
            statement_timeout_ms: default_statement_timeout_ms(),
            http_limits: HttpLimits::default(),
            max_page_bytes: default_max_page_bytes(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pool: PgPool,
    book: Arc<TariffBook>,
    policy: HoldPolicy,
    max_page_bytes: usize,
}

/// A built service: schema checked (or migrated), tariff loaded, port bound.
pub struct Billing {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    pool: PgPool,
}

impl Billing {
    pub async fn build(config: BillingConfig) -> Result<Billing, BillingError> {
        let book = TariffBook::load(&config.tariff_file)?;
        let tokens = Arc::new(ApiTokens::new(&config.tokens)?);
        let connect: PgConnectOptions = config.database_url.parse()?;
        // Migrations and the catch-up posting may take long on a big
        // database: their own connection, without the API's statement timeout.
        {
            let setup = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect.clone())
                .await?;
            if config.migrate_on_start {
                crate::migrate(&setup).await?;
            } else {
                crate::check_schema(&setup).await?;
            }
            // Bills issued before the ledger existed get their entries now.
            let posted = crate::ledger::store::post_unposted_bills(&setup).await?;
            if posted > 0 {
                tracing::warn!(posted, "posted bills that had no ledger entry");
            }
            setup.close().await;
        }
        let statement_timeout = format!("{}ms", config.statement_timeout_ms.max(1));
        let pool = PgPoolOptions::new()
            .max_connections(config.db_pool_max.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect.options([("statement_timeout", statement_timeout.as_str())]))
            .await?;
        let listener = tokio::net::TcpListener::bind(config.http_listen).await?;
        let addr = listener.local_addr()?;
        let state = AppState {
            pool: pool.clone(),
            book: Arc::new(book),
            policy: config.hold_policy.clone(),
            max_page_bytes: config.max_page_bytes.max(1),
        };
        let router = router(state, tokens, Limits::new(config.http_limits.clone()));
        Ok(Billing {
            listener,
            addr,
            router,
            pool,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), BillingError> {
        tracing::info!(addr = %self.addr, "billing serving");
        waterworks_service::serve(self.listener, self.router, shutdown).await?;
        self.pool.close().await;
        Ok(())
    }
}

/// Builds and serves until `shutdown` is cancelled.
pub async fn run(config: BillingConfig, shutdown: CancellationToken) -> Result<(), BillingError> {
    Billing::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

fn router(state: AppState, tokens: Arc<ApiTokens>, limits: Arc<Limits>) -> Router {
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
        .route("/api/v1/quote", post(post_quote))
        .route("/api/v1/openapi.json", get(openapi))
        .merge(waterworks_service::auth::whoami(tokens.clone()));
    let viewer = require(
        Router::new()
            .route("/api/v1/bills", get(list_bills))
            .route("/api/v1/bills/{id}", get(get_bill))
            .route("/api/v1/billing-runs", get(list_runs)),
        tokens.clone(),
        Role::Viewer,
    );
    let viewer = viewer.merge(require(
        Router::new()
            .route(
                "/api/v1/ledger/trial-balance",
                get(ledger_api::trial_balance),
            )
            .route("/api/v1/reports/ageing", get(ledger_api::ageing))
            .route("/api/v1/reports/arrears", get(ledger_api::arrears))
            .route("/api/v1/reports/run-summary", get(ledger_api::run_summary))
            .route("/api/v1/bills/{id}/entries", get(ledger_api::bill_entries))
            .route("/api/v1/audit", get(ledger_api::audit)),
        tokens.clone(),
        Role::Viewer,
    ));
    let viewer = viewer.merge(console_api::routes(tokens.clone()));
    // Reads (reports, searches, lists) get the request deadline; writes
    // (a billing run) are left to finish, bound per statement instead.
    let viewer = waterworks_service::limits::deadline_layer(viewer, limits.clone());
    let clerk = require(
        Router::new()
            .route("/api/v1/billing-runs", post(post_run))
            .route("/api/v1/bills/{id}/release", post(release_bill))
            .route("/api/v1/payments", post(ledger_api::post_payment))
            .route(
                "/api/v1/payments/import",
                post(ledger_api::import_payments).layer(axum::extract::DefaultBodyLimit::max(
                    crate::payments::MAX_IMPORT_BYTES,
                )),
            )
            .route("/api/v1/bills/{id}/cancel", post(ledger_api::cancel))
            .route("/api/v1/bills/{id}/rebill", post(ledger_api::rebill))
            .route("/api/v1/bills/{id}/adjustments", post(ledger_api::adjust)),
        tokens.clone(),
        Role::Clerk,
    );
    let admin = require(
        Router::new()
            .route("/api/v1/accounts", post(ledger_api::upsert_accounts))
            .route(
                "/api/v1/accounts/{no}/reductions",
                axum::routing::put(ledger_api::set_reductions),
            ),
        tokens,
        Role::Admin,
    );
    let api = open
        .merge(viewer)
        .merge(clerk)
        .merge(admin)
        .with_state(state);
    // Probes and /metrics stay outside the limits.
    waterworks_service::limits::admit_layer(api, limits).merge(routes(ready))
}

#[path = "console_api.rs"]
pub mod console_api;
#[path = "ledger_api.rs"]
mod ledger_api;

fn db_error(e: sqlx::Error) -> ApiError {
    ApiError::from_db(&e)
}

async fn post_quote(
    State(s): State<AppState>,
    body: Result<Json<QuoteRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let q = quote(&s.book, &req).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut v = serde_json::to_value(&q).map_err(ApiError::internal)?;
    v["text"] = serde_json::Value::String(q.render_text());
    Ok(Json(v))
}

/// The body of `POST /api/v1/billing-runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    period: Period,
    group: String,
    #[serde(default)]
    dry_run: bool,
    /// Run a month that is not over yet (Korean time); needs `reason`.
    #[serde(default)]
    force: bool,
    /// Why the run is forced: kept in the audit log.
    #[serde(default)]
    reason: Option<String>,
}

async fn post_run(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<waterworks_service::auth::Caller>,
    body: Result<Json<StartRun>, axum::extract::rejection::JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Json(start) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if start.group.is_empty() || start.group.len() > 64 {
        return Err(ApiError::BadRequest("group must be 1-64 characters".into()));
    }
    if start.reason.is_some() && !start.force {
        return Err(ApiError::BadRequest(
            "reason is only for a forced run (\"force\": true)".into(),
        ));
    }
    let force_reason = match (start.force, start.reason.as_deref()) {
        (true, None) => Some(""),
        (true, Some(r)) => Some(r),
        (false, _) => None,
    };
    let forced = match crate::run::admit(&start.period, chrono::Utc::now(), force_reason) {
        Ok(f) => f,
        Err(e @ crate::run::RunRefused::NotOver { billable_from, .. }) => {
            let body = serde_json::json!({
                "error": "period_not_over",
                "message": e.to_string(),
                "period": start.period,
                "billable_from": billable_from,
            });
            return Ok((axum::http::StatusCode::CONFLICT, Json(body)).into_response());
        }
        Err(e @ crate::run::RunRefused::ReasonMissing) => {
            return Err(ApiError::BadRequest(e.to_string()))
        }
    };
    let req = RunRequest {
        period: start.period,
        group: start.group,
        dry_run: start.dry_run,
    };
    if let (Some(reason), false) = (&forced, req.dry_run) {
        crate::run::record_forced_run(&s.pool, &req, reason, &caller.name)
            .await
            .map_err(ApiError::internal)?;
    }
    match run_billing_with(&s.pool, &s.book, &req, &SqlReads(&s.pool), &s.policy).await {
        Ok(o) => Ok(Json(o).into_response()),
        Err(e @ BillingError::RunInProgress { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(BillingError::Tariff(e)) => Err(ApiError::BadRequest(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BillsQuery {
    period: Period,
    account_no: Option<String>,
    status: Option<String>,
    /// Keyset pagination: bills with a larger id.
    after_id: Option<i64>,
    limit: Option<i64>,
}

const BILL_COLUMNS: &str = "bill_id, period, account_no, run_id, bill_no, status, hold_reasons, \
     usage_type, usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, \
     reduction_krw, total_krw, legs::text, lines::text, input_hash, created_at";

fn bill_json(r: &sqlx::postgres::PgRow, full: bool) -> Result<serde_json::Value, sqlx::Error> {
    let period: String = r.try_get(1)?;
    let bill_no: Option<i64> = r.try_get(4)?;
    let mut v = serde_json::json!({
        "bill_id": r.try_get::<i64, _>(0)?,
        "period": period,
        "account_no": r.try_get::<String, _>(2)?,
        "run_id": r.try_get::<i64, _>(3)?,
        "bill_no": bill_no,
        "bill_number": bill_no.map(|n| format!("{period}-{n:07}")),
        "status": r.try_get::<String, _>(5)?,
        "hold_reasons": r.try_get::<Vec<String>, _>(6)?,
        "usage_type": r.try_get::<String, _>(7)?,
        "usage_m3": r.try_get::<i64, _>(8)?,
        "estimated": r.try_get::<bool, _>(9)?,
        "tariff_version": r.try_get::<String, _>(10)?,
        "components_krw": {
            "water": r.try_get::<i64, _>(11)?,
            "sewer": r.try_get::<i64, _>(12)?,
            "base": r.try_get::<i64, _>(13)?,
            "levy": r.try_get::<i64, _>(14)?,
            "reduction": r.try_get::<i64, _>(15)?,
        },
        "total_krw": r.try_get::<i64, _>(16)?,
        "input_hash": r.try_get::<String, _>(19)?,
        "created_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>(20)?,
    });
    if full {
        let parse = |s: String| serde_json::from_str::<serde_json::Value>(&s).unwrap_or_default();
        v["legs"] = parse(r.try_get(17)?);
        v["lines"] = parse(r.try_get(18)?);
    }
    Ok(v)
}

async fn list_bills(
    State(s): State<AppState>,
    q: Result<Query<BillsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows = sqlx::query(&format!(
        "SELECT {BILL_COLUMNS} FROM billing.bills \
          WHERE period = $1 AND ($2::text IS NULL OR account_no = $2) \
            AND ($3::text IS NULL OR status = $3) AND bill_id > $4 \
          ORDER BY bill_id LIMIT $5"
    ))
    .bind(q.period.to_string())
    .bind(q.account_no)
    .bind(q.status)
    .bind(q.after_id.unwrap_or(0))
    .bind(limit)
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    // A page ends at `limit` rows or `max_page_bytes` of JSON, whichever
    // comes first (at least one row, so the cursor always moves).
    let mut bills = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    let mut cut = false;
    for r in &rows {
        let b = bill_json(r, false).map_err(db_error)?;
        let size = serde_json::to_vec(&b).map_or(0, |v| v.len()) + 1;
        if !bills.is_empty() && bytes + size > s.max_page_bytes {
            cut = true;
            break;
        }
        bytes += size;
        bills.push(b);
    }
    let next = if cut || bills.len() as i64 == limit {
        bills.last().map(|b| b["bill_id"].clone())
    } else {
        None
    };
    Ok(Json(
        serde_json::json!({ "bills": bills, "next_after_id": next }),
    ))
}

async fn get_bill(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("bill id {id:?} is not a number")))?;
    let row = sqlx::query(&format!(
        "SELECT {BILL_COLUMNS} FROM billing.bills WHERE bill_id = $1"
    ))
    .bind(id)
    .fetch_optional(&s.pool)
    .await
    .map_err(db_error)?
    .ok_or_else(|| ApiError::NotFound(format!("no bill {id}")))?;
    Ok(Json(bill_json(&row, true).map_err(db_error)?))
}

async fn release_bill(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<waterworks_service::auth::Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::run::ReleaseError;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("bill id {id:?} is not a number")))?;
    match crate::run::release_held_by(&s.pool, id, &caller.name).await {
        Ok(_) => get_bill(State(s), UrlPath(id.to_string())).await,
        Err(BillingError::Release(e @ ReleaseError::NotFound(_))) => {
            Err(ApiError::NotFound(e.to_string()))
        }
        Err(BillingError::Release(e)) => Err(ApiError::Conflict(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    period: Option<Period>,
}

async fn list_runs(
    State(s): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = sqlx::query(
        "SELECT run_id, period, billing_group, status, started_at, finished_at, outcome::text \
           FROM billing.runs WHERE ($1::text IS NULL OR period = $1) ORDER BY run_id DESC LIMIT 200",
    )
    .bind(q.period.map(|p| p.to_string()))
    .fetch_all(&s.pool)
    .await
    .map_err(db_error)?;
    let mut runs = Vec::new();
    for r in rows {
        let outcome: Option<String> = r.try_get(6).map_err(db_error)?;
        runs.push(serde_json::json!({
            "run_id": r.try_get::<i64, _>(0).map_err(db_error)?,
            "period": r.try_get::<String, _>(1).map_err(db_error)?,
            "group": r.try_get::<String, _>(2).map_err(db_error)?,
            "status": r.try_get::<String, _>(3).map_err(db_error)?,
            "started_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>(4).map_err(db_error)?,
            "finished_at": r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(5).map_err(db_error)?,
            "outcome": outcome.and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok()),
        }));
    }
    Ok(Json(serde_json::json!({ "runs": runs })))
}

async fn openapi() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "openapi": "3.0.3",
        "info": { "title": "Waterworks billing", "version": "1" },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": {
            "/api/v1/quote": { "post": { "summary": "Price one month of usage (public fee calculator)",
                "requestBody": { "content": { "application/json": { "example":
                    { "usage_type": "household", "diameter_mm": 15, "usage_m3": 26, "households": 1,
                      "sewer_connected": true, "levy_exempt": false, "period": "2026-10" } } } } } },
            "/api/v1/whoami": { "get": { "summary": "Who the token belongs to: {name, role} (viewer and up; the console's sign-in)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/billing-runs": {
                "post": { "summary": "Run billing for a period and group (clerk); dry_run previews. \
                    A month not over in Korea answers 409 period_not_over unless force with a reason (kept in the audit log)",
                    "security": [{ "bearer": [] }],
                    "requestBody": { "content": { "application/json": { "example":
                        { "period": "2026-10", "group": "A", "dry_run": true, "force": false } } } },
                    "responses": { "409": { "description": "period_not_over (with billable_from) or a run in progress" } } },
                "get": { "summary": "Runs, newest first (viewer)", "security": [{ "bearer": [] }],
                    "parameters": [{ "name": "period", "in": "query" }] } },
            "/api/v1/bills": { "get": { "summary": "Bills of a period (viewer), keyset pages",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "period", "in": "query", "required": true },
                    { "name": "account_no", "in": "query" }, { "name": "status", "in": "query" },
                    { "name": "after_id", "in": "query" }, { "name": "limit", "in": "query" }] } },
            "/api/v1/bills/{id}": { "get": { "summary": "One bill with its legs and explained lines (viewer)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/bills/{id}/entries": { "get": { "summary": "Ledger entries naming a bill (viewer)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/bills/{id}/release": { "post": { "summary": "Issue a held bill after review (clerk)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/bills/{id}/cancel": { "post": { "summary": "Cancel an issued bill: exact reversal, payments kept as credit (clerk)",
                "security": [{ "bearer": [] }],
                "requestBody": { "content": { "application/json": { "example": { "reason": "meter misread" } } } } } },
            "/api/v1/bills/{id}/rebill": { "post": { "summary": "Cancel and reissue with corrected reads / current tariff (clerk)",
                "security": [{ "bearer": [] }],
                "requestBody": { "content": { "application/json": { "example": { "reason": "customer read",
                    "reads": [{ "meter_id": "M1", "start_ts": "2026-09-30T15:00:00Z", "start_volume_l": 0,
                        "end_ts": "2026-10-31T14:45:00Z", "end_volume_l": 30000, "reads": 2976 }] } } } } } },
            "/api/v1/bills/{id}/adjustments": { "post": { "summary": "Adjust one part of a bill (clerk)",
                "security": [{ "bearer": [] }],
                "requestBody": { "content": { "application/json": { "example":
                    { "part": "water", "amount_krw": -460, "reason": "goodwill", "key": "ADJ-1" } } } } } },
            "/api/v1/payments": { "post": { "summary": "Record a payment, idempotent on reference (clerk)",
                "security": [{ "bearer": [] }],
                "requestBody": { "content": { "application/json": { "example":
                    { "reference": "KB-1", "account_no": "AC00001", "amount_krw": 12960, "paid_on": "2026-11-20" } } } } } },
            "/api/v1/payments/import": { "post": { "summary": "Import a bank/collection file (docs/payments-format.md) (clerk)",
                "security": [{ "bearer": [] }],
                "requestBody": { "content": { "text/csv": { "example":
                    "reference,account_no,amount_krw,paid_on\nKB-1,AC00001,12960,2026-11-20\n" } } } } },
            "/api/v1/ledger/trial-balance": { "get": { "summary": "Trial balance (viewer); ?format=csv",
                "security": [{ "bearer": [] }] } },
            "/api/v1/reports/ageing": { "get": { "summary": "Receivables ageing 0-30/31-60/61-90/90+ (viewer)",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "as_of", "in": "query" }, { "name": "format", "in": "query" }] } },
            "/api/v1/reports/arrears": { "get": { "summary": "Arrears list (viewer)",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "as_of", "in": "query" }, { "name": "min_days", "in": "query" },
                    { "name": "format", "in": "query" }] } },
            "/api/v1/reports/run-summary": { "get": { "summary": "Billing run summary by usage type and component (viewer)",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "period", "in": "query", "required": true }, { "name": "group", "in": "query" },
                    { "name": "format", "in": "query" }] } },
            "/api/v1/audit": { "get": { "summary": "Audit log, newest first (viewer)", "security": [{ "bearer": [] }],
                "parameters": [{ "name": "target", "in": "query" }, { "name": "limit", "in": "query" }] } },
            "/api/v1/accounts": { "post": { "summary": "Create or update accounts (admin)", "security": [{ "bearer": [] }] },
                "get": { "summary": "Search accounts by number, meter id (exact or prefix), customer or address (viewer)",
                    "security": [{ "bearer": [] }],
                    "parameters": [{ "name": "q", "in": "query", "required": true }, { "name": "limit", "in": "query" }] } },
            "/api/v1/accounts/{no}": { "get": { "summary": "An account, its meters, balance and last 12 live bills (viewer)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/bills/search": { "get": { "summary": "Bills by bill number, account, customer or address (viewer)",
                "security": [{ "bearer": [] }],
                "parameters": [{ "name": "q", "in": "query", "required": true }, { "name": "period", "in": "query" },
                    { "name": "status", "in": "query" }, { "name": "limit", "in": "query" }] } },
            "/api/v1/bills/{id}/notice": { "get": { "summary": "What the bill notice (고지서) shows: bill, account, 12-month history, open amount, due date (viewer)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/billing-runs/{id}": { "get": { "summary": "One run with its progress (viewer)",
                "security": [{ "bearer": [] }] } },
            "/api/v1/accounts/{no}/reductions": { "put": { "summary": "Grant or withdraw reductions (admin)",
                "security": [{ "bearer": [] }] } }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_as_documented_parses_and_unknown_fields_are_refused() {
        let text = r#"
            database_url = "postgres://postgres@127.0.0.1:5432/postgres"
            http_listen = "127.0.0.1:8082"
            tariff_file = "fixtures/tariffs/daejeon.toml"
            db_pool_max = 8
            tokens = [{ name = "clerk-1", role = "clerk", token_file = "/run/secrets/waterworks-tokens/clerk-1" }]
            [hold_policy]
            high_ratio = "3"
            low_ratio = "0.2"
            min_avg_m3 = 5
        "#;
        let cfg: BillingConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.hold_policy, HoldPolicy::default());
        assert_eq!(cfg.tokens[0].role, Some(Role::Clerk));
        let minimal: BillingConfig = toml::from_str("tariff_file = \"t.toml\"").unwrap();
        assert_eq!(minimal.http_listen.port(), 8082);
        assert!(toml::from_str::<BillingConfig>("tariff_file = \"t\"\nbogus = 1").is_err());
    }
}
