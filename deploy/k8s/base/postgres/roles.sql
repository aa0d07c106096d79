-- Per-service roles and schemas in database waterworks. Run as superuser:
-- by CloudNativePG at bootstrap (postInitApplicationSQLRefs), by hand on an
-- external PostgreSQL, by deploy/test.sh and billing/tests/roles.rs (role and
-- database names rewritten) against the local server. Idempotent: running it
-- again on an older installation moves schema billing to its owner role.
-- Passwords are not set here: the operator sets them from the Secrets named
-- in Cluster.spec.managed.roles.
--
-- Who owns what:
--   svc_owner    owns schema billing and everything in it; only the
--                `waterworks migrate` Job logs in as it (issue 23: an owner
--                can disable the ledger's triggers or drop its tables, so the
--                service must not be one).
--   svc_billing  the billing service and its CronJob: a member of
--                waterworks_billing, whose privileges billing's migrations
--                grant (0010: the ledger SELECT and INSERT only).
--   svc_ingest   the ingest service: still owns schema metering (its day
--                partitions, compaction and expiry are DDL at run time); it
--                migrates metering in the migrate Job, not at start.
--   svc_backup   pg_dump: reads everything, writes nothing.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'svc_owner') THEN
    CREATE ROLE svc_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT CONNECTION LIMIT 4;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'svc_ingest') THEN
    CREATE ROLE svc_ingest LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 40;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'svc_billing') THEN
    CREATE ROLE svc_billing LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 40;
  END IF;
  -- billing's migrations (0004_ledger.sql) grant the ledger's append-only
  -- privileges to this group role; billing's login role is a member of it.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waterworks_billing') THEN
    CREATE ROLE waterworks_billing NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'svc_backup') THEN
    CREATE ROLE svc_backup LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 2;
  END IF;
END
$$;

-- Nobody but the owners creates objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Trigram indexes of billing's searches (billing migration 0020): the
-- extension lives in public, outside the schemas a logical restore drops and
-- recreates, and is created here because only a superuser (or a role with
-- CREATE on public) may; where it is missing the searches stay unindexed.
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

-- Exclusion constraints of billing's installations (billing migration 0030:
-- one meter at one premises at a time, no overlapping installations of a
-- premises) need btree_gist; same place, same reason as pg_trgm.
CREATE EXTENSION IF NOT EXISTS btree_gist SCHEMA public;

GRANT waterworks_billing TO svc_billing;

-- Schema metering belongs to ingest's role, schema billing to the owner role;
-- each keeps its migration history in it.
CREATE SCHEMA IF NOT EXISTS metering AUTHORIZATION svc_ingest;
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION svc_owner;

-- An installation from before svc_owner: billing's role owned the schema and
-- its objects. Hand them to the owner (the grants of migration 0010 then give
-- the service back what it uses, and nothing that rewrites the ledger).
DO $$
DECLARE
  obj record;
BEGIN
  IF (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing') = 'svc_billing' THEN
    ALTER SCHEMA billing OWNER TO svc_owner;
  END IF;
  FOR obj IN
    SELECT c.oid::regclass AS rel, c.relkind FROM pg_class c
     WHERE c.relnamespace = 'billing'::regnamespace AND c.relowner = 'svc_billing'::regrole
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  LOOP
    EXECUTE format('ALTER TABLE %s OWNER TO svc_owner', obj.rel);
  END LOOP;
  FOR obj IN
    SELECT p.oid::regprocedure AS fn FROM pg_proc p
     WHERE p.pronamespace = 'billing'::regnamespace AND p.proowner = 'svc_billing'::regrole
  LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO svc_owner', obj.fn);
  END LOOP;
END
$$;
REVOKE CREATE ON SCHEMA billing FROM svc_billing;

-- `waterworks migrate` runs `CREATE SCHEMA IF NOT EXISTS <schema>`, which
-- PostgreSQL checks against CREATE on the database even when the schema
-- exists: the owner and ingest (which migrates metering) have it; billing's
-- role does not.
GRANT CONNECT ON DATABASE waterworks TO svc_owner, svc_ingest, svc_billing;
GRANT CREATE ON DATABASE waterworks TO svc_owner, svc_ingest;
REVOKE CREATE ON DATABASE waterworks FROM svc_billing;

-- Ingest's start-up reads current_setting('shared_preload_libraries') (its
-- TimescaleDB detection, ingest/src/timescale.rs), which PostgreSQL reserves
-- to superusers and pg_read_all_settings. Read-only; drop once ingest reads it
-- only when the extension is available.
GRANT pg_read_all_settings TO svc_ingest;

-- Billing reads metering's contract (readings_v1, period_reads_v1, meters,
-- daily, gaps) read-only; tables ingest's migrations create later included.
GRANT USAGE ON SCHEMA metering TO svc_billing;
ALTER DEFAULT PRIVILEGES FOR ROLE svc_ingest IN SCHEMA metering
  GRANT SELECT ON TABLES TO svc_billing;
GRANT SELECT ON ALL TABLES IN SCHEMA metering TO svc_billing;
-- Ingest never reads billing.
REVOKE ALL ON SCHEMA billing FROM svc_ingest;
-- billing's migration 0004 creates waterworks_billing if it is missing; here
-- it already exists, so the owner needs no CREATEROLE. The owner grants
-- privileges on its own objects to the group, which needs no membership.

-- The logical backup (CronJob waterworks-logical-backup, pg_dump) reads everything, writes nothing.
GRANT CONNECT ON DATABASE waterworks TO svc_backup;
GRANT pg_read_all_data TO svc_backup;
