//! Ingest's HTTP API is bounded: the quarantine is read in pages (cursor and
//! bytes per page), API queries have a `statement_timeout`, requests a time
//! limit, and only so many are served at once (the rest refused at once).

mod common;

use chrono::Utc;
use common::*;
use ingest::vee::{self, MsgMeta};
use ingest::writer::{self, BatchInput};
use ingest::IngestConfig;
use sqlx::PgPool;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` distinct junk messages of `size` bytes from `gw`, quarantined whole.
async fn quarantine_junk(pool: &PgPool, gw: &str, n: usize, size: usize) {
    let mut input = BatchInput::default();
    for i in 0..n {
        let mut meta = MsgMeta {
            topic: format!("waterworks/v1/{gw}/readings"),
            received_at: Utc::now(),
            gateway_id: None,
            batch_seq: None,
        };
        // Bytes that escape to four characters each in bytea escape format.
        let mut p = vec![0xffu8; size];
        p[..8].copy_from_slice(&(i as u64).to_be_bytes());
        input.decoded.push(vee::decode_message(i, &mut meta, &p));
        input.metas.push(meta);
    }
    writer::write_batch(pool, &ingest::db::Partitions::default(), &input, window())
        .await
        .expect("write");
}

async fn replica(tune: impl FnOnce(&mut IngestConfig)) -> (String, Replica) {
    let db = fresh_database().await;
    let gw = unique("gwa");
    let mut c = config_for(&db, &unique("grp"), &unique("ing"), &gw);
    tune(&mut c);
    (db, start(c).await)
}

/// GET returning the status line and headers too.
async fn get_head(addr: SocketAddr, path: &str, token: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn the_quarantine_is_read_in_pages_bounded_in_bytes() {
    let page_bytes = 64 * 1024;
    let (db, r) = replica(|c| c.limits.api_max_response_bytes = page_bytes).await;
    let gw = unique("gwj");
    // 40 rows of 4 KiB stored payload, each about 16 KiB escaped: 640 KiB in
    // all, ten times one page's budget.
    quarantine_junk(&r.pool, &gw, 40, 100_000).await;

    let mut seen = HashSet::new();
    let mut cursor: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match cursor {
            None => "/api/v1/quarantine?limit=10000".to_string(),
            Some(c) => format!("/api/v1/quarantine?limit=10000&cursor={c}"),
        };
        let (st, body) = get(r.addr, &path, Some(OPERATOR)).await;
        assert_eq!(st, 200, "{body}");
        let v = json(&body);
        let items = v["items"].as_array().unwrap();
        assert!(!items.is_empty());
        let rows_bytes: usize = items.iter().map(|i| i.to_string().len() + 1).sum();
        assert!(
            rows_bytes <= page_bytes,
            "page rows {rows_bytes} B over the {page_bytes} B budget"
        );
        for i in items {
            assert!(seen.insert(i["id"].as_i64().unwrap()), "a row twice");
            assert_eq!(i["payload_len"], 100_000);
            assert_eq!(i["seen_count"], 1);
            assert_eq!(i["payload_sha256"].as_str().unwrap().len(), 64);
        }
        pages += 1;
        match v["next_cursor"].as_i64() {
            Some(c) => {
                assert_eq!(v["truncated"], true, "cut by bytes, not by limit");
                cursor = Some(c);
            }
            None => {
                assert_eq!(v["truncated"], false);
                break;
            }
        }
        assert!(pages < 100);
    }
    assert_eq!(seen.len(), 40, "every row once across the pages");
    assert!(pages >= 10, "{pages} pages for ten budgets of rows");
    assert_eq!(
        json(&get(r.addr, "/api/v1/quarantine", Some(OPERATOR)).await.1)["counts"]["malformed"],
        40
    );

    // A page cut by `limit` continues too.
    let (_, body) = get(r.addr, "/api/v1/quarantine?limit=2", Some(OPERATOR)).await;
    let v = json(&body);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["truncated"], false);
    let c = v["next_cursor"].as_i64().expect("more rows follow");
    assert_eq!(c, v["items"][1]["id"].as_i64().unwrap());
    let (st, _) = get(r.addr, "/api/v1/quarantine?cursor=x", Some(OPERATOR)).await;
    assert_eq!(st, 400, "a cursor is an id");
    // The document says so.
    let doc = json(&get(r.addr, "/api/v1/openapi.json", None).await.1);
    let q = &doc["paths"]["/api/v1/quarantine"]["get"];
    assert!(q["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "cursor"));
    assert!(q["responses"]["503"].is_object());
    assert!(doc["components"]["schemas"]["QuarantineItem"]["properties"]["seen_count"].is_object());
    r.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn an_api_query_past_the_statement_timeout_is_cancelled_with_503() {
    let (db, r) = replica(|c| {
        c.limits.api_statement_timeout_ms = 200;
        c.limits.api_request_timeout_ms = 30_000;
    })
    .await;
    // Another session holds the quarantine: the API's query waits for it.
    let mut hold = r.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE metering.quarantine IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let t = Instant::now();
    let (st, head, body) = get_head(r.addr, "/api/v1/quarantine", OPERATOR).await;
    assert_eq!(st, 503, "{head}{body}");
    assert!(body.contains("unavailable"), "{body}");
    assert!(!body.contains("statement"), "no database detail: {body}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    hold.rollback().await.unwrap();
    let (st, _) = get(r.addr, "/api/v1/quarantine", Some(OPERATOR)).await;
    assert_eq!(st, 200);
    // The writers' pool has no such timeout.
    let t: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&r.pool)
        .await
        .unwrap();
    assert_eq!(t, "0");
    r.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn a_request_past_its_time_limit_is_answered_503_timeout() {
    let (db, r) = replica(|c| {
        c.limits.api_statement_timeout_ms = 60_000;
        c.limits.api_request_timeout_ms = 300;
    })
    .await;
    let mut hold = r.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE metering.gaps IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let t = Instant::now();
    let (st, _, body) = get_head(r.addr, "/api/v1/gaps", VIEWER).await;
    assert_eq!(st, 503, "{body}");
    assert_eq!(json(&body)["error"], "timeout");
    assert!(t.elapsed() < Duration::from_secs(5));
    hold.rollback().await.unwrap();
    assert_eq!(get(r.addr, "/api/v1/gaps", Some(VIEWER)).await.0, 200);
    r.stop().await;
    drop_database(&db).await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused_at_once() {
    let (db, r) = replica(|c| {
        c.limits.api_max_concurrent_requests = 2;
        c.limits.api_statement_timeout_ms = 60_000;
        c.limits.api_request_timeout_ms = 60_000;
    })
    .await;
    let mut hold = r.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE metering.gaps IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let addr = r.addr;
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/api/v1/gaps", Some(VIEWER)).await }))
        .collect();
    // Both are in once their queries wait for the lock; then the next
    // request is refused at once.
    let waiting = "SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'";
    wait_for(&r.pool, waiting, 2, 10).await;
    let t = Instant::now();
    let (st, head, body) = get_head(addr, "/api/v1/meters", VIEWER).await;
    assert!(t.elapsed() < Duration::from_secs(1), "refused, not queued");
    assert_eq!(st, 503);
    // The one error body: `unavailable`, the code every shed request has.
    assert_eq!(json(&body)["error"], "unavailable");
    assert!(head.contains("retry-after: 1"), "{head}");
    hold.rollback().await.unwrap();
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200, "the requests let in finish");
    }
    assert_eq!(get(addr, "/api/v1/meters", Some(VIEWER)).await.0, 200);
    r.stop().await;
    drop_database(&db).await;
}
