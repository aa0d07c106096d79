//! Billing: Korean water tariffs, accounts and monthly billing runs.
//!
//! - [`tariff`]: the versioned tariff file and the pure pricing engine
//!   ([`tariff::quote`]), shared by the billing run, the CLI and `POST /api/v1/quote`.
//! - [`period`]: a billing month in Korean local time.
//! - [`usage`]: from meter reads to whole m³ per account (pure: legs, carry-over,
//!   estimation, holds).
//! - [`accounts`], [`run`]: the `billing` schema and the monthly run.
//! - [`service`]: configuration, the HTTP API and `run(config, shutdown)`.
//!
//! Billing reads metering data only through `metering.period_reads_v1`
//! (see [`run::SqlReads`]); it never touches ingest's tables.

pub mod period;
pub mod tariff;

pub use period::Period;
