//! `/ops/gateways`: each gateway's retained status (online/offline), last
//! batch, open sequence gaps and resets. Spool backlog is shown when a
//! gateway reports it (today's status payload does not).

use crate::layout::{thousands, ts_opt};
use crate::web::{Authed, PageError};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Gateway {
    pub gateway_id: String,
    pub status: Option<String>,
    pub status_at: Option<DateTime<Utc>>,
    pub last_batch_seq: Option<i64>,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub readings: i64,
    pub seq_resets: i32,
    pub open_seq_gaps: i64,
    pub meters: i64,
    #[serde(default)]
    pub spool_backlog: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Gateways {
    gateways: Vec<Gateway>,
}

pub async fn page(ctx: Authed) -> Result<Markup, PageError> {
    let list: Gateways = ctx.app.ingest.get(ctx.token(), "/api/v1/gateways").await?;
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
                    th class="num" { (ctx.t("ops.spool")) }
                }
                @for g in &list.gateways {
                    @let (class, key) = match g.status.as_deref() {
                        Some("online") => ("online", "ops.online"),
                        Some("offline") => ("offline", "ops.offline"),
                        _ => ("", "ops.unknown"),
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
                        td class="num" {
                            @match g.spool_backlog { Some(n) => (thousands(n)), None => span class="muted" { (ctx.t("ops.not_reported")) } }
                        }
                    }
                }
            }
        }
    };
    Ok(ctx.page(ctx.t("nav.gateways"), body))
}
