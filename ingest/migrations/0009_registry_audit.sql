-- Who changed the meter registry, and how: one row per meter created or
-- changed through `PUT /api/v1/meters` (or `registry::register_meters`),
-- written in the transaction that changes `metering.meters`, so the registry
-- never changes without its record. Unchanged meters leave no row.
CREATE TABLE IF NOT EXISTS metering.registry_audit (
    id         bigserial PRIMARY KEY,
    changed_at timestamptz NOT NULL DEFAULT now(),
    -- The token's name (never the token) and its role; `library` for
    -- in-process registration.
    actor      text NOT NULL,
    actor_role text NOT NULL,
    meter_id   text NOT NULL,
    action     text NOT NULL CHECK (action IN ('create', 'change')),
    -- The registration before (NULL on create) and after:
    -- {"gateway_id", "profile_id", "max_flow_lph"}.
    before     jsonb,
    after      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_audit_meter ON metering.registry_audit (meter_id, changed_at);
