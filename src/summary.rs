//! The demo's closing summary, as a clerk or operator would want to read it.

use crate::demo::DemoReport;
use std::collections::BTreeMap;
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
        r.published.len(),
        r.stored_after,
        new,
        r.stored_after - new,
        r.quarantined
    );
    if r.published_duplicates > 0 {
        let _ = writeln!(
            s,
            "                {} readings were carried more than once by the broker and stored once",
            r.published_duplicates
        );
    }
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let (mut accounts, mut created, mut existing, mut held, mut m3, mut total) = (0, 0, 0, 0, 0, 0);
    for run in &r.runs {
        accounts += run.accounts;
        created += run.bills_created;
        existing += run.bills_existing;
        held += run.held;
        m3 += run.usage_m3;
        total += run.total_krw;
        for (k, v) in &run.totals_by_component {
            *totals.entry(k.clone()).or_default() += v;
        }
    }
    let period = r.runs.first().map(|x| x.period.to_string()).unwrap_or_default();
    let _ = writeln!(
        s,
        "billing         period {period}, tariff {}, {} accounts in {} groups",
        r.tariff_city,
        accounts,
        r.runs.len()
    );
    let _ = writeln!(
        s,
        "bills           {created} created, {existing} already issued, {held} held for review; {} m3 billed",
        won(m3)
    );
    for (component, amount) in &totals {
        let _ = writeln!(s, "  {component:<14}{:>16} KRW", won(*amount));
    }
    let _ = writeln!(s, "  {:<14}{:>16} KRW", "total", won(total));
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
