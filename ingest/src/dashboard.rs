//! The sampler that keeps the operators' dashboard data (issue 9), served
//! under `/api/v1/dashboard/...` by [`crate::http::dashboard`].
//!
//! The sampler ([`sample`], every [`SAMPLE_INTERVAL_S`]) turns cluster-wide
//! totals already in the schema (`metering.gateways`' stored-reading and
//! batch counters, the quarantine's ids, the meters' high-water marks) into
//! per-minute rows of `metering.ingest_minutes`, and tracks alarms with
//! since-when in `metering.meter_alarms`. It reads what the writer keeps and
//! never touches the writer's path: one sampler at a time (an advisory lock)
//! does the work, so any number of replicas may run it. It must never
//! write what the writer keeps.

use crate::consumer::Shared;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Seconds between two samples.
pub const SAMPLE_INTERVAL_S: u64 = 10;
/// Per-minute rows are kept this many days.
pub const MINUTES_KEPT_DAYS: i32 = 8;
/// Cleared alarms are kept this many days.
pub const CLEARED_ALARMS_KEPT_DAYS: i32 = 90;
/// Advisory lock key of the sampler (one at a time across replicas).
const SAMPLER_LOCK: i64 = 0x5757_4441_5348; // "WWDASH"

type S = Arc<Shared>;

/// Samples every [`SAMPLE_INTERVAL_S`] until `shutdown`. A failed sample is
/// logged and the next one tries again (the cursor makes it catch up).
pub async fn sample(shared: S, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_INTERVAL_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sample_once(&shared.pool).await {
            Ok(true) => metrics::counter!("ingest_dashboard_samples_total").increment(1),
            Ok(false) => {}
            // A sample cut short by the shutdown (pool closing) is no news.
            Err(e) if shutdown.is_cancelled() => {
                tracing::debug!(error = %e, "dashboard sample stopped by the shutdown");
            }
            Err(e) => {
                metrics::counter!("ingest_dashboard_sample_errors_total").increment(1);
                tracing::warn!(error = %e, "dashboard sample failed");
            }
        }
    }
}

/// One sample; `false` when another replica holds the sampler lock.
pub async fn sample_once(pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SAMPLER_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(false);
    }
    let (readings, batches): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(readings), 0)::bigint, coalesce(sum(batches), 0)::bigint
           FROM metering.gateways",
    )
    .fetch_one(&mut *tx)
    .await?;
    let quarantine_id: i64 =
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM metering.quarantine")
            .fetch_one(&mut *tx)
            .await?;
    let cursor: Option<(i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT readings, batches, quarantine_id, sampled_at FROM metering.dashboard_cursor
          WHERE id = 1 FOR UPDATE",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((prev_readings, prev_batches, prev_q, prev_at)) = cursor {
        let quarantined: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM metering.quarantine WHERE id > $1 AND id <= $2",
        )
        .bind(prev_q)
        .bind(quarantine_id)
        .fetch_one(&mut *tx)
        .await?;
        // Lag: how long after its time the newest reading of each meter
        // stored since the last sample was stored.
        let lag_ms: Option<i64> = sqlx::query_scalar(
            "SELECT (max(extract(epoch FROM last_seen_at - last_ts)) * 1000)::bigint
               FROM metering.meters WHERE last_seen_at > $1 AND last_ts IS NOT NULL",
        )
        .bind(prev_at)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO metering.ingest_minutes (minute, readings, batches, quarantined, lag_ms_max, samples)
             VALUES (date_trunc('minute', now()), $1, $2, $3, $4, 1)
             ON CONFLICT (minute) DO UPDATE SET
                 readings = metering.ingest_minutes.readings + excluded.readings,
                 batches = metering.ingest_minutes.batches + excluded.batches,
                 quarantined = metering.ingest_minutes.quarantined + excluded.quarantined,
                 lag_ms_max = greatest(metering.ingest_minutes.lag_ms_max, excluded.lag_ms_max),
                 samples = metering.ingest_minutes.samples + 1",
        )
        .bind((readings - prev_readings).max(0))
        .bind((batches - prev_batches).max(0))
        .bind(quarantined)
        .bind(lag_ms.map(|l| l.max(0)))
        .execute(&mut *tx)
        .await?;
    }
    // The first sample only sets the cursor: history is not one minute's work.
    sqlx::query(
        "INSERT INTO metering.dashboard_cursor (id, readings, batches, quarantine_id, sampled_at)
         VALUES (1, $1, $2, $3, now())
         ON CONFLICT (id) DO UPDATE SET readings = $1, batches = $2, quarantine_id = $3, sampled_at = now()",
    )
    .bind(readings)
    .bind(batches)
    .bind(quarantine_id)
    .execute(&mut *tx)
    .await?;
    track_alarms(&mut tx).await?;
    sqlx::query(
        "DELETE FROM metering.ingest_minutes WHERE minute < now() - make_interval(days => $1)",
    )
    .bind(MINUTES_KEPT_DAYS)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM metering.meter_alarms WHERE cleared_at < now() - make_interval(days => $1)",
    )
    .bind(CLEARED_ALARMS_KEPT_DAYS)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Opens a row for each alarm a meter's newest reading carries that has no
/// open row (since: that reading's time), and closes open rows whose alarm
/// the newest reading no longer carries.
async fn track_alarms(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO metering.meter_alarms (meter_id, alarm, since)
         SELECT m.meter_id, a.alarm, coalesce(m.last_ts, now())
           FROM metering.meters m, unnest(m.last_alarms) AS a(alarm)
          WHERE cardinality(coalesce(m.last_alarms, '{}')) > 0
         ON CONFLICT (meter_id, alarm) WHERE cleared_at IS NULL DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE metering.meter_alarms x SET cleared_at = now()
          WHERE x.cleared_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM metering.meters m
                             WHERE m.meter_id = x.meter_id
                               AND x.alarm = ANY (coalesce(m.last_alarms, '{}')))",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
