-- Every run chunk asks which of its (20,000) customers hold credit, to apply
-- it to their new bills. Through the customer index that is one probe per
-- customer into an index of every receivable posting (a million per monthly
-- run, growing); credit postings are rare (over-payments), so a partial index
-- of them alone answers each probe from a page or two, and costs the ledger's
-- bulk inserts nothing.
CREATE INDEX postings_credit_idx ON billing.postings (party) WHERE ledger_account = '2200';
