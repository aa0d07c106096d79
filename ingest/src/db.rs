//! The database edge: migrations (in schema `metering`, history in
//! `metering._sqlx_migrations`) and day partitions of `metering.readings`.

use crate::IngestError;
use chrono::NaiveDate;
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Mutex;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Advisory lock keys (an arbitrary constant per purpose, "WWIN" + n).
const MIGRATE_LOCK_KEY: i64 = 0x5757_494E_0001;
const PARTITION_LOCK_KEY: i64 = 0x5757_494E_0002;
/// Most day partitions created in one call; more days in one batch is a
/// sign of junk timestamps, which validation refuses anyway.
pub const MAX_NEW_PARTITIONS_PER_BATCH: usize = 64;

/// Applies the migrations; idempotent, and safe when replicas start at once
/// (an advisory lock serializes them).
pub async fn migrate(pool: &PgPool) -> Result<(), IngestError> {
    waterworks_service::db::migrate_schema(pool, "metering", &MIGRATOR, MIGRATE_LOCK_KEY).await?;
    Ok(())
}

/// Checks that every migration of this build is applied, changing nothing:
/// ingest's start-up check when it does not migrate (`migrate_on_start`).
pub async fn check(pool: &PgPool) -> Result<(), IngestError> {
    waterworks_service::db::check_schema(pool, "metering", &MIGRATOR).await?;
    Ok(())
}

/// Day partitions known to exist (created by this process or seen).
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<HashSet<NaiveDate>>,
}

impl Partitions {
    /// Makes sure a partition exists for each day (UTC). Runs in its own
    /// short transaction, before the batch's, because creating a partition
    /// locks the parent table.
    pub async fn ensure(&self, pool: &PgPool, days: &[NaiveDate]) -> Result<(), IngestError> {
        let missing: Vec<NaiveDate> = {
            let known = self.known.lock().expect("partition cache poisoned");
            let mut m: Vec<NaiveDate> = days
                .iter()
                .filter(|d| !known.contains(d))
                .copied()
                .collect();
            m.sort();
            m.dedup();
            m.truncate(MAX_NEW_PARTITIONS_PER_BATCH);
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        // Partitions made by another replica or the maintenance task of an
        // earlier run: learn them all in one read instead of a locked
        // transaction per day.
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'metering.readings'::regclass",
        )
        .fetch_all(pool)
        .await?;
        let missing: Vec<NaiveDate> = {
            let mut known = self.known.lock().expect("partition cache poisoned");
            known.extend(existing.iter().filter_map(|n| {
                NaiveDate::parse_from_str(n.strip_prefix("readings_")?, "%Y%m%d").ok()
            }));
            missing.into_iter().filter(|d| !known.contains(d)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PARTITION_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let mut created = 0;
        for d in &missing {
            let new: bool = sqlx::query_scalar("SELECT metering.ensure_day_partition($1)")
                .bind(d)
                .fetch_one(&mut *tx)
                .await?;
            created += usize::from(new);
        }
        tx.commit().await?;
        if created > 0 {
            tracing::info!(created, "day partitions created");
        }
        self.known
            .lock()
            .expect("partition cache poisoned")
            .extend(missing);
        Ok(())
    }
}

/// Days (UTC) older than this many days before today are compacted by the
/// maintenance task: today and yesterday stay hot (late readings are most
/// likely there; a late reading for a compacted day still lands hot and is
/// folded in by the next compaction).
pub const COMPACT_AFTER_DAYS: i64 = 2;

/// Compacts one UTC day (see `metering.compact_day` in migration 0003):
/// returns the meter-days written. Safe while writers run.
pub async fn compact_day(pool: &PgPool, day: NaiveDate) -> Result<u64, IngestError> {
    let n: i64 = sqlx::query_scalar("SELECT metering.compact_day($1)")
        .bind(day)
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Compacts every day partition older than [`COMPACT_AFTER_DAYS`] that holds
/// hot readings (the day's first compaction, or late readings since).
pub async fn compact_closed_days(pool: &PgPool, today: NaiveDate) -> Result<u64, IngestError> {
    let before = today - chrono::Duration::days(COMPACT_AFTER_DAYS);
    let days: Vec<NaiveDate> = sqlx::query_scalar(
        "SELECT to_date(substr(c.relname, 10), 'YYYYMMDD') FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
          WHERE n.nspname = 'metering' AND p.relname = 'readings'
            AND c.relname ~ '^readings_[0-9]{8}$'
            AND to_date(substr(c.relname, 10), 'YYYYMMDD') < $1
          ORDER BY 1",
    )
    .bind(before)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    for day in days {
        let n = compact_day(pool, day).await?;
        if n > 0 {
            tracing::info!(%day, meter_days = n, "day compacted");
        }
        total += n;
    }
    Ok(total)
}

/// Drops day partitions entirely older than `retention_days` before `today`.
pub async fn drop_expired_partitions(
    pool: &PgPool,
    today: NaiveDate,
    retention_days: u32,
) -> Result<u64, IngestError> {
    let cutoff = today - chrono::Duration::days(i64::from(retention_days) + 1);
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
          WHERE n.nspname = 'metering' AND p.relname = 'readings'
            AND c.relname ~ '^readings_[0-9]{8}$'
            AND to_date(substr(c.relname, 10), 'YYYYMMDD') < $1",
    )
    .bind(cutoff)
    .fetch_all(pool)
    .await?;
    for name in &names {
        sqlx::query(&format!("DROP TABLE IF EXISTS metering.\"{name}\""))
            .execute(pool)
            .await?;
        tracing::info!(partition = %name, "expired partition dropped");
    }
    sqlx::query("DELETE FROM metering.readings_compact WHERE day < $1")
        .bind(cutoff)
        .execute(pool)
        .await?;
    crate::timescale::drop_expired_chunks(pool, cutoff).await?;
    Ok(names.len() as u64)
}

/// Deletes at most `max_rows` quarantine rows not seen again since `now`
/// minus `retention_days` (oldest first, by `quarantine_last_seen`); returns
/// how many went. One bounded statement per call: the periodic sweep
/// calls it once per pass, so a backlog drains over passes.
pub async fn sweep_quarantine(
    pool: &PgPool,
    now: chrono::DateTime<chrono::Utc>,
    retention_days: u32,
    max_rows: u32,
) -> Result<u64, IngestError> {
    let cutoff = now - chrono::Duration::days(i64::from(retention_days));
    let n = sqlx::query(
        "DELETE FROM metering.quarantine WHERE id IN (
             SELECT id FROM metering.quarantine WHERE last_seen_at < $1
              ORDER BY last_seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(cutoff)
    .bind(i64::from(max_rows))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}
