//! The demo's closing summary, as a clerk or operator would want to read it.

use crate::demo::DemoReport;
use std::fmt::Write;

/// Formats whole won with thousands separators: 1234567 → "1,234,567".
pub fn won(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Pads to a display width, counting Hangul as two columns.
fn pad(label: &str, width: usize) -> String {
    let cols: usize = label
        .chars()
        .map(|c| {
            if ('\u{1100}'..='\u{D7A3}').contains(&c) {
                2
            } else {
                1
            }
        })
        .sum();
    format!("{label}{}", " ".repeat(width.saturating_sub(cols)))
}

pub fn render(r: &DemoReport) -> String {
    let mut s = String::new();
    let new = r.stored_after - r.stored_before;
    let _ = writeln!(s, "\n=== Waterworks demo: summary ===");
    let _ = writeln!(s, "database        {}", r.database);
    let _ = writeln!(s, "broker          {}", r.broker);
    let _ = writeln!(
        s,
        "fleet           {} meters behind {} gateways, read every 15 min",
        r.meters, r.gateways
    );
    let _ = writeln!(
        s,
        "window          {} .. {} ({} rounds, simulated clock)",
        r.from.format("%Y-%m-%d %H:%MZ"),
        r.to.format("%Y-%m-%d %H:%MZ"),
        r.rounds
    );
    let _ = writeln!(
        s,
        "readings        {} published, {} stored in metering ({} new, {} already there), {} quarantined",
        r.published_count,
        r.stored_after,
        new,
        r.stored_after - new,
        r.quarantined
    );
    if !r.quarantined_by_reason.is_empty() {
        let reasons: Vec<String> = r
            .quarantined_by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "                quarantined by reason: {} (kept in metering.quarantine with the raw reading)",
            reasons.join(", ")
        );
    }
    if r.published_duplicates > 0 {
        let _ = writeln!(
            s,
            "                {} readings were carried more than once by the broker and stored once",
            r.published_duplicates
        );
    }
    if let Some(slot) = r.stopped_after {
        let _ = writeln!(
            s,
            "stopped         by a signal after {} rounds (clock at {}): the summary so far; nothing billed",
            r.rounds,
            slot.format("%Y-%m-%d %H:%MZ")
        );
        let _ = writeln!(
            s,
            "time            {:.1} s (reading {:.1} s)",
            r.total_secs, r.simulate_secs
        );
        return s;
    }
    let (mut accounts, mut created, mut existing, mut held) = (0, 0, 0, 0);
    for run in &r.runs {
        accounts += run.accounts;
        created += run.bills_created;
        existing += run.bills_existing;
        held += run.held;
    }
    let period = r
        .runs
        .first()
        .map(|x| x.period.to_string())
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "billing         period {period}, tariff {}, {} accounts in {} billing groups",
        r.tariff_city,
        accounts,
        r.runs.len()
    );
    let _ = writeln!(
        s,
        "this run        {created} bills created, {existing} already issued, {held} held for review"
    );
    let b = &r.period_bills;
    let _ = writeln!(
        s,
        "bills {period}   {} bills ({} held), {} m3 billed",
        b.bills,
        b.held,
        won(b.usage_m3)
    );
    for (label, amount) in [
        ("water 상수도", b.water_krw),
        ("sewer 하수도", b.sewer_krw),
        ("base 기본요금", b.base_krw),
        ("levy 물이용부담금", b.levy_krw),
        ("reductions 감면", -b.reduction_krw.abs()),
    ] {
        if label.starts_with("reductions") && amount == 0 {
            continue;
        }
        let _ = writeln!(s, "  {}{:>16} KRW", pad(label, 20), won(amount));
    }
    let _ = writeln!(s, "  {}{:>16} KRW", pad("total 합계", 20), won(b.total_krw));
    let _ = writeln!(
        s,
        "time            {:.1} s (read the month {:.1} s, ingest tail {:.1} s, billing {:.1} s)",
        r.total_secs, r.simulate_secs, r.ingest_wait_secs, r.billing_secs
    );
    s
}

#[cfg(test)]
mod tests {
    use super::won;

    #[test]
    fn thousands_separators() {
        assert_eq!(won(0), "0");
        assert_eq!(won(999), "999");
        assert_eq!(won(48_940), "48,940");
        assert_eq!(won(-1_234_567), "-1,234,567");
    }
}
