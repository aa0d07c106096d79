//! The billing service's contract: bills, billing runs, the ledger, accounts,
//! payments, reports and the public fee quote.
//!
//! Money is whole KRW as `i64` (`*_krw` fields); rates and unrounded amounts
//! in a line's explanation are `rust_decimal::Decimal`, written as strings
//! so no float ever touches them. A period is `YYYY-MM` (see
//! [`PERIOD_PATTERN`]). Enums whose values are stored in the database
//! ([`BillStatus`], [`RunStatus`]) derive `sqlx::Type` with the `sqlx`
//! feature, as stored.
//!
//! - [`bills`]: bills, their lines and legs, pages, search, notice, corrections;
//! - [`runs`]: billing runs, their outcome and progress;
//! - [`ledger`]: ledger entries of a bill, the audit log;
//! - [`reports`]: trial balance, ageing, arrears, run summary (JSON and CSV);
//! - [`accounts`]: accounts, their search, detail and administration;
//! - [`payments`]: payments and bank-file imports;
//! - [`quote`]: the public fee calculator.

pub mod accounts;
pub mod bills;
pub mod ledger;
pub mod payments;
pub mod quote;
pub mod reports;
pub mod runs;

pub use accounts::*;
pub use bills::*;
pub use ledger::*;
pub use payments::*;
pub use quote::*;
pub use reports::*;
pub use runs::*;

/// A billing month, `YYYY-MM`, year 1900..=9998 (what billing's `Period`
/// accepts).
pub const PERIOD_PATTERN: &str =
    "^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$";

/// Whole numbers in request bodies as JSON Schema means them: `1716` and
/// `1716.0` are the same integer (serde alone refuses the second). A
/// fraction or a value out of range is refused.
pub(crate) mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Signed(i64),
        Unsigned(u64),
        Float(f64),
    }

    fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        let n = match Number::deserialize(d)? {
            Number::Signed(i) => i128::from(i),
            Number::Unsigned(u) => i128::from(u),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 1e19 => f as i128,
            Number::Float(f) => return Err(D::Error::custom(format!("{f} is not a whole number"))),
        };
        T::try_from(n).map_err(|_| D::Error::custom(format!("{n} is out of range")))
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        whole(d)
    }

    pub fn i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        whole(d)
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        whole(d)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(deserialize_with = "u32")] u32);
        Ok(Option::<W>::deserialize(d)?.map(|W(v)| v))
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(deserialize_with = "super::i64")]
            a: i64,
            #[serde(default, deserialize_with = "super::opt_u32")]
            b: Option<u32>,
        }

        #[test]
        fn integral_floats_are_integers_and_fractions_are_not() {
            let t: T = serde_json::from_str(r#"{"a": 1716.0, "b": 3}"#).unwrap();
            assert_eq!((t.a, t.b), (1716, Some(3)));
            let t: T = serde_json::from_str(r#"{"a": -5}"#).unwrap();
            assert_eq!((t.a, t.b), (-5, None));
            assert!(serde_json::from_str::<T>(r#"{"a": 1.5}"#).is_err());
            assert!(serde_json::from_str::<T>(r#"{"a": 1, "b": -1}"#).is_err());
            assert!(serde_json::from_str::<T>(r#"{"a": 1, "b": null}"#)
                .unwrap()
                .b
                .is_none());
        }
    }
}
