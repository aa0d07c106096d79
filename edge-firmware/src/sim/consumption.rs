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
//! Within an hour, water is drawn in one stretch of consecutive minutes, the
//! longer the more users share the meter; the hour's volume is the profile's
//! mean for that hour of the week times a day factor and an hour factor
//! (each 0.8 to 1.2, so days and hours differ), spread over the stretch with
//! minute-to-minute swings that keep the sum exact. Because an hour's volume
//! and its dry and wet stretches are known without visiting its minutes,
//! the simulator integrates calm hours in at most three steps
//! ([`Consumption::calm_runs`]) and catches a meter up from the epoch in
//! O(hours), not O(minutes).

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
    /// Fewest and most minutes of an in-use hour that see water.
    active_min: u64,
    active_max: u64,
    fault: Fault,
    /// The meter's Q4, 0.1 L/h.
    pub(crate) max_flow_dlph: i32,
    pub(crate) diameter_mm: u16,
}

/// How one hour's water is drawn: `active` consecutive minutes from minute
/// `start`, whose flows (0.1 L/h) sum to `sum_dlph`, each minute at most a
/// quarter off the hour's mean (`wiggle_dlph`), never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HourPlan {
    start: u64,
    active: u64,
    sum_dlph: u64,
    wiggle_dlph: u64,
}

impl HourPlan {
    /// Flow in minute `m` (0..60) of the hour, before faults.
    fn flow(&self, m: u64) -> i32 {
        if m < self.start || m >= self.start + self.active {
            return 0;
        }
        let i = m - self.start;
        let base = self.sum_dlph / self.active;
        let mut f = base + u64::from(i < self.sum_dlph % self.active);
        // Pairs of minutes swing up and down by the same amount, so the sum stays exact.
        if i < self.active - self.active % 2 {
            if i % 2 == 0 {
                f += self.wiggle_dlph;
            } else {
                f -= self.wiggle_dlph;
            }
        }
        f as i32
    }
}

/// A stretch of minutes the firmware may integrate in one step: every
/// minute's flow has the sign of `last_flow_dlph` (zero, or positive and at
/// most Q4), and `sum_dlph` is the sum of the minutes' flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) minutes: u32,
    pub(crate) sum_dlph: u64,
    pub(crate) last_flow_dlph: i32,
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
        // Share of an in-use hour's minutes that see water: one household
        // draws water in short bursts, a busy premises nearly all the time.
        let active_share = match kind {
            ConsumptionKind::Household { households } => {
                1.0 - 0.7f64.powi((*households).clamp(1, 1000) as i32)
            }
            ConsumptionKind::Commercial => 0.6,
            ConsumptionKind::Bathhouse => 0.95,
            ConsumptionKind::Industrial => 0.9,
        };
        let active_min = ((30.0 * active_share).ceil() as u64).clamp(1, 60);
        let active_max = ((90.0 * active_share).ceil() as u64).clamp(active_min, 60);
        let week = week_fractions(kind);
        let litres_per_week = monthly_m3 * 1000.0 * 7.0 / DAYS_PER_MONTH;
        // The highest flow a normal minute can reach: the peak hour on a day
        // and hour factor of 1.2 each, in the fewest active minutes, swung up
        // by a quarter.
        let peak_lph =
            week.iter().cloned().fold(0.0, f64::max) * litres_per_week * 1.2 * 1.2 * 60.0
                / active_min as f64
                * 1.25
                + 1.0;
        let (diameter_mm, q4_lph) = Q4_SERIES_LPH
            .iter()
            .copied()
            .find(|(_, q4)| f64::from(*q4) > peak_lph)
            .unwrap_or(Q4_SERIES_LPH[Q4_SERIES_LPH.len() - 1]);
        Self {
            seed,
            week,
            litres_per_week,
            active_min,
            active_max,
            fault: fault.clone(),
            max_flow_dlph: (q4_lph * 10) as i32,
            diameter_mm,
        }
    }

    /// Local hour of the day, and the plan of global hour `hour` (None when
    /// no water is used in it).
    fn plan(&self, hour: u64) -> (u64, Option<HourPlan>) {
        let local_hour = hour + LOCAL_OFFSET_MIN / 60;
        let day = local_hour / 24;
        let hour_of_day = local_hour % 24;
        let hour_of_week = ((day + EPOCH_WEEKDAY) % 7) * 24 + hour_of_day;
        let mean_lph = self.week[hour_of_week as usize] * self.litres_per_week;
        if mean_lph <= 0.0 {
            return (hour_of_day, None);
        }
        let day_factor = 0.8 + 0.4 * unit(mix(self.seed ^ day.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        let h = mix(self.seed ^ hour.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let hour_factor = 0.8 + 0.4 * unit(h);
        // Σ of the minute flows in 0.1 L/h: the hour's litres × 10 × 60.
        let sum_dlph = (mean_lph * day_factor * hour_factor * 600.0 + 0.5) as u64;
        let span = self.active_max - self.active_min + 1;
        let active = (self.active_min + (h >> 24) % span).min(sum_dlph);
        if active == 0 {
            return (hour_of_day, None);
        }
        let start = (h >> 32) % (60 - active + 1);
        let wiggle_dlph = (sum_dlph / active / 4) * ((h >> 48) & 0xFF) / 255;
        (
            hour_of_day,
            Some(HourPlan {
                start,
                active,
                sum_dlph,
                wiggle_dlph,
            }),
        )
    }

    /// The flow during minute `minute` since the epoch, and the inputs then.
    pub(crate) fn at(&self, minute: u64) -> (i32, Inputs) {
        let (hour_of_day, plan) = self.plan(minute / 60);
        let m = minute % 60;
        let mut flow_dlph = plan.map_or(0, |p| p.flow(m));
        let minute_of_day = hour_of_day * 60 + m;
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

    /// Hour `hour` as at most three runs, when no minute in it can touch an
    /// alarm other than the leak rule (no burst, backflow or tamper episode),
    /// so the firmware may integrate each run in one step; None otherwise.
    pub(crate) fn calm_runs(&self, hour: u64) -> Option<heapless::Vec<Run, 3>> {
        let (hour_of_day, plan) = self.plan(hour);
        match self.fault {
            Fault::Burst if hour_of_day == 3 => return None,
            Fault::Backflow if hour_of_day == 14 => return None,
            Fault::Tamper if hour_of_day == 12 => return None,
            _ => {}
        }
        let mut runs = heapless::Vec::new();
        let leak = matches!(self.fault, Fault::Leak);
        let push = |runs: &mut heapless::Vec<Run, 3>, r: Run| {
            if r.minutes > 0 {
                // At most three runs by construction: before, during, after.
                let _ = runs.push(r);
            }
        };
        match plan {
            None if leak => push(
                &mut runs,
                Run {
                    minutes: 60,
                    sum_dlph: 60 * LEAK_FLOW_DLPH as u64,
                    last_flow_dlph: LEAK_FLOW_DLPH,
                },
            ),
            None => push(
                &mut runs,
                Run {
                    minutes: 60,
                    sum_dlph: 0,
                    last_flow_dlph: 0,
                },
            ),
            Some(p) if leak => push(
                &mut runs,
                Run {
                    minutes: 60,
                    sum_dlph: p.sum_dlph + 60 * LEAK_FLOW_DLPH as u64,
                    last_flow_dlph: p.flow(59) + LEAK_FLOW_DLPH,
                },
            ),
            Some(p) => {
                let end = p.start + p.active;
                push(
                    &mut runs,
                    Run {
                        minutes: p.start as u32,
                        sum_dlph: 0,
                        last_flow_dlph: 0,
                    },
                );
                push(
                    &mut runs,
                    Run {
                        minutes: p.active as u32,
                        sum_dlph: p.sum_dlph,
                        last_flow_dlph: p.flow(end - 1),
                    },
                );
                push(
                    &mut runs,
                    Run {
                        minutes: (60 - end) as u32,
                        sum_dlph: 0,
                        last_flow_dlph: 0,
                    },
                );
            }
        }
        Some(runs)
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
