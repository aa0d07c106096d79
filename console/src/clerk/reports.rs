//! Reports: receivables ageing (as of a date) and a period's run summary,
//! shown as tables and downloadable as billing's own CSV.

use super::usage_type_ko;
use crate::backend::query;
use crate::layout::thousands;
use crate::web::{Authed, PageError};
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Datelike;
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::billing::{Ageing, AgeingRow, RunSummary, SummaryRow};

/// A column of a report table: its amount from a row, and its label's key.
type Column<R> = (fn(&R) -> i64, &'static str);

/// Rows of the ageing table drawn on the page (the CSV has them all).
const PAGE_ROWS: usize = 200;

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    as_of: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    group: String,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub async fn page(ctx: Authed, Query(q): Query<ReportQuery>) -> Result<Markup, PageError> {
    let as_of = opt(&q.as_of);
    let ageing: Ageing = ctx
        .app
        .billing
        .get(
            ctx.token(),
            &format!(
                "/api/v1/reports/ageing{}",
                query(&[("as_of", as_of.clone())])
            ),
        )
        .await?;
    // By default the month before this one: the last month billed.
    let period = opt(&q.period).unwrap_or_else(|| {
        let today = chrono::Utc::now()
            .with_timezone(&crate::layout::kst())
            .date_naive();
        (today - chrono::Duration::days(i64::from(today.day())))
            .format("%Y-%m")
            .to_string()
    });
    let group = opt(&q.group);
    let summary: RunSummary = ctx
        .app
        .billing
        .get(
            ctx.token(),
            &format!(
                "/api/v1/reports/run-summary{}",
                query(&[("period", Some(period.clone())), ("group", group.clone())])
            ),
        )
        .await?;
    let ageing_csv = format!(
        "/clerk/reports/ageing.csv{}",
        query(&[("as_of", as_of.clone())])
    );
    let summary_csv = format!(
        "/clerk/reports/run-summary.csv{}",
        query(&[("period", Some(period.clone())), ("group", group.clone())])
    );
    let cols: [Column<AgeingRow>; 5] = [
        (|r| r.current_krw, "clerk.reports.current"),
        (|r| r.days_31_60_krw, "clerk.reports.d31"),
        (|r| r.days_61_90_krw, "clerk.reports.d61"),
        (|r| r.days_90_plus_krw, "clerk.reports.d90"),
        (|r| r.total_krw, "clerk.total"),
    ];
    let parts: [Column<SummaryRow>; 6] = [
        (|r| r.water_krw, "clerk.water"),
        (|r| r.base_krw, "clerk.base"),
        (|r| r.sewer_krw, "clerk.sewer"),
        (|r| r.levy_krw, "clerk.levy"),
        (|r| r.reduction_krw, "clerk.reduction"),
        (|r| r.total_krw, "clerk.total"),
    ];
    let (totals, st) = (&ageing.totals, &summary.totals);
    Ok(super::page(
        &ctx,
        ctx.t("nav.reports"),
        html! {
            h1 { (ctx.t("nav.reports")) }
            h2 { (ctx.t("clerk.reports.ageing")) }
            form method="get" action="/clerk/reports" class="search" {
                label { (ctx.t("clerk.reports.as_of")) " " input type="date" name="as_of" value=(ageing.as_of.to_string()); }
                input type="hidden" name="period" value=(period);
                @if let Some(g) = &group { input type="hidden" name="group" value=(g); }
                button type="submit" { (ctx.t("search")) }
                " " a id="ageing-csv" href=(ageing_csv) download { (ctx.t("clerk.reports.csv")) }
            }
            table class="grid" id="ageing" {
                thead { tr {
                    th { (ctx.t("clerk.account")) } th { (ctx.t("clerk.customer")) }
                    @for (_, k) in cols { th class="num" { (ctx.t(k)) } }
                } }
                tbody {
                    @for r in ageing.rows.iter().take(PAGE_ROWS) {
                        tr { td { (r.account_no) } td { (r.customer) }
                             @for (c, _) in cols { td class="num" { (thousands(c(r))) } } }
                    }
                    tr class="total" { td { (ctx.t("clerk.total")) } td {}
                        @for (c, _) in cols { td class="num" { (thousands(c(totals))) } } }
                }
            }
            h2 { (ctx.t("clerk.reports.summary")) }
            form method="get" action="/clerk/reports" class="search" {
                @if let Some(a) = &as_of { input type="hidden" name="as_of" value=(a); }
                label { (ctx.t("clerk.period")) " " input type="month" name="period" value=(period); }
                label { (ctx.t("clerk.group")) " " input type="text" name="group" value=(group.clone().unwrap_or_default()); }
                button type="submit" { (ctx.t("search")) }
                " " a id="summary-csv" href=(summary_csv) download { (ctx.t("clerk.reports.csv")) }
            }
            dl class="facts" {
                dt { (ctx.t("clerk.reports.issued")) } dd { (thousands(summary.issued)) }
                dt { (ctx.t("clerk.runs.held")) } dd { (thousands(summary.held)) }
                dt { (ctx.t("clerk.status.cancelled")) } dd { (thousands(summary.cancelled)) }
            }
            table class="grid" id="run-summary" {
                thead { tr {
                    th { (ctx.t("clerk.usage_type")) } th class="num" { (ctx.t("clerk.runs.accounts")) }
                    th class="num" { (ctx.t("clerk.usage_m3")) }
                    @for (_, k) in parts { th class="num" { (ctx.t(k)) } }
                } }
                tbody {
                    @for r in &summary.by_usage_type {
                        tr { td { (usage_type_ko(&r.usage_type)) }
                             td class="num" { (thousands(r.accounts)) }
                             td class="num" { (thousands(r.usage_m3)) }
                             @for (c, _) in parts { td class="num" { (thousands(c(r))) } } }
                    }
                    tr class="total" { td { (ctx.t("clerk.total")) }
                        td class="num" { (thousands(st.accounts)) }
                        td class="num" { (thousands(st.usage_m3)) }
                        @for (c, _) in parts { td class="num" { (thousands(c(st))) } } }
                }
            }
        },
    ))
}

/// Billing's CSV passed through as a download.
async fn csv(ctx: &Authed, path: &str, filename: &str) -> Result<Response, PageError> {
    let raw = ctx.app.billing.get_raw(ctx.token(), path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        raw.body,
    )
        .into_response())
}

/// A safe file-name part: letters, digits and `-` only.
fn file_part(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect()
}

pub async fn ageing_csv(ctx: Authed, Query(q): Query<ReportQuery>) -> Result<Response, PageError> {
    let as_of = opt(&q.as_of);
    let name = format!(
        "ageing-{}.csv",
        file_part(as_of.as_deref().unwrap_or("today"))
    );
    let path = format!(
        "/api/v1/reports/ageing{}",
        query(&[("as_of", as_of), ("format", Some("csv".into()))])
    );
    csv(&ctx, &path, &name).await
}

pub async fn summary_csv(ctx: Authed, Query(q): Query<ReportQuery>) -> Result<Response, PageError> {
    let period = opt(&q.period)
        .ok_or_else(|| PageError::BadRequest("period (YYYY-MM) is required".into()))?;
    let group = opt(&q.group);
    let name = format!(
        "run-summary-{}{}.csv",
        file_part(&period),
        group
            .as_deref()
            .map(|g| format!("-{}", file_part(g)))
            .unwrap_or_default()
    );
    let path = format!(
        "/api/v1/reports/run-summary{}",
        query(&[
            ("period", Some(period)),
            ("group", group),
            ("format", Some("csv".into()))
        ])
    );
    csv(&ctx, &path, &name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_part("2026-10"), "2026-10");
        assert_eq!(file_part("a\"; b/../c"), "abc");
    }
}
