//! End to end, in headless Chromium: a clerk previews and commits a billing
//! run (a held bill and its reason in the preview), opens a bill and its
//! notice (HTML and PDF, the PDF's text read back), rebills and adjusts it,
//! releases the held bill and cancels it, records a payment, and downloads
//! the ageing CSV, whose rows must match what was done; a viewer is refused
//! the clerk's pages and actions. Readings go in through the real path (the
//! broker and ingest), accounts through billing's API. Screenshots of each
//! clerk page are saved.

mod common;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use common::{Browser, Stack, CLERK, VIEWER};
use serde_json::{json, Value};

const M1: &str = "CL-M-1";
const M2: &str = "CL-M-2";

/// The first instant (KST midnight) of the month `back` months before this one.
fn month_start(back: i32) -> DateTime<Utc> {
    let kst = FixedOffset::east_opt(9 * 3600).unwrap();
    let today = Utc::now().with_timezone(&kst).date_naive();
    let idx = today.year() * 12 + today.month0() as i32 - back;
    let d = NaiveDate::from_ymd_opt(idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1, 1).unwrap();
    kst.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn period(back: i32) -> String {
    month_start(back)
        .with_timezone(&FixedOffset::east_opt(9 * 3600).unwrap())
        .format("%Y-%m")
        .to_string()
}

async fn seed(stack: &Stack) {
    stack.register_meters(&[M1, M2]).await;
    // Three closed months: a read just before each month starts, one mid
    // month, and one just before the last month ends. M1 uses 18, 22, 26 m³;
    // M2 12, 11, then 1 m³ (far below its average: the bill is held).
    let mut batch = Vec::new();
    let (mut v1, mut v2) = (100_000i64, 50_000i64);
    for (back, (u1, u2)) in [
        (3, (18_000, 12_000)),
        (2, (22_000, 11_000)),
        (1, (26_000, 1_000)),
    ] {
        let start = month_start(back) - Duration::minutes(30);
        let mid = month_start(back) + Duration::days(14);
        if back == 3 {
            batch.push((M1.to_string(), start, v1, 30.0, vec![]));
            batch.push((M2.to_string(), start, v2, 15.0, vec![]));
        }
        batch.push((M1.to_string(), mid, v1 + u1 / 2, 30.0, vec![]));
        batch.push((M2.to_string(), mid, v2 + u2 / 2, 15.0, vec![]));
        v1 += u1;
        v2 += u2;
        let end = month_start(back - 1) - Duration::minutes(30);
        batch.push((M1.to_string(), end, v1, 30.0, vec![]));
        batch.push((M2.to_string(), end, v2, 15.0, vec![]));
    }
    stack.publish(&batch).await;
    stack
        .wait_count(
            "SELECT count(*) FROM metering.readings_v1 WHERE meter_id LIKE 'CL-M-%'",
            batch.len() as i64,
        )
        .await;
    let installed = (month_start(3) - Duration::days(1)).to_rfc3339();
    stack
        .add_accounts(json!([
            {"account_no": "C-0001", "customer": "박고지", "address": "대전광역시 유성구 대학로 99",
             "usage_type": "household", "diameter_mm": 15, "households": 1,
             "sewer_connected": true, "levy_exempt": false, "billing_group": "E2E",
             "meters": [{"meter_id": M1, "installed_at": installed}]},
            {"account_no": "C-0002", "customer": "최취소", "address": "대전광역시 중구 중앙로 1",
             "usage_type": "general", "diameter_mm": 20, "households": 1,
             "sewer_connected": true, "levy_exempt": false, "billing_group": "E2E",
             "meters": [{"meter_id": M2, "installed_at": installed}]}
        ]))
        .await;
    // The two earlier months billed through the API (the usage history).
    let http = reqwest::Client::new();
    for back in [3, 2] {
        let r: Value = http
            .post(format!("http://{}/api/v1/billing-runs", stack.billing))
            .bearer_auth(CLERK)
            .json(&json!({"period": period(back), "group": "E2E"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["bills_created"], 2, "{r}");
    }
}

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

/// `GET path` from the page, the body as bytes.
async fn fetch_bytes(b: &Browser, path: &str) -> (u16, String, Vec<u8>) {
    let v = b
        .client
        .execute_async(
            "const [p, done] = arguments;
             fetch(p, {credentials: 'same-origin'}).then(async r => {
               const buf = new Uint8Array(await r.arrayBuffer());
               done([r.status, r.headers.get('content-type') || '', Array.from(buf)]);
             }).catch(e => done([0, String(e), []]));",
            vec![json!(path)],
        )
        .await
        .expect("fetch");
    let bytes = v[2]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect())
        .unwrap_or_default();
    (
        v[0].as_u64().unwrap_or(0) as u16,
        v[1].as_str().unwrap_or("").to_string(),
        bytes,
    )
}

fn number(s: &str) -> i64 {
    s.chars()
        .filter(|c| c.is_ascii_digit() || *c == '-')
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} holds no number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clerk_runs_bills_corrects_collects_and_reports() {
    let stack = Stack::start().await;
    seed(&stack).await;
    let b = Browser::start(&stack.url(""), "ko").await;
    let shots = common::screenshot_dir();
    println!("screenshots: {}", shots.display());
    let p = period(1);

    // Preview the last month's run for the group, then commit it.
    b.login(CLERK).await;
    b.goto("/clerk/runs").await;
    set(&b, "#run-period", &p).await;
    set(&b, "#run-group", "E2E").await;
    b.click("#run-preview").await;
    b.wait_css("#run-by-type").await;
    assert_eq!(b.text("#run-created").await, "1");
    assert_eq!(b.text("#run-held").await, "1");
    let holds = b.text("#run-holds").await;
    assert!(
        holds.contains("C-0002") && holds.contains("average"),
        "{holds}"
    );
    let by_type = b.text("#run-by-type").await;
    assert!(by_type.contains("household"), "{by_type}");
    let preview_total = number(&b.text("#run-total").await);
    assert!(preview_total > 0);
    // One usage type: its row's total and the grand total are the run's.
    let shown = format!("{},{:03}", preview_total / 1000, preview_total % 1000);
    assert_eq!(by_type.matches(&shown).count(), 2, "{by_type}");
    b.screenshot("clerk-run-preview").await;
    b.click("#run-commit").await;
    b.wait_css("#run-done").await;
    assert_eq!(number(&b.text("#run-total").await), preview_total);
    assert!(b.text("#progress-written").await.starts_with("2 / 2"));
    b.screenshot("clerk-run-progress").await;

    // The period's bills; open the household account's bill.
    b.wait_css("#run-bills").await;
    b.click("#run-bills").await;
    b.wait_css("#bills").await;
    b.screenshot("clerk-bills").await;
    b.goto("/clerk/bills?q=%EB%B0%95%EA%B3%A0%EC%A7%80").await; // 박고지
    b.wait_css("#bills").await;
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css("#bills tr[data-bill]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "three months of bills for 박고지");
    b.goto(&format!("/clerk/bills?q=C-0001&period={p}")).await;
    b.click("#bills .bill-link").await;
    b.wait_css("#bill-lines").await;
    assert_eq!(b.text("#bill-customer").await, "박고지");
    let lines = b.text("#bill-lines").await;
    assert!(
        lines.contains("truncate") && lines.contains("m³"),
        "{lines}"
    );
    assert!(b.text("#bill-entries").await.contains("bill"));
    let bill_path = b.path().await;
    let bill_id: i64 = bill_path.rsplit('/').next().unwrap().parse().unwrap();
    b.screenshot("clerk-bill").await;

    // The printable notice and its PDF (text read back from the file).
    b.click("#notice-link").await;
    b.wait_css("#notice-history").await;
    assert_eq!(b.text("#notice-customer").await, "박고지");
    let bars = b
        .client
        .find_all(fantoccini::Locator::Css("#notice-history rect.bar"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 3, "three billed months in the history");
    b.screenshot("clerk-notice").await;
    let (status, ctype, pdf) = fetch_bytes(&b, &format!("/clerk/bills/{bill_id}/notice.pdf")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/pdf"));
    let doc = lopdf::Document::load_mem(&pdf).expect("a readable PDF");
    let text = doc.extract_text(&[1]).unwrap();
    assert!(
        text.contains("상수도 요금 고지서") && text.contains("박고지"),
        "{text}"
    );
    std::fs::write(shots.join("clerk-notice.pdf"), &pdf).unwrap();

    // Rebill it: the cancellation and the new bill's entry are shown.
    b.goto(&bill_path).await;
    set(&b, "#rebill-reason", "고객 요청 재검침").await;
    b.click("#rebill-submit").await;
    b.wait_css("#new-entries").await;
    let made = b.text("#new-entries").await;
    assert!(
        made.contains("cancellation") && made.contains("bill"),
        "{made}"
    );
    b.screenshot("clerk-rebill-result").await;
    b.click("#new-bill").await;
    b.wait_css("#bill-lines").await;
    let new_total = number(&b.text("#bill-total").await);

    // A goodwill adjustment of the water part, with its reason.
    set(&b, "#adjust-part", "water").await;
    set(&b, "#adjust-amount", "-460").await;
    set(&b, "#adjust-reason", "누수 감안").await;
    b.click("#adjust-submit").await;
    b.wait_css("#new-entries").await;
    let made = b.text("#new-entries").await;
    assert!(
        made.contains("adjustment") && made.contains("-460"),
        "{made}"
    );
    b.click("#back-to-bill").await;
    b.wait_css("#payment-amount").await;

    // A payment on the new bill: 10,000 of it.
    set(&b, "#payment-amount", "10000").await;
    b.click("#payment-submit").await;
    b.wait_css("#new-entries").await;
    assert!(b.text("#new-entries").await.contains("payment"));
    b.screenshot("clerk-payment-result").await;

    // The other account's held bill: released after review (it gets its
    // number and its entry), then cancelled with a reason.
    b.goto(&format!("/clerk/bills?q=C-0002&period={p}")).await;
    b.click("#bills .bill-link").await;
    assert_eq!(
        b.wait_css("#bill-facts")
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("held")
    );
    b.click("#release-submit").await;
    b.wait_css("#new-entries").await;
    assert!(b.text("#new-entries").await.contains("bill"));
    b.click("#back-to-bill").await;
    set(&b, "#cancel-reason", "계량기 오검침").await;
    b.click("#cancel-submit").await;
    b.wait_css("#new-entries").await;
    assert!(b.text("#new-entries").await.contains("cancellation"));
    b.screenshot("clerk-cancel-result").await;

    // Ageing: C-0001 owes its older bills plus the new one less 460 and 10,000;
    // C-0002 only its two older bills (this month's was cancelled).
    b.goto("/clerk/reports").await;
    b.wait_css("#ageing").await;
    b.screenshot("clerk-reports").await;
    let (status, ctype, csv) = fetch_bytes(&b, "/clerk/reports/ageing.csv").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    let csv = String::from_utf8(csv).unwrap();
    let row = |no: &str| -> Vec<i64> {
        let line = csv
            .lines()
            .find(|l| l.starts_with(no))
            .unwrap_or_else(|| panic!("{no} not in {csv}"));
        line.split(',')
            .skip(2)
            .map(|f| f.parse().unwrap())
            .collect()
    };
    let older: Value = reqwest::Client::new()
        .get(format!("http://{}/api/v1/accounts/C-0001", stack.billing))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c1 = row("C-0001");
    assert_eq!(
        *c1.last().unwrap(),
        older["open_krw"].as_i64().unwrap(),
        "{csv}"
    );
    let older_bills: i64 = older["bills"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["period"] != p.as_str())
        .map(|x| x["total_krw"].as_i64().unwrap())
        .sum();
    assert_eq!(
        *c1.last().unwrap(),
        older_bills + new_total - 460 - 10_000,
        "{csv}"
    );
    let c2 = row("C-0002");
    assert!(*c2.last().unwrap() > 0, "{csv}");
    assert!(csv.starts_with("account_no,customer,"), "{csv}");

    // The public calculator needs no sign-in.
    b.logout().await;
    b.goto("/quote").await;
    set(&b, "#quote-usage", "26").await;
    b.click("#quote-submit").await;
    assert_eq!(number(&b.text("#quote-total").await), 29_460);
    b.screenshot("quote").await;

    // A viewer reads bills but has no actions, and forcing one is refused.
    b.login(VIEWER).await;
    b.goto(&format!("/clerk/bills/{}", bill_id)).await;
    b.wait_css("#bill-lines").await;
    assert!(!b.exists("#bill-actions").await);
    b.goto("/clerk/runs").await;
    assert_eq!(
        b.wait_css("#error")
            .await
            .attr("data-error")
            .await
            .unwrap()
            .as_deref(),
        Some("forbidden")
    );
    let (status, _) = b
        .fetch(
            "POST",
            &format!("/clerk/bills/{bill_id}/payment"),
            "reference=X-1&amount_krw=1&paid_on=2026-11-01",
        )
        .await;
    assert_eq!(status, 403);

    b.close().await;
    stack.stop().await;
}
