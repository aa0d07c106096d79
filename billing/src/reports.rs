//! Reports for clerks and the finance office: trial balance, receivables
//! ageing, billing run summary, arrears. Their shapes (JSON and CSV) are the
//! contract's ([`waterworks_api::billing`]); this module reads them.
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
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
pub use waterworks_api::billing::{
    csv_field, Ageing, AgeingRow, Arrears, ArrearsRow, LedgerCode, RunSummary, SummaryRow,
    TrialBalance, TrialBalanceRow,
};

/// Rows a list report returns at most (the CSV says when it was cut).
pub const MAX_REPORT_ROWS: usize = 100_000;

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

/// Adds an open amount `days` old to its bucket and the row's total.
fn add_aged(row: &mut AgeingRow, days: i64, amount: i64) {
    match days {
        ..=30 => row.current_krw += amount,
        31..=60 => row.days_31_60_krw += amount,
        61..=90 => row.days_61_90_krw += amount,
        _ => row.days_90_plus_krw += amount,
    }
    row.total_krw += amount;
}

impl LedgerCode for LedgerAccount {
    fn ledger_code(&self) -> &str {
        self.code()
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
            add_aged(r, days, open);
        }
        add_aged(&mut totals, days, open);
    }
    Ok(Ageing {
        as_of,
        rows,
        totals,
    })
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
                oldest_period: period.to_string(),
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
        period: period.to_string(),
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
            add_aged(&mut r, d, a);
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
