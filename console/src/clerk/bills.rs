//! (Long because one bill's page: search, detail, explained lines, corrections and their forms share the page's helpers.)
//! Bills: search; one bill with its explained lines, reads and ledger
//! entries; the clerk's corrections (cancel, rebill, adjust, payment), each
//! with a reason and a page of the entries it made; the printable notice
//! (고지서) and its PDF.

use super::notice_pdf::{self, Notice, NoticeLeg, NoticeLine};
use super::{notice_settings, usage_type_ko};
use crate::backend::{query, seg};
use crate::layout::{thousands, ts};
use crate::web::{Authed, PageError};
use axum::extract::{Form, Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped};
use rand::Rng;
use serde::Deserialize;
use std::collections::HashSet;
use waterworks_api::billing::{
    AccountDetail, AdjustmentOutcome, AdjustmentRequest, Bill, BillEntries, BillHit, BillLine,
    BillPage, BillSearch, BillStatus, BlockCharge, CancelOutcome, CancelRequest, Component, Entry,
    EntrySource, Notice as NoticeData, Part, PaymentOutcome, PaymentRequest, RebillOutcome,
    RebillRequest,
};
use waterworks_service::auth::Role;

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    status: String,
}

fn status_label(ctx: &Authed, s: BillStatus) -> &'static str {
    match s {
        BillStatus::Issued => ctx.t("clerk.status.issued"),
        BillStatus::Held => ctx.t("clerk.status.held"),
        BillStatus::Cancelled => ctx.t("clerk.status.cancelled"),
    }
}

/// The status filter of the search form: one of billing's, or none.
fn status_filter(s: &str) -> Option<BillStatus> {
    BillStatus::ALL.into_iter().find(|b| b.as_str() == s)
}

fn bill_id(id: &str) -> Result<i64, PageError> {
    id.parse()
        .map_err(|_| PageError::NotFound(format!("bill {id:?}")))
}

pub async fn search(ctx: Authed, Query(q): Query<SearchQuery>) -> Result<Markup, PageError> {
    let text_q = q.q.trim().to_string();
    let period = q.period.trim().to_string();
    let status = q.status.trim().to_string();
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    let status_q = status_filter(&status).map(|s| s.as_str().to_string());
    let result: Option<Vec<BillHit>> = if !text_q.is_empty() {
        let found: BillSearch = ctx
            .app
            .billing
            .get(
                ctx.token(),
                &format!(
                    "/api/v1/bills/search{}",
                    query(&[
                        ("q", Some(text_q.clone())),
                        ("period", opt(&period)),
                        ("status", status_q.clone()),
                        ("limit", Some("100".into())),
                    ])
                ),
            )
            .await?;
        Some(found.bills)
    } else if !period.is_empty() {
        let page: BillPage = ctx
            .app
            .billing
            .get(
                ctx.token(),
                &format!(
                    "/api/v1/bills{}",
                    query(&[
                        ("period", Some(period.clone())),
                        ("status", status_q.clone()),
                        ("limit", Some("100".into())),
                    ])
                ),
            )
            .await?;
        // A period's page names no customers: the column stays empty.
        Some(
            page.bills
                .into_iter()
                .map(|bill| BillHit {
                    bill,
                    customer: String::new(),
                    address: String::new(),
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(super::page(
        &ctx,
        ctx.t("nav.bills"),
        html! {
            h1 { (ctx.t("nav.bills")) }
            form method="get" action="/clerk/bills" class="search" id="bill-search" {
                input type="search" name="q" id="bill-q" value=(text_q) placeholder=(ctx.t("clerk.bills.search_help"));
                input type="month" name="period" id="bill-period" value=(period);
                select name="status" id="bill-status" {
                    option value="" { "—" }
                    @for s in BillStatus::ALL {
                        option value=(s.as_str()) selected[status == s.as_str()] { (status_label(&ctx, s)) }
                    }
                }
                button type="submit" { (ctx.t("search")) }
            }
            @if let Some(bills) = &result {
                @if bills.is_empty() {
                    p id="no-bills" { (ctx.t("clerk.bills.none")) }
                } @else {
                    table class="grid" id="bills" {
                        thead { tr {
                            th { (ctx.t("clerk.bill_number")) } th { (ctx.t("clerk.period")) }
                            th { (ctx.t("clerk.account")) } th { (ctx.t("clerk.customer")) }
                            th { (ctx.t("clerk.status")) } th class="num" { (ctx.t("clerk.usage_m3")) }
                            th class="num" { (ctx.t("clerk.amount")) }
                        } }
                        tbody {
                            @for h in bills {
                                @let b = &h.bill;
                                tr data-bill=(b.bill_id) {
                                    td { a class="bill-link" href=(format!("/clerk/bills/{}", b.bill_id)) {
                                        @match &b.bill_number {
                                            Some(n) => { (n) }
                                            None => { "#" (b.bill_id) }
                                        }
                                    } }
                                    td { (b.period) }
                                    td { (b.account_no) }
                                    td { (h.customer) }
                                    td { (status_label(&ctx, b.status)) }
                                    td class="num" { (thousands(b.usage_m3)) }
                                    td class="num" { (thousands(b.total_krw)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The bill, its account and its ledger entries, fetched together.
async fn load(ctx: &Authed, id: i64) -> Result<(Bill, AccountDetail, BillEntries), PageError> {
    let b = &ctx.app.billing;
    let bill: Bill = b.get(ctx.token(), &format!("/api/v1/bills/{id}")).await?;
    let (account_path, entries_path) = (
        format!("/api/v1/accounts/{}", seg(&bill.summary.account_no)),
        format!("/api/v1/bills/{id}/entries"),
    );
    let (account, entries) = tokio::join!(
        b.get::<AccountDetail>(ctx.token(), &account_path),
        b.get::<BillEntries>(ctx.token(), &entries_path),
    );
    Ok((bill, account?, entries?))
}

fn lines_view(ctx: &Authed, bill: &Bill) -> Markup {
    html! {
        table class="grid" id="bill-lines" {
            thead { tr {
                th { (ctx.t("clerk.part")) } th { (ctx.t("clerk.lines")) } th class="num" { (ctx.t("clerk.amount")) }
            } }
            tbody {
                @for l in &bill.lines {
                    @let e = &l.explanation;
                    tr {
                        td { (l.label) }
                        td class="explain" {
                            div { (ctx.t("clerk.tariff_version")) ": " (e.tariff_version)
                                  " · " (thousands(e.usage_m3 as i64)) " m³" }
                            @if !e.blocks.is_empty() {
                                table class="blocks" {
                                    @for b in &e.blocks {
                                        tr {
                                            td { (usage_type_ko(&b.usage_type)) }
                                            td { (block_range(b)) }
                                            td class="num" { (b.m3) " m³ × " (b.rate_krw) }
                                            td class="num" { "= " (b.amount_krw) }
                                        }
                                    }
                                }
                            }
                            @if let Some(rate) = e.rate { div { (ctx.t("clerk.rate")) ": " (rate) } }
                            div { (ctx.t("clerk.raw")) ": " (e.raw_krw) " · " (ctx.t("clerk.rounding")) ": " (e.rounding) }
                            @if let Some(p) = e.proration {
                                div { (ctx.t("clerk.proration")) ": " (p.days) "/" (p.period_days) }
                            }
                            @for n in &e.notes { div class="note" { (n) } }
                        }
                        td class="num" { (thousands(l.amount_krw)) }
                    }
                }
                tr class="total" { td { (ctx.t("clerk.total")) } td {} td class="num" id="bill-total" { (thousands(bill.summary.total_krw)) } }
            }
        }
    }
}

fn legs_view(ctx: &Authed, bill: &Bill) -> Markup {
    html! {
        table class="grid" id="bill-legs" {
            thead { tr {
                th { (ctx.t("clerk.meter")) } th { (ctx.t("clerk.start_read")) } th { (ctx.t("clerk.end_read")) }
                th class="num" { (ctx.t("clerk.read_count")) } th class="num" { (ctx.t("clerk.usage_m3")) }
            } }
            tbody {
                @for l in &bill.legs {
                    tr {
                        td { (l.meter_id) }
                        td { (thousands(l.start_volume_l.unwrap_or(0))) " · " (time(l.start_ts)) }
                        td { (thousands(l.end_volume_l.unwrap_or(0))) " · " (time(l.end_ts)) }
                        td class="num" { (thousands(l.reads)) }
                        td class="num" { (thousands(l.usage_m3))
                            @if l.estimated_m3 != 0 { " (" (ctx.t("clerk.runs.estimated")) " " (l.estimated_m3) ")" } }
                    }
                }
            }
        }
    }
}

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| ts(&t)).unwrap_or_else(|| "—".into())
}

fn entries_view(ctx: &Authed, entries: &[&Entry], id: &str) -> Markup {
    html! {
        table class="grid" id=(id) {
            thead { tr {
                th { (ctx.t("clerk.entry")) } th { (ctx.t("clerk.source")) } th { (ctx.t("clerk.memo")) }
                th { (ctx.t("clerk.by")) } th { (ctx.t("clerk.ledger_account")) } th { (ctx.t("clerk.part")) }
                th class="num" { (ctx.t("clerk.amount")) }
            } }
            tbody {
                @for e in entries {
                    @for (i, p) in e.postings.iter().enumerate() {
                        tr data-entry=(e.entry_id) {
                            @if i == 0 {
                                td { "#" (e.entry_id) " · " (e.effective_on) }
                                td class="source" data-source=(source_code(e.source)) { (source_label(ctx, e.source)) }
                                td { (e.memo) }
                                td { (e.created_by) }
                            } @else { td {} td {} td {} td {} }
                            td { (p.account) " " span class="note" { (ledger_account_label(ctx, &p.account)) } }
                            td { (p.part.as_deref().unwrap_or_default()) }
                            td class="num" { (thousands(p.amount_krw)) }
                        }
                    }
                }
            }
        }
    }
}

/// What kind of entry, in the person's language (the code stays in
/// `data-source`).
fn source_label(ctx: &Authed, source: EntrySource) -> String {
    let key = match source {
        EntrySource::Bill => "clerk.source.bill",
        EntrySource::Payment => "clerk.source.payment",
        EntrySource::Cancellation => "clerk.source.cancellation",
        EntrySource::Rebill => "clerk.source.rebill",
        EntrySource::Adjustment => "clerk.source.adjustment",
        EntrySource::Credit => "clerk.source.credit",
    };
    format!("{} ({})", ctx.t(key), source_code(source))
}

/// The source as billing writes it (`bill`, `payment`, ...).
fn source_code(source: EntrySource) -> &'static str {
    match source {
        EntrySource::Bill => "bill",
        EntrySource::Payment => "payment",
        EntrySource::Cancellation => "cancellation",
        EntrySource::Rebill => "rebill",
        EntrySource::Adjustment => "adjustment",
        EntrySource::Credit => "credit",
    }
}

/// The chart of accounts' names (billing's `ledger_accounts`).
fn ledger_account_label(ctx: &Authed, code: &str) -> &'static str {
    match code {
        "1010" => ctx.t("clerk.acct.1010"),
        "1100" => ctx.t("clerk.acct.1100"),
        "2100" => ctx.t("clerk.acct.2100"),
        "2200" => ctx.t("clerk.acct.2200"),
        "4100" => ctx.t("clerk.acct.4100"),
        "4110" => ctx.t("clerk.acct.4110"),
        "4200" => ctx.t("clerk.acct.4200"),
        "4800" => ctx.t("clerk.acct.4800"),
        "4900" => ctx.t("clerk.acct.4900"),
        _ => "",
    }
}

fn new_key() -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

fn actions_view(ctx: &Authed, bill: &Bill, account: &AccountDetail) -> Markup {
    let id = bill.summary.bill_id;
    let today = chrono::Utc::now()
        .with_timezone(&crate::layout::kst())
        .format("%Y-%m-%d")
        .to_string();
    let open = account.open_krw.max(0);
    html! {
        section class="actions" id="bill-actions" {
            h2 { (ctx.t("clerk.actions")) }
            form method="post" action=(format!("/clerk/bills/{id}/cancel")) id="cancel-form" {
                b { (ctx.t("clerk.cancel")) } " "
                input type="text" name="reason" id="cancel-reason" required maxlength="500" placeholder=(ctx.t("clerk.reason"));
                button type="submit" id="cancel-submit" { (ctx.t("clerk.cancel")) }
            }
            form method="post" action=(format!("/clerk/bills/{id}/rebill")) id="rebill-form" {
                b { (ctx.t("clerk.rebill")) } " "
                input type="text" name="reason" id="rebill-reason" required maxlength="500" placeholder=(ctx.t("clerk.reason"));
                button type="submit" id="rebill-submit" { (ctx.t("clerk.rebill")) }
            }
            form method="post" action=(format!("/clerk/bills/{id}/adjust")) id="adjust-form" {
                b { (ctx.t("clerk.adjust")) } " "
                select name="part" id="adjust-part" {
                    @for (p, k) in [("water", "clerk.water"), ("base", "clerk.base"), ("sewer", "clerk.sewer"), ("levy", "clerk.levy")] {
                        option value=(p) { (ctx.t(k)) }
                    }
                }
                input type="number" name="amount_krw" id="adjust-amount" required step="1";
                input type="text" name="reason" id="adjust-reason" required maxlength="500" placeholder=(ctx.t("clerk.reason"));
                input type="hidden" name="key" value=(new_key());
                button type="submit" id="adjust-submit" { (ctx.t("clerk.adjust")) }
            }
            form method="post" action=(format!("/clerk/bills/{id}/payment")) id="payment-form" {
                b { (ctx.t("clerk.payment")) } " "
                input type="text" name="reference" id="payment-reference" required maxlength="64"
                    value=(format!("CONSOLE-{}", new_key())) title=(ctx.t("clerk.reference"));
                input type="number" name="amount_krw" id="payment-amount" required min="1" step="1" value=(open);
                input type="date" name="paid_on" id="payment-date" required value=(today);
                button type="submit" id="payment-submit" { (ctx.t("clerk.payment")) }
            }
        }
    }
}

pub async fn bill(ctx: Authed, Path(id): Path<String>) -> Result<Markup, PageError> {
    let id = bill_id(&id)?;
    let (bill, account, entries) = load(&ctx, id).await?;
    let status = bill.summary.status;
    let number = bill.summary.bill_number.clone().unwrap_or_default();
    let all: Vec<&Entry> = entries.entries.iter().collect();
    let title = format!(
        "{} {}",
        ctx.t("clerk.bill"),
        if number.is_empty() {
            format!("#{id}")
        } else {
            number.clone()
        }
    );
    Ok(super::page(
        &ctx,
        &title,
        html! {
            h1 { (title) }
            dl class="facts" id="bill-facts" data-status=(status.as_str()) {
                dt { (ctx.t("clerk.period")) } dd { (bill.summary.period) }
                dt { (ctx.t("clerk.account")) } dd { (bill.summary.account_no) }
                dt { (ctx.t("clerk.customer")) } dd id="bill-customer" { (account.account.customer) }
                dt { (ctx.t("clerk.address")) } dd { (account.account.address) }
                dt { (ctx.t("clerk.usage_type")) } dd { (usage_type_ko(&bill.summary.usage_type)) }
                dt { (ctx.t("clerk.status")) } dd id="bill-status" { (status_label(&ctx, status)) }
                dt { (ctx.t("clerk.tariff_version")) } dd { (bill.summary.tariff_version) }
                dt { (ctx.t("clerk.usage_m3")) } dd { (thousands(bill.summary.usage_m3)) }
                @let holds = &bill.summary.hold_reasons;
                @if !holds.is_empty() {
                    dt { (ctx.t("clerk.runs.held")) } dd { @for h in holds { div { (h) } } }
                }
            }
            p class="links" {
                a id="notice-link" href=(format!("/clerk/bills/{id}/notice")) { (ctx.t("clerk.notice")) } " · "
                a id="notice-pdf-link" href=(format!("/clerk/bills/{id}/notice.pdf")) { (ctx.t("clerk.notice_pdf")) }
            }
            h2 { (ctx.t("clerk.lines")) }
            (lines_view(&ctx, &bill))
            h2 { (ctx.t("clerk.reads")) }
            (legs_view(&ctx, &bill))
            h2 { (ctx.t("clerk.entries")) }
            (entries_view(&ctx, &all, "bill-entries"))
            @if ctx.session.is_clerk() && status == BillStatus::Issued {
                (actions_view(&ctx, &bill, &account))
            }
            @if ctx.session.is_clerk() && status == BillStatus::Held {
                section class="actions" id="bill-actions" {
                    h2 { (ctx.t("clerk.actions")) }
                    form method="post" action=(format!("/clerk/bills/{id}/release")) id="release-form" {
                        b { (ctx.t("clerk.release")) } " "
                        span class="note" { (ctx.t("clerk.release.help")) } " "
                        button type="submit" id="release-submit" { (ctx.t("clerk.release")) }
                    }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub struct ReasonForm {
    reason: String,
}

#[derive(Deserialize)]
pub struct AdjustForm {
    part: Part,
    amount_krw: String,
    reason: String,
    key: String,
}

#[derive(Deserialize)]
pub struct PaymentForm {
    reference: String,
    amount_krw: String,
    paid_on: String,
}

fn amount(s: &str) -> Result<i64, PageError> {
    s.trim()
        .replace(',', "")
        .parse()
        .map_err(|_| PageError::BadRequest(format!("amount {s:?} is not a whole number of won")))
}

fn entry_ids(entries: &BillEntries) -> HashSet<i64> {
    entries.entries.iter().map(|e| e.entry_id).collect()
}

/// The page after a correction: what was done and the entries it made.
async fn result_page(
    ctx: &Authed,
    title: &str,
    before: &HashSet<i64>,
    bills: &[i64],
    message: Markup,
) -> Result<Markup, PageError> {
    let mut fresh: Vec<Entry> = Vec::new();
    for b in bills {
        let e: BillEntries = ctx
            .app
            .billing
            .get(ctx.token(), &format!("/api/v1/bills/{b}/entries"))
            .await?;
        for entry in e.entries {
            let eid = entry.entry_id;
            if !before.contains(&eid) && !fresh.iter().any(|f| f.entry_id == eid) {
                fresh.push(entry);
            }
        }
    }
    fresh.sort_by_key(|e| e.entry_id);
    let refs: Vec<&Entry> = fresh.iter().collect();
    Ok(super::page(
        ctx,
        title,
        html! {
            h1 { (ctx.t("clerk.result")) ": " (title) }
            div class="ok" id="result-message" { (message) }
            h2 { (ctx.t("clerk.result.entries")) }
            @if refs.is_empty() {
                p id="no-new-entries" { (ctx.t("clerk.result.no_entries")) }
            } @else {
                (entries_view(ctx, &refs, "new-entries"))
            }
        },
    ))
}

async fn before(ctx: &Authed, id: i64) -> Result<HashSet<i64>, PageError> {
    let e: BillEntries = ctx
        .app
        .billing
        .get(ctx.token(), &format!("/api/v1/bills/{id}/entries"))
        .await?;
    Ok(entry_ids(&e))
}

/// One clerk action on one bill (cancel, release, rebill, adjustments): the
/// ledger entries the bill had before, then `body` posted to
/// `/api/v1/bills/{id}/{action}`; returns those entries and billing's answer.
async fn bill_action<B: serde::Serialize, T: serde::de::DeserializeOwned>(
    ctx: &Authed,
    id: i64,
    action: &str,
    body: &B,
) -> Result<(HashSet<i64>, T), PageError> {
    let seen = before(ctx, id).await?;
    let out: T = ctx
        .app
        .billing
        .post(ctx.token(), &format!("/api/v1/bills/{id}/{action}"), body)
        .await?;
    Ok((seen, out))
}

fn back(ctx: &Authed, id: i64) -> Markup {
    html! { a id="back-to-bill" href=(format!("/clerk/bills/{id}")) { (ctx.t("clerk.bill")) " #" (id) } }
}

pub async fn cancel(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<ReasonForm>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let id = bill_id(&id)?;
    let req = CancelRequest {
        reason: f.reason.clone(),
    };
    let (seen, _): (_, CancelOutcome) = bill_action(&ctx, id, "cancel", &req).await?;
    let msg = html! { p { (ctx.t("clerk.cancel")) ": " (back(&ctx, id)) " — " (f.reason) } };
    result_page(&ctx, ctx.t("clerk.cancel"), &seen, &[id], msg).await
}

/// Issues a held bill after review: it gets its number and its ledger entry.
pub async fn release(ctx: Authed, Path(id): Path<String>) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let id = bill_id(&id)?;
    let (seen, out): (_, Bill) = bill_action(&ctx, id, "release", &serde_json::Map::new()).await?;
    let number = out.summary.bill_number.unwrap_or_default();
    let msg = html! { p { (ctx.t("clerk.release")) ": " (back(&ctx, id)) " → " (number) } };
    result_page(&ctx, ctx.t("clerk.release"), &seen, &[id], msg).await
}

pub async fn rebill(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<ReasonForm>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let id = bill_id(&id)?;
    let req = RebillRequest {
        reason: f.reason.clone(),
        reads: Vec::new(),
    };
    let (seen, out): (_, RebillOutcome) = bill_action(&ctx, id, "rebill", &req).await?;
    let new_id = out.bill_id;
    let msg = html! {
        p { (ctx.t("clerk.rebill")) ": " (back(&ctx, id)) " → "
            a id="new-bill" href=(format!("/clerk/bills/{new_id}")) { (ctx.t("clerk.new_bill")) " #" (new_id) }
            " (" (thousands(out.total_krw)) " 원) — " (f.reason) }
    };
    result_page(&ctx, ctx.t("clerk.rebill"), &seen, &[id, new_id], msg).await
}

pub async fn adjust(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<AdjustForm>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let id = bill_id(&id)?;
    let amount_krw = amount(&f.amount_krw)?;
    let body = AdjustmentRequest {
        part: f.part,
        amount_krw,
        reason: f.reason.clone(),
        key: f.key.clone(),
    };
    let (seen, _): (_, AdjustmentOutcome) = bill_action(&ctx, id, "adjustments", &body).await?;
    let part = match f.part {
        Part::Levy => "levy",
        Part::Sewer => "sewer",
        Part::Base => "base",
        Part::Water => "water",
    };
    let msg = html! { p { (ctx.t("clerk.adjust")) ": " (back(&ctx, id)) " " (part) " " (thousands(amount_krw)) " 원 — " (f.reason) } };
    result_page(&ctx, ctx.t("clerk.adjust"), &seen, &[id], msg).await
}

pub async fn payment(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<PaymentForm>,
) -> Result<Markup, PageError> {
    ctx.require(Role::Clerk)?;
    let id = bill_id(&id)?;
    let amount_krw = amount(&f.amount_krw)?;
    let bill: Bill = ctx
        .app
        .billing
        .get(ctx.token(), &format!("/api/v1/bills/{id}"))
        .await?;
    let account_no = bill.summary.account_no;
    // A payment settles the account's oldest open bills first: its entry
    // may name any of them, so all its recent bills are looked at.
    let account: AccountDetail = ctx
        .app
        .billing
        .get(
            ctx.token(),
            &format!("/api/v1/accounts/{}", seg(&account_no)),
        )
        .await?;
    let mut bills = vec![id];
    bills.extend(account.bills.iter().map(|b| b.bill_id).filter(|b| *b != id));
    let mut seen = HashSet::new();
    for b in &bills {
        seen.extend(before(&ctx, *b).await?);
    }
    let paid_on = chrono::NaiveDate::parse_from_str(f.paid_on.trim(), "%Y-%m-%d")
        .map_err(|_| PageError::BadRequest(format!("date {:?} is not YYYY-MM-DD", f.paid_on)))?;
    let out: PaymentOutcome = ctx
        .app
        .billing
        .post(
            ctx.token(),
            "/api/v1/payments",
            &PaymentRequest {
                reference: f.reference.clone(),
                account_no: account_no.clone(),
                amount_krw,
                paid_on,
            },
        )
        .await?;
    let msg = html! {
        p { (ctx.t("clerk.payment")) ": " (account_no) " " (thousands(amount_krw)) " 원 · "
            (ctx.t("clerk.reference")) " " (f.reference) " · " (ctx.t("clerk.entry")) " #" (out.entry_id)
            " · " (back(&ctx, id)) }
    };
    result_page(&ctx, ctx.t("clerk.payment"), &seen, &bills, msg).await
}

/// The notice's data, from billing's `GET /api/v1/bills/{id}/notice`.
async fn notice_data(ctx: &Authed, id: i64) -> Result<NoticeData, PageError> {
    Ok(ctx
        .app
        .billing
        .get(ctx.token(), &format!("/api/v1/bills/{id}/notice"))
        .await?)
}

/// Litres as m³ with three decimals (`212500` -> `212.500`).
fn m3(litres: i64) -> String {
    format!(
        "{}.{:03}",
        thousands(litres.div_euclid(1000)),
        litres.rem_euclid(1000)
    )
}

/// A block's range: `21–30 m³`, or `31 m³~` for the open-ended last one.
fn block_range(b: &BlockCharge) -> String {
    match b.to_m3 {
        None => format!("{} m³~", b.from_m3),
        Some(to) => format!("{}–{to} m³", b.from_m3),
    }
}

/// The basis of a line in one short text: blocks, or rate, and rounding.
fn basis(l: &BillLine) -> String {
    let e = &l.explanation;
    let blocks: Vec<String> = e
        .blocks
        .iter()
        .map(|b| format!("{}: {} m³ × {}", block_range(b), b.m3, b.rate_krw))
        .collect();
    let rate = e.rate.map(|r| r.to_string()).unwrap_or_default();
    let mut s = if l.component == Component::Base {
        // A fixed monthly charge by meter diameter: not per m³.
        format!("월 정액 {rate}원")
    } else if l.component == Component::Reduction {
        match e.notes.first() {
            Some(note) => note.clone(),
            None => format!("{rate}%"),
        }
    } else if blocks.is_empty() {
        match rate {
            r if r.is_empty() => format!("{} m³", e.usage_m3),
            r => format!("{} m³ × {r}", e.usage_m3),
        }
    } else {
        blocks.join(", ")
    };
    if let Some(p) = e.proration {
        s.push_str(&format!(" ({}/{}일)", p.days, p.period_days));
    }
    s
}

/// The [`Notice`] from billing's notice data and the console's settings.
pub fn notice_from(n: &NoticeData) -> Notice {
    let bill = &n.bill.summary;
    let settings = notice_settings();
    let mut notes = Vec::new();
    if bill.estimated {
        notes.push("추정 검침이 포함되어 있습니다 (Includes an estimated read).".to_string());
    }
    match bill.status {
        BillStatus::Cancelled => notes.push("취소된 고지서입니다 (Cancelled).".into()),
        BillStatus::Held => notes.push("검토를 위해 보류된 고지서입니다 (Held for review).".into()),
        BillStatus::Issued => {}
    }
    let account = n.account.as_ref();
    Notice {
        issuer: settings.issuer.clone(),
        bill_number: bill.bill_number.clone().unwrap_or_default(),
        period: bill.period.clone(),
        usage_dates: format!("{} ~ {}", n.usage_period.from, n.usage_period.to),
        issued_on: n.issued_on.to_string(),
        due_on: n.due_on.to_string(),
        account_no: bill.account_no.clone(),
        customer: account.map(|a| a.customer.clone()).unwrap_or_default(),
        address: account.map(|a| a.address.clone()).unwrap_or_default(),
        usage_type: usage_type_ko(&bill.usage_type).to_string(),
        diameter_mm: account.map_or(0, |a| i64::from(a.diameter_mm)),
        households: account.map_or(0, |a| i64::from(a.households)),
        legs: n
            .bill
            .legs
            .iter()
            .map(|l| NoticeLeg {
                meter_id: l.meter_id.clone(),
                start: m3(l.start_volume_l.unwrap_or(0)),
                end: m3(l.end_volume_l.unwrap_or(0)),
                usage_m3: l.usage_m3,
            })
            .collect(),
        usage_m3: bill.usage_m3,
        lines: n
            .bill
            .lines
            .iter()
            .map(|l| NoticeLine {
                label: l.label.clone(),
                basis: basis(l),
                amount_krw: l.amount_krw,
            })
            .collect(),
        total_krw: bill.total_krw,
        open_krw: n.open_krw,
        payment_account: settings.payment_account.clone(),
        history: n
            .history
            .iter()
            .map(|h| (h.period.clone(), h.usage_m3))
            .collect(),
        notes,
    }
}

/// The 12-month usage bars as inline SVG (no script; prints as drawn).
fn history_svg(n: &Notice) -> Markup {
    let max = n
        .history
        .iter()
        .filter_map(|(_, v)| *v)
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, top, base) = (600.0f64, 170.0f64, 18.0f64, 145.0f64);
    let slot = w / n.history.len().max(1) as f64;
    let last = n.history.len().saturating_sub(1);
    html! {
        svg id="notice-history" viewBox=(format!("0 0 {w} {h}")) width="100%" role="img" aria-label="usage history" {
            line x1="0" y1=(base) x2=(w) y2=(base) stroke="#333" stroke-width="1" {}
            @for (i, (period, v)) in n.history.iter().enumerate() {
                @let x = slot * i as f64;
                @let cx = x + slot / 2.0;
                @let label = period.split_once('-').map(|(_, m)| format!("{}월", m.trim_start_matches('0'))).unwrap_or_else(|| period.clone());
                @if let Some(v) = v {
                    @let bh = (*v as f64 / max as f64) * (base - top);
                    rect class="bar" x=(format!("{:.1}", x + slot * 0.2)) y=(format!("{:.1}", base - bh)) width=(format!("{:.1}", slot * 0.6)) height=(format!("{:.1}", bh.max(0.5)))
                        fill=(if i == last { "#1c549e" } else { "#8ca8cc" }) {}
                    text x=(format!("{cx:.1}")) y=(format!("{:.1}", base - bh - 4.0)) text-anchor="middle" font-size="11" { (thousands(*v)) }
                } @else {
                    text x=(format!("{cx:.1}")) y=(format!("{:.1}", base - 4.0)) text-anchor="middle" font-size="11" { "-" }
                }
                text x=(format!("{cx:.1}")) y=(format!("{:.1}", base + 16.0)) text-anchor="middle" font-size="11" { (label) }
            }
        }
    }
}

const NOTICE_CSS: &str = "
.notice { max-width: 760px; margin: 0 auto; font-size: 14px; }
.notice .band { background: #1c549e; color: #fff; padding: 10px 16px; display: flex; justify-content: space-between; align-items: baseline; }
.notice .band h1 { margin: 0; font-size: 26px; color: #fff; }
.notice table { width: 100%; border-collapse: collapse; margin: 6px 0 14px; }
.notice th, .notice td { border-bottom: 1px solid #ccd; padding: 4px 6px; text-align: left; }
.notice td.num, .notice th.num { text-align: right; }
.notice .due { background: #e8eff9; border: 1px solid #334; padding: 10px 16px; display: flex; gap: 32px; flex-wrap: wrap; }
.notice .due .big { font-size: 26px; font-weight: bold; }
@media print { header.top, .no-print { display: none !important; } main { padding: 0; } .notice { max-width: none; } }
";

pub async fn notice(ctx: Authed, Path(id): Path<String>) -> Result<Markup, PageError> {
    let id = bill_id(&id)?;
    let data = notice_data(&ctx, id).await?;
    let n = notice_from(&data);
    let title = format!("{} {}", ctx.t("clerk.notice"), n.bill_number);
    Ok(super::page(
        &ctx,
        &title,
        html! {
            style { (PreEscaped(NOTICE_CSS)) }
            p class="no-print" {
                a href=(format!("/clerk/bills/{id}")) { (ctx.t("back")) } " · "
                a id="notice-pdf" href=(format!("/clerk/bills/{id}/notice.pdf")) { (ctx.t("clerk.notice_pdf")) }
            }
            article class="notice" id="notice" {
                div class="band" {
                    h1 { "상수도 요금 고지서" }
                    span { (n.period) " 사용분 · Water bill notice" }
                }
                p { (n.issuer) " · " (ctx.t("clerk.bill_number")) " " span id="notice-number" { (n.bill_number) }
                    " · " (ctx.t("clerk.issued_on")) " " (n.issued_on) }
                table {
                    tr { th { (ctx.t("clerk.account")) } td { (n.account_no) } th { (ctx.t("clerk.customer")) } td id="notice-customer" { (n.customer) } }
                    tr { th { (ctx.t("clerk.address")) } td colspan="3" { (n.address) } }
                    tr { th { (ctx.t("clerk.usage_type")) } td { (n.usage_type) } th { (ctx.t("clerk.quote.diameter")) } td { (n.diameter_mm) " mm / " (n.households) " 세대" } }
                    tr { th { (ctx.t("clerk.usage_dates")) } td { (n.usage_dates) } th { (ctx.t("clerk.usage_m3")) } td { (thousands(n.usage_m3)) } }
                }
                table {
                    thead { tr { th { (ctx.t("clerk.meter")) } th class="num" { "전월지침 (m³)" } th class="num" { "당월지침 (m³)" } th class="num" { (ctx.t("clerk.usage_m3")) } } }
                    tbody { @for l in &n.legs { tr { td { (l.meter_id) } td class="num" { (l.start) } td class="num" { (l.end) } td class="num" { (thousands(l.usage_m3)) } } } }
                }
                table id="notice-lines" {
                    thead { tr { th { (ctx.t("clerk.part")) } th { (ctx.t("clerk.lines")) } th class="num" { (ctx.t("clerk.amount")) } } }
                    tbody {
                        @for l in &n.lines { tr { td { (l.label) } td { (l.basis) } td class="num" { (thousands(l.amount_krw)) } } }
                        tr { th { (ctx.t("clerk.total")) } td {} th class="num" { (thousands(n.total_krw)) } }
                    }
                }
                @for note in &n.notes { p { "※ " (note) } }
                div class="due" {
                    div { (ctx.t("clerk.amount_due")) br; span class="big" id="notice-due-amount" { (thousands(n.open_krw)) " 원" } }
                    div { (ctx.t("clerk.due_on")) br; span class="big" id="notice-due-date" { (n.due_on) } }
                    div { (ctx.t("clerk.payment_account")) br; span id="notice-account" { (n.payment_account) } }
                }
                h2 { (ctx.t("clerk.history")) " (m³)" }
                (history_svg(&n))
            }
        },
    ))
}

pub async fn notice_pdf(ctx: Authed, Path(id): Path<String>) -> Result<Response, PageError> {
    let id = bill_id(&id)?;
    let data = notice_data(&ctx, id).await?;
    let n = notice_from(&data);
    let font = notice_settings().font().map_err(|e| {
        tracing::error!(error = %e, "no notice PDF without its font");
        PageError::Unavailable("notice font")
    })?;
    let started = std::time::Instant::now();
    let pdf = tokio::task::spawn_blocking(move || notice_pdf::render(&n, &font))
        .await
        .map_err(|_| PageError::Unavailable("notice PDF"))?
        .map_err(|e| {
            tracing::error!(error = %e, "notice PDF failed");
            PageError::Unavailable("notice PDF")
        })?;
    metrics::histogram!("console_notice_pdf_seconds").record(started.elapsed().as_secs_f64());
    let name = match &data.bill.summary.bill_number {
        None => format!("notice-{id}.pdf"),
        Some(number) => format!("notice-{number}.pdf"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        pdf,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_from_billing_data_and_its_svg() {
        // What billing's notice answers, as it writes it on the wire.
        let data: NoticeData = serde_json::from_value(serde_json::json!({
            "bill": {
                "bill_id": 7, "bill_no": 7, "bill_number": "2026-10-0000007", "period": "2026-10",
                "account_no": "AC1", "run_id": 1, "status": "issued", "hold_reasons": [],
                "usage_type": "household", "usage_m3": 26, "estimated": true, "tariff_version": "v1",
                "components_krw": {"water": 13260, "sewer": 0, "base": 860, "levy": 4420, "reduction": 0},
                "total_krw": 29460, "input_hash": "h", "created_at": "2026-11-01T00:00:00Z",
                "legs": [{"meter_id": "M1", "installed_at": "2026-01-01T00:00:00Z",
                    "start_ts": null, "start_volume_l": 212500, "end_ts": null, "end_volume_l": 239000,
                    "reads": 2, "measured_m3": 26, "usage_m3": 26}],
                "lines": [
                    {"component": "water", "label": "상수도요금", "amount_krw": 13260, "explanation": {
                        "tariff_version": "v1", "usage_m3": 26, "blocks": [
                        {"usage_type": "household", "from_m3": 1, "m3": 26, "rate_krw": "510", "amount_krw": "13260"}],
                        "raw_krw": "13260", "rounding": "truncate_1"}},
                    {"component": "levy", "label": "물이용부담금", "amount_krw": 4420, "explanation": {
                        "tariff_version": "v1", "usage_m3": 26, "rate": "170",
                        "raw_krw": "4420", "rounding": "truncate_1", "proration": {"days": 15, "period_days": 31}}},
                    {"component": "base", "label": "기본요금 (15 mm)", "amount_krw": 860,
                        "explanation": {"tariff_version": "v1", "usage_m3": 26, "rate": "860",
                        "raw_krw": "860", "rounding": "whole_won"}}
                ]
            },
            "account": {"account_no": "AC1", "customer": "홍길동", "address": "대전 <서구>",
                "usage_type": "household", "diameter_mm": 15, "households": 1, "sewer_connected": true,
                "levy_exempt": false, "reductions": [], "billing_group": "A", "meters": []},
            "history": [{"period": "2026-09", "bill_id": 6, "usage_m3": 20, "total_krw": 20000},
                {"period": "2026-10", "bill_id": 7, "usage_m3": 26, "total_krw": 29460}],
            "open_krw": 19460, "paid_krw": 10000, "due_on": "2026-11-30", "issued_on": "2026-11-01",
            "usage_period": {"from": "2026-10-01", "to": "2026-10-31", "month": 10, "year": 2026}
        }))
        .unwrap();
        let n = notice_from(&data);
        assert_eq!(n.customer, "홍길동");
        assert_eq!(n.usage_type, "가정용");
        assert_eq!(n.legs[0].start, "212.500");
        assert_eq!(n.legs[0].end, "239.000");
        assert_eq!(n.lines[0].basis, "1 m³~: 26 m³ × 510");
        assert_eq!(n.lines[1].basis, "26 m³ × 170 (15/31일)");
        // The base charge is fixed by diameter, never "usage × rate".
        assert_eq!(n.lines[2].basis, "월 정액 860원");
        assert_eq!(
            n.history,
            vec![("2026-09".into(), Some(20)), ("2026-10".into(), Some(26))]
        );
        assert_eq!(n.usage_dates, "2026-10-01 ~ 2026-10-31");
        assert!(n.notes[0].contains("추정"));
        let svg = history_svg(&n).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains(">9월<") && svg.contains(">10월<"));
        assert_eq!(m3(5), "0.005");
        assert_eq!(m3(1_234_567), "1,234.567");
        assert!(amount("1,000").is_ok_and(|a| a == 1000));
        assert!(amount("1.5").is_err());
    }
}
