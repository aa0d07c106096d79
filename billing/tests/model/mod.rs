//! The ledger's in-memory model: the same pure functions as the SQL shell
//! (`billing::ledger::store`), over state kept in vectors instead of tables.
//! The invariant tests run thousands of generated histories through it and
//! check the database against it. Test code only: production never posts
//! through it, and it must never do IO.

use billing::ledger::{
    adjustment_entry, bill_entry, bill_key, close_cancelled_entry, credit_entry, expand_open,
    payment_entry, reversal_entry, BillAmounts, EntryDraft, LedgerAccount, LedgerError, OpenItem,
    Part, PaymentRequest, Posting, Source,
};
use chrono::NaiveDate;
use std::collections::{BTreeMap, HashMap};

/// A bill as the model tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelBill {
    pub amounts: BillAmounts,
    pub cancelled: bool,
    pub rebill_of: Option<i64>,
}

/// The in-memory ledger the SQL implements: the same pure functions over
/// state kept in vectors instead of tables.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub entries: Vec<EntryDraft>,
    keys: HashMap<String, usize>,
    pub bills: BTreeMap<i64, ModelBill>,
}

impl Ledger {
    /// Appends an entry unless its key is known: same content returns the
    /// first entry's index (`false`: nothing new), different content is refused.
    pub fn post(&mut self, e: EntryDraft) -> Result<(usize, bool), LedgerError> {
        if !e.balances() {
            return Err(LedgerError::Unbalanced(e.key));
        }
        if let Some(&i) = self.keys.get(&e.key) {
            return if self.entries[i].content_hash == e.content_hash {
                Ok((i, false))
            } else {
                Err(LedgerError::KeyConflict(e.key))
            };
        }
        self.keys.insert(e.key.clone(), self.entries.len());
        self.entries.push(e);
        Ok((self.entries.len() - 1, true))
    }

    fn postings(&self) -> impl Iterator<Item = &Posting> {
        self.entries.iter().flat_map(|e| e.postings.iter())
    }

    /// Balance per ledger account (debit positive).
    pub fn trial_balance(&self) -> BTreeMap<LedgerAccount, i64> {
        let mut tb: BTreeMap<LedgerAccount, i64> =
            LedgerAccount::ALL.iter().map(|&a| (a, 0)).collect();
        for p in self.postings() {
            *tb.entry(p.account).or_default() += p.amount_krw;
        }
        tb
    }

    /// A customer's open items (non-zero receivable per bill and part).
    pub fn open_items(&self, party: &str) -> Vec<OpenItem> {
        let mut bills: Vec<i64> = self
            .postings()
            .filter(|p| p.account == LedgerAccount::Receivable && p.party.as_deref() == Some(party))
            .filter_map(|p| p.bill_id)
            .collect();
        bills.sort_unstable();
        bills.dedup();
        let mut out = Vec::new();
        for bill_id in bills {
            let Some(b) = self.bills.get(&bill_id) else {
                continue;
            };
            for (part, open_krw) in self.bill_open(bill_id) {
                if open_krw != 0 {
                    out.push(OpenItem {
                        bill_id,
                        period: b.amounts.period,
                        part,
                        open_krw,
                    });
                }
            }
        }
        out
    }

    /// Open receivable of one bill, per part (all four, in allocation order).
    pub fn bill_open(&self, bill_id: i64) -> Vec<(Part, i64)> {
        let Some(b) = self.bills.get(&bill_id) else {
            return Vec::new();
        };
        let mut whole = 0;
        let mut by_part = Vec::new();
        for p in self.postings() {
            if p.account == LedgerAccount::Receivable && p.bill_id == Some(bill_id) {
                match p.part {
                    Some(part) => by_part.push((part, p.amount_krw)),
                    None => whole += p.amount_krw,
                }
            }
        }
        expand_open(&b.amounts, whole, &by_part).to_vec()
    }

    /// A customer's credit balance (what the city owes them).
    pub fn credit(&self, party: &str) -> i64 {
        -self
            .postings()
            .filter(|p| {
                p.account == LedgerAccount::CustomerCredit && p.party.as_deref() == Some(party)
            })
            .map(|p| p.amount_krw)
            .sum::<i64>()
    }

    fn apply_credit(&mut self, party: &str, key: String, on: NaiveDate) -> Result<(), LedgerError> {
        let open = self.open_items(party);
        if let Some(e) = credit_entry(party, self.credit(party), &open, key, on) {
            self.post(e)?;
        }
        Ok(())
    }

    /// Posts an issued bill, then applies the customer's credit.
    pub fn issue_bill(&mut self, b: BillAmounts, source: Source) -> Result<(), LedgerError> {
        let id = b.bill_id;
        let party = b.account_no.clone();
        let on = b.bill_date();
        self.post(bill_entry(&b, source))?;
        self.bills.entry(id).or_insert(ModelBill {
            amounts: b,
            cancelled: false,
            rebill_of: None,
        });
        self.apply_credit(&party, format!("credit:bill:{id}"), on)
    }

    /// Records a payment: allocated oldest bill first, the rest to credit.
    pub fn pay(&mut self, p: &PaymentRequest) -> Result<bool, LedgerError> {
        if p.amount_krw <= 0 {
            return Err(LedgerError::Amount(p.amount_krw));
        }
        let open = self.open_items(&p.account_no);
        Ok(self.post(payment_entry(p, &open))?.1)
    }

    /// Cancels an issued bill: the exact reversal of its entry, payments on it
    /// moved to credit, and that credit applied to other open bills.
    pub fn cancel(&mut self, bill_id: i64, on: NaiveDate) -> Result<(), LedgerError> {
        let bill = self
            .bills
            .get(&bill_id)
            .ok_or(LedgerError::NoBill(bill_id))?;
        if bill.cancelled {
            return Err(LedgerError::NotIssued(bill_id, "cancelled".into()));
        }
        let party = bill.amounts.account_no.clone();
        let original = self
            .keys
            .get(&bill_key(bill_id))
            .map(|&i| self.entries[i].clone())
            .ok_or(LedgerError::NoBill(bill_id))?;
        self.post(reversal_entry(
            &original,
            format!("cancel:{bill_id}"),
            on,
            format!("cancellation of bill {bill_id}"),
        ))?;
        let open = self.bill_open(bill_id);
        let adjusted: i64 = self
            .entries
            .iter()
            .filter(|e| e.source == Source::Adjustment)
            .flat_map(|e| e.postings.iter())
            .filter(|p| p.account == LedgerAccount::Receivable && p.bill_id == Some(bill_id))
            .map(|p| p.amount_krw)
            .sum();
        if let Some(e) = close_cancelled_entry(
            &party,
            bill_id,
            &open,
            adjusted,
            format!("cancel:{bill_id}:close"),
            on,
        ) {
            self.post(e)?;
        }
        if let Some(b) = self.bills.get_mut(&bill_id) {
            b.cancelled = true;
        }
        self.apply_credit(&party, format!("credit:cancel:{bill_id}"), on)
    }

    /// Cancels `old` and issues `new` in its place.
    pub fn rebill(&mut self, old: i64, new: BillAmounts, on: NaiveDate) -> Result<(), LedgerError> {
        self.cancel(old, on)?;
        let id = new.bill_id;
        self.issue_bill(new, Source::Rebill)?;
        if let Some(b) = self.bills.get_mut(&id) {
            b.rebill_of = Some(old);
        }
        Ok(())
    }

    /// Adjusts one part of an issued bill (idempotent on `key`).
    pub fn adjust(
        &mut self,
        bill_id: i64,
        part: Part,
        amount_krw: i64,
        key: &str,
        on: NaiveDate,
    ) -> Result<bool, LedgerError> {
        let bill = self
            .bills
            .get(&bill_id)
            .ok_or(LedgerError::NoBill(bill_id))?;
        if bill.cancelled {
            return Err(LedgerError::NotIssued(bill_id, "cancelled".into()));
        }
        let party = bill.amounts.account_no.clone();
        let key = format!("adjust:{key}");
        if !self.keys.contains_key(&key) {
            let open = self
                .bill_open(bill_id)
                .into_iter()
                .find(|(p, _)| *p == part)
                .map_or(0, |(_, v)| v);
            if open + amount_krw < 0 {
                return Err(LedgerError::OverAdjusted {
                    bill_id,
                    part: part.as_str(),
                    amount_krw,
                    open_krw: open,
                });
            }
        }
        let e = adjustment_entry(
            &party,
            bill_id,
            part,
            amount_krw,
            key.clone(),
            "adjustment",
            on,
        );
        let (_, new) = self.post(e)?;
        if new {
            self.apply_credit(&party, format!("credit:{key}"), on)?;
        }
        Ok(new)
    }

    /// Sum of open balances of bills not cancelled.
    pub fn open_bills_total(&self) -> i64 {
        self.bills
            .keys()
            .map(|&id| self.bill_open(id).iter().map(|(_, v)| v).sum::<i64>())
            .sum()
    }
}
