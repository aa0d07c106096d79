//! The `billing` schema: migrations kept in `billing._sqlx_migrations`.

use crate::BillingError;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Serializes concurrent migrators (replicas starting together).
const MIGRATE_LOCK_KEY: i64 = 0x6269_6c6c_696e_6701; // "billing" + 1

/// Creates the `billing` schema if needed and applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), BillingError> {
    waterworks_service::db::migrate_schema(pool, "billing", &MIGRATOR, MIGRATE_LOCK_KEY).await?;
    Ok(())
}
