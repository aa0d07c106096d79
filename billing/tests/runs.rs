//! Billing runs against real PostgreSQL: a fresh database per test
//! (`#[sqlx::test]`), real billing tables, reads from a [`StaticReads`] loader
//! or from a stand-in `metering.period_reads_v1` created in the test database.

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::run::{run_billing, run_billing_chunked, run_billing_with, RunRequest, StaticReads};
use billing::tariff::TariffBook;
use billing::usage::{HoldPolicy, PeriodRead};
use billing::{migrate, Period};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::path::PathBuf;

fn daejeon() -> TariffBook {
    TariffBook::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    )
    .unwrap()
}

fn ts(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn account(i: usize, group: &str) -> Account {
    Account {
        account_no: format!("AC{i:05}"),
        customer: format!("고객 {i}"),
        address: format!("대전광역시 서구 {i}"),
        usage_type: if i % 5 == 0 {
            "general".into()
        } else {
            "household".into()
        },
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: group.into(),
        meters: vec![MeterInstallation {
            meter_id: format!("M{i:05}"),
            installed_at: ts("2026-01-01T00:00:00Z"),
            removed_at: None,
        }],
    }
}

/// Meter i uses (10 + i) m³ and a few hundred litres in October 2026.
fn october_reads(n: usize) -> Vec<PeriodRead> {
    (0..n)
        .map(|i| PeriodRead {
            meter_id: format!("M{i:05}"),
            start_ts: ts("2026-09-30T15:00:00Z"),
            start_volume_l: 1_000_000 + i as i64 * 7,
            end_ts: ts("2026-10-31T14:45:00Z"),
            end_volume_l: 1_000_000 + i as i64 * 7 + (10 + i as i64) * 1000 + 300,
            reads: 2976,
        })
        .collect()
}

fn oct() -> Period {
    "2026-10".parse().unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_run_bills_every_account_once_with_gapless_numbers(pool: PgPool) {
    migrate(&pool).await.unwrap();
    migrate(&pool).await.unwrap(); // idempotent
    let accounts: Vec<Account> = (0..50)
        .map(|i| account(i, if i < 40 { "A" } else { "B" }))
        .collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    let book = daejeon();
    let reads = StaticReads(october_reads(50));
    let policy = HoldPolicy::default();

    // Dry run: a preview, nothing written.
    let req = RunRequest {
        period: oct(),
        group: "A".into(),
        dry_run: true,
    };
    let dry = run_billing_with(&pool, &book, &req, &reads, &policy)
        .await
        .unwrap();
    assert_eq!(
        (dry.run_id, dry.accounts, dry.bills_created),
        (None, 40, 40)
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.bills")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    let req = RunRequest {
        dry_run: false,
        ..req
    };
    let first = run_billing_with(&pool, &book, &req, &reads, &policy)
        .await
        .unwrap();
    assert!(first.run_id.is_some());
    assert_eq!(
        (first.bills_created, first.bills_existing, first.held),
        (40, 0, 0)
    );
    // The preview matched what was committed.
    assert_eq!(dry.total_krw, first.total_krw);
    assert_eq!(dry.totals_by_component, first.totals_by_component);
    // Usage: sum over i < 40 of (10 + i) m³; the 300 L remainders carry over.
    assert_eq!(first.usage_m3, (0..40).map(|i| 10 + i).sum::<i64>());
    // Household 10 m³ (account 1 → 11 m³): 11 × 510 + 11 × 420 + 860 + 11 × 170 = 12,960.
    let total: i64 =
        sqlx::query_scalar("SELECT total_krw FROM billing.bills WHERE account_no = 'AC00001'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(total, 11 * 510 + 11 * 420 + 860 + 11 * 170);

    // Re-running the committed period creates nothing.
    let again = run_billing_with(&pool, &book, &req, &reads, &policy)
        .await
        .unwrap();
    assert_eq!((again.bills_created, again.bills_existing), (0, 40));
    assert_eq!(again.run_id, first.run_id);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM billing.runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);

    // Group B continues the period's numbering without a gap.
    let b = run_billing_with(
        &pool,
        &book,
        &RunRequest {
            group: "B".into(),
            ..req.clone()
        },
        &reads,
        &policy,
    )
    .await
    .unwrap();
    assert_eq!(b.bills_created, 10);
    let (count, min, max): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(bill_no), max(bill_no) FROM billing.bills WHERE period = '2026-10'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((count, min, max), (50, Some(1), Some(50)));

    // Every bill's lines explain themselves and sum to its total.
    let lines: serde_json::Value =
        sqlx::query_scalar("SELECT lines FROM billing.bills WHERE account_no = 'AC00005'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(lines[0]["explanation"]["tariff_version"], "2023-07");
    assert_eq!(
        lines[0]["explanation"]["blocks"][0]["usage_type"],
        "general"
    );
}

#[sqlx::test(migrations = false)]
async fn november_continues_from_octobers_end_reads_and_holds_outliers(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let accounts: Vec<Account> = (0..3).map(|i| account(i, "A")).collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    let book = daejeon();
    let policy = HoldPolicy::default();
    let req = RunRequest {
        period: oct(),
        group: "A".into(),
        dry_run: false,
    };
    let oct_reads = october_reads(3);
    run_billing_with(&pool, &book, &req, &StaticReads(oct_reads.clone()), &policy)
        .await
        .unwrap();

    // November: meter 0 normal (+12.9 m³ from October's end), meter 1 silent
    // (estimated), meter 2 jumps tenfold (held).
    let nov: Period = "2026-11".parse().unwrap();
    let mut reads = Vec::new();
    let end0 = oct_reads[0].end_volume_l;
    reads.push(PeriodRead {
        meter_id: "M00000".into(),
        start_ts: oct_reads[0].end_ts,
        start_volume_l: end0,
        end_ts: ts("2026-11-30T14:45:00Z"),
        end_volume_l: end0 + 12_900,
        reads: 2880,
    });
    let end2 = oct_reads[2].end_volume_l;
    reads.push(PeriodRead {
        meter_id: "M00002".into(),
        start_ts: oct_reads[2].end_ts,
        start_volume_l: end2,
        end_ts: ts("2026-11-30T14:45:00Z"),
        end_volume_l: end2 + 120_000,
        reads: 2880,
    });
    let out = run_billing_with(
        &pool,
        &book,
        &RunRequest { period: nov, ..req },
        &StaticReads(reads),
        &policy,
    )
    .await
    .unwrap();
    assert_eq!((out.bills_created, out.held, out.estimated), (2, 1, 1));
    assert_eq!(out.holds[0].account_no, "AC00002");
    // Meter 0: October ended at …,300 L past a whole m³; 300 + 12,900 = 13,200 → 13 m³.
    let usage: Vec<(String, i64, bool, String, Option<i64>)> = sqlx::query_as(
        "SELECT account_no, usage_m3, estimated, status, bill_no FROM billing.bills WHERE period = '2026-11' ORDER BY account_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        usage[0],
        ("AC00000".into(), 13, false, "issued".into(), Some(1))
    );
    // Meter 1: 11 m³ in October's 31 days → 11/31 × 30 = 10.6 → 10 m³ estimated.
    assert_eq!(
        usage[1],
        ("AC00001".into(), 10, true, "issued".into(), Some(2))
    );
    assert_eq!((usage[2].3.as_str(), usage[2].4), ("held", None));

    // The clerk reviews and releases the held bill: it takes the next number.
    let id: i64 = sqlx::query_scalar(
        "SELECT bill_id FROM billing.bills WHERE period = '2026-11' AND account_no = 'AC00002'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(billing::run::release_held(&pool, id).await.unwrap(), 3);
    assert!(matches!(
        billing::run::release_held(&pool, id).await,
        Err(billing::BillingError::Release(
            billing::run::ReleaseError::NotHeld(_)
        ))
    ));
}

#[sqlx::test(migrations = false)]
async fn run_billing_reads_through_period_reads_v1(pool: PgPool) {
    migrate(&pool).await.unwrap();
    // Stand-in for ingest's function, created only in this fresh test database,
    // with the contract's exact signature.
    waterworks_test_support::metering::stub_period_reads(
        &pool,
        "SELECT 'M00001'::text, period_start, 5000::bigint, period_end - interval '15 minutes', 31999::bigint, 2976::bigint",
    )
    .await;
    upsert_accounts(&pool, &[account(1, "A")]).await.unwrap();
    let req = RunRequest {
        period: oct(),
        group: "A".into(),
        dry_run: false,
    };
    let out = run_billing(&pool, &daejeon(), &req).await.unwrap();
    // trunc(31.999) − trunc(5.000) = 26 m³ → the 29,460 KRW household bill.
    assert_eq!(
        (out.bills_created, out.usage_m3, out.total_krw),
        (1, 26, 29_460)
    );
}

#[sqlx::test(migrations = false)]
async fn an_interrupted_run_is_resumed_not_duplicated(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let accounts: Vec<Account> = (0..10).map(|i| account(i, "A")).collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    // Simulate a crash after a committed chunk: a `running` run holding bills
    // for some accounts (inserted by a first run restricted to 4 meters' reads
    // is not the same thing, so write the state by hand).
    let book = daejeon();
    let policy = HoldPolicy::default();
    let req = RunRequest {
        period: oct(),
        group: "A".into(),
        dry_run: false,
    };
    let first = run_billing_with(&pool, &book, &req, &StaticReads(october_reads(10)), &policy)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.bills WHERE account_no >= 'AC00006'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE billing.period_counters SET last_bill_no = 6")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE billing.runs SET status = 'running', finished_at = NULL")
        .execute(&pool)
        .await
        .unwrap();

    let resumed = run_billing_with(&pool, &book, &req, &StaticReads(october_reads(10)), &policy)
        .await
        .unwrap();
    assert_eq!(resumed.run_id, first.run_id);
    assert_eq!((resumed.bills_created, resumed.bills_existing), (4, 6));
    let (count, max, status): (i64, Option<i64>, String) = sqlx::query_as(
        "SELECT count(*), max(bill_no), (SELECT status FROM billing.runs) FROM billing.bills",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((count, max, status.as_str()), (10, Some(10), "committed"));
}

#[sqlx::test(migrations = false)]
async fn an_estimate_is_trued_up_once_across_months(pool: PgPool) {
    migrate(&pool).await.unwrap();
    upsert_accounts(&pool, &[account(1, "A")]).await.unwrap();
    let book = daejeon();
    let policy = HoldPolicy {
        min_avg_m3: 1_000,
        ..HoldPolicy::default()
    }; // no ratio holds here
    let month = |p: &str, reads: Vec<(i64, i64)>| {
        let period: Period = p.parse().unwrap();
        let reads = reads
            .into_iter()
            .map(|(start, end)| PeriodRead {
                meter_id: "M00001".into(),
                start_ts: period.start_utc(),
                start_volume_l: start,
                end_ts: period.end_utc(),
                end_volume_l: end,
                reads: 2880,
            })
            .collect();
        (
            RunRequest {
                period,
                group: "A".into(),
                dry_run: false,
            },
            StaticReads(reads),
        )
    };
    let mut billed = Vec::new();
    for (p, reads) in [
        ("2026-09", vec![(0, 10_000)]),      // 10 m³ actual
        ("2026-10", vec![]),                 // silent: 10 / 30 × 31 = 10.3 → 10 estimated
        ("2026-11", vec![(10_000, 35_000)]), // 25 measured − 10 estimated = 15
        ("2026-12", vec![(35_000, 45_000)]), // 10: the estimate is not subtracted twice
    ] {
        let (req, reads) = month(p, reads);
        let out = run_billing_with(&pool, &book, &req, &reads, &policy)
            .await
            .unwrap();
        assert_eq!(out.bills_created, 1, "{p}: {out:?}");
        billed.push(out.usage_m3);
    }
    assert_eq!(billed, vec![10, 10, 15, 10]);
    // Over the four months exactly the 45 m³ the meter measured were billed.
    assert_eq!(billed.iter().sum::<i64>(), 45);
}

/// A synthetic tariff (NOT a real city's) that grants leak relief.
const LEAKY: &str = r#"
city = "testville"
name = "Testville (synthetic)"
usage_rule = "truncate_each_read"

[[version]]
id = "t1"
applies_from = "usage"
split = "prorate_days"
rounding = { water = "truncate_1", sewer = "truncate_1", base = "truncate_1", levy = "truncate_1" }
water = { household = [{ from_m3 = 1, rate_krw = 500 }] }
sewer = { household = [{ from_m3 = 1, rate_krw = 400 }] }
base_krw = { 15 = 1000 }
levy = { rate_krw_per_m3 = "170" }
leak_relief = { waived_percent = "50" }
"#;

#[sqlx::test(migrations = false)]
async fn approved_leak_relief_waives_half_the_excess(pool: PgPool) {
    migrate(&pool).await.unwrap();
    upsert_accounts(&pool, &[account(1, "A"), account(2, "A")])
        .await
        .unwrap();
    let book = TariffBook::from_toml(LEAKY, "leaky.toml").unwrap();
    let policy = HoldPolicy {
        min_avg_m3: 1_000,
        ..HoldPolicy::default()
    };
    let read = |p: &Period, m: &str, start: i64, end: i64| PeriodRead {
        meter_id: m.into(),
        start_ts: p.start_utc(),
        start_volume_l: start,
        end_ts: p.end_utc(),
        end_volume_l: end,
        reads: 2880,
    };
    let sep: Period = "2026-09".parse().unwrap();
    let reads = StaticReads(vec![
        read(&sep, "M00001", 0, 10_000),
        read(&sep, "M00002", 0, 10_000),
    ]);
    let req = RunRequest {
        period: sep,
        group: "A".into(),
        dry_run: false,
    };
    run_billing_with(&pool, &book, &req, &reads, &policy)
        .await
        .unwrap();

    // October: both use 50 m³ (a leak); only account 1 has relief approved.
    assert!(
        billing::accounts::approve_leak_relief(&pool, "AC00001", &oct(), "clerk-1")
            .await
            .unwrap()
    );
    let reads = StaticReads(vec![
        read(&oct(), "M00001", 10_000, 60_000),
        read(&oct(), "M00002", 10_000, 60_000),
    ]);
    let req = RunRequest {
        period: oct(),
        ..req
    };
    run_billing_with(&pool, &book, &req, &reads, &policy)
        .await
        .unwrap();
    let water: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT account_no, usage_m3, water_krw FROM billing.bills WHERE period = '2026-10' ORDER BY account_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // Prior average 10 m³, 40 above it, half waived: water on 30 m³ = 15,000;
    // usage itself (what the meter measured) stays 50.
    assert_eq!(water[0], ("AC00001".into(), 50, 15_000));
    assert_eq!(water[1], ("AC00002".into(), 50, 25_000));
}

/// Bills, their numbers and their ledger entries agree: numbers 1..n without
/// gaps, every issued bill has exactly its one entry, the ledger nets to zero.
async fn numbers_and_entries(pool: &PgPool) -> (i64, Option<i64>) {
    let (count, max, distinct): (i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), max(bill_no), count(DISTINCT bill_no) FROM billing.bills WHERE status = 'issued'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((Some(count), distinct), (max.or(Some(0)), count), "gapless");
    let (entries, unposted, net): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM billing.journal_entries), \
                (SELECT count(*) FROM billing.bills b WHERE NOT EXISTS \
                   (SELECT 1 FROM billing.journal_entries e WHERE e.idem_key = 'bill:' || b.bill_id)), \
                (SELECT sum(amount_krw)::int8 FROM billing.postings)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((entries, unposted, net.unwrap_or(0)), (count, 0, 0));
    (count, max)
}

#[sqlx::test(migrations = false)]
async fn pipelined_chunks_keep_numbers_gapless_and_a_failed_chunk_leaves_whole_chunks(
    pool: PgPool,
) {
    migrate(&pool).await.unwrap();
    // The pipeline needs connections besides the run's own.
    assert!(pool.options().get_max_connections() > billing::run::CHUNKS_IN_FLIGHT as u32);
    let accounts: Vec<Account> = (0..23).map(|i| account(i, "A")).collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    let book = daejeon();
    let policy = HoldPolicy::default();
    let req = RunRequest {
        period: oct(),
        group: "A".into(),
        dry_run: false,
    };
    let reads = StaticReads(october_reads(23));
    // The second postings COPY of the run fails (whichever chunk's it is):
    // chunks in flight roll back, committed chunks stay whole.
    for sql in [
        "CREATE SEQUENCE public.copies",
        "CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF nextval('public.copies') = 2 THEN RAISE EXCEPTION 'injected crash'; END IF; \
         RETURN NULL; END $$",
        "CREATE TRIGGER crash BEFORE INSERT ON billing.postings \
         FOR EACH STATEMENT EXECUTE FUNCTION public.crash()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let err = run_billing_chunked(&pool, &book, &req, &reads, &policy, 5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    let (count, _) = numbers_and_entries(&pool).await;
    assert!(count % 5 == 0 && count <= 5, "whole chunks only: {count}");
    sqlx::query("DROP TRIGGER crash ON billing.postings")
        .execute(&pool)
        .await
        .unwrap();

    // Resumed in chunks of 5 (5 chunks through the pipeline): every account
    // once, numbers 1..23, each bill posted once.
    let out = run_billing_chunked(&pool, &book, &req, &reads, &policy, 5)
        .await
        .unwrap();
    assert_eq!(
        (out.bills_created + out.bills_existing, out.bills_existing),
        (23, count as u64)
    );
    assert_eq!(numbers_and_entries(&pool).await, (23, Some(23)));
    // And a re-run creates nothing.
    let again = run_billing_chunked(&pool, &book, &req, &reads, &policy, 5)
        .await
        .unwrap();
    assert_eq!((again.bills_created, again.bills_existing), (0, 23));
    assert_eq!(numbers_and_entries(&pool).await, (23, Some(23)));
}

#[sqlx::test(migrations = false)]
async fn a_bill_released_while_chunks_are_in_flight_takes_its_number_and_the_run_renumbers(
    pool: PgPool,
) {
    migrate(&pool).await.unwrap();
    let mut accounts: Vec<Account> = (0..12).map(|i| account(i, "A")).collect();
    accounts.push(account(100, "B"));
    upsert_accounts(&pool, &accounts).await.unwrap();
    let book = daejeon();
    let policy = HoldPolicy::default();
    // Group B's only account sent nothing and has no history: held.
    let b = RunRequest {
        period: oct(),
        group: "B".into(),
        dry_run: false,
    };
    let out = run_billing_with(&pool, &book, &b, &StaticReads(Vec::new()), &policy)
        .await
        .unwrap();
    assert_eq!(out.held, 1);
    let held: i64 = sqlx::query_scalar("SELECT bill_id FROM billing.bills WHERE status = 'held'")
        .fetch_one(&pool)
        .await
        .unwrap();
    // Group A's first chunk (numbers 1..4) stalls just before writing bill 1.
    for sql in [
        "CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.bill_no = 1 THEN PERFORM pg_sleep(2); END IF; RETURN NEW; END $$",
        "CREATE TRIGGER stall BEFORE INSERT ON billing.bills \
         FOR EACH ROW EXECUTE FUNCTION public.stall()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let run = {
        let (pool, book, policy) = (pool.clone(), book.clone(), policy.clone());
        tokio::spawn(async move {
            let a = RunRequest {
                period: oct(),
                group: "A".into(),
                dry_run: false,
            };
            run_billing_chunked(
                &pool,
                &book,
                &a,
                &StaticReads(october_reads(12)),
                &policy,
                4,
            )
            .await
        })
    };
    let mut stalled = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            stalled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stalled, "the first chunk never reached bill 1");
    // A clerk releases the held bill meanwhile: it takes number 1.
    assert_eq!(billing::run::release_held(&pool, held).await.unwrap(), 1);
    let out = run.await.unwrap().unwrap();
    assert_eq!(out.bills_created, 12);
    // Group A's bills were renumbered after it: 2..13, no gap, each posted once.
    assert_eq!(numbers_and_entries(&pool).await, (13, Some(13)));
    let first_a: Option<i64> = sqlx::query_scalar(
        "SELECT min(bill_no) FROM billing.bills b JOIN billing.accounts a USING (account_no) \
          WHERE a.billing_group = 'A'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(first_a, Some(2));
}
