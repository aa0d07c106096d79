//! Ingest's configuration. The doc comments are the operator's reference;
//! every field not marked required has a default.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use waterworks_service::auth::TokenConfig;
/// Passwords and the database URL: `Debug` and `Display` never show them
/// (the workspace's one `Secret`, from `waterworks-service`).
pub use waterworks_service::secret::Secret;

/// The whole configuration of one ingest replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// PostgreSQL URL (required), e.g. `postgres://ingest@db:5432/waterworks`;
    /// it may carry a password, so it is never shown (`DATABASE_URL` in the
    /// environment overrides it).
    pub database_url: Secret,
    /// Whether ingest applies the `metering` migrations at start (default
    /// false). In production `waterworks migrate` (the Kubernetes Job)
    /// migrates and ingest only checks that every migration it needs is
    /// applied, refusing to start otherwise. [`IngestConfig::new`], the
    /// in-process constructor of the demo and the tests, sets it.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// Bound of the connection pool (default 8). The writer holds one
    /// connection per batch; the HTTP API shares the rest.
    #[serde(default = "default_max_db_connections")]
    pub max_db_connections: u32,
    /// The broker and the subscription.
    pub mqtt: MqttConfig,
    /// Where the HTTP API and `/health`, `/ready`, `/metrics` listen (port 0 picks one).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// How readings are grouped into one database transaction.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Readings older than this many days (against the wall clock) are refused
    /// with reason `too_old`, and day partitions older than it are dropped.
    /// Default 400.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Readings dated more than this many seconds ahead of the wall clock are
    /// refused with reason `future`. Default 900.
    #[serde(default = "default_max_future_skew_s")]
    pub max_future_skew_s: u64,
    /// Bearer tokens for `/api/v1` (viewer reads; operator sees quarantine).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Bounds on memory, quarantine storage and API work (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Rate limits of `/api/v1` per bearer token and per client IP (429 with
    /// `Retry-After`), shared with billing (`[http_limits]`,
    /// `waterworks_service::limits::HttpLimits`). The concurrency and time
    /// bounds of `[limits]` apply as well; the stricter one wins.
    #[serde(default)]
    pub http_limits: waterworks_service::limits::HttpLimits,
}

/// Bounds on what one replica holds in memory, keeps in quarantine and does
/// for one API request. Every key has a default sized for the reference pod
/// (1 GiB memory limit, deploy/k8s/base/ingest.yaml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Payload bytes received and not yet committed and acknowledged
    /// (default 128 MiB, an eighth of the pod's 1 GiB: decoded readings take
    /// about twice their wire size, and the writer's `COPY` buffers and the
    /// allocator need the rest). When the budget is spent, ingest stops
    /// reading from the broker (the socket is not read: TCP backpressure,
    /// and the broker holds the rest in the session); nothing is dropped.
    /// At least the largest message (2 MiB + headers).
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: usize,
    /// Quarantine rows not seen again for this many days are deleted
    /// (default 30; longer than the broker's session expiry, so a replay
    /// still finds the rows that make it a duplicate).
    #[serde(default = "default_quarantine_retention_days")]
    pub quarantine_retention_days: u32,
    /// How often the quarantine retention sweep runs, in seconds (default 300).
    #[serde(default = "default_quarantine_sweep_interval_s")]
    pub quarantine_sweep_interval_s: u64,
    /// Most rows one sweep deletes (default 10 000, in one statement); the
    /// rest waits for the next pass.
    #[serde(default = "default_quarantine_sweep_max_rows")]
    pub quarantine_sweep_max_rows: u32,
    /// `statement_timeout` of the API's own connections, in milliseconds
    /// (default 5000): a query past it fails with 503.
    #[serde(default = "default_api_statement_timeout_ms")]
    pub api_statement_timeout_ms: u64,
    /// Connections of the API's own pool (default 4), apart from the writers'.
    #[serde(default = "default_api_db_connections")]
    pub api_db_connections: u32,
    /// Longest an `/api/v1` request may take, in milliseconds (default
    /// 10 000); past it the answer is 503 `timeout`.
    #[serde(default = "default_api_request_timeout_ms")]
    pub api_request_timeout_ms: u64,
    /// `/api/v1` requests served at once (default 16); one more is refused
    /// at once with 503 `busy` and `Retry-After: 1` (never queued).
    #[serde(default = "default_api_max_concurrent_requests")]
    pub api_max_concurrent_requests: usize,
    /// Bytes of rows one quarantine page may carry (default 1 MiB); the page
    /// ends before the row that would pass it, and `next_cursor` continues.
    #[serde(default = "default_api_max_response_bytes")]
    pub api_max_response_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_inflight_bytes: default_max_inflight_bytes(),
            quarantine_retention_days: default_quarantine_retention_days(),
            quarantine_sweep_interval_s: default_quarantine_sweep_interval_s(),
            quarantine_sweep_max_rows: default_quarantine_sweep_max_rows(),
            api_statement_timeout_ms: default_api_statement_timeout_ms(),
            api_db_connections: default_api_db_connections(),
            api_request_timeout_ms: default_api_request_timeout_ms(),
            api_max_concurrent_requests: default_api_max_concurrent_requests(),
            api_max_response_bytes: default_api_max_response_bytes(),
        }
    }
}

fn default_max_inflight_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_quarantine_retention_days() -> u32 {
    30
}
fn default_quarantine_sweep_interval_s() -> u64 {
    300
}
fn default_quarantine_sweep_max_rows() -> u32 {
    10_000
}
fn default_api_statement_timeout_ms() -> u64 {
    5_000
}
fn default_api_db_connections() -> u32 {
    4
}
fn default_api_request_timeout_ms() -> u64 {
    10_000
}
fn default_api_max_concurrent_requests() -> usize {
    16
}
fn default_api_max_response_bytes() -> usize {
    1024 * 1024
}

/// The MQTT side: one persistent session per replica on a shared subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker URL, `mqtt://host:port` (port defaults to 1883) or
    /// `mqtts://host:port` for TLS (port defaults to 8883; the broker's
    /// certificate is checked against `tls_ca_file`, else the system roots,
    /// and must name `host`). `MQTT_URL` in the environment overrides it.
    pub url: String,
    /// Client id: stable per replica (e.g. the StatefulSet pod name), because
    /// the session is persistent (MQTT 5 `clean_start = false` with a session
    /// expiry interval; 3.1.1 `clean_session = false`): messages that arrive
    /// while the replica is down wait for it at the broker. `MQTT_CLIENT_ID`
    /// in the environment overrides it (the pod's name).
    pub client_id: String,
    /// Username at the broker (the broker's ACL gives it ingest's topics).
    #[serde(default)]
    pub username: Option<String>,
    /// The password, inline (tests; in production prefer `password_file`).
    /// Without either, `MQTT_PASSWORD` in the environment is used when
    /// `username` is set. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password (a mounted Kubernetes Secret); one line,
    /// surrounding whitespace ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) trusted for `mqtts://` instead of the system roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Protocol of the session: `"v5"` (default: MQTT 5, shared
    /// subscription, session expiry, Receive Maximum) or `"v311"` (MQTT
    /// 3.1.1, for brokers without a usable MQTT 5 listener; the broker then
    /// bounds its window by its own setting, e.g. Mosquitto
    /// `max_inflight_messages`).
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// MQTT 5 session expiry interval in seconds (default 604 800, a week):
    /// how long the broker keeps the session, its subscription and its
    /// queued messages while this replica is away. Ignored with `v311`.
    #[serde(default = "default_session_expiry_s")]
    pub session_expiry_s: u32,
    /// MQTT 5 Receive Maximum (default 5000, at most 65 535): QoS 1 messages
    /// the broker may have sent to this replica and not yet seen
    /// acknowledged. Every message stays unacknowledged until its batch
    /// commits, so this must cover the batches in flight (two per writer
    /// lane, `batch.max_readings` readings each) plus `max_inflight`;
    /// the broker's own window (Mosquitto `max_inflight_messages`) caps it
    /// further. Ignored with `v311`.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    /// Subscription filter (default `$share/ingest/waterworks/v1/+/readings`).
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// MQTT keep-alive in seconds (default 30).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Messages received but not yet committed and acknowledged (default
    /// 1000). When full, ingest stops reading the socket (TCP backpressure)
    /// instead of growing memory. The broker's own window
    /// (Mosquitto `max_inflight_messages`, 20 by default) is usually smaller.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
}

impl MqttConfig {
    /// A configuration with every default but the broker and client id.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_id: client_id.into(),
            username: None,
            password: None,
            password_file: None,
            tls_ca_file: None,
            protocol: MqttProtocol::default(),
            session_expiry_s: default_session_expiry_s(),
            receive_maximum: default_receive_maximum(),
            subscription: default_subscription(),
            keep_alive_s: default_keep_alive_s(),
            max_inflight: default_max_inflight(),
        }
    }
}

impl MqttConfig {
    /// The password to log in with: `password`, else the content of
    /// `password_file`, else `MQTT_PASSWORD`; `None` without a username.
    pub fn resolve_password(&self) -> Result<Option<Secret>, String> {
        if self.username.is_none() {
            if self.password.is_some() || self.password_file.is_some() {
                return Err("mqtt.password needs mqtt.username".into());
            }
            return Ok(None);
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("set one of mqtt.password and mqtt.password_file".into());
        }
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("mqtt.password_file {}: {e}", path.display()))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(format!("mqtt.password_file {} is empty", path.display()));
            }
            return Ok(Some(Secret::new(text)));
        }
        match std::env::var("MQTT_PASSWORD") {
            Ok(p) if !p.is_empty() => Ok(Some(Secret::new(p))),
            _ => Err(
                "mqtt.username is set but no password: set mqtt.password_file or MQTT_PASSWORD"
                    .into(),
            ),
        }
    }
}

/// The MQTT protocol version of ingest's session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 5.0 (rumqttc's `v5` client).
    #[default]
    #[serde(rename = "v5")]
    V5,
    /// MQTT 3.1.1 (rumqttc's v4 client).
    #[serde(rename = "v311")]
    V311,
}

/// A batch closes on whichever comes first: `max_readings`, `max_bytes` of
/// payload, `max_wait_ms` after its first message, or a short idle pause of
/// the input (so a light load is written at once).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Default 100 000. A batch only grows this large while its lane's
    /// writer is busy (see `consumer::collect`); every batch costs one update
    /// per meter it touches (high-water mark, daily row), so with a large
    /// fleet larger batches cut that cost per reading.
    #[serde(default = "default_max_readings")]
    pub max_readings: usize,
    /// Payload bytes, default 16 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Default 50 ms.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_readings: default_max_readings(),
            max_bytes: default_max_bytes(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

impl IngestConfig {
    /// A configuration with every default but the database and broker,
    /// except that it migrates at start (in-process use: demo, tests).
    pub fn new(database_url: impl Into<String>, mqtt: MqttConfig) -> Self {
        Self {
            database_url: Secret::new(database_url.into()),
            migrate_on_start: true,
            max_db_connections: default_max_db_connections(),
            mqtt,
            http_listen: default_http_listen(),
            batch: BatchConfig::default(),
            retention_days: default_retention_days(),
            max_future_skew_s: default_max_future_skew_s(),
            tokens: Vec::new(),
            limits: LimitsConfig::default(),
            http_limits: Default::default(),
        }
    }
}

fn default_max_db_connections() -> u32 {
    8
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8081))
}
fn default_retention_days() -> u32 {
    400
}
fn default_max_future_skew_s() -> u64 {
    900
}
fn default_subscription() -> String {
    waterworks_wire::topic::SHARED_READINGS_FILTER.to_string()
}
fn default_session_expiry_s() -> u32 {
    7 * 24 * 3600
}
fn default_receive_maximum() -> u16 {
    5000
}
fn default_keep_alive_s() -> u64 {
    30
}
fn default_max_inflight() -> usize {
    1000
}
fn default_max_readings() -> usize {
    100_000
}
fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_wait_ms() -> u64 {
    50
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_gets_defaults() {
        let c: IngestConfig = toml_like(
            r#"{"database_url":"postgres://x","mqtt":{"url":"mqtt://127.0.0.1:1883","client_id":"ingest-0"}}"#,
        );
        assert_eq!(c.max_db_connections, 8);
        assert_eq!(c.retention_days, 400);
        assert_eq!(
            c.mqtt.subscription,
            waterworks_wire::topic::SHARED_READINGS_FILTER
        );
        assert_eq!(c.batch.max_readings, 100_000);
        assert_eq!(c.mqtt.protocol, MqttProtocol::V5);
        assert_eq!(c.mqtt.receive_maximum, 5000);
        assert_eq!(c.limits.max_inflight_bytes, 128 << 20);
        assert_eq!(c.limits.quarantine_retention_days, 30);
    }

    #[test]
    fn protocol_is_v5_or_v311() {
        let c = toml_like(
            r#"{"database_url":"x","mqtt":{"url":"u","client_id":"c","protocol":"v311"}}"#,
        );
        assert_eq!(c.mqtt.protocol, MqttProtocol::V311);
        let r: Result<IngestConfig, _> = serde_json::from_str(
            r#"{"database_url":"x","mqtt":{"url":"u","client_id":"c","protocol":"v4"}}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<IngestConfig, _> = serde_json::from_str(
            r#"{"database_url":"x","mqtt":{"url":"u","client_id":"c"},"retention":3}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn the_password_never_shows_and_comes_from_a_file() {
        let c = toml_like(
            r#"{"database_url":"x","mqtt":{"url":"u","client_id":"c","username":"ingest","password":"hunter2-secret"}}"#,
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("Secret(***)"),
            "{shown}"
        );
        let with_db_password = toml_like(
            r#"{"database_url":"postgres://ingest:db-pw-7@db/w","mqtt":{"url":"u","client_id":"c"}}"#,
        );
        let shown_db = format!("{with_db_password:?}");
        assert!(
            !shown_db.contains("db-pw-7"),
            "the database URL is hidden: {shown_db}"
        );
        assert_eq!(
            with_db_password.database_url.expose(),
            "postgres://ingest:db-pw-7@db/w"
        );
        assert_eq!(
            c.mqtt.resolve_password().unwrap().unwrap().expose(),
            "hunter2-secret"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-a-file\n").unwrap();
        let mut m = MqttConfig::new("u", "c");
        m.username = Some("ingest".into());
        m.password_file = Some(f.clone());
        assert_eq!(
            m.resolve_password().unwrap().unwrap().expose(),
            "from-a-file"
        );
        m.password = Some(Secret::new("x"));
        assert!(m.resolve_password().is_err(), "both is ambiguous");
        m.password = None;
        m.password_file = Some(dir.path().join("missing"));
        assert!(m.resolve_password().unwrap_err().contains("missing"));
        let mut anon = MqttConfig::new("u", "c");
        assert_eq!(anon.resolve_password().unwrap(), None);
        anon.password_file = Some(f);
        assert!(
            anon.resolve_password().is_err(),
            "a password needs a username"
        );
    }

    fn toml_like(s: &str) -> IngestConfig {
        serde_json::from_str(s).unwrap()
    }
}
