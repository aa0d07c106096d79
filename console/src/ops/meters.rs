//! Meters: search by id prefix (ingest) or by address / customer (billing's
//! accounts, which hold addresses and the meters installed), silent meters,
//! and one meter's page with its 15-minute and daily consumption charts,
//! alarms with since-when and (operators only) its quarantined readings.

use super::alarm_key;
use crate::backend::{query, seg, BackendError};
use crate::layout::{thousands, ts, ts_opt, Chart, Series};
use crate::web::{Authed, PageError};
use axum::extract::{Path, Query};
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::ingest::{
    is_id_prefix, Alarm, AlarmSpan, Daily, DayQuality, Meter, MeterDetail, MeterList,
    MeterQuarantine, Reading, Readings, SilentMeters,
};
use waterworks_service::auth::Role;

#[derive(Debug, Deserialize)]
struct Account {
    account_no: String,
    customer: String,
    address: String,
    meters: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Accounts {
    accounts: Vec<Account>,
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

fn meter_link(id: &str) -> Markup {
    html! { a class="meter-link" href=(format!("/ops/meters/{}", seg(id))) { (id) } }
}

fn alarm_badges(ctx: &Authed, alarms: &Option<Vec<Alarm>>) -> Markup {
    html! {
        @for a in alarms.iter().flatten() {
            span class="badge alarm" { (ctx.t(alarm_key(*a))) } " "
        }
    }
}

fn meter_table(ctx: &Authed, id: &str, meters: &[Meter]) -> Markup {
    html! {
        table id=(id) {
            tr {
                th { (ctx.t("ops.meter_id")) } th { (ctx.t("ops.gateway")) } th { (ctx.t("ops.profile")) }
                th { (ctx.t("ops.last_read")) } th class="num" { (ctx.t("ops.last_volume")) } th { (ctx.t("ops.alarms")) }
            }
            @for m in meters {
                tr data-meter=(m.meter_id) {
                    td { (meter_link(&m.meter_id)) }
                    td { code { (m.gateway_id) } }
                    td { (m.profile_id) }
                    td { @if m.last_ts.is_some() { (ts_opt(&m.last_ts)) } @else { span class="muted" { (ctx.t("ops.never")) } } }
                    td class="num" { (m.last_volume_l.map(thousands).unwrap_or_else(|| "—".into())) }
                    td { (alarm_badges(ctx, &m.last_alarms)) }
                }
            }
        }
    }
}

/// `/ops/meters?q=`: by meter id prefix and by address / customer at once.
pub async fn search(ctx: Authed, Query(q): Query<SearchQuery>) -> Result<Markup, PageError> {
    let text = q.q.unwrap_or_default().trim().to_string();
    if text.chars().count() > 100 {
        return Err(PageError::BadRequest("search text too long".into()));
    }
    let (by_id, by_address) = if text.is_empty() {
        (None, None)
    } else {
        let id_path = format!(
            "/api/v1/dashboard/meters{}",
            query(&[("q", Some(text.clone())), ("limit", Some("50".into()))])
        );
        let acct_path = format!(
            "/api/v1/accounts{}",
            query(&[("q", Some(text.clone())), ("limit", Some("50".into()))])
        );
        // Ingest's search takes only what may begin a meter id (an address
        // or a name goes to billing alone).
        let (a, b) = tokio::join!(
            async {
                if is_id_prefix(&text) {
                    ctx.app.ingest.get::<MeterList>(ctx.token(), &id_path).await
                } else {
                    Ok(MeterList { meters: Vec::new() })
                }
            },
            ctx.app.billing.get::<Accounts>(ctx.token(), &acct_path),
        );
        // The account search refusing (a role without billing reads) leaves
        // the id search standing.
        let b = match b {
            Ok(b) => Some(b),
            Err(BackendError::Forbidden(_)) | Err(BackendError::BadRequest(_)) => None,
            Err(e) => return Err(e.into()),
        };
        (Some(a?), b)
    };
    let body = html! {
        h1 { (ctx.t("nav.meters")) }
        form class="search" method="get" action="/ops/meters" {
            input type="search" name="q" id="meter-q" value=(text) placeholder=(ctx.t("ops.search_help")) size="40";
            button type="submit" id="meter-search" { (ctx.t("search")) }
            a href="/ops/meters/silent" { (ctx.t("ops.silent")) }
        }
        @if let Some(list) = &by_id {
            h2 { (ctx.t("ops.by_id")) }
            @if list.meters.is_empty() { p class="muted" { (ctx.t("ops.no_results")) } }
            @else { (meter_table(&ctx, "meters-by-id", &list.meters)) }
        }
        @if let Some(accts) = &by_address {
            h2 { (ctx.t("ops.by_address")) }
            @if accts.accounts.is_empty() { p class="muted" { (ctx.t("ops.no_results")) } }
            @else {
                table id="meters-by-address" {
                    tr { th { (ctx.t("ops.account")) } th { (ctx.t("ops.customer")) } th { (ctx.t("ops.address")) } th { (ctx.t("nav.meters")) } }
                    @for a in &accts.accounts {
                        tr {
                            td { (a.account_no) } td { (a.customer) } td { (a.address) }
                            td { @for m in &a.meters { (meter_link(m)) " " } }
                        }
                    }
                }
            }
        }
    };
    Ok(ctx.page(ctx.t("nav.meters"), body))
}

#[derive(Debug, Deserialize)]
pub struct SilentQuery {
    hours: Option<i64>,
}

/// `/ops/meters/silent?hours=N`: meters without a reading for N hours.
pub async fn silent(ctx: Authed, Query(q): Query<SilentQuery>) -> Result<Markup, PageError> {
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 400);
    let path = format!("/api/v1/dashboard/silent?hours={hours}&limit=500");
    let s: SilentMeters = ctx.app.ingest.get(ctx.token(), &path).await?;
    let body = html! {
        h1 { (ctx.t("ops.silent")) }
        form class="search" method="get" action="/ops/meters/silent" {
            input type="number" name="hours" id="silent-hours" min="1" max="9600" value=(s.hours);
            span { (ctx.t("ops.silent_hours")) }
            button type="submit" { (ctx.t("search")) }
            span class="muted" id="silent-total" { (ctx.t("ops.silent_total")) " " (thousands(s.total)) }
        }
        @if s.meters.is_empty() { p class="muted" { (ctx.t("ops.no_results")) } }
        @else { (meter_table(&ctx, "silent-meters", &s.meters)) }
    };
    Ok(ctx.page(ctx.t("ops.silent"), body))
}

/// Litres used in each 15-minute slot: the totalizer's rise since the slot
/// before (the first slot has no previous read and is left out).
fn fifteen_minute_consumption(readings: &[Reading]) -> (Vec<i64>, Vec<Option<f64>>) {
    const SLOT_S: i64 = 900;
    let mut slots: Vec<(i64, i64)> = Vec::new(); // (slot start, last volume in slot)
    for r in readings {
        let slot = r.ts.timestamp().div_euclid(SLOT_S) * SLOT_S;
        match slots.last_mut() {
            Some((s, v)) if *s == slot => *v = (*v).max(r.volume_l),
            _ => slots.push((slot, r.volume_l)),
        }
    }
    let mut x = Vec::with_capacity(slots.len());
    let mut y = Vec::with_capacity(slots.len());
    for w in slots.windows(2) {
        let ((_, prev), (slot, v)) = (w[0], w[1]);
        x.push(slot);
        y.push(Some((v - prev).max(0) as f64));
    }
    (x, y)
}

/// `/ops/meters/{id}`: the meter, its charts, alarms and quarantine.
pub async fn meter(ctx: Authed, Path(id): Path<String>) -> Result<Markup, PageError> {
    let token = ctx.token();
    let enc = seg(&id);
    let is_operator = ctx.session.role.allows(Role::Operator);
    let quarantine_path = format!("/api/v1/dashboard/meters/{enc}/quarantine?limit=50");
    let detail_path = format!("/api/v1/dashboard/meters/{enc}");
    let (detail, quarantine) = tokio::join!(
        ctx.app.ingest.get::<MeterDetail>(token, &detail_path),
        async {
            if is_operator {
                Some(
                    ctx.app
                        .ingest
                        .get::<MeterQuarantine>(token, &quarantine_path)
                        .await,
                )
            } else {
                None
            }
        },
    );
    let detail = detail?;
    let quarantine = quarantine.transpose()?;
    // The charts end at the meter's last reading (now, for a meter that
    // reports; earlier for a silent one, or for a demo's simulated month).
    let now = Utc::now();
    let to = detail.meter.last_ts.map(|t| t.min(now)).unwrap_or(now);
    let to_day = to.date_naive();
    let daily_path = format!(
        "/api/v1/meters/{enc}/daily{}",
        query(&[
            ("from", Some((to_day - Duration::days(30)).to_string())),
            ("to", Some(to_day.to_string())),
        ])
    );
    let days = ctx.app.ingest.get::<Daily>(token, &daily_path).await?;
    let m = &detail.meter;
    // The 15-minute chart comes in its own request (htmx, on load): it reads
    // raw readings, the page's one slow query at city scale (ingest/README).
    let intervals = format!(
        "/ops/meters/{enc}/intervals{}",
        query(&[("to", Some(rfc3339(to)))])
    );
    let chart_daily = Chart {
        id: "chart-daily".into(),
        title: ctx.t("ops.consumption_daily").into(),
        x: days
            .days
            .iter()
            .map(|d| {
                d.day
                    .and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp())
                    .unwrap_or(0)
            })
            .collect(),
        series: vec![Series {
            label: ctx.t("ops.litres").into(),
            values: days
                .days
                .iter()
                .map(|d| Some(d.consumption_l as f64))
                .collect(),
        }],
        bars: true,
        unit: "L".into(),
    };
    let open: Vec<&AlarmSpan> = detail
        .alarms
        .iter()
        .filter(|a| a.cleared_at.is_none())
        .collect();
    let body = html! {
        h1 { (ctx.t("ops.meter")) " " code id="meter-id" { (m.meter_id) } }
        div class="cards" {
            div class="card" { div class="label" { (ctx.t("ops.gateway")) } div class="value" { code { (m.gateway_id) } } }
            div class="card" { div class="label" { (ctx.t("ops.profile")) } div class="value" { (m.profile_id) } }
            div class="card" { div class="label" { (ctx.t("ops.last_read")) } div class="value" { (ts_opt(&m.last_ts)) } }
            div class="card" { div class="label" { (ctx.t("ops.last_volume")) } div class="value" { (m.last_volume_l.map(thousands).unwrap_or_else(|| "—".into())) } }
        }
        @if !open.is_empty() {
            p id="open-alarms" {
                @for a in &open {
                    span class="badge alarm" data-alarm=(a.alarm.as_str()) { (ctx.t(alarm_key(a.alarm))) } " " (ctx.t("ops.since")) " " (ts(&a.since)) " "
                }
            }
        }
        div id="chart-15min-slot" hx-get=(intervals) hx-trigger="load" hx-swap="outerHTML" {
            figure class="chart loading" { figcaption { (ctx.t("ops.consumption_15min")) } p class="muted" { "…" } }
        }
        (chart_daily.render())
        h2 { (ctx.t("ops.alarms")) }
        @if detail.alarms.is_empty() { p class="muted" { (ctx.t("none")) } }
        @else {
            table id="alarm-history" {
                tr { th { (ctx.t("ops.alarms")) } th { (ctx.t("ops.since")) } th { (ctx.t("ops.cleared")) } }
                @for a in &detail.alarms {
                    tr { td { (ctx.t(alarm_key(a.alarm))) } td { (ts(&a.since)) } td { (ts_opt(&a.cleared_at)) } }
                }
            }
        }
        h2 { (ctx.t("ops.consumption_daily")) }
        table id="daily" {
            tr { th { (ctx.t("ops.day")) } th class="num" { (ctx.t("ops.litres")) } th class="num" { (ctx.t("ops.reads")) } th { (ctx.t("ops.quality")) } }
            @for d in days.days.iter().rev() {
                tr { td { (d.day) } td class="num" { (thousands(d.consumption_l)) } td class="num" { (d.reads) } td { (quality(d.quality)) } }
            }
        }
        h2 { (ctx.t("ops.quarantined_readings")) }
        @match &quarantine {
            None => p class="muted" id="quarantine-hidden" { (ctx.t("ops.quarantine_operator_only")) },
            Some(q) if q.items.is_empty() => p class="muted" { (ctx.t("none")) },
            Some(q) => table id="meter-quarantine" {
                tr { th { (ctx.t("ops.reading_ts")) } th { (ctx.t("ops.reason")) } th { (ctx.t("ops.detail")) } th { (ctx.t("ops.received")) } }
                @for item in &q.items {
                    tr { td { (ts_opt(&item.ts)) } td { code { (item.reason.as_str()) } } td { (item.detail) } td { (ts(&item.received_at)) } }
                }
            },
        }
    };
    Ok(ctx.page(&format!("{} {}", ctx.t("ops.meter"), m.meter_id), body))
}

/// A day's quality as the page shows it (the API's word).
fn quality(q: DayQuality) -> &'static str {
    match q {
        DayQuality::Actual => "actual",
        DayQuality::Gap => "gap",
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Deserialize)]
pub struct IntervalsQuery {
    to: Option<DateTime<Utc>>,
}

/// `/ops/meters/{id}/intervals?to=`: the 15-minute consumption chart over
/// the 2 days ending at `to` (default now), as a fragment for the meter page.
/// A failure is shown in place (htmx swaps only successful answers).
pub async fn intervals(
    ctx: Authed,
    Path(id): Path<String>,
    Query(q): Query<IntervalsQuery>,
) -> Markup {
    let to = q.to.unwrap_or_else(Utc::now).min(Utc::now());
    let path = format!(
        "/api/v1/meters/{}/readings{}",
        seg(&id),
        query(&[
            ("from", Some(rfc3339(to - Duration::days(2)))),
            ("to", Some(rfc3339(to))),
            ("limit", Some("400".into())),
        ])
    );
    match ctx.app.ingest.get::<Readings>(ctx.token(), &path).await {
        Ok(readings) => {
            let (x, y) = fifteen_minute_consumption(&readings.readings);
            Chart {
                id: "chart-15min".into(),
                title: ctx.t("ops.consumption_15min").into(),
                x,
                series: vec![Series {
                    label: ctx.t("ops.litres").into(),
                    values: y,
                }],
                bars: true,
                unit: "L".into(),
            }
            .render()
        }
        Err(e) => html! {
            figure class="chart" id="chart-15min-error" {
                figcaption { (ctx.t("ops.consumption_15min")) }
                p class="flash error" { (e.to_string()) }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumption_per_slot_is_the_rise_since_the_slot_before() {
        let t0 = DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = |m: i64, v: i64| Reading {
            ts: t0 + Duration::minutes(m),
            volume_l: v,
            flow_lph: None,
            alarms: Vec::new(),
        };
        let (x, y) = fifteen_minute_consumption(&[
            r(0, 100),
            r(15, 130),
            r(20, 135),
            r(30, 135),
            r(45, 200),
        ]);
        assert_eq!(x.len(), 3);
        assert_eq!(y, vec![Some(35.0), Some(0.0), Some(65.0)]);
        assert_eq!(x[0], (t0 + Duration::minutes(15)).timestamp());
    }
}
