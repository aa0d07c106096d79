-- Per-service roles and schemas in database waterworks. Run once as superuser:
-- by CloudNativePG at bootstrap (postInitApplicationSQLRefs), by hand on an
-- external PostgreSQL, and by deploy/test.sh (role names rewritten) against
-- the local server. Passwords are not set here: the operator sets them from
-- the Secrets named in Cluster.spec.managed.roles.
DO $$
BEGIN
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

GRANT waterworks_billing TO svc_billing;

-- Each service owns its schema and keeps its migration history in it.
CREATE SCHEMA IF NOT EXISTS metering AUTHORIZATION svc_ingest;
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION svc_billing;

-- The services run `CREATE SCHEMA IF NOT EXISTS <own schema>` at start, which
-- PostgreSQL checks against CREATE on the database even when the schema exists.
GRANT CONNECT ON DATABASE waterworks TO svc_ingest, svc_billing;
GRANT CREATE ON DATABASE waterworks TO svc_ingest, svc_billing;

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

-- The logical backup (CronJob waterworks-logical-backup, pg_dump) reads everything, writes nothing.
GRANT CONNECT ON DATABASE waterworks TO svc_backup;
GRANT pg_read_all_data TO svc_backup;
