//! Reports for clerks and the finance office, each as JSON and as CSV
//! (`to_csv`, served as `text/csv`): trial balance, receivables ageing,
//! billing run summary, arrears. The CSV is part of the contract, so it is
//! written here, beside the JSON shape it mirrors.
//!
//! CSV cells of text (names, addresses, account numbers, usage types) that
//! begin with `=`, `+`, `-`, `@`, a tab or a carriage return get a leading
//! `'`, as OWASP advises against formula injection. Amounts and counts are
//! written from integers, so they are numbers and are never prefixed.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use utoipa::{IntoParams, ToSchema};

/// A text cell for CSV: neutralised against formula injection (a leading
/// `'` before `=`, `+`, `-`, `@`, tab or CR), then quoted when it needs it
/// (RFC 4180). Numeric columns are not written through this.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrialBalanceRow {
    pub code: String,
    pub name: String,
    pub debit_krw: i64,
    pub credit_krw: i64,
    /// Debit minus credit.
    pub balance_krw: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrialBalance {
    pub rows: Vec<TrialBalanceRow>,
    pub total_debit_krw: i64,
    pub total_credit_krw: i64,
    /// Always zero in a sound ledger.
    pub net_krw: i64,
}

/// A ledger account as the trial balance names it (its code, e.g. `1100`).
pub trait LedgerCode {
    fn ledger_code(&self) -> &str;
}

impl LedgerCode for &str {
    fn ledger_code(&self) -> &str {
        self
    }
}

impl TrialBalance {
    /// The balance (debit minus credit) of one ledger account.
    pub fn balance(&self, a: impl LedgerCode) -> i64 {
        self.rows
            .iter()
            .find(|r| r.code == a.ledger_code())
            .map_or(0, |r| r.balance_krw)
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from("code,name,debit_krw,credit_krw,balance_krw\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{}",
                csv_field(&r.code),
                csv_field(&r.name),
                r.debit_krw,
                r.credit_krw,
                r.balance_krw
            );
        }
        let _ = writeln!(
            out,
            "total,,{},{},{}",
            self.total_debit_krw, self.total_credit_krw, self.net_krw
        );
        out
    }
}
/// One customer's open receivables by age.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgeingRow {
    pub account_no: String,
    pub customer: String,
    pub current_krw: i64,
    pub days_31_60_krw: i64,
    pub days_61_90_krw: i64,
    pub days_90_plus_krw: i64,
    pub total_krw: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ageing {
    pub as_of: NaiveDate,
    pub rows: Vec<AgeingRow>,
    pub totals: AgeingRow,
}

impl Ageing {
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "account_no,customer,current_krw,days_31_60_krw,days_61_90_krw,days_90_plus_krw,total_krw\n",
        );
        for r in self.rows.iter().chain(std::iter::once(&self.totals)) {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                csv_field(&r.account_no),
                csv_field(&r.customer),
                r.current_krw,
                r.days_31_60_krw,
                r.days_61_90_krw,
                r.days_90_plus_krw,
                r.total_krw
            );
        }
        out
    }
}

/// A customer in arrears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArrearsRow {
    pub account_no: String,
    pub customer: String,
    pub open_bills: u32,
    pub open_krw: i64,
    /// Open on bills older than `min_days`.
    pub overdue_krw: i64,
    pub oldest_period: String,
    pub oldest_days: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Arrears {
    pub as_of: NaiveDate,
    pub min_days: i64,
    pub rows: Vec<ArrearsRow>,
}

impl Arrears {
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "account_no,customer,open_bills,open_krw,overdue_krw,oldest_period,oldest_days\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                csv_field(&r.account_no),
                csv_field(&r.customer),
                r.open_bills,
                r.open_krw,
                r.overdue_krw,
                r.oldest_period,
                r.oldest_days
            );
        }
        out
    }
}

/// Totals of one usage type in a run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SummaryRow {
    pub usage_type: String,
    pub accounts: i64,
    pub usage_m3: i64,
    pub water_krw: i64,
    pub base_krw: i64,
    pub sewer_krw: i64,
    pub levy_krw: i64,
    pub reduction_krw: i64,
    pub total_krw: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub period: String,
    pub group: Option<String>,
    /// Live issued bills (a rebill replaces its cancelled bill).
    pub issued: i64,
    pub held: i64,
    pub cancelled: i64,
    pub by_usage_type: Vec<SummaryRow>,
    pub totals: SummaryRow,
}

impl RunSummary {
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "usage_type,accounts,usage_m3,water_krw,base_krw,sewer_krw,levy_krw,reduction_krw,total_krw\n",
        );
        for r in self
            .by_usage_type
            .iter()
            .chain(std::iter::once(&self.totals))
        {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&r.usage_type),
                r.accounts,
                r.usage_m3,
                r.water_krw,
                r.base_krw,
                r.sewer_krw,
                r.levy_krw,
                r.reduction_krw,
                r.total_krw
            );
        }
        out
    }
}

/// How a report is answered: JSON (default) or CSV (`text/csv`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    #[default]
    Json,
    Csv,
}

/// `GET /api/v1/ledger/trial-balance`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FormatQuery {
    #[serde(default)]
    pub format: Option<ReportFormat>,
}

/// `GET /api/v1/reports/ageing`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgeingQuery {
    /// The day the ages are counted to (default: today in Korea).
    pub as_of: Option<NaiveDate>,
    pub format: Option<ReportFormat>,
}

/// Longest `min_days` accepted (a hundred years).
pub const MAX_MIN_DAYS: i64 = 36_500;

/// `GET /api/v1/reports/arrears`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArrearsQuery {
    /// The day the ages are counted to (default: today in Korea).
    pub as_of: Option<NaiveDate>,
    /// Bills older than this many days are overdue (default 30).
    #[param(minimum = 0, maximum = 36500)]
    pub min_days: Option<i64>,
    pub format: Option<ReportFormat>,
}

/// `GET /api/v1/reports/run-summary`.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    #[param(
        pattern = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(0[1-9]|1[0-2])$",
        example = "2026-10"
    )]
    pub period: String,
    /// Only this billing group.
    #[param(min_length = 1, max_length = 64, pattern = r"^[^\x00]*$")]
    pub group: Option<String>,
    pub format: Option<ReportFormat>,
}
