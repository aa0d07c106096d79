//! What the root crate's integration tests share: the test server's URL,
//! unique names and fresh databases. (Each test binary compiles this module
//! on its own; not every binary uses every helper.)
#![allow(dead_code)]

/// The PostgreSQL server the tests use: `DATABASE_URL`, else the local one.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| waterworks::database::LOCAL_SERVER_URL.into())
}

/// A name no other test run on this machine is using: `tag`, the process id
/// and the clock's nanoseconds.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{tag}{}x{nanos:x}", std::process::id())
}

/// A fresh database on the test server; fails loudly when there is none.
pub async fn fresh_database(name: &str) -> String {
    let admin = waterworks::database::connect(&server_url(), 1)
        .await
        .expect("PostgreSQL must be running for this test (scripts/test starts it)");
    let url = waterworks::database::ensure_database(&admin, &server_url(), name)
        .await
        .expect("create the test database");
    admin.close().await;
    url
}
