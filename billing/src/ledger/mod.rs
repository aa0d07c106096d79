//! The water supply special account's double-entry ledger: the pure core.
//!
//! Everything that decides *what* is posted lives here, free of IO: the chart
//! of accounts, a bill's entry by component, payment allocation, credit
//! application, reversals. [`store`] is the thin SQL shell that loads the
//! state these functions need (open items, credit balances) and appends their
//! output. The in-memory model the invariant tests check the SQL against lives
//! with those tests (`billing/tests/model`), not here. This module must never
//! do IO nor mutate a posted entry.
//!
//! Sign convention: a posting's `amount_krw` is positive for a debit, negative
//! for a credit; an entry's postings sum to zero.
//!
//! Receivables are kept per bill and per part ([`Part`]): the bill's water,
//! base, sewer and levy amounts, with any reduction netted off water first,
//! then base, sewer, levy. A bill's own entry debits the whole bill in one
//! posting; [`expand_open`] splits it by those parts. The base charge is credited to its own revenue
//! account (4110), not to water revenue. Payments are allocated to the
//! customer's open bills oldest first (by period, then bill id) and within a
//! bill in [`Part::ALLOCATION_ORDER`]: levy (held in trust for the river-basin
//! fund), sewer, base, water. What is left over becomes customer credit, which
//! is applied to the customer's next bill when it is posted.

pub mod store;

use crate::period::Period;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The chart of accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccount {
    Cash,
    Receivable,
    LevyPayable,
    CustomerCredit,
    WaterRevenue,
    BaseRevenue,
    SewerRevenue,
    Adjustments,
    Reductions,
}

impl LedgerAccount {
    pub const ALL: [LedgerAccount; 9] = [
        LedgerAccount::Cash,
        LedgerAccount::Receivable,
        LedgerAccount::LevyPayable,
        LedgerAccount::CustomerCredit,
        LedgerAccount::WaterRevenue,
        LedgerAccount::BaseRevenue,
        LedgerAccount::SewerRevenue,
        LedgerAccount::Adjustments,
        LedgerAccount::Reductions,
    ];

    /// The code in `billing.ledger_accounts`.
    pub fn code(self) -> &'static str {
        match self {
            LedgerAccount::Cash => "1010",
            LedgerAccount::Receivable => "1100",
            LedgerAccount::LevyPayable => "2100",
            LedgerAccount::CustomerCredit => "2200",
            LedgerAccount::WaterRevenue => "4100",
            LedgerAccount::BaseRevenue => "4110",
            LedgerAccount::SewerRevenue => "4200",
            LedgerAccount::Adjustments => "4800",
            LedgerAccount::Reductions => "4900",
        }
    }

    pub fn from_code(code: &str) -> Option<LedgerAccount> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            LedgerAccount::Cash => "Cash (collection account)",
            LedgerAccount::Receivable => "Receivables (customers)",
            LedgerAccount::LevyPayable => "Water use levy payable (river-basin fund)",
            LedgerAccount::CustomerCredit => "Customer credit (over-payments)",
            LedgerAccount::WaterRevenue => "Water charge revenue",
            LedgerAccount::BaseRevenue => "Base charge revenue",
            LedgerAccount::SewerRevenue => "Sewer charge revenue",
            LedgerAccount::Adjustments => "Adjustments",
            LedgerAccount::Reductions => "Reductions granted",
        }
    }
}

/// A part of a bill's receivable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Levy,
    Sewer,
    Base,
    Water,
}

impl Part {
    /// Within a bill, payments settle parts in this order.
    pub const ALLOCATION_ORDER: [Part; 4] = [Part::Levy, Part::Sewer, Part::Base, Part::Water];
    /// A reduction is netted off the parts in this order.
    pub const REDUCTION_ORDER: [Part; 4] = [Part::Water, Part::Base, Part::Sewer, Part::Levy];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Levy => "levy",
            Part::Sewer => "sewer",
            Part::Base => "base",
            Part::Water => "water",
        }
    }

    pub fn parse(s: &str) -> Option<Part> {
        Self::ALLOCATION_ORDER.into_iter().find(|p| p.as_str() == s)
    }
}

/// One line of an entry: positive debits, negative credits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Posting {
    pub account: LedgerAccount,
    /// Receivable postings: the bill and part.
    pub bill_id: Option<i64>,
    pub part: Option<Part>,
    /// Receivable and customer-credit postings: the customer's account number.
    pub party: Option<String>,
    pub amount_krw: i64,
}

impl Posting {
    fn plain(account: LedgerAccount, amount_krw: i64) -> Posting {
        Posting {
            account,
            bill_id: None,
            part: None,
            party: None,
            amount_krw,
        }
    }
    fn receivable(party: &str, bill_id: i64, part: Part, amount_krw: i64) -> Posting {
        Posting {
            account: LedgerAccount::Receivable,
            bill_id: Some(bill_id),
            part: Some(part),
            party: Some(party.to_string()),
            amount_krw,
        }
    }
    fn credit(party: &str, amount_krw: i64) -> Posting {
        Posting {
            account: LedgerAccount::CustomerCredit,
            bill_id: None,
            part: None,
            party: Some(party.to_string()),
            amount_krw,
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Bill,
    Payment,
    Cancellation,
    Rebill,
    Adjustment,
    Credit,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Bill => "bill",
            Source::Payment => "payment",
            Source::Cancellation => "cancellation",
            Source::Rebill => "rebill",
            Source::Adjustment => "adjustment",
            Source::Credit => "credit",
        }
    }
}

/// An entry not yet posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryDraft {
    pub source: Source,
    /// Idempotency key: the same key with the same content returns the first
    /// entry; with different content it is refused.
    pub key: String,
    /// What "same content" means: a hash of the request for payments, of the
    /// postings otherwise.
    pub content_hash: String,
    pub bill_id: Option<i64>,
    pub party: Option<String>,
    pub effective_on: NaiveDate,
    pub memo: String,
    pub postings: Vec<Posting>,
}

impl EntryDraft {
    /// An entry whose content is its postings (sorted: order is not content).
    pub fn new(
        source: Source,
        key: String,
        bill_id: Option<i64>,
        party: Option<&str>,
        effective_on: NaiveDate,
        memo: String,
        mut postings: Vec<Posting>,
    ) -> EntryDraft {
        postings.retain(|p| p.amount_krw != 0);
        let content_hash = content_hash(source, bill_id, party, &postings);
        EntryDraft {
            source,
            key,
            content_hash,
            bill_id,
            party: party.map(str::to_string),
            effective_on,
            memo,
            postings,
        }
    }

    pub fn balances(&self) -> bool {
        self.postings.iter().map(|p| p.amount_krw).sum::<i64>() == 0
    }
}

/// SHA-256 of an entry's canonical text (source, bill, party, postings in
/// sorted order): order is not content. Hand-written rather than JSON because
/// a billing run hashes a million of these.
fn content_hash(
    source: Source,
    bill_id: Option<i64>,
    party: Option<&str>,
    postings: &[Posting],
) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&Posting> = postings.iter().collect();
    sorted.sort();
    let mut text = String::with_capacity(64 + 48 * sorted.len());
    let _ = write!(text, "{}|{bill_id:?}|{party:?}", source.as_str());
    for p in sorted {
        let _ = write!(
            text,
            "|{},{:?},{:?},{:?},{}",
            p.account.code(),
            p.bill_id,
            p.part.map(Part::as_str),
            p.party,
            p.amount_krw
        );
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// SHA-256 of a value's JSON, hex.
pub fn hash_of(v: &impl Serialize) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).unwrap_or_default()))
}

/// A bill's amounts as the ledger needs them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillAmounts {
    pub bill_id: i64,
    pub account_no: String,
    pub period: Period,
    pub water_krw: i64,
    pub base_krw: i64,
    pub sewer_krw: i64,
    pub levy_krw: i64,
    /// Zero or negative.
    pub reduction_krw: i64,
}

impl BillAmounts {
    pub fn total_krw(&self) -> i64 {
        self.water_krw + self.base_krw + self.sewer_krw + self.levy_krw + self.reduction_krw
    }

    /// The bill's date: the first day after its period (ageing counts from it).
    pub fn bill_date(&self) -> NaiveDate {
        self.period.next().first_day()
    }

    /// The receivable per part, the reduction netted off in
    /// [`Part::REDUCTION_ORDER`]; sums to the bill's total.
    pub fn receivable_parts(&self) -> [(Part, i64); 4] {
        let mut parts = [
            (Part::Water, self.water_krw),
            (Part::Base, self.base_krw),
            (Part::Sewer, self.sewer_krw),
            (Part::Levy, self.levy_krw),
        ];
        let mut left = -self.reduction_krw.min(0);
        for (_, amount) in parts.iter_mut() {
            let take = left.min((*amount).max(0));
            *amount -= take;
            left -= take;
        }
        // A reduction larger than the bill (never from the tariff engine)
        // leaves water negative rather than losing a won.
        parts[0].1 -= left;
        parts
    }
}

/// The entry a posted bill makes: receivable by part against water revenue,
/// base revenue, sewer revenue and levy payable; a reduction is debited to
/// "reductions granted".
pub fn bill_entry(b: &BillAmounts, source: Source) -> EntryDraft {
    // One whole-bill receivable posting (no part): it stands for the bill's
    // `receivable_parts` (see [`expand_open`]). A run writes millions of
    // these, and one posting instead of four is most of the ledger's cost.
    let mut postings = vec![Posting {
        account: LedgerAccount::Receivable,
        bill_id: Some(b.bill_id),
        part: None,
        party: Some(b.account_no.clone()),
        amount_krw: b.total_krw(),
    }];
    postings.push(Posting::plain(LedgerAccount::WaterRevenue, -b.water_krw));
    postings.push(Posting::plain(LedgerAccount::BaseRevenue, -b.base_krw));
    postings.push(Posting::plain(LedgerAccount::SewerRevenue, -b.sewer_krw));
    postings.push(Posting::plain(LedgerAccount::LevyPayable, -b.levy_krw));
    postings.push(Posting::plain(LedgerAccount::Reductions, -b.reduction_krw));
    EntryDraft::new(
        source,
        bill_key(b.bill_id),
        Some(b.bill_id),
        Some(&b.account_no),
        b.bill_date(),
        format!("bill {} {} {}", b.bill_id, b.period, b.account_no),
        postings,
    )
}

/// A bill's open amount per part, in [`Part::ALLOCATION_ORDER`], from its
/// receivable postings: `whole_krw` is the sum of its whole-bill postings (the
/// bill's total while posted, 0 once reversed), which stands for the bill's
/// [`BillAmounts::receivable_parts`]; `by_part` sums the postings that name a
/// part (payments, credit, adjustments).
pub fn expand_open(b: &BillAmounts, whole_krw: i64, by_part: &[(Part, i64)]) -> [(Part, i64); 4] {
    let total = b.total_krw();
    let (times, rest) = if total == 0 {
        (0, whole_krw)
    } else {
        (whole_krw / total, whole_krw % total)
    };
    let parts = b.receivable_parts();
    Part::ALLOCATION_ORDER.map(|part| {
        let whole = parts
            .iter()
            .find(|(p, _)| *p == part)
            .map_or(0, |(_, v)| v * times);
        // Never from this code (whole is the total or 0); kept, not lost.
        let odd = if part == Part::Water { rest } else { 0 };
        let named: i64 = by_part
            .iter()
            .filter(|(p, _)| *p == part)
            .map(|(_, v)| v)
            .sum();
        (part, whole + odd + named)
    })
}

pub fn bill_key(bill_id: i64) -> String {
    format!("bill:{bill_id}")
}

/// An open amount of one part of one bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenItem {
    pub bill_id: i64,
    pub period: Period,
    pub part: Part,
    pub open_krw: i64,
}

fn part_rank(p: Part) -> usize {
    Part::ALLOCATION_ORDER
        .iter()
        .position(|&q| q == p)
        .unwrap_or(0)
}

/// Splits `amount_krw` over the open items: oldest bill first (period, then
/// bill id), within a bill in [`Part::ALLOCATION_ORDER`]. Returns the
/// allocations and what is left over.
pub fn allocate(items: &[OpenItem], amount_krw: i64) -> (Vec<(OpenItem, i64)>, i64) {
    let mut sorted: Vec<&OpenItem> = items.iter().filter(|i| i.open_krw > 0).collect();
    sorted.sort_by_key(|i| (i.period, i.bill_id, part_rank(i.part)));
    let mut left = amount_krw.max(0);
    let mut out = Vec::new();
    for item in sorted {
        if left == 0 {
            break;
        }
        let take = left.min(item.open_krw);
        out.push((item.clone(), take));
        left -= take;
    }
    (out, left)
}

/// A payment as recorded (from the API or a bank file line).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The bank's reference: the payment's idempotency key.
    pub reference: String,
    pub account_no: String,
    pub amount_krw: i64,
    pub paid_on: NaiveDate,
}

pub fn payment_key(reference: &str) -> String {
    format!("payment:{reference}")
}

/// Cash against the customer's open receivables; the remainder to credit.
pub fn payment_entry(p: &PaymentRequest, open: &[OpenItem]) -> EntryDraft {
    let (alloc, left) = allocate(open, p.amount_krw);
    let mut postings = vec![Posting::plain(LedgerAccount::Cash, p.amount_krw)];
    for (item, take) in alloc {
        postings.push(Posting::receivable(
            &p.account_no,
            item.bill_id,
            item.part,
            -take,
        ));
    }
    postings.push(Posting::credit(&p.account_no, -left));
    let mut e = EntryDraft::new(
        Source::Payment,
        payment_key(&p.reference),
        None,
        Some(&p.account_no),
        p.paid_on,
        format!("payment {} from {}", p.reference, p.account_no),
        postings,
    );
    // The same request is the same payment, whatever the open items now.
    e.content_hash = hash_of(p);
    e
}

/// Applies a customer's credit to their open bills (oldest first); `None` when
/// there is no credit or nothing open.
pub fn credit_entry(
    party: &str,
    credit_krw: i64,
    open: &[OpenItem],
    key: String,
    on: NaiveDate,
) -> Option<EntryDraft> {
    if credit_krw <= 0 {
        return None;
    }
    let (alloc, left) = allocate(open, credit_krw);
    let used = credit_krw - left;
    if used == 0 {
        return None;
    }
    let mut postings = vec![Posting::credit(party, used)];
    for (item, take) in alloc {
        postings.push(Posting::receivable(party, item.bill_id, item.part, -take));
    }
    Some(EntryDraft::new(
        Source::Credit,
        key,
        None,
        Some(party),
        on,
        format!("credit of {party} applied"),
        postings,
    ))
}

/// The exact mirror of an entry: every posting negated.
pub fn reversal_entry(
    original: &EntryDraft,
    key: String,
    on: NaiveDate,
    memo: String,
) -> EntryDraft {
    let postings = original
        .postings
        .iter()
        .map(|p| Posting {
            amount_krw: -p.amount_krw,
            ..p.clone()
        })
        .collect();
    EntryDraft::new(
        Source::Cancellation,
        key,
        original.bill_id,
        original.party.as_deref(),
        on,
        memo,
        postings,
    )
}

/// After a cancelled bill's reversal, what is left on the bill closes it:
/// the adjustments made to it (`adjusted_krw`, their receivable total) are
/// reversed against "adjustments", and what was paid on it (payments and
/// credit applied) moves to the customer's credit.
pub fn close_cancelled_entry(
    party: &str,
    bill_id: i64,
    open_after_reversal: &[(Part, i64)],
    adjusted_krw: i64,
    key: String,
    on: NaiveDate,
) -> Option<EntryDraft> {
    let mut postings = Vec::new();
    let mut open_total = 0;
    for &(part, open) in open_after_reversal {
        postings.push(Posting::receivable(party, bill_id, part, -open));
        open_total += open;
    }
    let paid = adjusted_krw - open_total;
    postings.push(Posting::plain(LedgerAccount::Adjustments, adjusted_krw));
    postings.push(Posting::credit(party, -paid));
    let e = EntryDraft::new(
        Source::Cancellation,
        key,
        Some(bill_id),
        Some(party),
        on,
        format!("cancelled bill {bill_id} closed: adjustments reversed, payments kept as credit"),
        postings,
    );
    (!e.postings.is_empty()).then_some(e)
}

/// A clerk's adjustment of one part of a bill: positive raises the
/// receivable (against "adjustments"), negative lowers it.
pub fn adjustment_entry(
    party: &str,
    bill_id: i64,
    part: Part,
    amount_krw: i64,
    key: String,
    reason: &str,
    on: NaiveDate,
) -> EntryDraft {
    EntryDraft::new(
        Source::Adjustment,
        key,
        Some(bill_id),
        Some(party),
        on,
        reason.to_string(),
        vec![
            Posting::receivable(party, bill_id, part, amount_krw),
            Posting::plain(LedgerAccount::Adjustments, -amount_krw),
        ],
    )
}

/// Why the ledger refused something.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    #[error("idempotency key {0:?} was already used with different content")]
    KeyConflict(String),
    #[error("entry {0:?} does not balance")]
    Unbalanced(String),
    #[error("no bill {0}")]
    NoBill(i64),
    #[error("bill {0} is {1}, not issued")]
    NotIssued(i64, String),
    #[error("adjustment of bill {bill_id} {part}: {amount_krw} KRW would leave {open_krw} KRW open negative")]
    OverAdjusted {
        bill_id: i64,
        part: &'static str,
        amount_krw: i64,
        open_krw: i64,
    },
    #[error("amount must be a positive number of KRW, not {0}")]
    Amount(i64),
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bill(id: i64, party: &str, period: &str, w: i64, r: i64) -> BillAmounts {
        BillAmounts {
            bill_id: id,
            account_no: party.into(),
            period: period.parse().unwrap(),
            water_krw: w,
            base_krw: 860,
            sewer_krw: 4_000,
            levy_krw: 1_700,
            reduction_krw: r,
        }
    }

    #[test]
    fn a_bill_entry_balances_and_nets_the_reduction_off_water_first() {
        let b = bill(1, "A", "2026-10", 5_000, -6_000);
        let parts = b.receivable_parts();
        assert_eq!(parts[0], (Part::Water, 0));
        assert_eq!(parts[1], (Part::Base, 0));
        assert_eq!(parts[2], (Part::Sewer, 4_000 - 140));
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), b.total_krw());
        let e = bill_entry(&b, Source::Bill);
        assert!(e.balances());
        assert!(e.postings.iter().all(|p| p.amount_krw != 0));
    }
}
