//! The three searches: `/master/customers?q=` (number prefix or name),
//! `/master/premises?q=` (수용가번호 or route prefix, address or customer),
//! `/master/meters?q=` (id or serial prefix). Billing does the matching;
//! without a search text it lists the first 50 by key.

use super::{page, usage_label};
use crate::backend::{query, seg};
use crate::web::{Authed, PageError};
use axum::extract::Query;
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::master::{Customer, Meter, Premises, MAX_SEARCH_CHARS};
use waterworks_service::auth::Role;

#[derive(Debug, Deserialize)]
pub struct SearchForm {
    q: Option<String>,
}

/// The search text, trimmed and within billing's bound.
fn text(q: SearchForm) -> Result<String, PageError> {
    let t = q.q.unwrap_or_default().trim().to_string();
    if t.chars().count() > MAX_SEARCH_CHARS || t.contains('\0') {
        return Err(PageError::BadRequest(format!(
            "the search text must be at most {MAX_SEARCH_CHARS} characters"
        )));
    }
    Ok(t)
}

/// Billing's answer to `GET /api/v1/master/{kind}?q=`.
async fn find<T: serde::de::DeserializeOwned>(
    ctx: &Authed,
    kind: &str,
    text: &str,
) -> Result<Vec<T>, PageError> {
    ctx.require(Role::Viewer)?;
    let path = format!(
        "/api/v1/master/{kind}{}",
        query(&[("q", Some(text.to_string())), ("limit", Some("50".into()))])
    );
    Ok(ctx.app.billing.get(ctx.token(), &path).await?)
}

/// The page around a result table: title, the search form, the table or
/// "nothing found".
fn frame(
    ctx: &Authed,
    title_key: &'static str,
    action: &str,
    help_key: &'static str,
    text: &str,
    found: usize,
    table: Markup,
) -> Markup {
    page(
        ctx,
        ctx.t(title_key),
        html! {
            h1 { (ctx.t(title_key)) }
            form class="search" method="get" action=(action) {
                input type="search" name="q" id="master-q" value=(text) placeholder=(ctx.t(help_key)) size="44" maxlength=(MAX_SEARCH_CHARS);
                button type="submit" id="master-search" { (ctx.t("search")) }
                @if text.is_empty() { span class="muted" { (ctx.t("master.first_by_key")) } }
            }
            @if found == 0 { p class="muted" id="no-results" { (ctx.t("master.no_results")) } }
            @else { (table) }
        },
    )
}

pub(crate) fn customer_link(id: &str) -> Markup {
    html! { a class="customer-link" href=(format!("/master/customers/{}", seg(id))) { (id) } }
}

pub(crate) fn premises_link(no: &str) -> Markup {
    html! { a class="premises-link" href=(format!("/master/premises/{}", seg(no))) { (no) } }
}

pub(crate) fn meter_link(id: &str) -> Markup {
    html! { a class="meter-link" href=(format!("/master/meters/{}", seg(id))) { (id) } }
}

/// `/master/customers?q=`.
pub async fn customers(ctx: Authed, Query(q): Query<SearchForm>) -> Result<Markup, PageError> {
    let text = text(q)?;
    let found: Vec<Customer> = find(&ctx, "customers", &text).await?;
    let table = html! {
        table id="customers" {
            tr { th { (ctx.t("master.customer_id")) } th { (ctx.t("master.name")) } th { (ctx.t("master.contact")) } }
            @for c in &found {
                tr data-key=(c.customer_id) {
                    td { (customer_link(&c.customer_id)) } td { (c.name) } td { (c.contact) }
                }
            }
        }
    };
    Ok(frame(
        &ctx,
        "master.customers",
        "/master/customers",
        "master.search_customers",
        &text,
        found.len(),
        table,
    ))
}

/// `/master/premises?q=`.
pub async fn premises(ctx: Authed, Query(q): Query<SearchForm>) -> Result<Markup, PageError> {
    let text = text(q)?;
    let found: Vec<Premises> = find(&ctx, "premises", &text).await?;
    let table = html! {
        table id="premises" {
            tr {
                th { (ctx.t("master.account_no")) } th { (ctx.t("master.customer_id")) }
                th { (ctx.t("master.address")) } th { (ctx.t("master.usage_type")) }
                th class="num" { (ctx.t("master.diameter_mm")) } th { (ctx.t("master.billing_group")) }
                th { (ctx.t("master.reading_route")) }
            }
            @for p in &found {
                tr data-key=(p.account_no) {
                    td { (premises_link(&p.account_no)) }
                    td { (customer_link(&p.customer_id)) }
                    td {
                        (p.address)
                        @if !p.road_address.is_empty() { br; span class="muted" { (p.road_address) } }
                    }
                    td { (usage_label(&ctx, &p.usage_type)) }
                    td class="num" { (p.diameter_mm) }
                    td { (p.billing_group) }
                    td { (p.reading_route) }
                }
            }
        }
    };
    Ok(frame(
        &ctx,
        "master.premises",
        "/master/premises",
        "master.search_premises",
        &text,
        found.len(),
        table,
    ))
}

/// `/master/meters?q=`.
pub async fn meters(ctx: Authed, Query(q): Query<SearchForm>) -> Result<Markup, PageError> {
    let text = text(q)?;
    let found: Vec<Meter> = find(&ctx, "meters", &text).await?;
    let table = html! {
        table id="meters" {
            tr {
                th { (ctx.t("master.meter_id")) } th { (ctx.t("master.serial")) } th { (ctx.t("master.maker")) }
                th { (ctx.t("master.model")) } th class="num" { (ctx.t("master.diameter_mm")) }
                th { (ctx.t("master.gateway")) }
            }
            @for m in &found {
                tr data-key=(m.meter_id) {
                    td { (meter_link(&m.meter_id)) } td { (m.serial) } td { (m.maker) }
                    td { (m.model) } td class="num" { (m.diameter_mm) } td { code { (m.gateway_id) } }
                }
            }
        }
    };
    Ok(frame(
        &ctx,
        "master.meters",
        "/master/meters",
        "master.search_meters",
        &text,
        found.len(),
        table,
    ))
}
