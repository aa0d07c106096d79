//! `/master/meters/{id}`: billing's record of a meter (serial, maker, model,
//! profile, diameter, manufacture and 검정 dates, gateway) and every
//! installation of it, with a link to its readings in the operators' pages.

use super::shared::{installations_table, Listing};
use super::{field_label, page};
use crate::backend::seg;
use crate::web::{Authed, PageError};
use axum::extract::Path;
use maud::{html, Markup};
use waterworks_api::master::MeterDetail;
use waterworks_service::auth::Role;

/// `GET /master/meters/{id}`.
pub async fn detail(ctx: Authed, Path(id): Path<String>) -> Result<Markup, PageError> {
    ctx.require(Role::Viewer)?;
    let d: MeterDetail = ctx
        .app
        .billing
        .get(ctx.token(), &format!("/api/v1/master/meters/{}", seg(&id)))
        .await?;
    let m = &d.meter;
    let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or_else(|| "—".into());
    let title = format!("{} {}", ctx.t("master.meter"), m.meter_id);
    Ok(page(
        &ctx,
        &title,
        html! {
            h1 { (title) }
            dl class="facts" id="meter-facts" {
                dt { (ctx.t("master.meter_id")) } dd data-field="meter_id" { (m.meter_id) }
                dt { (ctx.t("master.serial")) } dd data-field="serial" { (m.serial) }
                dt { (ctx.t("master.maker")) } dd { (m.maker) }
                dt { (ctx.t("master.model")) } dd { (m.model) }
                dt { (ctx.t("master.profile")) } dd { code { (m.profile_id) } }
                dt { (field_label(&ctx, "diameter_mm")) } dd data-field="diameter_mm" { (m.diameter_mm) }
                dt { (ctx.t("master.manufactured_on")) } dd { (day(m.manufactured_on)) }
                dt { (ctx.t("master.verified_on")) } dd { (day(m.verified_on)) }
                dt { (ctx.t("master.gateway")) } dd { code { (m.gateway_id) } }
            }
            p { a id="meter-ops" href=(format!("/ops/meters/{}", seg(&m.meter_id))) { (ctx.t("master.ops_meter")) } }
            (installations_table(&ctx, &d.installations, Listing::PremisesOfMeter))
        },
    ))
}
