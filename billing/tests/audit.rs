//! Account and reduction changes and their audit records commit together
//! (issue 23, item 10): when the audit record cannot be written the change is
//! not made either, and a change that fails leaves no record; a success
//! writes both. Over HTTP as the admin, against a fresh database.

use billing::accounts::upsert_accounts;
use serde_json::json;
use sqlx::PgPool;

mod common;
use common::*;

fn account(no: &str, customer: &str) -> serde_json::Value {
    json!({
        "account_no": no, "customer": customer, "address": "대전광역시 서구",
        "usage_type": "household", "diameter_mm": 15, "households": 1,
        "sewer_connected": true, "levy_exempt": false, "billing_group": "G",
        "meters": [{"meter_id": format!("M-{no}"), "installed_at": "2026-01-01T00:00:00Z"}]
    })
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Makes every audit insert fail, as a full disk or a lost connection
/// between the change and its record would.
async fn break_audit(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION billing.test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN RAISE EXCEPTION 'audit store unavailable (test)'; END $$; \
         CREATE TRIGGER test_refuse_audit BEFORE INSERT ON billing.audit_log \
           FOR EACH ROW EXECUTE FUNCTION billing.test_refuse_audit();",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn mend_audit(pool: &PgPool) {
    sqlx::raw_sql("DROP TRIGGER test_refuse_audit ON billing.audit_log")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_account_change_and_its_audit_record_commit_together(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;
    upsert_accounts(&pool, &[household_account("A1", "M-A1")])
        .await
        .unwrap();
    let audits = "SELECT count(*) FROM billing.audit_log";

    // The audit record cannot be written: neither change is made.
    break_audit(&pool).await;
    let (status, _) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(ADMIN),
        Some(json!([
            account("A2", "김철수"),
            account("A1", "홍길동 (renamed)")
        ])),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts WHERE account_no = 'A2'"
        )
        .await,
        0,
        "an account was created without its audit record"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts WHERE customer = '홍길동'"
        )
        .await,
        1,
        "an account was changed without its audit record"
    );
    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/accounts/A1/reductions",
        Some(ADMIN),
        Some(json!({"reductions": ["multi_child"]})),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts WHERE reductions = '{}'"
        )
        .await,
        1,
        "reductions were granted without their audit record"
    );
    assert_eq!(count(&pool, audits).await, 0);
    mend_audit(&pool).await;

    // The change fails (no such account): no record.
    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/accounts/NOPE/reductions",
        Some(ADMIN),
        Some(json!({"reductions": ["multi_child"]})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        count(&pool, audits).await,
        0,
        "a record of a change not made"
    );

    // Success: both, attributed to the caller.
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/accounts",
        Some(ADMIN),
        Some(json!([account("A2", "김철수")])),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(
        addr,
        "PUT",
        "/api/v1/accounts/A1/reductions",
        Some(ADMIN),
        Some(json!({"reductions": ["multi_child"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts WHERE account_no = 'A2'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts WHERE 'multi_child' = ANY(reductions)"
        )
        .await,
        1
    );
    let records: Vec<(String, String, String)> =
        sqlx::query_as("SELECT actor, action, target FROM billing.audit_log ORDER BY audit_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        records,
        vec![
            ("admin".into(), "upsert_accounts".into(), "accounts".into()),
            ("admin".into(), "set_reductions".into(), "account:A1".into()),
        ]
    );
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
