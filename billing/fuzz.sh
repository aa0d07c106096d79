#!/usr/bin/env bash
# Runs schemathesis (`--checks all`) against billing's own generated
# document, once per role, on a fresh database with a little data.
#
# A stand-in for the repository's scripts/api-fuzz while that is being
# written; it shows exactly how billing must be started for the fuzzer:
#   - a fresh database migrated for both schemas (`waterworks migrate
#     --schema all`: billing reads `metering.period_reads_v1`, so ingest's
#     schema must be there for a run to price anything);
#   - `waterworks billing serve --config` with one inline token per role and
#     rate limits the fuzzer stays under (429 is documented, but a run full
#     of 429 tests nothing);
#   - seed data: two accounts (admin), a forced run of 2026-10 (clerk), a
#     payment, so ids 1.. exist and lookups answer 200 as well as 404.
#
# Usage: billing/fuzz.sh [max-examples]   (env: WATERWORKS=path/to/waterworks,
# SCHEMATHESIS=path, PGURL=postgres://postgres@127.0.0.1:5432)
set -euo pipefail

MAX_EXAMPLES=${1:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WATERWORKS=${WATERWORKS:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/waterworks}
SCHEMATHESIS=${SCHEMATHESIS:-/root/.cache/waterworks-tools/schemathesis-venv/bin/schemathesis}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=fuzz_billing_$$
PORT=${PORT:-$((20000 + $$ % 20000))}
WORK=$(mktemp -d)
VIEWER=viewer-fuzz-$$-0123456789abcdef0123456789
CLERK=clerk-fuzz-$$-0123456789abcdef0123456789
ADMIN=admin-fuzz-$$-0123456789abcdef0123456789
SERVER_PID=

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

psql "$PGURL/postgres" -qc "CREATE DATABASE $DB" >/dev/null
"$WATERWORKS" migrate --database-url "$PGURL/$DB" --schema all >/dev/null

cat >"$WORK/billing.toml" <<EOF
database_url = "$PGURL/$DB"
migrate_on_start = true
http_listen = "127.0.0.1:$PORT"
tariff_file = "$ROOT/fixtures/tariffs/daejeon.toml"
tokens = [
  { name = "fuzz-viewer", role = "viewer", token = "$VIEWER" },
  { name = "fuzz-clerk", role = "clerk", token = "$CLERK" },
  { name = "fuzz-admin", role = "admin", token = "$ADMIN" },
]
[http_limits]
per_token_per_min = 1000000
per_ip_per_min = 1000000
EOF
"$WATERWORKS" billing serve --config "$WORK/billing.toml" >"$WORK/billing.log" 2>&1 &
SERVER_PID=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 100); do
    curl -sf "$BASE/ready" >/dev/null && break
    sleep 0.2
done
curl -sf "$BASE/ready" >/dev/null || { cat "$WORK/billing.log"; exit 1; }

post() { # token path json
    curl -sf -X POST -H "Authorization: Bearer $1" -H 'content-type: application/json' \
        -d "$3" "$BASE$2" >/dev/null
}
post "$ADMIN" /api/v1/accounts '[
 {"account_no":"AC00001","customer":"김민수","address":"대전 서구 둔산로 100","usage_type":"household",
  "diameter_mm":15,"households":1,"sewer_connected":true,"levy_exempt":false,"billing_group":"A",
  "meters":[{"meter_id":"M1","installed_at":"2026-01-01T00:00:00Z"}]},
 {"account_no":"AC00002","customer":"이영희","address":"대전 유성구 대학로 99","usage_type":"general",
  "diameter_mm":20,"households":1,"sewer_connected":true,"levy_exempt":false,"billing_group":"A",
  "meters":[{"meter_id":"M2","installed_at":"2026-01-01T00:00:00Z"}]}]'
post "$CLERK" /api/v1/billing-runs '{"period":"2026-10","group":"A","force":true,"reason":"fuzz seed"}'
post "$CLERK" /api/v1/payments '{"reference":"FUZZ-1","account_no":"AC00001","amount_krw":1000,"paid_on":"2026-11-20"}'

status=0
# Schemathesis keeps its cache in the working directory: not in the repository.
cd "$WORK"
for token in "$VIEWER" "$CLERK" "$ADMIN"; do
    echo "== schemathesis as ${token%%-*}"
    "$SCHEMATHESIS" --config-file "$ROOT/billing/schemathesis.toml" \
        run "$BASE/api/v1/openapi.json" --checks all \
        -H "Authorization: Bearer $token" --max-examples "$MAX_EXAMPLES" \
        --seed "${SEED:-1}" --suppress-health-check all || status=$?
done
exit $status
