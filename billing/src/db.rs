//! The `billing` schema: migrations kept in `billing._sqlx_migrations`.
//!
//! In production the schema belongs to an owner role that only the
//! `waterworks migrate` Job logs in as; the service's role is a member of
//! `waterworks_billing`, which migration 0010 grants only what the service
//! uses (the ledger's tables: SELECT and INSERT). The service therefore
//! checks the schema at start ([`check`]) instead of migrating it.

use crate::BillingError;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Serializes concurrent migrators (replicas starting together).
const MIGRATE_LOCK_KEY: i64 = 0x6269_6c6c_696e_6701; // "billing" + 1

/// Creates the `billing` schema if needed and applies pending migrations.
/// Run as the schema's owner (the migrate command, the demo, tests).
pub async fn migrate(pool: &PgPool) -> Result<(), BillingError> {
    waterworks_service::db::migrate_schema(pool, "billing", &MIGRATOR, MIGRATE_LOCK_KEY).await?;
    Ok(())
}

/// Checks that every migration of this build is applied, changing nothing:
/// the start-up check of a service that does not migrate.
pub async fn check(pool: &PgPool) -> Result<(), BillingError> {
    waterworks_service::db::check_schema(pool, "billing", &MIGRATOR).await?;
    Ok(())
}
