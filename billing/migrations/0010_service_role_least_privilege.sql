-- The billing service no longer owns its schema (issue 23): the schema and
-- every object in it belong to the owner role that runs `waterworks migrate`
-- (svc_owner in deploy/k8s/base/postgres/roles.sql), and the service logs in
-- as a member of waterworks_billing. A table's owner can disable its
-- triggers or drop it whatever the grants say, so the ledger is append-only
-- only for roles that own nothing here. This migration states the service's
-- privileges in full, so they hold whatever earlier grants did.

-- The service checks at start that every migration is applied (it does not
-- migrate): it reads the history, nothing more.
GRANT SELECT ON billing._sqlx_migrations TO waterworks_billing;

-- Nobody but the owner creates objects in the schema.
REVOKE CREATE ON SCHEMA billing FROM PUBLIC, waterworks_billing;
GRANT USAGE ON SCHEMA billing TO waterworks_billing;

-- The ledger, payments and the audit trail: read and append, never rewrite.
-- (The triggers of 0004 refuse UPDATE, DELETE and TRUNCATE from anyone; the
-- missing privileges refuse them before the triggers are reached, and the
-- triggers cannot be disabled by a role that does not own the table.)
REVOKE ALL ON billing.journal_entries, billing.postings, billing.payments, billing.audit_log
    FROM PUBLIC, waterworks_billing;
GRANT SELECT, INSERT ON billing.journal_entries, billing.postings, billing.payments,
    billing.audit_log TO waterworks_billing;

-- The chart of accounts is reference data the migrations own.
REVOKE ALL ON billing.ledger_accounts FROM PUBLIC, waterworks_billing;
GRANT SELECT ON billing.ledger_accounts TO waterworks_billing;

-- Working tables: bills change status (held, issued, cancelled), runs finish,
-- counters advance, accounts and reductions are edited; installations are
-- replaced when an account is re-imported. None is truncated.
REVOKE ALL ON billing.accounts, billing.meter_installations, billing.runs,
    billing.period_counters, billing.bills, billing.leak_relief FROM PUBLIC, waterworks_billing;
GRANT SELECT, INSERT, UPDATE ON billing.accounts, billing.meter_installations, billing.runs,
    billing.period_counters, billing.bills, billing.leak_relief TO waterworks_billing;
GRANT DELETE ON billing.meter_installations TO waterworks_billing;

GRANT USAGE ON ALL SEQUENCES IN SCHEMA billing TO waterworks_billing;
