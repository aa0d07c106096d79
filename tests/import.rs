//! `waterworks import` end to end on a generated utility export (2 000
//! premises, CP949, Korean headers, ~1% bad rows of every kind), against a
//! real ingest (HTTP and MQTT) and billing's master-data router over one
//! fresh database:
//!
//! - for each kind in order, the dry run reports exactly the rows the
//!   generator spoiled and writes nothing; a real run without `--skip-bad`
//!   writes nothing; with it, it takes exactly the good rows; a second
//!   import changes nothing;
//! - `waterworks check master` finds nothing, then each disagreement made;
//! - readings then published for the imported meters are stored, not
//!   quarantined, and a billing run bills them.

mod common;

use billing::tariff::TariffBook;
use common::{fresh_database, server_url, unique};
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use waterworks::import::generate::{file_name, write_export, Export};
use waterworks::import::{run, ImportArgs, Kind};
use waterworks_service::auth::{ApiTokens, Role, TokenConfig};

const ADMIN: &str = "admin-import-7c2e9f4a1b8d3e6f0a5c2d9e7b4f1a8c3e6d";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Billing's master-data router alone, on a free port, over `pool`.
async fn serve_master(pool: PgPool, tokens: Arc<ApiTokens>) -> String {
    let book = TariffBook::load(&root().join("fixtures/tariffs/daejeon.toml")).unwrap();
    let router = billing::master::http::routes(pool, &book, tokens);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

fn table_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Customers => "SELECT count(*) FROM billing.customers",
        Kind::Premises => "SELECT count(*) FROM billing.accounts",
        Kind::Meters => "SELECT count(*) FROM billing.meters",
        Kind::Installations => "SELECT count(*) FROM billing.meter_installations",
    }
}

struct Setup {
    billing_url: String,
    ingest_url: String,
    token_file: PathBuf,
    dir: PathBuf,
}

impl Setup {
    fn args(&self, kind: Kind, dry_run: bool, skip_bad: bool) -> ImportArgs {
        ImportArgs {
            kind,
            file: self.dir.join(file_name(kind)),
            mapping: Some(root().join("fixtures/import/korean.toml")),
            encoding: None,
            dry_run,
            skip_bad,
            billing_url: self.billing_url.clone(),
            ingest_url: Some(self.ingest_url.clone()),
            token_file: self.token_file.clone(),
            ingest_token_file: None,
        }
    }
}

async fn import_kind(s: &Setup, pool: &PgPool, export: &Export, kind: Kind) {
    let spoiled = export.spoiled_lines(kind);
    let good = export.good_rows(kind) as u64;
    let before = count(pool, table_of(kind)).await;
    let audits = count(pool, "SELECT count(*) FROM billing.audit_log").await;

    // The dry run: every spoiled row, nothing else, nothing written.
    let dry = run(&s.args(kind, true, false)).await.unwrap();
    assert_eq!(dry.format, "cp949", "{kind:?}");
    assert_eq!(
        dry.bad_lines(),
        spoiled,
        "{kind:?}: bad rows reported vs spoiled\n{}",
        dry.render()
    );
    assert_eq!(dry.billing.created, good, "{kind:?}\n{}", dry.render());
    assert!(!dry.written);
    assert_eq!(count(pool, table_of(kind)).await, before);
    let text = dry.render();
    assert!(text.contains("would be created"), "{text}");
    assert!(text.contains(", column "), "{text}");

    // Without --skip-bad, one bad row means nothing is written.
    let refused = run(&s.args(kind, false, false)).await.unwrap();
    assert!(!refused.written);
    assert_eq!(count(pool, table_of(kind)).await, before);
    assert_eq!(
        count(pool, "SELECT count(*) FROM billing.audit_log").await,
        audits
    );

    // With it: exactly the good rows, the skipped ones named.
    let real = run(&s.args(kind, false, true)).await.unwrap();
    assert!(real.written);
    assert_eq!(real.bad_lines(), spoiled, "{kind:?}");
    assert_eq!(
        (real.billing.created, real.billing.changed),
        (good, 0),
        "{kind:?}"
    );
    assert!(real.render().contains("skipped (bad rows)"));
    assert_eq!(count(pool, table_of(kind)).await, before + good as i64);
    assert_eq!(
        count(pool, "SELECT count(*) FROM billing.audit_log").await,
        audits + 1,
        "one audit record per import"
    );

    // Again: nothing changes.
    let again = run(&s.args(kind, false, true)).await.unwrap();
    assert_eq!(
        (
            again.billing.created,
            again.billing.changed,
            again.billing.unchanged
        ),
        (0, 0, good),
        "{kind:?}"
    );
    if kind == Kind::Meters {
        assert_eq!(again.ingest, Some([0, 0, good]));
    }
    assert_eq!(count(pool, table_of(kind)).await, before + good as i64);
}

#[tokio::test]
async fn a_utility_export_is_imported_once_checked_read_and_billed() {
    let tag = unique("ww_import_");
    let db = fresh_database(&tag).await;
    let gateway = "gw-001";
    let mut mqtt = ingest::MqttConfig::new(
        std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into()),
        format!("{tag}-ing"),
    );
    // Only this test publishes for gw-001 under this share.
    mqtt.subscription = format!("$share/{tag}/waterworks/v1/{gateway}/readings");
    let mut cfg = ingest::IngestConfig::new(&db, mqtt);
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    let token = TokenConfig::inline("importer", Role::Admin, ADMIN);
    cfg.tokens = vec![token.clone()];
    let ingest = ingest::Ingest::build(cfg).await.expect("ingest builds");
    let ingest_url = format!("http://{}", ingest.http_addr());
    let pool = ingest.pool();
    let stop = tokio_util::sync::CancellationToken::new();
    let ingest_task = tokio::spawn(ingest.run_until_stopped(stop.clone()));
    billing::migrate(&pool).await.unwrap();
    let tokens = Arc::new(ApiTokens::new(&[token]).unwrap());
    let billing_url = serve_master(pool.clone(), tokens).await;

    let dir = tempfile::tempdir().unwrap();
    let today = chrono::Utc::now()
        .with_timezone(&billing::period::kst())
        .date_naive();
    let export = write_export(dir.path(), 2_000, 1, today).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let s = Setup {
        billing_url,
        ingest_url: ingest_url.clone(),
        token_file,
        dir: dir.path().to_path_buf(),
    };
    // Every kind of bad row is there.
    let kinds: std::collections::BTreeSet<&str> = export.spoiled.iter().map(|s| s.what).collect();
    assert_eq!(kinds.len(), 9, "{kinds:?}");

    for kind in Kind::ALL {
        import_kind(&s, &pool, &export, kind).await;
    }
    assert_eq!(
        count(&pool, "SELECT count(*) FROM metering.meters").await,
        export.good_rows(Kind::Meters) as i64
    );
    // Names on the bills are the customers'.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM billing.accounts a JOIN billing.customers c USING (customer_id) \
              WHERE a.customer <> c.name"
        )
        .await,
        0
    );

    check_master(&pool, &s).await;
    read_and_bill(&pool, &export, gateway, &tag).await;

    stop.cancel();
    ingest_task.await.unwrap().unwrap();
    pool.close().await;
    let admin = waterworks::database::connect(&server_url(), 1)
        .await
        .unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {tag} WITH (FORCE)"))
        .execute(&admin)
        .await;
}

async fn check_master(pool: &PgPool, s: &Setup) {
    use waterworks::import::check::check_master;
    let clean = check_master(pool, 7).await.unwrap();
    assert!(clean.is_clean(), "{}", clean.render(10));

    let client = reqwest::Client::new();
    // A meter registered with ingest, installed nowhere; an imported meter
    // moved to another gateway in ingest only.
    let resp = client
        .put(format!("{}/api/v1/meters", s.ingest_url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"meters": [
            {"meter_id": "LOOSE-1", "gateway_id": "gw-009", "profile_id": "waterworks-sim-v1"},
            {"meter_id": "M0000002", "gateway_id": "gw-009", "profile_id": "waterworks-sim-v1"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // A premises without a meter; an installation of a meter ingest does not know.
    let premises = serde_json::json!({"premises": [{
        "account_no": "NEW-1", "customer_id": "C0000001", "address": "대전광역시 서구 1",
        "usage_type": "household", "diameter_mm": 15, "households": 1,
        "sewer_connected": true, "levy_exempt": false, "billing_group": "G9"}, {
        "account_no": "NEW-2", "customer_id": "C0000001", "address": "대전광역시 서구 2",
        "usage_type": "household", "diameter_mm": 15, "households": 1,
        "sewer_connected": true, "levy_exempt": false, "billing_group": "G9"}]});
    let resp = client
        .put(format!("{}/api/v1/master/premises", s.billing_url))
        .bearer_auth(ADMIN)
        .json(&premises)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .put(format!("{}/api/v1/master/installations", s.billing_url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"installations": [{
            "account_no": "NEW-2", "meter_id": "GHOST-1",
            "installed_at": "2024-01-01T00:00:00Z", "install_read_m3": "1.5"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let found = check_master(pool, 7).await.unwrap();
    let keys = |l: &[waterworks::import::check::Finding]| {
        l.iter().map(|f| f.key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&found.installed_unknown_to_ingest), vec!["GHOST-1"]);
    assert_eq!(keys(&found.registered_not_installed), vec!["LOOSE-1"]);
    assert_eq!(keys(&found.other_gateway), vec!["M0000002"]);
    assert_eq!(keys(&found.premises_without_meter), vec!["NEW-1"]);
    // Put M0000002 back where billing has it.
    let resp = client
        .put(format!("{}/api/v1/meters", s.ingest_url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"meters": [
            {"meter_id": "M0000002", "gateway_id": "gw-001", "profile_id": "waterworks-sim-v1"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Publishes two reads (start and end of last month) for every imported
/// meter of `gateway`, waits until ingest stored them, and bills group G1.
async fn read_and_bill(pool: &PgPool, export: &Export, gateway: &str, tag: &str) {
    use waterworks_wire::reading::{Reading, ReadingBatch};
    use waterworks_wire::{GatewayId, MeterId};
    let period = billing::Period::containing(chrono::Utc::now()).prev();
    let meters: Vec<&String> = export
        .installed_meters
        .iter()
        .filter(|(_, g)| g == gateway)
        .map(|(m, _)| m)
        .collect();
    assert!(meters.len() > 100);
    let at = |ts: chrono::DateTime<chrono::Utc>, litres: u64| {
        meters
            .iter()
            .map(|m| Reading {
                meter_id: MeterId::parse(m.as_str()).unwrap(),
                ts,
                volume_l: litres,
                flow_lph: None,
                alarms: vec![],
            })
            .collect::<Vec<_>>()
    };
    let gw = GatewayId::parse(gateway).unwrap();
    let batches = [
        ReadingBatch {
            gateway_id: gw.clone(),
            batch_seq: 1,
            readings: at(period.start_utc() + chrono::Duration::hours(1), 100_000),
        },
        ReadingBatch {
            gateway_id: gw.clone(),
            batch_seq: 2,
            readings: at(period.end_utc() - chrono::Duration::hours(1), 112_300),
        },
    ];
    let url = std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let url = url::Url::parse(&url).unwrap();
    let mut opts = rumqttc::MqttOptions::new(
        format!("{tag}-pub"),
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(1883),
    );
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for b in &batches {
        client
            .publish(
                waterworks_wire::topic::readings(&gw),
                rumqttc::QoS::AtLeastOnce,
                false,
                b.encode(),
            )
            .await
            .unwrap();
    }
    let want = 2 * meters.len() as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stored = count(pool, "SELECT count(*) FROM metering.readings").await;
        if stored >= want {
            assert_eq!(stored, want);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} of {want} readings stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = client.disconnect().await;
    poll.abort();
    assert_eq!(
        count(pool, "SELECT count(*) FROM metering.quarantine").await,
        0,
        "nothing quarantined"
    );

    let book = TariffBook::load(&root().join("fixtures/tariffs/daejeon.toml")).unwrap();
    let out = billing::run::run_billing(
        pool,
        &book,
        &billing::run::RunRequest {
            period,
            group: "G1".into(),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert!(out.bills_created > 0, "{out:?}");
    // Every G1 premises whose meter was read is billed its 12 m³.
    let read_g1: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.accounts a JOIN billing.meter_installations i USING (account_no) \
          WHERE a.billing_group = 'G1' AND i.removed_at IS NULL AND i.meter_id = ANY($1)",
    )
    .bind(meters.iter().map(|m| m.to_string()).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(read_g1 > 50, "{read_g1}");
    let billed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.bills b JOIN billing.meter_installations i USING (account_no) \
          WHERE b.period = $1 AND i.removed_at IS NULL AND i.meter_id = ANY($2) \
            AND b.usage_m3 = 12 AND NOT b.estimated",
    )
    .bind(period.to_string())
    .bind(meters.iter().map(|m| m.to_string()).collect::<Vec<_>>())
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(billed, read_g1);
}
