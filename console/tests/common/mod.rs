//! The end-to-end harness of the console: a fresh database, ingest, billing
//! and the console started in process on free ports with one known token per
//! role, readings put in through the real path (published to the machine's
//! broker under a unique gateway id and stored by ingest), accounts through
//! billing's API, and headless Chromium driven over WebDriver (fantoccini and
//! Debian's /usr/bin/chromedriver). A missing chromedriver is a failure,
//! never a skip. Screenshots (PNG) go to [`screenshot_dir`].

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};

pub const VIEWER: &str = "console-viewer-9e3b7a1d5f8c2e6b0d4a9f3c7e1b5d8a";
pub const CLERK: &str = "console-clerk-6f1d9b3e8a2c7f5d0b4e9a1c6d3f8b2e";
pub const OPERATOR: &str = "console-operator-2c8e4a0f6b1d9e3a7c5f2b8d4e0a6c1f";
pub const ADMIN: &str = "console-admin-8b4f0d6a2e9c5b1f7d3a8e4c0b6f2d9a";

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// One reading to publish: meter, time, totalizer (L), flow (L/h), alarms.
pub type Reading<'a> = (String, DateTime<Utc>, i64, f64, Vec<&'a str>);

pub fn tokens() -> Vec<TokenConfig> {
    [
        ("vera", Role::Viewer, VIEWER),
        ("kim", Role::Clerk, CLERK),
        ("park", Role::Operator, OPERATOR),
        ("admin", Role::Admin, ADMIN),
    ]
    .into_iter()
    .map(|(name, role, token)| TokenConfig::inline(name, role, token))
    .collect()
}

/// A short unique id for this test's names (gateways, databases).
pub fn unique(prefix: &str) -> String {
    waterworks_test_support::unique(prefix)
}

pub fn database_url() -> String {
    waterworks_test_support::postgres::server_url()
}

pub fn mqtt_url() -> String {
    waterworks_test_support::mqtt_url()
}

/// Where screenshots go: `$CARGO_TARGET_DIR/../console-screenshots` when the
/// target dir is set, else `target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t)
            .parent()
            .map(|p| p.join("console-screenshots"))
            .unwrap_or_else(|| PathBuf::from("target/screenshots")),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}

async fn fresh_database() -> String {
    waterworks_test_support::postgres::fresh_database(&unique("console_e2e_")).await
}

async fn drop_database(url: &str) {
    waterworks_test_support::postgres::drop_database(&database_url(), url).await;
}

/// ingest + billing + console, in process.
pub struct Stack {
    pub db_url: String,
    pub pool: PgPool,
    pub gateway: String,
    pub ingest: SocketAddr,
    pub billing: SocketAddr,
    pub console: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    batch_seq: std::sync::atomic::AtomicU64,
}

impl Stack {
    pub async fn start() -> Stack {
        let db_url = fresh_database().await;
        let gateway = unique("cgw");
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        let mut mqtt = ingest::MqttConfig::new(mqtt_url(), unique("console-ingest-"));
        // Only this test's gateway: the broker is shared with other tests.
        mqtt.subscription = format!(
            "$share/{}/{}",
            unique("g"),
            waterworks_wire::topic::readings(
                &waterworks_wire::GatewayId::parse(gateway.clone()).unwrap()
            )
        );
        let mut ic = ingest::IngestConfig::new(&db_url, mqtt);
        ic.http_listen = "127.0.0.1:0".parse().unwrap();
        ic.max_db_connections = 6;
        ic.tokens = tokens();
        let ingest = ingest::Ingest::build(ic).await.expect("build ingest");
        let ingest_addr = ingest.http_addr();
        let pool = ingest.pool();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ingest.run_until_stopped(s).await {
                panic!("ingest failed: {e}");
            }
        }));

        let mut bc = billing::BillingConfig::new(
            &db_url,
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
        );
        bc.http_listen = "127.0.0.1:0".parse().unwrap();
        bc.tokens = tokens();
        bc.db_pool_max = 4;
        let billing = billing::Billing::build(bc).await.expect("build billing");
        let billing_addr = billing.http_addr();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = billing.run_until_stopped(s).await {
                panic!("billing failed: {e}");
            }
        }));

        let mut cc = waterworks_console::ConsoleConfig::new(
            format!("http://{ingest_addr}"),
            format!("http://{billing_addr}"),
        );
        cc.http_listen = "127.0.0.1:0".parse().unwrap();
        // Every sign-in of these tests comes from 127.0.0.1, the redirect
        // test's 55 bypasses alone past the default 20 a minute; the limit
        // itself is tested in login_limit.rs.
        cc.login_per_ip_per_min = 10_000;
        let console = waterworks_console::Console::build(cc)
            .await
            .expect("build console");
        let console_addr = console.http_addr();
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            console.run_until_stopped(s).await.expect("console");
        }));

        let stack = Stack {
            db_url,
            pool,
            gateway,
            ingest: ingest_addr,
            billing: billing_addr,
            console: console_addr,
            stop,
            tasks,
            batch_seq: std::sync::atomic::AtomicU64::new(1),
        };
        // Ingest is ready once subscribed to the broker.
        waterworks_test_support::net::wait_ok(
            ingest_addr,
            "/ready",
            "ingest",
            Duration::from_secs(10),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stack
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.console)
    }

    /// Registers meters on this test's gateway (the registry, as `waterworks
    /// meters import` does).
    pub async fn register_meters(&self, meters: &[&str]) {
        let regs: Vec<ingest::registry::MeterRegistration> = meters
            .iter()
            .map(|m| ingest::registry::MeterRegistration {
                meter_id: waterworks_wire::MeterId::parse(m.to_string()).unwrap(),
                gateway_id: waterworks_wire::GatewayId::parse(self.gateway.clone()).unwrap(),
                profile_id: "sim-dn15".into(),
                max_flow_lph: Some(3000.0),
            })
            .collect();
        ingest::registry::register_meters(&self.pool, &regs)
            .await
            .expect("register meters");
    }

    /// Publishes one batch of readings `(meter, ts, volume_l, flow_lph, alarms)`
    /// to the broker as this test's gateway, QoS 1, and waits for the PUBACK.
    pub async fn publish(&self, readings: &[Reading<'_>]) {
        let seq = self
            .batch_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let batch = json!({
            "gateway_id": self.gateway,
            "batch_seq": seq,
            "readings": readings.iter().map(|(m, ts, v, f, a)| json!({
                "meter_id": m, "ts": ts, "volume_l": v, "flow_lph": f, "alarms": a
            })).collect::<Vec<_>>(),
        });
        let url = waterworks_service::mqtt_url::MqttUrl::parse(&mqtt_url()).expect("MQTT_URL");
        let mut opts = rumqttc::MqttOptions::new(unique("console-pub-"), url.host, url.port);
        opts.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
        let topic = format!("waterworks/v1/{}/readings", self.gateway);
        client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, batch.to_string())
            .await
            .unwrap();
        let acked = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("broker: {e}"),
                }
            }
        })
        .await;
        assert!(acked.is_ok(), "no PUBACK from the broker");
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    }

    /// Waits until `sql` (a count) reaches `want` (at most 20 s).
    pub async fn wait_count(&self, sql: &str, want: i64) {
        for _ in 0..400 {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap();
            if n >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {sql} to reach {want}");
    }

    /// Runs one dashboard sample now (the sampler runs every 10 s by itself).
    pub async fn sample(&self) {
        ingest::dashboard::sample_once(&self.pool)
            .await
            .expect("dashboard sample");
    }

    /// `POST /api/v1/accounts` on billing as admin.
    pub async fn add_accounts(&self, accounts: Value) {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/v1/accounts", self.billing))
            .bearer_auth(ADMIN)
            .json(&accounts)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "accounts: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.pool.close().await;
        drop_database(&self.db_url).await;
    }
}

/// Headless Chromium behind Debian's chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    base: String,
}

use waterworks_test_support::net::free_port;

impl Browser {
    /// Starts chromedriver and a browser session whose language is `lang`
    /// (`ko` or `en`, as Accept-Language).
    pub async fn start(base: &str, lang: &str) -> Browser {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: install Debian's chromium and chromium-driver (scripts/test does)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", format!("--lang={lang}"),
                ],
                "prefs": { "intl.accept_languages": lang },
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        base: base.to_string(),
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start a browser session: {last:?}");
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    pub async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Signs in with `token` through the login form.
    pub async fn login(&self, token: &str) {
        self.goto("/login").await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#login-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_css("header.top .who").await;
    }

    pub async fn logout(&self) {
        self.click("#logout").await;
        self.wait_css("#token").await;
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    pub async fn wait_css(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on {}: {e}", self.base))
    }

    pub async fn text(&self, css: &str) -> String {
        self.wait_css(css).await.text().await.unwrap()
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    /// Saves a PNG of the window as `name.png` in [`screenshot_dir`].
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// A `fetch` from the page (same origin, the session cookie sent):
    /// `(status, body)`.
    pub async fn fetch(&self, method: &str, path: &str, form: &str) -> (u16, String) {
        let v = self
            .client
            .execute_async(
                "const [m, p, f, done] = arguments;
                 const init = { method: m, credentials: 'same-origin', redirect: 'manual' };
                 if (m !== 'GET') { init.body = f; init.headers = {'content-type': 'application/x-www-form-urlencoded'}; }
                 fetch(p, init).then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));",
                vec![json!(method), json!(path), json!(form)],
            )
            .await
            .expect("fetch");
        (
            v[0].as_u64().unwrap_or(0) as u16,
            v[1].as_str().unwrap_or("").to_string(),
        )
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // chromedriver itself goes in Drop.
    }
}

/// A test that panics midway still stops its chromedriver.
impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
