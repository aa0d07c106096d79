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
