//! The demo's last resort for a database: a private cluster started from the
//! machine's PostgreSQL binaries. Exercised for real here (initdb, start,
//! connect, create the demo database, stop), on a free port of its own, so
//! the machine's shared server is never touched.

use waterworks::database::{connect, ensure_database, PrivateCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_cluster_starts_serves_and_stops() {
    assert!(
        PrivateCluster::find_binaries().is_some(),
        "PostgreSQL server binaries must be installed under /usr/lib/postgresql (scripts/test installs them)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = PrivateCluster::start(&dir.path().join("pg")).expect("private cluster starts");
    let admin_url = cluster.url("postgres");
    let admin = connect(&admin_url, 1).await.expect("connects");
    let url = ensure_database(&admin, &admin_url, "waterworks")
        .await
        .expect("creates the demo database");
    // Twice is fine: the second call finds it.
    ensure_database(&admin, &admin_url, "waterworks")
        .await
        .expect("idempotent");
    admin.close().await;
    let pool = connect(&url, 1)
        .await
        .expect("connects to the demo database");
    ingest::migrate(&pool)
        .await
        .expect("metering migrations apply");
    billing::migrate(&pool)
        .await
        .expect("billing migrations apply");
    let port: i32 = sqlx::query_scalar("SELECT current_setting('port')::int")
        .fetch_one(&pool)
        .await
        .expect("query");
    assert_eq!(port as u16, cluster.port);
    pool.close().await;
    cluster.stop();
    assert!(
        connect(&admin_url, 1).await.is_err(),
        "stopped cluster refuses connections"
    );
}
