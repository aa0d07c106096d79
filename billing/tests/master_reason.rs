//! The reason of a master-data batch (`PUT /api/v1/master/...?reason=`, the
//! console's edit form sends one) reaches the audit log: the record's reason
//! and its details; a batch without one is recorded with none; a reason over
//! 500 characters, empty or with NUL is refused with 400 and writes nothing.
//! Over HTTP as the admin, against a fresh database.

use serde_json::{json, Value};
use sqlx::PgPool;

mod common;
use common::*;

/// `s` percent-encoded for a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn customer(id: &str, name: &str) -> Value {
    json!({"customers": [{"customer_id": id, "name": name, "contact": "042-000-0000"}]})
}

async fn newest_audit(addr: std::net::SocketAddr) -> Value {
    let (status, page) = http(addr, "GET", "/api/v1/audit?limit=1", Some(VIEWER), None).await;
    assert_eq!(status, 200, "{page}");
    page["audit"][0].clone()
}

#[sqlx::test(migrations = false)]
async fn a_batch_reason_is_kept_in_its_audit_record(pool: PgPool) {
    let Server {
        addr,
        shutdown,
        task: server,
    } = Server::start(&pool).await;

    // Without a reason: recorded, with none.
    let (status, rep) = http(
        addr,
        "PUT",
        "/api/v1/master/customers",
        Some(ADMIN),
        Some(customer("C1", "김민수")),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    let a = newest_audit(addr).await;
    assert_eq!(a["action"], "upsert_customers");
    assert_eq!(a["actor"], "admin");
    assert_eq!(a["reason"], "");
    assert!(a["details"].get("reason").is_none(), "{a}");

    // With one (Korean, spaces, an ampersand): in the record and its details.
    let reason = "개명 신청서 접수 (민원 2026-123) & 확인";
    let (status, rep) = http(
        addr,
        "PUT",
        &format!("/api/v1/master/customers?reason={}", enc(reason)),
        Some(ADMIN),
        Some(customer("C1", "김민준")),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["changed_keys"], json!(["C1"]));
    let a = newest_audit(addr).await;
    assert_eq!(a["action"], "upsert_customers");
    assert_eq!(a["reason"], reason);
    assert_eq!(a["details"]["reason"], reason);
    assert_eq!(a["details"]["changed"], json!(["C1"]));

    // A dry run writes no record, reason or not.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (status, _) = http(
        addr,
        "PUT",
        "/api/v1/master/customers?dry_run=true&reason=check",
        Some(ADMIN),
        Some(customer("C1", "김서준")),
    )
    .await;
    assert_eq!(status, 200);

    // Refused with 400, nothing written: over 500 characters, empty, NUL.
    let long = "가".repeat(501);
    for bad in [long.as_str(), "", "a\0b"] {
        let (status, body) = http(
            addr,
            "PUT",
            &format!("/api/v1/master/customers?reason={}", enc(bad)),
            Some(ADMIN),
            Some(customer("C1", "박서준")),
        )
        .await;
        assert_eq!(status, 400, "reason of {} chars: {body}", bad.len());
        assert_eq!(body["error"], "bad_request", "{body}");
    }
    // Exactly 500 is taken.
    let (status, body) = http(
        addr,
        "PUT",
        &format!("/api/v1/master/customers?reason={}", enc(&"나".repeat(500))),
        Some(ADMIN),
        Some(customer("C2", "이하나")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        after,
        before + 1,
        "only the 500-character batch is recorded"
    );
    let name: String =
        sqlx::query_scalar("SELECT name FROM billing.customers WHERE customer_id = 'C1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        name, "김민준",
        "a refused or dry-run batch changed the name"
    );

    // The premises batch carries it too (one-item edit, as the console sends).
    let premises = json!({"premises": [{
        "account_no": "P1", "customer_id": "C1", "address": "대전광역시 서구 둔산로 100",
        "usage_type": "household", "diameter_mm": 15, "households": 1,
        "sewer_connected": true, "levy_exempt": false, "billing_group": "G"
    }]});
    let (status, body) = http(
        addr,
        "PUT",
        "/api/v1/master/premises?reason=new%20connection",
        Some(ADMIN),
        Some(premises),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let a = newest_audit(addr).await;
    assert_eq!(a["action"], "upsert_premises");
    assert_eq!(a["reason"], "new connection");
    assert_eq!(a["details"]["created"], json!(["P1"]));

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
