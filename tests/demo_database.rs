//! The demo's default database is `waterworks` on the local server, created
//! on first use (README), also under `cargo run`, whose environment carries
//! the tests' DATABASE_URL from .cargo/config.toml (issue 23, item 12).

use waterworks::database::{given_url, resolve, Origin, CARGO_DEFAULT_URL_VAR, DEMO_DATABASE};

#[tokio::test]
async fn under_cargo_the_demo_uses_database_waterworks() {
    // `cargo test` sets both, as `cargo run` does (scripts/test may export
    // its own DATABASE_URL: then that one is the user's and is kept).
    let marker = std::env::var(CARGO_DEFAULT_URL_VAR).expect("set by .cargo/config.toml");
    let given = given_url(Some(marker.clone()), Some(marker));
    assert_eq!(
        given, None,
        "cargo's default is not taken as the user's choice"
    );
    let dir = tempfile::tempdir().unwrap();
    let db = resolve(given, dir.path())
        .await
        .expect("the local server answers");
    assert!(
        matches!(db.origin, Origin::LocalServer),
        "{}",
        db.describe()
    );
    assert!(
        db.url.ends_with(&format!("/{DEMO_DATABASE}")),
        "the demo's database: {}",
        db.url
    );
    let pool = waterworks::database::connect(&db.url, 1).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(name, "waterworks");
    pool.close().await;
}
