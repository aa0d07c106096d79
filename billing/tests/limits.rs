//! The API's limits against the running billing service: rate limits per
//! token and per IP (429 + Retry-After), the read deadline (503), the
//! statement timeout (a clean 503, the connection reusable), and keyset
//! pagination bounded by rows and bytes.

mod common;

use billing::{Billing, BillingConfig};
use common::{database_url, CLERK, VIEWER};
use serde_json::Value;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{Role, TokenConfig};
use waterworks_service::limits::HttpLimits;

fn config(pool: &PgPool) -> BillingConfig {
    let mut cfg = BillingConfig::new(
        &database_url(pool),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    );
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.tokens = vec![
        TokenConfig::inline("viewer", Role::Viewer, VIEWER),
        TokenConfig::inline("clerk", Role::Clerk, CLERK),
    ];
    cfg
}

async fn start(cfg: BillingConfig) -> (SocketAddr, CancellationToken) {
    let billing = Billing::build(cfg).await.unwrap();
    let addr = billing.http_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(billing.run_until_stopped(shutdown.clone()));
    (addr, shutdown)
}

/// Status, headers (lower-case) and body of one request.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
    (status, head.to_ascii_lowercase(), body)
}

#[sqlx::test(migrations = false)]
async fn rate_limits_per_token_and_per_ip_answer_429_with_retry_after(pool: PgPool) {
    let mut cfg = config(&pool);
    cfg.http_limits = HttpLimits {
        per_token_per_min: 5,
        per_ip_per_min: 8,
        ..HttpLimits::default()
    };
    let (addr, shutdown) = start(cfg).await;
    let path = "/api/v1/billing-runs?period=2026-10";
    for i in 0..5 {
        assert_eq!(get(addr, path, Some(VIEWER)).await.0, 200, "request {i}");
    }
    let (status, head, body) = get(addr, path, Some(VIEWER)).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: "), "{head}");
    assert_eq!(body["error"], "too_many_requests");
    // Another token from the same address still passes (7 from this IP).
    assert_eq!(get(addr, path, Some(CLERK)).await.0, 200);
    // Without a token (sign-in probing, wrong tokens) the IP's limit: the
    // 8th request from this address passes, the 9th is refused.
    assert_eq!(get(addr, path, Some("wrong")).await.0, 401);
    let (status, head, _) = get(addr, path, None).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: "), "{head}");
    // Probes are never limited.
    assert_eq!(get(addr, "/health", None).await.0, 200);
    shutdown.cancel();
}

#[sqlx::test(migrations = false)]
async fn a_read_past_its_deadline_answers_503(pool: PgPool) {
    let mut cfg = config(&pool);
    cfg.http_limits.request_timeout_ms = 500;
    let (addr, shutdown) = start(cfg).await;
    // A reader that waits on a lock: as slow as a report on a huge table.
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE billing.bills IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (status, head, body) = get(addr, "/api/v1/bills?period=2026-10", Some(VIEWER)).await;
    assert_eq!(status, 503, "{body}");
    assert!(head.contains("retry-after: "));
    assert_eq!(body["error"], "unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    locker.rollback().await.unwrap();
    // The service is fine afterwards.
    assert_eq!(
        get(addr, "/api/v1/bills?period=2026-10", Some(VIEWER))
            .await
            .0,
        200
    );
    shutdown.cancel();
}

#[sqlx::test(migrations = false)]
async fn the_statement_timeout_cancels_a_long_query_with_a_clean_error(pool: PgPool) {
    let mut cfg = config(&pool);
    cfg.statement_timeout_ms = 300;
    cfg.db_pool_max = 2;
    let (addr, shutdown) = start(cfg).await;
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE billing.postings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let (status, _, body) = get(addr, "/api/v1/ledger/trial-balance", Some(VIEWER)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "timeout");
    // Nothing of the database's error reaches the caller.
    assert!(!body.to_string().contains("statement"), "{body}");
    locker.rollback().await.unwrap();
    // Both pooled connections still work (none was left broken).
    for _ in 0..3 {
        assert_eq!(
            get(addr, "/api/v1/ledger/trial-balance", Some(VIEWER))
                .await
                .0,
            200
        );
    }
    shutdown.cancel();
}

/// `n` household accounts of group A billed for 2026-09 by a real run.
async fn bill_accounts(pool: &PgPool, n: usize) {
    use billing::accounts::{upsert_accounts, Account, MeterInstallation};
    use billing::run::{run_billing_with, RunRequest, StaticReads};
    use billing::usage::{HoldPolicy, PeriodRead};
    let period: billing::Period = "2026-09".parse().unwrap();
    let nos: Vec<String> = (0..n).map(|i| format!("P{i:05}")).collect();
    let accounts: Vec<Account> = nos
        .iter()
        .map(|no| Account {
            account_no: no.clone(),
            customer: format!("고객 {no}"),
            address: format!("대전광역시 서구 {no}"),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "A".into(),
            meters: vec![MeterInstallation {
                meter_id: format!("M-{no}"),
                installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                removed_at: None,
            }],
        })
        .collect();
    upsert_accounts(pool, &accounts).await.unwrap();
    let reads: Vec<PeriodRead> = nos
        .iter()
        .enumerate()
        .map(|(i, no)| PeriodRead {
            meter_id: format!("M-{no}"),
            start_ts: period.start_utc(),
            start_volume_l: 0,
            end_ts: period.end_utc() - chrono::Duration::minutes(15),
            end_volume_l: 5_000 + 1_000 * i as i64,
            reads: 2880,
        })
        .collect();
    let book = billing::tariff::TariffBook::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    )
    .unwrap();
    let never_hold = HoldPolicy {
        high_ratio: rust_decimal::Decimal::from(1_000_000),
        low_ratio: rust_decimal::Decimal::ZERO,
        min_avg_m3: i64::MAX,
    };
    let req = RunRequest {
        period,
        group: "A".into(),
        dry_run: false,
    };
    run_billing_with(pool, &book, &req, &StaticReads(reads), &never_hold)
        .await
        .unwrap();
}

#[sqlx::test(migrations = false)]
async fn pagination_walks_every_bill_exactly_once_within_the_byte_bound(pool: PgPool) {
    const PAGE_BYTES: usize = 6_000;
    let mut cfg = config(&pool);
    cfg.max_page_bytes = PAGE_BYTES;
    cfg.http_limits.per_token_per_min = 10_000;
    let (addr, shutdown) = start(cfg).await;
    bill_accounts(&pool, 60).await;
    let all: Vec<i64> =
        sqlx::query_scalar("SELECT bill_id FROM billing.bills WHERE period = '2026-09' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(all.len(), 60);

    let mut seen = Vec::new();
    let mut after = 0i64;
    let mut pages = 0;
    loop {
        let (status, _, body) = get(
            addr,
            &format!("/api/v1/bills?period=2026-09&limit=25&after_id={after}"),
            Some(VIEWER),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        let bills = body["bills"].as_array().unwrap();
        let bytes: usize = bills.iter().map(|b| b.to_string().len() + 1).sum();
        assert!(
            bills.len() == 1 || bytes <= PAGE_BYTES,
            "page of {bytes} bytes"
        );
        assert!(bills.len() <= 25);
        seen.extend(bills.iter().map(|b| b["bill_id"].as_i64().unwrap()));
        match body["next_after_id"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
        assert!(pages < 100, "the cursor does not move");
    }
    assert_eq!(seen, all, "every bill once, in order");
    assert!(
        pages > 60 / 25 + 1,
        "the byte bound cut pages ({pages} pages)"
    );
    shutdown.cancel();
}

/// The plan PostgreSQL picks for `sql` when a scan of the whole table is
/// made as costly as it is on a big one (these tables are tiny).
async fn plan(pool: &PgPool, sql: &str) -> String {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    rows.join("\n")
}

#[sqlx::test(migrations = false)]
async fn searches_and_open_bills_read_indexes_not_tables(pool: PgPool) {
    let (_addr, shutdown) = start(config(&pool)).await;
    // pg_trgm ships with PostgreSQL (contrib); the migration must have used it.
    let trgm: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        trgm, 1,
        "pg_trgm is not installed: customer searches scan the table"
    );
    let p = plan(
        &pool,
        "SELECT account_no FROM billing.accounts WHERE customer ILIKE '%김철수%' OR address ILIKE '%김철수%'",
    )
    .await;
    assert!(p.contains("accounts_customer_trgm_idx"), "{p}");
    assert!(p.contains("accounts_address_trgm_idx"), "{p}");
    let p = plan(
        &pool,
        "SELECT account_no FROM billing.meter_installations WHERE meter_id LIKE 'M-00%'",
    )
    .await;
    assert!(p.contains("meter_installations_meter_prefix_idx"), "{p}");
    let p = plan(
        &pool,
        "SELECT bill_id, party, sum(amount_krw) FROM billing.postings \
          WHERE ledger_account = '1100' GROUP BY bill_id, party",
    )
    .await;
    assert!(p.contains("postings_receivable_by_bill_idx"), "{p}");
    shutdown.cancel();
}

#[sqlx::test(migrations = false)]
async fn past_the_bound_of_requests_at_once_the_service_sheds_with_503(pool: PgPool) {
    let mut cfg = config(&pool);
    cfg.http_limits.max_concurrent = 1;
    let (addr, shutdown) = start(cfg).await;
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE billing.bills IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    // One request holds the only slot, waiting on the lock.
    let held = tokio::spawn(async move {
        get(addr, "/api/v1/bills?period=2026-10", Some(VIEWER))
            .await
            .0
    });
    // Until PostgreSQL shows it waiting.
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
              WHERE wait_event_type = 'Lock' AND query LIKE '%billing.bills%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, head, body) = get(addr, "/api/v1/billing-runs", Some(CLERK)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(head.contains("retry-after: "));
    locker.rollback().await.unwrap();
    assert_eq!(held.await.unwrap(), 200);
    // The slot is free again.
    assert_eq!(get(addr, "/api/v1/billing-runs", Some(CLERK)).await.0, 200);
    shutdown.cancel();
}
