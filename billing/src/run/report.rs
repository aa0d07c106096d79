//! What the `billing run` command reports to the clerk: a run's outcome
//! completed from the database (bill-number range, ledger entries, holds by
//! reason) and rendered as text. It only reads; it never changes a run.

use super::{RunOutcome, COMPONENTS};
use crate::BillingError;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// What the `billing run` command reports: the outcome (its field names
/// unchanged) and, for a run that issued bills, its bill-number range and
/// ledger entries; held bills counted by reason; the reason it was forced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub outcome: RunOutcome,
    /// Set when the month was not over and the run was forced.
    pub forced_reason: Option<String>,
    /// Lowest and highest bill number this run issued (none when it issued none).
    pub first_bill_no: Option<i64>,
    pub last_bill_no: Option<i64>,
    /// Journal entries posted for this run's bills.
    pub ledger_entries: u64,
    /// Held bills by hold reason (a bill with two reasons counts in both).
    pub held_by_reason: BTreeMap<String, u64>,
}

impl RunReport {
    /// Completes `outcome` from the database (a committed run) or from the
    /// outcome's own list of holds (a dry run).
    pub async fn build(
        pool: &PgPool,
        outcome: RunOutcome,
        forced_reason: Option<String>,
    ) -> Result<RunReport, BillingError> {
        let mut report = RunReport {
            outcome,
            forced_reason,
            first_bill_no: None,
            last_bill_no: None,
            ledger_entries: 0,
            held_by_reason: BTreeMap::new(),
        };
        let o = &report.outcome;
        // A re-run that created nothing points at the earlier run: its
        // numbers are not this run's.
        let this_run = o
            .run_id
            .filter(|_| !o.dry_run && o.bills_created + o.held > 0);
        match this_run {
            Some(run_id) => {
                let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT min(bill_no), max(bill_no) FROM billing.bills WHERE run_id = $1",
                )
                .bind(run_id)
                .fetch_one(pool)
                .await?;
                let entries: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM billing.journal_entries j \
                       JOIN billing.bills b ON b.bill_id = j.bill_id \
                      WHERE b.run_id = $1 AND j.source = 'bill'",
                )
                .bind(run_id)
                .fetch_one(pool)
                .await?;
                let held: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT r, count(*) FROM billing.bills, unnest(hold_reasons) r \
                      WHERE run_id = $1 AND status = 'held' GROUP BY r",
                )
                .bind(run_id)
                .fetch_all(pool)
                .await?;
                report.first_bill_no = first;
                report.last_bill_no = last;
                report.ledger_entries = entries as u64;
                report.held_by_reason = held.into_iter().map(|(r, n)| (r, n as u64)).collect();
            }
            None => {
                for h in &report.outcome.holds {
                    for r in &h.reasons {
                        *report.held_by_reason.entry(r.clone()).or_default() += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// The clerk's summary: counts, totals by component in KRW with
    /// thousands separators, the bill-number range and the ledger entries.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let o = &self.outcome;
        let mut t = String::new();
        let what = if o.dry_run {
            "dry run (nothing written)".to_string()
        } else {
            match o.run_id {
                Some(id) => format!("run #{id}"),
                None => "run".to_string(),
            }
        };
        let _ = writeln!(t, "Billing {what}: period {}, group {}", o.period, o.group);
        if let Some(r) = &self.forced_reason {
            let _ = writeln!(
                t,
                "  FORCED before the month was over ({} KST); reason: {r}",
                o.period
                    .end_utc()
                    .with_timezone(&crate::period::kst())
                    .format("%Y-%m-%d %H:%M")
            );
        }
        let verb = if o.dry_run {
            "would be billed"
        } else {
            "billed"
        };
        let _ = writeln!(
            t,
            "  accounts in group   {:>14}",
            group_digits(o.accounts as i64)
        );
        let _ = writeln!(
            t,
            "  {verb:<20}{:>14}",
            group_digits(o.bills_created as i64)
        );
        let _ = writeln!(
            t,
            "  already billed      {:>14}",
            group_digits(o.bills_existing as i64)
        );
        let _ = writeln!(
            t,
            "  held for review     {:>14}",
            group_digits(o.held as i64)
        );
        for (reason, n) in &self.held_by_reason {
            let _ = writeln!(t, "    {reason:<18}{:>14}", group_digits(*n as i64));
        }
        let _ = writeln!(
            t,
            "  with estimates      {:>14}",
            group_digits(o.estimated as i64)
        );
        let _ = writeln!(t, "  usage (m³)          {:>14}", group_digits(o.usage_m3));
        let _ = writeln!(t, "  totals (KRW)");
        for c in COMPONENTS {
            if let Some(v) = o.totals_by_component.get(c.as_str()) {
                let _ = writeln!(t, "    {:<18}{:>14}", c.as_str(), group_digits(*v));
            }
        }
        let _ = writeln!(t, "    {:<18}{:>14}", "total", group_digits(o.total_krw));
        if !o.dry_run {
            match (self.first_bill_no, self.last_bill_no) {
                (Some(a), Some(b)) => {
                    let _ = writeln!(t, "  bill numbers        {a} to {b}");
                }
                _ => {
                    let _ = writeln!(t, "  bill numbers        none issued by this run");
                }
            }
            let _ = writeln!(
                t,
                "  ledger entries      {:>14}",
                group_digits(self.ledger_entries as i64)
            );
        }
        t
    }
}

/// 1,234,567 (negative amounts keep their sign).
fn group_digits(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::RunRequest;

    #[test]
    fn the_clerks_summary_groups_thousands_and_lists_what_matters() {
        let req = RunRequest {
            period: "2026-10".parse().unwrap(),
            group: "A".into(),
            dry_run: false,
        };
        let mut outcome = RunOutcome::empty(&req, 1_250, 3);
        outcome.run_id = Some(7);
        outcome.bills_created = 1_240;
        outcome.held = 7;
        outcome.usage_m3 = 25_310;
        outcome.totals_by_component = [
            ("water".to_string(), 12_345_670),
            ("levy".to_string(), 4_302_700),
            ("reduction".to_string(), -12_000),
        ]
        .into_iter()
        .collect();
        outcome.total_krw = 16_636_370;
        let report = RunReport {
            outcome,
            forced_reason: None,
            first_bill_no: Some(1),
            last_bill_no: Some(1_240),
            ledger_entries: 1_240,
            held_by_reason: [("high_usage".to_string(), 5), ("no_reading".to_string(), 2)]
                .into_iter()
                .collect(),
        };
        let text = report.render_text();
        for want in [
            "Billing run #7: period 2026-10, group A",
            "  accounts in group            1,250",
            "  billed                       1,240",
            "  held for review                  7",
            "    high_usage                     5",
            "    no_reading                     2",
            "    water                 12,345,670",
            "    levy                   4,302,700",
            "    reduction                -12,000",
            "    total                 16,636,370",
            "  bill numbers        1 to 1240",
            "  ledger entries               1,240",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains("RunOutcome"), "{text}");
        // JSON: the outcome's field names, flattened, plus the report's.
        let v = serde_json::to_value(&report).unwrap();
        for key in [
            "run_id",
            "period",
            "group",
            "dry_run",
            "accounts",
            "bills_created",
            "bills_existing",
            "held",
            "estimated",
            "usage_m3",
            "totals_by_component",
            "total_krw",
            "holds",
            "forced_reason",
            "first_bill_no",
            "last_bill_no",
            "ledger_entries",
            "held_by_reason",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
        assert_eq!(v["period"], "2026-10");
        assert_eq!(v["held_by_reason"]["high_usage"], 5);
        assert_eq!(group_digits(-1_000), "-1,000");
        assert_eq!(group_digits(999), "999");
    }
}
