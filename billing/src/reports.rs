//! Reports for clerks and the finance office, each as JSON (serde) and CSV
//! (`to_csv`): trial balance, receivables ageing, billing run summary, arrears.
//!
//! CSV cells of text (names, addresses, account numbers, usage types) that
//! begin with `=`, `+`, `-`, `@`, a tab or a carriage return get a leading
//! `'`, as OWASP advises against formula injection: a spreadsheet then shows
//! the text instead of evaluating it. Amounts and counts are written from
//! integers, so they are numbers and are never prefixed: a negative balance
//! stays `-5000` and sums in the spreadsheet.
//!
//! Reads only. Ageing counts days from a bill's date, the first day after its
//! period (the October 2026 bill is dated 2026-11-01), to `as_of`: 0-30 days
//! is current, then 31-60, 61-90 and 90+.

use crate::ledger::LedgerAccount;
use crate::period::Period;
use crate::BillingError;
use chrono::NaiveDate;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Rows a list report returns at most (the CSV says when it was cut).
pub const MAX_REPORT_ROWS: usize = 100_000;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialBalanceRow {
    pub code: String,
    pub name: String,
    pub debit_krw: i64,
    pub credit_krw: i64,
    /// Debit minus credit.
    pub balance_krw: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrialBalance {
    pub rows: Vec<TrialBalanceRow>,
    pub total_debit_krw: i64,
    pub total_credit_krw: i64,
    /// Always zero in a sound ledger.
    pub net_krw: i64,
}

impl TrialBalance {
    pub fn balance(&self, a: LedgerAccount) -> i64 {
        self.rows
            .iter()
            .find(|r| r.code == a.code())
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

/// Debits, credits and balance of every ledger account.
pub async fn trial_balance(pool: &PgPool) -> Result<TrialBalance, BillingError> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT ledger_account, coalesce(sum(amount_krw) FILTER (WHERE amount_krw > 0), 0)::int8, \
                coalesce(-sum(amount_krw) FILTER (WHERE amount_krw < 0), 0)::int8 \
           FROM billing.postings GROUP BY ledger_account",
    )
    .fetch_all(pool)
    .await?;
    let by: BTreeMap<String, (i64, i64)> = rows.into_iter().map(|(c, d, k)| (c, (d, k))).collect();
    let mut tb = TrialBalance {
        rows: Vec::new(),
        total_debit_krw: 0,
        total_credit_krw: 0,
        net_krw: 0,
    };
    for a in LedgerAccount::ALL {
        let (d, c) = by.get(a.code()).copied().unwrap_or((0, 0));
        tb.total_debit_krw += d;
        tb.total_credit_krw += c;
        tb.rows.push(TrialBalanceRow {
            code: a.code().into(),
            name: a.name().into(),
            debit_krw: d,
            credit_krw: c,
            balance_krw: d - c,
        });
    }
    tb.net_krw = tb.total_debit_krw - tb.total_credit_krw;
    Ok(tb)
}

/// One customer's open receivables by age.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgeingRow {
    pub account_no: String,
    pub customer: String,
    pub current_krw: i64,
    pub days_31_60_krw: i64,
    pub days_61_90_krw: i64,
    pub days_90_plus_krw: i64,
    pub total_krw: i64,
}

impl AgeingRow {
    fn add(&mut self, days: i64, amount: i64) {
        match days {
            ..=30 => self.current_krw += amount,
            31..=60 => self.days_31_60_krw += amount,
            61..=90 => self.days_61_90_krw += amount,
            _ => self.days_90_plus_krw += amount,
        }
        self.total_krw += amount;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Open amount per bill: (account, customer, period, bill_id, open).
async fn open_bills(
    pool: &PgPool,
) -> Result<Vec<(String, String, Period, i64, i64)>, BillingError> {
    let rows = sqlx::query(
        // Open amounts first, from the covering index of receivable
        // postings (0020_report_indexes.sql), then names and periods for the
        // open bills only (the bills' period from its own narrow index).
        "WITH open AS (SELECT bill_id, party, sum(amount_krw)::int8 AS open_krw \
                         FROM billing.postings WHERE ledger_account = '1100' \
                        GROUP BY bill_id, party HAVING sum(amount_krw) <> 0) \
         SELECT o.party, coalesce(a.customer, ''), b.period, o.bill_id, o.open_krw \
           FROM open o JOIN billing.bills b ON b.bill_id = o.bill_id \
           LEFT JOIN billing.accounts a ON a.account_no = o.party \
          ORDER BY 1, 3, 4",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let period: String = r.try_get(2)?;
        let Ok(period) = period.parse::<Period>() else {
            continue;
        };
        out.push((
            r.try_get(0)?,
            r.try_get(1)?,
            period,
            r.try_get(3)?,
            r.try_get(4)?,
        ));
    }
    Ok(out)
}

fn age_days(period: Period, as_of: NaiveDate) -> i64 {
    (as_of - period.next().first_day()).num_days()
}

/// Receivables ageing as of a date.
pub async fn ageing(pool: &PgPool, as_of: NaiveDate) -> Result<Ageing, BillingError> {
    let mut rows: Vec<AgeingRow> = Vec::new();
    let mut totals = AgeingRow {
        account_no: "total".into(),
        ..AgeingRow::default()
    };
    for (party, customer, period, _, open) in open_bills(pool).await? {
        if rows.last().is_none_or(|r| r.account_no != party) {
            if rows.len() == MAX_REPORT_ROWS {
                break;
            }
            rows.push(AgeingRow {
                account_no: party,
                customer,
                ..AgeingRow::default()
            });
        }
        let days = age_days(period, as_of);
        if let Some(r) = rows.last_mut() {
            r.add(days, open);
        }
        totals.add(days, open);
    }
    Ok(Ageing {
        as_of,
        rows,
        totals,
    })
}

/// A customer in arrears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArrearsRow {
    pub account_no: String,
    pub customer: String,
    pub open_bills: u32,
    pub open_krw: i64,
    /// Open on bills older than `min_days`.
    pub overdue_krw: i64,
    pub oldest_period: Period,
    pub oldest_days: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// Customers with an open bill older than `min_days` at `as_of`, largest
/// overdue amount first.
pub async fn arrears(
    pool: &PgPool,
    as_of: NaiveDate,
    min_days: i64,
) -> Result<Arrears, BillingError> {
    let mut rows: Vec<ArrearsRow> = Vec::new();
    for (party, customer, period, _, open) in open_bills(pool).await? {
        if open <= 0 {
            continue;
        }
        let days = age_days(period, as_of);
        if rows.last().is_none_or(|r| r.account_no != party) {
            rows.push(ArrearsRow {
                account_no: party,
                customer,
                open_bills: 0,
                open_krw: 0,
                overdue_krw: 0,
                oldest_period: period,
                oldest_days: days,
            });
        }
        if let Some(r) = rows.last_mut() {
            r.open_bills += 1;
            r.open_krw += open;
            if days > min_days {
                r.overdue_krw += open;
            }
        }
    }
    rows.retain(|r| r.overdue_krw > 0);
    rows.sort_by(|a, b| {
        b.overdue_krw
            .cmp(&a.overdue_krw)
            .then(a.account_no.cmp(&b.account_no))
    });
    rows.truncate(MAX_REPORT_ROWS);
    Ok(Arrears {
        as_of,
        min_days,
        rows,
    })
}

/// Totals of one usage type in a run summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub period: Period,
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

/// A period's (and optionally a billing group's) issued bills: accounts, m³
/// and amounts by usage type and component.
pub async fn run_summary(
    pool: &PgPool,
    period: &Period,
    group: Option<&str>,
) -> Result<RunSummary, BillingError> {
    let rows = sqlx::query(
        "SELECT b.status, b.usage_type, count(DISTINCT b.account_no)::int8, sum(b.usage_m3)::int8, \
                sum(b.water_krw)::int8, sum(b.base_krw)::int8, sum(b.sewer_krw)::int8, \
                sum(b.levy_krw)::int8, sum(b.reduction_krw)::int8, sum(b.total_krw)::int8, count(*)::int8 \
           FROM billing.bills b JOIN billing.accounts a USING (account_no) \
          WHERE b.period = $1 AND ($2::text IS NULL OR a.billing_group = $2) \
          GROUP BY 1, 2 ORDER BY 2",
    )
    .bind(period.to_string())
    .bind(group)
    .fetch_all(pool)
    .await?;
    let mut s = RunSummary {
        period: *period,
        group: group.map(str::to_string),
        issued: 0,
        held: 0,
        cancelled: 0,
        by_usage_type: Vec::new(),
        totals: SummaryRow {
            usage_type: "total".into(),
            ..SummaryRow::default()
        },
    };
    for r in rows {
        let status: String = r.try_get(0)?;
        let n: i64 = r.try_get(10)?;
        match status.as_str() {
            "held" => s.held += n,
            "cancelled" => s.cancelled += n,
            _ => {
                s.issued += n;
                let row = SummaryRow {
                    usage_type: r.try_get(1)?,
                    accounts: r.try_get(2)?,
                    usage_m3: r.try_get(3)?,
                    water_krw: r.try_get(4)?,
                    base_krw: r.try_get(5)?,
                    sewer_krw: r.try_get(6)?,
                    levy_krw: r.try_get(7)?,
                    reduction_krw: r.try_get(8)?,
                    total_krw: r.try_get(9)?,
                };
                let t = &mut s.totals;
                t.accounts += row.accounts;
                t.usage_m3 += row.usage_m3;
                t.water_krw += row.water_krw;
                t.base_krw += row.base_krw;
                t.sewer_krw += row.sewer_krw;
                t.levy_krw += row.levy_krw;
                t.reduction_krw += row.reduction_krw;
                t.total_krw += row.total_krw;
                s.by_usage_type.push(row);
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed_and_ages_bucket() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
        // Formula injection: text cells that a spreadsheet would evaluate.
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("+821012345678"), "'+821012345678");
        assert_eq!(csv_field("-5"), "'-5");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(
            csv_field("=HYPERLINK(\"http://evil\",\"x\")"),
            "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\""
        );
        assert_eq!(csv_field("a=b"), "a=b");
        let mut r = AgeingRow::default();
        for (d, a) in [
            (0, 1),
            (30, 2),
            (31, 4),
            (60, 8),
            (61, 16),
            (90, 32),
            (91, 64),
        ] {
            r.add(d, a);
        }
        assert_eq!(
            (
                r.current_krw,
                r.days_31_60_krw,
                r.days_61_90_krw,
                r.days_90_plus_krw,
                r.total_krw
            ),
            (3, 12, 48, 64, 127)
        );
        let oct: Period = "2026-10".parse().unwrap();
        assert_eq!(
            age_days(oct, NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()),
            30
        );
    }
}
