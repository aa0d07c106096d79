//! Billing: Korean water tariffs, accounts and monthly billing runs.
//!
//! - [`tariff`]: the versioned tariff file and the pure pricing engine
//!   ([`tariff::quote`]), shared by the billing run, the CLI and `POST /api/v1/quote`.
//! - [`period`]: a billing month in Korean local time.
//! - [`usage`]: from meter reads to whole m³ per account (pure: legs, carry-over,
//!   estimation, holds).
//! - [`accounts`], [`run`](mod@run): the `billing` schema and the monthly run.
//! - [`ledger`]: the double-entry ledger of the water supply special account
//!   (pure core; [`ledger::store`] is its SQL shell).
//! - [`payments`]: payments and bank-file imports; [`corrections`]: cancel,
//!   rebill, adjust, audit log; [`reports`]: trial balance, ageing, run
//!   summary, arrears (JSON and CSV).
//! - [`config`]: the service's configuration; [`http`]: the HTTP API, one
//!   router per resource, answering with the types of
//!   [`waterworks_api::billing`], and its generated OpenAPI document;
//!   [`service`]: build and `run(config, shutdown)`.
//!
//! Billing reads metering data only through `metering.period_reads_v1`
//! (see [`run::SqlReads`]); it never touches ingest's tables.

pub mod accounts;
pub mod config;
pub mod corrections;
mod db;
pub mod http;
pub mod ledger;
pub mod master;
pub mod payments;
pub mod period;
pub mod reports;
pub mod run;
pub mod service;
pub mod tariff;
pub mod usage;

pub use db::{check as check_schema, migrate};
pub use period::Period;
pub use service::{run, Billing, BillingConfig};

/// Everything that can fail in billing.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Schema(#[from] waterworks_service::db::SchemaError),
    #[error(transparent)]
    Tariff(#[from] tariff::TariffError),
    #[error(transparent)]
    Account(#[from] accounts::AccountError),
    #[error("tokens: {0}")]
    Token(#[from] waterworks_service::auth::TokenError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Release(#[from] run::ReleaseError),
    #[error(transparent)]
    RunRefused(#[from] run::RunRefused),
    #[error("a billing run for {period} group {group} is already in progress")]
    RunInProgress { period: Period, group: String },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    BankFile(#[from] payments::BankFileError),
    #[error(transparent)]
    Correction(#[from] corrections::CorrectionError),
    #[error("background task failed: {0}")]
    Task(String),
}
