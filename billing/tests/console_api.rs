//! The console's read endpoints (billing/src/console_api.rs) over TCP against
//! the real service on a fresh database: account search, an account's page,
//! bill search, the notice data and a run's progress.

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use serde_json::json;
use sqlx::PgPool;

mod common;
use common::*;

fn account(no: &str, customer: &str, address: &str, meter: &str) -> Account {
    Account {
        account_no: no.into(),
        customer: customer.into(),
        address: address.into(),
        usage_type: "household".into(),
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: "G".into(),
        meters: vec![MeterInstallation {
            meter_id: meter.into(),
            installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            removed_at: None,
        }],
    }
}

#[sqlx::test(migrations = false)]
async fn console_reads_search_notice_and_progress(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;

    // Stand-in for ingest's read function: every meter turns 26.5 m³ a month
    // from January 2026 on.
    waterworks_test_support::metering::stub_period_reads(
        &pool,
        "SELECT m, period_start, k * 26500, period_end, (k + 1) * 26500, 2976::bigint \
             FROM unnest(ARRAY['M1', 'M2', 'M_3']) m, \
                  (SELECT (extract(year FROM period_start AT TIME ZONE 'Asia/Seoul') * 12 \
                         + extract(month FROM period_start AT TIME ZONE 'Asia/Seoul'))::int8 - 24313 AS k) months",
    )
    .await;
    upsert_accounts(
        &pool,
        &[
            account("AC001", "홍길동", "대전광역시 서구 둔산로 100", "M1"),
            account("AC002", "김철수", "대전광역시 중구 대종로 5", "M2"),
            account("AC003", "이영희", "대전광역시 서구 50%로 7", "M_3"),
        ],
    )
    .await
    .unwrap();
    for period in ["2026-09", "2026-10"] {
        let (st, run) = http(
            addr,
            "POST",
            "/api/v1/billing-runs",
            Some(CLERK),
            Some(json!({"period": period, "group": "G"})),
        )
        .await;
        assert_eq!(st, 200, "{run}");
        assert_eq!(run["bills_created"], 3, "{run}");
    }

    // Every console read needs a token.
    assert_eq!(
        http(addr, "GET", "/api/v1/accounts?q=AC", None, None)
            .await
            .0,
        401
    );

    // Account search: by address substring, number prefix, meter id; the
    // LIKE wildcards are literal.
    let (st, r) = http(
        addr,
        "GET",
        "/api/v1/accounts?q=%EC%84%9C%EA%B5%AC",
        Some(VIEWER),
        None,
    )
    .await; // 서구
    assert_eq!(st, 200, "{r}");
    let nos: Vec<&str> = r["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_no"].as_str().unwrap())
        .collect();
    assert_eq!(nos, ["AC001", "AC003"]);
    assert_eq!(r["accounts"][0]["meters"], json!(["M1"]));
    let (_, r) = http(addr, "GET", "/api/v1/accounts?q=M2", Some(VIEWER), None).await;
    assert_eq!(r["accounts"][0]["account_no"], "AC002", "{r}");
    let (_, r) = http(addr, "GET", "/api/v1/accounts?q=50%25", Some(VIEWER), None).await;
    assert_eq!(r["accounts"].as_array().unwrap().len(), 1, "{r}");
    let (_, r) = http(addr, "GET", "/api/v1/accounts?q=M_", Some(VIEWER), None).await;
    assert_eq!(r["accounts"][0]["account_no"], "AC003", "{r}");
    assert_eq!(r["accounts"].as_array().unwrap().len(), 1, "{r}");
    let (st, _) = http(addr, "GET", "/api/v1/accounts?q=", Some(VIEWER), None).await;
    assert_eq!(st, 400);
    // The search shares its path with the admin's upsert: still admin only.
    let (st, _) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(VIEWER),
        Some(json!([])),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(CLERK),
        Some(json!([])),
    )
    .await;
    assert_eq!(st, 403);

    // One account: meters, two live bills newest first, all of it open.
    let (st, a) = http(addr, "GET", "/api/v1/accounts/AC001", Some(VIEWER), None).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["customer"], "홍길동");
    assert_eq!(a["meters"][0]["meter_id"], "M1");
    let periods: Vec<&str> = a["bills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, ["2026-10", "2026-09"]);
    let total: i64 = a["bills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total_krw"].as_i64().unwrap())
        .sum();
    assert_eq!(a["open_krw"].as_i64(), Some(total));
    assert_eq!(
        http(addr, "GET", "/api/v1/accounts/NOPE", Some(VIEWER), None)
            .await
            .0,
        404
    );

    // Bill search by customer, then by the bill number it printed.
    let (st, r) = http(
        addr,
        "GET",
        "/api/v1/bills/search?q=%ED%99%8D%EA%B8%B8%EB%8F%99",
        Some(VIEWER),
        None,
    )
    .await; // 홍길동
    assert_eq!(st, 200, "{r}");
    let bills = r["bills"].as_array().unwrap();
    assert_eq!(bills.len(), 2, "{r}");
    assert_eq!(bills[0]["period"], "2026-10");
    assert_eq!(bills[0]["address"], "대전광역시 서구 둔산로 100");
    let number = bills[0]["bill_number"].as_str().unwrap().to_string();
    let bill_id = bills[0]["bill_id"].as_i64().unwrap();
    let (_, r) = http(
        addr,
        "GET",
        &format!("/api/v1/bills/search?q={number}"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(r["bills"][0]["bill_id"].as_i64(), Some(bill_id), "{r}");
    let (_, r) = http(
        addr,
        "GET",
        "/api/v1/bills/search?q=AC00&period=2026-09",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(r["bills"].as_array().unwrap().len(), 3, "{r}");

    // A payment, then the notice: history of 12 months with this one and the
    // month before, the open amount net of the payment, the due date.
    let bill_total = bills[0]["total_krw"].as_i64().unwrap();
    let (st, p) = http(
        addr,
        "POST",
        "/api/v1/payments",
        Some(CLERK),
        // Oldest bill first: all of September's, all but 1,000 of October's.
        Some(
            json!({"reference": "KB-1", "account_no": "AC001", "amount_krw": total - 1_000,
                    "paid_on": "2026-11-20"}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{p}");
    let (st, n) = http(
        addr,
        "GET",
        &format!("/api/v1/bills/{bill_id}/notice"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{n}");
    assert_eq!(n["account"]["address"], "대전광역시 서구 둔산로 100");
    assert_eq!(n["due_on"], "2026-11-30");
    assert_eq!(n["usage_period"]["to"], "2026-10-31");
    let h = n["history"].as_array().unwrap();
    assert_eq!(h.len(), 12);
    assert_eq!(h[11]["period"], "2026-10");
    assert_eq!(h[11]["usage_m3"], n["bill"]["usage_m3"]);
    assert!(h[11]["usage_m3"].as_i64().unwrap() >= 26, "{n}");
    assert_eq!(h[10]["period"], "2026-09");
    assert!(h[10]["usage_m3"].as_i64().is_some());
    assert!(h[0]["usage_m3"].is_null());
    assert!(n["bill"]["lines"].as_array().unwrap().len() >= 3, "{n}");
    assert_eq!(
        n["paid_krw"].as_i64().unwrap() + n["open_krw"].as_i64().unwrap(),
        bill_total
    );
    assert_eq!(n["open_krw"], 1_000, "{n}");

    // A committed run: its progress is complete and its outcome is there.
    let (_, runs) = http(
        addr,
        "GET",
        "/api/v1/billing-runs?period=2026-10",
        Some(VIEWER),
        None,
    )
    .await;
    let run_id = runs["runs"][0]["run_id"].as_i64().unwrap();
    let (st, run) = http(
        addr,
        "GET",
        &format!("/api/v1/billing-runs/{run_id}"),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(st, 200, "{run}");
    assert_eq!(run["status"], "committed");
    assert_eq!(
        run["progress"],
        json!({"accounts": 3, "bills_written": 3, "held": 0, "percent": 100})
    );
    assert_eq!(run["outcome"]["bills_created"], 3);
    assert_eq!(
        http(
            addr,
            "GET",
            "/api/v1/billing-runs/999999",
            Some(VIEWER),
            None
        )
        .await
        .0,
        404
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
