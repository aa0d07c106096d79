//! The public fee calculator: one premises, one month, priced with the
//! service's tariff. No token needed.

use super::bills::BillLine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// `POST /api/v1/quote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// A usage type of the tariff: `household`, `general`, `bathhouse`,
    /// `industrial`, or the tariff's mixed-use type.
    #[schema(example = "household")]
    pub usage_type: String,
    #[schema(minimum = 1, maximum = 4294967295_i64, example = 15)]
    #[serde(deserialize_with = "super::whole::u32")]
    pub diameter_mm: u32,
    /// Whole m³ used in the month.
    #[schema(maximum = 4294967295_i64, example = 26)]
    #[serde(deserialize_with = "super::whole::u32")]
    pub usage_m3: u32,
    /// Households at the premises (block widths are multiplied by it).
    #[serde(default = "one", deserialize_with = "super::whole::u32")]
    #[schema(minimum = 1, maximum = 4294967295_i64, default = 1)]
    pub households: u32,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub sewer_connected: bool,
    #[serde(default)]
    pub levy_exempt: bool,
    /// The usage month; none prices with the latest version.
    #[serde(default)]
    #[schema(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$",
        example = "2026-10"
    )]
    pub period: Option<String>,
    /// Names of the tariff's reductions granted (e.g. `multi_child`).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub reductions: Vec<String>,
    /// Approved leak relief: the prior three months' average usage in m³.
    #[serde(default, deserialize_with = "super::whole::opt_u32")]
    pub leak_relief_prior_avg_m3: Option<u32>,
}

/// A priced month: its lines, their sum, and the bill as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quote {
    pub city: String,
    /// The version id, or ids joined by `+` when a period is split.
    pub tariff_version: String,
    pub period: Option<String>,
    pub usage_m3: u32,
    pub lines: Vec<BillLine>,
    pub total_krw: i64,
    /// The quote printed like a bill, in Korean and English.
    pub text: String,
}
