//! The billing service's configuration: TOML, `deny_unknown_fields`, each
//! field's doc comment is the operator's reference.

use crate::usage::HoldPolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use waterworks_service::auth::TokenConfig;
use waterworks_service::limits::HttpLimits;

/// The billing service's configuration (TOML; `deny_unknown_fields`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// PostgreSQL URL, as the service's role (a member of
    /// `waterworks_billing`, not the schema's owner).
    #[serde(default = "default_database_url")]
    pub database_url: waterworks_service::secret::Secret,
    /// Whether the service applies the `billing` migrations at start
    /// (default false). In production the owner role migrates
    /// (`waterworks migrate`, the Kubernetes Job) and the service only
    /// checks that every migration it needs is applied, refusing to start
    /// otherwise. True is for a development database where one role owns
    /// everything; [`BillingConfig::new`], the in-process constructor of the
    /// demo and the tests, sets it.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// Where the HTTP API listens (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub http_listen: SocketAddr,
    /// The tariff file (e.g. `fixtures/tariffs/daejeon.toml`).
    pub tariff_file: PathBuf,
    /// Bearer tokens and their roles; without any, only the open routes answer.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Database connections at most (a bound: requests wait for a free one).
    #[serde(default = "default_pool_max")]
    pub db_pool_max: u32,
    /// When bills are held for review instead of issued.
    #[serde(default)]
    pub hold_policy: HoldPolicy,
    /// Longest a single SQL statement of the API may run, in milliseconds
    /// (default 60 000): PostgreSQL cancels it and the caller gets a clean
    /// error. Migrations at start are not bound by it.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Rate limits per token and IP, requests at once, read deadline.
    #[serde(default)]
    pub http_limits: HttpLimits,
    /// Bytes of JSON a list page holds at most (default 4 MiB); a page ends
    /// early when it would exceed this, and its cursor continues from there.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
}

fn default_database_url() -> waterworks_service::secret::Secret {
    "postgres://postgres@127.0.0.1:5432/postgres".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8082))
}
fn default_pool_max() -> u32 {
    8
}
fn default_statement_timeout_ms() -> u64 {
    60_000
}
fn default_max_page_bytes() -> usize {
    4 * 1024 * 1024
}

impl BillingConfig {
    /// Defaults for everything but the tariff file, except that the service
    /// migrates at start (`migrate_on_start`: in-process use, demo and tests).
    pub fn new(database_url: &str, tariff_file: PathBuf) -> Self {
        Self {
            database_url: database_url.into(),
            migrate_on_start: true,
            http_listen: default_listen(),
            tariff_file,
            tokens: Vec::new(),
            db_pool_max: default_pool_max(),
            hold_policy: HoldPolicy::default(),
            statement_timeout_ms: default_statement_timeout_ms(),
            http_limits: HttpLimits::default(),
            max_page_bytes: default_max_page_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waterworks_service::auth::Role;

    #[test]
    fn config_as_documented_parses_and_unknown_fields_are_refused() {
        let text = r#"
            database_url = "postgres://postgres@127.0.0.1:5432/postgres"
            http_listen = "127.0.0.1:8082"
            tariff_file = "fixtures/tariffs/daejeon.toml"
            db_pool_max = 8
            tokens = [{ name = "clerk-1", role = "clerk", token_file = "/run/secrets/waterworks-tokens/clerk-1" }]
            [hold_policy]
            high_ratio = "3"
            low_ratio = "0.2"
            min_avg_m3 = 5
        "#;
        let cfg: BillingConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.hold_policy, HoldPolicy::default());
        assert_eq!(cfg.tokens[0].role, Some(Role::Clerk));
        let minimal: BillingConfig = toml::from_str("tariff_file = \"t.toml\"").unwrap();
        assert_eq!(minimal.http_listen.port(), 8082);
        assert!(toml::from_str::<BillingConfig>("tariff_file = \"t\"\nbogus = 1").is_err());
    }
}
