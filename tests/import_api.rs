//! Billing's master-data router (`billing::master::http::routes`) over a
//! fresh database: roles, 400/413/422 with the one error body, dry runs,
//! idempotence, the audit record, overlaps against stored installations, an
//! exchange in one batch, searches and details; and an XLSX import.

mod common;

use billing::tariff::TariffBook;
use common::{fresh_database, server_url, unique};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use waterworks_service::auth::{ApiTokens, Role, TokenConfig};

const ADMIN: &str = "admin-master-3f9c1e7a5b2d8f4c6e0a9b3d7f1c5e8a2b4d";
const VIEWER: &str = "viewer-master-8b2d6f0a4c9e3b7d1f5a8c2e6b0d4f9a3c7e";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Api {
    url: String,
    pool: PgPool,
    db: String,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let db = unique("ww_master_");
        let url = fresh_database(&db).await;
        let pool = waterworks::database::connect(&url, 4).await.unwrap();
        billing::migrate(&pool).await.unwrap();
        let tokens = Arc::new(
            ApiTokens::new(&[
                TokenConfig::inline("admin", Role::Admin, ADMIN),
                TokenConfig::inline("viewer", Role::Viewer, VIEWER),
            ])
            .unwrap(),
        );
        let book = TariffBook::load(&root().join("fixtures/tariffs/daejeon.toml")).unwrap();
        let router = billing::master::http::routes(pool.clone(), &book, tokens);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Api {
            url: format!("http://{addr}"),
            pool,
            db,
            http: reqwest::Client::new(),
        }
    }

    async fn put(&self, path: &str, token: &str, body: &Value, dry_run: bool) -> (u16, Value) {
        let r = self
            .http
            .put(format!("{}/api/v1/master/{path}", self.url))
            .query(&[("dry_run", dry_run)])
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/api/v1/master/{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn stop(self) {
        self.pool.close().await;
        let admin = waterworks::database::connect(&server_url(), 1)
            .await
            .unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db))
            .execute(&admin)
            .await;
    }
}

fn premises(no: &str, usage: &str, diameter: i32) -> Value {
    json!({"account_no": no, "customer_id": "C1", "address": "대전광역시 서구 둔산로 1",
           "road_address": "대전광역시 서구 둔산로 1번길 2", "usage_type": usage,
           "diameter_mm": diameter, "households": 1, "sewer_connected": true,
           "levy_exempt": false, "billing_group": "G1", "reading_route": "R01"})
}

fn install(no: &str, meter: &str, from: &str, to: Option<&str>) -> Value {
    json!({"account_no": no, "meter_id": meter, "installed_at": from, "removed_at": to,
           "install_read_m3": "12.345"})
}

#[tokio::test]
async fn master_data_batches_are_checked_whole_audited_and_idempotent() {
    let api = Api::start().await;
    let customers = json!({"customers": [
        {"customer_id": "C1", "name": "홍길동", "contact": "010-1111-2222"},
        {"customer_id": "C2", "name": "김철수"}]});

    // Roles: no token 401, a viewer may not write (403); errors are ErrorBody.
    let r = api
        .http
        .put(format!("{}/api/v1/master/customers", api.url))
        .json(&customers)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, body) = api.put("customers", VIEWER, &customers, false).await;
    assert_eq!((s, body["error"].as_str()), (403, Some("forbidden")));

    // Not a batch: 400.
    let (s, body) = api
        .put("customers", ADMIN, &json!({"clients": []}), false)
        .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("bad_request")));

    // Over the item limit: 413 too_large.
    let many: Vec<Value> = (0..billing::master::MAX_BATCH_ITEMS + 1)
        .map(|i| json!({"customer_id": format!("c{i}"), "name": "n"}))
        .collect();
    let (s, body) = api
        .put("customers", ADMIN, &json!({ "customers": many }), true)
        .await;
    assert_eq!((s, body["error"].as_str()), (413, Some("too_large")));

    // Dry run: the report, nothing written.
    let (s, body) = api.put("customers", ADMIN, &customers, true).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["dry_run"].as_bool(), body["created"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(api.count("SELECT count(*) FROM billing.customers").await, 0);
    let (s, body) = api.put("customers", ADMIN, &customers, false).await;
    assert_eq!((s, body["created"].as_u64()), (200, Some(2)));
    let (_, body) = api.put("customers", ADMIN, &customers, false).await;
    assert_eq!(
        (
            body["created"].as_u64(),
            body["changed"].as_u64(),
            body["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(2))
    );

    // 422: every problem by index and field; nothing written.
    let mut bad = premises("P3", "spa", 17);
    bad["customer_id"] = json!("C1");
    let batch = json!({"premises": [premises("P1", "household", 15), bad, premises("P1", "household", 15)]});
    let (s, body) = api.put("premises", ADMIN, &batch, false).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (422, Some("invalid")),
        "{body}"
    );
    let problems: Vec<(u64, String)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["field"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            (1, "diameter_mm".to_string()),
            (1, "usage_type".to_string()),
            (2, "account_no".to_string())
        ]
    );
    assert_eq!(api.count("SELECT count(*) FROM billing.accounts").await, 0);
    // A customer billing does not have: found once the rest is right.
    let mut orphan = premises("P9", "household", 15);
    orphan["customer_id"] = json!("C404");
    let (s, body) = api
        .put("premises", ADMIN, &json!({"premises": [orphan]}), true)
        .await;
    assert_eq!(s, 422);
    assert_eq!(body["problems"][0]["field"], "customer_id");

    let batch =
        json!({"premises": [premises("P1", "household", 15), premises("P2", "general", 25)]});
    let (s, body) = api.put("premises", ADMIN, &batch, false).await;
    assert_eq!((s, body["created"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(
        api.count("SELECT count(*) FROM billing.accounts WHERE customer = '홍길동' AND road_address <> ''")
            .await,
        2
    );
    let audit: (String, String) = sqlx::query_as(
        "SELECT actor, details->>'created' FROM billing.audit_log WHERE action = 'upsert_premises'",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(audit.0, "admin");
    assert!(
        audit.1.contains("P1") && audit.1.contains("P2"),
        "{audit:?}"
    );
    // A renamed customer: the premises' printed name follows.
    let (s, _) = api
        .put(
            "customers",
            ADMIN,
            &json!({"customers": [{"customer_id": "C1", "name": "홍길순"}]}),
            false,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        api.count("SELECT count(*) FROM billing.accounts WHERE customer = '홍길순'")
            .await,
        2
    );

    // Installations.
    let first = json!({"installations": [install("P1", "M1", "2024-01-01T00:00:00Z", None),
                                           install("P2", "M2", "2024-01-01T00:00:00Z", None)]});
    let (s, body) = api.put("installations", ADMIN, &first, false).await;
    assert_eq!((s, body["created"].as_u64()), (200, Some(2)), "{body}");
    // M1 at P2 too, while it is at P1; another meter at P1 at once: refused
    // against what is stored.
    let clash = json!({"installations": [install("P2", "M1", "2024-06-01T00:00:00Z", None),
                                           install("P1", "M3", "2024-06-01T00:00:00Z", None)]});
    let (s, body) = api.put("installations", ADMIN, &clash, false).await;
    assert_eq!(s, 422, "{body}");
    let reasons: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("meter M1 is already installed at premises P1")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("overlaps the stored installation of meter M1")),
        "{reasons:?}"
    );
    // An exchange in one batch: M1 ends when M3 starts.
    let exchange = json!({"installations": [
        install("P1", "M1", "2024-01-01T00:00:00Z", Some("2024-06-01T00:00:00Z")),
        install("P1", "M3", "2024-06-01T00:00:00Z", None)]});
    let (s, body) = api.put("installations", ADMIN, &exchange, false).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        (body["created"].as_u64(), body["changed"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, body) = api.put("installations", ADMIN, &exchange, false).await;
    assert_eq!(body["unchanged"].as_u64(), Some(2), "{body}");
    // The database refuses an overlap whoever writes it.
    let err = sqlx::query(
        "INSERT INTO billing.meter_installations (account_no, meter_id, installed_at) \
         VALUES ('P2', 'M3', '2025-01-01T00:00:00Z')",
    )
    .execute(&api.pool)
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("meter_installations_one_place"),
        "{err}"
    );

    // Reads: searches and details, 404 for none.
    let (s, body) = api.get("premises?q=P", VIEWER).await;
    assert_eq!((s, body.as_array().map(Vec::len)), (200, Some(2)));
    let (s, body) = api.get("premises?q=%ED%99%8D", VIEWER).await; // 홍
    assert_eq!((s, body.as_array().map(Vec::len)), (200, Some(2)));
    let (s, body) = api.get("premises/P1", VIEWER).await;
    assert_eq!(s, 200);
    assert_eq!(body["customer"]["name"], "홍길순");
    let meters: Vec<&str> = body["installations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["meter_id"].as_str().unwrap())
        .collect();
    assert_eq!(meters, vec!["M1", "M3"]);
    assert_eq!(body["installations"][0]["install_read_m3"], "12.345");
    let (s, body) = api.get("customers/C1", VIEWER).await;
    assert_eq!((s, body["premises"].clone()), (200, json!(["P1", "P2"])));
    let (s, body) = api.get("premises/NOPE", VIEWER).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("not_found")));

    // Meters: a diameter the tariff does not know, a date in the future.
    let meter = |id: &str, diameter: i32, made: &str| {
        json!({"meter_id": id, "serial": "SN1", "maker": "대한계기", "model": "DWM-15",
               "profile_id": "waterworks-sim-v1", "diameter_mm": diameter,
               "manufactured_on": made, "verified_on": null, "gateway_id": "gw-1"})
    };
    let (s, body) = api
        .put(
            "meters",
            ADMIN,
            &json!({"meters": [meter("M1", 15, "2020-01-01"), meter("M2", 17, "2099-01-01")]}),
            false,
        )
        .await;
    assert_eq!(s, 422);
    let fields: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["diameter_mm", "manufactured_on"]);
    let (s, _) = api
        .put(
            "meters",
            ADMIN,
            &json!({"meters": [meter("M1", 15, "2020-01-01")]}),
            false,
        )
        .await;
    assert_eq!(s, 200);
    let (s, body) = api.get("meters/M1", VIEWER).await;
    assert_eq!(
        (s, body["installations"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    api.stop().await;
}

#[tokio::test]
async fn an_xlsx_sheet_is_imported_with_its_row_numbers() {
    let api = Api::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ADMIN).unwrap();
    let args = |dry_run, skip_bad| waterworks::import::ImportArgs {
        kind: waterworks::import::Kind::Customers,
        file: root().join("fixtures/import/customers.xlsx"),
        mapping: Some(root().join("fixtures/import/korean.toml")),
        encoding: None,
        dry_run,
        skip_bad,
        billing_url: api.url.clone(),
        ingest_url: None,
        token_file: token_file.clone(),
        ingest_token_file: None,
    };
    let dry = waterworks::import::run(&args(true, false)).await.unwrap();
    assert_eq!(dry.format, "xlsx");
    let bad: Vec<(u64, &str)> = dry
        .bad
        .iter()
        .map(|b| (b.line, b.column.as_str()))
        .collect();
    // Row 4 repeats C1; row 5 has no number.
    assert_eq!(
        bad,
        vec![(4, "고객번호"), (5, "고객번호")],
        "{}",
        dry.render()
    );
    assert_eq!(dry.billing.created, 2);
    let real = waterworks::import::run(&args(false, true)).await.unwrap();
    assert!(real.written);
    assert_eq!(api.count("SELECT count(*) FROM billing.customers").await, 2);
    let name: String =
        sqlx::query_scalar("SELECT name FROM billing.customers WHERE customer_id = 'C1'")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(name, "김민준");
    api.stop().await;
}
