//! Bills: the row a list shows, the full bill with its meter legs and
//! explained lines, pages and searches, the notice (고지서), and the
//! corrections a clerk makes (cancel, rebill, adjust).

use super::accounts::AccountHeader;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Bills a list page holds at most (`limit`'s maximum).
pub const MAX_PAGE: i64 = 1_000;
/// Rows a search returns at most (`limit`'s maximum).
pub const MAX_SEARCH: i64 = 200;
/// Longest search text accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 100;
/// Months of usage history on a notice (the bill's own month included).
pub const HISTORY_MONTHS: usize = 12;
/// Longest reason a clerk may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The largest adjustment either way, KRW.
pub const MAX_ADJUSTMENT_KRW: i64 = 1_000_000_000_000;
/// The largest meter reading a corrected read may give, litres.
pub const MAX_VOLUME_L: i64 = 1_000_000_000_000_000;
/// The most readings a corrected read may count.
pub const MAX_READS: i64 = 1_000_000_000;

/// Where a bill stands, as stored in `billing.bills.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum BillStatus {
    /// Numbered, posted to the ledger, owed by the customer.
    Issued,
    /// Written by a run but waiting for a clerk's review (no number yet,
    /// not in the ledger); `POST /bills/{id}/release` issues it.
    Held,
    /// Reversed in the ledger; a rebill names it.
    Cancelled,
}

impl BillStatus {
    pub const ALL: [BillStatus; 3] = [BillStatus::Issued, BillStatus::Held, BillStatus::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            BillStatus::Issued => "issued",
            BillStatus::Held => "held",
            BillStatus::Cancelled => "cancelled",
        }
    }

    /// Not cancelled: counts in history and balances.
    pub fn is_live(self) -> bool {
        self != BillStatus::Cancelled
    }
}

impl std::fmt::Display for BillStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bill component. Also a bill line's kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// 상수도요금: the water charge, in blocks by usage type.
    Water,
    /// 하수도요금: the sewer charge, only for premises connected to the sewer.
    Sewer,
    /// 기본요금: the monthly base charge by meter diameter.
    Base,
    /// 물이용부담금: the river-basin water use levy.
    Levy,
    /// 감면: a reduction (negative amount).
    Reduction,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Water => "water",
            Component::Sewer => "sewer",
            Component::Base => "base",
            Component::Levy => "levy",
            Component::Reduction => "reduction",
        }
    }
}

/// A bill's amounts by component, whole KRW.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Components {
    #[cfg_attr(feature = "sqlx", sqlx(rename = "water_krw"))]
    pub water: i64,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "sewer_krw"))]
    pub sewer: i64,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "base_krw"))]
    pub base: i64,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "levy_krw"))]
    pub levy: i64,
    /// Zero or negative.
    #[cfg_attr(feature = "sqlx", sqlx(rename = "reduction_krw"))]
    pub reduction: i64,
}

/// A bill as a list shows it (no legs, no lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct BillSummary {
    pub bill_id: i64,
    #[schema(example = "2026-10")]
    pub period: String,
    pub account_no: String,
    pub run_id: i64,
    /// The number within the period; none while held.
    pub bill_no: Option<i64>,
    /// `YYYY-MM-NNNNNNN`: what the notice prints and the search finds.
    #[schema(example = "2026-10-0000012")]
    pub bill_number: Option<String>,
    pub status: BillStatus,
    /// Why the bill is held (empty when it is not).
    pub hold_reasons: Vec<String>,
    pub usage_type: String,
    pub usage_m3: i64,
    /// At least one leg was estimated (the meter had no reads).
    pub estimated: bool,
    pub tariff_version: String,
    #[cfg_attr(feature = "sqlx", sqlx(flatten))]
    pub components_krw: Components,
    pub total_krw: i64,
    /// Digest of what the bill was priced from (reads, tariff, account).
    pub input_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One bill with its meter legs and its explained lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Bill {
    #[serde(flatten)]
    #[cfg_attr(feature = "sqlx", sqlx(flatten))]
    pub summary: BillSummary,
    #[cfg_attr(feature = "sqlx", sqlx(json))]
    pub legs: Vec<Leg>,
    #[cfg_attr(feature = "sqlx", sqlx(json))]
    pub lines: Vec<BillLine>,
}

/// A page of bills (`GET /api/v1/bills`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillPage {
    pub bills: Vec<BillSummary>,
    /// Pass as `after_id` for the next page; none on the last page.
    pub next_after_id: Option<i64>,
}

/// `GET /api/v1/bills`: one period's bills in id order, a keyset page.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BillsQuery {
    /// The billing month.
    #[param(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$",
        example = "2026-10"
    )]
    pub period: String,
    /// Only this account's bills.
    #[param(max_length = 64, pattern = r"^[^\x00]*$")]
    pub account_no: Option<String>,
    pub status: Option<BillStatus>,
    /// Bills with a larger id (the previous page's `next_after_id`).
    #[param(minimum = 0)]
    pub after_id: Option<i64>,
    /// Rows per page (default 100); a page also ends before
    /// `max_page_bytes` of JSON.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /api/v1/bills/search`.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BillSearchQuery {
    /// A bill number (`YYYY-MM-NNNNNNN`), an account number (exact or
    /// prefix), or part of a customer's name or address; 1-100 characters,
    /// trimmed (blanks only find nothing).
    #[param(min_length = 1, max_length = 100, pattern = r"^[^\x00]*$")]
    pub q: String,
    #[param(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$"
    )]
    pub period: Option<String>,
    pub status: Option<BillStatus>,
    /// Rows at most (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A search hit: the bill and its account's name and address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct BillHit {
    #[serde(flatten)]
    #[cfg_attr(feature = "sqlx", sqlx(flatten))]
    pub bill: BillSummary,
    pub customer: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillSearch {
    pub bills: Vec<BillHit>,
    /// The search hit `limit`: narrow it.
    pub truncated: bool,
}

/// One meter's part of a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Leg {
    pub meter_id: String,
    pub installed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<DateTime<Utc>>,
    pub start_ts: Option<DateTime<Utc>>,
    pub start_volume_l: Option<i64>,
    pub end_ts: Option<DateTime<Utc>>,
    pub end_volume_l: Option<i64>,
    pub reads: i64,
    /// Whole m³ between the reads (before any true-up).
    pub measured_m3: i64,
    /// Whole m³ estimated because the leg had no reads.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub estimated_m3: i64,
    /// Earlier estimates subtracted from this leg's measured usage.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trued_up_m3: i64,
    /// What this leg bills.
    pub usage_m3: i64,
    /// What the next bill of this meter starts from, when it is not "the
    /// end read, nothing estimated".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<LegCarry>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What a bill leaves for the next bill of the same meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LegCarry {
    pub last_actual_ts: Option<DateTime<Utc>>,
    pub last_actual_volume_l: Option<i64>,
    pub unreconciled_estimate_m3: i64,
}

/// A priced line of a bill or quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillLine {
    pub component: Component,
    /// e.g. `상수도요금 (가정용)`.
    pub label: String,
    pub amount_krw: i64,
    pub explanation: Explanation,
}

/// Why a line is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    pub tariff_version: String,
    /// The m³ this line is charged on (after any leak relief).
    pub usage_m3: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockCharge>,
    /// The rate for a per-m³ or fixed line (levy, base, reduction percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "170")]
    pub rate: Option<Decimal>,
    /// The amount before rounding.
    #[schema(value_type = String, example = "4420.0")]
    pub raw_krw: Decimal,
    /// e.g. `truncate_10`.
    pub rounding: String,
    /// The part of the month a split period's line covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proration: Option<Proration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One block of an inclining-block charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlockCharge {
    pub usage_type: String,
    pub from_m3: u64,
    /// None for the open top block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_m3: Option<u64>,
    pub m3: u64,
    #[schema(value_type = String, example = "430")]
    pub rate_krw: Decimal,
    #[schema(value_type = String, example = "8600")]
    pub amount_krw: Decimal,
}

/// Days of the period a line covers when a tariff change splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Proration {
    pub days: u32,
    pub period_days: u32,
}

/// One month of an account's usage history (none when there was no live bill).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryMonth {
    pub period: String,
    pub bill_id: Option<i64>,
    pub usage_m3: Option<i64>,
    pub total_krw: Option<i64>,
}

/// The month a notice bills, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsagePeriod {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub month: u32,
    pub year: i32,
}

/// What the printed bill notice (고지서) shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notice {
    pub bill: Bill,
    /// The account as it is now (none if it was removed).
    pub account: Option<AccountHeader>,
    /// [`HISTORY_MONTHS`] months ending at the bill's period, oldest first.
    pub history: Vec<HistoryMonth>,
    /// Still owed on this bill.
    pub open_krw: i64,
    pub paid_krw: i64,
    /// The bill's date (Korean time).
    pub issued_on: NaiveDate,
    /// The last day of the month after the period.
    pub due_on: NaiveDate,
    pub usage_period: UsagePeriod,
}

/// `POST /api/v1/bills/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (1-500 characters; kept in the audit log).
    /// Not blank: at least one character other than white space (the
    /// reason is kept trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CancelOutcome {
    pub bill_id: i64,
    pub status: BillStatus,
}

/// A corrected read for a rebill: one meter over the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectedRead {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")]
    pub meter_id: String,
    pub start_ts: DateTime<Utc>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(deserialize_with = "super::whole::i64")]
    pub start_volume_l: i64,
    pub end_ts: DateTime<Utc>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    #[serde(deserialize_with = "super::whole::i64")]
    pub end_volume_l: i64,
    /// Readings inside the period (0: the meter was silent).
    #[schema(minimum = 0, maximum = 1_000_000_000_i64)]
    #[serde(deserialize_with = "super::whole::i64")]
    pub reads: i64,
}

/// `POST /api/v1/bills/{id}/rebill`: why, and corrected reads (meters not
/// listed are read as a run reads them). The tariff is the service's
/// current tariff file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RebillRequest {
    /// Not blank: at least one character other than white space (the
    /// reason is kept trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    pub reason: String,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub reads: Vec<CorrectedRead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RebillOutcome {
    pub cancelled_bill_id: i64,
    pub bill_id: i64,
    pub bill_no: i64,
    pub total_krw: i64,
}

/// A part of a bill in the ledger (a reduction is netted off the parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Levy,
    Sewer,
    Base,
    Water,
}

/// `POST /api/v1/bills/{id}/adjustments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    pub part: Part,
    /// Positive raises what the customer owes; negative lowers it (at most
    /// to zero). Never zero; at most a trillion won either way.
    #[serde(deserialize_with = "super::whole::i64")]
    #[schema(schema_with = nonzero_krw)]
    pub amount_krw: i64,
    /// Not blank: at least one character other than white space (the
    /// reason is kept trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    pub reason: String,
    /// Idempotency key chosen by the clerk's client.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")]
    pub key: String,
}

/// `amount_krw` of an adjustment: a whole number of won in
/// `-MAX_ADJUSTMENT_KRW..=MAX_ADJUSTMENT_KRW`, never 0 (JSON Schema has
/// no "not zero" for integers, so two ranges, one of which it is).
fn nonzero_krw() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let range = |lo: i64, hi: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(lo as f64))
            .maximum(Some(hi as f64))
    };
    OneOfBuilder::new()
        .item(range(1, MAX_ADJUSTMENT_KRW))
        .item(range(-MAX_ADJUSTMENT_KRW, -1))
        .description(Some("Won, not 0: positive raises, negative lowers"))
        .build()
        .into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentOutcome {
    pub bill_id: i64,
    pub entry_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_written_as_stored() {
        for s in BillStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(!BillStatus::Cancelled.is_live() && BillStatus::Held.is_live());
    }

    #[test]
    fn a_bill_flattens_its_summary() {
        let s = BillSummary {
            bill_id: 1,
            period: "2026-10".into(),
            account_no: "A1".into(),
            run_id: 2,
            bill_no: Some(12),
            bill_number: Some("2026-10-0000012".into()),
            status: BillStatus::Issued,
            hold_reasons: vec![],
            usage_type: "household".into(),
            usage_m3: 26,
            estimated: false,
            tariff_version: "v1".into(),
            components_krw: Components::default(),
            total_krw: 29_460,
            input_hash: "h".into(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        let b = Bill {
            summary: s.clone(),
            legs: vec![],
            lines: vec![],
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["total_krw"], 29_460);
        assert_eq!(v["status"], "issued");
        assert!(v["lines"].as_array().unwrap().is_empty());
        let back: Bill = serde_json::from_value(v).unwrap();
        assert_eq!(back.summary, s);
    }
}
