-- Master data (issue 15): customers, the premises fields a utility's
-- 요금관리 export carries, meters, and installations with their install
-- read. Billing owns all of it; ingest keeps its own device registry
-- (meter → gateway, profile), filled through its API, never from here.
--
-- A premises (수용가) stays the row of billing.accounts keyed by 수용가번호,
-- extended: every existing query (runs, reports, searches) keeps working.

-- Who pays: a name and a way to reach them, nothing more personal.
CREATE TABLE billing.customers (
    customer_id text PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- A telephone number or an e-mail address, or empty.
    contact     text NOT NULL DEFAULT '' CHECK (length(contact) <= 200),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The premises' customer (accounts.customer keeps the name the bills
-- print, copied from here when the premises or the customer is imported),
-- its road-name address (도로명주소; `address` stays the service address the
-- notices print) and its reading route (검침구역).
ALTER TABLE billing.accounts
    ADD COLUMN customer_id   text REFERENCES billing.customers (customer_id),
    ADD COLUMN road_address  text NOT NULL DEFAULT '',
    ADD COLUMN reading_route text NOT NULL DEFAULT '';
CREATE INDEX accounts_customer_id_idx ON billing.accounts (customer_id);
CREATE INDEX accounts_reading_route_idx ON billing.accounts (reading_route, account_no);

-- The meters themselves. No foreign key from installations: accounts
-- upserted before master data existed name meters billing never saw.
CREATE TABLE billing.meters (
    meter_id        text PRIMARY KEY CHECK (length(meter_id) BETWEEN 1 AND 64),
    serial          text NOT NULL,
    maker           text NOT NULL,
    model           text NOT NULL,
    -- The device profile ingest decodes the meter with (fixtures/profiles).
    profile_id      text NOT NULL,
    diameter_mm     integer NOT NULL CHECK (diameter_mm > 0),
    manufactured_on date,
    -- 검정: the date of the meter's legal verification.
    verified_on     date,
    gateway_id      text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (verified_on IS NULL OR manufactured_on IS NULL OR verified_on >= manufactured_on)
);
CREATE INDEX meters_serial_idx ON billing.meters (serial);
CREATE INDEX meters_gateway_idx ON billing.meters (gateway_id);

-- The reading of the register when the meter was installed (m³).
ALTER TABLE billing.meter_installations
    ADD COLUMN install_read_m3 numeric(14, 3) NOT NULL DEFAULT 0 CHECK (install_read_m3 >= 0);

-- One meter is never at two premises at once, and the installations of a
-- premises never overlap (an exchange ends one at the instant the next
-- starts: ranges are half-open). Exclusion constraints need btree_gist
-- (PostgreSQL's contrib, trusted): deploy's roles.sql creates it as
-- superuser, in public as pg_trgm; here it is created only as a fallback
-- for a role that may (tests, development). Without it the migration fails:
-- the guarantee is not optional. (An import that ends one installation and
-- starts the next writes the ends first.)
DO $$
DECLARE
    ext_schema text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gist') THEN
        BEGIN
            CREATE EXTENSION btree_gist SCHEMA public;
        EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
            RAISE EXCEPTION 'billing migration 0030 needs the btree_gist extension: run deploy roles.sql as superuser (CREATE EXTENSION btree_gist SCHEMA public)';
        END;
    END IF;
    SELECT n.nspname INTO ext_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'btree_gist';
    EXECUTE format('ALTER TABLE billing.meter_installations '
                   'ADD CONSTRAINT meter_installations_one_place EXCLUDE USING gist '
                   '(meter_id %1$I.gist_text_ops WITH =, tstzrange(installed_at, removed_at) WITH &&)',
                   ext_schema);
    EXECUTE format('ALTER TABLE billing.meter_installations '
                   'ADD CONSTRAINT meter_installations_no_overlap EXCLUDE USING gist '
                   '(account_no %1$I.gist_text_ops WITH =, tstzrange(installed_at, removed_at) WITH &&)',
                   ext_schema);
END
$$;

-- The service's privileges, as 0010 states them: customers and meters are
-- working tables (imported and edited, never deleted or truncated; the
-- audit log keeps who changed what).
REVOKE ALL ON billing.customers, billing.meters FROM PUBLIC, waterworks_billing;
GRANT SELECT, INSERT, UPDATE ON billing.customers, billing.meters TO waterworks_billing;
