-- Nothing looks entries up by bill id alone (a bill's entries are found by
-- their keys, or through the customer's postings), and a billing run writes
-- one entry per bill: the index was pure cost.
DROP INDEX billing.journal_entries_bill_idx;
