//! Payments (clerk): one at a time, idempotent on the bank's reference, or
//! a bank / collection file (docs/payments-format.md).

use super::{api_error, Answer, AppState, Body, Text};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Extension, Json, Router};
use waterworks_api::billing::{ImportOutcome, PaymentOutcome, PaymentRequest, MAX_IMPORT_BYTES};
use waterworks_api::ErrorBody;
use waterworks_service::auth::Caller;

pub(super) fn clerk() -> Router<AppState> {
    Router::new()
        .route("/api/v1/payments", post(post_payment))
        .route(
            "/api/v1/payments/import",
            post(import_payments).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
}

/// Record a payment: cash against the customer's open bills, the rest kept
/// as credit. The same reference again posts nothing (`posted: false`).
#[utoipa::path(post, path = "/api/v1/payments", tag = "payments",
    request_body = PaymentRequest,
    responses((status = 200, body = PaymentOutcome), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such account"),
        (status = 409, body = ErrorBody, description = "The reference was used for a different payment"),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn post_payment(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(p): Body<PaymentRequest>,
) -> Answer<PaymentOutcome> {
    let p = crate::ledger::PaymentRequest {
        reference: p.reference,
        account_no: p.account_no,
        amount_krw: p.amount_krw,
        paid_on: p.paid_on,
    };
    crate::payments::record_payment(&s.pool, &p, &caller.name)
        .await
        .map(Json)
        .map_err(api_error)
}

/// Import a bank file (`reference,account_no,amount_krw,paid_on` lines):
/// every good line is posted once, in one transaction; every bad line is
/// reported with its number and reason.
#[utoipa::path(post, path = "/api/v1/payments/import", tag = "payments",
    request_body(content = String, content_type = "text/csv",
        description = "At most 16 MiB and 100,000 lines, starting with the header `reference,account_no,amount_krw,paid_on`"),
    responses((status = 200, body = ImportOutcome), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("clerk"))))]
pub(crate) async fn import_payments(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Text(text): Text,
) -> Answer<ImportOutcome> {
    crate::payments::import_bank_file(&s.pool, &text, &caller.name)
        .await
        .map(Json)
        .map_err(api_error)
}
