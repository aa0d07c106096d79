//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! and the contract's types, served at `GET /api/v1/openapi.json` and
//! committed as `docs/openapi/billing.json` (billing/tests/openapi.rs fails
//! when the copy is stale).
//!
//! What every operation shares is added here once, by [`Contract`], rather
//! than repeated on each handler: the bearer scheme and 401/403 on every
//! operation with a role (`x-role`), the role in the description, 422 on
//! every operation that takes input, and
//! 429/503 on every operation (the rate limiter and the load shedder of
//! `waterworks_service::limits` stand in front of all of them).

use super::{accounts, audit, bills, ledger, payments, quote, reports, runs};
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use waterworks_api::{ErrorBody, Role};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waterworks billing",
        version = "1",
        description = "Bills, billing runs, the ledger, accounts, payments, reports and the public fee quote. \
            Every operation but the quote and this document needs a bearer token; each states its role \
            (`x-role`: viewer, clerk or admin; admin may do everything). Money is whole KRW (`*_krw`, integers); \
            rates and unrounded amounts are decimal strings. Every error answers with `ErrorBody`."
    ),
    paths(
        crate::master::http::put_customers,
        crate::master::http::put_premises,
        crate::master::http::put_meters,
        crate::master::http::put_installations,
        crate::master::http::search_customers,
        crate::master::http::customer_detail,
        crate::master::http::search_premises,
        crate::master::http::premises_detail,
        crate::master::http::search_meters,
        crate::master::http::meter_detail,
        quote::post_quote,
        whoami,
        bills::list_bills,
        bills::search_bills,
        bills::get_bill,
        bills::bill_entries,
        bills::bill_notice,
        bills::release_bill,
        bills::cancel,
        bills::rebill,
        bills::adjust,
        runs::list_runs,
        runs::get_run,
        runs::post_run,
        ledger::trial_balance,
        reports::ageing,
        reports::arrears,
        reports::run_summary,
        audit::audit,
        accounts::search_accounts,
        accounts::get_account,
        accounts::upsert_accounts,
        accounts::set_reductions,
        payments::post_payment,
        payments::import_payments,
    ),
    components(schemas(ErrorBody, Whoami, waterworks_api::billing::ReportFormat)),
    modifiers(&Contract),
    tags(
        (name = "quote", description = "The public fee calculator"),
        (name = "auth", description = "Who a token belongs to"),
        (name = "bills", description = "Bills, their notices and corrections"),
        (name = "runs", description = "Monthly billing runs"),
        (name = "ledger", description = "The double-entry ledger"),
        (name = "reports", description = "Reports for clerks and the finance office (JSON or CSV)"),
        (name = "audit", description = "Who changed what, and why"),
        (name = "accounts", description = "Accounts and their administration"),
        (name = "payments", description = "Payments and bank files"),
    )
)]
pub struct ApiDoc;

/// Who a token belongs to (`GET /api/v1/whoami`).
#[derive(serde::Serialize, ToSchema)]
pub struct Whoami {
    /// The token's name (what the audit log records).
    pub name: String,
    pub role: Role,
}

/// Who the bearer token belongs to: the console's sign-in. The handler is
/// `waterworks_service::auth::whoami`, shared by both services; this
/// function only carries its documentation.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = Whoami)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
#[allow(dead_code)]
fn whoami() {}

/// The shared parts of every operation (see the module doc).
struct Contract;

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorBody",
            )))),
        )
        .into()
}

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let role = op
                    .extensions
                    .as_ref()
                    .and_then(|e| e.get("x-role"))
                    .and_then(|r| r.as_str())
                    .unwrap_or("none")
                    .to_string();
                // "clerk or admin"; admin alone is just "admin".
                let or_admin = if role == "admin" { "" } else { " or admin" };
                let responses = &mut op.responses.responses;
                if role != "none" {
                    responses.insert(
                        "401".into(),
                        error("No valid bearer token (`unauthorized`)"),
                    );
                    responses.insert(
                        "403".into(),
                        error(&format!(
                            "The token's role is not {role}{or_admin} (`forbidden`)"
                        )),
                    );
                }
                if op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty())
                {
                    responses.entry("422".into()).or_insert_with(|| {
                        error("Well-formed but at fault (`invalid`): refused by the domain, or text the database cannot store (a NUL character)")
                    });
                }
                responses.insert(
                    "429".into(),
                    error("Over the rate limit (`too_many_requests`); `Retry-After` says when to come back"),
                );
                responses.insert(
                    "503".into(),
                    error("Not ready, shedding load (`unavailable`) or past the time limit (`timeout`)"),
                );
                let who = match role.as_str() {
                    "none" => "Open: no token needed.".to_string(),
                    "admin" => "Role: admin.".to_string(),
                    r => format!("Role: {r} (or admin)."),
                };
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{who}"),
                    _ => who,
                });
            }
        }
    }
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

/// The document as committed under `docs/openapi/billing.json` (pretty
/// JSON, a newline at the end).
pub fn openapi() -> String {
    format!("{}\n", DOCUMENT.as_str())
}

pub(super) async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
