//! Private service instances for fault tests: a Mosquitto and a PostgreSQL
//! cluster of the test's own, on free ports, stopped (and their files
//! removed) when dropped. The shared services are never touched. Both come
//! from `waterworks-test-support`.

pub use waterworks_test_support::mosquitto::INGEST_SETTINGS as MOSQUITTO_SETTINGS;
// Each test binary compiles this module; only the fault tests use the cluster.
#[allow(unused_imports)]
pub use waterworks_test_support::pg::PgCluster;

/// A private Mosquitto with the settings ingest needs ([`MOSQUITTO_SETTINGS`]).
pub struct Mosquitto;

impl Mosquitto {
    pub fn start() -> waterworks_test_support::mosquitto::Mosquitto {
        waterworks_test_support::mosquitto::Mosquitto::start(MOSQUITTO_SETTINGS)
    }
}
