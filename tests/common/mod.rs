//! What the root crate's integration tests share: the test server's URL,
//! unique names and fresh databases, from `waterworks-test-support`. (Each
//! test binary compiles this module on its own; not every binary uses every
//! helper.)
#![allow(dead_code)]

/// The PostgreSQL server the tests use: `DATABASE_URL`, else the local one.
pub fn server_url() -> String {
    waterworks_test_support::postgres::server_url()
}

/// A name no other test run on this machine is using: `tag`, the process
/// id, the clock's nanoseconds and a counter.
pub fn unique(tag: &str) -> String {
    waterworks_test_support::unique(tag)
}

/// A fresh database on the test server; fails loudly when there is none.
pub async fn fresh_database(name: &str) -> String {
    waterworks_test_support::postgres::fresh_database(name).await
}
