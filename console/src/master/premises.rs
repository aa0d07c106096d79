//! `/master/premises/{no}`: a premises (수용가), its customer and its
//! installations over time with the install reads; for an admin, the form
//! that edits its fields with a reason (`POST` to the same path).

use super::search::customer_link;
use super::shared::{installations_table, save_one, Listing};
use super::{
    check_reason, edit_outcome, field_label, page, reason_and_submit, text_input, usage_label,
    whole, yes_no,
};
use crate::backend::{query, seg};
use crate::web::{Authed, PageError};
use axum::extract::{Form, Path, Query};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::error::Problem;
use waterworks_api::master::{Premises, PremisesBatch, PremisesDetail};
use waterworks_service::auth::Role;

/// The usage types offered in the form (billing checks them against the
/// tariff; another value is refused there, with the known ones named).
const USAGE_TYPES: &[&str] = &[
    "household",
    "general",
    "business",
    "bathhouse",
    "industrial",
    "public",
];

/// The editable fields as typed (strings, so a refused form comes back as
/// it was sent). Missing fields are empty (an unchecked box is absent).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PremisesForm {
    address: String,
    road_address: String,
    usage_type: String,
    diameter_mm: String,
    households: String,
    sewer_connected: Option<String>,
    levy_exempt: Option<String>,
    billing_group: String,
    reading_route: String,
    reason: String,
}

impl PremisesForm {
    fn of(p: &Premises) -> PremisesForm {
        let flag = |b: bool| b.then(|| "true".to_string());
        PremisesForm {
            address: p.address.clone(),
            road_address: p.road_address.clone(),
            usage_type: p.usage_type.clone(),
            diameter_mm: p.diameter_mm.to_string(),
            households: p.households.to_string(),
            sewer_connected: flag(p.sewer_connected),
            levy_exempt: flag(p.levy_exempt),
            billing_group: p.billing_group.clone(),
            reading_route: p.reading_route.clone(),
            reason: String::new(),
        }
    }

    /// `stored` with this form's values, or the problems of the numbers.
    fn apply(&self, ctx: &Authed, stored: &Premises) -> Result<Premises, Vec<Problem>> {
        let mut problems = Vec::new();
        let diameter = whole(ctx, &mut problems, "diameter_mm", &self.diameter_mm);
        let households = whole(ctx, &mut problems, "households", &self.households);
        let (Some(diameter_mm), Some(households)) = (diameter, households) else {
            return Err(problems);
        };
        Ok(Premises {
            account_no: stored.account_no.clone(),
            customer_id: stored.customer_id.clone(),
            address: self.address.trim().to_string(),
            road_address: self.road_address.trim().to_string(),
            usage_type: self.usage_type.trim().to_string(),
            diameter_mm,
            households,
            sewer_connected: self.sewer_connected.is_some(),
            levy_exempt: self.levy_exempt.is_some(),
            billing_group: self.billing_group.trim().to_string(),
            reading_route: self.reading_route.trim().to_string(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Shown {
    /// After a save: `1` written, `0` nothing differed.
    saved: Option<String>,
}

async fn load(ctx: &Authed, no: &str) -> Result<PremisesDetail, PageError> {
    ctx.require(Role::Viewer)?;
    Ok(ctx
        .app
        .billing
        .get(ctx.token(), &format!("/api/v1/master/premises/{}", seg(no)))
        .await?)
}

fn facts(ctx: &Authed, p: &Premises) -> Markup {
    let row = |field: &str, value: &str, shown: String| {
        html! {
            dt { (field_label(ctx, field)) }
            dd data-field=(field) data-value=(value) { (shown) }
        }
    };
    html! {
        dl class="facts" id="premises-facts" {
            (row("account_no", &p.account_no, p.account_no.clone()))
            (row("address", &p.address, p.address.clone()))
            (row("road_address", &p.road_address, p.road_address.clone()))
            (row("usage_type", &p.usage_type, usage_label(ctx, &p.usage_type)))
            (row("diameter_mm", &p.diameter_mm.to_string(), p.diameter_mm.to_string()))
            (row("households", &p.households.to_string(), p.households.to_string()))
            (row("sewer_connected", &p.sewer_connected.to_string(), yes_no(ctx, p.sewer_connected).into()))
            (row("levy_exempt", &p.levy_exempt.to_string(), yes_no(ctx, p.levy_exempt).into()))
            (row("billing_group", &p.billing_group, p.billing_group.clone()))
            (row("reading_route", &p.reading_route, p.reading_route.clone()))
        }
    }
}

fn edit_form(ctx: &Authed, no: &str, f: &PremisesForm, problems: &[Problem]) -> Markup {
    let check = |field: &'static str, on: bool| {
        let id = format!("edit-{field}");
        html! {
            label for=(id) { (field_label(ctx, field)) }
            input type="checkbox" id=(id) name=(field) value="true" checked[on];
        }
    };
    html! {
        section class="actions noprint" {
            h2 { (ctx.t("master.edit")) }
            p class="muted" { (ctx.t("master.edit_help")) }
            form class="edit" method="post" action=(format!("/master/premises/{}", seg(no))) id="premises-edit" {
                (text_input(ctx, problems, "address", &f.address, None))
                (text_input(ctx, problems, "road_address", &f.road_address, None))
                (text_input(ctx, problems, "usage_type", &f.usage_type, Some("usage-types")))
                (text_input(ctx, problems, "diameter_mm", &f.diameter_mm, Some("number")))
                (text_input(ctx, problems, "households", &f.households, Some("number")))
                (check("sewer_connected", f.sewer_connected.is_some()))
                (check("levy_exempt", f.levy_exempt.is_some()))
                (text_input(ctx, problems, "billing_group", &f.billing_group, None))
                (text_input(ctx, problems, "reading_route", &f.reading_route, None))
                (reason_and_submit(ctx, problems, &f.reason))
            }
            datalist id="usage-types" {
                @for t in USAGE_TYPES { option value=(t) { (usage_label(ctx, t)) } }
            }
        }
    }
}

/// The whole page; `form` and `problems` are those of a refused edit.
fn render(
    ctx: &Authed,
    d: &PremisesDetail,
    saved: Option<&str>,
    form: Option<&PremisesForm>,
    problems: &[Problem],
) -> Markup {
    let p = &d.premises;
    let title = format!("{} {}", ctx.t("master.a_premises"), p.account_no);
    let is_admin = ctx.session.role.allows(Role::Admin);
    let stored = PremisesForm::of(p);
    let form = form.unwrap_or(&stored);
    let bills = format!(
        "/clerk/bills{}",
        query(&[("q", Some(p.account_no.clone()))])
    );
    page(
        ctx,
        &title,
        html! {
            h1 { (title) }
            (edit_outcome(ctx, saved, problems))
            (facts(ctx, p))
            p { a id="premises-bills" href=(bills) { (ctx.t("master.bills")) } }
            h2 { (ctx.t("master.customer")) }
            @if let Some(c) = &d.customer {
                dl class="facts" id="premises-customer" {
                    dt { (ctx.t("master.customer_id")) } dd { (customer_link(&c.customer_id)) }
                    dt { (ctx.t("master.name")) } dd { (c.name) }
                    dt { (ctx.t("master.contact")) } dd { (c.contact) }
                }
            } @else if !p.customer_id.is_empty() {
                p { (customer_link(&p.customer_id)) }
            } @else {
                p class="muted" { (ctx.t("none")) }
            }
            (installations_table(ctx, &d.installations, Listing::MetersOfPremises))
            @if is_admin && p.customer_id.is_empty() {
                // Billing takes a premises only with its customer (an
                // account made before master data has none yet).
                p class="muted noprint" id="no-customer-edit" { (ctx.t("master.no_customer_edit")) }
            } @else if is_admin {
                (edit_form(ctx, &p.account_no, form, problems))
            }
        },
    )
}

/// `GET /master/premises/{no}[?saved=1|0]`.
pub async fn detail(
    ctx: Authed,
    Path(no): Path<String>,
    Query(shown): Query<Shown>,
) -> Result<Markup, PageError> {
    let d = load(&ctx, &no).await?;
    Ok(render(&ctx, &d, shown.saved.as_deref(), None, &[]))
}

/// `POST /master/premises/{no}` (admin): a one-item batch to billing with
/// the reason; back to the page when written, the page with the problems
/// and the values as typed when refused.
pub async fn edit(
    ctx: Authed,
    Path(no): Path<String>,
    Form(f): Form<PremisesForm>,
) -> Result<Response, PageError> {
    ctx.require(Role::Admin)?;
    let d = load(&ctx, &no).await?;
    let mut problems = Vec::new();
    let reason = check_reason(&ctx, &f.reason)
        .map_err(|p| problems.push(p))
        .ok();
    let item = f
        .apply(&ctx, &d.premises)
        .map_err(|p| problems.extend(p))
        .ok();
    if let (Some(reason), Some(item)) = (reason, item) {
        let batch = PremisesBatch {
            premises: vec![item],
        };
        let back = format!("/master/premises/{}", seg(&no));
        match save_one(&ctx, "premises", reason, &batch, back).await? {
            Ok(done) => return Ok(done),
            Err(refused) => problems.extend(refused),
        }
    }
    Ok((
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        render(&ctx, &d, None, Some(&f), &problems),
    )
        .into_response())
}
