//! The billing service started for real on port 0 against a fresh database,
//! spoken to over TCP.

use billing::accounts::upsert_accounts;
use serde_json::{json, Value};
use sqlx::PgPool;

mod common;
use common::*;

#[sqlx::test(migrations = false)]
async fn quote_runs_and_bills_over_http(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;

    // Stand-in for ingest's read function, only in this fresh test database.
    stub_period_reads_m1(&pool).await;
    upsert_accounts(&pool, &[household_account("A1", "M1")])
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
    // Well-formed, but not a usage type of the tariff: 422 `invalid`.
    assert_eq!(status, 422);
    assert_eq!(e["error"], "invalid");
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

/// Ledger, payments, corrections and reports over HTTP; every change is
/// refused without its role.
#[sqlx::test(migrations = false)]
async fn ledger_over_http_with_roles(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;
    waterworks_test_support::metering::stub_period_reads(
        &pool,
        "SELECT 'M1'::text, period_start, 0::bigint, period_end, 26500::bigint, 2976::bigint",
    )
    .await;

    // Accounts are the admin's.
    let accounts = json!([{ "account_no": "A1", "customer": "홍길동", "address": "대전광역시 서구",
        "usage_type": "household", "diameter_mm": 15, "households": 1, "sewer_connected": true,
        "levy_exempt": false, "billing_group": "G",
        "meters": [{ "meter_id": "M1", "installed_at": "2026-01-01T00:00:00Z", "removed_at": null }] }]);
    for (token, want) in [
        (None, 401),
        (Some(VIEWER), 403),
        (Some(CLERK), 403),
        (Some(ADMIN), 200),
    ] {
        let (status, body) = http(
            addr,
            "POST",
            "/api/v1/accounts",
            token,
            Some(accounts.clone()),
        )
        .await;
        assert_eq!(status, want, "{token:?}: {body}");
    }
    let reductions = json!({ "reductions": [] });
    assert_eq!(
        http(
            addr,
            "PUT",
            "/api/v1/accounts/A1/reductions",
            Some(CLERK),
            Some(reductions.clone())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        http(
            addr,
            "PUT",
            "/api/v1/accounts/A1/reductions",
            Some(ADMIN),
            Some(reductions)
        )
        .await
        .0,
        200
    );
    let (status, _) = http(
        addr,
        "POST",
        "/api/v1/billing-runs",
        Some(CLERK),
        Some(json!({"period": "2026-10", "group": "G"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = http(
        addr,
        "GET",
        "/api/v1/bills?period=2026-10",
        Some(VIEWER),
        None,
    )
    .await;
    let id = list["bills"][0]["bill_id"].as_i64().unwrap();

    // Every change refused without a token (401) and to a viewer (403).
    let pay = json!({"reference": "API-1", "account_no": "A1", "amount_krw": 10000, "paid_on": "2026-11-20"});
    let changes: Vec<(&str, String, Value)> = vec![
        ("POST", "/api/v1/payments".into(), pay.clone()),
        (
            "POST",
            "/api/v1/payments/import".into(),
            json!("reference,account_no,amount_krw,paid_on"),
        ),
        (
            "POST",
            format!("/api/v1/bills/{id}/cancel"),
            json!({"reason": "x"}),
        ),
        (
            "POST",
            format!("/api/v1/bills/{id}/rebill"),
            json!({"reason": "x"}),
        ),
        (
            "POST",
            format!("/api/v1/bills/{id}/adjustments"),
            json!({"part": "water", "amount_krw": -10, "reason": "x", "key": "k"}),
        ),
        ("POST", format!("/api/v1/bills/{id}/release"), json!({})),
        (
            "POST",
            "/api/v1/billing-runs".into(),
            json!({"period": "2026-10", "group": "G"}),
        ),
        ("POST", "/api/v1/accounts".into(), json!([])),
        (
            "PUT",
            "/api/v1/accounts/A1/reductions".into(),
            json!({"reductions": []}),
        ),
    ];
    for (method, path, body) in &changes {
        assert_eq!(
            http(addr, method, path, None, Some(body.clone())).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http(addr, method, path, Some(VIEWER), Some(body.clone()))
                .await
                .0,
            403,
            "{path}"
        );
    }
    // Nothing was changed by the refusals.
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM billing.journal_entries WHERE source <> 'bill'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, 0);

    // A clerk records payments: idempotent on the reference, clashes refused.
    let (status, out) = http(
        addr,
        "POST",
        "/api/v1/payments",
        Some(CLERK),
        Some(pay.clone()),
    )
    .await;
    assert_eq!(
        (status, out["posted"].as_bool()),
        (200, Some(true)),
        "{out}"
    );
    let (status, out) = http(
        addr,
        "POST",
        "/api/v1/payments",
        Some(CLERK),
        Some(pay.clone()),
    )
    .await;
    assert_eq!((status, out["posted"].as_bool()), (200, Some(false)));
    let mut clash = pay.clone();
    clash["amount_krw"] = json!(1);
    assert_eq!(
        http(addr, "POST", "/api/v1/payments", Some(CLERK), Some(clash))
            .await
            .0,
        409
    );
    let (status, out) = http_text(addr, "POST", "/api/v1/payments/import", Some(CLERK),
        "reference,account_no,amount_krw,paid_on\nBANK-1,A1,5000,2026-11-21\nBANK-2,A1,five,2026-11-21\n".into()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["posted"], 1);
    assert_eq!(out["errors"][0]["line"], 3);

    // Corrections.
    let (status, out) = http(addr, "POST", &format!("/api/v1/bills/{id}/adjustments"), Some(CLERK),
        Some(json!({"part": "water", "amount_krw": -460, "reason": "rounding goodwill", "key": "ADJ-1"}))).await;
    assert_eq!(status, 200, "{out}");
    let (status, re) = http(
        addr,
        "POST",
        &format!("/api/v1/bills/{id}/rebill"),
        Some(CLERK),
        Some(json!({"reason": "reissue"})),
    )
    .await;
    assert_eq!(status, 200, "{re}");
    assert_eq!(re["bill_no"], 2);
    let new_id = re["bill_id"].as_i64().unwrap();
    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/api/v1/bills/{id}/cancel"),
            Some(CLERK),
            Some(json!({"reason": "again"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        http(
            addr,
            "POST",
            &format!("/api/v1/bills/{new_id}/cancel"),
            Some(CLERK),
            Some(json!({"reason": ""}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/api/v1/bills/999999/cancel",
            Some(CLERK),
            Some(json!({"reason": "x"}))
        )
        .await
        .0,
        404
    );

    // Reports, JSON and CSV, for a viewer.
    let (status, tb) = http(
        addr,
        "GET",
        "/api/v1/ledger/trial-balance",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!((status, tb["net_krw"].as_i64()), (200, Some(0)));
    let receivable = tb["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "1100")
        .unwrap();
    // 29,460 billed, 460 adjusted off (then reversed by the rebill's
    // cancellation), 15,000 paid.
    assert_eq!(receivable["balance_krw"], 29_460 - 15_000);
    let (_, csv) = http(
        addr,
        "GET",
        "/api/v1/ledger/trial-balance?format=csv",
        Some(VIEWER),
        None,
    )
    .await;
    assert!(
        csv.as_str().unwrap().starts_with("code,name,debit_krw"),
        "{csv}"
    );
    for path in [
        "/api/v1/reports/ageing?as_of=2027-01-15",
        "/api/v1/reports/arrears?as_of=2027-01-15&min_days=30",
        "/api/v1/reports/run-summary?period=2026-10&group=G",
        "/api/v1/reports/ageing?as_of=2027-01-15&format=csv",
    ] {
        let (status, body) = http(addr, "GET", path, Some(VIEWER), None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, arrears) = http(
        addr,
        "GET",
        "/api/v1/reports/arrears?as_of=2027-01-15&min_days=30",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(arrears["rows"][0]["open_krw"], 29_460 - 15_000);
    let (_, entries) = http(
        addr,
        "GET",
        &format!("/api/v1/bills/{id}/entries"),
        Some(VIEWER),
        None,
    )
    .await;
    let sources: Vec<&str> = entries["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"bill") && sources.contains(&"cancellation"),
        "{sources:?}"
    );
    let (_, audit) = http(addr, "GET", "/api/v1/audit", Some(VIEWER), None).await;
    let actions: Vec<(String, String)> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("rebill", "clerk"),
        ("payment", "clerk"),
        ("adjust_bill", "clerk"),
        ("upsert_accounts", "admin"),
    ] {
        assert!(
            actions.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {actions:?}"
        );
    }

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// Issue 23, item 9: a month that is not over in Korea is not billed over the
/// API unless forced with a reason, which the audit log keeps.
#[sqlx::test(migrations = false)]
async fn a_run_of_an_unfinished_month_is_refused_unless_forced_with_a_reason(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;
    stub_period_reads_m1(&pool).await;
    upsert_accounts(&pool, &[household_account("A1", "M1")])
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let current = billing::Period::containing(now);
    let ends = current
        .end_utc()
        .with_timezone(&billing::period::kst())
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let future = current.add_months(3);

    for (period, dry_run) in [(current, true), (current, false), (future, true)] {
        let (status, body) = http(
            addr,
            "POST",
            "/api/v1/billing-runs",
            Some(CLERK),
            Some(json!({"period": period.to_string(), "group": "G", "dry_run": dry_run})),
        )
        .await;
        assert_eq!(status, 409, "{period}: {body}");
        assert_eq!(body["error"], "period_not_over", "{body}");
        assert_eq!(body["period"], period.to_string());
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("period {period} is not over")),
            "{msg}"
        );
        if period == current {
            assert!(msg.contains(&ends), "{msg} names when it can run ({ends})");
        }
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "a refused run writes nothing");

    // Force without a reason, or a reason without force: well-formed, so
    // 422 `invalid` (a malformed body is 400).
    for body in [
        json!({"period": current.to_string(), "group": "G", "force": true}),
        json!({"period": current.to_string(), "group": "G", "force": true, "reason": "  "}),
        json!({"period": current.to_string(), "group": "G", "reason": "why"}),
    ] {
        let (status, e) = http(
            addr,
            "POST",
            "/api/v1/billing-runs",
            Some(CLERK),
            Some(body),
        )
        .await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"], "invalid");
    }

    // Forced with a reason: billed, and the reason is in the audit log.
    let (status, out) = http(
        addr,
        "POST",
        "/api/v1/billing-runs",
        Some(CLERK),
        Some(
            json!({"period": current.to_string(), "group": "G", "force": true,
                    "reason": "meter replacement campaign closes early"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["bills_created"], 1, "{out}");
    let (actor, action, target, reason): (String, String, String, String) = sqlx::query_as(
        "SELECT actor, action, target, reason FROM billing.audit_log WHERE action = 'billing_run_forced'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), action.as_str(), reason.as_str()),
        (
            "clerk",
            "billing_run_forced",
            "meter replacement campaign closes early"
        )
    );
    assert_eq!(target, format!("run:{current}/G"));

    // The previous month is over: no force needed.
    let (status, out) = http(
        addr,
        "POST",
        "/api/v1/billing-runs",
        Some(CLERK),
        Some(json!({"period": current.prev().to_string(), "group": "G", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// An installation that overlaps another of the same meter (the meter at
/// two premises at once) refuses the whole request with 422: nothing is
/// written, nothing is skipped silently.
#[sqlx::test(migrations = false)]
async fn an_overlapping_installation_refuses_the_accounts_request(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;
    let account = |no: &str, installed_at: &str| {
        json!({ "account_no": no, "customer": "홍길동", "address": "대전광역시 서구",
            "usage_type": "household", "diameter_mm": 15, "households": 1, "sewer_connected": true,
            "levy_exempt": false, "billing_group": "G",
            "meters": [{ "meter_id": "M1", "installed_at": installed_at, "removed_at": null }] })
    };
    let (status, _) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(ADMIN),
        Some(json!([account("A1", "2026-01-01T00:00:00Z")])),
    )
    .await;
    assert_eq!(status, 200);
    // M1 is at A1 from January on: at A2 from March too is an overlap.
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(ADMIN),
        Some(json!([
            account("A3", "2025-01-01T00:00:00Z"),
            account("A2", "2026-03-01T00:00:00Z")
        ])),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("overlaps"),
        "{body}"
    );
    let (accounts, installations): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.accounts), \
                (SELECT count(*) FROM billing.meter_installations)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (accounts, installations),
        (1, 1),
        "nothing of the refused request"
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
