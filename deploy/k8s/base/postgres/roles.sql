-- Per-service roles and schemas in database waterworks. Run once as superuser:
-- by CloudNativePG at bootstrap (postInitApplicationSQLRefs), by hand on an
-- external PostgreSQL, and by deploy/test.sh (role names rewritten) against
-- the local server. Passwords are not set here: the operator sets them from
-- the Secrets named in Cluster.spec.managed.roles.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waterworks_ingest') THEN
    CREATE ROLE waterworks_ingest LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 40;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waterworks_billing') THEN
    CREATE ROLE waterworks_billing LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 40;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'waterworks_backup') THEN
    CREATE ROLE waterworks_backup LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE CONNECTION LIMIT 2;
  END IF;
END
$$;

-- Nobody but the owners creates objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Each service owns its schema and keeps its migration history in it.
CREATE SCHEMA IF NOT EXISTS metering AUTHORIZATION waterworks_ingest;
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION waterworks_billing;

-- The services run `CREATE SCHEMA IF NOT EXISTS <own schema>` at start, which
-- PostgreSQL checks against CREATE on the database even when the schema exists.
GRANT CONNECT ON DATABASE waterworks TO waterworks_ingest, waterworks_billing;
GRANT CREATE ON DATABASE waterworks TO waterworks_ingest, waterworks_billing;

-- Ingest's start-up reads current_setting('shared_preload_libraries') (its
-- TimescaleDB detection, ingest/src/timescale.rs), which PostgreSQL reserves
-- to superusers and pg_read_all_settings. Read-only; drop once ingest reads it
-- only when the extension is available.
GRANT pg_read_all_settings TO waterworks_ingest;

-- Billing reads metering's contract (readings_v1, period_reads_v1, meters,
-- daily, gaps) read-only; tables ingest's migrations create later included.
GRANT USAGE ON SCHEMA metering TO waterworks_billing;
ALTER DEFAULT PRIVILEGES FOR ROLE waterworks_ingest IN SCHEMA metering
  GRANT SELECT ON TABLES TO waterworks_billing;
GRANT SELECT ON ALL TABLES IN SCHEMA metering TO waterworks_billing;
-- Ingest never reads billing.
REVOKE ALL ON SCHEMA billing FROM waterworks_ingest;

-- The logical backup (CronJob waterworks-logical-backup, pg_dump) reads everything, writes nothing.
GRANT CONNECT ON DATABASE waterworks TO waterworks_backup;
GRANT pg_read_all_data TO waterworks_backup;
