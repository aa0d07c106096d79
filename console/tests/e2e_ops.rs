//! End to end, in headless Chromium: sign in as each role; an operator finds
//! a leaking meter from the alarm list and opens its chart; a viewer sees no
//! clerk actions nor quarantine and is refused when forcing them; a POST from
//! another origin is refused. Screenshots of the operators' pages are saved.

mod common;

use chrono::{Duration, DurationRound, Utc};
use common::{Browser, Stack, ADMIN, CLERK, OPERATOR, VIEWER};
use serde_json::json;

const LEAK: &str = "CM-LEAK-1";
const BACK: &str = "CM-BACK-1";
const OK: &str = "CM-OK-1";

async fn seed(stack: &Stack) {
    stack.register_meters(&[LEAK, BACK, OK]).await;
    // Eight 15-minute reads up to now: the leak meter runs day and night
    // (its firmware raises `leak` on continuous flow), the back-flowing one
    // reports `backflow`, then a read going backwards (quarantined).
    let now = Utc::now().duration_trunc(Duration::minutes(15)).unwrap();
    let mut batch = Vec::new();
    for i in 0..8i64 {
        let ts = now - Duration::minutes(15 * (7 - i));
        let leak_alarm = if i >= 4 { vec!["leak"] } else { vec![] };
        batch.push((LEAK.to_string(), ts, 500_000 + i * 40, 160.0, leak_alarm));
        batch.push((
            BACK.to_string(),
            ts,
            200_000 + i * 5,
            20.0,
            vec!["backflow"],
        ));
        batch.push((OK.to_string(), ts, 100_000 + i * 3, 0.0, vec![]));
    }
    stack.publish(&batch).await;
    let back = vec![(
        BACK.to_string(),
        now + Duration::minutes(1),
        150_000,
        0.0,
        vec!["backflow"],
    )];
    stack.publish(&back).await;
    stack
        .wait_count("SELECT count(*) FROM metering.readings_v1", 24)
        .await;
    stack
        .wait_count("SELECT count(*) FROM metering.quarantine", 1)
        .await;
    stack.sample().await;
    stack
        .add_accounts(json!([{
            "account_no": "A-0001", "customer": "김누수", "address": "대전광역시 서구 둔산로 100",
            "usage_type": "household", "diameter_mm": 15, "households": 1,
            "sewer_connected": true, "levy_exempt": false, "billing_group": "G1",
            "meters": [{"meter_id": LEAK, "installed_at": "2026-01-01T00:00:00Z"}]
        }]))
        .await;
}

/// The dashboard API behind the pages: the sampler's per-minute totals, and
/// the quarantine of a meter kept from a viewer by ingest itself.
async fn dashboard_api(stack: &Stack) {
    let http = reqwest::Client::new();
    let get = |path: String, token: &'static str| {
        let http = http.clone();
        let url = format!("http://{}{path}", stack.ingest);
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, o) = get("/api/v1/dashboard/overview?window=hour".into(), VIEWER).await;
    assert_eq!(status, 200);
    let sum = |k: &str| -> i64 {
        o["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[k].as_i64().unwrap())
            .sum()
    };
    assert_eq!(sum("readings"), 24, "{o}");
    assert_eq!(sum("batches"), 2);
    assert_eq!(sum("quarantined"), 1);
    assert_eq!(o["counts"]["meters"], 3);
    assert_eq!(o["buckets"].as_array().unwrap().len(), 61);
    let (_, a) = get("/api/v1/dashboard/alarms".into(), VIEWER).await;
    assert_eq!(a["counts"], json!({"backflow": 1, "leak": 1}));
    let (status, _) = get(
        format!("/api/v1/dashboard/meters/{BACK}/quarantine"),
        VIEWER,
    )
    .await;
    assert_eq!(status, 403);
    let (status, q) = get(
        format!("/api/v1/dashboard/meters/{BACK}/quarantine"),
        OPERATOR,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(q["items"][0]["reason"], "backwards");
    let (_, m) = get("/api/v1/dashboard/meters?q=CM-L".into(), VIEWER).await;
    assert_eq!(m["meters"].as_array().unwrap().len(), 1);
    let (_, w) = get("/api/v1/whoami".into(), OPERATOR).await;
    assert_eq!(w, json!({"name": "park", "role": "operator"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_and_viewers_in_the_browser() {
    let stack = Stack::start().await;
    seed(&stack).await;
    dashboard_api(&stack).await;
    let base = stack.url("");
    let b = Browser::start(&base, "ko").await;
    let shots = common::screenshot_dir();
    println!("screenshots: {}", shots.display());

    // Not signed in: every page leads to the login form.
    b.goto("/ops/alarms").await;
    b.wait_css("#token").await;
    assert!(b.path().await.starts_with("/login"));
    b.screenshot("login").await;

    // Each role signs in and is shown by name and role.
    for (token, role) in [(CLERK, "clerk"), (ADMIN, "admin"), (VIEWER, "viewer")] {
        b.login(token).await;
        let who = b.wait_css(".who .role").await;
        assert_eq!(who.attr("data-role").await.unwrap().as_deref(), Some(role));
        b.logout().await;
    }
    b.goto("/login").await;
    b.client
        .find(fantoccini::Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("not-a-token-of-anyone")
        .await
        .unwrap();
    b.click("#login-submit").await;
    assert!(b.text("#login-error").await.contains("토큰"));

    // The operator: overview, alarm list, the leaking meter and its chart.
    b.login(OPERATOR).await;
    assert_eq!(b.path().await, "/ops");
    b.wait_css("#overview figure[data-chart] canvas").await;
    assert!(b.text("#card-alarms .value").await.parse::<i64>().unwrap() >= 2);
    assert!(b.text("#quarantine-reasons").await.contains("backwards"));
    b.screenshot("ops-overview").await;

    b.click("#card-alarms").await;
    b.wait_css("#alarms").await;
    let leak_row = b.wait_css("tr[data-alarm='leak']").await;
    assert_eq!(
        leak_row.attr("data-meter").await.unwrap().as_deref(),
        Some(LEAK)
    );
    assert!(leak_row.text().await.unwrap().contains("누수"));
    b.screenshot("ops-alarms").await;
    leak_row
        .find(fantoccini::Locator::Css("a.meter-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(b.text("#meter-id").await, LEAK);
    b.wait_css("#chart-15min canvas").await;
    b.wait_css("#chart-daily canvas").await;
    let points = b
        .wait_css("#chart-15min")
        .await
        .attr("data-points")
        .await
        .unwrap();
    assert_eq!(
        points.as_deref(),
        Some("7"),
        "seven 15-minute slots after the first read"
    );
    assert!(b.exists("#open-alarms [data-alarm='leak']").await);
    b.screenshot("ops-meter-leak").await;

    // The back-flowing meter's quarantined reading, seen by the operator.
    b.goto(&format!("/ops/meters/{BACK}")).await;
    assert!(b.text("#meter-quarantine").await.contains("backwards"));
    b.goto("/ops/gateways").await;
    assert!(
        b.exists(&format!("tr[data-gateway='{}']", stack.gateway))
            .await
    );
    b.screenshot("ops-gateways").await;
    // Search by address (billing's accounts) finds the meter.
    b.goto("/ops/meters?q=%EB%91%94%EC%82%B0").await; // 둔산
    assert!(b.text("#meters-by-address").await.contains(LEAK));
    b.goto("/ops/meters?q=CM-").await;
    assert_eq!(
        b.client
            .find_all(fantoccini::Locator::Css("#meters-by-id tr[data-meter]"))
            .await
            .unwrap()
            .len(),
        3
    );
    b.screenshot("ops-meters-search").await;
    b.goto("/ops/meters/silent?hours=1").await;
    b.wait_css("#silent-total").await;
    b.screenshot("ops-silent").await;
    // English on the switch.
    b.goto("/ops").await;
    b.click("#lang-switch").await;
    b.wait_css("#overview").await;
    assert!(b.text("header.top nav").await.contains("Overview"));
    b.screenshot("ops-overview-en").await;
    b.click("#lang-switch").await;
    b.wait_css("#overview").await;
    b.logout().await;

    // The viewer: read-only pages, no clerk actions, no quarantine; forcing
    // them is refused by the console and by the backend.
    b.login(VIEWER).await;
    let nav = b.wait_css("header.top nav").await;
    let nav_html = nav.html(true).await.unwrap();
    assert!(
        !nav_html.contains("/clerk/runs"),
        "viewer sees no billing runs"
    );
    assert!(nav_html.contains("/ops/alarms"));
    b.goto(&format!("/ops/meters/{BACK}")).await;
    b.wait_css("#quarantine-hidden").await;
    assert!(!b.exists("#meter-quarantine").await);
    let (status, body) = b
        .fetch("POST", "/clerk/runs/commit", "period=2026-10&group=G1")
        .await;
    assert_eq!(status, 403, "viewer's forced clerk POST: {body}");
    assert!(body.contains("data-error=\"forbidden\""));
    b.goto("/clerk/runs").await;
    b.wait_css("#error[data-error='forbidden']").await;
    b.screenshot("viewer-refused").await;
    b.close().await;

    // A POST from another origin is refused (CSRF), signed in or not.
    let resp = reqwest::Client::new()
        .post(stack.url("/logout"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Assets are served with long cache headers.
    let resp = reqwest::get(stack.url(waterworks_console::layout::UPLOT_JS))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    stack.stop().await;
}
