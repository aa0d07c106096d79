//! `/master/customers/{id}`: a customer and links to the premises billed to
//! them; for an admin, the form that edits the name and contact with a
//! reason (`POST` to the same path). A changed name is also the name billing
//! prints on the customer's premises (billing does that).

use super::search::premises_link;
use super::shared::save_one;
use super::{check_reason, edit_outcome, field_label, page, reason_and_submit, text_input};
use crate::backend::seg;
use crate::web::{Authed, PageError};
use axum::extract::{Form, Path, Query};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use waterworks_api::error::Problem;
use waterworks_api::master::{Customer, CustomerDetail, CustomersBatch};
use waterworks_service::auth::Role;

/// The editable fields as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CustomerForm {
    name: String,
    contact: String,
    reason: String,
}

impl CustomerForm {
    fn of(c: &Customer) -> CustomerForm {
        CustomerForm {
            name: c.name.clone(),
            contact: c.contact.clone(),
            reason: String::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Shown {
    /// After a save: `1` written, `0` nothing differed.
    saved: Option<String>,
}

async fn load(ctx: &Authed, id: &str) -> Result<CustomerDetail, PageError> {
    ctx.require(Role::Viewer)?;
    Ok(ctx
        .app
        .billing
        .get(
            ctx.token(),
            &format!("/api/v1/master/customers/{}", seg(id)),
        )
        .await?)
}

fn render(
    ctx: &Authed,
    d: &CustomerDetail,
    saved: Option<&str>,
    form: Option<&CustomerForm>,
    problems: &[Problem],
) -> Markup {
    let c = &d.customer;
    let title = format!("{} {}", ctx.t("master.customer"), c.customer_id);
    let stored = CustomerForm::of(c);
    let form = form.unwrap_or(&stored);
    page(
        ctx,
        &title,
        html! {
            h1 { (title) }
            (edit_outcome(ctx, saved, problems))
            dl class="facts" id="customer-facts" {
                dt { (field_label(ctx, "customer_id")) } dd data-field="customer_id" { (c.customer_id) }
                dt { (field_label(ctx, "name")) } dd data-field="name" data-value=(c.name) { (c.name) }
                dt { (field_label(ctx, "contact")) } dd data-field="contact" data-value=(c.contact) { (c.contact) }
            }
            h2 { (ctx.t("master.premises")) }
            @if d.premises.is_empty() {
                p class="muted" id="no-premises" { (ctx.t("master.no_premises")) }
            } @else {
                ul id="customer-premises" {
                    @for no in &d.premises { li { (premises_link(no)) } }
                }
            }
            @if ctx.session.role.allows(Role::Admin) {
                section class="actions noprint" {
                    h2 { (ctx.t("master.edit")) }
                    p class="muted" { (ctx.t("master.edit_help")) }
                    form class="edit" method="post" action=(format!("/master/customers/{}", seg(&c.customer_id))) id="customer-edit" {
                        (text_input(ctx, problems, "name", &form.name, None))
                        (text_input(ctx, problems, "contact", &form.contact, None))
                        (reason_and_submit(ctx, problems, &form.reason))
                    }
                }
            }
        },
    )
}

/// `GET /master/customers/{id}[?saved=1|0]`.
pub async fn detail(
    ctx: Authed,
    Path(id): Path<String>,
    Query(shown): Query<Shown>,
) -> Result<Markup, PageError> {
    let d = load(&ctx, &id).await?;
    Ok(render(&ctx, &d, shown.saved.as_deref(), None, &[]))
}

/// `POST /master/customers/{id}` (admin): a one-item batch with the reason.
pub async fn edit(
    ctx: Authed,
    Path(id): Path<String>,
    Form(f): Form<CustomerForm>,
) -> Result<Response, PageError> {
    ctx.require(Role::Admin)?;
    let d = load(&ctx, &id).await?;
    let mut problems = Vec::new();
    if let Ok(reason) = check_reason(&ctx, &f.reason).map_err(|p| problems.push(p)) {
        let batch = CustomersBatch {
            customers: vec![Customer {
                customer_id: d.customer.customer_id.clone(),
                name: f.name.trim().to_string(),
                contact: f.contact.trim().to_string(),
            }],
        };
        let back = format!("/master/customers/{}", seg(&id));
        match save_one(&ctx, "customers", reason, &batch, back).await? {
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
