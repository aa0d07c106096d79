//! The TimescaleDB path, kept apart from the native one: when the extension
//! is available and `metering.readings` is still the empty native partitioned
//! table of migration 0001, [`setup_if_available`] swaps it for a hypertable
//! with compression and a continuous aggregate (`sql/timescale.sql`). Every
//! other part of ingest works unchanged on either layout: the writer `COPY`s
//! into `metering.readings`, the partition hook becomes a no-op, compaction
//! finds no day partition (TimescaleDB compresses chunks instead), and
//! retention calls `drop_chunks`.
//!
//! Not exercised by the tests here (the extension is not installed on this
//! machine); the native path is the tested one.

use crate::IngestError;
use sqlx::{PgConnection, PgPool};

const SETUP_SQL: &str = include_str!("../sql/timescale.sql");

/// Which layout `metering.readings` has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    NativePartitions,
    Hypertable,
}

/// Called by [`crate::migrate`] after the migrations, under its advisory
/// lock. Converts only a fresh installation (no stored reading); an existing
/// native installation stays native (moving data is an operator's job).
pub async fn setup_if_available(conn: &mut PgConnection) -> Result<Layout, IngestError> {
    if layout(&mut *conn).await? == Layout::Hypertable {
        return Ok(Layout::Hypertable);
    }
    let (available, preloaded): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !available {
        return Ok(Layout::NativePartitions);
    }
    if !preloaded {
        tracing::warn!(
            "timescaledb is installed but not in shared_preload_libraries: staying on native partitions"
        );
        return Ok(Layout::NativePartitions);
    }
    let empty: bool =
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM metering.readings LIMIT 1)")
            .fetch_one(&mut *conn)
            .await?;
    if !empty {
        tracing::warn!(
            "timescaledb is available but metering.readings already holds readings: staying on native partitions"
        );
        return Ok(Layout::NativePartitions);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    // The extension and its functions live in `public`; every name of ours
    // in the script is schema-qualified.
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SETUP_SQL).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!("metering.readings is now a TimescaleDB hypertable");
    Ok(Layout::Hypertable)
}

/// The current layout of `metering.readings`.
pub async fn layout(conn: &mut PgConnection) -> Result<Layout, IngestError> {
    let hyper: bool = sqlx::query_scalar(
        "SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL
            AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
            AND EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = 'metering' AND c.relname = 'readings' AND c.relkind = 'r')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(if hyper {
        Layout::Hypertable
    } else {
        Layout::NativePartitions
    })
}

/// Retention on a hypertable: drops chunks entirely older than `cutoff`.
/// Does nothing on native partitions.
pub async fn drop_expired_chunks(
    pool: &PgPool,
    cutoff: chrono::NaiveDate,
) -> Result<(), IngestError> {
    let mut conn = pool.acquire().await?;
    if layout(&mut conn).await? != Layout::Hypertable {
        return Ok(());
    }
    let cutoff = cutoff.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    sqlx::query("SELECT drop_chunks('metering.readings', older_than => $1)")
        .bind(cutoff)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
