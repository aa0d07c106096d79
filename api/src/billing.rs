//! The billing service's contract: bills, billing runs, the ledger, accounts,
//! payments, reports and the public fee quote.
