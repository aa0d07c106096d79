//! A billing run: one period, one billing group. Dry run previews, commit
//! issues bills.
//!
//! Shape: load (accounts, prior bills, reads) → compute (pure, [`compute_bill`])
//! → commit in chunks. Each chunk is one transaction holding whole bills and
//! the bill-number counter of the period, so numbers have no gaps and a crash
//! leaves either nothing or whole bills under a `running` run that the next run
//! of the same period and group resumes. Bills are unique per (period,
//! account): re-running a committed period creates nothing. Chunks are
//! written in a pipeline ([`CHUNKS_IN_FLIGHT`] at once, each on its own
//! connection) and each takes the counter only after the chunk before it has
//! committed; see `Pipeline`.
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
/// Priced chunks waiting for the database at most.
pub const PIPELINE_CHUNKS: usize = 2;

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

/// Why a run is not started: the month is not over in Korea, so its readings
/// are not complete and its bills would be priced on partial usage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRefused {
    #[error(
        "period {period} is not over: it ends at {} Korean time (Asia/Seoul), and bills issued \
         before then would be priced on partial usage; run it from then on, or force it with a \
         reason (CLI: --force --reason \"...\"; API: \"force\": true, \"reason\": \"...\")",
        .billable_from.with_timezone(&crate::period::kst()).format("%Y-%m-%d %H:%M")
    )]
    NotOver {
        period: Period,
        /// The period's end: 00:00 KST on the first day of the next month.
        billable_from: chrono::DateTime<chrono::Utc>,
    },
    #[error(
        "a forced run needs a reason (1-{} characters)",
        crate::corrections::MAX_REASON_CHARS
    )]
    ReasonMissing,
}

/// Whether a run of `period` may start at `now`: yes once the month is over
/// in Korea (`Ok(None)`); before that only when forced with a reason, which
/// is returned to be recorded (`Ok(Some(reason))`).
pub fn admit(
    period: &Period,
    now: chrono::DateTime<chrono::Utc>,
    force_reason: Option<&str>,
) -> Result<Option<String>, RunRefused> {
    let reason = match force_reason.map(str::trim) {
        None => None,
        Some(r) if r.is_empty() || r.chars().count() > crate::corrections::MAX_REASON_CHARS => {
            return Err(RunRefused::ReasonMissing)
        }
        Some(r) => Some(r.to_string()),
    };
    if now >= period.end_utc() {
        return Ok(None);
    }
    match reason {
        Some(r) => Ok(Some(r)),
        None => Err(RunRefused::NotOver {
            period: *period,
            billable_from: period.end_utc(),
        }),
    }
}

/// Records why a run of an unfinished month was forced, before it starts
/// (so the reason is kept even if the run fails part-way): an audit record
/// with action `billing_run_forced` on target `run:{period}/{group}`.
pub async fn record_forced_run(
    pool: &PgPool,
    req: &RunRequest,
    reason: &str,
    actor: &str,
) -> Result<(), BillingError> {
    let mut conn = pool.acquire().await?;
    crate::corrections::audit(
        &mut conn,
        actor,
        "billing_run_forced",
        &format!("run:{}/{}", req.period, req.group),
        reason,
        serde_json::json!({
            "period": req.period.to_string(),
            "group": req.group,
            "billable_from": req.period.end_utc(),
        }),
    )
    .await
}

/// What the `billing run` command reports: the outcome (its field names
/// unchanged) and, for a run that issued bills, its bill-number range and
/// ledger entries; held bills counted by reason; the reason it was forced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub outcome: RunOutcome,
    /// Set when the month was not over and the run was forced.
    pub forced_reason: Option<String>,
    /// Lowest and highest bill number this run issued (none when it issued none).
    pub first_bill_no: Option<i64>,
    pub last_bill_no: Option<i64>,
    /// Journal entries posted for this run's bills.
    pub ledger_entries: u64,
    /// Held bills by hold reason (a bill with two reasons counts in both).
    pub held_by_reason: BTreeMap<String, u64>,
}

impl RunReport {
    /// Completes `outcome` from the database (a committed run) or from the
    /// outcome's own list of holds (a dry run).
    pub async fn build(
        pool: &PgPool,
        outcome: RunOutcome,
        forced_reason: Option<String>,
    ) -> Result<RunReport, BillingError> {
        let mut report = RunReport {
            outcome,
            forced_reason,
            first_bill_no: None,
            last_bill_no: None,
            ledger_entries: 0,
            held_by_reason: BTreeMap::new(),
        };
        let o = &report.outcome;
        // A re-run that created nothing points at the earlier run: its
        // numbers are not this run's.
        let this_run = o
            .run_id
            .filter(|_| !o.dry_run && o.bills_created + o.held > 0);
        match this_run {
            Some(run_id) => {
                let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT min(bill_no), max(bill_no) FROM billing.bills WHERE run_id = $1",
                )
                .bind(run_id)
                .fetch_one(pool)
                .await?;
                let entries: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM billing.journal_entries j \
                       JOIN billing.bills b ON b.bill_id = j.bill_id \
                      WHERE b.run_id = $1 AND j.source = 'bill'",
                )
                .bind(run_id)
                .fetch_one(pool)
                .await?;
                let held: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT r, count(*) FROM billing.bills, unnest(hold_reasons) r \
                      WHERE run_id = $1 AND status = 'held' GROUP BY r",
                )
                .bind(run_id)
                .fetch_all(pool)
                .await?;
                report.first_bill_no = first;
                report.last_bill_no = last;
                report.ledger_entries = entries as u64;
                report.held_by_reason = held.into_iter().map(|(r, n)| (r, n as u64)).collect();
            }
            None => {
                for h in &report.outcome.holds {
                    for r in &h.reasons {
                        *report.held_by_reason.entry(r.clone()).or_default() += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// The clerk's summary: counts, totals by component in KRW with
    /// thousands separators, the bill-number range and the ledger entries.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let o = &self.outcome;
        let mut t = String::new();
        let what = if o.dry_run {
            "dry run (nothing written)".to_string()
        } else {
            match o.run_id {
                Some(id) => format!("run #{id}"),
                None => "run".to_string(),
            }
        };
        let _ = writeln!(t, "Billing {what}: period {}, group {}", o.period, o.group);
        if let Some(r) = &self.forced_reason {
            let _ = writeln!(
                t,
                "  FORCED before the month was over ({} KST); reason: {r}",
                o.period
                    .end_utc()
                    .with_timezone(&crate::period::kst())
                    .format("%Y-%m-%d %H:%M")
            );
        }
        let verb = if o.dry_run {
            "would be billed"
        } else {
            "billed"
        };
        let _ = writeln!(
            t,
            "  accounts in group   {:>14}",
            group_digits(o.accounts as i64)
        );
        let _ = writeln!(
            t,
            "  {verb:<20}{:>14}",
            group_digits(o.bills_created as i64)
        );
        let _ = writeln!(
            t,
            "  already billed      {:>14}",
            group_digits(o.bills_existing as i64)
        );
        let _ = writeln!(
            t,
            "  held for review     {:>14}",
            group_digits(o.held as i64)
        );
        for (reason, n) in &self.held_by_reason {
            let _ = writeln!(t, "    {reason:<18}{:>14}", group_digits(*n as i64));
        }
        let _ = writeln!(
            t,
            "  with estimates      {:>14}",
            group_digits(o.estimated as i64)
        );
        let _ = writeln!(t, "  usage (m³)          {:>14}", group_digits(o.usage_m3));
        let _ = writeln!(t, "  totals (KRW)");
        for c in COMPONENTS {
            if let Some(v) = o.totals_by_component.get(c.as_str()) {
                let _ = writeln!(t, "    {:<18}{:>14}", c.as_str(), group_digits(*v));
            }
        }
        let _ = writeln!(t, "    {:<18}{:>14}", "total", group_digits(o.total_krw));
        if !o.dry_run {
            match (self.first_bill_no, self.last_bill_no) {
                (Some(a), Some(b)) => {
                    let _ = writeln!(t, "  bill numbers        {a} to {b}");
                }
                _ => {
                    let _ = writeln!(t, "  bill numbers        none issued by this run");
                }
            }
            let _ = writeln!(
                t,
                "  ledger entries      {:>14}",
                group_digits(self.ledger_entries as i64)
            );
        }
        t
    }
}

/// 1,234,567 (negative amounts keep their sign).
fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    leak_relief_prior_avg_m3: Option<u32>,
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
        leak_relief_prior_avg_m3,
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
    /// Accounts with leak relief approved for the period.
    pub leak_relief: HashSet<String>,
}

/// Computes one account's bill from the loaded inputs: pure.
pub fn bill_account(
    book: &TariffBook,
    period: &Period,
    inputs: &RunInputs,
    acct: &BillableAccount,
    policy: &HoldPolicy,
) -> ComputedBill {
    let none = HashMap::new();
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
    // Leak relief: the prior average month, from up to three prior bills.
    let relief = inputs.leak_relief.contains(no).then(|| {
        let mut h: Vec<&PriorBill> = inputs
            .history
            .get(no)
            .map_or(Vec::new(), |h| h.iter().collect());
        h.sort_by_key(|b| std::cmp::Reverse(b.period));
        h.truncate(crate::usage::HISTORY_PERIODS);
        let total: i64 = h.iter().map(|b| b.usage_m3).sum();
        u32::try_from(total / (h.len().max(1) as i64)).unwrap_or(u32::MAX)
    });
    compute_bill(book, acct, period, usage, relief)
}

/// Computes the bills of the accounts not yet billed: pure.
pub fn compute_bills(
    book: &TariffBook,
    period: &Period,
    inputs: &RunInputs,
    policy: &HoldPolicy,
) -> Vec<ComputedBill> {
    inputs
        .to_bill()
        .map(|acct| bill_account(book, period, inputs, acct, policy))
        .collect()
}

impl RunInputs {
    /// The accounts without a bill for the period yet, in account order.
    pub fn to_bill(&self) -> impl Iterator<Item = &BillableAccount> {
        self.accounts
            .iter()
            .filter(|a| !self.existing.contains(&a.account.account_no))
    }
}

impl RunOutcome {
    /// An outcome with nothing counted yet.
    pub fn empty(req: &RunRequest, accounts: u64, existing: u64) -> RunOutcome {
        RunOutcome {
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
        }
    }

    /// Counts `bills` in the totals.
    pub fn add<'a>(&mut self, bills: impl IntoIterator<Item = &'a PreparedBill>) {
        for b in bills {
            if b.estimated {
                self.estimated += 1;
            }
            if b.held() {
                self.held += 1;
                if self.holds.len() < MAX_HOLDS_LISTED {
                    self.holds.push(HeldBill {
                        account_no: b.account_no.clone(),
                        reasons: b.hold_reasons.clone(),
                    });
                }
                continue;
            }
            self.bills_created += 1;
            self.usage_m3 += b.usage_m3;
            if !self.totals_by_usage_type.contains_key(&b.usage_type) {
                self.totals_by_usage_type
                    .insert(b.usage_type.clone(), BTreeMap::new());
            }
            let by_type = self
                .totals_by_usage_type
                .get_mut(&b.usage_type)
                .expect("inserted above");
            for (c, amount) in COMPONENTS.iter().zip(b.components) {
                let Some(amount) = amount else { continue };
                let c = c.as_str();
                for totals in [&mut *by_type, &mut self.totals_by_component] {
                    match totals.get_mut(c) {
                        Some(v) => *v += amount,
                        None => {
                            totals.insert(c.to_string(), amount);
                        }
                    }
                }
            }
            *by_type.entry("total".into()).or_default() += b.total_krw;
            self.total_krw += b.total_krw;
        }
    }
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
        // Legs (for carries) only from each account's latest prior bill: a
        // million accounts' three months of legs need not cross the wire.
        // Cancelled bills count only as "this period is billed" (a rebill
        // replaces them); they are neither history nor a source of carries.
        "SELECT b.account_no, b.period, b.usage_m3, \
                CASE WHEN b.period = max(b.period) FILTER (WHERE b.period <> $3 AND b.status <> 'cancelled') \
                          OVER (PARTITION BY b.account_no) AND b.status <> 'cancelled' THEN b.legs::text END, \
                b.status = 'cancelled' \
           FROM billing.bills b JOIN billing.accounts a USING (account_no) \
          WHERE a.billing_group = $1 AND b.period = ANY($2) ORDER BY b.period",
    )
    .bind(group)
    .bind(&periods)
    .bind(period.to_string())
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
        if r.try_get::<bool, _>(4)? {
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
        let Some(legs) = r.try_get::<Option<String>, _>(3)? else {
            continue;
        };
        let legs: Vec<crate::usage::Leg> = serde_json::from_str(&legs).unwrap_or_default();
        let c = carry.entry(account_no).or_default();
        for leg in legs {
            c.insert(leg.meter_id.clone(), leg.next_carry());
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
    let leak_relief: HashSet<String> = sqlx::query_scalar(
        "SELECT l.account_no FROM billing.leak_relief l JOIN billing.accounts a USING (account_no) \
          WHERE a.billing_group = $1 AND l.period = $2",
    )
    .bind(group)
    .bind(&this)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    Ok(RunInputs {
        accounts,
        existing,
        history,
        carry,
        reads,
        leak_relief,
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
pub async fn run_billing_with(
    pool: &PgPool,
    book: &TariffBook,
    req: &RunRequest,
    reads: &impl ReadSource,
    policy: &HoldPolicy,
) -> Result<RunOutcome, BillingError> {
    run_billing_chunked(pool, book, req, reads, policy, COMMIT_CHUNK).await
}

/// [`run_billing_with`] committing `chunk` bills per transaction (tests use
/// small chunks to run many of them through the pipeline).
#[tracing::instrument(skip_all, fields(period = %req.period, group = %req.group, dry_run = req.dry_run))]
pub async fn run_billing_chunked(
    pool: &PgPool,
    book: &TariffBook,
    req: &RunRequest,
    reads: &impl ReadSource,
    policy: &HoldPolicy,
    chunk: usize,
) -> Result<RunOutcome, BillingError> {
    let chunk_size = chunk.max(1);
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
    let result = run_locked(&mut conn, pool, book, req, reads, policy, chunk_size).await;
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
    chunk_size: usize,
) -> Result<RunOutcome, BillingError> {
    let started = std::time::Instant::now();
    let inputs = load_inputs(pool, reads, &req.period, &req.group).await?;
    let load_ms = started.elapsed().as_millis() as u64;
    let accounts = inputs.accounts.len() as u64;
    let existing = inputs.existing.len() as u64;
    let to_bill = inputs.to_bill().count();
    let mut outcome = RunOutcome::empty(req, accounts, existing);
    let period = req.period.to_string();

    let mut run_id = None;
    if !req.dry_run {
        let running: Option<i64> = sqlx::query_scalar(
            "SELECT run_id FROM billing.runs WHERE period = $1 AND billing_group = $2 AND status = 'running'",
        )
        .bind(&period)
        .bind(&req.group)
        .fetch_optional(&mut *conn)
        .await?;
        if to_bill == 0 && running.is_none() {
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
        run_id = Some(match running {
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
        });
    }

    // Pricing is CPU work on a blocking thread, one chunk ahead of the
    // database: the channel holds PIPELINE_CHUNKS chunks; when it is full the
    // pricing waits (backpressure), and it stops when the receiver is dropped.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<PreparedBill>>(PIPELINE_CHUNKS);
    let producer = {
        let book = Arc::new(book.clone());
        let period = req.period;
        let policy = policy.clone();
        let with_copy = !req.dry_run;
        tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(chunk_size);
            for acct in inputs.to_bill() {
                let bill = bill_account(&book, &period, &inputs, acct, &policy);
                chunk.push(PreparedBill::new(&bill, with_copy));
                if chunk.len() == chunk_size {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_size));
                    if tx.blocking_send(full).is_err() {
                        return;
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(chunk);
            }
        })
    };
    let (mut wait_ms, mut commit_ms) = (0u64, 0u64);
    let mut times = CommitTimes::default();
    // Chunks are written in a pipeline on their own connections when the pool
    // has room for them besides this one (which holds the run's lock).
    let mut pipe = match run_id {
        Some(id) if pool.options().get_max_connections() > CHUNKS_IN_FLIGHT as u32 => {
            Some(Pipeline::start(conn, req.period, id).await?)
        }
        _ => None,
    };
    loop {
        let t = std::time::Instant::now();
        let Some(bills) = rx.recv().await else { break };
        wait_ms += t.elapsed().as_millis() as u64;
        let t = std::time::Instant::now();
        match (&mut pipe, run_id) {
            (Some(p), _) => {
                p.submit(conn, pool, bills, &mut times, &mut outcome)
                    .await?
            }
            (None, Some(id)) => {
                let present = commit_chunk(conn, &req.period, id, &bills, &mut times).await?;
                outcome.bills_existing += present.len() as u64;
                outcome.add(bills.iter().filter(|b| !present.contains(&b.account_no)));
            }
            (None, None) => outcome.add(bills.iter()),
        }
        commit_ms += t.elapsed().as_millis() as u64;
    }
    if let Some(p) = pipe {
        let t = std::time::Instant::now();
        p.finish(conn, &mut times, &mut outcome).await?;
        commit_ms += t.elapsed().as_millis() as u64;
    }
    producer
        .await
        .map_err(|e| BillingError::Task(e.to_string()))?;
    // Where the time went: waiting for pricing vs committing.
    tracing::info!(
        load_ms,
        wait_ms,
        commit_ms,
        prepare_ms = times.prepare_ms,
        bills_ms = times.bills_ms,
        ledger_ms = times.ledger_ms,
        wait_prev_ms = times.wait_prev_ms,
        tx_commit_ms = times.commit_ms,
        renumbered = times.renumbered,
        "billing run phases"
    );

    let Some(run_id) = run_id else {
        return Ok(outcome);
    };
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

const COMPONENTS: [Component; 5] = [
    Component::Water,
    Component::Sewer,
    Component::Base,
    Component::Levy,
    Component::Reduction,
];

/// A bill ready to commit: what the outcome counts, and its row in COPY text
/// format from the `hold_reasons` column on (number and status come at commit).
#[derive(Debug, Clone)]
pub struct PreparedBill {
    pub account_no: String,
    pub usage_type: String,
    pub usage_m3: i64,
    pub estimated: bool,
    pub hold_reasons: Vec<String>,
    /// Per component (water, sewer, base, levy, reduction): the sum of its
    /// lines, `None` when the bill has no such line.
    pub components: [Option<i64>; 5],
    pub total_krw: i64,
    copy_tail: String,
}

impl PreparedBill {
    /// `with_copy`: also render the row for COPY (not needed by dry runs).
    pub fn new(b: &ComputedBill, with_copy: bool) -> PreparedBill {
        let lines = b.quote.as_ref().map_or(&[][..], |q| &q.lines[..]);
        let components = COMPONENTS.map(|c| {
            lines
                .iter()
                .any(|l| l.component == c)
                .then(|| b.component_krw(c))
        });
        let mut copy_tail = String::new();
        if with_copy {
            use std::fmt::Write;
            let out = &mut copy_tail;
            copy_field(out, &pg_text_array(&b.hold_reasons));
            out.push('\t');
            copy_field(out, &b.usage_type);
            let _ = write!(
                out,
                "\t{}\t{}\t",
                b.usage.usage_m3,
                if b.usage.estimated { 't' } else { 'f' }
            );
            copy_field(
                out,
                b.quote.as_ref().map_or("", |q| q.tariff_version.as_str()),
            );
            for c in components {
                let _ = write!(out, "\t{}", c.unwrap_or(0));
            }
            let _ = write!(out, "\t{}\t", b.total_krw());
            copy_field(
                out,
                &serde_json::to_string(&b.usage.legs).unwrap_or_default(),
            );
            out.push('\t');
            copy_field(out, &serde_json::to_string(lines).unwrap_or_default());
            out.push('\t');
            copy_field(out, &b.input_hash);
            out.push('\n');
        }
        PreparedBill {
            account_no: b.account_no.clone(),
            usage_type: b.usage_type.clone(),
            usage_m3: b.usage.usage_m3,
            estimated: b.usage.estimated,
            hold_reasons: b.hold_reasons.clone(),
            components,
            total_krw: b.total_krw(),
            copy_tail,
        }
    }

    pub fn held(&self) -> bool {
        !self.hold_reasons.is_empty()
    }
}

/// Appends `field` to a COPY text-format line, escaped. Runs of bytes that
/// need no escape are copied whole (a run escapes about 1.5 kB per bill).
pub(crate) fn copy_field(out: &mut String, field: &str) {
    let mut start = 0;
    for (i, b) in field.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            _ => continue,
        };
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(&field[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&field[start..]);
}

/// A PostgreSQL array literal of text (`{"a","b \\"c\\""}`).
fn pg_text_array(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The columns a commit COPYs into `billing.bills`, in order.
const COPY_COLUMNS: &str =
    "period, account_no, run_id, bill_no, status, hold_reasons, usage_type, \
     usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, reduction_krw, \
     total_krw, legs, lines, input_hash";

/// Inserts one issued bill (a rebill) with the period's next number, in the
/// caller's transaction. Returns its id and number.
pub(crate) async fn insert_issued_bill(
    conn: &mut PgConnection,
    period: &str,
    run_id: i64,
    b: &PreparedBill,
) -> Result<(i64, i64), BillingError> {
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period)
        .execute(&mut *conn)
        .await?;
    let no: i64 = sqlx::query_scalar(
        "UPDATE billing.period_counters SET last_bill_no = last_bill_no + 1 WHERE period = $1 \
         RETURNING last_bill_no",
    )
    .bind(period)
    .fetch_one(&mut *conn)
    .await?;
    let mut text = String::new();
    copy_field(&mut text, period);
    text.push('\t');
    copy_field(&mut text, &b.account_no);
    text.push_str(&format!("\t{run_id}\t{no}\tissued\t"));
    text.push_str(&b.copy_tail);
    let mut copy = conn
        .copy_in_raw(&format!("COPY billing.bills ({COPY_COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(text.as_bytes()).await?;
    copy.finish().await?;
    let id: i64 =
        sqlx::query_scalar("SELECT bill_id FROM billing.bills WHERE period = $1 AND bill_no = $2")
            .bind(period)
            .bind(no)
            .fetch_one(&mut *conn)
            .await?;
    Ok((id, no))
}

/// The columns a run chunk COPYs into `billing.bills`: its ids are drawn
/// from the table's sequence first, so the chunk's ledger entries are built
/// from what the run holds instead of reading the bills back.
const CHUNK_COPY_COLUMNS: &str =
    "bill_id, period, account_no, run_id, bill_no, status, hold_reasons, \
     usage_type, usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, \
     reduction_krw, total_krw, legs, lines, input_hash";

/// Where a commit's time went (milliseconds, summed over chunks).
#[derive(Debug, Default, Clone, Copy)]
struct CommitTimes {
    /// Counter lock, skipping bills present, drawing ids.
    prepare_ms: u64,
    /// The COPY of the bill rows.
    bills_ms: u64,
    /// Journal entries, postings, credit.
    ledger_ms: u64,
    /// Waiting for the chunk before to commit (pipelined chunks).
    wait_prev_ms: u64,
    /// The counter lock and update, credit, and COMMIT (the WAL flush).
    commit_ms: u64,
    /// Pipelined chunks committed again serially because the numbers moved.
    renumbered: u64,
}

impl CommitTimes {
    fn add(&mut self, o: &CommitTimes) {
        self.prepare_ms += o.prepare_ms;
        self.bills_ms += o.bills_ms;
        self.ledger_ms += o.ledger_ms;
        self.wait_prev_ms += o.wait_prev_ms;
        self.commit_ms += o.commit_ms;
        self.renumbered += o.renumbered;
    }
}

/// Chunks written at once in a pipelined commit, each on its own connection
/// in its own transaction: the next chunk's bills and entries are written
/// while the one before it finishes, so the server works on both cores.
pub const CHUNKS_IN_FLIGHT: usize = 2;

/// A chunk numbered optimistically (its numbers follow the chunk before it),
/// rendered and ready to write.
struct ChunkWrite {
    period: Period,
    /// The counter value its first issued bill follows.
    start: i64,
    bills_text: String,
    issued: Vec<crate::ledger::BillAmounts>,
    entry_ids: Vec<i64>,
}

enum ChunkFailure {
    /// The chunk before it failed, or the period's numbers moved meanwhile (a
    /// held bill released): it rolled back, to be committed again serially.
    Renumber,
    Failed(BillingError),
}

impl<E: Into<BillingError>> From<E> for ChunkFailure {
    fn from(e: E) -> Self {
        ChunkFailure::Failed(e.into())
    }
}

/// A clerk releasing a held bill while chunks are in flight takes the
/// period's next number: the chunk that expected it then meets that bill's
/// number in the unique index, or deadlocks with the release on the counter
/// (and the server aborts one). Either way the chunk rolls back and is
/// committed again, serially.
fn numbers_moved(e: sqlx::Error) -> ChunkFailure {
    if let sqlx::Error::Database(d) = &e {
        let code = d.code();
        if code.as_deref() == Some("40P01")
            || (code.as_deref() == Some("23505") && d.constraint() == Some("bills_number_idx"))
        {
            tracing::info!(error = %d, "period's numbers moved under a chunk; renumbering");
            return ChunkFailure::Renumber;
        }
    }
    ChunkFailure::Failed(e.into())
}

/// Writes a numbered chunk in its own transaction: bills and entries first,
/// then, once the chunk before it has committed, the period's counter lock;
/// the numbers stand only if the counter is where the chunk expected it.
/// Signals `done` with whether it committed.
async fn write_chunk(
    pool: PgPool,
    w: ChunkWrite,
    prev: Option<tokio::sync::oneshot::Receiver<bool>>,
    done: tokio::sync::oneshot::Sender<bool>,
) -> Result<CommitTimes, ChunkFailure> {
    let result = write_chunk_tx(&pool, w, prev).await;
    let _ = done.send(result.is_ok());
    result
}

async fn write_chunk_tx(
    pool: &PgPool,
    w: ChunkWrite,
    prev: Option<tokio::sync::oneshot::Receiver<bool>>,
) -> Result<CommitTimes, ChunkFailure> {
    let mut times = CommitTimes::default();
    let t_bills = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let ChunkWrite {
        period,
        start,
        bills_text,
        issued,
        entry_ids,
    } = w;
    let render = tokio::task::spawn_blocking(move || {
        let rows = crate::ledger::store::render_issued_chunk(&issued, &entry_ids);
        (issued, rows)
    });
    if !bills_text.is_empty() {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY billing.bills ({CHUNK_COPY_COLUMNS}) FROM STDIN"
            ))
            .await?;
        for part in bills_text.as_bytes().chunks(1 << 20) {
            copy.send(part).await.map_err(numbers_moved)?;
        }
        copy.finish().await.map_err(numbers_moved)?;
    }
    drop(bills_text);
    let t_ledger = std::time::Instant::now();
    times.bills_ms += (t_ledger - t_bills).as_millis() as u64;
    let (issued, rows) = render
        .await
        .map_err(|e| BillingError::Task(e.to_string()))?;
    crate::ledger::store::copy_new_entries(&mut tx, &rows?).await?;
    let t_wait = std::time::Instant::now();
    times.ledger_ms += (t_wait - t_ledger).as_millis() as u64;
    if let Some(prev) = prev {
        if prev.await != Ok(true) {
            return Err(ChunkFailure::Renumber);
        }
    }
    let t_lock = std::time::Instant::now();
    times.wait_prev_ms += (t_lock - t_wait).as_millis() as u64;
    let period_s = period.to_string();
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&period_s)
        .execute(&mut *tx)
        .await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT last_bill_no FROM billing.period_counters WHERE period = $1 FOR UPDATE",
    )
    .bind(&period_s)
    .fetch_one(&mut *tx)
    .await
    .map_err(numbers_moved)?;
    if last != start {
        tracing::info!(
            expected = start,
            found = last,
            "period's numbers moved; chunk renumbered"
        );
        return Err(ChunkFailure::Renumber);
    }
    crate::ledger::store::apply_chunk_credit(&mut tx, &issued).await?;
    if !issued.is_empty() {
        sqlx::query("UPDATE billing.period_counters SET last_bill_no = $2 WHERE period = $1")
            .bind(&period_s)
            .bind(start + issued.len() as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    times.commit_ms += t_lock.elapsed().as_millis() as u64;
    Ok(times)
}

/// A chunk in flight.
struct InFlight {
    bills: Vec<PreparedBill>,
    present: HashSet<String>,
    task: tokio::task::JoinHandle<Result<CommitTimes, ChunkFailure>>,
}

/// A pipelined commit: chunks are prepared (accounts already billed skipped,
/// ids drawn, numbered after the chunk before, rendered) on the run's
/// connection, then written on their own connections, at most
/// [`CHUNKS_IN_FLIGHT`] at once. Each chunk is one transaction that takes the
/// period's counter lock only after the chunk before it committed and only
/// commits if the counter is where it expected: numbers stay gapless, every
/// chunk is whole or absent, and a chunk whose numbers moved is rolled back
/// and committed again serially ([`commit_chunk`]).
struct Pipeline {
    period: Period,
    run_id: i64,
    /// The counter value the next chunk's numbers follow.
    next_start: i64,
    in_flight: std::collections::VecDeque<InFlight>,
    /// The last submitted chunk's commit signal, for the next chunk.
    last_done: Option<tokio::sync::oneshot::Receiver<bool>>,
}

impl Pipeline {
    async fn start(
        conn: &mut PgConnection,
        period: Period,
        run_id: i64,
    ) -> Result<Pipeline, BillingError> {
        let mut p = Pipeline {
            period,
            run_id,
            next_start: 0,
            in_flight: Default::default(),
            last_done: None,
        };
        p.resync(conn).await?;
        Ok(p)
    }

    /// Reads the period's counter (nothing in flight).
    async fn resync(&mut self, conn: &mut PgConnection) -> Result<(), BillingError> {
        let period = self.period.to_string();
        sqlx::query(
            "INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(&period)
        .execute(&mut *conn)
        .await?;
        self.next_start = sqlx::query_scalar(
            "SELECT last_bill_no FROM billing.period_counters WHERE period = $1",
        )
        .bind(&period)
        .fetch_one(&mut *conn)
        .await?;
        self.last_done = None;
        Ok(())
    }

    async fn submit(
        &mut self,
        conn: &mut PgConnection,
        pool: &PgPool,
        bills: Vec<PreparedBill>,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        while self.in_flight.len() >= CHUNKS_IN_FLIGHT {
            self.settle(conn, times, outcome).await?;
        }
        let started = std::time::Instant::now();
        let period = self.period.to_string();
        let accounts: Vec<&str> = bills.iter().map(|b| b.account_no.as_str()).collect();
        // Accounts billed meanwhile would fail the chunk on the unique
        // (period, account) index: whole, never half.
        let present: HashSet<String> = sqlx::query_scalar(
            "SELECT account_no FROM billing.bills WHERE period = $1 AND account_no = ANY($2)",
        )
        .bind(&period)
        .bind(&accounts)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let fresh: Vec<&PreparedBill> = bills
            .iter()
            .filter(|b| !present.contains(&b.account_no))
            .collect();
        let ids = draw_ids(conn, fresh.len()).await?;
        let start = self.next_start;
        let (bills_text, issued, entry_ids) =
            render_bills(&fresh, &ids, &self.period, self.run_id, start);
        self.next_start += issued.len() as i64;
        times.prepare_ms += started.elapsed().as_millis() as u64;
        let (done, next) = tokio::sync::oneshot::channel();
        let prev = self.last_done.replace(next);
        let task = tokio::spawn(write_chunk(
            pool.clone(),
            ChunkWrite {
                period: self.period,
                start,
                bills_text,
                issued,
                entry_ids,
            },
            prev,
            done,
        ));
        self.in_flight.push_back(InFlight {
            bills,
            present,
            task,
        });
        Ok(())
    }

    /// Waits for the oldest chunk in flight and counts it; if it had to be
    /// renumbered, waits for all and commits those again serially.
    async fn settle(
        &mut self,
        conn: &mut PgConnection,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        let Some(c) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match c.task.await {
            Ok(Ok(t)) => {
                times.add(&t);
                outcome.bills_existing += c.present.len() as u64;
                outcome.add(
                    c.bills
                        .iter()
                        .filter(|b| !c.present.contains(&b.account_no)),
                );
                Ok(())
            }
            Ok(Err(ChunkFailure::Renumber)) => {
                // Every later chunk waits for this one: none of them commits.
                let mut redo = vec![c.bills];
                let mut error = None;
                while let Some(c) = self.in_flight.pop_front() {
                    match c.task.await {
                        Ok(Err(ChunkFailure::Renumber)) => redo.push(c.bills),
                        Ok(Err(ChunkFailure::Failed(e))) => error = error.or(Some(e)),
                        Ok(Ok(_)) => {
                            error = error.or(Some(BillingError::Task(
                                "a chunk committed after one that did not".into(),
                            )))
                        }
                        Err(e) => error = error.or(Some(BillingError::Task(e.to_string()))),
                    }
                }
                if let Some(e) = error {
                    return Err(e);
                }
                for bills in redo {
                    times.renumbered += 1;
                    let present =
                        commit_chunk(conn, &self.period, self.run_id, &bills, times).await?;
                    outcome.bills_existing += present.len() as u64;
                    outcome.add(bills.iter().filter(|b| !present.contains(&b.account_no)));
                }
                self.resync(conn).await
            }
            Ok(Err(ChunkFailure::Failed(e))) => {
                self.drain().await;
                Err(e)
            }
            Err(e) => {
                self.drain().await;
                Err(BillingError::Task(e.to_string()))
            }
        }
    }

    /// Lets the chunks still in flight end (they roll back: the one before
    /// them did not commit).
    async fn drain(&mut self) {
        while let Some(c) = self.in_flight.pop_front() {
            let _ = c.task.await;
        }
    }

    async fn finish(
        mut self,
        conn: &mut PgConnection,
        times: &mut CommitTimes,
        outcome: &mut RunOutcome,
    ) -> Result<(), BillingError> {
        while !self.in_flight.is_empty() {
            self.settle(conn, times, outcome).await?;
        }
        Ok(())
    }
}

/// Draws `n` bill ids and `n` entry ids (ids drawn and not used are gaps in
/// surrogate keys only, never in bill numbers).
async fn draw_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<(i64, i64)>, BillingError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let ids: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT nextval('billing.bills_bill_id_seq'), \
                nextval('billing.journal_entries_entry_id_seq') \
           FROM generate_series(1, $1)",
    )
    .bind(n as i64)
    .fetch_all(&mut *conn)
    .await?;
    if ids.len() != n {
        return Err(BillingError::Task(format!(
            "drew {} bill ids for {n} bills",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The COPY text of `fresh` bills with ids `ids`, issued ones numbered after
/// `start`; with the issued bills' amounts and entry ids, for the ledger.
fn render_bills(
    fresh: &[&PreparedBill],
    ids: &[(i64, i64)],
    period: &Period,
    run_id: i64,
    start: i64,
) -> (String, Vec<crate::ledger::BillAmounts>, Vec<i64>) {
    use std::fmt::Write;
    let mut text = String::with_capacity(fresh.len() * 1_700);
    let mut head = String::new();
    copy_field(&mut head, &period.to_string());
    let mut issued = Vec::with_capacity(fresh.len());
    let mut entry_ids = Vec::with_capacity(fresh.len());
    let mut last = start;
    for (b, (id, entry_id)) in fresh.iter().zip(ids) {
        let _ = write!(text, "{id}\t");
        text.push_str(&head);
        text.push('\t');
        copy_field(&mut text, &b.account_no);
        let _ = write!(text, "\t{run_id}\t");
        if b.held() {
            text.push_str("\\N\theld\t");
        } else {
            last += 1;
            let _ = write!(text, "{last}\tissued\t");
            let [water_krw, sewer_krw, base_krw, levy_krw, reduction_krw] =
                b.components.map(|c| c.unwrap_or(0));
            issued.push(crate::ledger::BillAmounts {
                bill_id: *id,
                account_no: b.account_no.clone(),
                period: *period,
                water_krw,
                base_krw,
                sewer_krw,
                levy_krw,
                reduction_krw,
            });
            entry_ids.push(*entry_id);
        }
        text.push_str(&b.copy_tail);
    }
    (text, issued, entry_ids)
}

/// One transaction: the period's counter row is locked (every writer of a
/// period's bills takes it first), accounts already billed are skipped, the
/// rest numbered consecutively and COPYed straight into `billing.bills`, and
/// the counter advanced. A failure rolls back the whole chunk: no half bill,
/// no gap.
async fn commit_chunk(
    conn: &mut PgConnection,
    period: &Period,
    run_id: i64,
    chunk: &[PreparedBill],
    times: &mut CommitTimes,
) -> Result<HashSet<String>, BillingError> {
    let started = std::time::Instant::now();
    let period_s = period.to_string();
    let period_str = period_s.as_str();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(period_str)
        .execute(&mut *tx)
        .await?;
    let mut last: i64 = sqlx::query_scalar(
        "SELECT last_bill_no FROM billing.period_counters WHERE period = $1 FOR UPDATE",
    )
    .bind(period_str)
    .fetch_one(&mut *tx)
    .await?;
    let accounts: Vec<&str> = chunk.iter().map(|b| b.account_no.as_str()).collect();
    let present: HashSet<String> = sqlx::query_scalar(
        "SELECT account_no FROM billing.bills WHERE period = $1 AND account_no = ANY($2)",
    )
    .bind(period_str)
    .bind(&accounts)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let fresh: Vec<&PreparedBill> = chunk
        .iter()
        .filter(|b| !present.contains(&b.account_no))
        .collect();
    // Ids of the bills and of their ledger entries, drawn together (ids
    // drawn and not used are gaps in surrogate keys only, never in numbers).
    let ids = draw_ids(&mut tx, fresh.len()).await?;
    let t_bills = std::time::Instant::now();
    times.prepare_ms += (t_bills - started).as_millis() as u64;
    let first = last;
    let (text, issued, entry_ids) = render_bills(&fresh, &ids, period, run_id, first);
    last = first + issued.len() as i64;
    // The chunk's ledger entries are rendered on another thread while the
    // bills are written.
    let render = tokio::task::spawn_blocking(move || {
        let rows = crate::ledger::store::render_issued_chunk(&issued, &entry_ids);
        (issued, rows)
    });
    if !text.is_empty() {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY billing.bills ({CHUNK_COPY_COLUMNS}) FROM STDIN"
            ))
            .await?;
        for part in text.as_bytes().chunks(1 << 20) {
            copy.send(part).await?;
        }
        copy.finish().await?;
    }
    let t_ledger = std::time::Instant::now();
    times.bills_ms += (t_ledger - t_bills).as_millis() as u64;
    let mut t_commit = t_ledger;
    if last != first {
        // The chunk's bills are posted to the ledger in the same transaction:
        // no bill is ever issued without its entry.
        let (issued, rows) = render
            .await
            .map_err(|e| BillingError::Task(e.to_string()))?;
        crate::ledger::store::post_issued_chunk(&mut tx, &issued, &rows?).await?;
        t_commit = std::time::Instant::now();
        sqlx::query("UPDATE billing.period_counters SET last_bill_no = $2 WHERE period = $1")
            .bind(period_str)
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    times.ledger_ms += (t_commit - t_ledger).as_millis() as u64;
    tracing::debug!(
        bills = fresh.len(),
        prepare_ms = (t_bills - started).as_millis() as u64,
        bills_ms = (t_ledger - t_bills).as_millis() as u64,
        ledger_ms = (t_commit - t_ledger).as_millis() as u64,
        "chunk written"
    );
    tx.commit().await?;
    times.commit_ms += t_commit.elapsed().as_millis() as u64;
    Ok(present)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_month_is_billable_from_midnight_korean_time_after_it_ends() {
        let dec: Period = "2026-12".parse().unwrap();
        let nov: Period = "2026-11".parse().unwrap();
        // 4 December, the day of the report: December is not over, November is.
        let now = utc("2026-12-04T06:00:00Z");
        let err = admit(&dec, now, None).unwrap_err();
        assert_eq!(
            err,
            RunRefused::NotOver {
                period: dec,
                billable_from: utc("2026-12-31T15:00:00Z"),
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("period 2026-12 is not over"), "{msg}");
        assert!(msg.contains("2027-01-01 00:00 Korean time"), "{msg}");
        assert!(msg.contains("--force --reason"), "{msg}");
        assert_eq!(admit(&nov, now, None), Ok(None));
        // A future month likewise.
        let later: Period = "2027-03".parse().unwrap();
        assert!(matches!(
            admit(&later, now, None),
            Err(RunRefused::NotOver { .. })
        ));
        // The boundary is 00:00 KST on the 1st = 15:00 UTC the day before.
        assert!(admit(&nov, utc("2026-11-30T14:59:59Z"), None).is_err());
        assert_eq!(admit(&nov, utc("2026-11-30T15:00:00Z"), None), Ok(None));
    }

    #[test]
    fn forcing_an_unfinished_month_needs_a_reason() {
        let dec: Period = "2026-12".parse().unwrap();
        let now = utc("2026-12-04T06:00:00Z");
        assert_eq!(
            admit(&dec, now, Some("  council audit rehearsal ")),
            Ok(Some("council audit rehearsal".into()))
        );
        assert_eq!(
            admit(&dec, now, Some("   ")),
            Err(RunRefused::ReasonMissing)
        );
        assert_eq!(
            admit(&dec, now, Some(&"x".repeat(501))),
            Err(RunRefused::ReasonMissing)
        );
        // A month that is over needs no force: nothing to record.
        let nov: Period = "2026-11".parse().unwrap();
        assert_eq!(admit(&nov, now, Some("not needed")), Ok(None));
    }

    #[test]
    fn previous_is_the_last_month_over_in_korea() {
        // 00:30 KST on 1 December is still 30 November in UTC.
        assert_eq!(
            Period::last_complete(utc("2026-11-30T15:30:00Z")).to_string(),
            "2026-11"
        );
        assert_eq!(
            Period::last_complete(utc("2026-11-30T14:59:59Z")).to_string(),
            "2026-10"
        );
        assert_eq!(
            Period::last_complete(utc("2027-01-10T00:00:00Z")).to_string(),
            "2026-12"
        );
    }

    #[test]
    fn the_clerks_summary_groups_thousands_and_lists_what_matters() {
        let req = RunRequest {
            period: "2026-10".parse().unwrap(),
            group: "A".into(),
            dry_run: false,
        };
        let mut outcome = RunOutcome::empty(&req, 1_250, 3);
        outcome.run_id = Some(7);
        outcome.bills_created = 1_240;
        outcome.held = 7;
        outcome.usage_m3 = 25_310;
        outcome.totals_by_component = [
            ("water".to_string(), 12_345_670),
            ("levy".to_string(), 4_302_700),
            ("reduction".to_string(), -12_000),
        ]
        .into_iter()
        .collect();
        outcome.total_krw = 16_636_370;
        let report = RunReport {
            outcome,
            forced_reason: None,
            first_bill_no: Some(1),
            last_bill_no: Some(1_240),
            ledger_entries: 1_240,
            held_by_reason: [("high_usage".to_string(), 5), ("no_reading".to_string(), 2)]
                .into_iter()
                .collect(),
        };
        let text = report.render_text();
        for want in [
            "Billing run #7: period 2026-10, group A",
            "  accounts in group            1,250",
            "  billed                       1,240",
            "  held for review                  7",
            "    high_usage                     5",
            "    no_reading                     2",
            "    water                 12,345,670",
            "    levy                   4,302,700",
            "    reduction                -12,000",
            "    total                 16,636,370",
            "  bill numbers        1 to 1240",
            "  ledger entries               1,240",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("RunOutcome"), "{text}");
        // JSON: the outcome's field names, flattened, plus the report's.
        let v = serde_json::to_value(&report).unwrap();
        for key in [
            "run_id",
            "period",
            "group",
            "dry_run",
            "accounts",
            "bills_created",
            "bills_existing",
            "held",
            "estimated",
            "usage_m3",
            "totals_by_component",
            "total_krw",
            "holds",
            "forced_reason",
            "first_bill_no",
            "last_bill_no",
            "ledger_entries",
            "held_by_reason",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["period"], "2026-10");
        assert_eq!(v["held_by_reason"]["high_usage"], 5);
        assert_eq!(group_digits(-1_000), "-1,000");
        assert_eq!(group_digits(999), "999");
    }

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut out = String::new();
        copy_field(&mut out, "a\tb\nc\\d\re");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        out.clear();
        copy_field(&mut out, "상수도\t요금\\");
        assert_eq!(out, "상수도\\t요금\\\\");
        assert_eq!(
            pg_text_array(&["x \"y\"".into(), "z\\".into()]),
            "{\"x \\\"y\\\"\",\"z\\\\\"}"
        );
        assert_eq!(pg_text_array(&[]), "{}");
    }

    fn daejeon() -> TariffBook {
        TariffBook::from_toml(
            include_str!("../../../fixtures/tariffs/daejeon.toml"),
            "daejeon.toml",
        )
        .unwrap()
    }

    proptest::proptest! {
        /// Identical inputs give an identical bill and input hash; a change of
        /// any read changes the hash.
        #[test]
        fn identical_inputs_identical_bill_and_hash(
            start_l in 0i64..10_000_000, used_l in 0i64..500_000, households in 1u32..5,
        ) {
            let book = daejeon();
            let period: Period = "2026-10".parse().unwrap();
            let acct = BillableAccount {
                account: crate::accounts::Account {
                    account_no: "A1".into(),
                    customer: "c".into(),
                    address: "a".into(),
                    usage_type: "general".into(),
                    diameter_mm: 20,
                    households,
                    sewer_connected: true,
                    levy_exempt: false,
                    billing_group: "A".into(),
                    meters: vec![crate::accounts::MeterInstallation {
                        meter_id: "M1".into(),
                        installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                        removed_at: None,
                    }],
                },
                reductions: Vec::new(),
            };
            let read = |end_l: i64| RunInputs {
                accounts: vec![acct.clone()],
                existing: HashSet::new(),
                history: HashMap::new(),
                carry: HashMap::new(),
                leak_relief: HashSet::new(),
                reads: HashMap::from([("M1".to_string(), PeriodRead {
                    meter_id: "M1".into(),
                    start_ts: period.start_utc(),
                    start_volume_l: start_l,
                    end_ts: period.end_utc(),
                    end_volume_l: end_l,
                    reads: 2976,
                })]),
            };
            let policy = HoldPolicy::default();
            let a = compute_bills(&book, &period, &read(start_l + used_l), &policy);
            let b = compute_bills(&book, &period, &read(start_l + used_l), &policy);
            proptest::prop_assert_eq!(&a, &b);
            let c = compute_bills(&book, &period, &read(start_l + used_l + 1), &policy);
            proptest::prop_assert_ne!(&a[0].input_hash, &c[0].input_hash);
            // The bill's total is the sum of its lines.
            let q = a[0].quote.as_ref().unwrap();
            proptest::prop_assert_eq!(q.total_krw, q.lines.iter().map(|l| l.amount_krw).sum::<i64>());
        }
    }
}

/// Why a held bill could not be released.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReleaseError {
    #[error("no bill {0}")]
    NotFound(i64),
    #[error("bill {0} is not held")]
    NotHeld(i64),
    #[error("bill {0} could not be priced; rebill it instead")]
    Unpriced(i64),
}

/// Issues a held bill after a clerk's review: it takes the period's next bill
/// number (under the period's counter lock, so numbers stay gapless). Its hold
/// reasons stay on the bill as the record of the review.
pub async fn release_held(pool: &PgPool, bill_id: i64) -> Result<i64, BillingError> {
    release_held_by(pool, bill_id, crate::ledger::store::RUN_ACTOR).await
}

/// [`release_held`], naming who released it in the audit log.
pub async fn release_held_by(
    pool: &PgPool,
    bill_id: i64,
    actor: &str,
) -> Result<i64, BillingError> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT period, status, tariff_version FROM billing.bills WHERE bill_id = $1 FOR UPDATE",
    )
    .bind(bill_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (period, status, version) = row.ok_or(ReleaseError::NotFound(bill_id))?;
    if status != "held" {
        return Err(ReleaseError::NotHeld(bill_id).into());
    }
    if version.is_empty() {
        return Err(ReleaseError::Unpriced(bill_id).into());
    }
    sqlx::query("INSERT INTO billing.period_counters (period) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&period)
        .execute(&mut *tx)
        .await?;
    let no: i64 = sqlx::query_scalar(
        "UPDATE billing.period_counters SET last_bill_no = last_bill_no + 1 WHERE period = $1 \
         RETURNING last_bill_no",
    )
    .bind(&period)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE billing.bills SET status = 'issued', bill_no = $2 WHERE bill_id = $1")
        .bind(bill_id)
        .bind(no)
        .execute(&mut *tx)
        .await?;
    // Posted when released, in the same transaction.
    crate::ledger::store::post_bill(&mut tx, bill_id, crate::ledger::Source::Bill, actor).await?;
    crate::corrections::audit(
        &mut tx,
        actor,
        "release_bill",
        &format!("bill:{bill_id}"),
        "",
        serde_json::json!({ "bill_no": no }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(bill_id, bill_no = no, %period, "held bill released");
    Ok(no)
}
