//! From meter reads to whole m³ per account, for one period: pure code.
//!
//! Each meter leg installed during the period is billed: usage = end read −
//! start read, both truncated to whole m³ by the tariff's [`UsageRule`], so the
//! litres below a whole m³ carry to the next month. The start read is the end
//! read the previous bill used (its carry), else the first read metering gives.
//! A leg without reads is estimated (average daily usage of prior bills × the
//! leg's days) and flagged; the next actual read trues it up by subtracting the
//! estimate already billed. Usage far from the account's history holds the
//! bill for review, with the reasons listed for the clerk.
//!
//! This module must never do IO and never bill a litre twice.

use crate::accounts::Account;
use crate::period::Period;
use crate::tariff::UsageRule;
use chrono::{DateTime, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Prior bills looked at for estimates and holds.
pub const HISTORY_PERIODS: usize = 3;

/// One meter's reads over a period, as `metering.period_reads_v1` returns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodRead {
    pub meter_id: String,
    pub start_ts: DateTime<Utc>,
    pub start_volume_l: i64,
    pub end_ts: DateTime<Utc>,
    pub end_volume_l: i64,
    /// Readings inside the period (0: the meter was silent all period).
    pub reads: i64,
}

/// What a bill leaves for the next bill of the same meter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegCarry {
    /// The last actual read billed up to.
    pub last_actual_ts: Option<DateTime<Utc>>,
    pub last_actual_volume_l: Option<i64>,
    /// m³ billed on estimates since that read, to subtract at the next actual read.
    pub unreconciled_estimate_m3: i64,
}

impl LegCarry {
    fn is_default(&self) -> bool {
        self == &LegCarry::default()
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One meter's part of a bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Stored only when it differs from "the end read, nothing estimated"
    /// (keeps a million bills small); read it through [`Leg::next_carry`].
    #[serde(default, skip_serializing_if = "LegCarry::is_default")]
    pub carry: LegCarry,
}

impl Leg {
    /// Where the next bill of this meter starts.
    pub fn next_carry(&self) -> LegCarry {
        if !self.carry.is_default() {
            return self.carry.clone();
        }
        LegCarry {
            last_actual_ts: self.end_ts,
            last_actual_volume_l: self.end_volume_l,
            unreconciled_estimate_m3: 0,
        }
    }
}

/// A prior bill of the account, for estimates and holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorBill {
    pub period: Period,
    pub usage_m3: i64,
}

/// When a bill is held for review instead of issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldPolicy {
    /// Hold when usage exceeds this multiple of the prior average month.
    #[serde(default = "default_high_ratio")]
    pub high_ratio: Decimal,
    /// Hold when usage falls below this fraction of the prior average month.
    #[serde(default = "default_low_ratio")]
    pub low_ratio: Decimal,
    /// Ratios apply only when the prior average month is at least this (m³):
    /// tiny users swing widely and harmlessly.
    #[serde(default = "default_min_avg")]
    pub min_avg_m3: i64,
}

fn default_high_ratio() -> Decimal {
    Decimal::from(3)
}
fn default_low_ratio() -> Decimal {
    Decimal::new(2, 1)
}
fn default_min_avg() -> i64 {
    5
}

impl Default for HoldPolicy {
    fn default() -> Self {
        Self {
            high_ratio: default_high_ratio(),
            low_ratio: default_low_ratio(),
            min_avg_m3: default_min_avg(),
        }
    }
}

/// An account's usage for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountUsage {
    pub legs: Vec<Leg>,
    pub usage_m3: i64,
    pub estimated: bool,
    pub hold_reasons: Vec<String>,
}

/// Average daily usage over the prior bills (m³/day), if there are any.
fn avg_daily(history: &[PriorBill]) -> Option<Decimal> {
    let recent: Vec<&PriorBill> = {
        let mut h: Vec<&PriorBill> = history.iter().collect();
        h.sort_by_key(|b| std::cmp::Reverse(b.period));
        h.into_iter().take(HISTORY_PERIODS).collect()
    };
    let days: u32 = recent.iter().map(|b| b.period.days()).sum();
    if days == 0 {
        return None;
    }
    let m3: i64 = recent.iter().map(|b| b.usage_m3).sum();
    Some(Decimal::from(m3) / Decimal::from(days))
}

/// Whole m³ of usage of `account` in `period`.
///
/// `reads` holds metering's reads by meter id; `carry` the carry of the
/// previous bill by meter id; `history` the account's prior bills.
pub fn account_usage(
    rule: UsageRule,
    account: &Account,
    period: &Period,
    reads: &HashMap<String, PeriodRead>,
    carry: &HashMap<String, LegCarry>,
    history: &[PriorBill],
    policy: &HoldPolicy,
) -> AccountUsage {
    let (from, to) = (period.start_utc(), period.end_utc());
    let daily = avg_daily(history);
    let mut legs = Vec::new();
    let mut hold_reasons = Vec::new();
    let mut estimated = false;
    for m in account.meters.iter().filter(|m| m.overlaps(from, to)) {
        let prev = carry.get(&m.meter_id).cloned().unwrap_or_default();
        let read = reads.get(&m.meter_id).filter(|r| r.reads > 0);
        let leg = match read {
            Some(r) => {
                let (start_ts, start_l) = match (prev.last_actual_ts, prev.last_actual_volume_l) {
                    (Some(ts), Some(l)) if ts <= r.end_ts => (ts, l),
                    _ => (r.start_ts, r.start_volume_l),
                };
                let measured = rule.usage_m3(start_l, r.end_volume_l);
                let (usage, trued_up, left) = if measured < 0 {
                    hold_reasons.push(format!(
                        "meter {}: the end read ({} L) is below the start read ({} L)",
                        m.meter_id, r.end_volume_l, start_l
                    ));
                    (0, 0, prev.unreconciled_estimate_m3)
                } else {
                    let trued = measured.min(prev.unreconciled_estimate_m3);
                    (
                        measured - trued,
                        trued,
                        prev.unreconciled_estimate_m3 - trued,
                    )
                };
                Leg {
                    meter_id: m.meter_id.clone(),
                    installed_at: m.installed_at,
                    removed_at: m.removed_at,
                    start_ts: Some(start_ts),
                    start_volume_l: Some(start_l),
                    end_ts: Some(r.end_ts),
                    end_volume_l: Some(r.end_volume_l),
                    reads: r.reads,
                    measured_m3: measured,
                    estimated_m3: 0,
                    trued_up_m3: trued_up,
                    usage_m3: usage,
                    // With nothing left to true up, the end read is the carry.
                    carry: if left == 0 {
                        LegCarry::default()
                    } else {
                        LegCarry {
                            last_actual_ts: Some(r.end_ts),
                            last_actual_volume_l: Some(r.end_volume_l),
                            unreconciled_estimate_m3: left,
                        }
                    },
                }
            }
            None => {
                estimated = true;
                let leg_from = m.installed_at.max(from);
                let leg_to = m.removed_at.map_or(to, |r| r.min(to));
                let leg_days =
                    Decimal::from((leg_to - leg_from).num_seconds().max(0)) / Decimal::from(86_400);
                let estimate = match daily {
                    Some(d) => (d * leg_days).trunc().to_i64().unwrap_or(0),
                    None => {
                        hold_reasons.push(format!(
                            "meter {}: no reads this period and no prior bills to estimate from",
                            m.meter_id
                        ));
                        0
                    }
                };
                Leg {
                    meter_id: m.meter_id.clone(),
                    installed_at: m.installed_at,
                    removed_at: m.removed_at,
                    start_ts: prev.last_actual_ts,
                    start_volume_l: prev.last_actual_volume_l,
                    end_ts: None,
                    end_volume_l: None,
                    reads: 0,
                    measured_m3: 0,
                    estimated_m3: estimate,
                    trued_up_m3: 0,
                    usage_m3: estimate,
                    carry: LegCarry {
                        unreconciled_estimate_m3: prev.unreconciled_estimate_m3 + estimate,
                        ..prev
                    },
                }
            }
        };
        legs.push(leg);
    }
    if legs.is_empty() {
        hold_reasons.push("no meter is installed at the premises this period".into());
    }
    let usage_m3: i64 = legs.iter().map(|l| l.usage_m3).sum();
    if let Some(d) = daily {
        let avg_month = d * Decimal::from(period.days());
        if avg_month >= Decimal::from(policy.min_avg_m3) {
            let usage = Decimal::from(usage_m3);
            let shown = avg_month.round_dp(1).normalize();
            if usage > avg_month * policy.high_ratio {
                hold_reasons.push(format!(
                    "usage {usage_m3} m³ is more than {}× the prior average of {shown} m³",
                    policy.high_ratio.normalize()
                ));
            } else if usage < avg_month * policy.low_ratio {
                hold_reasons.push(format!(
                    "usage {usage_m3} m³ is less than {}× the prior average of {shown} m³",
                    policy.low_ratio.normalize()
                ));
            }
        }
    }
    AccountUsage {
        legs,
        usage_m3,
        estimated,
        hold_reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::MeterInstallation;
    use proptest::prelude::*;

    fn ts(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn account(meters: Vec<MeterInstallation>) -> Account {
        Account {
            account_no: "A1".into(),
            customer: "홍길동".into(),
            address: "대전".into(),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "A".into(),
            meters,
        }
    }

    fn meter(id: &str, from: &str, to: Option<&str>) -> MeterInstallation {
        MeterInstallation {
            meter_id: id.into(),
            installed_at: ts(from),
            removed_at: to.map(ts),
        }
    }

    fn read(id: &str, start_l: i64, end_l: i64) -> (String, PeriodRead) {
        (
            id.into(),
            PeriodRead {
                meter_id: id.into(),
                start_ts: ts("2026-09-30T15:00:00Z"),
                start_volume_l: start_l,
                end_ts: ts("2026-10-31T15:00:00Z"),
                end_volume_l: end_l,
                reads: 2976,
            },
        )
    }

    const OCT: &str = "2026-10";

    #[test]
    fn litres_below_a_cubic_metre_carry_to_the_next_month() {
        let a = account(vec![meter("m1", "2026-01-01T00:00:00Z", None)]);
        let p: Period = OCT.parse().unwrap();
        let reads = HashMap::from([read("m1", 1_999_900, 2_025_400)]);
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &p,
            &reads,
            &HashMap::new(),
            &[],
            &HoldPolicy::default(),
        );
        // trunc(2,025.4) − trunc(1,999.9) = 2,025 − 1,999 = 26 m³.
        assert_eq!(u.usage_m3, 26);
        assert!(!u.estimated && u.hold_reasons.is_empty());
    }

    #[test]
    fn an_exchanged_meter_bills_both_legs() {
        let a = account(vec![
            meter("old", "2025-01-01T00:00:00Z", Some("2026-10-15T03:00:00Z")),
            meter("new", "2026-10-15T03:00:00Z", None),
            meter(
                "older",
                "2020-01-01T00:00:00Z",
                Some("2025-01-01T00:00:00Z"),
            ),
        ]);
        let p: Period = OCT.parse().unwrap();
        let reads = HashMap::from([read("old", 500_000, 512_300), read("new", 0, 14_999)]);
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &p,
            &reads,
            &HashMap::new(),
            &[],
            &HoldPolicy::default(),
        );
        assert_eq!(u.legs.len(), 2);
        assert_eq!(u.usage_m3, 12 + 14);
    }

    #[test]
    fn a_missing_read_is_estimated_then_trued_up() {
        let a = account(vec![meter("m1", "2026-01-01T00:00:00Z", None)]);
        let oct: Period = OCT.parse().unwrap();
        // Prior months: 30 m³ in each of Jul (31 d), Aug (31 d), Sep (30 d) → 90/92 m³/day.
        let history: Vec<PriorBill> = ["2026-07", "2026-08", "2026-09"]
            .iter()
            .map(|p| PriorBill {
                period: p.parse().unwrap(),
                usage_m3: 30,
            })
            .collect();
        let carry = HashMap::from([(
            "m1".to_string(),
            LegCarry {
                last_actual_ts: Some(ts("2026-09-30T15:00:00Z")),
                last_actual_volume_l: Some(100_000),
                unreconciled_estimate_m3: 0,
            },
        )]);
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &oct,
            &HashMap::new(),
            &carry,
            &history,
            &HoldPolicy::default(),
        );
        // 90 / 92 × 31 = 30.3 → 30 m³ estimated.
        assert!(u.estimated);
        assert_eq!(u.usage_m3, 30);
        assert!(u.hold_reasons.is_empty(), "{:?}", u.hold_reasons);
        let next_carry = HashMap::from([("m1".to_string(), u.legs[0].next_carry())]);
        assert_eq!(next_carry["m1"].unreconciled_estimate_m3, 30);
        // November: the actual read shows 70 m³ since September's read; 30 were
        // billed on the estimate, so November bills 40.
        let nov = oct.next();
        let mut r = read("m1", 100_000, 170_000);
        r.1.start_ts = ts("2026-10-31T15:00:00Z");
        r.1.end_ts = ts("2026-11-30T15:00:00Z");
        let reads = HashMap::from([r]);
        let history2 = [
            history.clone(),
            vec![PriorBill {
                period: oct,
                usage_m3: 30,
            }],
        ]
        .concat();
        let u2 = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &nov,
            &reads,
            &next_carry,
            &history2,
            &HoldPolicy::default(),
        );
        assert_eq!((u2.usage_m3, u2.legs[0].trued_up_m3), (40, 30));
        assert_eq!(u2.legs[0].next_carry().unreconciled_estimate_m3, 0);
        assert_eq!(u2.legs[0].next_carry().last_actual_volume_l, Some(170_000));
        // Over the two months exactly the 70 m³ measured were billed.
        assert_eq!(u.usage_m3 + u2.usage_m3, 70);
    }

    #[test]
    fn unusual_usage_is_held_with_reasons() {
        let a = account(vec![meter("m1", "2026-01-01T00:00:00Z", None)]);
        let p: Period = OCT.parse().unwrap();
        let history = [PriorBill {
            period: "2026-09".parse().unwrap(),
            usage_m3: 20,
        }];
        let high = HashMap::from([read("m1", 0, 200_000)]);
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &p,
            &high,
            &HashMap::new(),
            &history,
            &HoldPolicy::default(),
        );
        assert_eq!(u.hold_reasons.len(), 1);
        assert!(
            u.hold_reasons[0].contains("more than 3×"),
            "{:?}",
            u.hold_reasons
        );
        let back = HashMap::from([read("m1", 5_000, 1_000)]);
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &p,
            &back,
            &HashMap::new(),
            &history,
            &HoldPolicy::default(),
        );
        assert!(u
            .hold_reasons
            .iter()
            .any(|r| r.contains("below the start read")));
        // No reads and no history: held, nothing invented.
        let u = account_usage(
            UsageRule::TruncateEachRead,
            &a,
            &p,
            &HashMap::new(),
            &HashMap::new(),
            &[],
            &HoldPolicy::default(),
        );
        assert_eq!(u.usage_m3, 0);
        assert!(u.hold_reasons[0].contains("no reads"));
    }

    proptest! {
        /// Splitting a meter's litres over consecutive months bills exactly the
        /// whole m³ of the total: nothing lost, nothing billed twice.
        #[test]
        fn monthly_usage_sums_to_the_total(start in 0i64..10_000_000, steps in proptest::collection::vec(0i64..100_000, 1..12)) {
            let mut l = start;
            let mut billed = 0;
            for s in &steps {
                billed += UsageRule::TruncateEachRead.usage_m3(l, l + s);
                l += s;
            }
            prop_assert_eq!(billed, l / 1000 - start / 1000);
        }
    }
}
