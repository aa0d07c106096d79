-- A bill's entry now debits receivables once for the whole bill (no part);
-- the part split is the bill's own (see billing::ledger::expand_open). Payments,
-- credit and adjustments still name a part.
ALTER TABLE billing.postings DROP CONSTRAINT postings_check;
ALTER TABLE billing.postings ADD CONSTRAINT postings_receivable_check
    CHECK (ledger_account <> '1100' OR (bill_id IS NOT NULL AND party IS NOT NULL));
