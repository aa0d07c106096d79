//! Master data (billing owns it): customers, premises (수용가), meters and
//! their installations over time, and the import of a utility's export.
//!
//! Writes are batches (`PUT /api/v1/master/{customers,premises,meters,installations}`,
//! admin): every item is checked before anything is written, one bad item
//! refuses the batch with 422 `invalid` and every problem by index, field
//! and reason ([`crate::error::Problem`]); a good batch is one transaction,
//! idempotent and audited, answered with an [`UpsertReport`]. `?dry_run=true`
//! answers the same and writes nothing.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who pays: a name and a way to reach them, nothing more personal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// The utility's customer number (1-64 characters).
    pub customer_id: String,
    pub name: String,
    /// A telephone number or an e-mail address; may be empty.
    #[serde(default)]
    pub contact: String,
}

/// A premises (수용가), keyed by its 수용가번호: the account billing bills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
#[serde(deny_unknown_fields)]
pub struct Premises {
    /// 수용가번호 (1-64 printable characters).
    pub account_no: String,
    /// The customer billed (must exist).
    pub customer_id: String,
    /// The service address printed on notices.
    pub address: String,
    /// 도로명주소; may be empty.
    #[serde(default)]
    pub road_address: String,
    /// A usage type of the tariff (`household`, `general`, ...).
    pub usage_type: String,
    /// A diameter the tariff prices a base charge for.
    #[serde(deserialize_with = "crate::billing::whole::i32")]
    pub diameter_mm: i32,
    #[serde(deserialize_with = "crate::billing::whole::i32")]
    #[schema(minimum = 1)]
    pub households: i32,
    pub sewer_connected: bool,
    pub levy_exempt: bool,
    pub billing_group: String,
    /// 검침구역; may be empty.
    #[serde(default)]
    pub reading_route: String,
}

/// A water meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// The id the meter reports under (1-64 characters).
    pub meter_id: String,
    pub serial: String,
    pub maker: String,
    pub model: String,
    /// The device profile ingest decodes it with.
    pub profile_id: String,
    #[serde(deserialize_with = "crate::billing::whole::i32")]
    pub diameter_mm: i32,
    pub manufactured_on: Option<NaiveDate>,
    /// 검정: the date of its legal verification.
    pub verified_on: Option<NaiveDate>,
    /// The gateway that reads it.
    pub gateway_id: String,
}

/// A meter at a premises from `installed_at` until `removed_at` (half-open;
/// none: still there), with the register's reading at installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
#[serde(deny_unknown_fields)]
pub struct Installation {
    pub account_no: String,
    pub meter_id: String,
    pub installed_at: DateTime<Utc>,
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
    /// m³ on the register when installed: a decimal string, at most 3
    /// decimals (litres); default 0.
    #[serde(default)]
    #[schema(value_type = String, pattern = r"^[0-9]{1,11}(\.[0-9]{1,3})?$", example = "1234.567")]
    pub install_read_m3: Decimal,
}

/// The body of `PUT /api/v1/master/customers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomersBatch {
    /// 1 to 250,000 items (more: 413 `too_large`).
    #[schema(min_items = 1)]
    pub customers: Vec<Customer>,
}

/// The body of `PUT /api/v1/master/premises`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PremisesBatch {
    /// 1 to 250,000 items (more: 413 `too_large`).
    #[schema(min_items = 1)]
    pub premises: Vec<Premises>,
}

/// The body of `PUT /api/v1/master/meters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetersBatch {
    /// 1 to 250,000 items (more: 413 `too_large`).
    #[schema(min_items = 1)]
    pub meters: Vec<Meter>,
}

/// The body of `PUT /api/v1/master/installations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationsBatch {
    /// 1 to 250,000 items (more: 413 `too_large`).
    #[schema(min_items = 1)]
    pub installations: Vec<Installation>,
}

/// What a batch did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpsertReport {
    pub dry_run: bool,
    pub created: u64,
    pub changed: u64,
    pub unchanged: u64,
    /// The keys created, in the batch's order.
    pub created_keys: Vec<String>,
    /// The keys changed, in the batch's order.
    pub changed_keys: Vec<String>,
}

/// `?dry_run=true`: report, write nothing. `?reason=`: why (recorded in
/// the audit log with the batch).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UpsertQuery {
    #[serde(default)]
    pub dry_run: bool,
    /// Why the batch is written (the console's edit form asks for one):
    /// kept in the audit record. 1-500 characters, no NUL; else 400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(min_length = 1, max_length = 500, pattern = r"^[^\x00]*$")]
    pub reason: Option<String>,
}

/// The longest reason of a batch, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// `?q=&limit=` of the searches: a prefix of the key or a substring of the
/// name or address, at most `limit` (default 50, at most 500) results.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Empty: the first `limit` by key.
    #[serde(default)]
    #[param(max_length = 200, pattern = r"^[^\x00]*$")]
    pub q: String,
    #[serde(default)]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Results a search returns when `limit` is not given.
pub const DEFAULT_SEARCH_LIMIT: i64 = 50;
/// The most results a search returns.
pub const MAX_SEARCH_LIMIT: i64 = 500;
/// The longest search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A customer with the premises billed to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerDetail {
    pub customer: Customer,
    pub premises: Vec<String>,
}

/// A premises with its customer and every installation, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PremisesDetail {
    pub premises: Premises,
    pub customer: Option<Customer>,
    pub installations: Vec<Installation>,
}

/// A meter with every installation of it, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeterDetail {
    pub meter: Meter,
    pub installations: Vec<Installation>,
}
