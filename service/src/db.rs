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

/// Why a service refuses to start on its schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "schema {schema} is not migrated (no {schema}._sqlx_migrations): run `waterworks migrate` \
         as the schema's owner role first (in Kubernetes, the waterworks-migrate Job), \
         or set migrate_on_start = true for a development database"
    )]
    NotMigrated { schema: String },
    #[error(
        "schema {schema} lacks migration(s) {missing:?} that this build needs (latest applied: {applied}): \
         run `waterworks migrate` as the schema's owner role first (in Kubernetes, the \
         waterworks-migrate Job), or set migrate_on_start = true for a development database"
    )]
    Behind {
        schema: String,
        missing: Vec<i64>,
        applied: i64,
    },
    #[error(
        "schema {schema} has migration {version} applied with other contents than this build's \
         (checksum differs): the database and this build disagree"
    )]
    Modified { schema: String, version: i64 },
    #[error(
        "migration {version} of schema {schema} failed part-way: repair it by hand, then migrate"
    )]
    Dirty { schema: String, version: i64 },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Checks, without changing anything, that every migration of `migrator` is
/// applied to `schema` with the same contents: what a service whose role may
/// not migrate checks at start. Migrations applied by a newer build (unknown
/// here) are accepted: a rolling update runs old and new replicas together.
pub async fn check_schema(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), SchemaError> {
    assert!(
        schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "schema names are ours and plain identifiers"
    );
    let table = format!("{schema}._sqlx_migrations");
    // From the catalog: a role without USAGE on a schema that the owner has
    // not migrated yet (so not granted) cannot even name the table.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = $1 AND c.relname = '_sqlx_migrations')",
    )
    .bind(schema)
    .fetch_one(pool)
    .await?;
    if !exists {
        return Err(SchemaError::NotMigrated {
            schema: schema.into(),
        });
    }
    let applied: Vec<(i64, bool, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, success, checksum FROM {table} ORDER BY version"
    ))
    .fetch_all(pool)
    .await?;
    if let Some((version, _, _)) = applied.iter().find(|(_, ok, _)| !ok) {
        return Err(SchemaError::Dirty {
            schema: schema.into(),
            version: *version,
        });
    }
    let mut missing = Vec::new();
    for m in migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            None => missing.push(m.version),
            Some((_, _, checksum)) if checksum.as_slice() != &*m.checksum => {
                return Err(SchemaError::Modified {
                    schema: schema.into(),
                    version: m.version,
                })
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(SchemaError::Behind {
            schema: schema.into(),
            missing,
            applied: applied.last().map(|(v, _, _)| *v).unwrap_or(0),
        });
    }
    Ok(())
}
