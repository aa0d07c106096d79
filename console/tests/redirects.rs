//! Open redirects (issue 23, item 5), through the real endpoints: every known
//! bypass in `redirect::KNOWN_BYPASSES` given as `next` to the language
//! switch, to the sign-in form and to a real token sign-in (ingest and
//! billing started on a fresh database) must send the browser to `/`, and
//! the console's own paths must still be honoured.

mod common;

use common::{Stack, CLERK};
use reqwest::header::LOCATION;
use reqwest::redirect::Policy;
use waterworks_console::redirect::KNOWN_BYPASSES;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn location(resp: &reqwest::Response) -> String {
    assert_eq!(resp.status().as_u16(), 303, "{:?}", resp.url());
    resp.headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .expect("an ASCII Location")
        .to_string()
}

/// The issue's reproduction, byte for byte as a browser sends it, and raw
/// query forms a browser may produce from a crafted link.
const RAW_QUERIES: &[&str] = &[
    "next=/%09/evil.example",
    "next=/%0a/evil.example",
    "next=/%0d%0a/evil.example",
    "next=//evil.example",
    "next=/%5Cevil.example",
    "next=%5C/evil.example",
    "next=/%2F/evil.example",
    "next=/%252F/evil.example",
    "next=https:evil.example",
    "next=/%EF%BC%8Fevil.example",
    "next=/../..//evil.example",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_bypasses_are_refused_by_every_redirecting_endpoint() {
    let stack = Stack::start().await;
    let http = client();
    let base = stack.url("");

    // The language switch.
    for b in KNOWN_BYPASSES {
        let resp = http
            .get(format!("{base}/lang/en?next={}", enc(b)))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&resp), "/", "/lang with next={b:?}");
    }
    for q in RAW_QUERIES {
        let resp = http
            .get(format!("{base}/lang/ko?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(location(&resp), "/", "/lang?{q}");
    }
    let resp = http
        .get(format!("{base}/lang/en?next={}", enc("/ops/meters?q=M-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), "/ops/meters?q=M-1");

    // The sign-in form carries only a safe `next` in its hidden field.
    for q in RAW_QUERIES {
        let html = http
            .get(format!("{base}/login?{q}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(r#"name="next" value="/""#),
            "/login?{q} kept an unsafe next"
        );
    }

    // After a real sign-in (whoami on both backends).
    let origin = format!("http://{}", stack.console);
    let sign_in = |next: String| {
        let http = http.clone();
        let url = format!("{base}/login");
        let origin = origin.clone();
        async move {
            http.post(url)
                .header("origin", origin)
                .form(&[("token", CLERK), ("next", next.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    for b in KNOWN_BYPASSES {
        let resp = sign_in(b.to_string()).await;
        assert_eq!(location(&resp), "/", "sign-in with next={b:?}");
    }
    let resp = sign_in("/clerk/bills?status=open".into()).await;
    assert_eq!(location(&resp), "/clerk/bills?status=open");

    stack.stop().await;
}
