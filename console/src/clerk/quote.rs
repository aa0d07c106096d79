//! The public tariff calculator (no sign-in), like the fee calculators city
//! sites offer: billing's open `POST /api/v1/quote`.

use super::usage_type_ko;
use crate::layout::thousands;
use crate::web::{Ctx, PageError};
use axum::extract::Form;
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::billing::{Quote, QuoteRequest};

const USAGE_TYPES: [&str; 4] = ["household", "general", "bathhouse", "industrial"];
const DIAMETERS: [u32; 9] = [13, 15, 20, 25, 32, 40, 50, 80, 100];

#[derive(Deserialize, Clone)]
pub struct QuoteForm {
    usage_type: String,
    diameter_mm: String,
    usage_m3: String,
    #[serde(default)]
    households: String,
    /// A checkbox: present ("on") when ticked.
    #[serde(default)]
    sewer_connected: Option<String>,
}

impl Default for QuoteForm {
    fn default() -> Self {
        QuoteForm {
            usage_type: "household".into(),
            diameter_mm: "15".into(),
            usage_m3: "20".into(),
            households: "1".into(),
            sewer_connected: Some("on".into()),
        }
    }
}

fn form(ctx: &Ctx, f: &QuoteForm) -> Markup {
    html! {
        form method="post" action="/quote" id="quote-form" class="search" {
            label { (ctx.t("clerk.usage_type")) " "
                select name="usage_type" id="quote-type" {
                    @for t in USAGE_TYPES { option value=(t) selected[f.usage_type == t] { (usage_type_ko(t)) } }
                } }
            label { (ctx.t("clerk.quote.diameter")) " "
                select name="diameter_mm" id="quote-diameter" {
                    @for d in DIAMETERS { option value=(d) selected[f.diameter_mm == d.to_string()] { (d) } }
                } }
            label { (ctx.t("clerk.usage_m3")) " "
                input type="number" name="usage_m3" id="quote-usage" min="0" max="1000000" step="1" required value=(f.usage_m3); }
            label { (ctx.t("clerk.quote.households")) " "
                input type="number" name="households" id="quote-households" min="1" max="10000" step="1" value=(f.households); }
            label { input type="checkbox" name="sewer_connected" id="quote-sewer" checked[f.sewer_connected.is_some()]; " " (ctx.t("clerk.quote.sewer")) }
            button type="submit" id="quote-submit" { (ctx.t("clerk.quote.calculate")) }
        }
    }
}

fn number(s: &str, what: &str) -> Result<u32, PageError> {
    s.trim()
        .parse()
        .map_err(|_| PageError::BadRequest(format!("{what}: {s:?} is not a whole number")))
}

pub async fn page(ctx: Ctx) -> Markup {
    super::page(
        &ctx,
        ctx.t("clerk.quote.title"),
        html! {
            h1 { (ctx.t("clerk.quote.title")) }
            p { (ctx.t("clerk.quote.help")) }
            (form(&ctx, &QuoteForm::default()))
        },
    )
}

pub async fn calculate(ctx: Ctx, Form(f): Form<QuoteForm>) -> Result<Markup, PageError> {
    let households = if f.households.trim().is_empty() {
        1
    } else {
        number(&f.households, "households")?
    };
    let req = QuoteRequest {
        usage_type: f.usage_type.clone(),
        diameter_mm: number(&f.diameter_mm, "diameter")?,
        usage_m3: number(&f.usage_m3, "usage")?,
        households,
        sewer_connected: f.sewer_connected.is_some(),
        levy_exempt: false,
        period: None,
        reductions: Vec::new(),
        leak_relief_prior_avg_m3: None,
    };
    let q: Quote = ctx.app.billing.post_open("/api/v1/quote", &req).await?;
    Ok(super::page(
        &ctx,
        ctx.t("clerk.quote.title"),
        html! {
            h1 { (ctx.t("clerk.quote.title")) }
            (form(&ctx, &f))
            table class="grid" id="quote-lines" {
                thead { tr { th { (ctx.t("clerk.part")) } th { (ctx.t("clerk.tariff_version")) } th class="num" { (ctx.t("clerk.amount")) } } }
                tbody {
                    @for l in &q.lines {
                        tr { td { (l.label) } td { (l.explanation.tariff_version) } td class="num" { (thousands(l.amount_krw)) } }
                    }
                    tr class="total" { td { (ctx.t("clerk.total")) } td { (q.city) } td class="num" id="quote-total" { (thousands(q.total_krw)) " 원" } }
                }
            }
        },
    ))
}
