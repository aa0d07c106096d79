//! Consumption profiles and faults: the flow each simulated meter sees in each
//! minute, as a pure function of (meter seed, meter spec, minute index).
//!
//! Time is counted in whole minutes since [`SIM_EPOCH`] (UTC); usage patterns
//! follow Korean local time (UTC+9): households peak in the morning and the
//! evening and are dry from 02:00 to 04:00; commercial premises use water in
//! working hours on weekdays and Saturday mornings; bathhouses are open 05:00
//! to 23:00 every day, busier at weekends; factories run two shifts on
//! weekdays and a morning on Saturday. Every normal profile has a dry hour
//! each day, so no healthy meter raises the 24-hour leak alarm.
//!
//! Within an hour, water is used in bursts: each minute is "in use" with a
//! probability that grows with the number of users, and an in-use minute
//! draws a flow whose mean makes the hour's volume come out right. Each day
//! has its own factor (0.8 to 1.2) so days differ.

use super::{ConsumptionKind, Fault};
use crate::alarms::Inputs;
use std::sync::OnceLock;

/// Minute 0 of every simulated meter: 2026-01-01T00:00:00Z. Registers at an
/// earlier time show the meter as installed (initial volume, no flow).
pub const SIM_EPOCH_UNIX_S: i64 = 1_767_225_600;

/// Korean standard time, UTC+9, in minutes.
const LOCAL_OFFSET_MIN: u64 = 9 * 60;
/// The epoch's local day (2026-01-01) is a Thursday: Monday = 0.
const EPOCH_WEEKDAY: u64 = 3;
/// Average month, for turning monthly targets into weekly ones.
const DAYS_PER_MONTH: f64 = 30.4375;

/// Constant flow a leaking meter adds, 0.1 L/h (6 L/h, a running toilet).
pub const LEAK_FLOW_DLPH: i32 = 60;
/// Reverse flow of a backflow meter during its daily episode, 0.1 L/h (−150 L/h).
pub const BACKFLOW_FLOW_DLPH: i32 = -1_500;

/// Q4 (L/h) of meters of ISO 4064 ratio R160 by nominal diameter: the
/// simulator gives each meter the smallest one its peak flow fits.
pub const Q4_SERIES_LPH: [(u16, u32); 9] = [
    (15, 3_125),
    (20, 5_000),
    (25, 7_875),
    (32, 12_500),
    (40, 20_000),
    (50, 31_250),
    (80, 78_750),
    (100, 125_000),
    (150, 312_500),
];

/// Relative use by local hour on (weekday, Saturday, Sunday).
type DayShapes = [[f64; 24]; 3];

const HOUSEHOLD: DayShapes = [
    [
        0.3, 0.15, 0.0, 0.0, 0.2, 1.0, 3.0, 4.0, 2.5, 1.2, 1.0, 1.0, 1.2, 1.0, 0.9, 1.0, 1.2, 1.8,
        2.5, 3.0, 2.8, 2.2, 1.5, 0.8,
    ],
    [
        0.5, 0.3, 0.0, 0.0, 0.1, 0.3, 0.8, 1.5, 2.5, 3.0, 2.5, 2.0, 2.0, 1.5, 1.3, 1.3, 1.5, 2.0,
        2.5, 2.8, 2.5, 2.0, 1.5, 1.0,
    ],
    [
        0.5, 0.3, 0.0, 0.0, 0.1, 0.3, 0.8, 1.5, 2.5, 3.0, 2.5, 2.0, 2.0, 1.5, 1.3, 1.3, 1.5, 2.0,
        2.5, 2.8, 2.5, 2.0, 1.5, 1.0,
    ],
];

const COMMERCIAL: DayShapes = [
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0,
        1.5, 0.5, 0.0, 0.0, 0.0, 0.0,
    ],
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.5, 1.0, 0.5, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    [0.0; 24],
];

const BATHHOUSE_DAY: [f64; 24] = [
    0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 3.0, 2.0, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 2.0, 2.5, 3.0,
    3.0, 2.5, 2.0, 1.0, 0.0,
];

const INDUSTRIAL: DayShapes = [
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 1.0, 1.0, 1.0, 1.0, 1.0,
        0.7, 1.0, 1.0, 1.0, 0.0, 0.0,
    ],
    [
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ],
    [0.0; 24],
];

fn shapes(kind: &ConsumptionKind) -> DayShapes {
    match kind {
        ConsumptionKind::Household { .. } => HOUSEHOLD,
        ConsumptionKind::Commercial => COMMERCIAL,
        ConsumptionKind::Bathhouse => {
            let weekend = BATHHOUSE_DAY.map(|x| x * 1.3);
            [BATHHOUSE_DAY, weekend, weekend]
        }
        ConsumptionKind::Industrial => INDUSTRIAL,
    }
}

fn kind_index(kind: &ConsumptionKind) -> usize {
    match kind {
        ConsumptionKind::Household { .. } => 0,
        ConsumptionKind::Commercial => 1,
        ConsumptionKind::Bathhouse => 2,
        ConsumptionKind::Industrial => 3,
    }
}

/// Each kind's share of a week's water in each local hour of the week
/// (Monday 00:00 = 0); each table sums to 1.
fn week_fractions(kind: &ConsumptionKind) -> &'static [f64; 168] {
    static TABLES: OnceLock<[[f64; 168]; 4]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let kinds = [
            ConsumptionKind::Household { households: 1 },
            ConsumptionKind::Commercial,
            ConsumptionKind::Bathhouse,
            ConsumptionKind::Industrial,
        ];
        kinds.map(|k| {
            let s = shapes(&k);
            let mut t = [0.0; 168];
            for (h, v) in t.iter_mut().enumerate() {
                let day = h / 24;
                let shape = match day {
                    0..=4 => &s[0],
                    5 => &s[1],
                    _ => &s[2],
                };
                *v = shape[h % 24];
            }
            let sum: f64 = t.iter().sum();
            t.map(|v| v / sum)
        })
    });
    &tables[kind_index(kind)]
}

/// SplitMix64: a fast, well-mixed hash of one word; all randomness of the
/// simulation comes from it so that a minute's flow needs no history.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 24 bits of `h`.
fn unit(h: u64) -> f64 {
    (h & 0xFF_FFFF) as f64 / 16_777_216.0
}

/// The seed of one meter: the fleet seed and the meter's id, so a meter's
/// water does not depend on where it stands in the fleet list.
pub(crate) fn meter_seed(fleet_seed: u64, meter_id: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in meter_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(fleet_seed ^ mix(h))
}

/// The water use of one meter: everything needed to compute any minute's flow.
#[derive(Debug, Clone)]
pub(crate) struct Consumption {
    seed: u64,
    week: &'static [f64; 168],
    litres_per_week: f64,
    /// Probability that a minute of an in-use hour sees water.
    active_probability: f64,
    fault: Fault,
    /// The meter's Q4, 0.1 L/h.
    pub(crate) max_flow_dlph: i32,
    pub(crate) diameter_mm: u16,
}

impl Consumption {
    pub(crate) fn new(seed: u64, kind: &ConsumptionKind, fault: &Fault) -> Self {
        let u = unit(mix(seed ^ 0x766F_6C75_6D65)); // "volume"
        let monthly_m3 = match kind {
            ConsumptionKind::Household { households } => {
                f64::from((*households).max(1)) * (8.0 + 7.0 * u)
            }
            ConsumptionKind::Commercial => 30.0 + 90.0 * u,
            ConsumptionKind::Bathhouse => 400.0 + 800.0 * u,
            ConsumptionKind::Industrial => 200.0 + 1800.0 * u,
        };
        let active_probability = match kind {
            ConsumptionKind::Household { households } => {
                1.0 - 0.7f64.powi((*households).clamp(1, 1000) as i32)
            }
            ConsumptionKind::Commercial => 0.6,
            ConsumptionKind::Bathhouse => 0.95,
            ConsumptionKind::Industrial => 0.9,
        };
        let week = week_fractions(kind);
        let litres_per_week = monthly_m3 * 1000.0 * 7.0 / DAYS_PER_MONTH;
        // The highest flow a normal minute can draw: the peak hour on a day
        // factor of 1.2 and a minute factor of 1.5.
        let peak_lph = week.iter().cloned().fold(0.0, f64::max) * litres_per_week * 1.2 * 1.5
            / active_probability;
        let (diameter_mm, q4_lph) = Q4_SERIES_LPH
            .iter()
            .copied()
            .find(|(_, q4)| f64::from(*q4) > peak_lph)
            .unwrap_or(Q4_SERIES_LPH[Q4_SERIES_LPH.len() - 1]);
        Self {
            seed,
            week,
            litres_per_week,
            active_probability,
            fault: fault.clone(),
            max_flow_dlph: (q4_lph * 10) as i32,
            diameter_mm,
        }
    }

    /// The flow during minute `minute` since the epoch, and the inputs then.
    pub(crate) fn at(&self, minute: u64) -> (i32, Inputs) {
        let local = minute + LOCAL_OFFSET_MIN;
        let day = local / 1440;
        let minute_of_day = local % 1440;
        let hour_of_week = ((day + EPOCH_WEEKDAY) % 7) * 24 + minute_of_day / 60;
        let mean_lph = self.week[hour_of_week as usize] * self.litres_per_week;
        let mut flow_dlph = 0;
        if mean_lph > 0.0 {
            let day_factor =
                0.8 + 0.4 * unit(mix(self.seed ^ day.wrapping_mul(0xD1B5_4A32_D192_ED03)));
            let h = mix(self.seed ^ minute.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            if unit(h >> 24) < self.active_probability {
                let minute_factor = 0.5 + unit(h);
                let lph = mean_lph * day_factor * minute_factor / self.active_probability;
                flow_dlph = (lph * 10.0).round() as i32;
            }
        }
        let mut inputs = Inputs::NORMAL;
        match self.fault {
            Fault::Leak => flow_dlph += LEAK_FLOW_DLPH,
            // 03:00-03:30 local: a burst pipe at 1.25 × Q4.
            Fault::Burst if (180..210).contains(&minute_of_day) => {
                flow_dlph = self.max_flow_dlph + self.max_flow_dlph / 4;
            }
            // 14:00-14:20 local: pressure drop in the main draws water back.
            Fault::Backflow if (840..860).contains(&minute_of_day) => {
                flow_dlph = BACKFLOW_FLOW_DLPH;
            }
            // 12:00-12:30 local: a magnet on the register.
            Fault::Tamper if (720..750).contains(&minute_of_day) => inputs.tamper = true,
            _ => {}
        }
        (flow_dlph, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Utc};

    #[test]
    fn epoch_constants_agree_with_the_calendar() {
        let e = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(e.timestamp(), SIM_EPOCH_UNIX_S);
        assert_eq!(
            e.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap())
                .weekday()
                .num_days_from_monday() as u64,
            EPOCH_WEEKDAY
        );
    }

    #[test]
    fn week_fractions_sum_to_one() {
        for k in [
            ConsumptionKind::Household { households: 3 },
            ConsumptionKind::Commercial,
            ConsumptionKind::Bathhouse,
            ConsumptionKind::Industrial,
        ] {
            let s: f64 = week_fractions(&k).iter().sum();
            assert!((s - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn households_are_dry_at_three_in_the_morning() {
        let c = Consumption::new(
            7,
            &ConsumptionKind::Household { households: 40 },
            &Fault::None,
        );
        // 03:00 KST = 18:00 UTC the day before; minute 18*60 of day 0 UTC.
        for m in 0..60 {
            assert_eq!(c.at(18 * 60 + m).0, 0);
        }
    }
}
