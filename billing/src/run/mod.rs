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
//! committed; see `Pipeline` in `commit.rs`.
//!
//! Metering data is read only through [`ReadSource`]; in production that is
//! [`SqlReads`], ingest's `metering.period_reads_v1`.
//!
//! One file per concern: `admit` (may a run start), `reads` (what a run
//! loads), `pricing` (pure: inputs to a computed bill), `copy` (a bill's COPY
//! text), `commit` (the chunked, pipelined commit), `release` (a held bill
//! issued after review), `report` (the clerk's summary). This file holds the
//! request and outcome and the entry points that run them in that order.

mod admit;
mod commit;
mod copy;
mod pricing;
mod reads;
mod release;
mod report;

pub use admit::{admit, record_forced_run, RunRefused};
pub(crate) use commit::insert_issued_bill;
pub use commit::CHUNKS_IN_FLIGHT;
pub(crate) use copy::copy_field;
pub use copy::PreparedBill;
pub use pricing::{bill_account, compute_bill, compute_bills, ComputedBill};
pub use reads::{load_inputs, ReadSource, RunInputs, SqlReads, StaticReads};
pub use release::{release_held, release_held_by, ReleaseError};
pub use report::RunReport;

use crate::period::Period;
use crate::tariff::{Component, TariffBook};
use crate::usage::HoldPolicy;
use crate::BillingError;
use commit::{commit_chunk, CommitTimes, Pipeline};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
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
