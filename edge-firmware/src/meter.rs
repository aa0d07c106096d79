//! The meter: totalizers fed by the flow sensor (or pulses), the alarm state
//! machine, and the register image both present to Modbus.
//!
//! All state is a fixed-size value (no allocation); time enters only through
//! `dt_ms` so the same code runs on a microcontroller tick or in the simulator's
//! one-minute steps.

use crate::alarms::{AlarmThresholds, Alarms, Inputs};
use crate::registers::{self, RegisterImage, REGISTER_COUNT};
use crate::totalizer::{net_l, Totalizer, DEFAULT_DIGITS};

/// What a meter is built as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterConfig {
    /// Decimal digits of litres each totalizer shows before it rolls over.
    pub digits: u8,
    /// The net and forward registers at installation, litres.
    pub initial_volume_l: u64,
    pub thresholds: AlarmThresholds,
}

impl MeterConfig {
    pub const DEFAULT: Self = Self {
        digits: DEFAULT_DIGITS,
        initial_volume_l: 0,
        thresholds: AlarmThresholds::DEFAULT,
    };
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which way a pulse of the flow sensor went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// The persistent part of a meter: what the journal saves and restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub forward_l: u64,
    pub forward_fraction: u64,
    pub reverse_l: u64,
    pub reverse_fraction: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meter {
    thresholds: AlarmThresholds,
    forward: Totalizer,
    reverse: Totalizer,
    flow_dlph: i32,
    alarms: Alarms,
}

impl Meter {
    pub const fn new(config: MeterConfig) -> Self {
        Self {
            thresholds: config.thresholds,
            forward: Totalizer::new(config.digits, config.initial_volume_l),
            reverse: Totalizer::new(config.digits, 0),
            flow_dlph: 0,
            alarms: Alarms::new(),
        }
    }

    /// The flow sensor read `flow_dlph` (0.1 L/h, negative backwards) for the
    /// last `dt_ms`; integrate it and run the alarm rules.
    pub fn advance(&mut self, flow_dlph: i32, dt_ms: u32, inputs: &Inputs) {
        let units = u64::from(flow_dlph.unsigned_abs()) * u64::from(dt_ms);
        if flow_dlph > 0 {
            self.forward.add_units(units);
        } else if flow_dlph < 0 {
            self.reverse.add_units(units);
        }
        self.flow_dlph = flow_dlph;
        self.alarms
            .step(&self.thresholds, flow_dlph, inputs, u64::from(dt_ms));
    }

    /// Integrates a run of `dt_ms` in one step: the flow sensor's samples
    /// over the run summed to `units` (of `0.1 L/h × ms`), and every sample
    /// was in the same alarm class as the last one, `last_flow_dlph` (all
    /// zero; or all positive and at most Q4; or all negative), with `inputs`
    /// unchanged. The result is exactly that of stepping the samples one by
    /// one (a property test proves it); the simulator uses it to skip calm
    /// hours.
    pub fn advance_run(&mut self, units: u64, last_flow_dlph: i32, dt_ms: u32, inputs: &Inputs) {
        if last_flow_dlph > 0 {
            self.forward.add_units(units);
        } else if last_flow_dlph < 0 {
            self.reverse.add_units(units);
        }
        self.flow_dlph = last_flow_dlph;
        self.alarms
            .step(&self.thresholds, last_flow_dlph, inputs, u64::from(dt_ms));
    }

    /// Counts `litres` from a pulse sensor with direction (a reed or Hall
    /// pulse output is worth a whole number of litres).
    pub fn pulse(&mut self, direction: Direction, litres: u64) {
        match direction {
            Direction::Forward => self.forward.add_litres(litres),
            Direction::Reverse => self.reverse.add_litres(litres),
        }
    }

    pub fn forward_l(&self) -> u64 {
        self.forward.litres()
    }

    pub fn reverse_l(&self) -> u64 {
        self.reverse.litres()
    }

    /// The billing register: forward minus reverse, modulo the rollover.
    pub fn net_l(&self) -> u64 {
        net_l(&self.forward, &self.reverse)
    }

    pub fn flow_dlph(&self) -> i32 {
        self.flow_dlph
    }

    pub fn alarm_bits(&self) -> u16 {
        self.alarms.bits()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            forward_l: self.forward.litres(),
            forward_fraction: self.forward.fraction_units(),
            reverse_l: self.reverse.litres(),
            reverse_fraction: self.reverse.fraction_units(),
        }
    }

    /// Restores the totalizers after a reboot (alarms restart clear, flow 0).
    pub fn restore(&mut self, s: &Snapshot) {
        self.forward.restore(s.forward_l, s.forward_fraction);
        self.reverse.restore(s.reverse_l, s.reverse_fraction);
    }

    /// The register image (see [`crate::registers`]).
    pub fn registers(&self) -> RegisterImage {
        let mut img = [0u16; REGISTER_COUNT];
        registers::put_u64(&mut img, registers::REG_VOLUME, self.net_l());
        registers::put_i32(&mut img, registers::REG_FLOW, self.flow_dlph);
        img[usize::from(registers::REG_ALARMS)] = self.alarm_bits();
        registers::put_u64(&mut img, registers::REG_FORWARD_VOLUME, self.forward_l());
        registers::put_u64(&mut img, registers::REG_REVERSE_VOLUME, self.reverse_l());
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::*;

    #[test]
    fn integrates_both_directions_into_the_registers() {
        let mut m = Meter::new(MeterConfig {
            initial_volume_l: 1_000,
            ..MeterConfig::DEFAULT
        });
        // 600 L/h for 10 minutes = 100 L forward.
        for _ in 0..10 {
            m.advance(6_000, 60_000, &Inputs::NORMAL);
        }
        // -120 L/h for 5 minutes = 10 L back.
        for _ in 0..5 {
            m.advance(-1_200, 60_000, &Inputs::NORMAL);
        }
        m.pulse(Direction::Forward, 3);
        let img = m.registers();
        assert_eq!(get_u64(&img, REG_VOLUME), 1_093);
        assert_eq!(get_u64(&img, REG_FORWARD_VOLUME), 1_103);
        assert_eq!(get_u64(&img, REG_REVERSE_VOLUME), 10);
        assert_eq!(get_i32(&img, REG_FLOW), -1_200);
        assert_eq!(img[usize::from(REG_ALARMS)], 1 << alarm_bit::BACKFLOW);
        assert_eq!(img[usize::from(REG_RESERVED)], 0);
    }

    proptest::proptest! {
        /// One step over a run of samples of one alarm class is the same as
        /// stepping each sample.
        #[test]
        fn a_run_in_one_step_equals_its_samples(
            history in proptest::collection::vec((-2_000i32..40_000, 1u32..120_000), 0..40),
            class in 0u8..3,
            samples in proptest::collection::vec(1i32..31_250, 1..90),
            tamper in proptest::bool::ANY,
        ) {
            let mut a = Meter::new(MeterConfig::DEFAULT);
            for (f, dt) in history {
                a.advance(f, dt, &Inputs::NORMAL);
            }
            let mut b = a;
            let inputs = Inputs { tamper, ..Inputs::NORMAL };
            let flows: std::vec::Vec<i32> = samples
                .iter()
                .map(|f| match class {
                    0 => 0,
                    1 => *f,
                    _ => -*f,
                })
                .collect();
            let mut units = 0u64;
            for f in &flows {
                a.advance(*f, 60_000, &inputs);
                units += u64::from(f.unsigned_abs()) * 60_000;
            }
            b.advance_run(units, *flows.last().unwrap(), 60_000 * flows.len() as u32, &inputs);
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn snapshot_restores_totalizers() {
        let mut m = Meter::new(MeterConfig::DEFAULT);
        m.advance(12_345, 61_234, &Inputs::NORMAL);
        let s = m.snapshot();
        let mut n = Meter::new(MeterConfig::DEFAULT);
        n.restore(&s);
        assert_eq!(n.snapshot(), s);
    }
}
