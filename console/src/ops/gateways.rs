//! `/ops/gateways`: each gateway's retained status (online/offline), last
//! batch, open sequence gaps and resets. (A gateway's spool backlog is not
//! in its status payload, so ingest cannot show it.)

use crate::layout::{thousands, ts_opt};
use crate::web::{Authed, PageError};
use maud::{html, Markup};
use waterworks_api::ingest::{GatewayList, GatewayStatus};

pub async fn page(ctx: Authed) -> Result<Markup, PageError> {
    let list: GatewayList = ctx.app.ingest.get(ctx.token(), "/api/v1/gateways").await?;
    let body = html! {
        h1 { (ctx.t("nav.gateways")) }
        @if list.gateways.is_empty() {
            p class="muted" { (ctx.t("ops.no_results")) }
        } @else {
            table id="gateways" {
                tr {
                    th { (ctx.t("ops.gateway")) } th { (ctx.t("ops.status")) } th { (ctx.t("ops.status_at")) }
                    th { (ctx.t("ops.last_batch")) } th class="num" { (ctx.t("ops.last_batch_seq")) }
                    th class="num" { (ctx.t("ops.seq_gaps")) } th class="num" { (ctx.t("ops.seq_resets")) }
                    th class="num" { (ctx.t("ops.meters_total")) } th class="num" { (ctx.t("ops.readings")) }
                }
                @for g in &list.gateways {
                    @let (class, key) = match g.status {
                        Some(GatewayStatus::Online) => ("online", "ops.online"),
                        Some(GatewayStatus::Offline) => ("offline", "ops.offline"),
                        None => ("", "ops.unknown"),
                    };
                    tr data-gateway=(g.gateway_id) {
                        td { code { (g.gateway_id) } }
                        td { span class=(format!("badge {class}")) { (ctx.t(key)) } }
                        td { (ts_opt(&g.status_at)) }
                        td { (ts_opt(&g.last_batch_at)) }
                        td class="num" { (g.last_batch_seq.map(|s| s.to_string()).unwrap_or_else(|| "—".into())) }
                        td class="num" { (g.open_seq_gaps) }
                        td class="num" { (g.seq_resets) }
                        td class="num" { (thousands(g.meters)) }
                        td class="num" { (thousands(g.readings)) }
                    }
                }
            }
        }
    };
    Ok(ctx.page(ctx.t("nav.gateways"), body))
}
