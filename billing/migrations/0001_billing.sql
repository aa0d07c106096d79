-- Billing's own schema: accounts, meter installations, runs and bills.
-- Every name is schema-qualified; the history lives in billing._sqlx_migrations.

CREATE TABLE billing.accounts (
    account_no      text PRIMARY KEY,
    customer        text NOT NULL,
    address         text NOT NULL,
    usage_type      text NOT NULL,
    diameter_mm     integer NOT NULL CHECK (diameter_mm > 0),
    households      integer NOT NULL CHECK (households > 0),
    sewer_connected boolean NOT NULL,
    levy_exempt     boolean NOT NULL,
    -- Names of tariff reductions granted (e.g. multi_child); set by clerks.
    reductions      text[] NOT NULL DEFAULT '{}',
    billing_group   text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_group_idx ON billing.accounts (billing_group, account_no);

-- The history of meters at a premises: an exchange ends one row and starts another.
CREATE TABLE billing.meter_installations (
    account_no   text NOT NULL REFERENCES billing.accounts (account_no) ON DELETE CASCADE,
    meter_id     text NOT NULL,
    installed_at timestamptz NOT NULL,
    removed_at   timestamptz,
    PRIMARY KEY (account_no, meter_id, installed_at),
    CHECK (removed_at IS NULL OR removed_at > installed_at)
);
CREATE INDEX meter_installations_meter_idx ON billing.meter_installations (meter_id);

CREATE TABLE billing.runs (
    run_id             bigserial PRIMARY KEY,
    period             text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    billing_group      text NOT NULL,
    status             text NOT NULL CHECK (status IN ('running', 'committed')),
    tariff_city        text NOT NULL,
    tariff_fingerprint text NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    outcome            jsonb
);
-- At most one unfinished run per period and group: a crashed run is resumed.
CREATE UNIQUE INDEX runs_one_running_idx ON billing.runs (period, billing_group)
    WHERE status = 'running';

-- Bill numbers are issued from this counter, in the same transaction as the
-- bills, so numbers within a period have no gaps.
CREATE TABLE billing.period_counters (
    period       text PRIMARY KEY,
    last_bill_no bigint NOT NULL DEFAULT 0 CHECK (last_bill_no >= 0)
);

CREATE TABLE billing.bills (
    bill_id        bigserial PRIMARY KEY,
    period         text NOT NULL,
    account_no     text NOT NULL,
    run_id         bigint NOT NULL REFERENCES billing.runs (run_id),
    -- Gapless within the period; NULL while the bill is held for review.
    bill_no        bigint,
    status         text NOT NULL CHECK (status IN ('issued', 'held')),
    hold_reasons   text[] NOT NULL DEFAULT '{}',
    usage_type     text NOT NULL,
    usage_m3       bigint NOT NULL CHECK (usage_m3 >= 0),
    estimated      boolean NOT NULL,
    tariff_version text NOT NULL,
    water_krw      bigint NOT NULL,
    sewer_krw      bigint NOT NULL,
    base_krw       bigint NOT NULL,
    levy_krw       bigint NOT NULL,
    reduction_krw  bigint NOT NULL,
    total_krw      bigint NOT NULL,
    -- Meter legs: start and end reads with timestamps, estimates, carry-over.
    legs           jsonb NOT NULL,
    -- Bill lines, each with its explanation (blocks, rates, rounding).
    lines          jsonb NOT NULL,
    input_hash     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (period, account_no),
    CHECK ((status = 'issued') = (bill_no IS NOT NULL)),
    CHECK (total_krw = water_krw + sewer_krw + base_krw + levy_krw + reduction_krw)
);
CREATE UNIQUE INDEX bills_number_idx ON billing.bills (period, bill_no) WHERE bill_no IS NOT NULL;
CREATE INDEX bills_account_idx ON billing.bills (account_no, period);
