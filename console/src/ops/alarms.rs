//! `/ops/alarms[?alarm=leak]`: active alarms (leak, burst, backflow, tamper,
//! low battery) with since-when, newest first; each row links to the meter.

use super::alarm_key;
use crate::backend::{query, seg};
use crate::layout::{thousands, ts, ts_opt};
use crate::web::{Authed, PageError};
use axum::extract::Query;
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::ingest::{Alarm, AlarmList};

#[derive(Debug, Deserialize)]
pub struct Filter {
    alarm: Option<String>,
}

/// The filter as an alarm: empty or unknown is none (every alarm).
fn alarm_filter(f: Option<String>) -> Option<Alarm> {
    f.filter(|a| !a.is_empty())
        .and_then(|a| serde_json::from_value(serde_json::Value::String(a)).ok())
}

pub async fn page(ctx: Authed, Query(f): Query<Filter>) -> Result<Markup, PageError> {
    let filter = alarm_filter(f.alarm);
    let path = format!(
        "/api/v1/dashboard/alarms{}",
        query(&[
            ("alarm", filter.map(|a| a.as_str().to_string())),
            ("limit", Some("500".into())),
        ])
    );
    let list: AlarmList = ctx.app.ingest.get(ctx.token(), &path).await?;
    let all: i64 = list.counts.values().sum();
    let body = html! {
        h1 { (ctx.t("nav.alarms")) }
        nav class="filters" {
            a href="/ops/alarms" class=[filter.is_none().then_some("current")] { (ctx.t("ops.all_alarms")) " (" (all) ")" }
            @for (alarm, n) in &list.counts {
                " · "
                a href=(format!("/ops/alarms{}", query(&[("alarm", Some(alarm.as_str().to_string()))])))
                  class=[(filter == Some(*alarm)).then_some("current")] {
                    (ctx.t(alarm_key(*alarm))) " (" (n) ")"
                }
            }
        }
        @if list.alarms.is_empty() {
            p class="muted" id="no-alarms" { (ctx.t("ops.no_alarms")) }
        } @else {
            table id="alarms" {
                tr {
                    th { (ctx.t("ops.alarms")) } th { (ctx.t("ops.meter")) } th { (ctx.t("ops.gateway")) }
                    th { (ctx.t("ops.since")) } th { (ctx.t("ops.last_read")) } th class="num" { (ctx.t("ops.last_volume")) }
                }
                @for a in &list.alarms {
                    tr data-alarm=(a.alarm.as_str()) data-meter=(a.meter_id) {
                        td { span class="badge alarm" { (ctx.t(alarm_key(a.alarm))) } }
                        td { a class="meter-link" href=(format!("/ops/meters/{}", seg(&a.meter_id))) { (a.meter_id) } }
                        td { code { (a.gateway_id) } }
                        td { (ts(&a.since)) }
                        td { (ts_opt(&a.last_ts)) }
                        td class="num" { (a.last_volume_l.map(thousands).unwrap_or_else(|| "—".into())) }
                    }
                }
            }
        }
    };
    Ok(ctx.page(ctx.t("nav.alarms"), body))
}
