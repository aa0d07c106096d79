//! Accounts: who is billed, for which premises, with which meters over time.
//!
//! The meter history matters: a meter exchanged mid-period bills both legs.
//! This module writes only `billing.accounts` and `billing.meter_installations`.

use crate::BillingError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Accounts written per statement (a bound on statement size).
pub const UPSERT_CHUNK: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub account_no: String,
    pub customer: String,
    /// The service address of the premises.
    pub address: String,
    /// A usage type of the tariff (`household`, `general`, ...).
    pub usage_type: String,
    pub diameter_mm: u32,
    pub households: u32,
    pub sewer_connected: bool,
    pub levy_exempt: bool,
    /// Runs are per period and billing group.
    pub billing_group: String,
    /// Every meter ever installed at the premises, oldest first.
    pub meters: Vec<MeterInstallation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterInstallation {
    pub meter_id: String,
    pub installed_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

impl MeterInstallation {
    /// Whether the meter was in place at some instant of `[from, to)`.
    pub fn overlaps(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.installed_at < to && self.removed_at.is_none_or(|r| r > from)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("account {0:?}: account_no must be 1-64 printable characters")]
    AccountNo(String),
    #[error("account {0}: households must be at least 1")]
    Households(String),
    #[error("account {0}: diameter_mm must be at least 1")]
    Diameter(String),
    #[error("account {0}: meter {1} is removed before it is installed")]
    Installation(String, String),
    #[error("account {0}: {1} must be at most 2147483647")]
    TooBig(String, &'static str),
    #[error("account {0} appears twice in one upsert")]
    Duplicate(String),
}

impl Account {
    pub fn validate(&self) -> Result<(), AccountError> {
        let no = &self.account_no;
        if no.is_empty() || no.len() > 64 || no.chars().any(char::is_control) {
            return Err(AccountError::AccountNo(no.chars().take(64).collect()));
        }
        if self.households == 0 {
            return Err(AccountError::Households(no.clone()));
        }
        if self.diameter_mm == 0 {
            return Err(AccountError::Diameter(no.clone()));
        }
        // Stored as int4.
        for (v, what) in [
            (self.diameter_mm, "diameter_mm"),
            (self.households, "households"),
        ] {
            if i32::try_from(v).is_err() {
                return Err(AccountError::TooBig(no.clone(), what));
            }
        }
        for m in &self.meters {
            if m.removed_at.is_some_and(|r| r <= m.installed_at) {
                return Err(AccountError::Installation(no.clone(), m.meter_id.clone()));
            }
        }
        Ok(())
    }
}

/// Inserts or updates accounts; each account's meter history is replaced by
/// the one given. All or nothing: one transaction. (Imports and the demo;
/// a person's change goes through [`upsert_accounts_audited`].)
#[tracing::instrument(skip_all, fields(accounts = accounts.len()))]
pub async fn upsert_accounts(pool: &PgPool, accounts: &[Account]) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    upsert_accounts_in(&mut tx, accounts).await?;
    tx.commit().await?;
    Ok(())
}

/// [`upsert_accounts`] by a person (the API's admin): the audit record
/// (`upsert_accounts`, who, which accounts) is written in the same
/// transaction, so there is never a change without its record or a record
/// without its change.
#[tracing::instrument(skip_all, fields(accounts = accounts.len()))]
pub async fn upsert_accounts_audited(
    pool: &PgPool,
    accounts: &[Account],
    actor: &str,
) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    upsert_accounts_in(&mut tx, accounts).await?;
    crate::corrections::audit(
        &mut tx,
        actor,
        "upsert_accounts",
        "accounts",
        "",
        serde_json::json!({ "accounts": accounts.iter().map(|a| &a.account_no).collect::<Vec<_>>() }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn upsert_accounts_in(
    tx: &mut sqlx::PgConnection,
    accounts: &[Account],
) -> Result<(), BillingError> {
    let mut seen = std::collections::HashSet::with_capacity(accounts.len());
    for a in accounts {
        a.validate()?;
        if !seen.insert(a.account_no.as_str()) {
            return Err(AccountError::Duplicate(a.account_no.clone()).into());
        }
    }
    for chunk in accounts.chunks(UPSERT_CHUNK) {
        let col = |f: fn(&Account) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let int = |f: fn(&Account) -> u32| {
            chunk
                .iter()
                .map(|a| i32::try_from(f(a)).unwrap_or(i32::MAX))
                .collect::<Vec<i32>>()
        };
        let flag = |f: fn(&Account) -> bool| chunk.iter().map(f).collect::<Vec<bool>>();
        sqlx::query(
            "INSERT INTO billing.accounts (account_no, customer, address, usage_type, diameter_mm, \
                 households, sewer_connected, levy_exempt, billing_group) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], \
                 $6::int4[], $7::bool[], $8::bool[], $9::text[]) \
             ON CONFLICT (account_no) DO UPDATE SET customer = EXCLUDED.customer, \
                 address = EXCLUDED.address, usage_type = EXCLUDED.usage_type, \
                 diameter_mm = EXCLUDED.diameter_mm, households = EXCLUDED.households, \
                 sewer_connected = EXCLUDED.sewer_connected, levy_exempt = EXCLUDED.levy_exempt, \
                 billing_group = EXCLUDED.billing_group, updated_at = now()",
        )
        .bind(col(|a| a.account_no.clone()))
        .bind(col(|a| a.customer.clone()))
        .bind(col(|a| a.address.clone()))
        .bind(col(|a| a.usage_type.clone()))
        .bind(int(|a| a.diameter_mm))
        .bind(int(|a| a.households))
        .bind(flag(|a| a.sewer_connected))
        .bind(flag(|a| a.levy_exempt))
        .bind(col(|a| a.billing_group.clone()))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM billing.meter_installations WHERE account_no = ANY($1)")
            .bind(col(|a| a.account_no.clone()))
            .execute(&mut *tx)
            .await?;
        let legs: Vec<(&Account, &MeterInstallation)> = chunk
            .iter()
            .flat_map(|a| a.meters.iter().map(move |m| (a, m)))
            .collect();
        // No ON CONFLICT: an installation that overlaps another of the same
        // meter or premises (the exclusion constraints, 23P01) or repeats
        // one (23505) refuses the whole request (422), never a silent skip.
        sqlx::query(
            "INSERT INTO billing.meter_installations (account_no, meter_id, installed_at, removed_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])",
        )
        .bind(legs.iter().map(|(a, _)| a.account_no.clone()).collect::<Vec<_>>())
        .bind(legs.iter().map(|(_, m)| m.meter_id.clone()).collect::<Vec<_>>())
        .bind(legs.iter().map(|(_, m)| m.installed_at).collect::<Vec<_>>())
        .bind(legs.iter().map(|(_, m)| m.removed_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Grants or withdraws tariff reductions (names from the tariff) for an
/// account, with its audit record (`set_reductions`, who, which) in the same
/// transaction. Returns false, changing nothing, if the account does not exist.
pub async fn set_reductions(
    pool: &PgPool,
    account_no: &str,
    reductions: &[String],
    actor: &str,
) -> Result<bool, BillingError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE billing.accounts SET reductions = $2, updated_at = now() WHERE account_no = $1",
    )
    .bind(account_no)
    .bind(reductions)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    crate::corrections::audit(
        &mut tx,
        actor,
        "set_reductions",
        &format!("account:{account_no}"),
        "",
        serde_json::json!({ "reductions": reductions }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Records a clerk's approval of leak relief for an account's usage month.
/// Returns false if the account does not exist.
pub async fn approve_leak_relief(
    pool: &PgPool,
    account_no: &str,
    period: &crate::Period,
    approved_by: &str,
) -> Result<bool, BillingError> {
    let n = sqlx::query(
        "INSERT INTO billing.leak_relief (account_no, period, approved_by) \
         SELECT account_no, $2, $3 FROM billing.accounts WHERE account_no = $1 \
         ON CONFLICT (account_no, period) DO UPDATE SET approved_by = EXCLUDED.approved_by",
    )
    .bind(account_no)
    .bind(period.to_string())
    .bind(approved_by)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// An account as a run sees it: the account plus its granted reductions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillableAccount {
    pub account: Account,
    pub reductions: Vec<String>,
}

/// Every account of `group` with its meters, ordered by account number.
pub async fn load_group(pool: &PgPool, group: &str) -> Result<Vec<BillableAccount>, BillingError> {
    load_where(pool, "a.billing_group = $1", group).await
}

/// One account with its meters.
pub async fn load_one(
    pool: &PgPool,
    account_no: &str,
) -> Result<Option<BillableAccount>, BillingError> {
    Ok(load_where(pool, "a.account_no = $1", account_no)
        .await?
        .pop())
}

async fn load_where(
    pool: &PgPool,
    filter: &str,
    value: &str,
) -> Result<Vec<BillableAccount>, BillingError> {
    use sqlx::Row;
    // One pass: accounts joined to their installations, in account order.
    let rows = sqlx::query(&format!(
        "SELECT a.account_no, a.customer, a.address, a.usage_type, a.diameter_mm, a.households, \
                a.sewer_connected, a.levy_exempt, a.reductions, m.meter_id, m.installed_at, m.removed_at, \
                a.billing_group \
           FROM billing.accounts a \
           LEFT JOIN billing.meter_installations m USING (account_no) \
          WHERE {filter} ORDER BY a.account_no, m.installed_at, m.meter_id"
    ))
    .bind(value)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<BillableAccount> = Vec::new();
    for r in rows {
        let account_no: String = r.try_get(0)?;
        if out
            .last()
            .is_none_or(|a| a.account.account_no != account_no)
        {
            out.push(BillableAccount {
                account: Account {
                    account_no,
                    customer: r.try_get(1)?,
                    address: r.try_get(2)?,
                    usage_type: r.try_get(3)?,
                    diameter_mm: r.try_get::<i32, _>(4)?.max(0) as u32,
                    households: r.try_get::<i32, _>(5)?.max(0) as u32,
                    sewer_connected: r.try_get(6)?,
                    levy_exempt: r.try_get(7)?,
                    billing_group: r.try_get(12)?,
                    meters: Vec::new(),
                },
                reductions: r.try_get(8)?,
            });
        }
        let meter_id: Option<String> = r.try_get(9)?;
        if let (Some(meter_id), Some(acct)) = (meter_id, out.last_mut()) {
            acct.account.meters.push(MeterInstallation {
                meter_id,
                installed_at: r.try_get(10)?,
                removed_at: r.try_get(11)?,
            });
        }
    }
    Ok(out)
}

impl From<waterworks_api::billing::MeterInstallation> for MeterInstallation {
    fn from(m: waterworks_api::billing::MeterInstallation) -> Self {
        MeterInstallation {
            meter_id: m.meter_id,
            installed_at: m.installed_at,
            removed_at: m.removed_at,
        }
    }
}

/// An account as the API receives it (validated by [`Account::validate`]
/// when it is written).
impl From<waterworks_api::billing::Account> for Account {
    fn from(a: waterworks_api::billing::Account) -> Self {
        Account {
            account_no: a.account_no,
            customer: a.customer,
            address: a.address,
            usage_type: a.usage_type,
            diameter_mm: a.diameter_mm,
            households: a.households,
            sewer_connected: a.sewer_connected,
            levy_exempt: a.levy_exempt,
            billing_group: a.billing_group,
            meters: a.meters.into_iter().map(MeterInstallation::from).collect(),
        }
    }
}
