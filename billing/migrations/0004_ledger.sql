-- The water supply special account's double-entry ledger, payments,
-- corrections and the audit log. Append-only is enforced here, in the
-- database, twice: triggers refuse UPDATE, DELETE and TRUNCATE on every
-- ledger table (whoever asks, owner included), and the service's role
-- `waterworks_billing` is granted only SELECT and INSERT on them.

-- Bills: a cancelled bill keeps its number (numbers are never reused, so the
-- period stays gapless); a rebill is a new bill that names the one it replaces.
ALTER TABLE billing.bills DROP CONSTRAINT bills_status_check;
ALTER TABLE billing.bills ADD CONSTRAINT bills_status_check
    CHECK (status IN ('issued', 'held', 'cancelled'));
ALTER TABLE billing.bills DROP CONSTRAINT bills_check;
ALTER TABLE billing.bills ADD CONSTRAINT bills_numbered_check
    CHECK ((status IN ('issued', 'cancelled')) = (bill_no IS NOT NULL));
ALTER TABLE billing.bills ADD COLUMN rebill_of bigint;
ALTER TABLE billing.bills ADD COLUMN cancelled_at timestamptz;
-- One live (not cancelled) bill per account and period.
ALTER TABLE billing.bills DROP CONSTRAINT bills_period_account_no_key;
CREATE UNIQUE INDEX bills_live_idx ON billing.bills (period, account_no)
    WHERE status <> 'cancelled';
CREATE UNIQUE INDEX bills_rebill_of_idx ON billing.bills (rebill_of) WHERE rebill_of IS NOT NULL;

-- The chart of accounts. Amounts are integer KRW; a posting's amount is
-- positive for a debit and negative for a credit.
CREATE TABLE billing.ledger_accounts (
    code text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('asset', 'liability', 'revenue', 'contra_revenue'))
);
INSERT INTO billing.ledger_accounts (code, name, kind) VALUES
    ('1010', 'Cash (collection account)', 'asset'),
    ('1100', 'Receivables (customers)', 'asset'),
    ('2100', 'Water use levy payable (river-basin fund)', 'liability'),
    ('2200', 'Customer credit (over-payments)', 'liability'),
    ('4100', 'Water charge revenue', 'revenue'),
    ('4110', 'Base charge revenue', 'revenue'),
    ('4200', 'Sewer charge revenue', 'revenue'),
    ('4800', 'Adjustments', 'contra_revenue'),
    ('4900', 'Reductions granted', 'contra_revenue');

CREATE TABLE billing.journal_entries (
    entry_id      bigserial PRIMARY KEY,
    source        text NOT NULL
        CHECK (source IN ('bill', 'payment', 'cancellation', 'rebill', 'adjustment', 'credit')),
    -- Same key + same content returns the first entry; different content is refused.
    idem_key      text NOT NULL UNIQUE,
    content_hash  text NOT NULL,
    bill_id       bigint,
    party         text,
    effective_on  date NOT NULL,
    memo          text NOT NULL DEFAULT '',
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX journal_entries_bill_idx ON billing.journal_entries (bill_id) WHERE bill_id IS NOT NULL;

CREATE TABLE billing.postings (
    posting_id   bigserial PRIMARY KEY,
    entry_id     bigint NOT NULL,
    ledger_account text NOT NULL
        CHECK (ledger_account IN ('1010', '1100', '2100', '2200', '4100', '4110', '4200', '4800', '4900')),
    -- Receivable postings name the bill and component; customer postings the party.
    bill_id      bigint,
    component    text CHECK (component IN ('water', 'base', 'sewer', 'levy')),
    party        text,
    amount_krw   bigint NOT NULL CHECK (amount_krw <> 0),
    CHECK (ledger_account <> '1100' OR (bill_id IS NOT NULL AND component IS NOT NULL AND party IS NOT NULL)),
    CHECK (ledger_account <> '2200' OR party IS NOT NULL)
);
CREATE INDEX postings_entry_idx ON billing.postings (entry_id);
CREATE INDEX postings_party_idx ON billing.postings (party, ledger_account) WHERE party IS NOT NULL;
CREATE INDEX postings_bill_idx ON billing.postings (bill_id) WHERE bill_id IS NOT NULL;

-- An entry's postings are inserted by one statement, and must sum to zero
-- and belong to an existing entry (a statement-level check over the
-- transition table: cheap for bulk inserts, unlike a per-row constraint).
CREATE FUNCTION billing.postings_balance_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE bad bigint;
BEGIN
    SELECT n.entry_id INTO bad FROM new_rows n GROUP BY n.entry_id HAVING sum(n.amount_krw) <> 0 LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance', bad USING ERRCODE = 'check_violation';
    END IF;
    SELECT n.entry_id INTO bad FROM new_rows n
      LEFT JOIN billing.journal_entries e ON e.entry_id = n.entry_id
     WHERE e.entry_id IS NULL LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'postings for unknown journal entry %', bad USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_balance AFTER INSERT ON billing.postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION billing.postings_balance_check();

CREATE TABLE billing.payments (
    payment_id  bigserial PRIMARY KEY,
    reference   text NOT NULL UNIQUE,
    account_no  text NOT NULL,
    amount_krw  bigint NOT NULL CHECK (amount_krw > 0),
    paid_on     date NOT NULL,
    channel     text NOT NULL,
    entry_id    bigint NOT NULL,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_account_idx ON billing.payments (account_no);

CREATE TABLE billing.audit_log (
    audit_id bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL,
    reason   text NOT NULL DEFAULT '',
    details  jsonb NOT NULL DEFAULT '{}'
);

CREATE FUNCTION billing.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON billing.journal_entries
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON billing.journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON billing.postings
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON billing.postings
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER payments_append_only BEFORE UPDATE OR DELETE ON billing.payments
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER payments_no_truncate BEFORE TRUNCATE ON billing.payments
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON billing.audit_log
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON billing.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();

-- The service's database role (roles are cluster-wide: created once, tolerant
-- of concurrent migrators in other databases). Deployments log in as a role
-- that is a member of it; it can read and append to the ledger, never rewrite it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'waterworks_billing') THEN
        CREATE ROLE waterworks_billing NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
GRANT USAGE ON SCHEMA billing TO waterworks_billing;
GRANT SELECT, INSERT, UPDATE ON billing.accounts, billing.meter_installations, billing.runs,
    billing.period_counters, billing.bills, billing.leak_relief TO waterworks_billing;
GRANT DELETE ON billing.meter_installations TO waterworks_billing;
GRANT SELECT ON billing.ledger_accounts TO waterworks_billing;
GRANT SELECT, INSERT ON billing.journal_entries, billing.postings, billing.payments,
    billing.audit_log TO waterworks_billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA billing TO waterworks_billing;
