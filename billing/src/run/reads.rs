//! What a run loads before pricing: the billing group's accounts, their prior
//! bills (history and meter carries), approved leak relief, and each meter's
//! reads for the period through a [`ReadSource`]. In production that source is
//! [`SqlReads`], ingest's versioned `metering.period_reads_v1`: billing never
//! reads ingest's tables directly, and nothing here writes.

use crate::accounts::{load_group, BillableAccount};
use crate::period::Period;
use crate::usage::{LegCarry, PeriodRead, PriorBill};
use crate::BillingError;
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::future::Future;

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

impl RunInputs {
    /// The accounts without a bill for the period yet, in account order.
    pub fn to_bill(&self) -> impl Iterator<Item = &BillableAccount> {
        self.accounts
            .iter()
            .filter(|a| !self.existing.contains(&a.account.account_no))
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
