//! `/ops`: the live overview. Readings per second, ingest lag, fleet counts,
//! charts of the last hour (per minute) and day (per 15 minutes), and
//! quarantine by reason. The page refreshes its own body every 30 s (htmx).

use crate::layout::{thousands, Chart, Series};
use crate::web::{Authed, PageError};
use maud::{html, Markup};
use waterworks_api::ingest::{Bucket, Overview};

fn charts(ctx: &Authed, id: &str, o: &Overview, step: &'static str) -> Markup {
    let x: Vec<i64> = o.buckets.iter().map(|b| b.t.timestamp()).collect();
    let one = |suffix: &str, key: &'static str, unit: &str, f: &dyn Fn(&Bucket) -> Option<f64>| {
        Chart {
            id: format!("{id}-{suffix}"),
            title: format!("{} ({})", ctx.t(key), ctx.t(step)),
            x: x.clone(),
            series: vec![Series {
                label: ctx.t(key).to_string(),
                values: o.buckets.iter().map(f).collect(),
            }],
            bars: false,
            unit: unit.to_string(),
        }
        .render()
    };
    html! {
        div class="charts" {
            (one("readings", "ops.readings", "", &|b| Some(b.readings as f64)))
            (one("batches", "ops.batches", "", &|b| Some(b.batches as f64)))
            (one("quarantined", "ops.quarantined", "", &|b| Some(b.quarantined as f64)))
            (one("lag", "ops.lag_max", "ms", &|b| b.lag_ms_max.map(|l| l as f64)))
        }
    }
}

pub async fn page(ctx: Authed) -> Result<Markup, PageError> {
    let token = ctx.token();
    let (hour, day) = tokio::join!(
        ctx.app
            .ingest
            .get::<Overview>(token, "/api/v1/dashboard/overview?window=hour"),
        ctx.app
            .ingest
            .get::<Overview>(token, "/api/v1/dashboard/overview?window=day"),
    );
    let (hour, day) = (hour?, day?);
    let c = &hour.counts;
    let lag = hour
        .lag_ms
        .map(|l| format!("{:.1} s", l as f64 / 1000.0))
        .unwrap_or_else(|| "—".into());
    let body = html! {
        div id="overview" hx-get="/ops" hx-trigger="every 30s" hx-select="#overview" hx-swap="outerHTML" {
            h1 { (ctx.t("nav.overview")) }
            div class="cards" {
                div class="card" id="card-rate" { div class="label" { (ctx.t("ops.readings_per_s")) } div class="value" { (format!("{:.1}", hour.readings_per_s)) } }
                div class="card" id="card-lag" { div class="label" { (ctx.t("ops.lag")) } div class="value" { (lag) } }
                div class="card" { div class="label" { (ctx.t("ops.meters_total")) } div class="value" { (thousands(c.meters)) } }
                a class="card" href="/ops/meters/silent" { div class="label" { (ctx.t("ops.silent_24h")) } div class="value" { (thousands(c.silent_24h)) } }
                a class="card" href="/ops/gateways" { div class="label" { (ctx.t("ops.gateways_online")) } div class="value" { (c.gateways_online) " / " (c.gateways) } }
                a class="card" href="/ops/alarms" id="card-alarms" { div class="label" { (ctx.t("ops.active_alarms")) } div class="value" { (thousands(c.active_alarms)) } }
            }
            h2 { (ctx.t("ops.last_hour")) }
            (charts(&ctx, "hour", &hour, "ops.per_minute"))
            h2 { (ctx.t("ops.last_day")) }
            (charts(&ctx, "day", &day, "ops.per_15min"))
            h2 { (ctx.t("ops.quarantine_by_reason")) }
            @if hour.quarantine_by_reason.is_empty() {
                p class="muted" { (ctx.t("none")) }
            } @else {
                table id="quarantine-reasons" {
                    tr { th { (ctx.t("ops.reason")) } th class="num" { (ctx.t("ops.last_hour")) } th class="num" { (ctx.t("ops.last_day")) } }
                    @for r in &hour.quarantine_by_reason {
                        tr { td { code { (r.reason.as_str()) } } td class="num" { (thousands(r.last_hour)) } td class="num" { (thousands(r.last_day)) } }
                    }
                }
            }
        }
    };
    Ok(ctx.page(ctx.t("nav.overview"), body))
}
