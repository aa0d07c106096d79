//! Releasing a held bill after a clerk's review: it takes the period's next
//! bill number under the counter lock and is posted to the ledger in the same
//! transaction. It never renumbers or reprices a bill.

use crate::BillingError;
use sqlx::PgPool;

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
