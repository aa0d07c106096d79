//! Accounts (premises and their customer): search, detail, and the
//! administrator's upsert and reductions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::bills::BillStatus;

/// Accounts upserted per request at most.
pub const MAX_ACCOUNTS_PER_REQUEST: usize = 10_000;
/// Reductions an account may hold at most, and their longest name in bytes.
pub const MAX_REDUCTIONS: usize = 16;
pub const MAX_REDUCTION_BYTES: usize = 64;
/// Meter installations listed with an account at most.
pub const MAX_METERS_LISTED: i64 = 100;

/// A meter installed at the premises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct MeterInstallation {
    #[schema(min_length = 1, max_length = 64)]
    pub meter_id: String,
    pub installed_at: DateTime<Utc>,
    /// Must be after `installed_at`.
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
}

/// An account as an administrator writes it (`POST /api/v1/accounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// 1-64 printable characters.
    #[schema(min_length = 1, max_length = 64, example = "AC00001")]
    pub account_no: String,
    pub customer: String,
    /// The service address of the premises.
    pub address: String,
    /// A usage type of the tariff (`household`, `general`, ...).
    #[schema(example = "household")]
    pub usage_type: String,
    #[schema(minimum = 1, maximum = 2147483647, example = 15)]
    #[serde(deserialize_with = "super::whole::u32")]
    pub diameter_mm: u32,
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(deserialize_with = "super::whole::u32")]
    pub households: u32,
    pub sewer_connected: bool,
    pub levy_exempt: bool,
    /// Runs are per period and billing group.
    pub billing_group: String,
    /// Every meter ever installed at the premises, oldest first.
    #[schema(max_items = 100)]
    pub meters: Vec<MeterInstallation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpsertOutcome {
    pub upserted: usize,
}

/// `PUT /api/v1/accounts/{no}/reductions`: the account's reductions from
/// now on (names of the tariff's reductions, e.g. `multi_child`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReductionsRequest {
    #[schema(max_items = 16)]
    pub reductions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReductionsOutcome {
    pub account_no: String,
    pub reductions: Vec<String>,
}

/// `GET /api/v1/accounts?q=`.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountSearchQuery {
    /// An account number or meter id (exact or prefix), or part of a
    /// customer's name or address; 1-100 characters, trimmed (blanks only
    /// find nothing).
    #[param(min_length = 1, max_length = 100, pattern = r"^[^\x00]*$")]
    pub q: String,
    /// Rows at most (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// An account in a search result, with its current meters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AccountHit {
    pub account_no: String,
    pub customer: String,
    pub address: String,
    pub usage_type: String,
    pub billing_group: String,
    pub meters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountSearch {
    pub accounts: Vec<AccountHit>,
    /// The search hit `limit`: narrow it.
    pub truncated: bool,
}

/// An account's own fields as stored, with its meter history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AccountHeader {
    pub account_no: String,
    pub customer: String,
    pub address: String,
    pub usage_type: String,
    pub diameter_mm: i32,
    pub households: i32,
    pub sewer_connected: bool,
    pub levy_exempt: bool,
    pub reductions: Vec<String>,
    pub billing_group: String,
    /// Oldest first.
    #[cfg_attr(feature = "sqlx", sqlx(skip))]
    pub meters: Vec<MeterInstallation>,
}

/// One of an account's recent live bills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct AccountBill {
    pub period: String,
    pub bill_id: i64,
    pub usage_m3: i64,
    pub total_krw: i64,
    pub status: BillStatus,
}

/// `GET /api/v1/accounts/{no}`: the account, its balance and its last 12
/// live bills, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountDetail {
    #[serde(flatten)]
    pub account: AccountHeader,
    /// Owed on issued bills.
    pub open_krw: i64,
    /// Paid beyond what was owed, kept for later bills.
    pub credit_krw: i64,
    pub bills: Vec<AccountBill>,
}
