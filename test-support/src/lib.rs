//! What the integration tests of every Waterworks crate share, written once
//! instead of once per test folder:
//!
//! - [`unique`]: names no other test run on this machine is using;
//!   [`mqtt_url`]: the machine's shared broker.
//! - [`postgres`]: the test server's URL, fresh databases (created, and
//!   dropped by the tests that drop them), URLs of other databases or roles.
//! - [`mosquitto`]: a private Mosquitto on a free port (settings of the
//!   test's own or the project's reference configuration with its password
//!   file and ACL), restarted, reloaded, stopped or killed at will, killed on drop.
//! - [`pg`]: a private PostgreSQL cluster (initdb and pg_ctl from
//!   /usr/lib/postgresql/*/bin) in a temp dir, stopped on drop.
//! - [`certs`]: a test CA and server certificates made with `openssl`.
//! - [`net`]: free ports, waiting for a port, an axum Router served on
//!   127.0.0.1:0, waiting for a service's `/ready`.
//! - [`metering`]: the stand-in for ingest's `metering.period_reads_v1`, the
//!   read contract billing reads, with the contract's exact signature.
//!
//! It is a dev-dependency only and must never be linked by production code:
//! it starts processes, writes temp files and panics on failure, as a test should.

pub mod certs;
pub mod metering;
pub mod mosquitto;
pub mod net;
pub mod pg;
pub mod postgres;

use std::sync::atomic::{AtomicU64, Ordering};

/// The machine's shared broker the tests publish to: `MQTT_URL`, else
/// `mqtt://127.0.0.1:1883` (scripts/test starts it). Tests that stop or
/// reconfigure a broker start their own ([`mosquitto`]).
pub fn mqtt_url() -> String {
    std::env::var("MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// A name no other test on this machine is using right now: `prefix`, the
/// process id, the clock's nanoseconds (hex) and a counter of this process.
/// Lowercase letters, digits and `x` only after the prefix, so that it makes
/// a database name, a gateway id or an MQTT client id alike.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "{prefix}{}x{nanos:x}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_differ_and_keep_their_prefix() {
        let a = super::unique("t_");
        let b = super::unique("t_");
        assert_ne!(a, b);
        assert!(a.starts_with("t_"), "{a}");
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{a}"
        );
    }
}
