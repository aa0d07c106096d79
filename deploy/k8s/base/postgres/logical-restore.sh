#!/bin/sh
# Restore a logical backup made by logical-backup.sh.
#   logical-restore.sh FILE             everything in the dump (schemas metering, billing)
#   logical-restore.sh FILE SCHEMA...   only these schemas (e.g. billing)
# DATABASE_URL: a superuser of the target database (object owners and grants
# are restored as they were; the roles must exist: roles.sql). The schemas
# restored must not exist: drop them, or rename the damaged one first
# (ALTER SCHEMA billing RENAME TO billing_damaged) to compare afterwards.
# One transaction: either everything is restored or nothing.
set -eu
file=$1; shift
if [ $# -eq 0 ]; then
  exec pg_restore --exit-on-error --single-transaction --dbname="$DATABASE_URL" "$file"
fi
# pg_restore --schema would skip the CREATE SCHEMA entry (and its grants):
# select the schemas' entries from the dump's table of contents instead.
pattern=""
for s in "$@"; do pattern="$pattern|( - | )$s( |\$)"; done
list=$(mktemp)
trap 'rm -f "$list"' EXIT
pg_restore --list "$file" | grep -E "^[0-9]+;.*(${pattern#|})" >"$list"
pg_restore --exit-on-error --single-transaction --use-list="$list" --dbname="$DATABASE_URL" "$file"
