-- A bill's run_id is written only by the run that creates it, in the same
-- session that created the run row. The foreign key's per-row check cost a
-- measurable share of a million-bill commit (COPY fires the RI trigger per
-- row), so integrity here is the run code's, and this index serves lookups.
ALTER TABLE billing.bills DROP CONSTRAINT bills_run_id_fkey;
CREATE INDEX bills_run_idx ON billing.bills (run_id);
