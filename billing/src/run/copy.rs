//! COPY text encoding: a computed bill rendered once into its row of
//! `billing.bills` in PostgreSQL's COPY text format ([`PreparedBill`]), and a
//! chunk of them numbered and given their ids for the commit. Pure: the
//! commit (`commit.rs`) sends what is rendered here; nothing here does IO.

use super::{ComputedBill, COMPONENTS};
use crate::period::Period;

/// A bill ready to commit: what the outcome counts, and its row in COPY text
/// format from the `hold_reasons` column on (number and status come at commit).
#[derive(Debug, Clone)]
pub struct PreparedBill {
    pub account_no: String,
    pub usage_type: String,
    pub usage_m3: i64,
    pub estimated: bool,
    pub hold_reasons: Vec<String>,
    /// Per component (water, sewer, base, levy, reduction): the sum of its
    /// lines, `None` when the bill has no such line.
    pub components: [Option<i64>; 5],
    pub total_krw: i64,
    pub(super) copy_tail: String,
}

impl PreparedBill {
    /// `with_copy`: also render the row for COPY (not needed by dry runs).
    pub fn new(b: &ComputedBill, with_copy: bool) -> PreparedBill {
        let lines = b.quote.as_ref().map_or(&[][..], |q| &q.lines[..]);
        let components = COMPONENTS.map(|c| {
            lines
                .iter()
                .any(|l| l.component == c)
                .then(|| b.component_krw(c))
        });
        let mut copy_tail = String::new();
        if with_copy {
            use std::fmt::Write;
            let out = &mut copy_tail;
            copy_field(out, &pg_text_array(&b.hold_reasons));
            out.push('\t');
            copy_field(out, &b.usage_type);
            let _ = write!(
                out,
                "\t{}\t{}\t",
                b.usage.usage_m3,
                if b.usage.estimated { 't' } else { 'f' }
            );
            copy_field(
                out,
                b.quote.as_ref().map_or("", |q| q.tariff_version.as_str()),
            );
            for c in components {
                let _ = write!(out, "\t{}", c.unwrap_or(0));
            }
            let _ = write!(out, "\t{}\t", b.total_krw());
            copy_field(
                out,
                &serde_json::to_string(&b.usage.legs).unwrap_or_default(),
            );
            out.push('\t');
            copy_field(out, &serde_json::to_string(lines).unwrap_or_default());
            out.push('\t');
            copy_field(out, &b.input_hash);
            out.push('\n');
        }
        PreparedBill {
            account_no: b.account_no.clone(),
            usage_type: b.usage_type.clone(),
            usage_m3: b.usage.usage_m3,
            estimated: b.usage.estimated,
            hold_reasons: b.hold_reasons.clone(),
            components,
            total_krw: b.total_krw(),
            copy_tail,
        }
    }

    pub fn held(&self) -> bool {
        !self.hold_reasons.is_empty()
    }
}

/// Appends `field` to a COPY text-format line, escaped. Runs of bytes that
/// need no escape are copied whole (a run escapes about 1.5 kB per bill).
pub(crate) fn copy_field(out: &mut String, field: &str) {
    let mut start = 0;
    for (i, b) in field.bytes().enumerate() {
        let escaped = match b {
            b'\\' => "\\\\",
            b'\t' => "\\t",
            b'\n' => "\\n",
            b'\r' => "\\r",
            _ => continue,
        };
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(&field[start..i]);
        out.push_str(escaped);
        start = i + 1;
    }
    out.push_str(&field[start..]);
}

/// A PostgreSQL array literal of text (`{"a","b \\"c\\""}`).
fn pg_text_array(items: &[String]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// The columns a commit COPYs into `billing.bills`, in order.
pub(super) const COPY_COLUMNS: &str =
    "period, account_no, run_id, bill_no, status, hold_reasons, usage_type, \
     usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, reduction_krw, \
     total_krw, legs, lines, input_hash";

/// The columns a run chunk COPYs into `billing.bills`: its ids are drawn
/// from the table's sequence first, so the chunk's ledger entries are built
/// from what the run holds instead of reading the bills back.
pub(super) const CHUNK_COPY_COLUMNS: &str =
    "bill_id, period, account_no, run_id, bill_no, status, hold_reasons, \
     usage_type, usage_m3, estimated, tariff_version, water_krw, sewer_krw, base_krw, levy_krw, \
     reduction_krw, total_krw, legs, lines, input_hash";

/// The COPY text of `fresh` bills with ids `ids`, issued ones numbered after
/// `start`; with the issued bills' amounts and entry ids, for the ledger.
pub(super) fn render_bills(
    fresh: &[&PreparedBill],
    ids: &[(i64, i64)],
    period: &Period,
    run_id: i64,
    start: i64,
) -> (String, Vec<crate::ledger::BillAmounts>, Vec<i64>) {
    use std::fmt::Write;
    let mut text = String::with_capacity(fresh.len() * 1_700);
    let mut head = String::new();
    copy_field(&mut head, &period.to_string());
    let mut issued = Vec::with_capacity(fresh.len());
    let mut entry_ids = Vec::with_capacity(fresh.len());
    let mut last = start;
    for (b, (id, entry_id)) in fresh.iter().zip(ids) {
        let _ = write!(text, "{id}\t");
        text.push_str(&head);
        text.push('\t');
        copy_field(&mut text, &b.account_no);
        let _ = write!(text, "\t{run_id}\t");
        if b.held() {
            text.push_str("\\N\theld\t");
        } else {
            last += 1;
            let _ = write!(text, "{last}\tissued\t");
            let [water_krw, sewer_krw, base_krw, levy_krw, reduction_krw] =
                b.components.map(|c| c.unwrap_or(0));
            issued.push(crate::ledger::BillAmounts {
                bill_id: *id,
                account_no: b.account_no.clone(),
                period: *period,
                water_krw,
                base_krw,
                sewer_krw,
                levy_krw,
                reduction_krw,
            });
            entry_ids.push(*entry_id);
        }
        text.push_str(&b.copy_tail);
    }
    (text, issued, entry_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut out = String::new();
        copy_field(&mut out, "a\tb\nc\\d\re");
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        out.clear();
        copy_field(&mut out, "상수도\t요금\\");
        assert_eq!(out, "상수도\\t요금\\\\");
        assert_eq!(
            pg_text_array(&["x \"y\"".into(), "z\\".into()]),
            "{\"x \\\"y\\\"\",\"z\\\\\"}"
        );
        assert_eq!(pg_text_array(&[]), "{}");
    }
}
