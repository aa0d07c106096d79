//! Per-service schema migrations: each service owns one schema and keeps its
//! migration history inside it (`<schema>._sqlx_migrations`), so two
//! services sharing a database never read each other's history.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

/// Creates `schema` if needed and applies `migrator` with the history table
/// in that schema. An advisory lock on `lock_key` serializes replicas that
/// start together; the connection goes back to the pool as it came.
pub async fn migrate_schema(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
    lock_key: i64,
) -> Result<(), MigrateError> {
    assert!(
        schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "schema names are ours and plain identifiers"
    );
    let mut conn = pool.acquire().await.map_err(MigrateError::Execute)?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut *conn)
        .await
        .map_err(MigrateError::Execute)?;
    let result = async {
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await
            .map_err(MigrateError::Execute)?;
        sqlx::query(&format!("SET search_path TO {schema}"))
            .execute(&mut *conn)
            .await
            .map_err(MigrateError::Execute)?;
        migrator.run(&mut *conn).await
    }
    .await;
    let _ = sqlx::query("RESET search_path").execute(&mut *conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_key)
        .execute(&mut *conn)
        .await;
    result
}
