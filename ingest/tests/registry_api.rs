//! `PUT /api/v1/meters` against the real service (port 0) and PostgreSQL:
//! a batch is validated whole, written in one audited transaction, idempotent,
//! bounded, refused to viewers and clerks, and moves a meter between gateways
//! under both gateways' locks without losing its high-water mark.

mod common;

use common::*;
use ingest::writer;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waterworks_service::auth::{Role, TokenConfig};

const CLERK: &str = "clerk-reg-3f9a1d6c8e2b5f7a0d4c9e1b6a3f8d2c5e7b";
const ADMIN: &str = "admin-reg-8c2e5b9f1a7d4c0e6b3a9f5d2c8e1b7a4f0d";

struct Api {
    db: String,
    r: Replica,
}

impl Api {
    async fn start(tune: impl FnOnce(&mut ingest::IngestConfig)) -> Api {
        let db = fresh_database().await;
        let mut c = config_for(&db, &unique("grp"), &unique("ing"), &unique("gwsub"));
        c.tokens.push(TokenConfig::inline("c", Role::Clerk, CLERK));
        c.tokens
            .push(TokenConfig::inline("admin-kim", Role::Admin, ADMIN));
        tune(&mut c);
        Api {
            db,
            r: start(c).await,
        }
    }

    async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let (status, text) = put_raw(self.r.addr, path, token, body.to_string().as_bytes()).await;
        (status, json(&text))
    }

    fn pool(&self) -> &PgPool {
        &self.r.pool
    }

    async fn stop(self) {
        self.r.stop().await;
        drop_database(&self.db).await;
    }
}

/// PUT over plain HTTP/1.1 with a JSON body; returns (status, body).
async fn put_raw(addr: SocketAddr, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // A refused body may be answered before it is all sent.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn meter(id: &str, gw: &str, flow: Option<f64>) -> Value {
    json!({"meter_id": id, "gateway_id": gw, "profile_id": "waterworks-sim-v1", "max_flow_lph": flow})
}

fn counts(v: &Value) -> (i64, i64, i64, i64) {
    let n = |k: &str| v[k].as_i64().unwrap_or_else(|| panic!("no {k} in {v}"));
    (n("created"), n("changed"), n("moved"), n("unchanged"))
}

const METERS: &str = "SELECT count(*) FROM metering.meters";
const AUDIT: &str = "SELECT count(*) FROM metering.registry_audit";

#[tokio::test]
async fn a_batch_is_created_once_repeated_without_change_and_changed_with_audit() {
    let api = Api::start(|_| {}).await;
    let batch = json!({"meters": [
        meter("ra-1", "gw-a", Some(2500.0)),
        meter("ra-2", "gw-a", None),
        {"meter_id": "ra-3", "gateway_id": "gw-b", "profile_id": "tuf-2000m"},
    ]});
    let (status, body) = api.put("/api/v1/meters", Some(OPERATOR), &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(&body), (3, 0, 0, 0));
    assert_eq!(body["dry_run"], false);
    assert_eq!(body["meters"][2]["outcome"], "created");
    let rows: Vec<(String, String, String, Option<f64>)> = sqlx::query_as(
        "SELECT meter_id, gateway_id, profile_id, max_flow_lph FROM metering.meters ORDER BY meter_id",
    )
    .fetch_all(api.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (
                "ra-1".into(),
                "gw-a".into(),
                "waterworks-sim-v1".into(),
                Some(2500.0)
            ),
            (
                "ra-2".into(),
                "gw-a".into(),
                "waterworks-sim-v1".into(),
                None
            ),
            // No max_flow_lph given: the profile's Q4.
            (
                "ra-3".into(),
                "gw-b".into(),
                "tuf-2000m".into(),
                Some(85000.0)
            ),
        ]
    );
    let audit: Vec<(String, String, String, Option<Value>, Value)> = sqlx::query_as(
        "SELECT actor, actor_role, action, before, after FROM metering.registry_audit ORDER BY meter_id",
    )
    .fetch_all(api.pool())
    .await
    .unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(
        (audit[0].0.as_str(), audit[0].1.as_str()),
        ("o", "operator")
    );
    assert_eq!(audit[0].2, "create");
    assert_eq!(audit[0].3, None);
    assert_eq!(audit[0].4["gateway_id"], "gw-a");
    assert_eq!(audit[0].4["profile_id"], "waterworks-sim-v1");
    assert_eq!(audit[0].4["max_flow_lph"].as_f64(), Some(2500.0));

    // The same batch again: nothing changes, not even updated_at, no audit.
    let stamp = "SELECT string_agg(updated_at::text || xmin::text, ',' ORDER BY meter_id) FROM metering.meters";
    let before: String = sqlx::query_scalar(stamp)
        .fetch_one(api.pool())
        .await
        .unwrap();
    let (status, body) = api.put("/api/v1/meters", Some(OPERATOR), &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(&body), (0, 0, 0, 3));
    let after: String = sqlx::query_scalar(stamp)
        .fetch_one(api.pool())
        .await
        .unwrap();
    assert_eq!(before, after, "an unchanged meter is not written");
    assert_eq!(count(api.pool(), AUDIT).await, 3);

    // One meter's maximum flow and another's profile change (admin).
    let (status, body) = api
        .put(
            "/api/v1/meters",
            Some(ADMIN),
            &json!({"meters": [
                meter("ra-1", "gw-a", Some(3000.0)),
                {"meter_id": "ra-3", "gateway_id": "gw-b", "profile_id": "mag-ldg-f32"},
                meter("ra-2", "gw-a", None),
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(&body), (0, 2, 0, 1));
    let (actor, before, after): (String, Value, Value) = sqlx::query_as(
        "SELECT actor, before, after FROM metering.registry_audit
          WHERE meter_id = 'ra-1' AND action = 'change'",
    )
    .fetch_one(api.pool())
    .await
    .unwrap();
    assert_eq!(actor, "admin-kim");
    assert_eq!(before["max_flow_lph"].as_f64(), Some(2500.0));
    assert_eq!(after["max_flow_lph"].as_f64(), Some(3000.0));
    // The registry rows and their audit rows were written by one transaction.
    let xids = count(
        api.pool(),
        "SELECT count(DISTINCT x) FROM (
            SELECT xmin::text AS x FROM metering.meters WHERE meter_id IN ('ra-1', 'ra-3')
            UNION ALL
            SELECT xmin::text FROM metering.registry_audit WHERE action = 'change') t",
    )
    .await;
    assert_eq!(
        xids, 1,
        "meters and audit rows of a batch share one transaction"
    );
    let created_xids = count(
        api.pool(),
        "SELECT count(DISTINCT xmin::text) FROM metering.registry_audit WHERE action = 'create'",
    )
    .await;
    assert_eq!(created_xids, 1);
    api.stop().await;
}

#[tokio::test]
async fn a_dry_run_reports_the_change_and_writes_nothing() {
    let api = Api::start(|_| {}).await;
    let batch =
        json!({"meters": [meter("dr-1", "gw-a", Some(2500.0)), meter("dr-2", "gw-a", None)]});
    let (status, body) = api
        .put("/api/v1/meters?dry_run=true", Some(OPERATOR), &batch)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(counts(&body), (2, 0, 0, 0));
    assert_eq!(count(api.pool(), METERS).await, 0);
    assert_eq!(count(api.pool(), AUDIT).await, 0);

    api.put("/api/v1/meters", Some(OPERATOR), &batch).await;
    let moved =
        json!({"meters": [meter("dr-1", "gw-b", Some(2500.0)), meter("dr-2", "gw-a", None)]});
    let (status, body) = api
        .put("/api/v1/meters?dry_run=true", Some(OPERATOR), &moved)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(counts(&body), (0, 1, 1, 1));
    assert_eq!(body["meters"][0]["moved_from_gateway_id"], "gw-a");
    assert_eq!(
        count(
            api.pool(),
            "SELECT count(*) FROM metering.meters WHERE gateway_id = 'gw-b'"
        )
        .await,
        0
    );
    assert_eq!(count(api.pool(), AUDIT).await, 2);
    api.stop().await;
}

#[tokio::test]
async fn a_meter_moves_under_both_gateway_locks_and_keeps_its_high_water_mark() {
    let api = Api::start(|_| {}).await;
    let (gwa, gwb) = (unique("gwa"), unique("gwb"));
    let m = vec![unique("mv")];
    let (status, _) = api
        .put(
            "/api/v1/meters",
            Some(OPERATOR),
            &json!({"meters": [meter(&m[0], &gwa, None)]}),
        )
        .await;
    assert_eq!(status, 200);
    let parts = ingest::db::Partitions::default();
    for r in 0..3 {
        let out = writer::write_batch(
            api.pool(),
            &parts,
            &input(&round(&gwa, r + 1, &m, r as i64)),
            window(),
        )
        .await
        .unwrap();
        assert_eq!(out.stored, 1);
    }
    let mark = "SELECT extract(epoch FROM last_ts)::int8 FROM metering.meters";
    let before = count(api.pool(), mark).await;

    // A writer of the old gateway holds its lock: the move waits for it.
    let mut held = api.pool().begin().await.unwrap();
    writer::lock_gateways(&mut held, &[gwa.as_str()])
        .await
        .unwrap();
    let addr = api.r.addr;
    let body = json!({"meters": [meter(&m[0], &gwb, None)]}).to_string();
    let put = tokio::spawn(async move {
        put_raw(addr, "/api/v1/meters", Some(OPERATOR), body.as_bytes()).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !put.is_finished(),
        "the move waited for the old gateway's lock"
    );
    assert_eq!(
        count(
            api.pool(),
            &format!("SELECT count(*) FROM metering.meters WHERE gateway_id = '{gwa}'")
        )
        .await,
        1
    );
    held.commit().await.unwrap();
    let (status, text) = put.await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(counts(&json(&text)), (0, 1, 1, 0));
    assert_eq!(
        count(api.pool(), mark).await,
        before,
        "the high-water mark is kept"
    );

    // The new gateway re-sending what the old one stored: duplicates, not
    // stored twice; the old gateway is refused; new readings are stored.
    let again = writer::write_batch(api.pool(), &parts, &input(&round(&gwb, 1, &m, 2)), window())
        .await
        .unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 1));
    let old = writer::write_batch(api.pool(), &parts, &input(&round(&gwa, 4, &m, 3)), window())
        .await
        .unwrap();
    assert_eq!(old.stored, 0);
    assert_eq!(old.quarantined.get("wrong_gateway"), Some(&1));
    let new = writer::write_batch(api.pool(), &parts, &input(&round(&gwb, 2, &m, 3)), window())
        .await
        .unwrap();
    assert_eq!(new.stored, 1);
    assert_eq!(
        count(api.pool(), "SELECT count(*) FROM metering.readings").await,
        4
    );
    let (before, after): (Value, Value) =
        sqlx::query_as("SELECT before, after FROM metering.registry_audit WHERE action = 'change'")
            .fetch_one(api.pool())
            .await
            .unwrap();
    assert_eq!(
        (before["gateway_id"].as_str(), after["gateway_id"].as_str()),
        (Some(gwa.as_str()), Some(gwb.as_str()))
    );
    api.stop().await;
}

#[tokio::test]
async fn every_bad_item_is_listed_and_nothing_is_written() {
    let api = Api::start(|_| {}).await;
    let batch = json!({"meters": [
        meter("ok-1", "gw-a", None),
        {"meter_id": "bad/id", "gateway_id": "gw-a", "profile_id": "waterworks-sim-v1"},
        {"meter_id": "ok-2", "gateway_id": "gw a", "profile_id": "waterworks-sim-v1"},
        {"meter_id": "ok-3", "gateway_id": "gw-a", "profile_id": "acme-9000"},
        meter("ok-1", "gw-b", None),
        {"meter_id": "ok-4", "gateway_id": "gw-a", "profile_id": "waterworks-sim-v1", "max_flow_lph": -5},
        {"meter_id": "ok-5", "gateway_id": "gw-a", "profile_id": "waterworks-sim-v1", "max_flow_lph": "3125"},
        {"meter_id": "ok-6", "gateway_id": "gw-a"},
        {"meter_id": "ok-7", "gateway_id": "gw-a", "profile_id": "waterworks-sim-v1", "diameter_mm": 15},
        "ok-8",
    ]});
    let (status, body) = api.put("/api/v1/meters", Some(OPERATOR), &batch).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "invalid");
    let at: Vec<(i64, &str)> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["index"].as_i64().unwrap(), p["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        at,
        [
            (1, "meter_id"),
            (2, "gateway_id"),
            (3, "profile_id"),
            (4, "meter_id"),
            (5, "max_flow_lph"),
            (6, "max_flow_lph"),
            (7, "profile_id"),
            (8, "diameter_mm"),
            (9, ""),
        ]
    );
    assert!(body["problems"][3]["reason"]
        .as_str()
        .unwrap()
        .contains("index 0"));
    assert!(body["problems"][2]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown device profile"));
    assert_eq!(
        count(api.pool(), METERS).await,
        0,
        "the good items were not written either"
    );
    assert_eq!(count(api.pool(), AUDIT).await, 0);

    for bad in [
        "not json",
        "[1, 2]",
        r#"{"meters": []}"#,
        r#"{"meters": {}}"#,
    ] {
        let (status, text) =
            put_raw(api.r.addr, "/api/v1/meters", Some(OPERATOR), bad.as_bytes()).await;
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(!text.contains("sqlx"), "{text}");
    }
    let (status, body) = api
        .put(
            "/api/v1/meters?dry=1",
            Some(OPERATOR),
            &json!({"meters": [meter("ok-1", "gw-a", None)]}),
        )
        .await;
    assert_eq!(status, 400, "an unknown query parameter");
    assert_eq!(body["error"], "bad_request");
    assert_eq!(count(api.pool(), METERS).await, 0);
    api.stop().await;
}

#[tokio::test]
async fn only_operators_and_admins_register() {
    let api = Api::start(|_| {}).await;
    let batch = json!({"meters": [meter("role-1", "gw-a", None)]});
    for (token, want) in [(None, 401), (Some(VIEWER), 403), (Some(CLERK), 403)] {
        let (status, body) = api.put("/api/v1/meters", token, &batch).await;
        assert_eq!(status, want, "{token:?}: {body}");
    }
    assert_eq!(count(api.pool(), METERS).await, 0);
    // The viewers' GET on the same path still answers them.
    let (status, _) = get(api.r.addr, "/api/v1/meters", Some(VIEWER)).await;
    assert_eq!(status, 200);
    let (status, _) = api.put("/api/v1/meters", Some(ADMIN), &batch).await;
    assert_eq!(status, 200);
    assert_eq!(count(api.pool(), METERS).await, 1);
    api.stop().await;
}

#[tokio::test]
async fn an_oversize_batch_is_refused_with_413() {
    use ingest::registry_api::{MAX_BATCH_BYTES, MAX_BATCH_METERS};
    let api = Api::start(|c| c.limits.api_request_timeout_ms = 30_000).await;
    let many: Vec<Value> = (0..=MAX_BATCH_METERS)
        .map(|i| meter(&format!("big-{i}"), "gw-a", None))
        .collect();
    let (status, body) = api
        .put("/api/v1/meters", Some(OPERATOR), &json!({ "meters": many }))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "too_large");
    // Bytes: refused on its Content-Length, before the body is read.
    let huge = vec![b' '; MAX_BATCH_BYTES + 1];
    let (status, _) = put_raw(api.r.addr, "/api/v1/meters", Some(OPERATOR), &huge).await;
    assert_eq!(status, 413);
    assert_eq!(count(api.pool(), METERS).await, 0);
    // The largest batch allowed is taken whole.
    let most: Vec<Value> = (0..MAX_BATCH_METERS)
        .map(|i| meter(&format!("big-{i}"), &format!("gw-{}", i % 50), None))
        .collect();
    let t = std::time::Instant::now();
    let (status, body) = api
        .put("/api/v1/meters", Some(OPERATOR), &json!({ "meters": most }))
        .await;
    assert_eq!(status, 200, "{body}");
    eprintln!("{MAX_BATCH_METERS} meters registered in {:?}", t.elapsed());
    assert_eq!(counts(&body).0, MAX_BATCH_METERS as i64);
    assert_eq!(count(api.pool(), AUDIT).await, MAX_BATCH_METERS as i64);
    api.stop().await;
}

#[tokio::test]
async fn a_batch_blocked_past_the_statement_timeout_is_503_and_writes_nothing() {
    let api = Api::start(|c| c.limits.api_statement_timeout_ms = 300).await;
    let mut held = api.pool().begin().await.unwrap();
    writer::lock_gateways(&mut held, &["gw-busy"])
        .await
        .unwrap();
    let (status, body) = api
        .put(
            "/api/v1/meters",
            Some(OPERATOR),
            &json!({"meters": [meter("busy-1", "gw-busy", None)]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    held.rollback().await.unwrap();
    assert_eq!(count(api.pool(), METERS).await, 0);
    assert_eq!(count(api.pool(), AUDIT).await, 0);
    // Retrying the same batch then succeeds.
    let (status, _) = api
        .put(
            "/api/v1/meters",
            Some(OPERATOR),
            &json!({"meters": [meter("busy-1", "gw-busy", None)]}),
        )
        .await;
    assert_eq!(status, 200);
    api.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_operation_and_its_bounds() {
    use ingest::registry_api::MAX_BATCH_METERS;
    let api = Api::start(|_| {}).await;
    let (status, body) = get(api.r.addr, "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc = json(&body);
    let put = &doc["paths"]["/api/v1/meters"]["put"];
    let mut statuses: Vec<&str> = put["responses"]
        .as_object()
        .expect("PUT /api/v1/meters is documented")
        .keys()
        .map(String::as_str)
        .collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        ["200", "400", "401", "403", "413", "422", "429", "503"]
    );
    assert_eq!(put["x-role"], "operator");
    assert!(put["description"]
        .as_str()
        .unwrap()
        .contains("Operator or admin"));
    assert_eq!(
        doc["components"]["schemas"]["MeterBatch"]["properties"]["meters"]["maxItems"],
        MAX_BATCH_METERS
    );
    let profiles = doc["components"]["schemas"]["MeterRegistration"]["properties"]["profile_id"]
        ["description"]
        .as_str()
        .unwrap();
    for id in ingest::registry::known_profiles().keys() {
        assert!(profiles.contains(id.as_str()), "{id} is documented");
    }
    // The served document is the committed one (tests/openapi.rs checks the copy).
    assert_eq!(body, ingest::http::openapi_pretty());
    api.stop().await;
}
