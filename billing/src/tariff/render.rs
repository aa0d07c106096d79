//! A quote printed like a bill: Korean label and English, amounts with
//! thousands separators, each line followed by how it was computed.

use super::*;
use std::fmt::Write;

const WIDTH: usize = 64;

/// 1,234,567 (negative amounts keep their sign).
pub fn krw(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if amount < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn decimal(d: Decimal) -> String {
    let d = d.normalize();
    let whole = d.trunc();
    let frac = d - whole;
    let int = rust_decimal::prelude::ToPrimitive::to_i64(&whole).unwrap_or(0);
    if frac.is_zero() {
        krw(int)
    } else {
        let f = frac.abs().to_string();
        format!("{}{}", krw(int), f.trim_start_matches('0'))
    }
}

/// Terminal columns: Hangul and other East Asian wide characters take two.
fn columns(s: &str) -> usize {
    s.chars()
        .map(|c| match c as u32 {
            0x1100..=0x115F
            | 0x2E80..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFF00..=0xFF60 => 2,
            _ => 1,
        })
        .sum()
}

fn row(out: &mut String, label: &str, amount: &str) {
    let pad = WIDTH
        .saturating_sub(columns(label) + columns(amount) + 2)
        .max(1);
    let _ = writeln!(out, "{label}{}{amount} 원", " ".repeat(pad));
}

pub(super) fn render(q: &Quote) -> String {
    let mut out = String::new();
    let rule = "─".repeat(WIDTH);
    let _ = writeln!(out, "수도요금 계산서 Water bill — {}", q.city);
    let _ = writeln!(
        out,
        "요금표 Tariff version: {}   사용월 Period: {}",
        q.tariff_version,
        q.period.map_or("latest".to_string(), |p| p.to_string())
    );
    let _ = writeln!(out, "사용량 Usage: {} m³", krw(i64::from(q.usage_m3)));
    let _ = writeln!(out, "{rule}");
    for line in &q.lines {
        row(&mut out, &line.label, &krw(line.amount_krw));
        let e = &line.explanation;
        for b in &e.blocks {
            let range = match b.to_m3 {
                Some(to) => format!("{}–{} m³", b.from_m3, to),
                None => format!("{}+ m³", b.from_m3),
            };
            let _ = writeln!(
                out,
                "    {} {range}: {} m³ × {} = {}",
                b.usage_type,
                krw(b.m3 as i64),
                decimal(b.rate_krw),
                decimal(b.amount_krw)
            );
        }
        match line.component {
            Component::Levy => {
                let _ = writeln!(
                    out,
                    "    {} m³ × {} = {}",
                    krw(e.usage_m3 as i64),
                    decimal(e.rate.unwrap_or_default()),
                    decimal(e.raw_krw)
                );
            }
            Component::Water | Component::Sewer | Component::Base | Component::Reduction => {}
        }
        if let Some(p) = e.proration {
            let _ = writeln!(
                out,
                "    prorated {}/{} days → {}",
                p.days,
                p.period_days,
                decimal(e.raw_krw)
            );
        }
        if Decimal::from(line.amount_krw) != e.raw_krw {
            let _ = writeln!(
                out,
                "    {} → {} ({})",
                decimal(e.raw_krw),
                krw(line.amount_krw),
                e.rounding
            );
        }
        for n in &e.notes {
            let _ = writeln!(out, "    {n}");
        }
    }
    let _ = writeln!(out, "{rule}");
    row(&mut out, "합계 Total", &krw(q.total_krw));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(krw(0), "0");
        assert_eq!(krw(999), "999");
        assert_eq!(krw(48940), "48,940");
        assert_eq!(krw(-1234567), "-1,234,567");
        assert_eq!(decimal(Decimal::new(1489, 1)), "148.9");
        assert_eq!(decimal(Decimal::new(12345675, 3)), "12,345.675");
    }
}
