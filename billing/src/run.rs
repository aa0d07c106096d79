//! A billing run: one period, one billing group. Dry run previews, commit
//! issues bills.
//!
//! Shape: load (accounts, prior bills, reads) → compute (pure, [`compute_bill`])
//! → commit in chunks. Each chunk is one transaction holding whole bills and
//! the bill-number counter of the period, so numbers have no gaps and a crash
//! leaves either nothing or whole bills under a `running` run that the next run
//! of the same period and group resumes. Bills are unique per (period,
//! account): re-running a committed period creates nothing.
//!
//! Metering data is read only through [`ReadSource`]; in production that is
//! [`SqlReads`], ingest's `metering.period_reads_v1`.

use crate::accounts::{load_group, BillableAccount};
use crate::period::Period;
use crate::tariff::{quote, Component, Quote, QuoteRequest, TariffBook};
use crate::usage::{account_usage, AccountUsage, HoldPolicy, LegCarry, PeriodRead, PriorBill};
use crate::BillingError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

/// Bills committed per transaction: bounds the transaction's size and the work
/// lost to a crash (the run resumes after the last committed chunk).
pub const COMMIT_CHUNK: usize = 20_000;
/// Held bills listed in a run's outcome (all are in the database).
pub const MAX_HOLDS_LISTED: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub period: Period,
    pub group: String,
    #[serde(default)]
    pub dry_run: bool,
}

/// A held bill and why, for the clerk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBill {
    pub account_no: String,
    pub reasons: Vec<String>,
}

/// What a run did (or, dry, would do). Totals cover the bills this run
/// issued (or would issue); bills that already existed are only counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOutcome {
    /// `None` for a dry run, or a re-run that had nothing to create.
    pub run_id: Option<i64>,
    pub period: Period,
    pub group: String,
    pub dry_run: bool,
    /// Accounts in the group.
    pub accounts: u64,
    /// Bills issued by this run.
    pub bills_created: u64,
    /// Accounts that already had a bill for the period.
    pub bills_existing: u64,
    /// Bills created held for review (no bill number yet).
    pub held: u64,
    /// Bills with at least one estimated leg.
    pub estimated: u64,
    /// m³ on the issued bills.
    pub usage_m3: i64,
    pub totals_by_component: BTreeMap<String, i64>,
    /// usage type → component → KRW.
    pub totals_by_usage_type: BTreeMap<String, BTreeMap<String, i64>>,
    pub total_krw: i64,
    /// The first [`MAX_HOLDS_LISTED`] held bills.
    pub holds: Vec<HeldBill>,
}

/// Where a run gets each meter's reads for a period.
pub trait ReadSource: Sync {
    fn period_reads(
        &self,
        period: &Period,
    ) -> impl Future<Output = Result<Vec<PeriodRead>, BillingError>> + Send;
}

/// Ingest's versioned read-only function, `metering.period_reads_v1`.
pub struct SqlReads<'a>(pub &'a PgPool);

impl ReadSource for SqlReads<'_> {
    async fn period_reads(&self, period: &Period) -> Result<Vec<PeriodRead>, BillingError> {
        let rows = sqlx::query(
            "SELECT meter_id, start_ts, start_volume_l, end_ts, end_volume_l, reads \
               FROM metering.period_reads_v1($1, $2)",
        )
        .bind(period.start_utc())
        .bind(period.end_utc())
        .fetch_all(self.0)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeriodRead {
                    meter_id: r.try_get(0)?,
                    start_ts: r.try_get(1)?,
                    start_volume_l: r.try_get(2)?,
                    end_ts: r.try_get(3)?,
                    end_volume_l: r.try_get(4)?,
                    reads: r.try_get(5)?,
                })
            })
            .collect()
    }
}

/// Reads held in memory (tests, benchmarks).
pub struct StaticReads(pub Vec<PeriodRead>);

impl ReadSource for StaticReads {
    async fn period_reads(&self, _period: &Period) -> Result<Vec<PeriodRead>, BillingError> {
        Ok(self.0.clone())
    }
}

/// One account's bill, computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputedBill {
    pub account_no: String,
    pub usage_type: String,
    pub usage: AccountUsage,
    /// `None` when the tariff could not price the account (the bill is held).
    pub quote: Option<Quote>,
    pub hold_reasons: Vec<String>,
    /// SHA-256 of everything the bill depends on.
    pub input_hash: String,
}

impl ComputedBill {
    pub fn held(&self) -> bool {
        !self.hold_reasons.is_empty()
    }

    pub fn component_krw(&self, c: Component) -> i64 {
        self.quote.as_ref().map_or(0, |q| q.component_krw(c))
    }

    pub fn total_krw(&self) -> i64 {
        self.quote.as_ref().map_or(0, |q| q.total_krw)
    }
}

#[derive(Serialize)]
struct HashInput<'a> {
    tariff_fingerprint: &'a str,
    period: Period,
    account: &'a crate::accounts::Account,
    reductions: &'a [String],
    legs: &'a [crate::usage::Leg],
}

/// Prices an account's usage: pure, identical inputs give an identical bill
/// and input hash.
pub fn compute_bill(
    book: &TariffBook,
    acct: &BillableAccount,
    period: &Period,
    usage: AccountUsage,
) -> ComputedBill {
    let a = &acct.account;
    let mut hold_reasons = usage.hold_reasons.clone();
    let req = QuoteRequest {
        usage_type: a.usage_type.clone(),
        diameter_mm: a.diameter_mm,
        usage_m3: u32::try_from(usage.usage_m3).unwrap_or(u32::MAX),
        households: a.households,
        sewer_connected: a.sewer_connected,
        levy_exempt: a.levy_exempt,
        period: Some(*period),
        reductions: acct.reductions.clone(),
        leak_relief_prior_avg_m3: None,
    };
    let quote = match quote(book, &req) {
        Ok(q) => Some(q),
        Err(e) => {
            hold_reasons.push(format!("cannot price: {e}"));
            None
        }
    };
    let hash = {
        let input = HashInput {
            tariff_fingerprint: book.fingerprint(),
            period: *period,
            account: a,
            reductions: &acct.reductions,
            legs: &usage.legs,
        };
        let bytes = serde_json::to_vec(&input).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    };
    ComputedBill {
        account_no: a.account_no.clone(),
        usage_type: a.usage_type.clone(),
        usage,
        quote,
        hold_reasons,
        input_hash: hash,
    }
}

/// What a run loads before computing.
pub struct RunInputs {
    pub accounts: Vec<BillableAccount>,
    /// Accounts already billed for the period.
    pub existing: HashSet<String>,
    pub history: HashMap<String, Vec<PriorBill>>,
    /// Carry of each meter from the account's latest prior bill.
    pub carry: HashMap<String, HashMap<String, LegCarry>>,
    pub reads: HashMap<String, PeriodRead>,
}

/// Computes the bills of the accounts not yet billed: pure.
pub fn compute_bills(
    book: &TariffBook,
    period: &Period,
    inputs: &RunInputs,
    policy: &HoldPolicy,
) -> Vec<ComputedBill> {
    let none = HashMap::new();
    inputs
        .accounts
        .iter()
        .filter(|a| !inputs.existing.contains(&a.account.account_no))
        .map(|acct| {
            let no = &acct.account.account_no;
            let usage = account_usage(
                book.usage_rule(),
                &acct.account,
                period,
                &inputs.reads,
                inputs.carry.get(no).unwrap_or(&none),
                inputs.history.get(no).map_or(&[][..], |h| &h[..]),
                policy,
            );
            compute_bill(book, acct, period, usage)
        })
        .collect()
}

/// Totals and counts of computed bills.
pub fn summarize(
    req: &RunRequest,
    accounts: u64,
    existing: u64,
    bills: &[ComputedBill],
) -> RunOutcome {
    let mut out = RunOutcome {
        run_id: None,
        period: req.period,
        group: req.group.clone(),
        dry_run: req.dry_run,
        accounts,
        bills_created: 0,
        bills_existing: existing,
        held: 0,
        estimated: 0,
        usage_m3: 0,
        totals_by_component: BTreeMap::new(),
        totals_by_usage_type: BTreeMap::new(),
        total_krw: 0,
        holds: Vec::new(),
    };
    for b in bills {
        if b.usage.estimated {
            out.estimated += 1;
        }
        if b.held() {
            out.held += 1;
            if out.holds.len() < MAX_HOLDS_LISTED {
                out.holds.push(HeldBill {
                    account_no: b.account_no.clone(),
                    reasons: b.hold_reasons.clone(),
                });
            }
            continue;
        }
        out.bills_created += 1;
        out.usage_m3 += b.usage.usage_m3;
        let by_type = out
            .totals_by_usage_type
            .entry(b.usage_type.clone())
            .or_default();
        for line in b.quote.iter().flat_map(|q| &q.lines) {
            let c = line.component.as_str().to_string();
            *out.totals_by_component.entry(c.clone()).or_default() += line.amount_krw;
            *by_type.entry(c).or_default() += line.amount_krw;
        }
        *by_type.entry("total".into()).or_default() += b.total_krw();
        out.total_krw += b.total_krw();
    }
    out
}

/// Loads accounts, prior bills and carries of `group` for `period`, and reads.
pub async fn load_inputs(
    pool: &PgPool,
    reads: &impl ReadSource,
    period: &Period,
    group: &str,
) -> Result<RunInputs, BillingError> {
    let accounts = load_group(pool, group).await?;
    let periods: Vec<String> = (0..=crate::usage::HISTORY_PERIODS as i32)
        .map(|n| period.add_months(-n).to_string())
        .collect();
    let rows = sqlx::query(
        "SELECT b.account_no, b.period, b.usage_m3, b.legs::text \
           FROM billing.bills b JOIN billing.accounts a USING (account_no) \
          WHERE a.billing_group = $1 AND b.period = ANY($2) ORDER BY b.period",
    )
    .bind(group)
    .bind(&periods)
    .fetch_all(pool)
    .await?;
    let this = period.to_string();
    let mut existing = HashSet::new();
    let mut history: HashMap<String, Vec<PriorBill>> = HashMap::new();
    let mut carry: HashMap<String, HashMap<String, LegCarry>> = HashMap::new();
    for r in rows {
        let account_no: String = r.try_get(0)?;
        let p: String = r.try_get(1)?;
        if p == this {
            existing.insert(account_no);
            continue;
        }
        let Ok(prior) = p.parse::<Period>() else {
            continue;
        };
        history
            .entry(account_no.clone())
            .or_default()
            .push(PriorBill {
                period: prior,
                usage_m3: r.try_get(2)?,
            });
        let legs: Vec<crate::usage::Leg> =
            serde_json::from_str(&r.try_get::<String, _>(3)?).unwrap_or_default();
        let c = carry.entry(account_no).or_default();
        for leg in legs {
            c.insert(leg.meter_id, leg.carry);
        }
    }
    let meters: HashSet<&str> = accounts
        .iter()
        .flat_map(|a| a.account.meters.iter().map(|m| m.meter_id.as_str()))
        .collect();
    let reads = reads
        .period_reads(period)
        .await?
        .into_iter()
        .filter(|r| meters.contains(r.meter_id.as_str()))
        .map(|r| (r.meter_id.clone(), r))
        .collect();
    Ok(RunInputs {
        accounts,
        existing,
        history,
        carry,
        reads,
    })
}

/// Runs billing for a period and group, reading metering through
/// `metering.period_reads_v1`.
pub async fn run_billing(
    pool: &PgPool,
    book: &TariffBook,
    req: &RunRequest,
) -> Result<RunOutcome, BillingError> {
    run_billing_with(pool, book, req, &SqlReads(pool), &HoldPolicy::default()).await
}

fn lock_key(period: &Period, group: &str) -> i64 {
    let d = Sha256::digest(format!("billing-run/{period}/{group}").as_bytes());
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// [`run_billing`] with any read source and hold policy.
#[tracing::instrument(skip_all, fields(period = %req.period, group = %req.group, dry_run = req.dry_run))]
pub async fn run_billing_with(
    pool: &PgPool,
    book: &TariffBook,
    req: &RunRequest,
    reads: &impl ReadSource,
    policy: &HoldPolicy,
) -> Result<RunOutcome, BillingError> {
    let started = std::time::Instant::now();
    // Fail before loading anything if the tariff cannot price the period at all.
    book.portions(&req.period)?;
    let mut conn = pool.acquire().await?;
    let key = lock_key(&req.period, &req.group);
    if !req.dry_run {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !got {
            return Err(BillingError::RunInProgress {
                period: req.period,
                group: req.group.clone(),
            });
        }
    }
    let result = run_locked(&mut conn, pool, book, req, reads, policy).await;
    if !req.dry_run {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await;
    }
    if let Ok(o) = &result {
        metrics::counter!("billing_bills_created_total").increment(o.bills_created);
        metrics::counter!("billing_bills_held_total").increment(o.held);
        tracing::info!(
            accounts = o.accounts,
            created = o.bills_created,
            existing = o.bills_existing,
            held = o.held,
            total_krw = o.total_krw,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "billing run finished"
        );
    }
    result
}

async fn run_locked(
    conn: &mut PgConnection,
    pool: &PgPool,
    book: &TariffBook,
    req: &RunRequest,
    reads: &impl ReadSource,
    policy: &HoldPolicy,
) -> Result<RunOutcome, BillingError> {
    let inputs = load_inputs(pool, reads, &req.period, &req.group).await?;
    let accounts = inputs.accounts.len() as u64;
    let existing = inputs.existing.len() as u64;
    // The pricing is CPU work: keep it off the async workers.
    let (bills, inputs) = {
        let book = Arc::new(book.clone());
        let period = req.period;
        let policy = policy.clone();
        tokio::task::spawn_blocking(move || {
            let bills = compute_bills(&book, &period, &inputs, &policy);
            (bills, inputs)
        })
        .await
        .map_err(|e| BillingError::Task(e.to_string()))?
    };
    drop(inputs);
    let mut outcome = summarize(req, accounts, existing, &bills);
    if req.dry_run {
        return Ok(outcome);
    }
    let period = req.period.to_string();
    let running: Option<i64> = sqlx::query_scalar(
        "SELECT run_id FROM billing.runs WHERE period = $1 AND billing_group = $2 AND status = 'running'",
    )
    .bind(&period)
    .bind(&req.group)
    .fetch_optional(&mut *conn)
    .await?;
    if bills.is_empty() && running.is_none() {
        // Everything is billed already: create nothing, point at the last run.
        outcome.run_id = sqlx::query_scalar(
            "SELECT max(run_id) FROM billing.runs WHERE period = $1 AND billing_group = $2",
        )
        .bind(&period)
        .bind(&req.group)
        .fetch_one(&mut *conn)
        .await?;
        return Ok(outcome);
    }
    let run_id: i64 = match running {
        Some(id) => {
            tracing::warn!(run_id = id, "resuming an unfinished run");
            id
        }
        None => {
            sqlx::query_scalar(
                "INSERT INTO billing.runs (period, billing_group, status, tariff_city, tariff_fingerprint) \
                 VALUES ($1, $2, 'running', $3, $4) RETURNING run_id",
            )
            .bind(&period)
            .bind(&req.group)
            .bind(book.city())
            .bind(book.fingerprint())
            .fetch_one(&mut *conn)
            .await?
        }
    };
    for chunk in bills.chunks(COMMIT_CHUNK) {
        commit_chunk(conn, &period, run_id, chunk).await?;
    }
    outcome.run_id = Some(run_id);
    sqlx::query(
        "UPDATE billing.runs SET status = 'committed', finished_at = now(), outcome = $2::jsonb \
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(serde_json::to_string(&outcome).unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(outcome)
}

/// The columns of a bill row as `billing.bills` stores them.
pub struct BillRow {
    pub account_no: String,
    pub issued: bool,
    pub hold_reasons_json: String,
    pub usage_type: String,
    pub usage_m3: i64,
    pub estimated: bool,
    pub tariff_version: String,
    pub components: [i64; 5],
    pub total_krw: i64,
    pub legs_json: String,
    pub lines_json: String,
    pub input_hash: String,
}

impl BillRow {
    pub fn from_bill(b: &ComputedBill) -> BillRow {
        BillRow {
            account_no: b.account_no.clone(),
            issued: !b.held(),
            hold_reasons_json: serde_json::to_string(&b.hold_reasons).unwrap_or_default(),
            usage_type: b.usage_type.clone(),
            usage_m3: b.usage.usage_m3,
            estimated: b.usage.estimated,
            tariff_version: b
                .quote
                .as_ref()
                .map(|q| q.tariff_version.clone())
                .unwrap_or_default(),
            components: [
                Component::Water,
                Component::Sewer,
                Component::Base,
                Component::Levy,
                Component::Reduction,
            ]
            .map(|c| b.component_krw(c)),
            total_krw: b.total_krw(),
            legs_json: serde_json::to_string(&b.usage.legs).unwrap_or_default(),
            lines_json: serde_json::to_string(&b.quote.as_ref().map_or(&[][..], |q| &q.lines[..]))
                .unwrap_or_default(),
            input_hash: b.input_hash.clone(),
        }
    }
}

/// One transaction: the period's counter row is locked, the chunk's bills are
/// inserted with consecutive numbers, the counter advanced.
async fn commit_chunk(
    conn: &mut PgConnection,
    period: &str,
    run_id: i64,
    chunk: &[ComputedBill],
) -> Result<(), BillingError> {
    let rows: Vec<BillRow> = chunk.iter().map(BillRow::from_bill).collect();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period)
        .execute(&mut *tx)
        .await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT last_bill_no FROM billing.period_counters WHERE period = $1 FOR UPDATE",
    )
    .bind(period)
    .fetch_one(&mut *tx)
    .await?;
    let col = |f: fn(&BillRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let num = |i: usize| rows.iter().map(|r| r.components[i]).collect::<Vec<i64>>();
    let max_no: Option<i64> = sqlx::query_scalar(
        "WITH input AS ( \
           SELECT * FROM UNNEST($3::text[], $4::bool[], $5::text[], $6::text[], $7::int8[], $8::bool[], \
                  $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], \
                  $16::text[], $17::text[], $18::text[]) WITH ORDINALITY \
             AS t(account_no, issued, hold_reasons, usage_type, usage_m3, estimated, tariff_version, \
                  water, sewer, base, levy, reduction, total, legs, lines, input_hash, ord) \
         ), fresh AS ( \
           SELECT i.* FROM input i WHERE NOT EXISTS \
             (SELECT 1 FROM billing.bills b WHERE b.period = $1 AND b.account_no = i.account_no) \
         ), numbered AS ( \
           SELECT f.*, CASE WHEN f.issued THEN $19 + count(*) FILTER (WHERE f.issued) OVER (ORDER BY f.ord) END AS bill_no \
             FROM fresh f \
         ), ins AS ( \
           INSERT INTO billing.bills (period, account_no, run_id, bill_no, status, hold_reasons, usage_type, \
                  usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, \
                  reduction_krw, total_krw, legs, lines, input_hash) \
           SELECT $1, account_no, $2, bill_no, CASE WHEN issued THEN 'issued' ELSE 'held' END, \
                  ARRAY(SELECT jsonb_array_elements_text(hold_reasons::jsonb)), usage_type, usage_m3, \
                  estimated, tariff_version, water, sewer, base, levy, reduction, total, legs::jsonb, \
                  lines::jsonb, input_hash \
             FROM numbered \
           RETURNING bill_no \
         ) SELECT max(bill_no) FROM ins",
    )
    .bind(period)
    .bind(run_id)
    .bind(col(|r| r.account_no.clone()))
    .bind(rows.iter().map(|r| r.issued).collect::<Vec<bool>>())
    .bind(col(|r| r.hold_reasons_json.clone()))
    .bind(col(|r| r.usage_type.clone()))
    .bind(rows.iter().map(|r| r.usage_m3).collect::<Vec<i64>>())
    .bind(rows.iter().map(|r| r.estimated).collect::<Vec<bool>>())
    .bind(col(|r| r.tariff_version.clone()))
    .bind(num(0))
    .bind(num(1))
    .bind(num(2))
    .bind(num(3))
    .bind(num(4))
    .bind(rows.iter().map(|r| r.total_krw).collect::<Vec<i64>>())
    .bind(col(|r| r.legs_json.clone()))
    .bind(col(|r| r.lines_json.clone()))
    .bind(col(|r| r.input_hash.clone()))
    .bind(last)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(max_no) = max_no {
        sqlx::query("UPDATE billing.period_counters SET last_bill_no = $2 WHERE period = $1")
            .bind(period)
            .bind(max_no)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
