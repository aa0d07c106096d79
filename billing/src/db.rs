//! The `billing` schema: migrations kept in `billing._sqlx_migrations`.

use crate::BillingError;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Serializes concurrent migrators (replicas starting together).
const MIGRATE_LOCK_KEY: i64 = 0x6269_6c6c_696e_6701; // "billing" + 1

/// Creates the `billing` schema if needed and applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), BillingError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *conn)
        .await?;
    let result = async {
        sqlx::query("CREATE SCHEMA IF NOT EXISTS billing")
            .execute(&mut *conn)
            .await?;
        sqlx::query("SET search_path TO billing")
            .execute(&mut *conn)
            .await?;
        MIGRATOR.run(&mut *conn).await?;
        Ok::<(), BillingError>(())
    }
    .await;
    // The connection goes back to the pool: leave it as it came.
    let _ = sqlx::query("RESET search_path").execute(&mut *conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATE_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}
