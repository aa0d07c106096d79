//! What the detail pages share: sending an admin's one-item edit and the
//! installations table (seen from a premises or from a meter).

use super::search::{meter_link, premises_link};
use crate::backend::query;
use crate::layout::{ts, ts_opt};
use crate::web::{Authed, PageError};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Serialize;
use waterworks_api::error::Problem;
use waterworks_api::master::{Installation, UpsertReport};

/// Sends `batch` (one item) to `PUT /api/v1/master/{kind}?reason=`: saved
/// (or unchanged), a redirect to `back?saved=1|0`; refused (422), billing's
/// problems for the form.
pub(crate) async fn save_one<B: Serialize>(
    ctx: &Authed,
    kind: &str,
    reason: String,
    batch: &B,
    back: String,
) -> Result<Result<Response, Vec<Problem>>, PageError> {
    let path = format!(
        "/api/v1/master/{kind}{}",
        query(&[("reason", Some(reason))])
    );
    match ctx
        .app
        .billing
        .put_checked::<_, UpsertReport>(ctx.token(), &path, batch)
        .await?
    {
        Ok(rep) => {
            let saved = u8::from(rep.changed + rep.created > 0);
            tracing::info!(who = %ctx.session.name, kind, %back, saved, "master data edited");
            Ok(Ok(
                Redirect::to(&format!("{back}?saved={saved}")).into_response()
            ))
        }
        Err(refusal) => Ok(Err(super::refusal_problems(refusal))),
    }
}

/// Which side of an installation a table lists: a premises' meters or a
/// meter's premises.
#[derive(Clone, Copy)]
pub(crate) enum Listing {
    MetersOfPremises,
    PremisesOfMeter,
}

/// Installations oldest first, with their install reads; "in place" for
/// one not removed.
pub(crate) fn installations_table(
    ctx: &Authed,
    installations: &[Installation],
    listing: Listing,
) -> Markup {
    let head = match listing {
        Listing::MetersOfPremises => "master.meter_id",
        Listing::PremisesOfMeter => "master.account_no",
    };
    let cells = |i: &Installation, link: Markup| {
        html! {
            td { (link) }
            td { (ts(&i.installed_at)) }
            td { @if i.removed_at.is_some() { (ts_opt(&i.removed_at)) } @else { span class="badge ok" { (ctx.t("master.in_place")) } } }
            td class="num" { (i.install_read_m3) }
        }
    };
    html! {
        h2 { (ctx.t("master.installations")) }
        @if installations.is_empty() {
            p class="muted" id="no-installations" { (ctx.t("master.no_installations")) }
        } @else {
            table id="installations" {
                tr {
                    th { (ctx.t(head)) } th { (ctx.t("master.installed_at")) }
                    th { (ctx.t("master.removed_at")) } th class="num" { (ctx.t("master.install_read")) }
                }
                @for i in installations {
                    @match listing {
                        Listing::MetersOfPremises => tr data-meter=(i.meter_id) { (cells(i, meter_link(&i.meter_id))) },
                        Listing::PremisesOfMeter => tr data-premises=(i.account_no) { (cells(i, premises_link(&i.account_no))) },
                    }
                }
            }
        }
    }
}
