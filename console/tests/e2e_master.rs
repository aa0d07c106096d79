//! End to end, in headless Chromium: master data seeded through billing's
//! API as the admin; the admin searches premises by address, opens one
//! (customer, installations over time), changes its usage type with a
//! reason and sees the change; an unknown diameter shows billing's problem
//! beside the form and changes nothing; the customer and meter pages link
//! back and the admin changes a customer's contact (and saving it again
//! writes nothing); an account without a customer record offers no form;
//! a viewer sees no edit form and a forced POST is refused by the
//! console (and by billing); billing's audit log has the reason.
//! Screenshots of each page are saved.

mod common;

use common::{Browser, Stack, ADMIN, VIEWER};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use waterworks_api::billing::AuditPage;
use waterworks_api::master::{PremisesDetail, UpsertReport};

const PREMISES: &str = "MP-0001";
const OTHER: &str = "MP-0002";
const REASON: &str = "업종 변경 신청 (민원 2026-0077)";

async fn put(stack: &Stack, kind: &str, body: Value) -> UpsertReport {
    let resp = reqwest::Client::new()
        .put(format!("http://{}/api/v1/master/{kind}", stack.billing))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{kind}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn billing_get<T: DeserializeOwned>(stack: &Stack, path: &str, token: &str) -> T {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", stack.billing))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn seed(stack: &Stack) {
    put(
        stack,
        "customers",
        json!({"customers": [
            {"customer_id": "MC-1", "name": "김수도", "contact": "042-123-4567"},
            {"customer_id": "MC-2", "name": "이기준", "contact": ""}
        ]}),
    )
    .await;
    let premises = |no: &str, customer: &str, address: &str, usage: &str, mm: i32| {
        json!({
            "account_no": no, "customer_id": customer, "address": address,
            "road_address": format!("{address} (도로명)"), "usage_type": usage, "diameter_mm": mm,
            "households": 1, "sewer_connected": true, "levy_exempt": false,
            "billing_group": "MG", "reading_route": "R-07"
        })
    };
    put(
        stack,
        "premises",
        json!({"premises": [
            premises(PREMISES, "MC-1", "대전광역시 유성구 과학로 77", "household", 15),
            premises(OTHER, "MC-2", "대전광역시 중구 중앙로 5", "general", 20)
        ]}),
    )
    .await;
    let meter = |id: &str, mm: i32| {
        json!({
            "meter_id": id, "serial": format!("S-{id}"), "maker": "대한계기", "model": "DK-15",
            "profile_id": "sim-dn15", "diameter_mm": mm, "manufactured_on": "2023-03-01",
            "verified_on": "2023-04-01", "gateway_id": stack.gateway
        })
    };
    put(
        stack,
        "meters",
        json!({"meters": [meter("MM-0", 15), meter("MM-1", 15), meter("MM-2", 20)]}),
    )
    .await;
    put(
        stack,
        "installations",
        json!({"installations": [
            {"account_no": PREMISES, "meter_id": "MM-0", "installed_at": "2024-01-01T00:00:00Z",
             "removed_at": "2025-01-01T00:00:00Z", "install_read_m3": "0"},
            {"account_no": PREMISES, "meter_id": "MM-1", "installed_at": "2025-01-01T00:00:00Z",
             "install_read_m3": "12.345"},
            {"account_no": OTHER, "meter_id": "MM-2", "installed_at": "2025-02-01T00:00:00Z"}
        ]}),
    )
    .await;
    stack
        .add_accounts(json!([{
            "account_no": "LEGACY-1", "customer": "박예전", "address": "대전광역시 동구 옛길 1",
            "usage_type": "household", "diameter_mm": 15, "households": 1,
            "sewer_connected": true, "levy_exempt": false, "billing_group": "MG",
            "meters": [{"meter_id": "MM-LEGACY", "installed_at": "2025-01-01T00:00:00Z"}]
        }]))
        .await;
}

/// Sets an input's value (what typing would leave there).
async fn set(b: &Browser, css: &str, value: &str) {
    b.wait_css(css).await;
    b.client
        .execute(
            "const [sel, v] = arguments; const e = document.querySelector(sel); e.value = v;",
            vec![json!(css), json!(value)],
        )
        .await
        .expect("set a field");
}

async fn attr(b: &Browser, css: &str, name: &str) -> String {
    b.wait_css(css)
        .await
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn stored(stack: &Stack) -> PremisesDetail {
    billing_get(
        stack,
        &format!("/api/v1/master/premises/{PREMISES}"),
        VIEWER,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_data_search_detail_and_admin_edit() {
    let stack = Stack::start().await;
    seed(&stack).await;
    let b = Browser::start(&stack.url(""), "ko").await;
    println!("screenshots: {}", common::screenshot_dir().display());

    // The admin searches premises by address from the nav.
    b.login(ADMIN).await;
    let nav = b.wait_css("header.top nav").await.html(true).await.unwrap();
    assert!(nav.contains("/master/premises") && nav.contains("/master/meters"));
    b.click("header.top nav a[href='/master/premises']").await;
    b.wait_css("#master-q").await;
    set(&b, "#master-q", "과학로").await;
    b.click("#master-search").await;
    b.wait_css(&format!("#premises tr[data-key='{PREMISES}']"))
        .await;
    assert!(!b.exists(&format!("tr[data-key='{OTHER}']")).await);
    b.screenshot("master-premises-search").await;

    // Its page: the premises, its customer, both installations.
    b.click(&format!(
        "#premises tr[data-key='{PREMISES}'] a.premises-link"
    ))
    .await;
    b.wait_css("#premises-facts").await;
    assert_eq!(
        b.path().await,
        format!("/master/premises/{PREMISES}"),
        "the search links to the detail"
    );
    assert_eq!(
        attr(&b, "dd[data-field='usage_type']", "data-value").await,
        "household"
    );
    assert!(b.text("#premises-customer").await.contains("김수도"));
    let inst = b.text("#installations").await;
    assert!(
        inst.contains("MM-0") && inst.contains("MM-1") && inst.contains("12.345"),
        "{inst}"
    );
    assert!(b.exists("tr[data-meter='MM-1'] .badge.ok").await);
    b.screenshot("master-premises").await;

    // The admin changes the usage type with a reason: saved and shown.
    assert!(b.exists("#premises-edit").await);
    set(&b, "#edit-usage_type", "general").await;
    set(&b, "#edit-reason", REASON).await;
    b.click("#edit-submit").await;
    b.wait_css("#saved").await;
    assert_eq!(
        attr(&b, "dd[data-field='usage_type']", "data-value").await,
        "general"
    );
    assert_eq!(b.text("dd[data-field='usage_type']").await, "일반용");
    assert_eq!(stored(&stack).await.premises.usage_type, "general");
    b.screenshot("master-premises-saved").await;

    // An unknown diameter: billing's problem beside the form, the value as
    // typed kept, nothing changed.
    set(&b, "#edit-diameter_mm", "17").await;
    set(&b, "#edit-usage_type", "household").await;
    set(&b, "#edit-reason", "구경 정정").await;
    b.click("#edit-submit").await;
    let problems = b.text("#edit-problems").await;
    assert!(
        b.exists("#edit-problems li[data-field='diameter_mm']")
            .await,
        "{problems}"
    );
    assert!(
        problems.contains("17 mm") && problems.contains("tariff"),
        "billing's reason is shown: {problems}"
    );
    assert!(!b.exists("#saved").await);
    assert_eq!(attr(&b, "#edit-diameter_mm", "value").await, "17");
    assert!(b.exists("#edit-diameter_mm.bad").await);
    assert_eq!(
        attr(&b, "dd[data-field='diameter_mm']", "data-value").await,
        "15"
    );
    let after = stored(&stack).await.premises;
    assert_eq!(
        (after.diameter_mm, after.usage_type.as_str()),
        (15, "general"),
        "a refused edit changed nothing"
    );
    b.screenshot("master-premises-refused").await;

    // The customer's page lists the premises; the meter's its installation.
    b.goto(&format!("/master/premises/{PREMISES}")).await;
    b.click("#premises-customer a.customer-link").await;
    b.wait_css("#customer-facts").await;
    assert!(b.text("#customer-premises").await.contains(PREMISES));
    // The admin changes the customer's contact, with a reason.
    set(&b, "#edit-contact", "010-9876-5432").await;
    set(&b, "#edit-reason", "연락처 변경 요청").await;
    b.click("#edit-submit").await;
    b.wait_css("#saved").await;
    assert_eq!(
        attr(&b, "dd[data-field='contact']", "data-value").await,
        "010-9876-5432"
    );
    b.screenshot("master-customer").await;
    // Saving the same values again writes nothing and says so.
    set(&b, "#edit-reason", "다시 저장").await;
    b.click("#edit-submit").await;
    b.wait_css("#unchanged").await;
    b.goto("/master/meters?q=MM-").await;
    b.wait_css("#meters tr[data-key='MM-2']").await;
    b.click("#meters tr[data-key='MM-1'] a.meter-link").await;
    b.wait_css("#meter-facts").await;
    assert!(b.exists(&format!("tr[data-premises='{PREMISES}']")).await);
    b.screenshot("master-meter").await;
    // An account made before master data (no customer record) is shown
    // but offers no form: billing would refuse it without a customer.
    b.goto("/master/premises/LEGACY-1").await;
    b.wait_css("#no-customer-edit").await;
    assert!(!b.exists("#premises-edit").await);
    b.logout().await;

    // A viewer reads the page but gets no form; a forced POST is refused
    // by the console, and billing refuses the write too.
    b.login(VIEWER).await;
    b.goto(&format!("/master/premises/{PREMISES}")).await;
    b.wait_css("#premises-facts").await;
    assert!(!b.exists("#premises-edit").await);
    b.screenshot("master-premises-viewer").await;
    let (status, body) = b
        .fetch(
            "POST",
            &format!("/master/premises/{PREMISES}"),
            "address=x&usage_type=household&diameter_mm=15&households=1&billing_group=MG&reason=forced",
        )
        .await;
    assert_eq!(status, 403, "viewer's forced POST: {body}");
    assert!(body.contains("data-error=\"forbidden\""));
    let (status, _) = b
        .fetch("POST", "/master/customers/MC-1", "name=x&reason=forced")
        .await;
    assert_eq!(status, 403);
    let resp = reqwest::Client::new()
        .put(format!(
            "http://{}/api/v1/master/premises?reason=forced",
            stack.billing
        ))
        .bearer_auth(VIEWER)
        .json(&json!({"premises": [stored(&stack).await.premises]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(stored(&stack).await.premises.usage_type, "general");
    b.close().await;

    // The audit log has the edit with its reason, and nothing of the
    // refused or forced ones.
    let log: AuditPage = billing_get(&stack, "/api/v1/audit?limit=50", VIEWER).await;
    let edit = log
        .audit
        .iter()
        .find(|a| a.action == "upsert_premises" && a.reason == REASON)
        .unwrap_or_else(|| panic!("no audit record with the reason: {:?}", log.audit));
    assert_eq!(edit.actor, "admin");
    assert_eq!(edit.details["reason"], REASON);
    assert_eq!(edit.details["changed"], json!([PREMISES]));
    assert!(
        !log.audit
            .iter()
            .any(|a| a.reason == "구경 정정" || a.reason == "forced" || a.reason == "다시 저장"),
        "a refused or empty edit left an audit record"
    );
    assert!(log
        .audit
        .iter()
        .any(|a| a.action == "upsert_customers" && a.reason == "연락처 변경 요청"));
    stack.stop().await;
}
