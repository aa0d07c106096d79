//! Pricing: from an account's loaded inputs to its computed bill (usage,
//! tariff quote, hold reasons, input hash). Pure: no IO, and identical inputs
//! always give an identical bill and hash.

use super::RunInputs;
use crate::accounts::BillableAccount;
use crate::period::Period;
use crate::tariff::{quote, Component, Quote, QuoteRequest, TariffBook};
use crate::usage::{account_usage, AccountUsage, HoldPolicy, PriorBill};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One account's bill, computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComputedBill {
    pub account_no: String,
    pub usage_type: String,
    pub usage: AccountUsage,
    /// `None` when the tariff could not price the account (the bill is held).
    pub quote: Option<Quote>,
    pub hold_reasons: Vec<String>,
    /// SHA-256 of everything the bill depends on.
    pub input_hash: String,
}

impl ComputedBill {
    pub fn held(&self) -> bool {
        !self.hold_reasons.is_empty()
    }

    pub fn component_krw(&self, c: Component) -> i64 {
        self.quote.as_ref().map_or(0, |q| q.component_krw(c))
    }

    pub fn total_krw(&self) -> i64 {
        self.quote.as_ref().map_or(0, |q| q.total_krw)
    }
}

#[derive(Serialize)]
struct HashInput<'a> {
    tariff_fingerprint: &'a str,
    period: Period,
    account: &'a crate::accounts::Account,
    reductions: &'a [String],
    legs: &'a [crate::usage::Leg],
}

/// Prices an account's usage: pure, identical inputs give an identical bill
/// and input hash.
pub fn compute_bill(
    book: &TariffBook,
    acct: &BillableAccount,
    period: &Period,
    usage: AccountUsage,
    leak_relief_prior_avg_m3: Option<u32>,
) -> ComputedBill {
    let a = &acct.account;
    let mut hold_reasons = usage.hold_reasons.clone();
    let req = QuoteRequest {
        usage_type: a.usage_type.clone(),
        diameter_mm: a.diameter_mm,
        usage_m3: u32::try_from(usage.usage_m3).unwrap_or(u32::MAX),
        households: a.households,
        sewer_connected: a.sewer_connected,
        levy_exempt: a.levy_exempt,
        period: Some(*period),
        reductions: acct.reductions.clone(),
        leak_relief_prior_avg_m3,
    };
    let quote = match quote(book, &req) {
        Ok(q) => Some(q),
        Err(e) => {
            hold_reasons.push(format!("cannot price: {e}"));
            None
        }
    };
    let hash = {
        let input = HashInput {
            tariff_fingerprint: book.fingerprint(),
            period: *period,
            account: a,
            reductions: &acct.reductions,
            legs: &usage.legs,
        };
        let bytes = serde_json::to_vec(&input).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    };
    ComputedBill {
        account_no: a.account_no.clone(),
        usage_type: a.usage_type.clone(),
        usage,
        quote,
        hold_reasons,
        input_hash: hash,
    }
}

/// Computes one account's bill from the loaded inputs: pure.
pub fn bill_account(
    book: &TariffBook,
    period: &Period,
    inputs: &RunInputs,
    acct: &BillableAccount,
    policy: &HoldPolicy,
) -> ComputedBill {
    let none = HashMap::new();
    let no = &acct.account.account_no;
    let usage = account_usage(
        book.usage_rule(),
        &acct.account,
        period,
        &inputs.reads,
        inputs.carry.get(no).unwrap_or(&none),
        inputs.history.get(no).map_or(&[][..], |h| &h[..]),
        policy,
    );
    // Leak relief: the prior average month, from up to three prior bills.
    let relief = inputs.leak_relief.contains(no).then(|| {
        let mut h: Vec<&PriorBill> = inputs
            .history
            .get(no)
            .map_or(Vec::new(), |h| h.iter().collect());
        h.sort_by_key(|b| std::cmp::Reverse(b.period));
        h.truncate(crate::usage::HISTORY_PERIODS);
        let total: i64 = h.iter().map(|b| b.usage_m3).sum();
        u32::try_from(total / (h.len().max(1) as i64)).unwrap_or(u32::MAX)
    });
    compute_bill(book, acct, period, usage, relief)
}

/// Computes the bills of the accounts not yet billed: pure.
pub fn compute_bills(
    book: &TariffBook,
    period: &Period,
    inputs: &RunInputs,
    policy: &HoldPolicy,
) -> Vec<ComputedBill> {
    inputs
        .to_bill()
        .map(|acct| bill_account(book, period, inputs, acct, policy))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::PeriodRead;
    use std::collections::HashSet;

    fn daejeon() -> TariffBook {
        TariffBook::from_toml(
            include_str!("../../../fixtures/tariffs/daejeon.toml"),
            "daejeon.toml",
        )
        .unwrap()
    }

    proptest::proptest! {
        /// Identical inputs give an identical bill and input hash; a change of
        /// any read changes the hash.
        #[test]
        fn identical_inputs_identical_bill_and_hash(
            start_l in 0i64..10_000_000, used_l in 0i64..500_000, households in 1u32..5,
        ) {
            let book = daejeon();
            let period: Period = "2026-10".parse().unwrap();
            let acct = BillableAccount {
                account: crate::accounts::Account {
                    account_no: "A1".into(),
                    customer: "c".into(),
                    address: "a".into(),
                    usage_type: "general".into(),
                    diameter_mm: 20,
                    households,
                    sewer_connected: true,
                    levy_exempt: false,
                    billing_group: "A".into(),
                    meters: vec![crate::accounts::MeterInstallation {
                        meter_id: "M1".into(),
                        installed_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                        removed_at: None,
                    }],
                },
                reductions: Vec::new(),
            };
            let read = |end_l: i64| RunInputs {
                accounts: vec![acct.clone()],
                existing: HashSet::new(),
                history: HashMap::new(),
                carry: HashMap::new(),
                leak_relief: HashSet::new(),
                reads: HashMap::from([("M1".to_string(), PeriodRead {
                    meter_id: "M1".into(),
                    start_ts: period.start_utc(),
                    start_volume_l: start_l,
                    end_ts: period.end_utc(),
                    end_volume_l: end_l,
                    reads: 2976,
                })]),
            };
            let policy = HoldPolicy::default();
            let a = compute_bills(&book, &period, &read(start_l + used_l), &policy);
            let b = compute_bills(&book, &period, &read(start_l + used_l), &policy);
            proptest::prop_assert_eq!(&a, &b);
            let c = compute_bills(&book, &period, &read(start_l + used_l + 1), &policy);
            proptest::prop_assert_ne!(&a[0].input_hash, &c[0].input_hash);
            // The bill's total is the sum of its lines.
            let q = a[0].quote.as_ref().unwrap();
            proptest::prop_assert_eq!(q.total_krw, q.lines.iter().map(|l| l.amount_krw).sum::<i64>());
        }
    }
}
