//! What the HTTP tests share: the role tokens, a billing service started on a
//! free port over the test's database, and a plain HTTP/1.1 client.
#![allow(dead_code)]

use billing::{Billing, BillingConfig};
use serde_json::Value;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};

pub const CLERK: &str = "clerk-8f3a61d0c9e24b7f5a1d8c3e6b9f02a7d4c1e8b5";
pub const VIEWER: &str = "viewer-2b7e9d41f6a03c8e5d1b4f7a9c2e6d08b3f5a1c7";
pub const ADMIN: &str = "admin-5c1f8a3e7d0b94c6e2a8f5d1b7c4e9a03f6d2b8e";

/// The URL of the test's own database (sqlx::test made it).
pub fn database_url(pool: &PgPool) -> String {
    waterworks_test_support::postgres::url_of_pool(pool)
}

/// The URL of database `db` on the test server, logging in as `user`.
pub fn database_url_as(db: &str, user: &str) -> String {
    // The local test server trusts local connections (no password).
    waterworks_test_support::postgres::url_as(
        &waterworks_test_support::postgres::server_url(),
        db,
        user,
    )
}

/// A billing service (Daejeon tariff) with a clerk, a viewer and an admin
/// token, serving until `shutdown` is cancelled.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), billing::BillingError>>,
}

impl Server {
    pub async fn start(pool: &PgPool) -> Server {
        let mut cfg = BillingConfig::new(
            &database_url(pool),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
        );
        cfg.http_listen = "127.0.0.1:0".parse().unwrap();
        cfg.tokens = [
            ("clerk", Role::Clerk, CLERK),
            ("viewer", Role::Viewer, VIEWER),
            ("admin", Role::Admin, ADMIN),
        ]
        .into_iter()
        .map(|(n, r, t)| TokenConfig::inline(n, r, t))
        .collect();
        let billing = Billing::build(cfg).await.unwrap();
        let addr = billing.http_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(billing.run_until_stopped(shutdown.clone()));
        Server {
            addr,
            shutdown,
            task,
        }
    }
}

pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    http_text(
        addr,
        method,
        path,
        token,
        body.map(|b| b.to_string()).unwrap_or_default(),
    )
    .await
}

pub async fn http_text(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap();
    let text = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // De-chunk: size line, data, CRLF ...
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One household account of group G in Daejeon (15 mm, one household, on the
/// sewer) with one meter installed since 2026-01-01.
pub fn household_account(account_no: &str, meter_id: &str) -> billing::accounts::Account {
    billing::accounts::Account {
        account_no: account_no.into(),
        customer: "홍길동".into(),
        address: "대전광역시 서구".into(),
        usage_type: "household".into(),
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: "G".into(),
        meters: vec![billing::accounts::MeterInstallation {
            meter_id: meter_id.into(),
            installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            removed_at: None,
        }],
    }
}

/// Stand-in for ingest's read function, only in the test's fresh database:
/// meter M1 used 26.5 m³ (0 → 26,500 L) in any period.
pub async fn stub_period_reads_m1(pool: &PgPool) {
    waterworks_test_support::metering::stub_one_meter(pool, "M1", 0, 26_500, 2976).await;
}
