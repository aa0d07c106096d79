//! Services that do not migrate at start (issue 23, item 3): ingest and
//! billing check that every migration of their build is applied and refuse to
//! start otherwise, with a message naming `waterworks migrate`; the check
//! catches a missing migration and one applied with other contents;
//! `waterworks migrate --check` says the same from the command line.

use sqlx::PgPool;
use std::path::PathBuf;
use std::process::Command;

fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = pool.connect_options().get_database().unwrap().to_string();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{db}")
}

fn ingest_config(url: &str) -> ingest::IngestConfig {
    let mut c = ingest::IngestConfig::new(
        url,
        ingest::MqttConfig::new("mqtt://127.0.0.1:1883", "schema-check-test"),
    );
    c.http_listen = "127.0.0.1:0".parse().unwrap();
    c.migrate_on_start = false;
    c
}

fn billing_config(url: &str) -> billing::BillingConfig {
    let mut c = billing::BillingConfig::new(
        url,
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/tariffs/daejeon.toml"),
    );
    c.http_listen = "127.0.0.1:0".parse().unwrap();
    c.migrate_on_start = false;
    c
}

#[sqlx::test(migrations = false)]
async fn services_refuse_an_unmigrated_schema_and_start_on_a_migrated_one(pool: PgPool) {
    let url = database_url(&pool);
    let err = match ingest::Ingest::build(ingest_config(&url)).await {
        Ok(_) => panic!("ingest started on an unmigrated database"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("schema metering is not migrated") && err.contains("waterworks migrate"),
        "{err}"
    );
    let err = match billing::Billing::build(billing_config(&url)).await {
        Ok(_) => panic!("billing started on an unmigrated database"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("schema billing is not migrated") && err.contains("waterworks migrate"),
        "{err}"
    );
    // The check changed nothing: no schema was created.
    let schemas: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('metering', 'billing')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(schemas, 0);

    // The command line: --check fails the same way, migrate applies, --check passes.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_waterworks"))
            .args(args)
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&["migrate", "--check"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not migrated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["migrate", "--schema", "metering"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["migrate", "--check", "--schema", "metering"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["migrate", "--check", "--schema", "billing"]);
    assert!(!out.status.success(), "billing is not migrated yet");
    let out = run(&["migrate", "--schema", "billing"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["migrate", "--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Both services start on the migrated schemas without migrating.
    let i = ingest::Ingest::build(ingest_config(&url))
        .await
        .expect("ingest starts on a migrated schema");
    let b = billing::Billing::build(billing_config(&url))
        .await
        .expect("billing starts on a migrated schema");
    drop((i, b));

    // A migration missing (an older database under a newer build) is named.
    let (version, checksum): (i64, Vec<u8>) = sqlx::query_as(
        "DELETE FROM billing._sqlx_migrations WHERE version = (SELECT max(version) FROM billing._sqlx_migrations) \
         RETURNING version, checksum",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let err = billing::check_schema(&pool).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("lacks migration(s) [{version}]"))
            && err.contains("waterworks migrate"),
        "{err}"
    );
    sqlx::query(
        "INSERT INTO billing._sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'restored by the test', true, $2, 0)",
    )
    .bind(version)
    .bind(&checksum)
    .execute(&pool)
    .await
    .unwrap();
    billing::check_schema(&pool).await.expect("whole again");

    // A migration applied with other contents than this build's is refused.
    sqlx::query("UPDATE billing._sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&pool)
        .await
        .unwrap();
    let err = billing::check_schema(&pool).await.unwrap_err().to_string();
    assert!(
        err.contains("migration 1") && err.contains("checksum differs"),
        "{err}"
    );
}
