//! The billing service started for real on port 0 against a fresh database,
//! spoken to over TCP.

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::{Billing, BillingConfig};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};

const CLERK: &str = "clerk-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
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

fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = pool.connect_options().get_database().unwrap().to_string();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{db}")
}

#[sqlx::test(migrations = false)]
async fn quote_runs_and_bills_over_http(pool: PgPool) {
    let mut cfg = BillingConfig::new(
        &database_url(&pool),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    );
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.tokens = vec![
        TokenConfig {
            name: "clerk".into(),
            role: Role::Clerk,
            token: CLERK.into(),
        },
        TokenConfig {
            name: "viewer".into(),
            role: Role::Viewer,
            token: VIEWER.into(),
        },
    ];
    let billing = Billing::build(cfg).await.unwrap();
    let addr = billing.http_addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(billing.run_until_stopped(shutdown.clone()));

    // Stand-in for ingest's read function, only in this fresh test database.
    sqlx::query("CREATE SCHEMA metering")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE FUNCTION metering.period_reads_v1(period_start timestamptz, period_end timestamptz) \
         RETURNS TABLE (meter_id text, start_ts timestamptz, start_volume_l bigint, end_ts timestamptz, \
                        end_volume_l bigint, reads bigint) \
         LANGUAGE sql STABLE AS $$ SELECT 'M1'::text, period_start, 0::bigint, period_end, 26500::bigint, 2976::bigint $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    upsert_accounts(
        &pool,
        &[Account {
            account_no: "A1".into(),
            customer: "홍길동".into(),
            address: "대전광역시 서구".into(),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "G".into(),
            meters: vec![MeterInstallation {
                meter_id: "M1".into(),
                installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                removed_at: None,
            }],
        }],
    )
    .await
    .unwrap();

    assert_eq!(http(addr, "GET", "/health", None, None).await.0, 200);
    assert_eq!(http(addr, "GET", "/ready", None, None).await.0, 200);

    // The public quote: no token needed.
    let (status, q) = http(
        addr,
        "POST",
        "/api/v1/quote",
        None,
        Some(json!({"usage_type": "household", "diameter_mm": 15, "usage_m3": 26})),
    )
    .await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["total_krw"], 29_460);
    assert!(q["text"].as_str().unwrap().contains("29,460"));
    let (status, e) = http(
        addr,
        "POST",
        "/api/v1/quote",
        None,
        Some(json!({"usage_type": "farm", "diameter_mm": 15, "usage_m3": 26})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("farm"));

    // Runs need a clerk.
    let run = json!({"period": "2026-10", "group": "G", "dry_run": true});
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/v1/billing-runs",
            None,
            Some(run.clone())
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/v1/billing-runs",
            Some(VIEWER),
            Some(run.clone())
        )
        .await
        .0,
        403
    );
    let (status, dry) = http(addr, "POST", "/api/v1/billing-runs", Some(CLERK), Some(run)).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["bills_created"].as_i64(), dry["run_id"].is_null()),
        (Some(1), true)
    );
    let (status, done) = http(
        addr,
        "POST",
        "/api/v1/billing-runs",
        Some(CLERK),
        Some(json!({"period": "2026-10", "group": "G"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["bills_created"].as_i64(), done["total_krw"].as_i64()),
        (Some(1), Some(29_460))
    );

    let (status, list) = http(
        addr,
        "GET",
        "/api/v1/bills?period=2026-10",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let bill = &list["bills"][0];
    assert_eq!(
        (bill["bill_number"].as_str(), bill["total_krw"].as_i64()),
        (Some("2026-10-0000001"), Some(29_460))
    );
    let id = bill["bill_id"].as_i64().unwrap();
    let (status, full) = http(
        addr,
        "GET",
        &format!("/api/v1/bills/{id}"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(full["legs"][0]["end_volume_l"], 26_500);
    assert_eq!(full["lines"][0]["explanation"]["blocks"][0]["m3"], 26);
    assert_eq!(
        http(addr, "GET", "/api/v1/bills/999999", Some(VIEWER), None)
            .await
            .0,
        404
    );
    assert_eq!(
        http(
            addr,
            "GET",
            "/api/v1/bills?period=2026-13",
            Some(VIEWER),
            None
        )
        .await
        .0,
        400
    );
    let (status, runs) = http(
        addr,
        "GET",
        "/api/v1/billing-runs?period=2026-10",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        (status, runs["runs"][0]["status"].as_str()),
        (200, Some("committed"))
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
