//! (Long because every section of the gateway's TOML is checked here, each with its own clear error.)
//! The gateway's configuration file (TOML) and its validation.
//!
//! Every struct here refuses unknown keys, and every error names the file,
//! the line and the field, because the person reading it is standing beside a
//! meter cabinet with a laptop. Loading never touches the network or a meter.
//!
//! ```toml
//! gateway_id = "gw-01"
//! profiles = ["profiles/waterworks-sim-v1.toml"]   # relative to this file
//! metrics_listen = "127.0.0.1:9184"                # optional
//!
//! [poll]                       # optional; these are the defaults
//! interval_s = 900
//! max_concurrent = 64
//! request_timeout_ms = 2000
//! retries = 2
//! retry_backoff_ms = 200
//!
//! [[meters]]
//! meter_id = "m-0001"
//! transport = { tcp = "127.0.0.1:5020" }
//! unit_id = 1
//! profile = "waterworks-sim-v1"
//!
//! [[meters]]
//! meter_id = "m-0002"
//! transport = { rtu = { device = "/dev/ttyUSB0", baud = 9600, parity = "none", stop_bits = 1 } }
//! unit_id = 7
//! profile = "tuf-2000m"
//! poll_interval_s = 300
//!
//! [uplink]
//! url = "mqtt://127.0.0.1:1883"
//!
//! [spool]
//! dir = "/var/lib/waterworks-gateway/spool"
//! max_bytes = 268435456
//! ```

use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use waterworks_service::mqtt_url::MqttUrl;
pub use waterworks_service::secret::Secret;
use waterworks_wire::profile::{DeviceProfile, Unit};
use waterworks_wire::{GatewayId, MeterId};

/// Longest poll interval accepted (one day): schedules align to midnight UTC.
pub const MAX_INTERVAL_S: u32 = 86_400;
/// Most meters one gateway accepts; keeps memory and a round's duration bounded.
pub const MAX_METERS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read gateway config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A TOML syntax or type error; `line` is 1-based when known.
    #[error("gateway config {path}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// A value that parsed but makes no sense; `field` is a path such as `meters[3].profile`.
    #[error("gateway config {path}{}: field `{field}`: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        path: String,
        line: Option<usize>,
        field: String,
        message: String,
    },
    #[error("gateway config {path}: {source}")]
    Profile {
        path: String,
        source: waterworks_wire::profile::ProfileError,
    },
}

/// The whole configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This gateway's identifier; also a segment of its MQTT topics.
    pub gateway_id: GatewayId,
    /// Defaults for every meter's polling.
    #[serde(default)]
    pub poll: PollConfig,
    /// Device profile files (see `fixtures/profiles/`); meters refer to them by
    /// their `profile.id`. Relative paths are resolved against the config file's folder.
    #[serde(default)]
    pub profiles: Vec<PathBuf>,
    /// The meters this gateway reads.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    pub uplink: UplinkConfig,
    pub spool: SpoolConfig,
    /// Where to serve Prometheus metrics (`GET /metrics`); absent = no exporter.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// How meters are polled.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Seconds between reads, aligned to the wall clock (900 reads at :00, :15, :30, :45).
    /// Must divide a day.
    pub interval_s: u32,
    /// Most Modbus TCP requests in flight at once (RTU buses are always one at a time).
    pub max_concurrent: usize,
    /// How long one request may take before it counts as a timeout.
    pub request_timeout_ms: u64,
    /// Further attempts after a failed request (timeouts and transport errors;
    /// a Modbus exception is the meter's answer and is not retried).
    pub retries: u32,
    /// Pause before the first retry; doubles on each further one.
    pub retry_backoff_ms: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            interval_s: 900,
            max_concurrent: 64,
            request_timeout_ms: 2000,
            retries: 2,
            retry_backoff_ms: 200,
        }
    }
}

/// One meter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    pub meter_id: MeterId,
    /// How to reach it: `{ tcp = "host:port" }` or
    /// `{ rtu = { device = "/dev/ttyUSB0", baud = 9600, parity = "none", stop_bits = 1 } }`.
    pub transport: Transport,
    /// Modbus unit (slave) id, 1 to 247 (0 is broadcast and never answers).
    /// Left out for an MQTT-native meter.
    #[serde(default)]
    pub unit_id: u8,
    /// The `profile.id` of one of the loaded profiles. Left out for an
    /// MQTT-native meter (its message mapping is in `transport.mqtt`).
    #[serde(default)]
    pub profile: String,
    /// Overrides `poll.interval_s` for this meter; must divide a day.
    #[serde(default)]
    pub poll_interval_s: Option<u32>,
}

impl MeterConfig {
    pub fn interval_s(&self, poll: &PollConfig) -> u32 {
        self.poll_interval_s.unwrap_or(poll.interval_s)
    }
}

/// How a meter is reached. In TOML an externally tagged table:
/// `transport = { tcp = "127.0.0.1:5020" }` or `transport = { rtu = { device = "...", baud = 9600 } }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "TransportRepr")]
#[non_exhaustive]
pub enum Transport {
    /// Modbus TCP; `addr` is `host:port`.
    Tcp { addr: String },
    /// Modbus RTU on a serial line (RS-485). Meters on one device share a
    /// half-duplex bus and are read one request at a time.
    Rtu(RtuConfig),
    /// An MQTT-native meter (its own radio): not polled; the gateway
    /// subscribes to `topic` on `broker` and maps each message to a reading.
    Mqtt(MqttMeterConfig),
}

/// The TOML spelling of [`Transport`].
#[derive(Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum TransportRepr {
    Tcp(String),
    Rtu(RtuConfig),
    Mqtt(MqttMeterConfig),
}

impl From<TransportRepr> for Transport {
    fn from(r: TransportRepr) -> Self {
        match r {
            TransportRepr::Tcp(addr) => Transport::Tcp { addr },
            TransportRepr::Rtu(r) => Transport::Rtu(r),
            TransportRepr::Mqtt(m) => Transport::Mqtt(m),
        }
    }
}

impl Transport {
    /// The key that groups meters sharing a link (a TCP endpoint, a serial
    /// bus, or an MQTT subscription: broker and topic filter).
    pub fn link_key(&self) -> String {
        match self {
            Transport::Tcp { addr } => format!("tcp://{addr}"),
            Transport::Rtu(r) => format!("rtu://{}", r.device.display()),
            Transport::Mqtt(m) => format!("mqtt-sub://{} {}", m.broker, m.topic),
        }
    }

    /// Whether the gateway polls this meter over Modbus (TCP or RTU).
    pub fn is_modbus(&self) -> bool {
        matches!(self, Transport::Tcp { .. } | Transport::Rtu(_))
    }
}

/// Where the gateway finds an MQTT-native meter's readings, and how to read
/// one out of a message. In TOML:
/// `transport = { mqtt = { topic = "meters/v1/+/reading" } }`
/// (every other key has a default fitting the Waterworks reading JSON
/// `{"meter_id": "m-1", "ts": "2026-10-01T00:15:00Z", "volume_l": 1234567,
/// "flow_lph": 12.5, "alarms": ["leak"]}`). Meters sharing `broker` and
/// `topic` share one subscription and must share the mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttMeterConfig {
    /// The (local) broker the meters publish to: `mqtt://host[:port]`.
    #[serde(default = "default_local_broker")]
    pub broker: String,
    /// Topic filter subscribed at QoS 1 (`+` and `#` wildcards allowed).
    pub topic: String,
    /// How a message maps to a reading.
    #[serde(default)]
    pub mapping: JsonMapping,
}

fn default_local_broker() -> String {
    "mqtt://127.0.0.1:1883".into()
}

/// JSON pointers (RFC 6901, e.g. `/data/volume`) into an MQTT-native
/// meter's message, with the unit and scale of its numbers (as in device
/// profiles: value = raw × scale, in unit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonMapping {
    /// The meter id (a string); it must be one of this gateway's meters.
    pub meter_id: String,
    /// The time of the reading: an RFC 3339 string, or a number of seconds
    /// since 1970 (UTC). Fractions of a second are dropped.
    pub ts: String,
    /// The totalizer: a number, or a decimal string.
    pub volume: String,
    /// `L` or `m3`.
    pub volume_unit: Unit,
    /// Decimal string, e.g. `"0.001"`.
    #[serde(with = "rust_decimal::serde::str")]
    pub volume_scale: Decimal,
    /// Instantaneous flow (optional; absent in a message = no flow).
    pub flow: Option<String>,
    /// `L/h`, `L/min`, `L/s` or `m3/h`.
    pub flow_unit: Unit,
    #[serde(with = "rust_decimal::serde::str")]
    pub flow_scale: Decimal,
    /// Alarms (optional): an array of alarm names of the wire contract
    /// (`leak`, `burst`, `backflow`, `tamper`, `low_battery`, `empty_pipe`);
    /// names it does not know are ignored.
    pub alarms: Option<String>,
}

impl Default for JsonMapping {
    fn default() -> Self {
        JsonMapping {
            meter_id: "/meter_id".into(),
            ts: "/ts".into(),
            volume: "/volume_l".into(),
            volume_unit: Unit::Litre,
            volume_scale: Decimal::ONE,
            flow: Some("/flow_lph".into()),
            flow_unit: Unit::LitrePerHour,
            flow_scale: Decimal::ONE,
            alarms: Some("/alarms".into()),
        }
    }
}

/// A serial line carrying Modbus RTU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub device: PathBuf,
    /// Bits per second (1200 to 115200 on most meters).
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "one_stop_bit")]
    pub stop_bits: u8,
    /// 7 or 8.
    #[serde(default = "eight_data_bits")]
    pub data_bits: u8,
}

fn one_stop_bit() -> u8 {
    1
}
fn eight_data_bits() -> u8 {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// The MQTT uplink to the cluster's broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtt://host[:port]` (port defaults to 1883), or `mqtts://host[:port]`
    /// for TLS (port defaults to 8883; the broker's certificate is checked
    /// against the system's roots or `tls_ca_file`, and must name `host`).
    pub url: String,
    /// MQTT client id; defaults to `waterworks-gw-{gateway_id}`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// The broker password of `username`; never shown by `Debug`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// MQTT keep-alive in seconds (at least 5).
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u16,
    /// Most batches published and not yet acknowledged (PUBACK) at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Most readings in one batch; a larger round is split into several batches.
    #[serde(default = "default_batch_max_readings")]
    pub batch_max_readings: usize,
    /// PEM file of the CA(s) to trust for `mqtts://` instead of the system
    /// roots (a utility's private CA). Relative to the config file's folder.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// What removes a batch from the spool: `ingest` (default) waits for
    /// ingest's acknowledgement on `waterworks/v1/{gateway_id}/ack`, sent
    /// after the batch is committed to the store (end to end); `broker`
    /// forgets a batch on the broker's PUBACK (a broker without ingest
    /// behind it: tools, the gateway's own tests; a broker crash can lose
    /// what it acknowledged).
    #[serde(default)]
    pub ack: AckMode,
    /// With `ack = "ingest"`: seconds to wait for ingest's acknowledgement of
    /// batches the broker accepted before sending them again; doubles on
    /// each replay without progress, up to [`crate::uplink::REPLAY_MAX`].
    #[serde(default = "default_ack_timeout_s")]
    pub ack_timeout_s: u32,
}

/// See [`UplinkConfig::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    #[default]
    Ingest,
    Broker,
}

fn default_ack_timeout_s() -> u32 {
    30
}

fn default_keep_alive_s() -> u16 {
    30
}
fn default_max_inflight() -> u16 {
    32
}
fn default_batch_max_readings() -> usize {
    1000
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: None,
            username: None,
            password: None,
            keep_alive_s: default_keep_alive_s(),
            max_inflight: default_max_inflight(),
            batch_max_readings: default_batch_max_readings(),
            tls_ca_file: None,
            ack: AckMode::default(),
            ack_timeout_s: default_ack_timeout_s(),
        }
    }
}

/// The on-disk store-and-forward spool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Folder holding the spool's segment files and its sequence state; created if missing.
    pub dir: PathBuf,
    /// Bound on the spool's size on disk. When a new batch would pass it, the
    /// oldest unsent segment is dropped (counted and logged): the newest readings
    /// are kept because a totalizer read later still covers the consumption.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
}

fn default_spool_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("spool"),
            max_bytes: default_spool_max_bytes(),
        }
    }
}

/// Reads, parses and validates a config file, and checks that its profiles
/// load and cover its meters. Relative paths in it are resolved against its folder.
pub fn load_config(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut config = parse_config(&text, &shown)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in &mut config.profiles {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    if let Some(ca) = &mut config.uplink.tls_ca_file {
        if ca.is_relative() {
            *ca = base.join(&*ca);
        }
    }
    if config.spool.dir.is_relative() {
        config.spool.dir = base.join(&config.spool.dir);
    }
    load_profiles(&config).map_err(|e| match e {
        ConfigCheckError::Profile(source) => ConfigError::Profile {
            path: shown.clone(),
            source,
        },
        ConfigCheckError::Invalid { field, message } => ConfigError::Invalid {
            line: locate(&text, &field),
            path: shown.clone(),
            field,
            message,
        },
    })?;
    Ok(config)
}

/// Parses and validates config text (profiles are not loaded: see [`load_profiles`]).
pub fn parse_config(text: &str, path: &str) -> Result<GatewayConfig, ConfigError> {
    let config: GatewayConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_string(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().to_string(),
    })?;
    validate(&config).map_err(|(field, message)| ConfigError::Invalid {
        line: locate(text, &field),
        path: path.to_string(),
        field,
        message,
    })?;
    Ok(config)
}

/// The faults [`load_profiles`] finds, before a file name is attached.
#[derive(Debug, thiserror::Error)]
pub enum ConfigCheckError {
    #[error(transparent)]
    Profile(#[from] waterworks_wire::profile::ProfileError),
    #[error("field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// Loads every profile of `config` and checks that each meter's profile is among them.
pub fn load_profiles(
    config: &GatewayConfig,
) -> Result<HashMap<String, DeviceProfile>, ConfigCheckError> {
    let mut profiles = HashMap::new();
    for (i, path) in config.profiles.iter().enumerate() {
        let p = DeviceProfile::load(path)?;
        if profiles.contains_key(&p.profile.id) {
            return Err(ConfigCheckError::Invalid {
                field: format!("profiles[{i}]"),
                message: format!("profile id {:?} is loaded twice", p.profile.id),
            });
        }
        profiles.insert(p.profile.id.clone(), p);
    }
    for (i, m) in config.meters.iter().enumerate() {
        if m.transport.is_modbus() && !profiles.contains_key(&m.profile) {
            let mut known: Vec<_> = profiles.keys().cloned().collect();
            known.sort();
            return Err(ConfigCheckError::Invalid {
                field: format!("meters[{i}].profile"),
                message: format!(
                    "meter {} refers to profile {:?}, which none of `profiles` defines (loaded: {})",
                    m.meter_id,
                    m.profile,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            });
        }
    }
    Ok(profiles)
}

/// Checks what serde cannot: ranges, uniqueness and consistency.
pub fn validate(c: &GatewayConfig) -> Result<(), (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let p = &c.poll;
    check_interval(p.interval_s).map_err(|m| ("poll.interval_s".to_string(), m))?;
    if p.max_concurrent == 0 || p.max_concurrent > 10_000 {
        return err(
            "poll.max_concurrent",
            format!("{} is not between 1 and 10000", p.max_concurrent),
        );
    }
    if p.request_timeout_ms == 0 || p.request_timeout_ms > 60_000 {
        return err(
            "poll.request_timeout_ms",
            format!("{} is not between 1 and 60000", p.request_timeout_ms),
        );
    }
    if p.retries > 10 {
        return err("poll.retries", format!("{} is more than 10", p.retries));
    }
    if p.retry_backoff_ms > 60_000 {
        return err(
            "poll.retry_backoff_ms",
            format!("{} is more than 60000", p.retry_backoff_ms),
        );
    }
    if c.meters.len() > MAX_METERS {
        return err(
            "meters",
            format!(
                "{} meters; at most {MAX_METERS} are accepted",
                c.meters.len()
            ),
        );
    }
    let mut seen = HashSet::new();
    let mut units: BTreeMap<(String, u8), &MeterId> = BTreeMap::new();
    let mut subscriptions: HashMap<String, (&MeterId, &JsonMapping)> = HashMap::new();
    for (i, m) in c.meters.iter().enumerate() {
        let f = |name: &str| format!("meters[{i}].{name}");
        if !seen.insert(&m.meter_id) {
            return err(
                &f("meter_id"),
                format!("meter {} is configured twice", m.meter_id),
            );
        }
        if let Transport::Mqtt(mq) = &m.transport {
            if m.unit_id != 0 {
                return err(
                    &f("unit_id"),
                    "an MQTT-native meter has no Modbus unit id; leave it out".into(),
                );
            }
            if !m.profile.is_empty() {
                return err(
                    &f("profile"),
                    "an MQTT-native meter has no register profile; its mapping is `transport.mqtt.mapping`".into(),
                );
            }
            if m.poll_interval_s.is_some() {
                return err(
                    &f("poll_interval_s"),
                    "an MQTT-native meter is not polled; it publishes on its own schedule".into(),
                );
            }
            check_mqtt_meter(mq)
                .map_err(|(field, msg)| (f(&format!("transport.mqtt.{field}")), msg))?;
            if let Some((other, mapping)) =
                subscriptions.insert(m.transport.link_key(), (&m.meter_id, &mq.mapping))
            {
                if mapping != &mq.mapping {
                    return err(
                        &f("transport.mqtt.mapping"),
                        format!("meter {} shares broker and topic with meter {other} but not its mapping; one subscription has one mapping", m.meter_id),
                    );
                }
            }
            continue;
        }
        if m.profile.is_empty() {
            return err(
                &f("profile"),
                "a Modbus meter needs a device profile".into(),
            );
        }
        if m.unit_id == 0 || m.unit_id > 247 {
            return err(
                &f("unit_id"),
                format!("{} is missing or not between 1 and 247", m.unit_id),
            );
        }
        if let Some(s) = m.poll_interval_s {
            check_interval(s).map_err(|msg| (f("poll_interval_s"), msg))?;
        }
        match &m.transport {
            Transport::Tcp { addr } => {
                if split_host_port(addr).is_none() {
                    return err(&f("transport.tcp"), format!("{addr:?} is not host:port"));
                }
            }
            Transport::Rtu(r) => {
                if r.baud < 300 || r.baud > 1_000_000 {
                    return err(
                        &f("transport.rtu.baud"),
                        format!("{} is not between 300 and 1000000", r.baud),
                    );
                }
                if !(1..=2).contains(&r.stop_bits) {
                    return err(
                        &f("transport.rtu.stop_bits"),
                        format!("{} is not 1 or 2", r.stop_bits),
                    );
                }
                if !(7..=8).contains(&r.data_bits) {
                    return err(
                        &f("transport.rtu.data_bits"),
                        format!("{} is not 7 or 8", r.data_bits),
                    );
                }
            }
            Transport::Mqtt(_) => {}
        }
        if let Some(other) = units.insert((m.transport.link_key(), m.unit_id), &m.meter_id) {
            return err(
                &f("unit_id"),
                format!(
                    "meter {} has the same link and unit id as meter {other}",
                    m.meter_id
                ),
            );
        }
    }
    let u = &c.uplink;
    match parse_uplink_url(&u.url) {
        Err(e) => return err("uplink.url", e),
        Ok(parsed) if !parsed.tls && u.tls_ca_file.is_some() => {
            return err(
                "uplink.tls_ca_file",
                "is only used with an mqtts:// url".into(),
            );
        }
        Ok(_) => {}
    }
    if u.keep_alive_s < 5 {
        return err(
            "uplink.keep_alive_s",
            format!("{} is below 5", u.keep_alive_s),
        );
    }
    if u.max_inflight == 0 {
        return err("uplink.max_inflight", "must be at least 1".into());
    }
    if u.batch_max_readings == 0
        || u.batch_max_readings > waterworks_wire::reading::MAX_READINGS_PER_BATCH
    {
        return err(
            "uplink.batch_max_readings",
            format!(
                "{} is not between 1 and {}",
                u.batch_max_readings,
                waterworks_wire::reading::MAX_READINGS_PER_BATCH
            ),
        );
    }
    if u.password.is_some() && u.username.is_none() {
        return err("uplink.password", "a password needs a username".into());
    }
    // The broker's ACL lets a user publish only under its own name
    // (`waterworks/v1/%u/...`); a refused publish is still PUBACKed by
    // Mosquitto, so a mismatch would lose every reading without an error.
    if let Some(user) = &u.username {
        if user.as_str() != c.gateway_id.as_str() {
            return err(
                "uplink.username",
                format!(
                    "{user:?} differs from gateway_id {:?}; the broker lets a gateway publish only under its own id as username",
                    c.gateway_id.as_str()
                ),
            );
        }
    }
    if u.ack_timeout_s == 0 || u.ack_timeout_s > 3600 {
        return err(
            "uplink.ack_timeout_s",
            format!("{} is not between 1 and 3600", u.ack_timeout_s),
        );
    }
    if c.spool.max_bytes < crate::spool::MIN_SPOOL_BYTES {
        return err(
            "spool.max_bytes",
            format!(
                "{} is below the minimum of {}",
                c.spool.max_bytes,
                crate::spool::MIN_SPOOL_BYTES
            ),
        );
    }
    Ok(())
}

/// Checks an MQTT-native meter's broker, topic filter and mapping; the error
/// names the key under `transport.mqtt`.
fn check_mqtt_meter(m: &MqttMeterConfig) -> Result<(), (String, String)> {
    match parse_uplink_url(&m.broker) {
        Err(e) => return Err(("broker".into(), e)),
        Ok(u) if u.tls => {
            return Err((
                "broker".into(),
                "the meters' broker is local: mqtt:// only".into(),
            ))
        }
        Ok(_) => {}
    }
    check_topic_filter(&m.topic).map_err(|e| ("topic".to_string(), e))?;
    let map = &m.mapping;
    let pointers = [
        ("mapping.meter_id", Some(&map.meter_id)),
        ("mapping.ts", Some(&map.ts)),
        ("mapping.volume", Some(&map.volume)),
        ("mapping.flow", map.flow.as_ref()),
        ("mapping.alarms", map.alarms.as_ref()),
    ];
    for (name, p) in pointers {
        if let Some(p) = p {
            if !p.starts_with('/') {
                return Err((
                    name.into(),
                    format!("{p:?} is not a JSON pointer (it starts with `/`, e.g. \"/volume_l\")"),
                ));
            }
        }
    }
    if !matches!(map.volume_unit, Unit::Litre | Unit::CubicMetre) {
        return Err((
            "mapping.volume_unit".into(),
            format!("{:?} is not a volume (L or m3)", map.volume_unit),
        ));
    }
    if matches!(map.flow_unit, Unit::Litre | Unit::CubicMetre) {
        return Err((
            "mapping.flow_unit".into(),
            format!("{:?} is not a flow (L/h, L/min, L/s, m3/h)", map.flow_unit),
        ));
    }
    for (name, scale) in [
        ("mapping.volume_scale", map.volume_scale),
        ("mapping.flow_scale", map.flow_scale),
    ] {
        if scale <= Decimal::ZERO {
            return Err((name.into(), format!("scale {scale} must be positive")));
        }
    }
    Ok(())
}

/// An MQTT topic filter: non-empty, `+` a whole level, `#` only as the last level.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() || filter.len() > 1024 {
        return Err(format!(
            "{filter:?} is not a topic filter (1 to 1024 bytes)"
        ));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "{filter:?}: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("{filter:?}: `+` must be a whole level"));
        }
    }
    Ok(())
}

fn check_interval(s: u32) -> Result<(), String> {
    if s == 0 || s > MAX_INTERVAL_S || MAX_INTERVAL_S % s != 0 {
        return Err(format!(
            "{s} s does not divide a day (86400 s), so reads could not align"
        ));
    }
    Ok(())
}

/// `host:port` with a non-empty host and a numeric port.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// A broker address parsed from `uplink.url` (the workspace's one parser).
pub type UplinkUrl = MqttUrl;

/// Parses `mqtt://host[:port]` (also `tcp://`; port 1883) or
/// `mqtts://host[:port]` (also `ssl://`; port 8883), IPv6 hosts in brackets,
/// with `waterworks_service::mqtt_url`.
pub fn parse_uplink_url(url: &str) -> Result<UplinkUrl, String> {
    MqttUrl::parse(url).map_err(|e| e.to_string())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Best effort: the line where a field path such as `meters[3].unit_id` is written.
fn locate(text: &str, field: &str) -> Option<usize> {
    let mut lines = text.lines().enumerate();
    let mut parts = field.split('.');
    let first = parts.next()?;
    let last = field
        .rsplit('.')
        .next()?
        .trim_end_matches(|c: char| c == ']' || c.is_ascii_digit());
    let last = last.trim_end_matches('[');
    if let Some((table, idx)) = first.split_once('[') {
        let idx: usize = idx.trim_end_matches(']').parse().ok()?;
        let header = format!("[[{table}]]");
        let mut n = 0;
        let mut start = None;
        for (i, l) in lines.by_ref() {
            if l.trim() == header {
                if n == idx {
                    start = Some(i);
                    break;
                }
                n += 1;
            }
        }
        let start = start?;
        if parts.next().is_none() {
            return Some(start + 1);
        }
        for (i, l) in lines {
            let t = l.trim_start();
            if t.starts_with('[') {
                break;
            }
            if t.starts_with(last) || t.starts_with(field.split('.').nth(1)?) {
                return Some(i + 1);
            }
        }
        return Some(start + 1);
    }
    if parts.clone().next().is_some() {
        let header = format!("[{first}]");
        let mut in_table = false;
        for (i, l) in lines {
            let t = l.trim();
            if t.starts_with('[') {
                in_table = t == header;
                continue;
            }
            if in_table && t.starts_with(last) {
                return Some(i + 1);
            }
        }
        return None;
    }
    lines
        .find(|(_, l)| l.trim_start().starts_with(first))
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
gateway_id = "gw-01"
profiles = ["p.toml"]

[[meters]]
meter_id = "m-1"
transport = { tcp = "127.0.0.1:5020" }
unit_id = 1
profile = "waterworks-sim-v1"

[[meters]]
meter_id = "m-2"
transport = { rtu = { device = "/dev/ttyUSB0", baud = 9600, parity = "even" } }
unit_id = 2
profile = "waterworks-sim-v1"
poll_interval_s = 300

[uplink]
url = "mqtt://127.0.0.1:1883"

[spool]
dir = "/tmp/spool"
max_bytes = 10000000
"#;

    #[test]
    fn parses_the_documented_shape() {
        let c = parse_config(GOOD, "gw.toml").unwrap();
        assert_eq!(c.poll, PollConfig::default());
        assert_eq!(
            c.meters[0].transport,
            Transport::Tcp {
                addr: "127.0.0.1:5020".into()
            }
        );
        match &c.meters[1].transport {
            Transport::Rtu(r) => {
                assert_eq!(r.baud, 9600);
                assert_eq!(r.parity, Parity::Even);
                assert_eq!(r.stop_bits, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.meters[1].interval_s(&c.poll), 300);
        assert_eq!(c.uplink.batch_max_readings, 1000);
    }

    #[test]
    fn username_must_be_the_gateway_id() {
        let bad = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtt://127.0.0.1:1883\"\nusername = \"gw-02\"\npassword = \"pw\"",
        );
        let s = parse_config(&bad, "gw.toml").unwrap_err().to_string();
        assert!(
            s.contains("uplink.username") && s.contains("gw-02") && s.contains("gw-01"),
            "{s}"
        );
        let good = bad.replace("username = \"gw-02\"", "username = \"gw-01\"");
        let c = parse_config(&good, "gw.toml").unwrap();
        assert_eq!(c.uplink.ack, AckMode::Ingest);
        assert_eq!(c.uplink.ack_timeout_s, 30);
        assert_eq!(c.uplink.password.as_ref().map(Secret::expose), Some("pw"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("\"pw\"") && shown.contains("Secret(***)"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let bad = GOOD.replace("unit_id = 2", "unit_id = 2\nunit = 3");
        let e = parse_config(&bad, "gw.toml").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("gw.toml") && s.contains("line 15") && s.contains("unit"),
            "{s}"
        );
    }

    #[test]
    fn invalid_values_name_field_and_line() {
        let bad = GOOD.replace("unit_id = 2", "unit_id = 0");
        let s = parse_config(&bad, "gw.toml").unwrap_err().to_string();
        assert!(
            s.contains("meters[1].unit_id") && s.contains("line 14"),
            "{s}"
        );
        let bad = GOOD.replace("poll_interval_s = 300", "poll_interval_s = 7");
        let s = parse_config(&bad, "gw.toml").unwrap_err().to_string();
        assert!(
            s.contains("meters[1].poll_interval_s") && s.contains("line 16"),
            "{s}"
        );
        let bad = GOOD.replace("mqtt://", "http://");
        let s = parse_config(&bad, "gw.toml").unwrap_err().to_string();
        assert!(s.contains("uplink.url") && s.contains("line 19"), "{s}");
        let bad = GOOD.replace("\"m-2\"", "\"m-1\"");
        let s = parse_config(&bad, "gw.toml").unwrap_err().to_string();
        assert!(s.contains("configured twice"), "{s}");
    }

    #[test]
    fn mqtt_native_meters() {
        let with = |meter: &str| {
            GOOD.replace(
                "[uplink]",
                &format!("[[meters]]\nmeter_id = \"m-3\"\n{meter}\n\n[uplink]"),
            )
        };
        let c = parse_config(
            &with("transport = { mqtt = { topic = \"meters/v1/+/reading\" } }"),
            "gw.toml",
        )
        .unwrap();
        match &c.meters[2].transport {
            Transport::Mqtt(m) => {
                assert_eq!(m.broker, "mqtt://127.0.0.1:1883");
                assert_eq!(m.mapping, JsonMapping::default());
            }
            other => panic!("{other:?}"),
        }
        let c = parse_config(
            &with("transport = { mqtt = { topic = \"t/#\", mapping = { volume = \"/v\", volume_unit = \"m3\", volume_scale = \"0.001\", flow = \"/q\" } } }"),
            "gw.toml",
        )
        .unwrap();
        let Transport::Mqtt(m) = &c.meters[2].transport else {
            panic!()
        };
        assert_eq!(m.mapping.volume_unit, Unit::CubicMetre);
        assert_eq!(m.mapping.volume_scale, Decimal::new(1, 3));
        for (meter, want) in [
            (
                "transport = { mqtt = { topic = \"a/#/b\" } }",
                "meters[2].transport.mqtt.topic",
            ),
            (
                "transport = { mqtt = { topic = \"a/b+\" } }",
                "meters[2].transport.mqtt.topic",
            ),
            (
                "transport = { mqtt = { topic = \"a\", mapping = { ts = \"ts\" } } }",
                "meters[2].transport.mqtt.mapping.ts",
            ),
            (
                "transport = { mqtt = { topic = \"a\", mapping = { volume_unit = \"L/h\" } } }",
                "mapping.volume_unit",
            ),
            (
                "transport = { mqtt = { topic = \"a\", broker = \"mqtts://h\" } }",
                "transport.mqtt.broker",
            ),
            (
                "transport = { mqtt = { topic = \"a\" } }\nunit_id = 3",
                "meters[2].unit_id",
            ),
            (
                "transport = { mqtt = { topic = \"a\" } }\nprofile = \"waterworks-sim-v1\"",
                "meters[2].profile",
            ),
            (
                "transport = { mqtt = { topic = \"a\" } }\npoll_interval_s = 60",
                "meters[2].poll_interval_s",
            ),
            (
                "transport = { tcp = \"h:1\" }\nunit_id = 3",
                "meters[2].profile",
            ),
        ] {
            let e = parse_config(&with(meter), "gw.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{meter}: {e}");
        }
        let e = parse_config(
            &with("transport = { mqtt = { topic = \"a\", typo = 1 } }"),
            "gw.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("typo") && e.contains("line"), "{e}");
        // Two meters on one subscription must agree on the mapping.
        let two = with("transport = { mqtt = { topic = \"a\" } }").replace(
            "[uplink]",
            "[[meters]]\nmeter_id = \"m-4\"\ntransport = { mqtt = { topic = \"a\", mapping = { volume = \"/v\" } } }\n\n[uplink]",
        );
        let e = parse_config(&two, "gw.toml").unwrap_err().to_string();
        assert!(e.contains("meters[3].transport.mqtt.mapping"), "{e}");
    }

    #[test]
    fn mqtt_urls() {
        let plain = |url: &str| parse_uplink_url(url).map(|u| (u.host, u.port, u.tls));
        assert_eq!(plain("mqtt://h:1884").unwrap(), ("h".into(), 1884, false));
        assert_eq!(plain("mqtt://h").unwrap(), ("h".into(), 1883, false));
        assert!(plain("mqtt://h:x").unwrap_err().contains("bad port"));
        assert!(plain("mqtt://").is_err());
        let u = parse_uplink_url("mqtts://broker.example").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example", 8883, true)
        );
        assert!(!parse_uplink_url("mqtt://h").unwrap().tls);
        assert!(parse_uplink_url("http://h").is_err());
    }

    #[test]
    fn load_resolves_profiles_and_checks_references() {
        let dir = tempfile::tempdir().unwrap();
        let sim = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/profiles/waterworks-sim-v1.toml"
        ))
        .unwrap();
        std::fs::write(dir.path().join("p.toml"), sim).unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(&path, GOOD).unwrap();
        let c = load_config(&path).unwrap();
        assert_eq!(c.profiles[0], dir.path().join("p.toml"));
        std::fs::write(
            &path,
            GOOD.replace(
                "profile = \"waterworks-sim-v1\"\npoll",
                "profile = \"nope\"\npoll",
            ),
        )
        .unwrap();
        let s = load_config(&path).unwrap_err().to_string();
        assert!(s.contains("meters[1].profile") && s.contains("nope"), "{s}");
    }
}
