//! The operators' pages (operator and admin; a viewer sees the read-only
//! parts): overview, gateways, meters, silent meters, alarms, a meter's page.
//! Data comes from ingest's `/api/v1` (including `/api/v1/dashboard/...`).

use crate::i18n::Msg;
use crate::web::{Authed, PageError};
use crate::App;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use std::sync::Arc;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/ops", get(overview))
}

pub static MESSAGES: &[Msg] = &[];

async fn overview(ctx: Authed) -> Result<Markup, PageError> {
    Ok(ctx.page(
        ctx.t("nav.overview"),
        html! { h1 { (ctx.t("nav.overview")) } },
    ))
}
