//! Corrections: cancel a bill, rebill it, adjust it; and the audit log.
//!
//! Nothing is edited in place in the ledger: a cancellation posts the exact
//! mirror of the bill's entry, then moves whatever was paid on the bill to the
//! customer's credit (and applies that credit to their other open bills). A
//! rebill cancels the bill and issues a new one that names it (`rebill_of`);
//! the new bill takes the next number of the same period from the period's
//! counter, so numbering stays gapless (the cancelled bill keeps its number).
//! Every correction needs a reason and is written to `billing.audit_log` with
//! who and when, in the same transaction.

use crate::accounts::load_one;
use crate::ledger::store::{
    apply_credit, bill_open, lock_party, post_bill, post_entry, posted_entry,
};
use crate::ledger::{
    adjustment_entry, bill_key, close_cancelled_entry, reversal_entry, LedgerError, Part, Source,
};
use crate::period::{kst, Period};
use crate::run::{bill_account, PreparedBill, ReadSource, RunInputs};
use crate::tariff::TariffBook;
use crate::usage::{HoldPolicy, LegCarry, PeriodRead, PriorBill};
use crate::BillingError;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
pub use waterworks_api::billing::AuditRecord;

/// Longest reason accepted.
pub const MAX_REASON_CHARS: usize = 500;

/// Why a correction was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorrectionError {
    #[error("a reason (1-{MAX_REASON_CHARS} characters) is required")]
    Reason,
    #[error("bill {0} could not be priced: {1}")]
    Unpriced(i64, String),
    #[error("account {0} no longer exists")]
    NoAccount(String),
    #[error("adjustment key must be 1-64 characters")]
    Key,
}

/// Today in Korea (entries' effective dates).
pub fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&kst()).date_naive()
}

fn check_reason(reason: &str) -> Result<(), CorrectionError> {
    let n = reason.trim().chars().count();
    if n == 0 || n > MAX_REASON_CHARS {
        return Err(CorrectionError::Reason);
    }
    Ok(())
}

/// Appends to the audit log (who, what, on what, why) in the caller's transaction.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    target: &str,
    reason: &str,
    details: serde_json::Value,
) -> Result<(), BillingError> {
    sqlx::query(
        "INSERT INTO billing.audit_log (actor, action, target, reason, details) VALUES ($1, $2, $3, $4, $5::jsonb)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(reason)
    .bind(details.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The newest audit records, optionally for one target.
pub async fn audit_log(
    pool: &PgPool,
    target: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRecord>, BillingError> {
    Ok(sqlx::query_as(
        "SELECT audit_id, at, actor, action, target, reason, details FROM billing.audit_log \
          WHERE ($1::text IS NULL OR target = $1) ORDER BY audit_id DESC LIMIT $2",
    )
    .bind(target)
    .bind(limit.clamp(1, 1_000))
    .fetch_all(pool)
    .await?)
}

/// Locks an issued bill's row; returns its account.
async fn lock_issued(conn: &mut PgConnection, bill_id: i64) -> Result<String, BillingError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT status, account_no FROM billing.bills WHERE bill_id = $1 FOR UPDATE",
    )
    .bind(bill_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (status, account_no) = row.ok_or(LedgerError::NoBill(bill_id))?;
    if status != "issued" {
        return Err(LedgerError::NotIssued(bill_id, status).into());
    }
    Ok(account_no)
}

/// Cancels an issued bill in the caller's transaction.
async fn cancel_in(
    conn: &mut PgConnection,
    bill_id: i64,
    reason: &str,
    actor: &str,
) -> Result<(), BillingError> {
    let party = lock_issued(conn, bill_id).await?;
    lock_party(conn, &party).await?;
    let on = today();
    let original = match posted_entry(conn, &bill_key(bill_id)).await? {
        Some(e) => e,
        None => {
            // Issued before the ledger existed: post it, then reverse it.
            post_bill(conn, bill_id, Source::Bill, actor).await?;
            posted_entry(conn, &bill_key(bill_id))
                .await?
                .ok_or(LedgerError::NoBill(bill_id))?
        }
    };
    let reversal = reversal_entry(
        &original,
        format!("cancel:{bill_id}"),
        on,
        format!("cancellation of bill {bill_id}: {reason}"),
    );
    post_entry(conn, &reversal, actor).await?;
    let open = bill_open(conn, bill_id).await?;
    let adjusted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(p.amount_krw), 0)::int8 FROM billing.postings p \
           JOIN billing.journal_entries e USING (entry_id) \
          WHERE p.party = $2 AND p.bill_id = $1 AND p.ledger_account = '1100' \
            AND e.source = 'adjustment'",
    )
    .bind(bill_id)
    .bind(&party)
    .fetch_one(&mut *conn)
    .await?;
    if let Some(e) = close_cancelled_entry(
        &party,
        bill_id,
        &open,
        adjusted,
        format!("cancel:{bill_id}:close"),
        on,
    ) {
        post_entry(conn, &e, actor).await?;
    }
    sqlx::query(
        "UPDATE billing.bills SET status = 'cancelled', cancelled_at = now() WHERE bill_id = $1",
    )
    .bind(bill_id)
    .execute(&mut *conn)
    .await?;
    apply_credit(conn, &party, format!("credit:cancel:{bill_id}"), on, actor).await?;
    audit(
        conn,
        actor,
        "cancel_bill",
        &format!("bill:{bill_id}"),
        reason,
        serde_json::json!({ "account_no": party }),
    )
    .await
}

/// Cancels an issued bill: an exact reversal of its entry; what was paid on
/// it becomes the customer's credit, adjustments made to it are reversed.
pub async fn cancel_bill(
    pool: &PgPool,
    bill_id: i64,
    reason: &str,
    actor: &str,
) -> Result<(), BillingError> {
    check_reason(reason)?;
    let mut tx = pool.begin().await?;
    cancel_in(&mut tx, bill_id, reason, actor).await?;
    tx.commit().await?;
    tracing::info!(bill_id, actor, "bill cancelled");
    Ok(())
}

/// A rebill: why, and corrected reads (meters not listed are read as a run
/// reads them). The tariff is the service's current tariff file (a corrected
/// tariff is a corrected file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebillRequest {
    pub reason: String,
    #[serde(default)]
    pub reads: Vec<PeriodRead>,
}

/// What a rebill did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebillOutcome {
    pub cancelled_bill_id: i64,
    pub bill_id: i64,
    pub bill_no: i64,
    pub total_krw: i64,
}

/// Cancels `bill_id` and issues a corrected bill in its place (same period,
/// next number of that period, `rebill_of` = the cancelled bill).
#[tracing::instrument(skip_all, fields(bill_id))]
pub async fn rebill(
    pool: &PgPool,
    book: &TariffBook,
    bill_id: i64,
    req: &RebillRequest,
    reads: &impl ReadSource,
    policy: &HoldPolicy,
    actor: &str,
) -> Result<RebillOutcome, BillingError> {
    check_reason(&req.reason)?;
    let (period, account_no, run_id): (String, String, i64) =
        sqlx::query_as("SELECT period, account_no, run_id FROM billing.bills WHERE bill_id = $1")
            .bind(bill_id)
            .fetch_optional(pool)
            .await?
            .ok_or(LedgerError::NoBill(bill_id))?;
    let period: Period = period
        .parse()
        .map_err(|e: crate::period::PeriodError| BillingError::Task(e.to_string()))?;
    let acct = load_one(pool, &account_no)
        .await?
        .ok_or_else(|| CorrectionError::NoAccount(account_no.clone()))?;

    // The account's inputs as a run would load them, minus cancelled bills.
    let periods: Vec<String> = (1..=crate::usage::HISTORY_PERIODS as i32)
        .map(|n| period.add_months(-n).to_string())
        .collect();
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT period, usage_m3, legs::text FROM billing.bills \
          WHERE account_no = $1 AND period = ANY($2) AND status <> 'cancelled' ORDER BY period",
    )
    .bind(&account_no)
    .bind(&periods)
    .fetch_all(pool)
    .await?;
    let mut history = Vec::new();
    let mut carry: HashMap<String, LegCarry> = HashMap::new();
    for (p, usage_m3, _) in &rows {
        let Ok(p) = p.parse::<Period>() else { continue };
        history.push(PriorBill {
            period: p,
            usage_m3: *usage_m3,
        });
    }
    if let Some((_, _, legs)) = rows.last() {
        let legs: Vec<crate::usage::Leg> = serde_json::from_str(legs).unwrap_or_default();
        for leg in legs {
            carry.insert(leg.meter_id.clone(), leg.next_carry());
        }
    }
    let meters: HashSet<&str> = acct
        .account
        .meters
        .iter()
        .map(|m| m.meter_id.as_str())
        .collect();
    let mut read_map: HashMap<String, PeriodRead> = HashMap::new();
    let given: HashSet<&str> = req.reads.iter().map(|r| r.meter_id.as_str()).collect();
    if !meters.iter().all(|m| given.contains(m)) {
        for r in reads.period_reads(&period).await? {
            if meters.contains(r.meter_id.as_str()) {
                read_map.insert(r.meter_id.clone(), r);
            }
        }
    }
    for r in &req.reads {
        if meters.contains(r.meter_id.as_str()) {
            read_map.insert(r.meter_id.clone(), r.clone());
        }
    }
    let relief: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM billing.leak_relief WHERE account_no = $1 AND period = $2)",
    )
    .bind(&account_no)
    .bind(period.to_string())
    .fetch_one(pool)
    .await?;
    let inputs = RunInputs {
        accounts: vec![acct.clone()],
        existing: HashSet::new(),
        history: HashMap::from([(account_no.clone(), history)]),
        carry: HashMap::from([(account_no.clone(), carry)]),
        reads: read_map,
        leak_relief: if relief {
            HashSet::from([account_no.clone()])
        } else {
            HashSet::new()
        },
    };
    let computed = bill_account(book, &period, &inputs, &acct, policy);
    if computed.quote.is_none() {
        return Err(CorrectionError::Unpriced(bill_id, computed.hold_reasons.join("; ")).into());
    }
    let prepared = PreparedBill::new(&computed, true);

    let mut tx = pool.begin().await?;
    cancel_in(&mut tx, bill_id, &req.reason, actor).await?;
    let p = period.to_string();
    let (new_id, bill_no) = crate::run::insert_issued_bill(&mut tx, &p, run_id, &prepared).await?;
    sqlx::query("UPDATE billing.bills SET rebill_of = $2 WHERE bill_id = $1")
        .bind(new_id)
        .bind(bill_id)
        .execute(&mut *tx)
        .await?;
    post_bill(&mut tx, new_id, Source::Rebill, actor).await?;
    audit(
        &mut tx,
        actor,
        "rebill",
        &format!("bill:{bill_id}"),
        &req.reason,
        serde_json::json!({ "new_bill_id": new_id, "bill_no": bill_no,
            "total_krw": prepared.total_krw, "corrected_reads": req.reads.len(),
            "tariff_fingerprint": book.fingerprint() }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(bill_id, new_id, bill_no, "bill rebilled");
    Ok(RebillOutcome {
        cancelled_bill_id: bill_id,
        bill_id: new_id,
        bill_no,
        total_krw: prepared.total_krw,
    })
}

/// An adjustment of one part of a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// `levy`, `sewer`, `base` or `water`.
    pub part: Part,
    /// Positive raises what the customer owes; negative lowers it (at most to zero).
    pub amount_krw: i64,
    pub reason: String,
    /// Idempotency key chosen by the clerk's client (1-64 characters).
    pub key: String,
}

/// Adjusts one part of an issued bill, against the "adjustments" account.
pub async fn adjust_bill(
    pool: &PgPool,
    bill_id: i64,
    req: &AdjustmentRequest,
    actor: &str,
) -> Result<i64, BillingError> {
    check_reason(&req.reason)?;
    if req.key.is_empty() || req.key.len() > 64 {
        return Err(CorrectionError::Key.into());
    }
    if req.amount_krw == 0 || req.amount_krw.abs() > crate::payments::MAX_PAYMENT_KRW {
        return Err(LedgerError::Amount(req.amount_krw).into());
    }
    let mut tx = pool.begin().await?;
    let party = lock_issued(&mut tx, bill_id).await?;
    lock_party(&mut tx, &party).await?;
    let key = format!("adjust:{}", req.key);
    let open = bill_open(&mut tx, bill_id)
        .await?
        .into_iter()
        .find(|(p, _)| *p == req.part)
        .map_or(0, |(_, v)| v);
    let e = adjustment_entry(
        &party,
        bill_id,
        req.part,
        req.amount_krw,
        key.clone(),
        &req.reason,
        today(),
    );
    let existing = posted_entry(&mut tx, &key).await?;
    if existing.is_none() && open + req.amount_krw < 0 {
        return Err(LedgerError::OverAdjusted {
            bill_id,
            part: req.part.as_str(),
            amount_krw: req.amount_krw,
            open_krw: open,
        }
        .into());
    }
    let (entry_id, posted) = post_entry(&mut tx, &e, actor).await?;
    if posted {
        apply_credit(&mut tx, &party, format!("credit:{key}"), today(), actor).await?;
        audit(
            &mut tx,
            actor,
            "adjust_bill",
            &format!("bill:{bill_id}"),
            &req.reason,
            serde_json::json!({ "part": req.part, "amount_krw": req.amount_krw, "entry_id": entry_id }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(entry_id)
}
