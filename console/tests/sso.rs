//! Single sign-on against a real OpenID provider: panva's `oidc-provider`
//! (OpenID Certified, npm) run with Node.js from `tests/oidc/provider.mjs`
//! on a free port of 127.0.0.1, beside ingest, billing (fresh database) and a
//! console configured with `[oidc]`. The browser is a real HTTP client that
//! follows redirects, keeps cookies per host and path, and posts the
//! provider's sign-in form.
//!
//! - a user of the clerks' group gets the clerks' pages and is refused the
//!   operators' actions; an operator the reverse; a user whose groups map to
//!   no role gets a clear refusal page and no session;
//! - a tampered state, a callback without the browser's binding cookie and a
//!   replayed callback are refused;
//! - ID tokens issued by the provider verify, and tampered, re-signed with
//!   `none`, or given another nonce are refused;
//! - sign-out ends the session here and at the provider (RP-initiated
//!   logout: the next sign-in asks for the password again);
//! - with a 4-second ID token the session ends at its expiry;
//! - with `allow_token_login = false` the token form is gone and a posted
//!   token is refused.
//!
//! `npm ci` in `tests/oidc` (scripts/test does it) must have run: a missing
//! provider fails the test.

mod common;

use common::{Stack, CLERK, OPERATOR};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;
use waterworks_console::sso::{OidcConfig, Sso};

const CLIENT_ID: &str = "waterworks-console";
const CLIENT_SECRET: &str = "test-client-secret-9f8e7d6c5b4a39281706";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// The provider process; killed on drop.
struct Provider {
    child: Child,
    issuer: String,
    /// Kept open: a provider writing to a closed pipe would die of EPIPE.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Provider {
    fn start(console_port: u16, id_token_ttl_s: u32) -> Provider {
        Provider::start_on(free_port(), console_port, id_token_ttl_s)
    }

    /// On `port`: each start makes a new signing key (a key rotation).
    fn start_on(port: u16, console_port: u16, id_token_ttl_s: u32) -> Provider {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "{}/node_modules/oidc-provider is missing: run `npm ci` there (scripts/test does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "OIDC_REDIRECT_URI",
                format!("http://127.0.0.1:{console_port}/auth/callback"),
            )
            .env(
                "OIDC_POST_LOGOUT_URI",
                format!("http://127.0.0.1:{console_port}/login"),
            )
            .env("OIDC_ID_TOKEN_TTL_S", id_token_ttl_s.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node (Node.js 20 is needed: scripts/test checks)");
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(stdout);
        stdout
            .read_line(&mut line)
            .expect("read the provider's first line");
        assert!(
            line.starts_with("ready "),
            "provider did not start: {line:?}"
        );
        Provider {
            child,
            issuer: line["ready ".len()..].trim().to_string(),
            _stdout: stdout,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_secret(dir: &std::path::Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p
}

fn oidc_config(issuer: &str, console_port: u16, dir: &std::path::Path) -> OidcConfig {
    let text = format!(
        r#"
        issuer_url = "{issuer}"
        client_id = "{CLIENT_ID}"
        client_secret_file = "{secret}"
        redirect_url = "http://127.0.0.1:{console_port}/auth/callback"
        post_logout_redirect_url = "http://127.0.0.1:{console_port}/login"
        scopes = ["openid", "profile", "groups"]
        role_claim = "groups"
        roles = [
            {{ value = "waterworks-admins", role = "admin" }},
            {{ value = "waterworks-clerks", role = "clerk" }},
            {{ value = "waterworks-operators", role = "operator" }},
        ]
        [service_tokens]
        clerk_file = "{clerk}"
        operator_file = "{operator}"
        admin_file = "{admin}"
        "#,
        secret = write_secret(dir, "client-secret", CLIENT_SECRET).display(),
        clerk = write_secret(dir, "clerk", CLERK).display(),
        operator = write_secret(dir, "operator", OPERATOR).display(),
        admin = write_secret(dir, "admin", common::ADMIN).display(),
    );
    toml::from_str(&text).expect("oidc config")
}

/// A console with `[oidc]` over the stack's backends, on `port`.
async fn start_console(
    stack: &Stack,
    port: u16,
    oidc: OidcConfig,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut cc = waterworks_console::ConsoleConfig::new(
        format!("http://{}", stack.ingest),
        format!("http://{}", stack.billing),
    );
    cc.http_listen = format!("127.0.0.1:{port}").parse().unwrap();
    cc.oidc = Some(oidc);
    let console = waterworks_console::Console::build(cc)
        .await
        .expect("build console");
    let s = stop.clone();
    tokio::spawn(async move {
        console.run_until_stopped(s).await.expect("console");
    })
}

// ------------------------------------------------------------ the browser

struct Cookie {
    host: String,
    path: String,
    name: String,
    value: String,
}

/// An HTTP client acting as a browser: cookies by host and path, redirects
/// followed by hand (so each hop can be inspected).
struct Agent {
    http: reqwest::Client,
    jar: Vec<Cookie>,
}

struct Page {
    url: Url,
    status: u16,
    body: String,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            jar: Vec::new(),
        }
    }

    fn host(u: &Url) -> String {
        format!(
            "{}:{}",
            u.host_str().unwrap(),
            u.port_or_known_default().unwrap()
        )
    }

    fn cookie_header(&self, u: &Url) -> String {
        let host = Self::host(u);
        self.jar
            .iter()
            .filter(|c| c.host == host && u.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn has_cookie(&self, name: &str) -> bool {
        self.jar.iter().any(|c| c.name == name)
    }

    fn store(&mut self, u: &Url, resp: &reqwest::Response) {
        for v in resp.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let mut parts = v.split(';');
            let (name, value) = parts.next().unwrap().trim().split_once('=').unwrap();
            let mut path = "/".to_string();
            let mut gone = value.is_empty();
            for a in parts {
                let a = a.trim();
                let lower = a.to_ascii_lowercase();
                if let Some(p) = lower.strip_prefix("path=") {
                    path = a[5..5 + p.len()].to_string();
                }
                if lower == "max-age=0" {
                    gone = true;
                }
            }
            let host = Self::host(u);
            self.jar
                .retain(|c| !(c.host == host && c.name == name && c.path == path));
            if !gone {
                self.jar.push(Cookie {
                    host,
                    path,
                    name: name.to_string(),
                    value: value.to_string(),
                });
            }
        }
    }

    /// One request, no redirect followed.
    async fn send(
        &mut self,
        method: &str,
        u: &Url,
        form: Option<&[(&str, &str)]>,
    ) -> reqwest::Response {
        let mut req = match method {
            "GET" => self.http.get(u.clone()),
            _ => self
                .http
                .post(u.clone())
                .header("origin", u.origin().ascii_serialization()),
        };
        let cookies = self.cookie_header(u);
        if !cookies.is_empty() {
            req = req.header(COOKIE, cookies);
        }
        if let Some(f) = form {
            req = req.form(f);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {u}: {e}"));
        self.store(u, &resp);
        resp
    }

    /// A request, then redirects followed (GET) until a page answers, but
    /// not past `stop_at` (a URL prefix) if given.
    async fn go(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
        stop_at: Option<&str>,
    ) -> Page {
        let mut u = Url::parse(url).unwrap();
        let mut resp = self.send(method, &u, form).await;
        for _ in 0..20 {
            if !resp.status().is_redirection() {
                break;
            }
            let loc = resp
                .headers()
                .get(LOCATION)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let next = u.join(&loc).unwrap();
            if stop_at.is_some_and(|s| next.as_str().starts_with(s)) {
                return Page {
                    url: next,
                    status: resp.status().as_u16(),
                    body: String::new(),
                };
            }
            u = next;
            resp = self.send("GET", &u, None).await;
        }
        Page {
            url: u,
            status: resp.status().as_u16(),
            body: resp.text().await.unwrap(),
        }
    }
}

fn attr<'a>(html: &'a str, before: &str, name: &str) -> &'a str {
    let at = html
        .find(before)
        .unwrap_or_else(|| panic!("no {before} in {html}"));
    let rest = &html[at..];
    let key = format!("{name}=\"");
    let s = rest.find(&key).unwrap() + key.len();
    let e = rest[s..].find('"').unwrap();
    &rest[s..s + e]
}

/// At the provider's sign-in form: posts the password, follows back to the
/// console's callback (or wherever it leads).
async fn submit_password(
    agent: &mut Agent,
    form_page: &Page,
    user: &str,
    password: &str,
    stop_at: Option<&str>,
) -> Page {
    assert!(
        form_page.body.contains("City sign-in"),
        "expected the provider's sign-in form at {}: {}",
        form_page.url,
        form_page.body
    );
    let action = form_page
        .url
        .join(attr(&form_page.body, "<form", "action"))
        .unwrap();
    agent
        .go(
            "POST",
            action.as_str(),
            Some(&[("login", user), ("password", password)]),
            stop_at,
        )
        .await
}

/// The whole sign-in through the browser flow, from `/auth/login?next=`.
async fn sign_in(agent: &mut Agent, console: &str, user: &str, password: &str, next: &str) -> Page {
    let form = agent
        .go(
            "GET",
            &format!("{console}/auth/login?next={next}"),
            None,
            None,
        )
        .await;
    submit_password(agent, &form, user, password, None).await
}

// ------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_sign_in_through_the_city_identity_provider() {
    let stack = Stack::start().await;
    let dir = std::env::temp_dir().join(common::unique("console-sso-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let provider = Provider::start(port, 300);
    let stop = CancellationToken::new();
    let task = start_console(
        &stack,
        port,
        oidc_config(&provider.issuer, port, &dir),
        &stop,
    )
    .await;
    let console = format!("http://127.0.0.1:{port}");

    // The sign-in page offers the provider (Korean and English).
    let mut anon = Agent::new();
    let login = anon
        .go("GET", &format!("{console}/login"), None, None)
        .await;
    assert!(
        login.body.contains("시 통합 계정으로 로그인"),
        "{}",
        login.body
    );
    let mut en = Agent::new();
    en.jar.push(Cookie {
        host: format!("127.0.0.1:{port}"),
        path: "/".into(),
        name: "ww_lang".into(),
        value: "en".into(),
    });
    let login = en.go("GET", &format!("{console}/login"), None, None).await;
    assert!(login.body.contains("Sign in with the city account"));

    // A clerk: the clerks' pages, not the operators' actions.
    let mut kim = Agent::new();
    let done = sign_in(&mut kim, &console, "kim", "kim-password-1", "/clerk/runs").await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done
        .url
        .as_str()
        .starts_with(&format!("{console}/auth/callback?")));
    assert_eq!(
        attr(&done.body, "id=\"sso-continue\"", "data-next"),
        "/clerk/runs"
    );
    assert!(
        done.body.contains("url=/clerk/runs"),
        "meta refresh to next"
    );
    assert!(kim.has_cookie("ww_session"));
    assert!(!kim.has_cookie("ww_sso"), "the pending cookie is cleared");
    assert!(
        !done.body.contains("code="),
        "the code is not linked from the page"
    );
    let runs = kim
        .go("GET", &format!("{console}/clerk/runs"), None, None)
        .await;
    assert_eq!(runs.status, 200, "{}", runs.body);
    assert!(runs.body.contains("data-role=\"clerk\""));
    assert!(runs.body.contains("김민지"), "the provider's name is shown");
    // A clerk's POST goes to billing with the clerk credential: allowed there.
    let gw = kim
        .go("GET", &format!("{console}/ops/meters/silent"), None, None)
        .await;
    assert_eq!(gw.status, 200, "viewer pages are open to a clerk");

    // The redirect after single sign-on passes the same check as every other
    // (issue 23, item 5).
    for bypass in [
        "%2F%09%2Fevil.example",
        "%2F%2Fevil.example",
        "https:evil.example",
    ] {
        let mut a = Agent::new();
        let done = sign_in(&mut a, &console, "kim", "kim-password-1", bypass).await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert_eq!(
            attr(&done.body, "id=\"sso-continue\"", "data-next"),
            "/",
            "{bypass}"
        );
        assert!(done.body.contains("content=\"0;url=/\""), "{bypass}");
    }

    // An operator: the reverse.
    let mut park = Agent::new();
    let done = sign_in(&mut park, &console, "park", "park-password-1", "/ops").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let ops = park
        .go("GET", &format!("{console}/ops/gateways"), None, None)
        .await;
    assert_eq!(ops.status, 200);
    assert!(ops.body.contains("data-role=\"operator\""));
    let refused = park
        .go("GET", &format!("{console}/clerk/runs"), None, None)
        .await;
    assert_eq!(
        refused.status, 403,
        "an operator is refused the clerks' runs"
    );

    // Signed in at the provider, but no rule grants a role: a clear refusal.
    let mut lee = Agent::new();
    let page = sign_in(&mut lee, &console, "lee", "lee-password-1", "/").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("data-sso=\"no-role\""), "{}", page.body);
    assert!(page.body.contains("콘솔 역할이 부여되어 있지 않습니다"));
    assert!(!lee.has_cookie("ww_session"));
    let home = lee
        .go("GET", &format!("{console}/clerk/bills"), None, None)
        .await;
    assert!(
        home.url.path().starts_with("/login"),
        "no session: {}",
        home.url
    );

    // A wrong password gets no code at all.
    let mut eve = Agent::new();
    let form = eve
        .go("GET", &format!("{console}/auth/login"), None, None)
        .await;
    let wrong = submit_password(&mut eve, &form, "kim", "guess", None).await;
    assert_eq!(wrong.status, 401);
    assert!(!eve.has_cookie("ww_session"));

    forged_state(&console).await;
    forged_id_tokens(&provider, port, &dir).await;
    sign_out(&console, &provider).await;

    // The provider rotates its signing key (a restart makes a new one): the
    // console, holding the old key set, reads the new one and signs in.
    let issuer = provider.issuer.clone();
    let provider_port = Url::parse(&issuer).unwrap().port().unwrap();
    drop(provider);
    let provider = Provider::start_on(provider_port, port, 300);
    assert_eq!(provider.issuer, issuer);
    let mut kim = Agent::new();
    let done = sign_in(&mut kim, &console, "kim", "kim-password-1", "/clerk/runs").await;
    assert_eq!(done.status, 200, "after a key rotation: {}", done.body);
    assert!(kim.has_cookie("ww_session"));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    drop(provider);
    // The short-lived ID token: the session ends with it.
    expiry(&stack, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    stack.stop().await;
}

/// The callback only completes the sign-in this browser started, once.
async fn forged_state(console: &str) {
    let callback = format!("{console}/auth/callback");
    let mut a = Agent::new();
    let form = a
        .go(
            "GET",
            &format!("{console}/auth/login?next=/clerk/runs"),
            None,
            None,
        )
        .await;
    let back = submit_password(&mut a, &form, "kim", "kim-password-1", Some(&callback)).await;
    assert!(back.url.as_str().starts_with(&callback), "{}", back.url);
    let state = back
        .url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state in the callback");

    // Another browser (no binding cookie) with the real code and state.
    let mut thief = Agent::new();
    let p = thief.go("GET", back.url.as_str(), None, None).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("data-sso=\"bad-state\""));
    assert!(!thief.has_cookie("ww_session"));

    // This browser, the state tampered: refused, and the attempt is used up.
    let mut tampered = back.url.clone();
    let pairs: Vec<(String, String)> = back
        .url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                format!("{v}x")
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(&pairs);
    let p = a.go("GET", tampered.as_str(), None, None).await;
    assert_eq!(p.status, 400, "tampered state");
    assert!(!a.has_cookie("ww_session"));
    assert!(!state.is_empty());

    // A fresh attempt completes; replaying its callback does not.
    let mut b = Agent::new();
    let form = b
        .go("GET", &format!("{console}/auth/login"), None, None)
        .await;
    let back = submit_password(&mut b, &form, "kim", "kim-password-1", Some(&callback)).await;
    let binding = b.cookie_header(&back.url);
    let ok = b.go("GET", back.url.as_str(), None, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let replay = Agent::new();
    let resp = replay
        .http
        .get(back.url.clone())
        .header(COOKIE, binding)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "a callback works once");
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| A.iter().position(|&a| a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | v << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// `openssl dgst -sha256 -binary ARGS` over `input`.
fn openssl_dgst(dir: &std::path::Path, args: &[&str], input: &str) -> Vec<u8> {
    let file = dir.join("signing-input");
    std::fs::write(&file, input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .args(args)
        .arg(&file)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A genuine ID token from the provider for this client (the test plays the
/// client: its own PKCE verifier and nonce), then forgeries of it.
async fn forged_id_tokens(provider: &Provider, port: u16, dir: &std::path::Path) {
    use openidconnect::PkceCodeChallenge;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = "test-nonce-4711";
    let redirect = format!("http://127.0.0.1:{port}/auth/callback");
    let mut auth = Url::parse(&format!("{}/auth", provider.issuer)).unwrap();
    auth.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid profile groups")
        .append_pair("redirect_uri", &redirect)
        .append_pair("state", "s1")
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256");
    let mut a = Agent::new();
    let form = a.go("GET", auth.as_str(), None, None).await;
    let back = submit_password(&mut a, &form, "kim", "kim-password-1", Some(&redirect)).await;
    let code = back
        .url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let tokens: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", provider.issuer))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", verifier.secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"]
        .as_str()
        .expect("an id_token")
        .to_string();

    let sso = Sso::new(
        oidc_config(&provider.issuer, port, dir),
        Duration::from_secs(5),
    )
    .unwrap();
    let who = sso
        .verify_id_token(&id_token, nonce)
        .await
        .expect("genuine token");
    assert_eq!(who.subject, "kim");
    assert_eq!(who.name, "김민지");
    assert!(who.role_values.contains(&"waterworks-clerks".to_string()));

    // Another nonce (a token replayed into someone else's sign-in).
    assert!(sso.verify_id_token(&id_token, "other-nonce").await.is_err());

    // The payload changed (kim made an admin), the signature kept.
    let parts: Vec<&str> = id_token.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    claims["groups"] = serde_json::json!(["waterworks-admins"]);
    let forged_payload = b64url(claims.to_string().as_bytes());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let err = sso.verify_id_token(&tampered, nonce).await.unwrap_err();
    assert!(err.to_string().contains("ID token refused"), "{err}");

    // The same claims with `alg: none` and no signature.
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{forged_payload}.");
    assert!(sso.verify_id_token(&unsigned, nonce).await.is_err());

    // A signature byte flipped.
    let mut sig = b64url_decode(parts[2]);
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    assert!(sso.verify_id_token(&flipped, nonce).await.is_err());

    // The same claims signed by someone else's RSA key under the provider's
    // key id, and with HS256 keyed by the client secret (which the provider
    // does not use for ID tokens: only its RS256 key may sign them).
    let header: serde_json::Value = serde_json::from_slice(&b64url_decode(parts[0])).unwrap();
    let kid = header["kid"].as_str().expect("a kid").to_string();
    let key = dir.join("attacker.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/test installs it)");
    assert!(ok.success());
    let rs_header = b64url(format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#).as_bytes());
    let input = format!("{rs_header}.{forged_payload}");
    let sig = openssl_dgst(dir, &["-sign", key.to_str().unwrap()], &input);
    let attacker = format!("{input}.{}", b64url(&sig));
    let err = sso.verify_id_token(&attacker, nonce).await.unwrap_err();
    assert!(err.to_string().contains("ID token refused"), "{err}");
    let hs_header = b64url(br#"{"alg":"HS256"}"#);
    let input = format!("{hs_header}.{forged_payload}");
    let sig = openssl_dgst(dir, &["-hmac", CLIENT_SECRET], &input);
    let hmac = format!("{input}.{}", b64url(&sig));
    assert!(sso.verify_id_token(&hmac, nonce).await.is_err());
    // The unchanged genuine claims re-signed by the attacker: still refused.
    let input = format!("{rs_header}.{}", parts[1]);
    let sig = openssl_dgst(dir, &["-sign", key.to_str().unwrap()], &input);
    assert!(sso
        .verify_id_token(&format!("{input}.{}", b64url(&sig)), nonce)
        .await
        .is_err());
    // ... and the genuine one still passes (nothing above poisoned the keys).
    sso.verify_id_token(&id_token, nonce)
        .await
        .expect("genuine token");

    // Another audience: the claims are signed, but not for this client.
    let mut other = oidc_config(&provider.issuer, port, dir);
    other.client_id = "another-client".into();
    let other = Sso::new(other, Duration::from_secs(5)).unwrap();
    assert!(other.verify_id_token(&id_token, nonce).await.is_err());
}

/// Sign-out: the session ends here and at the provider.
async fn sign_out(console: &str, provider: &Provider) {
    let mut kim = Agent::new();
    let done = sign_in(&mut kim, console, "kim", "kim-password-1", "/clerk/bills").await;
    assert_eq!(done.status, 200);
    let bills = kim
        .go("GET", &format!("{console}/clerk/bills"), None, None)
        .await;
    assert_eq!(bills.status, 200);

    let out = kim
        .go(
            "POST",
            &format!("{console}/logout"),
            Some(&[]),
            Some(&provider.issuer),
        )
        .await;
    assert!(
        out.url
            .as_str()
            .starts_with(&format!("{}/session/end", provider.issuer)),
        "sign-out goes to the provider's end_session_endpoint: {}",
        out.url
    );
    let q: HashMap<String, String> = out.url.query_pairs().into_owned().collect();
    assert!(q.contains_key("id_token_hint"));
    assert_eq!(q["post_logout_redirect_uri"], format!("{console}/login"));
    assert!(!kim.has_cookie("ww_session"));
    let after = kim
        .go("GET", &format!("{console}/clerk/bills"), None, None)
        .await;
    assert!(
        after.url.path().starts_with("/login"),
        "local session ended"
    );

    // The provider asks to confirm; confirming brings the browser back.
    let confirm = kim.go("GET", out.url.as_str(), None, None).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let action = confirm
        .url
        .join(attr(&confirm.body, "<form", "action"))
        .unwrap();
    let xsrf = attr(&confirm.body, "name=\"xsrf\"", "value").to_string();
    let back = kim
        .go(
            "POST",
            action.as_str(),
            Some(&[("xsrf", &xsrf), ("logout", "yes")]),
            None,
        )
        .await;
    assert_eq!(back.url.as_str(), format!("{console}/login"));
    assert!(back.body.contains("id=\"sso-login\""));

    // Signed out at the provider too: the next sign-in asks for the password.
    let again = kim
        .go("GET", &format!("{console}/auth/login"), None, None)
        .await;
    assert!(again.body.contains("City sign-in"), "{}", again.body);
}

/// A 4-second ID token: the session ends with it, and the person must sign
/// in again.
async fn expiry(stack: &Stack, dir: &std::path::Path) {
    let port = free_port();
    let provider = Provider::start(port, 4);
    let stop = CancellationToken::new();
    let mut oidc = oidc_config(&provider.issuer, port, dir);
    oidc.allow_token_login = false;
    let task = start_console(stack, port, oidc, &stop).await;
    let console = format!("http://127.0.0.1:{port}");

    // This console takes no tokens at the sign-in page (the cluster's setting).
    let mut bot = Agent::new();
    let login = bot.go("GET", &format!("{console}/login"), None, None).await;
    assert!(login.body.contains("id=\"sso-login\""));
    assert!(!login.body.contains("id=\"token\""), "no token form");
    let posted = bot
        .go(
            "POST",
            &format!("{console}/login"),
            Some(&[("token", CLERK), ("next", "/")]),
            None,
        )
        .await;
    assert_eq!(posted.status, 401);
    assert!(!bot.has_cookie("ww_session"));

    let mut kim = Agent::new();
    let done = sign_in(&mut kim, &console, "kim", "kim-password-1", "/clerk/bills").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let bills = kim
        .go("GET", &format!("{console}/clerk/bills"), None, None)
        .await;
    assert_eq!(bills.status, 200);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let after = kim
        .go(
            "GET",
            &format!("{console}/clerk/bills"),
            None,
            Some(&format!("{console}/login")),
        )
        .await;
    assert!(
        after
            .url
            .as_str()
            .starts_with(&format!("{console}/login?next=")),
        "an expired session is sent to sign in again: {}",
        after.url
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
