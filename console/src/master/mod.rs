//! Master data (viewer and up read, admin edits), all over billing's
//! `/api/v1/master/...` with the person's own token, every answer read as
//! its type in `waterworks_api::master`:
//!
//! - [`search`]: `/master/{customers,premises,meters}?q=`, tables linking to
//!   the detail pages;
//! - [`customers`]: a customer and the premises billed to them;
//!   [`premises`]: a premises, its customer and its installations over time
//!   with the install reads; [`meters`]: a meter and its installations.
//!
//! An admin edits a premises' or a customer's fields with a reason: the form
//! posts here (CSRF-checked like every POST), the console sends billing a
//! one-item batch `PUT .../master/{premises,customers}?reason=` (billing
//! keeps the reason in its audit log) and, when billing refuses it (422),
//! shows its problems beside the form with the values as typed; nothing is
//! written then. Others see no form, and a forced POST is refused by the
//! console (403 page) before billing would refuse it too.
//!
//! [`import`]: `/master/import` (admin), a utility's export through the
//! import library, a dry-run preview, then a commit; [`check`]:
//! `/master/check` (operator), where billing and ingest disagree.

pub mod check;
pub mod customers;
pub mod import;
pub mod meters;
pub mod premises;
pub mod search;
mod shared;

use crate::i18n::Msg;
use crate::web::Ctx;
use crate::App;
use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup, PreEscaped};
use std::sync::Arc;
use waterworks_api::error::Problem;
use waterworks_api::master::MAX_REASON_CHARS;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/master",
            get(|| async { Redirect::to("/master/premises") }),
        )
        .route("/master/customers", get(search::customers))
        .route(
            "/master/customers/{id}",
            get(customers::detail).post(customers::edit),
        )
        .route("/master/premises", get(search::premises))
        .route(
            "/master/premises/{no}",
            get(premises::detail).post(premises::edit),
        )
        .route("/master/meters", get(search::meters))
        .route("/master/meters/{id}", get(meters::detail))
        .route("/master/check", get(check::check))
        .merge(import::routes())
}

/// The area's few styles beyond the console's sheet.
const MASTER_CSS: &str = "\
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 8px 0 16px; }\
dl.facts dt { color: #556; } dl.facts dd { margin: 0; }\
form.edit { display: grid; grid-template-columns: max-content minmax(260px, 480px); gap: 6px 14px; align-items: center; background: #fff; border: 1px solid #d5dde6; padding: 12px; max-width: 760px; }\
form.edit input[type=text], form.edit input[type=number] { padding: 4px 6px; }\
form.edit .bad { outline: 2px solid #c9302c; }\
form.edit button { justify-self: start; }\
p.ok { background: #d7f0d9; padding: 8px 12px; }\
div.problems { background: #f8d7d6; padding: 8px 12px; margin: 8px 0; max-width: 760px; }\
div.problems ul { margin: 4px 0; }\
";

/// `body` in the console's layout, with this area's styles.
pub(crate) fn page(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    ctx.page(title, html! { style { (PreEscaped(MASTER_CSS)) } (body) })
}

/// A usage type as people read it (Korean names in Korean).
pub(crate) fn usage_label(ctx: &Ctx, t: &str) -> String {
    match ctx.lang {
        crate::i18n::Lang::Ko => crate::clerk::usage_type_ko(t).to_string(),
        crate::i18n::Lang::En => t.to_string(),
    }
}

pub(crate) fn yes_no(ctx: &Ctx, b: bool) -> &'static str {
    ctx.t(if b { "yes" } else { "no" })
}

/// The label of a field billing or the form names in a problem.
pub(crate) fn field_label(ctx: &Ctx, field: &str) -> String {
    let key = match field {
        "customer_id" => "master.customer_id",
        "name" => "master.name",
        "contact" => "master.contact",
        "account_no" => "master.account_no",
        "address" => "master.address",
        "road_address" => "master.road_address",
        "usage_type" => "master.usage_type",
        "diameter_mm" => "master.diameter_mm",
        "households" => "master.households",
        "sewer_connected" => "master.sewer_connected",
        "levy_exempt" => "master.levy_exempt",
        "billing_group" => "master.billing_group",
        "reading_route" => "master.reading_route",
        "reason" => "master.reason",
        other => return other.to_string(),
    };
    ctx.t(key).to_string()
}

/// The reason of an edit, trimmed, or the problem with it.
pub(crate) fn check_reason(ctx: &Ctx, reason: &str) -> Result<String, Problem> {
    let r = reason.trim();
    let n = r.chars().count();
    if n == 0 || n > MAX_REASON_CHARS || r.contains('\0') {
        return Err(Problem {
            index: 0,
            field: "reason".into(),
            reason: ctx.t("master.reason_required").into(),
        });
    }
    Ok(r.to_string())
}

/// A whole number typed into `field`, or the problem with it.
pub(crate) fn whole(
    ctx: &Ctx,
    problems: &mut Vec<Problem>,
    field: &str,
    text: &str,
) -> Option<i32> {
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(Problem {
                index: 0,
                field: field.into(),
                reason: format!("{:?}: {}", text, ctx.t("master.not_whole")),
            });
            None
        }
    }
}

/// The problems of billing's refusal (422), or its message as one problem
/// when it names none.
pub(crate) fn refusal_problems(refusal: waterworks_api::ErrorBody) -> Vec<Problem> {
    if refusal.problems.is_empty() {
        return vec![Problem {
            index: 0,
            field: String::new(),
            reason: refusal.message,
        }];
    }
    refusal.problems
}

/// What an edit's page says above the form: saved, nothing to change, or
/// every problem (billing's or the form's) by field.
pub(crate) fn edit_outcome(ctx: &Ctx, saved: Option<&str>, problems: &[Problem]) -> Markup {
    html! {
        @match saved {
            Some("1") => { p class="ok" id="saved" { (ctx.t("master.saved")) } }
            Some(_) => { p class="ok" id="unchanged" { (ctx.t("master.unchanged")) } }
            None => {}
        }
        @if !problems.is_empty() {
            div class="problems" id="edit-problems" role="alert" {
                b { (ctx.t("master.refused")) }
                ul {
                    @for p in problems {
                        li data-field=(p.field) { b { (field_label(ctx, &p.field)) } ": " (p.reason) }
                    }
                }
            }
        }
    }
}

/// One labelled text input of an edit form, marked when a problem names it.
pub(crate) fn text_input(
    ctx: &Ctx,
    problems: &[Problem],
    field: &'static str,
    value: &str,
    extra: Option<&'static str>,
) -> Markup {
    let id = format!("edit-{field}");
    let bad = problems.iter().any(|p| p.field == field);
    html! {
        label for=(id) { (field_label(ctx, field)) }
        @match extra {
            Some("number") => { input type="number" id=(id) name=(field) value=(value) class=[bad.then_some("bad")]; }
            Some(list) => { input type="text" id=(id) name=(field) value=(value) list=(list) maxlength="200" class=[bad.then_some("bad")]; }
            None => { input type="text" id=(id) name=(field) value=(value) maxlength="200" class=[bad.then_some("bad")]; }
        }
    }
}

/// The reason input and the submit button that end every edit form.
pub(crate) fn reason_and_submit(ctx: &Ctx, problems: &[Problem], reason: &str) -> Markup {
    let bad = problems.iter().any(|p| p.field == "reason");
    html! {
        label for="edit-reason" { (ctx.t("master.reason")) }
        input type="text" id="edit-reason" name="reason" value=(reason) required
            maxlength=(MAX_REASON_CHARS) placeholder=(ctx.t("master.reason_help")) class=[bad.then_some("bad")];
        span {}
        button type="submit" id="edit-submit" { (ctx.t("master.save")) }
    }
}

pub static MESSAGES: &[Msg] = &[
    ("master.customers", "고객", "Customers"),
    ("master.premises", "수용가", "Premises"),
    ("master.meters", "계량기 대장", "Meter register"),
    ("master.customer", "고객", "Customer"),
    ("master.a_premises", "수용가", "Premises"),
    ("master.meter", "계량기", "Meter"),
    ("master.customer_id", "고객번호", "Customer number"),
    ("master.name", "성명", "Name"),
    ("master.contact", "연락처", "Contact"),
    ("master.account_no", "수용가번호", "Premises number"),
    ("master.address", "주소", "Address"),
    ("master.road_address", "도로명주소", "Road address"),
    ("master.usage_type", "업종", "Usage type"),
    ("master.diameter_mm", "구경 (mm)", "Diameter (mm)"),
    ("master.households", "세대수", "Households"),
    ("master.sewer_connected", "하수도 연결", "Sewer connected"),
    ("master.levy_exempt", "물이용부담금 면제", "Levy exempt"),
    ("master.billing_group", "검침 그룹", "Billing group"),
    ("master.reading_route", "검침구역", "Reading route"),
    ("master.meter_id", "계량기 번호", "Meter id"),
    ("master.serial", "제조번호", "Serial"),
    ("master.maker", "제조사", "Maker"),
    ("master.model", "모델", "Model"),
    ("master.profile", "기기 프로파일", "Device profile"),
    ("master.manufactured_on", "제조일", "Manufactured"),
    ("master.verified_on", "검정일", "Verified (검정)"),
    ("master.gateway", "게이트웨이", "Gateway"),
    ("master.installations", "설치 이력", "Installations"),
    ("master.installed_at", "설치", "Installed"),
    ("master.removed_at", "철거", "Removed"),
    ("master.install_read", "설치 지침 (m³)", "Install read (m³)"),
    ("master.in_place", "설치 중", "in place"),
    (
        "master.no_installations",
        "설치 이력이 없습니다.",
        "No installations.",
    ),
    (
        "master.no_premises",
        "이 고객의 수용가가 없습니다.",
        "No premises billed to this customer.",
    ),
    ("master.no_results", "결과가 없습니다.", "Nothing found."),
    (
        "master.search_customers",
        "고객번호(앞부분) 또는 성명",
        "Customer number (prefix) or name",
    ),
    (
        "master.search_premises",
        "수용가번호·검침구역(앞부분), 주소 또는 고객",
        "Premises number or route (prefix), address or customer",
    ),
    (
        "master.search_meters",
        "계량기 번호 또는 제조번호(앞부분)",
        "Meter id or serial (prefix)",
    ),
    (
        "master.first_by_key",
        "검색어가 없으면 번호순으로 처음 50건을 보입니다.",
        "Without a search text, the first 50 by number.",
    ),
    ("master.edit", "수정 (관리자)", "Edit (admin)"),
    (
        "master.edit_help",
        "바꿀 값과 사유를 입력하세요. 사유는 감사 기록에 남습니다.",
        "Enter the new values and a reason; the reason is kept in the audit log.",
    ),
    ("master.reason", "사유", "Reason"),
    (
        "master.reason_help",
        "변경 사유 (필수, 500자 이내)",
        "Why (required, at most 500 characters)",
    ),
    (
        "master.reason_required",
        "사유를 1-500자로 입력하세요.",
        "Give a reason of 1-500 characters.",
    ),
    ("master.not_whole", "정수가 아닙니다", "not a whole number"),
    ("master.save", "저장", "Save"),
    ("master.saved", "저장했습니다.", "Saved."),
    (
        "master.unchanged",
        "바뀐 값이 없어 저장하지 않았습니다.",
        "Nothing differed; nothing was written.",
    ),
    (
        "master.refused",
        "저장하지 않았습니다. 다음을 고치세요:",
        "Not saved. Fix the following:",
    ),
    (
        "master.no_customer_edit",
        "고객 정보가 없는 수용가라 여기서 고칠 수 없습니다. 고객과 수용가를 가져오기(import)로 먼저 등록하세요.",
        "This premises has no customer record, so it cannot be edited here: import its customer and premises first.",
    ),
    ("master.bills", "이 수용가의 고지서", "This premises' bills"),
    ("master.ops_meter", "검침·경보 보기", "Readings and alarms"),
];
