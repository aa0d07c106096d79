-- A billing run's commit is dominated by writing bill rows, and most of a
-- bill row is its legs and explained lines. As jsonb, every row's ~1.2 kB of
-- JSON text was parsed into jsonb's binary tree on the way in (measured here:
-- 200,000 rows took 5.0 s to COPY as jsonb, 3.1 s as json) and stored larger
-- (2,019 B per row as jsonb, 1,637 B as json). The bill's JSON is written once
-- by the run, canonically (serde, no whitespace), and only ever read back
-- whole as text by the service, so json (validated text) keeps every fact of
-- the explanation at a lower cost. Queries that want jsonb operators cast
-- (`lines::jsonb`).
ALTER TABLE billing.bills
    ALTER COLUMN legs TYPE json USING legs::json,
    ALTER COLUMN lines TYPE json USING lines::json;
-- Nothing looks bills up by run id on a hot path (runs are found by period
-- and group); a run's bills are inserted together, so run ids rise with the
-- table's physical order and a BRIN index serves the lookup for a fraction
-- of a b-tree's per-row cost.
DROP INDEX billing.bills_run_idx;
CREATE INDEX bills_run_brin ON billing.bills USING brin (run_id);
