//! The test PostgreSQL server and fresh databases on it. Database names are
//! the tests' own (see [`crate::unique`]) and plain identifiers; nothing
//! here ever drops a database it was not asked to.

use sqlx::postgres::{PgConnectOptions, PgPool};

/// The server the tests use when `DATABASE_URL` is unset (scripts/test starts it).
pub const LOCAL_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server the tests use: `DATABASE_URL`, else [`LOCAL_SERVER_URL`].
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| LOCAL_SERVER_URL.into())
}

/// `base` with its database (the last path segment) replaced by `db`.
pub fn url_of(base: &str, db: &str) -> String {
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{prefix}/{db}")
}

/// The URL of database `db` on the server of `base`, logging in as `user`
/// without a password (the test server trusts local connections).
pub fn url_as(base: &str, db: &str, user: &str) -> String {
    let opts: PgConnectOptions = base.parse().expect("a PostgreSQL URL");
    format!(
        "postgres://{user}@{}:{}/{db}",
        opts.get_host(),
        opts.get_port()
    )
}

/// The URL of the database `pool` is connected to (e.g. the one
/// `#[sqlx::test]` made), on the server of [`server_url`].
pub fn url_of_pool(pool: &PgPool) -> String {
    let db = pool
        .connect_options()
        .get_database()
        .expect("the pool names its database")
        .to_string();
    url_of(&server_url(), &db)
}

fn assert_plain_identifier(name: &str) {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "test database names are plain identifiers: {name:?}"
    );
}

/// Creates database `name` on the server of `base` and returns its URL;
/// fails loudly when the server is not there.
pub async fn create_database(base: &str, name: &str) -> String {
    assert_plain_identifier(name);
    let admin = PgPool::connect(base)
        .await
        .expect("PostgreSQL must be running for this test (scripts/test starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create the test database");
    admin.close().await;
    url_of(base, name)
}

/// A fresh database named `name` on the test server ([`server_url`]).
pub async fn fresh_database(name: &str) -> String {
    create_database(&server_url(), name).await
}

/// Drops the database of `url` from the server of `base`, even with
/// sessions still open (`WITH (FORCE)`); a missing database is fine.
pub async fn drop_database(base: &str, url: &str) {
    let (_, name) = url.rsplit_once('/').expect("database url has a path");
    let name = name.split('?').next().unwrap_or(name);
    assert_plain_identifier(name);
    if let Ok(admin) = PgPool::connect(base).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await;
        admin.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_other_databases_and_roles() {
        assert_eq!(
            url_of("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            url_as(
                "postgres://postgres@db.example:6432/postgres",
                "t1",
                "ingest"
            ),
            "postgres://ingest@db.example:6432/t1"
        );
    }

    #[tokio::test]
    async fn a_fresh_database_is_created_and_dropped() {
        let name = crate::unique("support_t");
        let url = fresh_database(&name).await;
        assert_eq!(url, url_of(&server_url(), &name));
        let pool = PgPool::connect(&url).await.expect("connects to it");
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(db, name);
        drop_database(&server_url(), &url).await;
        assert!(
            PgPool::connect(&url).await.is_err(),
            "the dropped database is gone (its open pool did not keep it)"
        );
    }
}
