//! The production role set-up against the real PostgreSQL (issue 23, item 3):
//! a fresh database and fresh roles unique to the test, made by
//! `deploy/k8s/base/postgres/roles.sql` with its names rewritten (as
//! deploy/test.sh does). The owner role migrates; the billing service's role
//! cannot rewrite, truncate, disable the triggers of or drop any ledger table,
//! cannot migrate, and still bills, posts and records payments through
//! billing's own code.

mod common;

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::ledger::PaymentRequest;
use billing::run::{run_billing_with, RunRequest, StaticReads};
use billing::tariff::TariffBook;
use billing::usage::{HoldPolicy, PeriodRead};
use billing::{Billing, BillingConfig, BillingError};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::path::PathBuf;
use std::str::FromStr;

/// The tables whose history must never change once written.
const LEDGER_TABLES: [&str; 4] = [
    "billing.journal_entries",
    "billing.postings",
    "billing.payments",
    "billing.audit_log",
];

fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    PgConnectOptions::from_str(&url)
        .expect("DATABASE_URL")
        .disable_statement_logging()
}

async fn pool_as(db: &str, user: Option<&str>) -> PgPool {
    let mut opts = server_options().database(db);
    if let Some(user) = user {
        // The local test server trusts local connections: roles.sql sets no
        // password (CloudNativePG sets them from Secrets).
        opts = opts.username(user);
    }
    PgPoolOptions::new()
        .max_connections(6)
        .connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("connect to {db} as {user:?}: {e}"))
}

/// roles.sql with the test's own role and database names.
fn roles_sql(prefix: &str, db: &str) -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/base/postgres/roles.sql");
    let sql = std::fs::read_to_string(&path).expect("roles.sql");
    let rewritten = ["svc_ingest", "svc_billing", "svc_backup", "svc_owner"]
        .iter()
        .fold(sql, |s, role| {
            s.replace(role, &format!("{prefix}_{}", &role[4..]))
        })
        .replace("DATABASE waterworks ", &format!("DATABASE \"{db}\" "));
    assert!(
        !rewritten.contains("svc_") && !rewritten.contains("DATABASE waterworks"),
        "a name in roles.sql escaped the rewrite"
    );
    rewritten
}

fn sqlstate(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string())
        .unwrap_or_default()
}

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn account(i: usize) -> Account {
    Account {
        account_no: format!("R{i:04}"),
        customer: format!("고객 {i}"),
        address: format!("대전광역시 중구 {i}"),
        usage_type: "household".into(),
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: "A".into(),
        meters: vec![MeterInstallation {
            meter_id: format!("RM{i:04}"),
            installed_at: ts("2026-01-01T00:00:00Z"),
            removed_at: None,
        }],
    }
}

fn october_reads(n: usize) -> Vec<PeriodRead> {
    (0..n)
        .map(|i| PeriodRead {
            meter_id: format!("RM{i:04}"),
            start_ts: ts("2026-09-30T15:00:00Z"),
            start_volume_l: 500_000,
            end_ts: ts("2026-10-31T14:45:00Z"),
            end_volume_l: 500_000 + (12 + i as i64) * 1000,
            reads: 2976,
        })
        .collect()
}

fn daejeon_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml")
}

#[tokio::test]
async fn the_service_role_cannot_rewrite_the_ledger_and_still_bills_and_posts() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("{:x}{:x}", std::process::id(), nanos % 0xffff_ffff);
    let prefix = format!("wwr{tag}");
    let db = format!("ww_test_roles_{tag}"); // scripts/test drops leftovers by this prefix
    let admin = pool_as("postgres", None).await;
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&admin)
        .await
        .unwrap();

    // The body runs on a thread of its own so that a failed assertion still
    // drops the test's database and roles.
    let body = {
        let (prefix, db) = (prefix.clone(), db.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(scenario(prefix, db))
        })
    };
    let result = tokio::task::spawn_blocking(move || body.join())
        .await
        .unwrap();

    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    for r in ["owner", "billing", "ingest", "backup"] {
        sqlx::query(&format!("DROP ROLE IF EXISTS \"{prefix}_{r}\""))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(prefix: String, db: String) {
    let owner = format!("{prefix}_owner");
    let service = format!("{prefix}_billing");
    let superuser = pool_as(&db, None).await;
    sqlx::raw_sql(&roles_sql(&prefix, &db))
        .execute(&superuser)
        .await
        .expect("roles.sql");
    let schema_owner: String = sqlx::query_scalar(
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing'",
    )
    .fetch_one(&superuser)
    .await
    .unwrap();
    assert_eq!(
        schema_owner, owner,
        "roles.sql gives schema billing to the owner role"
    );

    let svc = pool_as(&db, Some(&service)).await;
    let mut cfg = BillingConfig::new(&common::database_url_as(&db, &service), daejeon_path());
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.migrate_on_start = false;

    // Before any migration the service refuses to start, and says why.
    let err = match Billing::build(cfg.clone()).await {
        Ok(_) => panic!("the service started on an unmigrated schema"),
        Err(e) => e,
    };
    assert!(
        matches!(err, BillingError::Schema(_)) && err.to_string().contains("waterworks migrate"),
        "{err}"
    );
    // ... and its role cannot migrate (no CREATE on the database or schema).
    let err = billing::migrate(&svc).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    // The owner migrates.
    let own = pool_as(&db, Some(&owner)).await;
    billing::migrate(&own)
        .await
        .expect("migrate as the owner role");
    let not_owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'billing'::regnamespace \
           AND relowner <> $1::regrole",
    )
    .bind(&owner)
    .fetch_one(&superuser)
    .await
    .unwrap();
    assert_eq!(
        not_owned, 0,
        "every object of schema billing belongs to the owner"
    );

    // The service starts on the migrated schema (checking it, not migrating),
    // and bills and posts as its own role through billing's code.
    let service_app = Billing::build(cfg)
        .await
        .expect("service starts as its role");
    let accounts: Vec<Account> = (0..12).map(account).collect();
    upsert_accounts(&svc, &accounts)
        .await
        .expect("accounts as the service role");
    let book = TariffBook::load(&daejeon_path()).unwrap();
    let req = RunRequest {
        period: "2026-10".parse().unwrap(),
        group: "A".into(),
        dry_run: false,
    };
    let outcome = run_billing_with(
        &svc,
        &book,
        &req,
        &StaticReads(october_reads(12)),
        &HoldPolicy::default(),
    )
    .await
    .expect("a billing run as the service role");
    assert_eq!(outcome.bills_created, 12);
    assert!(outcome.total_krw > 0);
    let pay = PaymentRequest {
        reference: "ROLE-1".into(),
        account_no: "R0001".into(),
        amount_krw: 5_000,
        paid_on: NaiveDate::from_ymd_opt(2026, 11, 10).unwrap(),
    };
    billing::payments::record_payment(&svc, &pay, "clerk")
        .await
        .expect("a payment as the service role");
    let (entries, balance): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.journal_entries), \
                (SELECT sum(amount_krw)::bigint FROM billing.postings)",
    )
    .fetch_one(&svc)
    .await
    .unwrap();
    assert_eq!(entries, 13, "one entry per bill and one for the payment");
    assert_eq!(balance, Some(0), "the books balance");

    // What the service role may never do to the ledger: each is refused for
    // want of privilege (42501), before any trigger is reached.
    for table in LEDGER_TABLES {
        for sql in [
            format!("UPDATE {table} SET {c} = {c}", c = any_column(table)),
            format!("DELETE FROM {table}"),
            format!("TRUNCATE {table}"),
            format!("ALTER TABLE {table} DISABLE TRIGGER ALL"),
            format!("ALTER TABLE {table} DISABLE TRIGGER USER"),
            format!("ALTER TABLE {table} OWNER TO {service}"),
            format!("DROP TABLE {table}"),
            format!("DROP TABLE {table} CASCADE"),
        ] {
            let err = sqlx::query(&sql)
                .execute(&svc)
                .await
                .expect_err(&format!("{service} may not: {sql}"));
            assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
        }
    }
    for sql in [
        "DROP SCHEMA billing CASCADE",
        "ALTER SCHEMA billing RENAME TO old_billing",
        "CREATE TABLE billing.postings_copy (x int)",
        "DROP FUNCTION billing.refuse_change() CASCADE",
        "CREATE OR REPLACE FUNCTION billing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        "DROP TRIGGER postings_append_only ON billing.postings",
    ] {
        let err = sqlx::query(sql)
            .execute(&svc)
            .await
            .expect_err(&format!("{service} may not: {sql}"));
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }

    // The control: the owner *can* disable a trigger (inside a transaction
    // rolled back here), which is why the service must not be the owner.
    {
        let mut tx = own.begin().await.unwrap();
        sqlx::query("ALTER TABLE billing.postings DISABLE TRIGGER postings_append_only")
            .execute(&mut *tx)
            .await
            .expect("the owner may alter its table");
        tx.rollback().await.unwrap();
    }

    // Nothing was changed by the attempts: the books are as they were.
    let after: (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.journal_entries), \
                (SELECT sum(amount_krw)::bigint FROM billing.postings)",
    )
    .fetch_one(&svc)
    .await
    .unwrap();
    assert_eq!(after, (13, Some(0)));
    drop(service_app);
    svc.close().await;
    own.close().await;
    superuser.close().await;
}

/// A column every row of `table` has (the UPDATE only needs to name one).
fn any_column(table: &str) -> &'static str {
    match table {
        "billing.journal_entries" => "memo",
        "billing.postings" => "amount_krw",
        "billing.payments" => "amount_krw",
        "billing.audit_log" => "actor",
        _ => unreachable!("a ledger table"),
    }
}
