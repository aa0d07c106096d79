//! The public fee calculator (no token): one premises, one month.

use super::{Answer, AppState, Body, HttpError};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use waterworks_api::billing::{Quote, QuoteRequest};
use waterworks_api::ErrorBody;
use waterworks_service::error::ApiError;

pub(super) fn open() -> Router<AppState> {
    Router::new().route("/api/v1/quote", post(post_quote))
}

/// Price one month of usage with the service's tariff, line by line, with
/// the bill as text.
#[utoipa::path(post, path = "/api/v1/quote", tag = "quote",
    request_body = QuoteRequest,
    responses((status = 200, body = Quote),
        (status = 400, body = ErrorBody, description = "Not a request the tariff can price (e.g. an unknown usage type)"),
        (status = 413, body = ErrorBody)),
    extensions(("x-role" = json!("none"))))]
pub(crate) async fn post_quote(
    State(s): State<AppState>,
    Body(req): Body<QuoteRequest>,
) -> Answer<Quote> {
    let period = req.period.as_deref().map(super::parse_period).transpose()?;
    let domain = crate::tariff::QuoteRequest {
        usage_type: req.usage_type,
        diameter_mm: req.diameter_mm,
        usage_m3: req.usage_m3,
        households: req.households,
        sewer_connected: req.sewer_connected,
        levy_exempt: req.levy_exempt,
        period,
        reductions: req.reductions,
        leak_relief_prior_avg_m3: req.leak_relief_prior_avg_m3,
    };
    // Well-formed but not priceable by this tariff (an unknown usage type,
    // diameter or reduction, leak relief it does not grant): 422.
    let q =
        crate::tariff::quote(&s.book, &domain).map_err(|e| HttpError::Invalid(e.to_string()))?;
    let text = q.render_text();
    // The lines are the tariff engine's; their wire form is the contract's.
    let lines = serde_json::to_value(&q.lines)
        .and_then(serde_json::from_value)
        .map_err(|e| HttpError::from(ApiError::internal(e)))?;
    Ok(Json(Quote {
        city: q.city,
        tariff_version: q.tariff_version,
        period: q.period.map(|p| p.to_string()),
        usage_m3: q.usage_m3,
        lines,
        total_krw: q.total_krw,
        text,
    }))
}
