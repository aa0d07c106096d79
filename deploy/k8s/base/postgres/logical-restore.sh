#!/bin/sh
# Restore a logical backup made by logical-backup.sh.
#   logical-restore.sh FILE [SCHEMA...]
# DATABASE_URL must be a superuser (or the schemas' owners' member) of the
# target database; the schemas named (default: metering billing) must not
# exist (drop or rename them first: ALTER SCHEMA metering RENAME TO metering_broken).
# One transaction: either everything is restored or nothing.
set -eu
file=$1; shift
[ $# -gt 0 ] || set -- metering billing
args=""
for s in "$@"; do args="$args --schema=$s"; done
# shellcheck disable=SC2086
pg_restore --exit-on-error --single-transaction $args --dbname="$DATABASE_URL" "$file"
