//! (Long because it is the whole ingest contract: each type is short, and one file keeps the contract readable in one place.)
//! The ingest service's contract: meters and their readings, gateways, the
//! quarantine and the operators' dashboard.
//!
//! Each query type states its bounds twice, once for the OpenAPI document
//! (`#[param(minimum, maximum, pattern)]`) and once in code (its `check`),
//! and the two use the same constants: ingest refuses (400) exactly what the
//! document says is out of bounds, and nothing else.
//!
//! This module must never hold service logic: types, bounds, and the checks
//! of those bounds.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Most rows any one `/api/v1` list carries (meters, readings, gaps,
/// quarantine page); also the longest `daily` range in days.
pub const MAX_ROWS: i64 = 10_000;
/// Rows of a list when `limit` is absent.
pub const DEFAULT_ROWS: i64 = 1_000;
/// Most rows any one dashboard list carries.
pub const DASHBOARD_MAX_ROWS: i64 = 1_000;
/// Longest "silent for" window of `GET /api/v1/meters?status=silent`, hours
/// (ten years).
pub const MAX_SILENT_HOURS: i64 = 24 * 3660;
/// Longest "silent for" window of the dashboard, hours (400 days).
pub const DASHBOARD_MAX_SILENT_HOURS: i64 = 24 * 400;
/// A meter or gateway identifier: ASCII letters, digits, `-`, `_`, `.`,
/// 1 to 64 characters (`waterworks_wire::MeterId`).
pub const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";
/// The beginning of an identifier (the dashboard's search), possibly empty.
pub const ID_PREFIX_PATTERN: &str = "^[A-Za-z0-9._-]{0,64}$";
/// Most meters in one `PUT /api/v1/meters` batch.
pub const MAX_BATCH_METERS: usize = 10_000;
/// Most bytes in one `PUT /api/v1/meters` body.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Largest `max_flow_lph` accepted (10 000 m³/h: beyond any DN1000 meter's
/// Q4; a larger figure is a unit mistake).
pub const MAX_FLOW_LPH_LIMIT: f64 = 10_000_000.0;
/// The device profiles ingest knows (those shipped in `fixtures/profiles/`);
/// ingest's tests check this list against the files.
pub const DEVICE_PROFILE_IDS: [&str; 4] = [
    "mag-ldg-f32",
    "tuf-2000m",
    "waterworks-sim-dn50-v1",
    "waterworks-sim-v1",
];

/// Whether `s` is a well-formed meter or gateway identifier ([`ID_PATTERN`]).
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && is_id_prefix(s)
}

/// Whether `s` may begin an identifier ([`ID_PREFIX_PATTERN`]).
pub fn is_id_prefix(s: &str) -> bool {
    s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `value` (or `default`) when within `min..=max`, else why not.
fn bounded(
    name: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, String> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{name} must be between {min} and {max}"))
    }
}

fn id_param(name: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if !is_id(v) => Err(format!(
            "{name} must be 1 to 64 ASCII letters, digits, '-', '_' or '.'"
        )),
        _ => Ok(()),
    }
}

// --- Enums ----------------------------------------------------------------

/// An alarm a meter raises with a reading: the wire's own type, so a
/// name the gateway sends and the name the API shows cannot drift apart.
pub use waterworks_wire::Alarm;

/// Why ingest refused a reading or a whole message.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Not a readings batch of the documented format.
    Malformed,
    /// A meter the registry does not know.
    UnknownMeter,
    /// A meter registered to another gateway.
    WrongGateway,
    /// Stamped too far in the future.
    Future,
    /// Older than the retention window.
    TooOld,
    /// The totalizer went backwards.
    Backwards,
    /// Implied flow above the meter's maximum.
    Spike,
    /// A different value for a reading already stored.
    Conflict,
}

impl QuarantineReason {
    pub const ALL: [QuarantineReason; 8] = [
        QuarantineReason::Malformed,
        QuarantineReason::UnknownMeter,
        QuarantineReason::WrongGateway,
        QuarantineReason::Future,
        QuarantineReason::TooOld,
        QuarantineReason::Backwards,
        QuarantineReason::Spike,
        QuarantineReason::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => "malformed",
            QuarantineReason::UnknownMeter => "unknown_meter",
            QuarantineReason::WrongGateway => "wrong_gateway",
            QuarantineReason::Future => "future",
            QuarantineReason::TooOld => "too_old",
            QuarantineReason::Backwards => "backwards",
            QuarantineReason::Spike => "spike",
            QuarantineReason::Conflict => "conflict",
        }
    }
}

/// A gateway's retained status (its MQTT status topic and will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum GatewayStatus {
    Online,
    Offline,
}

/// What a gap row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// A jump in a gateway's `batch_seq` (`from_seq..to_seq` missing).
    BatchSeq,
    /// A meter missing expected reads (`from_ts..to_ts`).
    MeterReads,
}

/// Whether a day holds every expected read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type))]
#[cfg_attr(feature = "sqlx", sqlx(type_name = "text", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum DayQuality {
    /// Every expected read present, and the day before has reads.
    Actual,
    Gap,
}

/// The `status` filter of `GET /api/v1/meters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeterStatus {
    All,
    /// No read for `hours`.
    Silent,
    /// The newest read carries alarms.
    Alarm,
}

/// The span of the dashboard's overview.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The last hour, per minute.
    Hour,
    /// The last day, per 15 minutes.
    Day,
}

/// What a registration did to one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationOutcome {
    Created,
    Changed,
    Unchanged,
}

// --- Meters and readings --------------------------------------------------

/// `GET /api/v1/meters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetersQuery {
    /// `all` (default), `silent` (no read for `hours`) or `alarm` (the
    /// newest read carries alarms).
    pub status: Option<MeterStatus>,
    /// With `status=silent`: hours without a read (default 24).
    #[param(minimum = 0, maximum = 87840)]
    pub hours: Option<i64>,
    /// Only the meters of this gateway.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub gateway_id: Option<String>,
    /// Rows, default 1000.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

impl MetersQuery {
    /// `(hours, limit)` within bounds, or why not.
    pub fn check(&self) -> Result<(i64, i64), String> {
        id_param("gateway_id", self.gateway_id.as_deref())?;
        Ok((
            bounded("hours", self.hours, 24, 0, MAX_SILENT_HOURS)?,
            bounded("limit", self.limit, DEFAULT_ROWS, 1, MAX_ROWS)?,
        ))
    }
}

/// A meter as the registry and the writer keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Meter {
    pub meter_id: String,
    pub gateway_id: String,
    pub profile_id: String,
    /// For the spike rule; null: no spike rule for this meter.
    pub max_flow_lph: Option<f64>,
    /// The newest stored reading's time, totalizer and alarms.
    pub last_ts: Option<DateTime<Utc>>,
    pub last_volume_l: Option<i64>,
    pub last_alarms: Option<Vec<Alarm>>,
    /// When that reading was stored.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A list of meters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeterList {
    pub meters: Vec<Meter>,
}

/// `GET /api/v1/meters/{id}/readings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadingsQuery {
    /// Default: `to` minus one day. After `to`: no readings.
    pub from: Option<DateTime<Utc>>,
    /// Default: now.
    pub to: Option<DateTime<Utc>>,
    /// Rows, default 1000.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

impl ReadingsQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        bounded("limit", self.limit, DEFAULT_ROWS, 1, MAX_ROWS)
    }
}

/// One stored reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Reading {
    pub ts: DateTime<Utc>,
    /// The totalizer, whole litres.
    pub volume_l: i64,
    pub flow_lph: Option<f64>,
    pub alarms: Vec<Alarm>,
}

/// A meter's readings in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readings {
    pub meter_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub readings: Vec<Reading>,
}

/// `GET /api/v1/meters/{id}/daily` (UTC days).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// First day; default `to` minus 30 days. After `to`: no days. A range
    /// longer than 10 000 days answers its last 10 000.
    pub from: Option<NaiveDate>,
    /// Last day; default today (UTC).
    pub to: Option<NaiveDate>,
}

/// One meter-day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Day {
    pub day: NaiveDate,
    pub first_ts: DateTime<Utc>,
    pub first_volume_l: i64,
    pub last_ts: DateTime<Utc>,
    pub last_volume_l: i64,
    /// Last read of the day minus the last read of the day before (or the
    /// day's first read when the day before has none).
    pub consumption_l: i64,
    pub reads: i32,
    pub alarm_reads: i32,
    pub quality: DayQuality,
}

/// A meter's days in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Daily {
    pub meter_id: String,
    pub days: Vec<Day>,
}

// --- Gateways and gaps ----------------------------------------------------

/// A gateway: status, last batch, counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Gateway {
    pub gateway_id: String,
    /// Null until the gateway has published its status.
    pub status: Option<GatewayStatus>,
    pub status_at: Option<DateTime<Utc>>,
    pub last_batch_seq: Option<i64>,
    pub last_batch_at: Option<DateTime<Utc>>,
    pub batches: i64,
    pub readings: i64,
    pub seq_resets: i32,
    /// Open `batch_seq` gaps.
    pub open_seq_gaps: i64,
    /// Meters registered to it.
    pub meters: i64,
}

/// Every gateway (at most [`MAX_ROWS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayList {
    pub gateways: Vec<Gateway>,
}

/// `GET /api/v1/gaps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GapsQuery {
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub gateway_id: Option<String>,
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub meter_id: Option<String>,
    /// Only gaps not filled yet.
    pub open: Option<bool>,
    /// Rows, default 1000.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
}

impl GapsQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        id_param("gateway_id", self.gateway_id.as_deref())?;
        id_param("meter_id", self.meter_id.as_deref())?;
        bounded("limit", self.limit, DEFAULT_ROWS, 1, MAX_ROWS)
    }
}

/// A gap: a jump in a gateway's batches or a meter's missing reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Gap {
    pub id: i64,
    pub kind: GapKind,
    pub gateway_id: Option<String>,
    pub meter_id: Option<String>,
    pub from_seq: Option<i64>,
    pub to_seq: Option<i64>,
    pub from_ts: Option<DateTime<Utc>>,
    pub to_ts: Option<DateTime<Utc>>,
    pub detected_at: DateTime<Utc>,
    pub filled_at: Option<DateTime<Utc>>,
}

/// Gaps, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GapList {
    pub gaps: Vec<Gap>,
}

// --- Quarantine -----------------------------------------------------------

/// `GET /api/v1/quarantine`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// Only rows refused for this reason.
    pub reason: Option<QuarantineReason>,
    /// Rows, default 1000.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page: rows with a smaller id.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    pub cursor: Option<i64>,
}

impl QuarantineQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        if self.cursor.is_some_and(|c| c < 0) {
            return Err("cursor is a row id: 0 or more".into());
        }
        bounded("limit", self.limit, DEFAULT_ROWS, 1, MAX_ROWS)
    }
}

/// A refused reading or message, deduplicated by gateway, reason and
/// content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct QuarantineItem {
    pub id: i64,
    /// When this content was first seen.
    pub received_at: DateTime<Utc>,
    /// When it was last seen.
    pub last_seen_at: DateTime<Utc>,
    /// Times this gateway sent this content refused for this reason.
    pub seen_count: i64,
    pub gateway_id: Option<String>,
    pub topic: String,
    /// Of the first sighting.
    pub batch_seq: Option<i64>,
    pub reason: QuarantineReason,
    /// At most 512 characters.
    pub detail: String,
    /// The refused reading as received; one over 4096 bytes of JSON is
    /// `{truncated: true, prefix, sha256, bytes}`.
    #[schema(value_type = Option<Object>)]
    pub reading: Option<serde_json::Value>,
    /// A message refused whole: the first 4096 bytes of its payload (bytea
    /// escape format).
    pub payload: Option<String>,
    /// The whole payload's length in bytes.
    pub payload_len: Option<i32>,
    /// The whole payload's SHA-256, hex.
    pub payload_sha256: Option<String>,
    pub meter_id: Option<String>,
    pub ts: Option<DateTime<Utc>>,
}

/// One page of the quarantine, newest first by first sighting, with the
/// counts of the whole quarantine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuarantinePage {
    /// Times seen (sum of `seen_count`) by reason.
    pub counts: BTreeMap<QuarantineReason, i64>,
    /// Rows by reason.
    pub rows: BTreeMap<QuarantineReason, i64>,
    pub items: Vec<QuarantineItem>,
    /// Continues the list (`cursor`); null on the last page.
    pub next_cursor: Option<i64>,
    /// The page was cut by the byte budget rather than by `limit`.
    pub truncated: bool,
}

// --- Registry -------------------------------------------------------------

/// `PUT /api/v1/meters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// Report what would change and write nothing.
    pub dry_run: Option<bool>,
}

fn some_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

fn device_profile_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(DEVICE_PROFILE_IDS))
        .description(Some(format!(
            "a device profile ingest knows: the ones shipped in fixtures/profiles ({})",
            DEVICE_PROFILE_IDS.join(", ")
        )))
        .build()
}

/// One meter to register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterRegistration {
    /// At most once in a batch.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub meter_id: String,
    /// The gateway that reads and reports the meter.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub gateway_id: String,
    #[schema(schema_with = device_profile_schema)]
    pub profile_id: String,
    /// Litres per hour, for the spike rule. Absent: the profile's Q4;
    /// null: no spike rule for this meter.
    #[serde(
        default,
        deserialize_with = "some_value",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, maximum = 10000000)]
    pub max_flow_lph: Option<Option<f64>>,
}

/// The body of `PUT /api/v1/meters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeterBatch {
    #[schema(min_items = 1, max_items = 10000)]
    pub meters: Vec<MeterRegistration>,
}

/// One meter's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeterOutcome {
    pub meter_id: String,
    pub outcome: RegistrationOutcome,
    /// Present when the meter moved from this gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from_gateway_id: Option<String>,
}

/// What a batch did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RegisterReport {
    pub dry_run: bool,
    pub created: u64,
    pub changed: u64,
    /// Of `changed`, how many moved to another gateway.
    pub moved: u64,
    pub unchanged: u64,
    /// Each meter, in the batch's order.
    pub meters: Vec<MeterOutcome>,
}

// --- Dashboard ------------------------------------------------------------

/// `GET /api/v1/dashboard/overview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// `hour` (per-minute points, default) or `day` (per-15-minute points).
    pub window: Option<Window>,
}

/// One point of the overview's charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Bucket {
    pub t: DateTime<Utc>,
    pub readings: i64,
    pub batches: i64,
    pub quarantined: i64,
    pub lag_ms_max: Option<i64>,
}

/// Quarantine by reason: times seen, of the rows last seen within the last
/// hour and day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct ReasonCount {
    pub reason: QuarantineReason,
    pub last_hour: i64,
    pub last_day: i64,
}

/// The fleet at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct FleetCounts {
    pub meters: i64,
    pub silent_24h: i64,
    pub gateways: i64,
    pub gateways_online: i64,
    pub active_alarms: i64,
}

/// The operators' overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    pub window: Window,
    /// Seconds between two buckets.
    pub step_s: i64,
    pub buckets: Vec<Bucket>,
    /// Readings stored per second over the last full minute.
    pub readings_per_s: f64,
    /// The newest sampled ingest lag within the last hour.
    pub lag_ms: Option<i64>,
    pub quarantine_by_reason: Vec<ReasonCount>,
    pub counts: FleetCounts,
    /// Seconds between two samples of the dashboard sampler.
    pub sample_interval_s: u64,
}

/// `GET /api/v1/dashboard/alarms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmsQuery {
    /// Only this alarm.
    pub alarm: Option<Alarm>,
    /// Rows, default 200.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl AlarmsQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        bounded("limit", self.limit, 200, 1, DASHBOARD_MAX_ROWS)
    }
}

/// An open alarm with since-when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct OpenAlarm {
    pub meter_id: String,
    pub gateway_id: String,
    pub alarm: Alarm,
    pub since: DateTime<Utc>,
    pub last_ts: Option<DateTime<Utc>>,
    pub last_volume_l: Option<i64>,
}

/// Open alarms, newest first, and how many of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlarmList {
    pub counts: BTreeMap<Alarm, i64>,
    pub alarms: Vec<OpenAlarm>,
}

/// `GET /api/v1/dashboard/meters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The beginning of a meter id (empty: every meter).
    #[param(pattern = "^[A-Za-z0-9._-]{0,64}$")]
    pub q: Option<String>,
    /// Rows, default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl SearchQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        if self.q.as_deref().is_some_and(|q| !is_id_prefix(q)) {
            return Err(
                "q must be at most 64 ASCII letters, digits, '-', '_' or '.' (a meter id's beginning)"
                    .into(),
            );
        }
        bounded("limit", self.limit, 50, 1, DASHBOARD_MAX_ROWS)
    }
}

/// `GET /api/v1/dashboard/silent`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SilentQuery {
    /// Hours without a reading, default 24.
    #[param(minimum = 1, maximum = 9600)]
    pub hours: Option<i64>,
    /// Rows, default 200.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl SilentQuery {
    /// `(hours, limit)` within bounds, or why not.
    pub fn check(&self) -> Result<(i64, i64), String> {
        Ok((
            bounded("hours", self.hours, 24, 1, DASHBOARD_MAX_SILENT_HOURS)?,
            bounded("limit", self.limit, 200, 1, DASHBOARD_MAX_ROWS)?,
        ))
    }
}

/// Meters without a reading for `hours`, the longest silent first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilentMeters {
    pub hours: i64,
    /// How many in all (the list stops at `limit`).
    pub total: i64,
    pub meters: Vec<Meter>,
}

/// One alarm of a meter, open (no `cleared_at`) or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AlarmSpan {
    pub alarm: Alarm,
    pub since: DateTime<Utc>,
    pub cleared_at: Option<DateTime<Utc>>,
}

/// A meter and its last 20 alarm spans, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeterDetail {
    pub meter: Meter,
    pub alarms: Vec<AlarmSpan>,
}

/// `GET /api/v1/dashboard/meters/{id}/quarantine`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MeterQuarantineQuery {
    /// Rows, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl MeterQuarantineQuery {
    /// `limit` within bounds, or why not.
    pub fn check(&self) -> Result<i64, String> {
        bounded("limit", self.limit, 100, 1, DASHBOARD_MAX_ROWS)
    }
}

/// A quarantined reading of one meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct QuarantinedReading {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub gateway_id: Option<String>,
    pub batch_seq: Option<i64>,
    pub reason: QuarantineReason,
    pub detail: String,
    pub ts: Option<DateTime<Utc>>,
    /// The refused reading as received.
    #[schema(value_type = Option<Object>)]
    pub reading: Option<serde_json::Value>,
}

/// A meter's quarantined readings, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MeterQuarantine {
    pub meter_id: String,
    pub items: Vec<QuarantinedReading>,
}

/// `GET /api/v1/whoami`: who the bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub name: String,
    pub role: crate::Role,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_what_the_document_refuses() {
        let q = MetersQuery {
            limit: Some(MAX_ROWS + 1),
            ..Default::default()
        };
        assert!(q.check().is_err());
        let q = MetersQuery {
            limit: Some(MAX_ROWS),
            hours: Some(0),
            ..Default::default()
        };
        assert_eq!(q.check(), Ok((0, MAX_ROWS)));
        assert_eq!(MetersQuery::default().check(), Ok((24, DEFAULT_ROWS)));
        let q = GapsQuery {
            meter_id: Some("m/1".into()),
            ..Default::default()
        };
        assert!(q.check().is_err());
        let q = SearchQuery {
            q: Some(String::new()),
            limit: Some(0),
        };
        assert!(q.check().is_err());
        assert!(is_id_prefix("") && !is_id("") && is_id("m-1.a_B"));
        assert!(!is_id_prefix("주소") && !is_id(&"x".repeat(65)));
    }

    #[test]
    fn an_absent_max_flow_differs_from_a_null_one() {
        let absent: MeterRegistration = serde_json::from_str(
            r#"{"meter_id": "m", "gateway_id": "g", "profile_id": "tuf-2000m"}"#,
        )
        .unwrap();
        let null: MeterRegistration = serde_json::from_str(
            r#"{"meter_id": "m", "gateway_id": "g", "profile_id": "tuf-2000m", "max_flow_lph": null}"#,
        )
        .unwrap();
        assert_eq!(absent.max_flow_lph, None);
        assert_eq!(null.max_flow_lph, Some(None));
        let back = serde_json::to_value(&null).unwrap();
        assert!(back["max_flow_lph"].is_null() && back.get("max_flow_lph").is_some());
        let back = serde_json::to_value(&absent).unwrap();
        assert!(back.get("max_flow_lph").is_none());
    }

    #[test]
    fn enums_speak_the_wire_words() {
        for r in QuarantineReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for a in Alarm::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        let counts: BTreeMap<Alarm, i64> = serde_json::from_str(r#"{"leak": 2}"#).unwrap();
        assert_eq!(counts[&Alarm::Leak], 2);
    }
}
