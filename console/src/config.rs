//! The console's configuration (TOML file, then `CONSOLE_*` environment
//! variables). The doc comments are the operator's reference; every field not
//! marked required has a default. It holds no tokens: each person signs in
//! with their own.

use serde::Deserialize;
use std::net::SocketAddr;

/// The whole configuration of one console replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where the pages and `/health`, `/ready`, `/metrics` listen (port 0 picks one).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Base URL of ingest's HTTP API (required), e.g. `http://ingest:8081`.
    pub ingest_url: String,
    /// Base URL of billing's HTTP API (required), e.g. `http://billing:8082`.
    pub billing_url: String,
    /// A session ends after this many seconds without a request (default 8 h).
    #[serde(default = "default_session_idle_s")]
    pub session_idle_s: u64,
    /// Sessions held at most (default 10 000); when full, the one idle the
    /// longest is ended to make room.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Mark the session cookie `Secure` (set when served behind TLS, as in
    /// the cluster's ingress). Default false, for plain-HTTP local use.
    #[serde(default)]
    pub secure_cookies: bool,
    /// Timeout of one call to a backend, in milliseconds (default 10 000).
    #[serde(default = "default_backend_timeout_ms")]
    pub backend_timeout_ms: u64,
    /// Single sign-on for staff through the city's identity provider
    /// (`[oidc]`, see [`crate::sso::OidcConfig`]); absent: token sign-in only.
    #[serde(default)]
    pub oidc: Option<crate::sso::OidcConfig>,
    /// Sign-in attempts (`POST /login`) a minute per client IP (default 20);
    /// over it, 429 with `Retry-After`.
    #[serde(default = "default_login_per_ip_per_min")]
    pub login_per_ip_per_min: u32,
    /// Take the client IP from the rightmost address of this header (e.g.
    /// `x-forwarded-for` behind the cluster's ingress) instead of the TCP
    /// peer. Default none.
    #[serde(default)]
    pub client_ip_header: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("environment variable {name}: {why}")]
    Env { name: String, why: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConsoleConfig {
    /// Defaults for everything but the two backends.
    pub fn new(ingest_url: impl Into<String>, billing_url: impl Into<String>) -> Self {
        Self {
            http_listen: default_http_listen(),
            ingest_url: ingest_url.into(),
            billing_url: billing_url.into(),
            session_idle_s: default_session_idle_s(),
            max_sessions: default_max_sessions(),
            secure_cookies: false,
            backend_timeout_ms: default_backend_timeout_ms(),
            oidc: None,
            login_per_ip_per_min: default_login_per_ip_per_min(),
            client_ip_header: None,
        }
    }

    /// Reads `path` (TOML), then lets `CONSOLE_HTTP_LISTEN`, `CONSOLE_INGEST_URL`,
    /// `CONSOLE_BILLING_URL`, `CONSOLE_SESSION_IDLE_S` and `CONSOLE_SECURE_COOKIES`
    /// override it. Without a file, the two URLs must come from the environment.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut table: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                text.parse().map_err(|source| ConfigError::Parse {
                    path: p.display().to_string(),
                    source,
                })?
            }
            None => toml::Table::new(),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        for (var, key) in [
            ("CONSOLE_HTTP_LISTEN", "http_listen"),
            ("CONSOLE_INGEST_URL", "ingest_url"),
            ("CONSOLE_BILLING_URL", "billing_url"),
            ("CONSOLE_CLIENT_IP_HEADER", "client_ip_header"),
        ] {
            if let Some(v) = env(var) {
                table.insert(key.into(), toml::Value::String(v));
            }
        }
        if let Some(v) = env("CONSOLE_SESSION_IDLE_S") {
            let n: i64 = v.parse().map_err(|_| ConfigError::Env {
                name: "CONSOLE_SESSION_IDLE_S".into(),
                why: format!("{v:?} is not a number of seconds"),
            })?;
            table.insert("session_idle_s".into(), toml::Value::Integer(n));
        }
        if let Some(v) = env("CONSOLE_SECURE_COOKIES") {
            table.insert(
                "secure_cookies".into(),
                toml::Value::Boolean(matches!(v.as_str(), "1" | "true" | "yes")),
            );
        }
        let config: ConsoleConfig =
            table
                .try_into()
                .map_err(|source: toml::de::Error| ConfigError::Parse {
                    path: path
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "environment".into()),
                    source,
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses URLs that are not `http(s)://host[:port]` and zero bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, u) in [
            ("ingest_url", &self.ingest_url),
            ("billing_url", &self.billing_url),
        ] {
            let parsed = url::Url::parse(u)
                .map_err(|e| ConfigError::Invalid(format!("{name} {u:?}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{name} {u:?} must be an http:// or https:// URL with a host"
                )));
            }
        }
        if self.session_idle_s == 0 || self.max_sessions == 0 || self.backend_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "session_idle_s, max_sessions and backend_timeout_ms must be above zero".into(),
            ));
        }
        if let Some(o) = &self.oidc {
            o.validate()?;
        }
        Ok(())
    }
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_session_idle_s() -> u64 {
    8 * 3600
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_backend_timeout_ms() -> u64 {
    10_000
}
fn default_login_per_ip_per_min() -> u32 {
    20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_example_is_valid() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/console.toml");
        let c = ConsoleConfig::load(Some(&path)).unwrap();
        assert_eq!(c.max_sessions, 10_000);
    }

    /// The cluster's console.toml (inline in the console's ConfigMap) and
    /// the commented [oidc] example of deploy/config/console.toml parse and
    /// validate.
    #[test]
    fn the_cluster_config_and_the_oidc_example_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let yaml = std::fs::read_to_string(root.join("deploy/k8s/base/console.yaml")).unwrap();
        let toml_text: String = yaml
            .lines()
            .skip_while(|l| l.trim() != "console.toml: |")
            .skip(1)
            .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let c: ConsoleConfig = toml::from_str(&toml_text).expect("the ConfigMap's console.toml");
        c.validate().unwrap();
        let o = c
            .oidc
            .expect("the cluster signs staff in through the provider");
        assert!(!o.allow_token_login);
        assert!(o.issuer_url.starts_with("https://"));

        let local = std::fs::read_to_string(root.join("deploy/config/console.toml")).unwrap();
        let example: String = local
            .lines()
            .skip_while(|l| !l.starts_with("# [oidc]"))
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))
                )
            })
            .collect();
        let c: ConsoleConfig = toml::from_str(&format!(
            "ingest_url = \"http://i:1\"\nbilling_url = \"http://b:2\"\n{example}"
        ))
        .expect("the commented [oidc] example");
        c.validate().unwrap();
        assert_eq!(c.oidc.unwrap().roles.len(), 3);
    }

    #[test]
    fn minimal_file_gets_defaults_and_bad_urls_are_refused() {
        let c: ConsoleConfig =
            toml::from_str("ingest_url = \"http://i:8081\"\nbilling_url = \"http://b:8082\"\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.session_idle_s, 8 * 3600);
        assert_eq!(c.http_listen.port(), 8080);
        let bad = ConsoleConfig::new("ftp://x", "http://b");
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("ingest_url"));
        assert!(toml::from_str::<ConsoleConfig>(
            "ingest_url = \"http://i\"\nbilling_url = \"http://b\"\nsesion_idle_s = 3\n"
        )
        .is_err());
    }
}
