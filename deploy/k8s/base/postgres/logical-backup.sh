#!/bin/sh
# Logical backup of the project's schemas (metering, billing) with pg_dump,
# custom format, verified readable, older dumps pruned. Second line of
# defence beside CloudNativePG's physical backups + WAL: restores one schema
# or one table into a live database without a point-in-time recovery of the
# whole cluster. Run by the CronJob waterworks-logical-backup (this file is
# its ConfigMap) and by deploy/test.sh's restore drill.
#   DATABASE_URL  role with pg_read_all_data (svc_backup)
#   BACKUP_DIR    where dumps go (default /backup)
#   KEEP_DAYS     dumps older than this are deleted (default 35)
set -eu
dir=${BACKUP_DIR:-/backup}
keep=${KEEP_DAYS:-35}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
file="$dir/waterworks-$stamp.dump"
pg_dump --format=custom --compress=6 --schema=metering --schema=billing \
  --file="$file.partial" "$DATABASE_URL"
pg_restore --list "$file.partial" >/dev/null
mv "$file.partial" "$file"
find "$dir" -maxdepth 1 -name 'waterworks-*.dump' -mtime +"$keep" -exec rm -f {} +
echo "$file"
