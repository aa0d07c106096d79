//! The alarm state machine. Each alarm is a latch with a documented trigger and
//! a documented clearing rule; only the meter's own rules clear it, never a
//! gateway (reading the registers changes nothing).
//!
//! | alarm       | set when                                         | cleared when (for [`AlarmThresholds::clear_hold_ms`], 1 h) |
//! |-------------|--------------------------------------------------|------------------------------------|
//! | leak        | flow has not been zero for `leak_window_ms` (24 h) | flow has stayed zero             |
//! | burst       | flow above the meter's Q4                        | flow has stayed at or below Q4     |
//! | backflow    | any reverse flow                                 | no reverse flow                    |
//! | tamper      | magnet or cover switch input active              | input inactive                     |
//! | low_battery | battery below `low_battery_mv`                   | battery at or above `low_battery_mv + battery_hysteresis_mv` |
//! | empty_pipe  | empty-pipe sensor active                         | sensor inactive                    |
//!
//! The hold means a 15-minute poll always sees an alarm that was raised, even
//! briefly, and an alarm does not flap with every minute of flow.

use crate::registers::alarm_bit;

/// Thresholds of the alarm rules; [`AlarmThresholds::DEFAULT`] documents the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmThresholds {
    /// Continuous non-zero flow that raises the leak alarm.
    pub leak_window_ms: u64,
    /// How long a condition must stay absent before its alarm clears.
    pub clear_hold_ms: u64,
    /// The meter's maximum flow Q4 in 0.1 L/h; flow above it is a burst.
    pub max_flow_dlph: i32,
    pub low_battery_mv: u16,
    pub battery_hysteresis_mv: u16,
}

impl AlarmThresholds {
    /// 24 h leak window, 1 h hold, Q4 of a DN15 R160 meter (3,125 L/h),
    /// low battery below 3.1 V (a lithium thionyl chloride cell near its end)
    /// with 0.1 V hysteresis.
    pub const DEFAULT: Self = Self {
        leak_window_ms: 24 * 3_600_000,
        clear_hold_ms: 3_600_000,
        max_flow_dlph: 31_250,
        low_battery_mv: 3_100,
        battery_hysteresis_mv: 100,
    };
}

impl Default for AlarmThresholds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The meter's sensor inputs other than flow, sampled at each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    /// Magnet detected or cover opened.
    pub tamper: bool,
    /// The empty-pipe sensor sees no water.
    pub empty_pipe: bool,
    pub battery_mv: u16,
}

impl Inputs {
    /// A healthy, closed, full meter with a fresh battery (3.6 V).
    pub const NORMAL: Self = Self {
        tamper: false,
        empty_pipe: false,
        battery_mv: 3_600,
    };
}

impl Default for Inputs {
    fn default() -> Self {
        Self::NORMAL
    }
}

/// One latched alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Latch {
    set: bool,
    absent_ms: u64,
}

impl Latch {
    /// `trigger` sets the latch; `absent` for the hold clears it; neither
    /// (a condition between trigger and clear) restarts the hold.
    fn step(&mut self, trigger: bool, absent: bool, dt_ms: u64, hold_ms: u64) {
        if trigger {
            self.set = true;
            self.absent_ms = 0;
        } else if absent {
            // Capped at the hold: beyond it the count means nothing, and a
            // capped count makes the state after any long quiet stretch the same.
            self.absent_ms = self.absent_ms.saturating_add(dt_ms).min(hold_ms);
            if self.absent_ms >= hold_ms {
                self.set = false;
            }
        } else {
            self.absent_ms = 0;
        }
    }
}

/// The state of every alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Alarms {
    nonzero_flow_ms: u64,
    leak: Latch,
    burst: Latch,
    backflow: Latch,
    tamper: Latch,
    low_battery: Latch,
    empty_pipe: Latch,
}

impl Alarms {
    pub const fn new() -> Self {
        const L: Latch = Latch {
            set: false,
            absent_ms: 0,
        };
        Self {
            nonzero_flow_ms: 0,
            leak: L,
            burst: L,
            backflow: L,
            tamper: L,
            low_battery: L,
            empty_pipe: L,
        }
    }

    /// Advances every rule by `dt_ms` during which the flow was `flow_dlph`
    /// and the inputs were `inputs`.
    pub fn step(&mut self, t: &AlarmThresholds, flow_dlph: i32, inputs: &Inputs, dt_ms: u64) {
        let hold = t.clear_hold_ms;
        if flow_dlph == 0 {
            self.nonzero_flow_ms = 0;
        } else {
            self.nonzero_flow_ms = self
                .nonzero_flow_ms
                .saturating_add(dt_ms)
                .min(t.leak_window_ms);
        }
        self.leak.step(
            self.nonzero_flow_ms >= t.leak_window_ms,
            flow_dlph == 0,
            dt_ms,
            hold,
        );
        let burst = flow_dlph > t.max_flow_dlph;
        self.burst.step(burst, !burst, dt_ms, hold);
        self.backflow
            .step(flow_dlph < 0, flow_dlph >= 0, dt_ms, hold);
        self.tamper.step(inputs.tamper, !inputs.tamper, dt_ms, hold);
        let low = inputs.battery_mv < t.low_battery_mv;
        let recovered = u32::from(inputs.battery_mv)
            >= u32::from(t.low_battery_mv) + u32::from(t.battery_hysteresis_mv);
        self.low_battery.step(low, recovered, dt_ms, hold);
        self.empty_pipe
            .step(inputs.empty_pipe, !inputs.empty_pipe, dt_ms, hold);
    }

    /// The alarm register: bit [`alarm_bit`]`::X` set while alarm X is latched.
    pub fn bits(&self) -> u16 {
        let mut b = 0u16;
        for (set, bit) in [
            (self.leak.set, alarm_bit::LEAK),
            (self.burst.set, alarm_bit::BURST),
            (self.backflow.set, alarm_bit::BACKFLOW),
            (self.tamper.set, alarm_bit::TAMPER),
            (self.low_battery.set, alarm_bit::LOW_BATTERY),
            (self.empty_pipe.set, alarm_bit::EMPTY_PIPE),
        ] {
            if set {
                b |= 1 << bit;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const T: AlarmThresholds = AlarmThresholds::DEFAULT;

    fn run(a: &mut Alarms, minutes: u64, flow: i32, inputs: Inputs) {
        for _ in 0..minutes {
            a.step(&T, flow, &inputs, MIN);
        }
    }

    #[test]
    fn leak_after_24_hours_of_flow_clears_after_an_hour_dry() {
        let mut a = Alarms::new();
        run(&mut a, 24 * 60 - 1, 50, Inputs::NORMAL);
        assert_eq!(a.bits(), 0);
        run(&mut a, 1, 50, Inputs::NORMAL);
        assert_eq!(a.bits(), 1 << alarm_bit::LEAK);
        run(&mut a, 59, 0, Inputs::NORMAL);
        assert_eq!(a.bits(), 1 << alarm_bit::LEAK, "latched through the hold");
        run(&mut a, 1, 0, Inputs::NORMAL);
        assert_eq!(a.bits(), 0);
    }

    #[test]
    fn one_dry_minute_resets_the_leak_window() {
        let mut a = Alarms::new();
        run(&mut a, 23 * 60, 50, Inputs::NORMAL);
        run(&mut a, 1, 0, Inputs::NORMAL);
        run(&mut a, 23 * 60, 50, Inputs::NORMAL);
        assert_eq!(a.bits(), 0);
    }

    #[test]
    fn burst_backflow_tamper_latch_for_the_hold() {
        let mut a = Alarms::new();
        run(&mut a, 1, T.max_flow_dlph + 1, Inputs::NORMAL);
        assert_eq!(a.bits(), 1 << alarm_bit::BURST);
        run(
            &mut a,
            1,
            -10,
            Inputs {
                tamper: true,
                ..Inputs::NORMAL
            },
        );
        assert_eq!(
            a.bits(),
            (1 << alarm_bit::BURST) | (1 << alarm_bit::BACKFLOW) | (1 << alarm_bit::TAMPER)
        );
        run(&mut a, 59, 0, Inputs::NORMAL);
        assert_eq!(
            a.bits(),
            (1 << alarm_bit::BACKFLOW) | (1 << alarm_bit::TAMPER)
        );
        run(&mut a, 1, 0, Inputs::NORMAL);
        assert_eq!(a.bits(), 0);
    }

    #[test]
    fn low_battery_has_hysteresis() {
        let mut a = Alarms::new();
        let at = |mv| Inputs {
            battery_mv: mv,
            ..Inputs::NORMAL
        };
        run(&mut a, 1, 0, at(3_050));
        assert_eq!(a.bits(), 1 << alarm_bit::LOW_BATTERY);
        run(&mut a, 120, 0, at(3_150));
        assert_eq!(
            a.bits(),
            1 << alarm_bit::LOW_BATTERY,
            "inside the hysteresis band"
        );
        run(&mut a, 60, 0, at(3_200));
        assert_eq!(a.bits(), 0);
        run(
            &mut a,
            1,
            0,
            Inputs {
                empty_pipe: true,
                ..Inputs::NORMAL
            },
        );
        assert_eq!(a.bits(), 1 << alarm_bit::EMPTY_PIPE);
    }
}
