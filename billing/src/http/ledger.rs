//! The ledger's trial balance (viewer), as JSON or CSV.

use super::reports::respond;
use super::{api_error, AppState, HttpError, Query};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use waterworks_api::billing::{FormatQuery, TrialBalance};
use waterworks_api::ErrorBody;

pub(super) fn viewer() -> Router<AppState> {
    Router::new().route("/api/v1/ledger/trial-balance", get(trial_balance))
}

/// Debits, credits and balance of every ledger account (`?format=csv` for
/// a spreadsheet).
#[utoipa::path(get, path = "/api/v1/ledger/trial-balance", tag = "ledger",
    params(FormatQuery),
    responses((status = 200, description = "The trial balance",
            content((TrialBalance = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody)),
    security(("bearer" = [])), extensions(("x-role" = json!("viewer"))))]
pub(crate) async fn trial_balance(
    State(s): State<AppState>,
    Query(q): Query<FormatQuery>,
) -> Result<Response, HttpError> {
    let tb = crate::reports::trial_balance(&s.pool)
        .await
        .map_err(api_error)?;
    respond(q.format.unwrap_or_default(), &tb, |t| t.to_csv())
}
