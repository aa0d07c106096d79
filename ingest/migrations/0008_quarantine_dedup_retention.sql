-- The quarantine is bounded: one row per (gateway, reason, digest) with a
-- count and first/last seen, a stored payload of at most its first 4096
-- bytes (with the whole payload's SHA-256 and length), and rows not seen
-- again for `limits.quarantine_retention_days` swept by ingest.
-- received_at stays the first time a row's content was seen.

ALTER TABLE metering.quarantine
    ADD COLUMN IF NOT EXISTS digest       bytea,
    ADD COLUMN IF NOT EXISTS payload_len  integer,
    ADD COLUMN IF NOT EXISTS seen_count   bigint NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;

-- Existing rows: the digest is the whole payload's, else the reading's JSON
-- text's, else that of 'detail', a zero byte and the detail (as ingest
-- computes it; for reading rows its JSON text can differ from jsonb's, which
-- only keeps an old row apart from a new one).
UPDATE metering.quarantine
   SET digest = sha256(coalesce(payload, convert_to(reading::text, 'UTF8'),
                                '\x64657461696c00'::bytea || convert_to(detail, 'UTF8'))),
       payload_len = length(payload),
       payload = substring(payload FROM 1 FOR 4096),
       last_seen_at = received_at
 WHERE digest IS NULL;

-- Equal rows merge into the oldest, which takes their count and last seen.
WITH g AS (
    SELECT id,
           first_value(id) OVER w AS keep,
           sum(seen_count) OVER w AS total,
           max(last_seen_at) OVER w AS last
      FROM metering.quarantine
    WINDOW w AS (PARTITION BY coalesce(gateway_id, ''), reason, digest ORDER BY id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
), merged AS (
    UPDATE metering.quarantine q SET seen_count = g.total, last_seen_at = g.last
      FROM g WHERE q.id = g.id AND g.id = g.keep AND g.total > 1
)
DELETE FROM metering.quarantine q USING g WHERE q.id = g.id AND g.id <> g.keep;

ALTER TABLE metering.quarantine
    ALTER COLUMN digest SET NOT NULL,
    ALTER COLUMN last_seen_at SET NOT NULL,
    ALTER COLUMN last_seen_at SET DEFAULT now();

CREATE UNIQUE INDEX IF NOT EXISTS quarantine_dedup
    ON metering.quarantine ((coalesce(gateway_id, '')), reason, digest);
CREATE INDEX IF NOT EXISTS quarantine_last_seen ON metering.quarantine (last_seen_at);
