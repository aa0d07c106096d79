-- Reports and searches without whole-table work on every request (issue 23).
--
-- Ageing and arrears read the open receivable postings grouped by bill; this
-- covering partial index holds just those columns of just those postings, so
-- the reports read it in bill order (no sort) and, the table being
-- append-only and so all-visible after autovacuum, without the heap.
CREATE INDEX postings_receivable_by_bill_idx
    ON billing.postings (bill_id, party) INCLUDE (amount_krw)
 WHERE ledger_account = '1100';

-- The period of each open bill, without reading the wide bill rows (their
-- lines and legs make a row about 1.7 kB).
CREATE INDEX bills_id_period_idx ON billing.bills (bill_id) INCLUDE (period);

-- Searches: account numbers and meter ids by prefix (LIKE 'x%') in any
-- collation.
CREATE INDEX accounts_no_prefix_idx ON billing.accounts (account_no text_pattern_ops);
CREATE INDEX meter_installations_meter_prefix_idx
    ON billing.meter_installations (meter_id text_pattern_ops);

-- Searches: customer and address by substring (ILIKE '%x%') through
-- trigram indexes, where the pg_trgm extension is available (PostgreSQL's
-- contrib, trusted: the schema owner may create it). Without it the searches
-- work unchanged, unindexed. The operator class is looked up in whichever
-- schema holds the extension.
DO $$
DECLARE
    ext_schema text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
            -- In schema public, never in billing: a restore drops and
            -- recreates schema billing, and an extension inside it would go
            -- with it (pg_dump -n billing does not dump extensions).
            -- roles.sql creates it as superuser; here it is only a fallback
            -- for a role that may create in public (tests, development).
            BEGIN
                CREATE EXTENSION pg_trgm SCHEMA public;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE NOTICE 'pg_trgm is not installed and this role may not install it (roles.sql does): customer and address searches stay unindexed';
                RETURN;
            END;
        ELSE
            RAISE NOTICE 'pg_trgm is not available: customer and address searches stay unindexed';
            RETURN;
        END IF;
    END IF;
    SELECT n.nspname INTO ext_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX accounts_customer_trgm_idx ON billing.accounts '
                   'USING gin (customer %I.gin_trgm_ops)', ext_schema);
    EXECUTE format('CREATE INDEX accounts_address_trgm_idx ON billing.accounts '
                   'USING gin (address %I.gin_trgm_ops)', ext_schema);
END
$$;
