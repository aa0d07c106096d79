//! Volume accounting: a totalizer that counts whole litres plus an exact
//! fraction, and rolls over like a mechanical register.
//!
//! Flow is integrated exactly in integer units of `0.1 L/h × 1 ms`
//! ([`UNITS_PER_LITRE`] of them make a litre), so no volume is ever lost to
//! rounding however the steps are cut.
//!
//! Rollover: a register with `d` decimal digits of litres shows
//! `0 ..= 10^d - 1`; one more litre shows 0 again, exactly as the odometer of
//! a mechanical meter does. This is the only way a totalizer ever decreases.
//! The gateway and ingest treat a drop near the top of the range as a rollover.

/// `0.1 L/h × 1 ms` units per litre: 10 × 3,600,000.
pub const UNITS_PER_LITRE: u64 = 36_000_000;

/// The fewest and most digits a register may have: 10^19 still fits a u64.
pub const MIN_DIGITS: u8 = 1;
pub const MAX_DIGITS: u8 = 19;

/// Digits of the simulated meters' registers: 999,999.999 m³ before rollover.
pub const DEFAULT_DIGITS: u8 = 9;

/// `10^digits`, the first value a register of `digits` digits cannot show.
pub const fn rollover_l(digits: u8) -> u64 {
    let mut r = 1u64;
    let mut i = 0;
    while i < digits {
        r *= 10;
        i += 1;
    }
    r
}

/// One totalizer: whole litres below the rollover and a sub-litre fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totalizer {
    litres: u64,
    fraction_units: u64,
    rollover_l: u64,
}

impl Totalizer {
    /// A register of `digits` digits (clamped to `MIN_DIGITS..=MAX_DIGITS`)
    /// showing `initial_l` (reduced modulo the rollover, as the register would).
    pub const fn new(digits: u8, initial_l: u64) -> Self {
        let digits = if digits < MIN_DIGITS {
            MIN_DIGITS
        } else if digits > MAX_DIGITS {
            MAX_DIGITS
        } else {
            digits
        };
        let rollover_l = rollover_l(digits);
        Self {
            litres: initial_l % rollover_l,
            fraction_units: 0,
            rollover_l,
        }
    }

    /// Whole litres shown.
    pub const fn litres(&self) -> u64 {
        self.litres
    }

    /// The fraction of a litre not yet shown, in [`UNITS_PER_LITRE`] units.
    pub const fn fraction_units(&self) -> u64 {
        self.fraction_units
    }

    pub const fn rollover_l(&self) -> u64 {
        self.rollover_l
    }

    /// Adds `units` of `0.1 L/h × ms`; returns how many whole litres were shown.
    pub fn add_units(&mut self, units: u64) -> u64 {
        // One division (quotient and remainder together) per call: this runs
        // once per step of every simulated meter.
        let mut whole = units / UNITS_PER_LITRE;
        let mut fraction = self.fraction_units + units % UNITS_PER_LITRE;
        if fraction >= UNITS_PER_LITRE {
            fraction -= UNITS_PER_LITRE;
            whole += 1;
        }
        self.fraction_units = fraction;
        if whole > 0 {
            self.add_litres(whole);
        }
        whole
    }

    /// Adds whole litres (pulse inputs count litres directly).
    pub fn add_litres(&mut self, litres: u64) {
        self.litres = match self.litres.checked_add(litres) {
            Some(sum) if sum < self.rollover_l => sum,
            Some(sum) => sum % self.rollover_l,
            None => {
                ((u128::from(self.litres) + u128::from(litres)) % u128::from(self.rollover_l))
                    as u64
            }
        };
    }

    /// Restores a journalled value: whole litres and fraction.
    pub fn restore(&mut self, litres: u64, fraction_units: u64) {
        self.litres = litres % self.rollover_l;
        self.fraction_units = fraction_units % UNITS_PER_LITRE;
    }
}

/// `forward - reverse` shown on a register of the same rollover (the net
/// register runs backwards through zero, like a mechanical one would).
pub const fn net_l(forward: &Totalizer, reverse: &Totalizer) -> u64 {
    let r = forward.rollover_l;
    (forward.litres + (r - reverse.litres % r)) % r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integrates_exactly() {
        let mut t = Totalizer::new(DEFAULT_DIGITS, 0);
        // 60 L/h for one minute = 1 L, in 60 one-second steps.
        for _ in 0..60 {
            t.add_units(600 * 1000);
        }
        assert_eq!(t.litres(), 1);
        assert_eq!(t.fraction_units(), 0);
    }

    #[test]
    fn rolls_over_like_an_odometer() {
        let mut t = Totalizer::new(3, 998);
        t.add_litres(1);
        assert_eq!(t.litres(), 999);
        t.add_litres(1);
        assert_eq!(t.litres(), 0);
        assert_eq!(Totalizer::new(3, 12_345).litres(), 345);
    }

    #[test]
    fn net_runs_backwards_through_zero() {
        let f = Totalizer::new(3, 5);
        let mut r = Totalizer::new(3, 0);
        r.add_litres(7);
        assert_eq!(net_l(&f, &r), 998);
    }

    proptest! {
        /// The totalizer never decreases except by a rollover, and then it
        /// lands exactly where modular arithmetic says.
        #[test]
        fn monotone_except_rollover(
            digits in 1u8..=19,
            initial in any::<u64>(),
            steps in proptest::collection::vec(0u64..u64::MAX / 4, 1..50),
        ) {
            let mut t = Totalizer::new(digits, initial);
            let r = u128::from(t.rollover_l());
            let mut exact = u128::from(t.litres()) * u128::from(UNITS_PER_LITRE);
            for u in steps {
                let before = t.litres();
                t.add_units(u);
                exact += u128::from(u);
                let expected = (exact / u128::from(UNITS_PER_LITRE)) % r;
                prop_assert_eq!(u128::from(t.litres()), expected);
                if t.litres() < before {
                    // A decrease is only ever a wrap past the top.
                    prop_assert!(u128::from(before) + u128::from(u / UNITS_PER_LITRE) + 1 >= r);
                }
                prop_assert!(t.fraction_units() < UNITS_PER_LITRE);
            }
        }
    }
}
