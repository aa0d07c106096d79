//! End to end, in headless Chromium: the admin uploads a CP949 premises
//! export with Korean headers (the shipped Korean mapping, the encoding
//! detected) holding five bad rows; the dry-run preview lists exactly those
//! lines; a commit without "skip the bad rows" is refused and writes
//! nothing; with it the good rows are imported and the premises page shows
//! one; the same file again changes nothing. An operator is refused the
//! import page and a forced POST (upload and commit), and sees on the
//! check page a meter registered with ingest but installed nowhere.
//! Screenshots of each page are saved.

mod common;

use common::{Browser, Stack, ADMIN, OPERATOR};
use serde_json::json;
use std::collections::BTreeSet;
use waterworks_api::master::{Premises, UpsertReport};

/// The export: header on line 1; lines 5-9 are bad.
const EXPORT: &str = "\
수용가번호,고객번호,주소,도로명주소,업종,구경,가구수,하수도연결,물이용부담금면제,요금그룹,검침구역
IP-0001,IC-1,대전광역시 서구 둔산동 100,대전광역시 서구 둔산로 100,가정용,15,1,연결,부과,MG,R-01
IP-0002,IC-1,대전광역시 서구 둔산동 102,대전광역시 서구 둔산로 102,일반용,20,1,연결,부과,MG,R-01
IP-0003,IC-2,대전광역시 유성구 봉명동 7,대전광역시 유성구 봉명로 7,가정용,15,2,미연결,면제,MG,R-02
IP-0004,IC-1,대전광역시 서구 둔산동 104,,목욕용,15,1,연결,부과,MG,R-01
IP-0005,IC-9,대전광역시 서구 둔산동 105,,가정용,15,1,연결,부과,MG,R-01
IP-0002,IC-2,대전광역시 서구 둔산동 102,,가정용,15,1,연결,부과,MG,R-01
IP-0006,IC-1,대전광역시 서구 둔산동 106
IP-0008,IC-1,대전광역시 서구 둔산동 108,,가정용,17,1,연결,부과,MG,R-01
IP-0007,IC-2,대전광역시 중구 대흥동 3,대전광역시 중구 대흥로 3,일반용,25,1,연결,부과,MG,R-03
";

const BAD_LINES: [u64; 5] = [5, 6, 7, 8, 9];
const GOOD: [&str; 4] = ["IP-0001", "IP-0002", "IP-0003", "IP-0007"];

async fn seed_customers(stack: &Stack) {
    let resp = reqwest::Client::new()
        .put(format!("http://{}/api/v1/master/customers", stack.billing))
        .bearer_auth(ADMIN)
        .json(&json!({"customers": [
            {"customer_id": "IC-1", "name": "최가져", "contact": "042-555-0101"},
            {"customer_id": "IC-2", "name": "정오기", "contact": ""}
        ]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let _: UpsertReport = resp.json().await.unwrap();
}

/// Sets a select's or input's value (what choosing would leave there).
async fn set(b: &Browser, css: &str, value: &str) {
    b.wait_css(css).await;
    b.client
        .execute(
            "const [sel, v] = arguments; document.querySelector(sel).value = v;",
            vec![json!(css), json!(value)],
        )
        .await
        .expect("set a field");
}

/// Uploads `file` as premises with the Korean mapping; returns the
/// preview's upload id.
async fn upload(b: &Browser, file: &std::path::Path) -> String {
    b.goto("/master/import").await;
    b.wait_css("#import-file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    set(b, "#import-kind", "premises").await;
    set(b, "#import-mapping", "korean").await;
    set(b, "#import-encoding", "auto").await;
    b.click("#import-upload").await;
    b.wait_css("#import-counts").await;
    let path = b.path().await;
    path.strip_prefix("/master/import/")
        .unwrap_or_else(|| panic!("the upload shows its preview, not {path}"))
        .to_string()
}

async fn count(b: &Browser, service: &str, what: &str) -> u64 {
    b.text(&format!(
        "#import-counts tr[data-service='{service}'] td[data-count='{what}']"
    ))
    .await
    .trim()
    .parse()
    .unwrap()
}

async fn bad_lines(b: &Browser) -> BTreeSet<u64> {
    let mut lines = BTreeSet::new();
    if !b.exists("#bad-rows").await {
        return lines;
    }
    for row in b
        .client
        .find_all(fantoccini::Locator::Css("#bad-rows tr[data-line]"))
        .await
        .unwrap()
    {
        let l = row.attr("data-line").await.unwrap().unwrap();
        lines.insert(l.parse().unwrap());
    }
    lines
}

async fn premises(stack: &Stack) -> Vec<Premises> {
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/master/premises?q=IP-&limit=50",
            stack.billing
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.json().await.unwrap()
}

/// Signs in as the admin with a plain HTTP client and posts a 65 MiB
/// file: `(status, page)`.
async fn oversized_upload(stack: &Stack) -> (u16, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = stack.url("");
    let login = http
        .post(stack.url("/login"))
        .header("origin", &origin)
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ww_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let mut body = Vec::with_capacity(66 << 20);
    body.extend_from_slice(
        b"--XBOUNDARY\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\npremises\r\n\
          --XBOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\n",
    );
    body.resize(body.len() + (65 << 20), b'a');
    body.extend_from_slice(b"\r\n--XBOUNDARY--\r\n");
    let resp = http
        .post(stack.url("/master/import"))
        .header("origin", &origin)
        .header("cookie", cookie)
        .header("content-type", "multipart/form-data; boundary=XBOUNDARY")
        .body(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_preview_commit_and_check() {
    let stack = Stack::start().await;
    seed_customers(&stack).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("수용가.csv");
    let (cp949, _, unmappable) = encoding_rs::EUC_KR.encode(EXPORT);
    assert!(!unmappable);
    std::fs::write(&file, &cp949).unwrap();
    let b = Browser::start(&stack.url(""), "ko").await;
    println!("screenshots: {}", common::screenshot_dir().display());

    // The admin finds the page in the master section and uploads the file.
    b.login(ADMIN).await;
    let nav = b.wait_css("header.top nav").await.html(true).await.unwrap();
    assert!(nav.contains("/master/import") && nav.contains("/master/check"));
    b.goto("/master/import").await;
    b.wait_css("#import-form").await;
    b.screenshot("import-form").await;
    let id = upload(&b, &file).await;

    // The preview: exactly the bad rows, with line, column and reason;
    // four would be created; nothing written yet.
    assert_eq!(bad_lines(&b).await, BTreeSet::from(BAD_LINES));
    let bad = b.text("#bad-rows").await;
    assert!(
        bad.contains("업종"),
        "the column is the file's header: {bad}"
    );
    assert_eq!(count(&b, "billing", "created").await, 4);
    assert_eq!(b.text("#bad-count").await, "5");
    assert!(
        premises(&stack).await.is_empty(),
        "a dry run writes nothing"
    );
    b.screenshot("import-preview").await;

    // Commit without "skip the bad rows": refused, nothing written.
    b.click("#commit").await;
    b.wait_css("#commit-refused").await;
    assert!(premises(&stack).await.is_empty());
    b.screenshot("import-refused").await;

    // With it: the good rows are written and the premises page shows one.
    b.goto(&format!("/master/import/{id}")).await;
    b.click("#skip-bad").await;
    b.click("#commit").await;
    b.wait_css("#import-written").await;
    assert_eq!(count(&b, "billing", "created").await, 4);
    assert_eq!(bad_lines(&b).await, BTreeSet::from(BAD_LINES));
    let stored: BTreeSet<String> = premises(&stack)
        .await
        .into_iter()
        .map(|p| p.account_no)
        .collect();
    assert_eq!(stored, GOOD.iter().map(|s| s.to_string()).collect());
    b.screenshot("import-committed").await;
    b.click("#written-keys a[href='/master/premises/IP-0001']")
        .await;
    b.wait_css("#premises-facts").await;
    assert_eq!(b.path().await, "/master/premises/IP-0001");
    assert!(b.text("#premises-customer").await.contains("최가져"));
    b.screenshot("import-premises").await;
    // The committed upload is gone.
    b.goto(&format!("/master/import/{id}")).await;
    b.wait_css("#import-error").await;

    // The same file again: nothing would change, and nothing does.
    let again = upload(&b, &file).await;
    assert_eq!(count(&b, "billing", "created").await, 0);
    assert_eq!(count(&b, "billing", "changed").await, 0);
    assert_eq!(count(&b, "billing", "unchanged").await, 4);
    assert_eq!(bad_lines(&b).await, BTreeSet::from(BAD_LINES));

    // An operator: no nav entry, the page refused, forced POSTs refused
    // (the upload and the admin's pending commit).
    b.logout().await;
    b.login(OPERATOR).await;
    let nav = b.wait_css("header.top nav").await.html(true).await.unwrap();
    assert!(!nav.contains("/master/import") && nav.contains("/master/check"));
    let (status, _) = b.fetch("GET", "/master/import", "").await;
    assert_eq!(status, 403, "operator's import page");
    let (status, body) = b.fetch("POST", "/master/import", "kind=premises").await;
    assert_eq!(status, 403, "operator's forced upload: {body}");
    let (status, body) = b
        .fetch(
            "POST",
            &format!("/master/import/{again}/commit"),
            "skip_bad=1",
        )
        .await;
    assert_eq!(status, 403, "operator's forced commit: {body}");
    let (status, _) = b.fetch("GET", &format!("/master/import/{again}"), "").await;
    assert_eq!(status, 403, "operator's look at the admin's preview");
    b.goto("/master/import").await;
    b.screenshot("import-refused-operator").await;

    // A file past 64 MiB is refused with a clear error (a client posting
    // directly, as the admin).
    let (status, body) = oversized_upload(&stack).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("64 MiB"), "{body}");

    // The check page: a meter registered with ingest, installed nowhere;
    // the imported premises have no meter yet.
    stack.register_meters(&["CHK-1"]).await;
    b.goto("/master/check").await;
    b.wait_css("#registered-not-installed tr[data-key='CHK-1']")
        .await;
    b.wait_css("#premises-without-meter tr[data-key='IP-0001']")
        .await;
    assert!(!b.exists("#check-clean").await);
    b.screenshot("master-check").await;

    // The admin commits the second upload: nothing changes.
    b.logout().await;
    b.login(ADMIN).await;
    b.goto(&format!("/master/import/{again}")).await;
    b.click("#skip-bad").await;
    b.click("#commit").await;
    b.wait_css("#import-nothing").await;
    assert_eq!(count(&b, "billing", "unchanged").await, 4);
    b.screenshot("import-again").await;

    b.close().await;
    stack.stop().await;
}
