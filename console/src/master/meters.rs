//! `/master/meters/{id}`: billing's record of a meter (serial, maker, model,
//! profile, diameter, manufacture and 검정 dates, gateway) and every
//! installation of it, with a link to its readings in the operators' pages.

use super::search::premises_link;
use super::{field_label, page};
use crate::backend::seg;
use crate::layout::{ts, ts_opt};
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
            h2 { (ctx.t("master.installations")) }
            @if d.installations.is_empty() {
                p class="muted" id="no-installations" { (ctx.t("master.no_installations")) }
            } @else {
                table id="installations" {
                    tr {
                        th { (ctx.t("master.account_no")) } th { (ctx.t("master.installed_at")) }
                        th { (ctx.t("master.removed_at")) } th class="num" { (ctx.t("master.install_read")) }
                    }
                    @for i in &d.installations {
                        tr data-premises=(i.account_no) {
                            td { (premises_link(&i.account_no)) }
                            td { (ts(&i.installed_at)) }
                            td { @if i.removed_at.is_some() { (ts_opt(&i.removed_at)) } @else { span class="badge ok" { (ctx.t("master.in_place")) } } }
                            td class="num" { (i.install_read_m3) }
                        }
                    }
                }
            }
        },
    ))
}
