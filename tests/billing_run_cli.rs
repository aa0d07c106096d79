//! `waterworks billing run` as the binary a clerk or the CronJob runs
//! (issue 23, item 9): an unfinished month is refused before the database is
//! touched, `--period previous` bills the last month over in Korea, the
//! output is a summary a clerk reads (or `--json`), and a forced run keeps
//! its reason in the audit log.

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::Period;
use serde_json::Value;
use sqlx::PgPool;
use std::process::{Command, Output};

fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = pool.connect_options().get_database().unwrap().to_string();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{db}")
}

fn waterworks(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_waterworks"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env("USER", "clerk-kim")
        .output()
        .expect("run waterworks")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A migrated billing schema, three accounts of group A, and a stand-in for
/// ingest's `metering.period_reads_v1` giving each meter 26 m³ in any month
/// (readings continuous from one month to the next).
async fn seed(pool: &PgPool) {
    billing::migrate(pool).await.unwrap();
    waterworks_test_support::metering::stub_period_reads(
        pool,
        "SELECT m, period_start, k * 26500, period_end, (k + 1) * 26500, 2976::bigint \
             FROM unnest(ARRAY['CM1', 'CM2', 'CM3']) m, \
                  (SELECT (extract(year FROM period_start) * 12 + extract(month FROM period_start))::bigint) x(k)",
    )
    .await;
    let accounts: Vec<Account> = (1..=3)
        .map(|i| Account {
            account_no: format!("C{i}"),
            customer: format!("고객 {i}"),
            address: "대전광역시 서구".into(),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "A".into(),
            meters: vec![MeterInstallation {
                meter_id: format!("CM{i}"),
                installed_at: "2020-01-01T00:00:00Z".parse().unwrap(),
                removed_at: None,
            }],
        })
        .collect();
    upsert_accounts(pool, &accounts).await.unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_unfinished_month_is_refused_and_previous_is_billed_with_a_readable_summary(
    pool: PgPool,
) {
    seed(&pool).await;
    let url = database_url(&pool);
    let now = chrono::Utc::now();
    let current = Period::containing(now);
    let previous = Period::last_complete(now);
    let ends = current
        .end_utc()
        .with_timezone(&billing::period::kst())
        .format("%Y-%m-%d %H:%M")
        .to_string();

    // The report's case: this month, dry run. Refused, naming the period and
    // when it can run; a future month likewise.
    for period in [current, current.add_months(12)] {
        let out = waterworks(
            &url,
            &[
                "billing",
                "run",
                "--period",
                &period.to_string(),
                "--group",
                "A",
                "--dry-run",
            ],
        );
        assert!(
            !out.status.success(),
            "{period} was accepted: {}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("period {period} is not over")),
            "{err}"
        );
        assert!(err.contains("--force --reason"), "{err}");
        if period == current {
            assert!(err.contains(&ends), "{err} does not say when ({ends})");
        }
    }
    // --force needs --reason (clap refuses it before anything runs).
    let out = waterworks(
        &url,
        &[
            "billing",
            "run",
            "--period",
            &current.to_string(),
            "--group",
            "A",
            "--force",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--reason"),
        "{}",
        text(&out.stderr)
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "refused runs write nothing");

    // --period previous, dry, as JSON: stable field names, nothing written.
    let out = waterworks(
        &url,
        &[
            "billing",
            "run",
            "--period",
            "previous",
            "--group",
            "A",
            "--dry-run",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["period"], previous.to_string());
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["bills_created"], 3);
    assert_eq!(v["total_krw"], 3 * 29_460);
    assert_eq!(
        v["totals_by_component"]["water"].as_i64().map(|w| w > 0),
        Some(true)
    );
    assert!(
        v["first_bill_no"].is_null() && v["forced_reason"].is_null(),
        "{v}"
    );
    assert_eq!(v["ledger_entries"], 0);

    // The real run, as text: the summary a clerk reads, not a Debug dump.
    let out = waterworks(
        &url,
        &["billing", "run", "--period", "previous", "--group", "A"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(!summary.contains("RunOutcome"), "{summary}");
    for want in [
        format!("period {previous}, group A"),
        "billed                           3".to_string(),
        "held for review                  0".to_string(),
        "total                     88,380".to_string(),
        "bill numbers        1 to 3".to_string(),
        "ledger entries                   3".to_string(),
    ] {
        assert!(summary.contains(&want), "{want:?} missing from:\n{summary}");
    }

    // Forced with a reason: billed, the reason printed and audited.
    let reason = "year-end closing rehearsal";
    let out = waterworks(
        &url,
        &[
            "billing",
            "run",
            "--period",
            &current.to_string(),
            "--group",
            "A",
            "--force",
            "--reason",
            reason,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["forced_reason"], reason);
    assert_eq!(v["bills_created"], 3);
    assert_eq!(
        (v["first_bill_no"].as_i64(), v["last_bill_no"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(v["ledger_entries"], 3);
    let (actor, target, audited): (String, String, String) = sqlx::query_as(
        "SELECT actor, target, reason FROM billing.audit_log WHERE action = 'billing_run_forced'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, "cli:clerk-kim");
    assert_eq!(target, format!("run:{current}/A"));
    assert_eq!(audited, reason);
}
