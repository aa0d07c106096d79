-- Leak relief (누수 감면) approved by a clerk for one account and usage month:
-- part of the usage above the prior three months' average is waived, as the
-- tariff's [version.leak_relief] states.
CREATE TABLE billing.leak_relief (
    account_no  text NOT NULL REFERENCES billing.accounts (account_no) ON DELETE CASCADE,
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    approved_by text NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_no, period)
);
