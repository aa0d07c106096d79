#!/bin/sh
# Logical backup of the project's schemas (metering, billing) with pg_dump,
# custom format, ENCRYPTED before it touches the disk, its table of contents
# verified in the stream, older dumps pruned. Second line of defence beside
# CloudNativePG's physical backups + WAL: restores one schema or one table into
# a live database without a point-in-time recovery of the whole cluster. Run by
# the CronJob waterworks-logical-backup (this file is its ConfigMap) and by
# deploy/test.sh's restore drill.
#   DATABASE_URL       role with pg_read_all_data (svc_backup)
#   BACKUP_PUBLIC_KEY  PEM RSA public key (3072 bits or more) the dumps are
#                      encrypted to; its private key is kept OUT of the cluster
#                      (the vault) and is needed only to restore
#   BACKUP_DIR         where dumps go (default /backup)
#   KEEP_DAYS          dumps older than this are deleted (default 35)
#
# Each backup is two files:
#   waterworks-STAMP.dump.enc  the pg_dump stream, AES-256-CTR under a fresh
#                              random 256-bit secret (openssl enc, PBKDF2)
#   waterworks-STAMP.dump.key  "waterworks-backup-v1 SECRET SHA256", RSA-OAEP
#                              (SHA-256) encrypted to BACKUP_PUBLIC_KEY; SHA256
#                              is the digest of the .enc file, so a changed
#                              .enc is refused at restore (logical-restore.sh)
# The job can write backups but cannot read them: it holds only the public key.
# The plaintext exists only in pipes. Tools: pg_dump, pg_restore, openssl,
# mkfifo, sha256sum (all in the CloudNativePG PostgreSQL image).
set -eu
dir=${BACKUP_DIR:-/backup}
keep=${KEEP_DAYS:-35}
pub=${BACKUP_PUBLIC_KEY:?BACKUP_PUBLIC_KEY: the public key the dumps are encrypted to}
[ -r "$pub" ] || { echo "logical-backup.sh: cannot read BACKUP_PUBLIC_KEY $pub" >&2; exit 1; }
bits=$(openssl pkey -pubin -in "$pub" -noout -text 2>/dev/null | sed -n 's/.*Public-Key: (\([0-9]*\) bit).*/\1/p')
[ "${bits:-0}" -ge 3072 ] || { echo "logical-backup.sh: $pub is not an RSA public key of 3072 bits or more" >&2; exit 1; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
file="$dir/waterworks-$stamp.dump"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work" "$file.enc.partial" "$file.key.partial"' EXIT
openssl rand -hex 32 >"$work/secret"
mkfifo "$work/dump" "$work/toc"
# pg_restore --list reads the table of contents from a copy of the stream,
# then cat drains the rest so the copy never blocks.
{ pg_restore --list >"$work/toc.txt"; echo $? >"$work/toc.rc"; cat >/dev/null; } <"$work/toc" &
toc_pid=$!
pg_dump --format=custom --compress=6 --schema=metering --schema=billing "$DATABASE_URL" >"$work/dump" &
dump_pid=$!
tee "$work/toc" <"$work/dump" \
  | openssl enc -aes-256-ctr -pbkdf2 -iter 100000 -salt -pass "file:$work/secret" -out "$file.enc.partial"
wait "$dump_pid" || { echo "logical-backup.sh: pg_dump failed" >&2; exit 1; }
wait "$toc_pid"
[ "$(cat "$work/toc.rc")" = 0 ] && grep -q 'SCHEMA - metering\|SCHEMA - billing' "$work/toc.txt" \
  || { echo "logical-backup.sh: the dump's table of contents is unreadable" >&2; exit 1; }
digest=$(sha256sum "$file.enc.partial" | cut -d' ' -f1)
printf 'waterworks-backup-v1 %s %s\n' "$(cat "$work/secret")" "$digest" \
  | openssl pkeyutl -encrypt -pubin -inkey "$pub" -pkeyopt rsa_padding_mode:oaep \
      -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256 -out "$file.key.partial"
sync "$file.enc.partial" "$file.key.partial" 2>/dev/null || sync
mv "$file.key.partial" "$file.key"
mv "$file.enc.partial" "$file.enc"
find "$dir" -maxdepth 1 \( -name 'waterworks-*.dump.enc' -o -name 'waterworks-*.dump.key' \) -mtime +"$keep" -exec rm -f {} +
echo "$file.enc"
