//! Billing runs: starting one, what it did, and the runs so far.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Runs a list returns at most, newest first.
pub const MAX_RUNS_LISTED: i64 = 200;

/// Where a run stands, as stored in `billing.runs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum RunStatus {
    /// Writing bills (or stopped mid-way: a re-run resumes it).
    Running,
    /// Every bill written; `outcome` says what it did.
    Committed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Committed => "committed",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/billing-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[schema(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$",
        example = "2026-10"
    )]
    pub period: String,
    /// The billing group (1-64 characters).
    #[schema(
        min_length = 1,
        max_length = 64,
        example = "A",
        pattern = r"^[^\x00]*$"
    )]
    pub group: String,
    /// Preview: nothing is written.
    #[serde(default)]
    pub dry_run: bool,
    /// Run a month that is not over yet (Korean time); needs `reason`.
    #[serde(default)]
    pub force: bool,
    /// Why the run is forced (1-500 characters, kept in the audit log);
    /// only with `force`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Not blank: at least one character other than white space (the
    /// reason is kept trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
    )]
    pub reason: Option<String>,
}

/// A held bill and why, for the clerk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeldBill {
    pub account_no: String,
    pub reasons: Vec<String>,
}

/// What a run did (or, dry, would do). Totals cover the bills this run
/// issued (or would issue); bills that already existed are only counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunOutcome {
    /// None for a dry run, or a re-run that had nothing to create.
    pub run_id: Option<i64>,
    pub period: String,
    pub group: String,
    pub dry_run: bool,
    /// Accounts in the group.
    pub accounts: u64,
    pub bills_created: u64,
    /// Accounts that already had a bill for the period.
    pub bills_existing: u64,
    /// Bills created held for review (no bill number yet).
    pub held: u64,
    /// Bills with at least one estimated leg.
    pub estimated: u64,
    pub usage_m3: i64,
    /// component → KRW.
    pub totals_by_component: BTreeMap<String, i64>,
    /// usage type → component → KRW.
    pub totals_by_usage_type: BTreeMap<String, BTreeMap<String, i64>>,
    pub total_krw: i64,
    /// The first held bills (all are in the database).
    pub holds: Vec<HeldBill>,
}

/// A run as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct Run {
    pub run_id: i64,
    pub period: String,
    #[cfg_attr(feature = "sqlx", sqlx(rename = "billing_group"))]
    pub group: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the run committed.
    #[cfg_attr(feature = "sqlx", sqlx(json(nullable)))]
    pub outcome: Option<RunOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// `GET /api/v1/billing-runs`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this month's runs.
    #[param(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$"
    )]
    pub period: Option<String>,
}

/// How far a run has come: the period's live bills of the group so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "sqlx", derive(sqlx::FromRow))]
pub struct RunProgress {
    pub accounts: i64,
    pub bills_written: i64,
    pub held: i64,
    /// 0-100.
    pub percent: i64,
}

/// One run with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub progress: RunProgress,
}
