//! `/master/check` (operator and admin): the four disagreements of
//! `waterworks check master` between billing's master data and ingest's
//! device registry, as tables. The console has no database: it asks the
//! services' APIs with the person's own token
//! (`waterworks_import::check::over_http`), which read at most one page of
//! each list; the page says when the check saw only part of the data.

use super::page;
use super::search::{meter_link, premises_link};
use crate::web::{Authed, PageError};
use axum::extract::Query;
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_import::check::{over_http, Finding};
use waterworks_service::auth::Role;

#[derive(Debug, Default, Deserialize)]
pub struct CheckForm {
    /// Days of `wrong_gateway` quarantine to look at (default 7).
    days: Option<i64>,
}

/// `GET /master/check[?days=N]`.
pub async fn check(ctx: Authed, Query(q): Query<CheckForm>) -> Result<Markup, PageError> {
    ctx.require(Role::Operator)?;
    let days = q.days.unwrap_or(7);
    if !(1..=365).contains(&days) {
        return Err(PageError::BadRequest(
            "days must be between 1 and 365".into(),
        ));
    }
    let result = over_http(
        &ctx.app.config.billing_url,
        &ctx.app.config.ingest_url,
        ctx.token(),
        days,
    )
    .await;
    let title = ctx.t("check.title");
    let c = match result {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "master check failed");
            return Ok(page(
                &ctx,
                title,
                html! {
                    h1 { (title) }
                    div class="problems" id="check-failed" role="alert" { (ctx.t("check.failed")) ": " (format!("{e:#}")) }
                },
            ));
        }
    };
    let table = |id: &str, key: &'static str, list: &[Finding], premises: bool| {
        html! {
            section id=(id) {
                h2 { (ctx.t(key)) " " span class="count" { "(" (list.len()) ")" } }
                @if list.is_empty() {
                    p class="muted" { (ctx.t("check.none")) }
                } @else {
                    table {
                        tr {
                            th { (ctx.t(if premises { "master.account_no" } else { "master.meter_id" })) }
                            th { (ctx.t("check.detail")) }
                        }
                        @for f in list {
                            tr data-key=(f.key) {
                                td { @if premises { (premises_link(&f.key)) } @else { (meter_link(&f.key)) } }
                                td { (f.detail) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &ctx,
        title,
        html! {
            h1 { (title) }
            p class="muted" { (ctx.t("check.help")) " (" (days) " " (ctx.t("check.days")) ")" }
            @if let Some(p) = &c.partial {
                div class="problems" id="check-partial" { (ctx.t("check.partial")) ": " (p) }
            }
            @if c.is_clean() {
                p class="ok" id="check-clean" { (ctx.t("check.clean")) }
            }
            (table("installed-unknown", "check.installed_unknown", &c.installed_unknown_to_ingest, false))
            (table("registered-not-installed", "check.registered_not_installed", &c.registered_not_installed, false))
            (table("other-gateway", "check.other_gateway", &c.other_gateway, false))
            (table("premises-without-meter", "check.premises_without_meter", &c.premises_without_meter, true))
        },
    ))
}

pub static MESSAGES: &[crate::i18n::Msg] = &[
    ("check.title", "기준정보 점검", "Master data check"),
    (
        "check.help",
        "요금(billing)의 기준정보와 수집(ingest)의 계량기 등록이 어긋난 곳입니다. wrong_gateway 격리는 최근",
        "Where billing's master data and ingest's meter registry disagree; wrong_gateway quarantine of the last",
    ),
    ("check.days", "일", "days"),
    (
        "check.installed_unknown",
        "요금에 설치되어 있으나 수집에 등록되지 않은 계량기",
        "Meters installed in billing but unknown to ingest",
    ),
    (
        "check.registered_not_installed",
        "수집에 등록되었으나 어디에도 설치되지 않은 계량기",
        "Registered meters without an installation",
    ),
    (
        "check.other_gateway",
        "다른 게이트웨이로 보고하는 계량기",
        "Meters reporting under another gateway",
    ),
    (
        "check.premises_without_meter",
        "계량기가 없는 수용가",
        "Premises without a meter",
    ),
    ("check.detail", "내용", "Detail"),
    ("check.none", "없음", "None."),
    (
        "check.clean",
        "요금과 수집이 일치합니다.",
        "Billing and ingest agree.",
    ),
    ("check.partial", "일부만 점검했습니다", "Partial check"),
    ("check.failed", "점검하지 못했습니다", "The check failed"),
];
