//! The ledger against real PostgreSQL (a fresh database per test) and against
//! its in-memory model (`model/`, test code only): append-only enforcement,
//! bills posted with their run, payments and bank files, corrections, reports,
//! and generated histories.

mod model;

use billing::accounts::{upsert_accounts, Account, MeterInstallation};
use billing::corrections::{adjust_bill, cancel_bill, rebill, AdjustmentRequest, RebillRequest};
use billing::ledger::{
    store, BillAmounts, LedgerAccount, LedgerError, Part, PaymentRequest, Source,
};
use billing::payments::{import_bank_file, record_payment};
use billing::reports::{ageing, arrears, run_summary, trial_balance};
use billing::run::{run_billing_with, RunRequest, StaticReads};
use billing::tariff::TariffBook;
use billing::usage::{HoldPolicy, PeriodRead};
use billing::{migrate, BillingError, Period};
use chrono::NaiveDate;
use model::Ledger;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn daejeon() -> TariffBook {
    TariffBook::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    )
    .unwrap()
}

/// Never holds a bill: these tests are about money, not review.
fn no_holds() -> HoldPolicy {
    HoldPolicy {
        high_ratio: rust_decimal::Decimal::from(1_000_000),
        low_ratio: rust_decimal::Decimal::ZERO,
        min_avg_m3: i64::MAX,
    }
}

fn account(no: &str, group: &str, general: bool) -> Account {
    Account {
        account_no: no.into(),
        customer: format!("고객 {no}"),
        address: format!("대전광역시 서구 {no}"),
        usage_type: if general { "general" } else { "household" }.into(),
        diameter_mm: 15,
        households: 1,
        sewer_connected: true,
        levy_exempt: false,
        billing_group: group.into(),
        meters: vec![MeterInstallation {
            meter_id: format!("M-{no}"),
            installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            removed_at: None,
        }],
    }
}

fn read(no: &str, period: Period, start_l: i64, used_l: i64) -> PeriodRead {
    PeriodRead {
        meter_id: format!("M-{no}"),
        start_ts: period.start_utc(),
        start_volume_l: start_l,
        end_ts: period.end_utc() - chrono::Duration::minutes(15),
        end_volume_l: start_l + used_l,
        reads: 2976,
    }
}

fn p(s: &str) -> Period {
    s.parse().unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

async fn run(pool: &PgPool, book: &TariffBook, period: &str, group: &str, reads: &[PeriodRead]) {
    let req = RunRequest {
        period: p(period),
        group: group.into(),
        dry_run: false,
    };
    run_billing_with(pool, book, &req, &StaticReads(reads.to_vec()), &no_holds())
        .await
        .unwrap();
}

async fn bill_of(pool: &PgPool, account_no: &str, period: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT bill_id, total_krw FROM billing.bills \
          WHERE account_no = $1 AND period = $2 AND status = 'issued'",
    )
    .bind(account_no)
    .bind(period)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Receivables control account = sum of open bill balances, and every bill
/// without its entry is none.
async fn assert_books_sound(pool: &PgPool) {
    let tb = trial_balance(pool).await.unwrap();
    assert_eq!(tb.net_krw, 0);
    let open: i64 = count(
        pool,
        "SELECT coalesce(sum(o), 0)::int8 FROM (SELECT sum(amount_krw) AS o FROM billing.postings \
          WHERE ledger_account = '1100' GROUP BY bill_id) x",
    )
    .await;
    assert_eq!(tb.balance(LedgerAccount::Receivable), open);
    let unposted = count(
        pool,
        "SELECT count(*) FROM billing.bills b WHERE status IN ('issued', 'cancelled') AND NOT EXISTS \
           (SELECT 1 FROM billing.journal_entries e WHERE e.idem_key = 'bill:' || b.bill_id)",
    )
    .await;
    assert_eq!(unposted, 0, "an issued bill without its entry");
    let cancelled_open = count(
        pool,
        "SELECT count(*) FROM (SELECT p.bill_id FROM billing.postings p JOIN billing.bills b USING (bill_id) \
          WHERE b.status = 'cancelled' AND p.ledger_account = '1100' GROUP BY p.bill_id \
         HAVING sum(p.amount_krw) <> 0) x",
    )
    .await;
    assert_eq!(cancelled_open, 0);
}

#[sqlx::test(migrations = false)]
async fn postings_cannot_be_updated_or_deleted_through_the_service_role(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    upsert_accounts(&pool, &[account("A1", "A", false)])
        .await
        .unwrap();
    run(
        &pool,
        &book,
        "2026-10",
        "A",
        &[read("A1", p("2026-10"), 0, 20_000)],
    )
    .await;
    assert!(count(&pool, "SELECT count(*) FROM billing.postings").await > 0);

    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET ROLE waterworks_billing")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The role works: it reads and appends (a payment is posted through it).
    let pay = PaymentRequest {
        reference: "R-1".into(),
        account_no: "A1".into(),
        amount_krw: 1_000,
        paid_on: day("2026-11-10"),
    };
    {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        billing::payments::record_payment_in(&mut tx, &pay, "test", "clerk")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    for sql in [
        "UPDATE billing.postings SET amount_krw = amount_krw + 1",
        "DELETE FROM billing.postings",
        "TRUNCATE billing.postings",
        "UPDATE billing.journal_entries SET memo = 'x'",
        "DELETE FROM billing.journal_entries",
        "TRUNCATE billing.journal_entries",
        "DELETE FROM billing.payments",
        "UPDATE billing.audit_log SET actor = 'someone else'",
    ] {
        let err = sqlx::query(sql).execute(&mut *conn).await.unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{sql}: {err}");
    }
    // An unbalanced entry is refused even to an appending role.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO billing.journal_entries (source, idem_key, content_hash, effective_on, created_by) \
         VALUES ('adjustment', 'bad', 'x', '2026-11-01', 't') RETURNING entry_id",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let err = sqlx::query(
        "INSERT INTO billing.postings (entry_id, ledger_account, amount_krw) VALUES ($1, '1010', 5)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not balance"), "{err}");
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();

    // Even the owner (a superuser here) meets the triggers.
    for sql in [
        "UPDATE billing.postings SET amount_krw = amount_krw + 1",
        "DELETE FROM billing.postings",
        "TRUNCATE billing.postings",
        "DELETE FROM billing.journal_entries",
    ] {
        let err = sqlx::query(sql).execute(&mut *conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_books_sound(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn a_run_posts_each_bill_in_its_transaction_and_a_crash_leaves_neither(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    let accounts: Vec<Account> = (0..5)
        .map(|i| account(&format!("A{i}"), "A", i == 4))
        .collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    let reads: Vec<PeriodRead> = (0..5)
        .map(|i| read(&format!("A{i}"), p("2026-10"), 1_000, 10_000 + i * 3_000))
        .collect();
    // A crash while posting (injected in this test database only).
    sqlx::query(
        "CREATE FUNCTION public.crash() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'injected crash'; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER crash BEFORE INSERT ON billing.postings \
         FOR EACH STATEMENT EXECUTE FUNCTION public.crash()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let req = RunRequest {
        period: p("2026-10"),
        group: "A".into(),
        dry_run: false,
    };
    let err = run_billing_with(&pool, &book, &req, &StaticReads(reads.clone()), &no_holds())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    assert_eq!(count(&pool, "SELECT count(*) FROM billing.bills").await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM billing.journal_entries").await,
        0
    );
    sqlx::query("DROP TRIGGER crash ON billing.postings")
        .execute(&pool)
        .await
        .unwrap();

    // The resumed run issues and posts every bill, numbers from 1.
    let out = run_billing_with(&pool, &book, &req, &StaticReads(reads), &no_holds())
        .await
        .unwrap();
    assert_eq!(out.bills_created, 5);
    assert_eq!(
        count(&pool, "SELECT min(bill_no) FROM billing.bills").await,
        1
    );
    assert_books_sound(&pool).await;
    let tb = trial_balance(&pool).await.unwrap();
    assert_eq!(tb.balance(LedgerAccount::Receivable), out.total_krw);
    let c = &out.totals_by_component;
    assert_eq!(-tb.balance(LedgerAccount::WaterRevenue), c["water"]);
    assert_eq!(-tb.balance(LedgerAccount::BaseRevenue), c["base"]);
    assert_eq!(-tb.balance(LedgerAccount::SewerRevenue), c["sewer"]);
    assert_eq!(-tb.balance(LedgerAccount::LevyPayable), c["levy"]);
    // The run summary agrees with the run.
    let s = run_summary(&pool, &p("2026-10"), Some("A")).await.unwrap();
    assert_eq!((s.issued, s.totals.accounts), (5, 5));
    assert_eq!(s.totals.total_krw, out.total_krw);
    assert_eq!(s.totals.usage_m3, out.usage_m3);
    assert_eq!(s.by_usage_type.len(), 2);
    assert!(s
        .to_csv()
        .starts_with("usage_type,accounts,usage_m3,water_krw"));
}

#[sqlx::test(migrations = false)]
async fn a_bank_file_posts_good_lines_once_and_names_each_bad_line(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    let accounts: Vec<Account> = (0..3)
        .map(|i| account(&format!("A{i}"), "A", false))
        .collect();
    upsert_accounts(&pool, &accounts).await.unwrap();
    let reads: Vec<PeriodRead> = (0..3)
        .map(|i| read(&format!("A{i}"), p("2026-10"), 0, 10_000))
        .collect();
    run(&pool, &book, "2026-10", "A", &reads).await;
    let (_, total) = bill_of(&pool, "A0", "2026-10").await;
    let file = format!(
        "# KB collection file 2026-11-20\n\
         reference,account_no,amount_krw,paid_on\n\
         KB-0001,A0,{total},2026-11-20\n\
         KB-0002,A1,5000,2026-11-20\n\
         KB-0003,A2,{over},2026-11-21\n\
         KB-0004,NOBODY,100,2026-11-21\n\
         KB-0005,A1,1O0,2026-11-21\n\
         KB-0006,A1,100,2026-11-31\n\
         KB-0002,A1,5000,2026-11-20\n\
         KB-0008,A1,100\n",
        over = total + 2_500
    );
    let first = import_bank_file(&pool, &file, "clerk-1").await.unwrap();
    assert_eq!(
        (first.lines, first.posted, first.already_recorded),
        (8, 3, 0)
    );
    assert_eq!(first.posted_krw, total + 5_000 + total + 2_500);
    let bad: Vec<(usize, &str)> = first
        .errors
        .iter()
        .map(|e| (e.line, e.reason.as_str()))
        .collect();
    assert_eq!(bad.len(), 5, "{bad:?}");
    assert_eq!(bad[0].0, 6);
    assert!(bad[0].1.contains("unknown account"));
    assert_eq!(bad[1].0, 7);
    assert!(bad[1].1.contains("amount_krw"));
    assert_eq!(bad[2].0, 8);
    assert!(bad[2].1.contains("paid_on"));
    assert_eq!(bad[3].0, 9);
    assert!(bad[3].1.contains("earlier in this file"));
    assert_eq!(bad[4].0, 10);
    assert!(bad[4].1.contains("4 comma-separated"));
    let entries = "SELECT count(*) FROM billing.journal_entries WHERE source = 'payment'";
    assert_eq!(count(&pool, entries).await, 3);

    // Importing the same file again posts nothing and reports the same lines.
    let again = import_bank_file(&pool, &file, "clerk-1").await.unwrap();
    assert_eq!((again.posted, again.already_recorded), (0, 3));
    assert_eq!(again.errors, first.errors);
    assert_eq!(count(&pool, entries).await, 3);
    // A reference reused with other content is a bad line, not a payment.
    let clash = import_bank_file(
        &pool,
        "reference,account_no,amount_krw,paid_on\nKB-0002,A1,7000,2026-11-20\n",
        "clerk-1",
    )
    .await
    .unwrap();
    assert_eq!(clash.posted, 0);
    assert_eq!(clash.errors[0].line, 2);
    assert!(clash.errors[0].reason.contains("already recorded"));

    // Full, partial, over-payment.
    let open = |no: &'static str| {
        let pool = pool.clone();
        async move {
            let mut c = pool.acquire().await.unwrap();
            store::open_items(&mut c, no)
                .await
                .unwrap()
                .iter()
                .map(|i| i.open_krw)
                .sum::<i64>()
        }
    };
    assert_eq!(open("A0").await, 0);
    assert_eq!(open("A1").await, total - 5_000);
    assert_eq!(open("A2").await, 0);
    let mut c = pool.acquire().await.unwrap();
    assert_eq!(store::credit_balance(&mut c, "A2").await.unwrap(), 2_500);
    // Partial payment settled the levy first, then sewer.
    let (a1_bill, _) = bill_of(&pool, "A1", "2026-10").await;
    let parts = store::bill_open(&mut c, a1_bill).await.unwrap();
    let levy = parts.iter().find(|(p, _)| *p == Part::Levy).unwrap().1;
    assert_eq!(levy, 0);
    drop(c);

    // The credit is applied to the next bill.
    let nov: Vec<PeriodRead> = (0..3)
        .map(|i| read(&format!("A{i}"), p("2026-11"), 10_000, 10_000))
        .collect();
    run(&pool, &book, "2026-11", "A", &nov).await;
    let (_, nov_total) = bill_of(&pool, "A2", "2026-11").await;
    assert_eq!(open("A2").await, nov_total - 2_500);
    let mut c = pool.acquire().await.unwrap();
    assert_eq!(store::credit_balance(&mut c, "A2").await.unwrap(), 0);
    drop(c);

    // Reports: ageing and arrears as of mid-January.
    let a = ageing(&pool, day("2027-01-15")).await.unwrap();
    let a1 = a.rows.iter().find(|r| r.account_no == "A1").unwrap();
    // October's bill is dated 2026-11-01 (75 days), November's 2026-12-01 (45).
    assert_eq!(a1.days_61_90_krw, total - 5_000);
    assert_eq!(a1.days_31_60_krw, nov_total);
    assert_eq!(
        a.totals.total_krw,
        trial_balance(&pool)
            .await
            .unwrap()
            .balance(LedgerAccount::Receivable)
    );
    let arr = arrears(&pool, day("2027-01-15"), 60).await.unwrap();
    assert_eq!(arr.rows.len(), 1);
    assert_eq!(arr.rows[0].account_no, "A1");
    assert!(arr.to_csv().contains("A1,고객 A1,2,"));
    assert_books_sound(&pool).await;
}

#[sqlx::test(migrations = false)]
async fn cancel_rebill_and_adjust_keep_the_books_and_the_numbers(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    upsert_accounts(
        &pool,
        &[account("A0", "A", false), account("A1", "A", true)],
    )
    .await
    .unwrap();
    let reads = vec![
        read("A0", p("2026-10"), 0, 20_000),
        read("A1", p("2026-10"), 0, 40_000),
    ];
    run(&pool, &book, "2026-10", "A", &reads).await;
    let (bill, total) = bill_of(&pool, "A0", "2026-10").await;
    record_payment(
        &pool,
        &PaymentRequest {
            reference: "P-1".into(),
            account_no: "A0".into(),
            amount_krw: total,
            paid_on: day("2026-11-15"),
        },
        "clerk-1",
    )
    .await
    .unwrap();
    let before = trial_balance(&pool).await.unwrap();

    // Cancelling the paid bill: exact reversal, the payment becomes credit.
    cancel_bill(&pool, bill, "meter misread", "clerk-1")
        .await
        .unwrap();
    let mut c = pool.acquire().await.unwrap();
    assert_eq!(store::credit_balance(&mut c, "A0").await.unwrap(), total);
    let original = store::posted_entry(&mut c, &format!("bill:{bill}"))
        .await
        .unwrap()
        .unwrap();
    let reversal = store::posted_entry(&mut c, &format!("cancel:{bill}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reversal.source, Source::Cancellation);
    let mut negated: Vec<_> = original
        .postings
        .iter()
        .map(|p| (p.account, p.bill_id, p.part, -p.amount_krw))
        .collect();
    let mut mirrored: Vec<_> = reversal
        .postings
        .iter()
        .map(|p| (p.account, p.bill_id, p.part, p.amount_krw))
        .collect();
    negated.sort();
    mirrored.sort();
    assert_eq!(negated, mirrored);
    drop(c);
    let again = cancel_bill(&pool, bill, "twice", "clerk-1")
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        BillingError::Ledger(LedgerError::NotIssued(..))
    ));
    assert!(matches!(
        cancel_bill(&pool, bill, "  ", "clerk-1").await.unwrap_err(),
        BillingError::Correction(_)
    ));

    // Rebill with unchanged inputs: a new bill, the period's next number,
    // the credit settles it, and the books are exactly as before.
    let out = rebill(
        &pool,
        &book,
        bill,
        &RebillRequest {
            reason: "reissue".into(),
            reads: Vec::new(),
        },
        &StaticReads(reads.clone()),
        &no_holds(),
        "clerk-1",
    )
    .await
    .unwrap_err();
    // The first bill is already cancelled: rebilling needs an issued bill.
    assert!(matches!(
        out,
        BillingError::Ledger(LedgerError::NotIssued(..))
    ));
    let (bill1, total1) = bill_of(&pool, "A1", "2026-10").await;
    let before1 = trial_balance(&pool).await.unwrap();
    let out = rebill(
        &pool,
        &book,
        bill1,
        &RebillRequest {
            reason: "reissue".into(),
            reads: Vec::new(),
        },
        &StaticReads(reads.clone()),
        &no_holds(),
        "clerk-1",
    )
    .await
    .unwrap();
    assert_eq!((out.bill_no, out.total_krw), (3, total1));
    assert_eq!(
        balances(&trial_balance(&pool).await.unwrap()),
        balances(&before1)
    );
    let rebill_of: Option<i64> =
        sqlx::query_scalar("SELECT rebill_of FROM billing.bills WHERE bill_id = $1")
            .bind(out.bill_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rebill_of, Some(bill1));

    // Rebill of the cancelled account A0 is impossible, but a corrected read
    // on A1's new bill rebills it with a different total (number 4).
    let corrected = rebill(
        &pool,
        &book,
        out.bill_id,
        &RebillRequest {
            reason: "customer read 30 m³".into(),
            reads: vec![read("A1", p("2026-10"), 0, 30_000)],
        },
        &StaticReads(Vec::new()),
        &no_holds(),
        "clerk-2",
    )
    .await
    .unwrap();
    assert_eq!(corrected.bill_no, 4);
    assert!(corrected.total_krw < total1);
    let numbers: Vec<i64> = sqlx::query_scalar(
        "SELECT bill_no FROM billing.bills WHERE period = '2026-10' ORDER BY bill_no",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(numbers, vec![1, 2, 3, 4]);

    // Adjustments: with a reason, idempotent on their key, never below zero.
    let adj = AdjustmentRequest {
        part: Part::Water,
        amount_krw: -1_000,
        reason: "goodwill".into(),
        key: "ADJ-1".into(),
    };
    let e1 = adjust_bill(&pool, corrected.bill_id, &adj, "clerk-1")
        .await
        .unwrap();
    let e2 = adjust_bill(&pool, corrected.bill_id, &adj, "clerk-1")
        .await
        .unwrap();
    assert_eq!(e1, e2);
    let over = AdjustmentRequest {
        amount_krw: -10_000_000,
        key: "ADJ-2".into(),
        ..adj.clone()
    };
    assert!(matches!(
        adjust_bill(&pool, corrected.bill_id, &over, "clerk-1")
            .await
            .unwrap_err(),
        BillingError::Ledger(LedgerError::OverAdjusted { .. })
    ));
    let tb = trial_balance(&pool).await.unwrap();
    assert_eq!(tb.balance(LedgerAccount::Adjustments), 1_000);
    assert_eq!(
        tb.balance(LedgerAccount::Cash),
        before.balance(LedgerAccount::Cash)
    );

    // The audit log says who did what, when and why.
    let log = billing::corrections::audit_log(&pool, None, 100)
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.action.as_str(), r.actor.as_str()))
        .collect();
    assert!(actions.contains(&("cancel_bill", "clerk-1")));
    assert!(actions.contains(&("rebill", "clerk-2")));
    assert!(actions.contains(&("adjust_bill", "clerk-1")));
    assert!(actions.contains(&("payment", "clerk-1")));
    assert!(log.iter().any(|r| r.reason == "meter misread"));
    assert_books_sound(&pool).await;
}

/// A small deterministic generator (SplitMix64): histories replay by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

/// Balances only: a cancel + rebill adds gross debits and credits.
fn balances(tb: &billing::reports::TrialBalance) -> Vec<(String, i64)> {
    tb.rows
        .iter()
        .map(|r| (r.code.clone(), r.balance_krw))
        .collect()
}

/// The invariants every history must keep, checked on the model.
fn check_model(l: &Ledger) {
    for e in &l.entries {
        assert!(e.balances(), "entry {} does not balance", e.key);
    }
    let tb = l.trial_balance();
    assert_eq!(tb.values().sum::<i64>(), 0, "trial balance nets to zero");
    assert_eq!(
        tb[&LedgerAccount::Receivable],
        l.open_bills_total(),
        "receivables = sum of open bill balances"
    );
    for (id, b) in &l.bills {
        let open = l.bill_open(*id);
        if b.cancelled {
            assert!(
                open.iter().all(|(_, v)| *v == 0),
                "cancelled bill {id} open"
            );
        } else {
            assert!(open.iter().all(|(_, v)| *v >= 0), "bill {id} over-settled");
        }
        assert!(l.credit(&b.amounts.account_no) >= 0);
    }
}

fn gen_bill(rng: &mut Rng, id: i64, party: &str, period: Period) -> BillAmounts {
    let water = rng.range(0, 60_000);
    BillAmounts {
        bill_id: id,
        account_no: party.into(),
        period,
        water_krw: water,
        base_krw: [0, 860, 1_500][rng.below(3) as usize],
        sewer_krw: rng.range(0, 40_000),
        levy_krw: rng.range(0, 8_000),
        reduction_krw: if rng.below(4) == 0 {
            -rng.range(0, water / 2)
        } else {
            0
        },
    }
}

/// One generated history on the model: bills, payments (some replayed, some
/// clashing), cancellations, rebills (unchanged or corrected), adjustments.
fn model_history(seed: u64) {
    let mut rng = Rng(seed);
    let mut l = Ledger::default();
    let parties = ["P0", "P1", "P2"];
    let mut period: Period = "2026-01".parse().unwrap();
    let mut next_id = 1;
    let mut payments: Vec<PaymentRequest> = Vec::new();
    let on = day("2026-12-01");
    let mut adjusted = std::collections::HashSet::new();
    for step in 0..30 {
        let live: Vec<i64> = l
            .bills
            .iter()
            .filter(|(_, b)| !b.cancelled)
            .map(|(id, _)| *id)
            .collect();
        match rng.below(10) {
            0..=2 => {
                if rng.below(3) == 0 {
                    period = period.next();
                }
                let party = parties[rng.below(3) as usize];
                let b = gen_bill(&mut rng, next_id, party, period);
                next_id += 1;
                l.issue_bill(b, Source::Bill).unwrap();
            }
            3..=5 => {
                if !payments.is_empty() && rng.below(4) == 0 {
                    // A replay posts nothing; a clash is refused; neither changes the books.
                    let mut p = payments[rng.below(payments.len() as u64) as usize].clone();
                    let tb = l.trial_balance();
                    let clash = rng.below(2) == 0;
                    if clash {
                        p.amount_krw += 1;
                    }
                    match l.pay(&p) {
                        Ok(false) => assert!(!clash),
                        Err(LedgerError::KeyConflict(_)) => assert!(clash),
                        other => panic!("replay gave {other:?}"),
                    }
                    assert_eq!(l.trial_balance(), tb);
                } else {
                    let p = PaymentRequest {
                        reference: format!("R{step}"),
                        account_no: parties[rng.below(3) as usize].into(),
                        amount_krw: rng.range(1, 90_000),
                        paid_on: on,
                    };
                    assert!(l.pay(&p).unwrap());
                    payments.push(p);
                }
            }
            6 if !live.is_empty() => {
                let id = live[rng.below(live.len() as u64) as usize];
                l.cancel(id, on).unwrap();
            }
            7 | 8 if !live.is_empty() => {
                let id = live[rng.below(live.len() as u64) as usize];
                let old = l.bills[&id].amounts.clone();
                let unchanged = rng.below(2) == 0;
                let new = if unchanged {
                    BillAmounts {
                        bill_id: next_id,
                        ..old.clone()
                    }
                } else {
                    gen_bill(&mut rng, next_id, &old.account_no, old.period)
                };
                next_id += 1;
                let tb = l.trial_balance();
                l.rebill(id, new, on).unwrap();
                // Adjustments of the cancelled bill are reversed, not carried.
                if unchanged && !adjusted.contains(&id) {
                    assert_eq!(
                        l.trial_balance(),
                        tb,
                        "cancel + rebill unchanged nets to zero"
                    );
                }
            }
            9 if !live.is_empty() => {
                let id = live[rng.below(live.len() as u64) as usize];
                let part = Part::ALLOCATION_ORDER[rng.below(4) as usize];
                let amount = rng.range(-20_000, 5_000);
                adjusted.insert(id);
                match l.adjust(id, part, amount, &format!("A{step}"), on) {
                    Ok(_) | Err(LedgerError::OverAdjusted { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            _ => {}
        }
        check_model(&l);
    }
}

#[test]
fn a_thousand_generated_histories_keep_the_invariants_on_the_model() {
    for seed in 0..1_000u64 {
        model_history(seed);
    }
}

/// The model's own rules on small hand-made histories (these were the ledger
/// module's unit tests while the model lived there).
mod model_rules {
    use super::*;

    fn bill(id: i64, party: &str, period: &str, w: i64, r: i64) -> BillAmounts {
        BillAmounts {
            bill_id: id,
            account_no: party.into(),
            period: period.parse().unwrap(),
            water_krw: w,
            base_krw: 860,
            sewer_krw: 4_000,
            levy_krw: 1_700,
            reduction_krw: r,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
    }

    fn pay(r: &str, party: &str, amount: i64) -> PaymentRequest {
        PaymentRequest {
            reference: r.into(),
            account_no: party.into(),
            amount_krw: amount,
            paid_on: day(),
        }
    }

    #[test]
    fn payments_go_to_the_oldest_bill_first_levy_first_and_the_rest_to_credit() {
        let mut l = Ledger::default();
        l.issue_bill(bill(2, "A", "2026-11", 5_000, 0), Source::Bill)
            .unwrap();
        l.issue_bill(bill(1, "A", "2026-10", 5_000, 0), Source::Bill)
            .unwrap();
        // Partial: levy then sewer of the October bill.
        l.pay(&pay("P1", "A", 2_000)).unwrap();
        assert_eq!(
            l.bill_open(1),
            vec![
                (Part::Levy, 0),
                (Part::Sewer, 3_700),
                (Part::Base, 860),
                (Part::Water, 5_000)
            ]
        );
        // Over-payment: both bills settled, 1,000 left as credit.
        let due = l.open_bills_total();
        l.pay(&pay("P2", "A", due + 1_000)).unwrap();
        assert_eq!(l.open_bills_total(), 0);
        assert_eq!(l.credit("A"), 1_000);
        // The credit goes to the next bill.
        l.issue_bill(bill(3, "A", "2026-12", 5_000, 0), Source::Bill)
            .unwrap();
        assert_eq!(l.credit("A"), 0);
        assert_eq!(l.open_bills_total(), 11_560 - 1_000);
        // Same key, same content: nothing new; different content: refused.
        assert!(!l.pay(&pay("P2", "A", due + 1_000)).unwrap());
        assert!(matches!(
            l.pay(&pay("P2", "A", 5)),
            Err(LedgerError::KeyConflict(_))
        ));
        assert_eq!(l.trial_balance().values().sum::<i64>(), 0);
    }

    #[test]
    fn cancelling_a_paid_bill_leaves_the_payment_as_credit() {
        let mut l = Ledger::default();
        l.issue_bill(bill(1, "A", "2026-10", 5_000, 0), Source::Bill)
            .unwrap();
        l.pay(&pay("P1", "A", 11_560)).unwrap();
        let before = l.trial_balance();
        l.cancel(1, day()).unwrap();
        assert_eq!(l.credit("A"), 11_560);
        assert_eq!(l.open_bills_total(), 0);
        // Rebill with the same amounts: the credit settles it, and the
        // books are as they were before the cancellation.
        l.issue_bill(bill(2, "A", "2026-10", 5_000, 0), Source::Rebill)
            .unwrap();
        assert_eq!(l.trial_balance(), before);
        assert_eq!(l.credit("A"), 0);
    }
}

/// Fifty histories against PostgreSQL, each replayed on the model; the
/// database and the model must agree on every balance.
#[sqlx::test(migrations = false)]
async fn fifty_histories_in_the_database_agree_with_the_model(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    let mut model = Ledger::default();
    let on = billing::corrections::today();
    let started = std::time::Instant::now();
    for h in 0..50u64 {
        let mut rng = Rng(h ^ 0xA5A5);
        let group = format!("G{h}");
        let parties: Vec<String> = (0..2).map(|i| format!("H{h}-{i}")).collect();
        let accounts: Vec<Account> = parties
            .iter()
            .enumerate()
            .map(|(i, no)| account(no, &group, i == 1))
            .collect();
        upsert_accounts(&pool, &accounts).await.unwrap();
        let mut reads: BTreeMap<&str, Vec<PeriodRead>> = BTreeMap::new();
        let oct: Vec<PeriodRead> = parties
            .iter()
            .map(|no| read(no, p("2026-10"), 0, rng.range(0, 60_000)))
            .collect();
        let nov: Vec<PeriodRead> = oct
            .iter()
            .map(|r| PeriodRead {
                start_ts: p("2026-11").start_utc(),
                start_volume_l: r.end_volume_l,
                end_ts: p("2026-11").end_utc() - chrono::Duration::minutes(15),
                end_volume_l: r.end_volume_l + rng.range(0, 60_000),
                ..r.clone()
            })
            .collect();
        reads.insert("2026-10", oct);
        reads.insert("2026-11", nov);
        let mut billed_nov = false;
        let mut adjusted = std::collections::HashSet::new();

        run(&pool, &book, "2026-10", &group, &reads["2026-10"]).await;
        for b in new_bills(&pool, &model).await {
            model.issue_bill(b, Source::Bill).unwrap();
        }
        for step in 0..8 {
            let live: Vec<i64> = model
                .bills
                .iter()
                .filter(|(_, b)| !b.cancelled && parties.contains(&b.amounts.account_no))
                .map(|(id, _)| *id)
                .collect();
            match rng.below(6) {
                0 | 1 => {
                    let pay = PaymentRequest {
                        reference: format!("H{h}-R{step}"),
                        account_no: parties[rng.below(2) as usize].clone(),
                        amount_krw: rng.range(1, 70_000),
                        paid_on: day("2026-12-01"),
                    };
                    let out = record_payment(&pool, &pay, "clerk").await.unwrap();
                    assert!(out.posted);
                    assert!(model.pay(&pay).unwrap());
                }
                2 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize];
                    cancel_bill(&pool, id, "generated", "clerk").await.unwrap();
                    model.cancel(id, on).unwrap();
                }
                3 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize];
                    let period = model.bills[&id].amounts.period.to_string();
                    let tb = trial_balance(&pool).await.unwrap();
                    let out = rebill(
                        &pool,
                        &book,
                        id,
                        &RebillRequest {
                            reason: "generated".into(),
                            reads: Vec::new(),
                        },
                        &StaticReads(reads[period.as_str()].clone()),
                        &no_holds(),
                        "clerk",
                    )
                    .await
                    .unwrap();
                    // Unchanged inputs: the database's books did not move
                    // (adjustments of the cancelled bill are reversed, though).
                    if !adjusted.contains(&id) {
                        assert_eq!(
                            balances(&trial_balance(&pool).await.unwrap()),
                            balances(&tb)
                        );
                    }
                    let new = new_bills(&pool, &model).await;
                    assert_eq!(new.len(), 1);
                    assert_eq!(new[0].bill_id, out.bill_id);
                    model.rebill(id, new[0].clone(), on).unwrap();
                }
                4 if !live.is_empty() => {
                    let id = live[rng.below(live.len() as u64) as usize];
                    let part = Part::ALLOCATION_ORDER[rng.below(4) as usize];
                    let amount = rng.range(-5_000, 3_000);
                    let key = format!("H{h}-A{step}");
                    let req = AdjustmentRequest {
                        part,
                        amount_krw: if amount == 0 { 1 } else { amount },
                        reason: "generated".into(),
                        key: key.clone(),
                    };
                    let db = adjust_bill(&pool, id, &req, "clerk").await;
                    adjusted.insert(id);
                    let m = model.adjust(id, part, req.amount_krw, &key, on);
                    match (db, m) {
                        (Ok(_), Ok(true)) => {}
                        (
                            Err(BillingError::Ledger(LedgerError::OverAdjusted { .. })),
                            Err(LedgerError::OverAdjusted { .. }),
                        ) => {}
                        (db, m) => panic!("database {db:?} and model {m:?} disagree"),
                    }
                }
                5 if !billed_nov => {
                    billed_nov = true;
                    run(&pool, &book, "2026-11", &group, &reads["2026-11"]).await;
                    for b in new_bills(&pool, &model).await {
                        model.issue_bill(b, Source::Bill).unwrap();
                    }
                }
                _ => {}
            }
        }
        check_model(&model);
    }
    // The database and the model agree on every balance.
    let tb = trial_balance(&pool).await.unwrap();
    for (a, v) in model.trial_balance() {
        assert_eq!(tb.balance(a), v, "{a:?}");
    }
    let mut c = pool.acquire().await.unwrap();
    for (id, b) in &model.bills {
        let mut db = store::bill_open(&mut c, *id).await.unwrap();
        db.retain(|(_, v)| *v != 0);
        let mut m = model.bill_open(*id);
        m.retain(|(_, v)| *v != 0);
        db.sort();
        m.sort();
        assert_eq!(db, m, "bill {id}");
        assert_eq!(
            store::credit_balance(&mut c, &b.amounts.account_no)
                .await
                .unwrap(),
            model.credit(&b.amounts.account_no)
        );
    }
    drop(c);
    assert_books_sound(&pool).await;
    eprintln!("50 database histories in {:?}", started.elapsed());
}

/// Issued bills the model has not seen yet, in id order.
async fn new_bills(pool: &PgPool, model: &Ledger) -> Vec<BillAmounts> {
    let known: Vec<i64> = model.bills.keys().copied().collect();
    type Row = (i64, String, String, i64, i64, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT bill_id, account_no, period, water_krw, base_krw, sewer_krw, levy_krw, reduction_krw \
           FROM billing.bills WHERE status = 'issued' AND NOT (bill_id = ANY($1)) ORDER BY bill_id",
    )
    .bind(&known)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(bill_id, account_no, period, w, b, s, l, r)| BillAmounts {
            bill_id,
            account_no,
            period: period.parse().unwrap(),
            water_krw: w,
            base_krw: b,
            sewer_krw: s,
            levy_krw: l,
            reduction_krw: r,
        })
        .collect()
}

#[sqlx::test(migrations = false)]
async fn a_held_bill_posts_when_released(pool: PgPool) {
    migrate(&pool).await.unwrap();
    let book = daejeon();
    upsert_accounts(
        &pool,
        &[account("A0", "A", false), account("A1", "A", false)],
    )
    .await
    .unwrap();
    // A1's meter sent nothing and it has no history: its bill is held.
    run(
        &pool,
        &book,
        "2026-10",
        "A",
        &[read("A0", p("2026-10"), 0, 12_000)],
    )
    .await;
    let (held, status): (i64, String) =
        sqlx::query_as("SELECT bill_id, status FROM billing.bills WHERE account_no = 'A1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "held");
    let entries = format!("SELECT count(*) FROM billing.journal_entries WHERE bill_id = {held}");
    assert_eq!(count(&pool, &entries).await, 0);
    let before = trial_balance(&pool).await.unwrap();
    billing::run::release_held_by(&pool, held, "clerk-1")
        .await
        .unwrap();
    assert_eq!(count(&pool, &entries).await, 1);
    let total: i64 = sqlx::query_scalar("SELECT total_krw FROM billing.bills WHERE bill_id = $1")
        .bind(held)
        .fetch_one(&pool)
        .await
        .unwrap();
    let after = trial_balance(&pool).await.unwrap();
    assert_eq!(
        after.balance(LedgerAccount::Receivable) - before.balance(LedgerAccount::Receivable),
        total
    );
    assert_books_sound(&pool).await;
}
