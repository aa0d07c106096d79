//! `waterworks meters register FILE.json`: against a real ingest (in
//! process, HTTP on port 0, a fresh database), a dry run writes nothing, a
//! real run registers, a second run changes nothing, a bad item anywhere in
//! the file writes nothing, and a file larger than one batch is sent in
//! batches after all of them are checked.

mod common;

use common::{fresh_database, server_url};
use serde_json::json;
use std::path::PathBuf;
use waterworks::cli::{register_meters_file, RegisterArgs};
use waterworks_service::auth::{Role, TokenConfig};

const OPERATOR: &str = "operator-cli-5e8b2d7a9c1f4e6b3d0a8c5f2e9b7d4a1c6f";

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn meters(n: usize, gw: &str) -> serde_json::Value {
    let list: Vec<_> = (0..n)
        .map(|i| json!({"meter_id": format!("cli-{i}"), "gateway_id": gw, "profile_id": "waterworks-sim-v1"}))
        .collect();
    json!({ "meters": list })
}

#[tokio::test]
async fn meters_register_checks_the_whole_file_then_registers_it_once() {
    let tag = format!("ww_test_cli_{}", std::process::id());
    let db = fresh_database(&tag).await;
    let mut mqtt = ingest::MqttConfig::new(
        std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into()),
        format!("{tag}-ing"),
    );
    mqtt.subscription = format!("$share/{tag}/waterworks/v1/{tag}-none/readings");
    let mut cfg = ingest::IngestConfig::new(&db, mqtt);
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.tokens = vec![TokenConfig::inline(
        "cli-operator",
        Role::Operator,
        OPERATOR,
    )];
    let ingest = ingest::Ingest::build(cfg).await.expect("ingest builds");
    let url = format!("http://{}", ingest.http_addr());
    let pool = ingest.pool();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(ingest.run_until_stopped(stop.clone()));

    let dir = tempfile::tempdir().unwrap();
    let token_file = file(&dir, "token", &format!("{OPERATOR}\n"));
    // More than one batch (10 000 meters a request).
    let n = ingest::registry_api::MAX_BATCH_METERS + 5;
    let good = file(&dir, "good.json", &meters(n, "gw-cli").to_string());
    let args = |f: &PathBuf, dry_run| RegisterArgs {
        file: f.clone(),
        ingest_url: url.clone(),
        token_file: token_file.clone(),
        dry_run,
    };
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    let out = register_meters_file(&args(&good, true)).await.unwrap();
    assert!(
        out.starts_with(&format!("dry run: would create {n}, change 0")),
        "{out}"
    );
    assert_eq!(count("SELECT count(*) FROM metering.meters").await, 0);

    let out = register_meters_file(&args(&good, false)).await.unwrap();
    assert_eq!(
        out,
        format!("registered: created {n}, changed 0 (moved 0), unchanged 0\n")
    );
    let out = register_meters_file(&args(&good, false)).await.unwrap();
    assert_eq!(
        out,
        format!("registered: created 0, changed 0 (moved 0), unchanged {n}\n")
    );
    assert_eq!(
        count("SELECT count(*) FROM metering.registry_audit").await,
        n as i64
    );

    // A bad item in the second batch: the first batch, good and changed
    // (another gateway), is not written either.
    let mut bad = meters(n, "gw-cli-2");
    bad["meters"][n - 1]["profile_id"] = json!("acme-9000");
    let bad = file(&dir, "bad.json", &bad.to_string());
    let err = register_meters_file(&args(&bad, false)).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!(
            "meters[{}] profile_id: unknown device profile",
            n - 1
        )),
        "{msg}"
    );
    assert!(msg.contains("nothing was written"), "{msg}");
    assert_eq!(
        count("SELECT count(*) FROM metering.meters WHERE gateway_id = 'gw-cli-2'").await,
        0
    );

    // A wrong token is reported, not ignored.
    let wrong = file(&dir, "wrong", "not-a-valid-token-at-all");
    let mut a = args(&good, true);
    a.token_file = wrong;
    let err = register_meters_file(&a).await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");

    stop.cancel();
    task.await.unwrap().unwrap();
    let admin = waterworks::database::connect(&server_url(), 1)
        .await
        .unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {tag} WITH (FORCE)"))
        .execute(&admin)
        .await;
}
