//! Tariffs: the versioned price list of one city, loaded from a TOML file a
//! clerk can read (see `fixtures/tariffs/*.toml` and `docs/tariff-format.md`),
//! and the engine that prices one month of usage ([`quote`]).
//!
//! The engine is pure: no IO, no clock, no floats. Money is `Decimal` until a
//! line is rounded by its component's stated rule, then whole KRW (`i64`).
//! The total of a bill is always the sum of its rounded lines.
//!
//! This module must never guess a price: an unknown usage type, diameter or
//! reduction is an error naming it, and a period before the first version is
//! refused.

mod engine;
mod format;
mod render;

pub use engine::quote;
pub use format::UsageRule;

use crate::period::Period;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The largest number of households one premises may declare (a bound, so
/// block arithmetic can never overflow).
pub const MAX_HOUSEHOLDS: u32 = 100_000;
/// The largest monthly usage a quote accepts, in m³.
pub const MAX_USAGE_M3: u32 = 100_000_000;
/// The most reductions one quote may name (the public quote endpoint takes
/// them from anyone).
pub const MAX_REDUCTIONS: usize = 8;
/// The largest tariff file accepted, in bytes.
pub const MAX_TARIFF_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TariffError {
    #[error("cannot read tariff file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tariff file {source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("tariff file {source_name}: field `{field}`: {reason}")]
    Invalid {
        source_name: String,
        field: String,
        reason: String,
    },
    #[error("tariff {city}: no version is in force on {date} (the first starts {first})")]
    NoVersion {
        city: String,
        date: NaiveDate,
        first: String,
    },
    #[error("tariff version {version}: usage type {usage_type:?} is not priced (known: {known})")]
    UnknownUsageType {
        version: String,
        usage_type: String,
        known: String,
    },
    #[error(
        "tariff version {version}: no base charge for a {diameter_mm} mm meter (known: {known})"
    )]
    UnknownDiameter {
        version: String,
        diameter_mm: u32,
        known: String,
    },
    #[error("tariff version {version}: no reduction named {name:?} (known: {known})")]
    UnknownReduction {
        version: String,
        name: String,
        known: String,
    },
    #[error("tariff version {version} grants no leak relief")]
    NoLeakRelief { version: String },
    #[error("invalid quote request: {0}")]
    Request(String),
}

/// A bill component. Serialized in lower case (`"water"`, ...).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
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

    pub fn parse(s: &str) -> Option<Component> {
        Some(match s {
            "water" => Component::Water,
            "sewer" => Component::Sewer,
            "base" => Component::Base,
            "levy" => Component::Levy,
            "reduction" => Component::Reduction,
            _ => return None,
        })
    }
}

/// How a computed amount becomes whole KRW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rounding {
    pub mode: RoundMode,
    /// 1, 10 or 100 won.
    pub unit_krw: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundMode {
    /// Toward zero (절사): what Korean utilities usually do.
    Truncate,
    /// Half away from zero (사사오입).
    HalfUp,
    /// Away from zero (절상).
    Ceil,
}

impl Rounding {
    pub const WHOLE_WON: Rounding = Rounding {
        mode: RoundMode::Truncate,
        unit_krw: 1,
    };

    /// Rounds `raw` to whole KRW by this rule. Negative amounts are rounded by
    /// magnitude, so a truncated reduction never grows.
    pub fn apply(&self, raw: Decimal) -> i64 {
        use rust_decimal::prelude::ToPrimitive;
        let unit = Decimal::from(self.unit_krw);
        let units = raw / unit;
        let whole = match self.mode {
            RoundMode::Truncate => units.trunc(),
            RoundMode::HalfUp => units
                .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
            RoundMode::Ceil => {
                if units.is_sign_negative() {
                    units.floor()
                } else {
                    units.ceil()
                }
            }
        };
        // Bounded inputs (MAX_USAGE_M3, validated rates) keep this in range.
        (whole * unit).to_i64().unwrap_or(i64::MAX)
    }

    /// The rule in the tariff file's words, e.g. `truncate_10`.
    pub fn code(&self) -> String {
        let mode = match self.mode {
            RoundMode::Truncate => "truncate",
            RoundMode::HalfUp => "round",
            RoundMode::Ceil => "ceil",
        };
        format!("{mode}_{}", self.unit_krw)
    }

    /// The rule in a clerk's words, e.g. "truncated to 10 won".
    pub fn describe(&self) -> String {
        let unit = if self.unit_krw == 1 {
            "whole won".to_string()
        } else {
            format!("{} won", self.unit_krw)
        };
        match self.mode {
            RoundMode::Truncate => format!("truncated to {unit}"),
            RoundMode::HalfUp => format!("rounded half up to {unit}"),
            RoundMode::Ceil => format!("rounded up to {unit}"),
        }
    }
}

/// One block of a block tariff: m³ number `from_m3..=to_m3` of the month cost
/// `rate_krw` each (for one household; widths scale with households).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub from_m3: u64,
    /// `None` for the last, open-ended block.
    pub to_m3: Option<u64>,
    pub rate_krw: Decimal,
}

/// Whether a version's effective date counts usage or bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliesFrom {
    /// "from usage of month X" (사용분부터).
    Usage,
    /// "from the bill of month X" (고지분부터): usage of month X − lag.
    Bill,
}

/// How a period spanning a change of version is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitMethod {
    /// Each version prices the whole month's usage, weighted by its days (일할계산).
    ProrateDays,
    /// The version in force on the first day prices the whole period.
    StartRate,
    /// The version in force on the last day prices the whole period.
    EndRate,
}

#[derive(Debug, Clone)]
pub struct MixedUse {
    /// The usage type a request names to be billed as mixed use, e.g. "mixed".
    pub usage_type: String,
    /// m³ per household billed at `household_type` rates.
    pub allowance_m3_per_household: u64,
    pub household_type: String,
    pub other_type: String,
}

#[derive(Debug, Clone)]
pub struct Reduction {
    pub label: String,
    pub percent: Decimal,
    pub applies_to: Vec<Component>,
    pub max_krw: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct LeakRelief {
    /// Share of the usage above the prior three months' average that is waived.
    pub waived_percent: Decimal,
}

#[derive(Debug, Clone)]
pub struct RoundingRules {
    pub water: Rounding,
    pub sewer: Rounding,
    pub base: Rounding,
    pub levy: Rounding,
    pub reduction: Rounding,
}

impl RoundingRules {
    pub fn for_component(&self, c: Component) -> Rounding {
        match c {
            Component::Water => self.water,
            Component::Sewer => self.sewer,
            Component::Base => self.base,
            Component::Levy => self.levy,
            Component::Reduction => self.reduction,
        }
    }
}

/// One version of a city's tariff.
#[derive(Debug, Clone)]
pub struct TariffVersion {
    pub id: String,
    /// As written in the file; `None` only for a first version whose source gives no date.
    pub effective: Option<NaiveDate>,
    pub applies_from: AppliesFrom,
    /// The first usage day this version prices (effective date shifted by the
    /// billing lag for `applies_from = "bill"`).
    pub usage_effective: Option<NaiveDate>,
    pub split: SplitMethod,
    pub note: String,
    pub water: BTreeMap<String, Vec<Block>>,
    pub sewer: BTreeMap<String, Vec<Block>>,
    pub base_krw: BTreeMap<u32, i64>,
    pub levy_rate_krw_per_m3: Decimal,
    pub rounding: RoundingRules,
    pub mixed_use: Option<MixedUse>,
    pub reductions: BTreeMap<String, Reduction>,
    pub leak_relief: Option<LeakRelief>,
}

/// All versions of one city's tariff, ordered by effective date.
#[derive(Debug, Clone)]
pub struct TariffBook {
    city: String,
    name: String,
    source_name: String,
    usage_rule: UsageRule,
    bill_lag_months: u32,
    versions: Vec<TariffVersion>,
    fingerprint: String,
}

impl TariffBook {
    /// Loads and validates a tariff file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<TariffBook, TariffError> {
        let io = |source| TariffError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_TARIFF_FILE_BYTES {
            return Err(TariffError::Parse {
                source_name: path.display().to_string(),
                message: format!("file is {len} bytes, more than {MAX_TARIFF_FILE_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates tariff TOML; `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<TariffBook, TariffError> {
        format::parse(text, source_name)
    }

    /// The city's short name, e.g. `daejeon`.
    pub fn city(&self) -> &str {
        &self.city
    }

    /// The city's display name, e.g. `대전광역시 (Daejeon)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    pub fn usage_rule(&self) -> UsageRule {
        self.usage_rule
    }

    pub fn bill_lag_months(&self) -> u32 {
        self.bill_lag_months
    }

    pub fn versions(&self) -> &[TariffVersion] {
        &self.versions
    }

    pub fn latest(&self) -> &TariffVersion {
        self.versions
            .last()
            .expect("validated: at least one version")
    }

    /// SHA-256 (hex) of the file text: part of every bill's input hash.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The version pricing usage on local date `day`.
    pub fn version_on(&self, day: NaiveDate) -> Result<&TariffVersion, TariffError> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.usage_effective.is_none_or(|d| d <= day))
            .ok_or_else(|| TariffError::NoVersion {
                city: self.city.clone(),
                date: day,
                first: self
                    .versions
                    .first()
                    .and_then(|v| v.usage_effective)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            })
    }

    /// The versions pricing `period` and the days each prices (they sum to the
    /// period's days, or to one portion of all days under start/end rate).
    pub fn portions(&self, period: &Period) -> Result<Vec<Portion<'_>>, TariffError> {
        let first = period.first_day();
        let last = period
            .next()
            .first_day()
            .pred_opt()
            .expect("a month has a last day");
        let days = period.days();
        let at_start = self.version_on(first)?;
        let changes: Vec<&TariffVersion> = self
            .versions
            .iter()
            .filter(|v| v.usage_effective.is_some_and(|d| d > first && d <= last))
            .collect();
        let Some(last_change) = changes.last() else {
            return Ok(vec![Portion {
                version: at_start,
                days,
                period_days: days,
            }]);
        };
        Ok(match last_change.split {
            SplitMethod::StartRate => vec![Portion {
                version: at_start,
                days,
                period_days: days,
            }],
            SplitMethod::EndRate => vec![Portion {
                version: self.version_on(last)?,
                days,
                period_days: days,
            }],
            SplitMethod::ProrateDays => {
                let mut out = Vec::new();
                let mut from = first;
                let mut version = at_start;
                for change in changes {
                    let to = change.usage_effective.expect("filtered on Some");
                    out.push(Portion {
                        version,
                        days: (to - from).num_days() as u32,
                        period_days: days,
                    });
                    from = to;
                    version = change;
                }
                out.push(Portion {
                    version,
                    days: (last - from).num_days() as u32 + 1,
                    period_days: days,
                });
                out
            }
        })
    }
}

/// A share of a period priced by one version.
#[derive(Debug, Clone, Copy)]
pub struct Portion<'a> {
    pub version: &'a TariffVersion,
    pub days: u32,
    pub period_days: u32,
}

/// What to price: one premises, one month.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// e.g. `household`, `general`, `bathhouse`, `industrial`, or the tariff's mixed-use type.
    pub usage_type: String,
    pub diameter_mm: u32,
    /// Whole m³ used in the month.
    pub usage_m3: u32,
    /// Households at the premises (block widths are multiplied by it).
    #[serde(default = "one")]
    pub households: u32,
    #[serde(default = "yes")]
    pub sewer_connected: bool,
    #[serde(default)]
    pub levy_exempt: bool,
    /// The usage month; `None` prices with the latest version.
    #[serde(default)]
    pub period: Option<Period>,
    /// Names of the tariff's reductions granted to this account (e.g. `multi_child`).
    #[serde(default)]
    pub reductions: Vec<String>,
    /// Approved leak relief: the prior three months' average usage in m³.
    #[serde(default)]
    pub leak_relief_prior_avg_m3: Option<u32>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

impl Default for QuoteRequest {
    fn default() -> Self {
        Self {
            usage_type: "household".into(),
            diameter_mm: 15,
            usage_m3: 0,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            period: None,
            reductions: Vec::new(),
            leak_relief_prior_avg_m3: None,
        }
    }
}

impl QuoteRequest {
    /// One household, connected to the sewer, no exemptions, latest version.
    pub fn new(usage_type: &str, diameter_mm: u32, usage_m3: u32) -> Self {
        Self {
            usage_type: usage_type.into(),
            diameter_mm,
            usage_m3,
            ..Self::default()
        }
    }
}

/// A priced bill: its lines and their sum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    pub city: String,
    /// The version id, or ids joined by `+` when a period is split.
    pub tariff_version: String,
    pub period: Option<Period>,
    pub usage_m3: u32,
    pub lines: Vec<BillLine>,
    pub total_krw: i64,
}

impl Quote {
    /// What `waterworks tariff quote` prints: a bill, in Korean and English.
    pub fn render_text(&self) -> String {
        render::render(self)
    }

    /// The sum of the lines of one component.
    pub fn component_krw(&self, c: Component) -> i64 {
        self.lines
            .iter()
            .filter(|l| l.component == c)
            .map(|l| l.amount_krw)
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillLine {
    pub component: Component,
    pub label: String,
    pub amount_krw: i64,
    pub explanation: Explanation,
}

/// Why a line is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub tariff_version: String,
    /// The m³ this line is charged on (after any leak relief).
    pub usage_m3: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockCharge>,
    /// The rate for a per-m³ or fixed line (levy, base, reduction percent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Decimal>,
    /// The amount before rounding.
    pub raw_krw: Decimal,
    /// e.g. `truncate_10`.
    pub rounding: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proration: Option<Proration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockCharge {
    pub usage_type: String,
    pub from_m3: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_m3: Option<u64>,
    pub m3: u64,
    pub rate_krw: Decimal,
    pub amount_krw: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Proration {
    pub days: u32,
    pub period_days: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_rules_round_by_magnitude() {
        let r = |mode, unit_krw| Rounding { mode, unit_krw };
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(r(RoundMode::Truncate, 10).apply(d("1234.9")), 1230);
        assert_eq!(r(RoundMode::Truncate, 1).apply(d("-1234.9")), -1234);
        assert_eq!(r(RoundMode::HalfUp, 1).apply(d("744.5")), 745);
        assert_eq!(r(RoundMode::HalfUp, 10).apply(d("744.9")), 740);
        assert_eq!(r(RoundMode::HalfUp, 100).apply(d("-150")), -200);
        assert_eq!(r(RoundMode::Ceil, 10).apply(d("1231")), 1240);
        assert_eq!(r(RoundMode::Ceil, 10).apply(d("-1231")), -1240);
        assert_eq!(r(RoundMode::Ceil, 10).code(), "ceil_10");
        assert_eq!(Rounding::WHOLE_WON.describe(), "truncated to whole won");
    }
}
