#!/bin/sh
# Restore a logical backup made by logical-backup.sh.
#   logical-restore.sh FILE.dump.enc             everything in the dump (schemas metering, billing)
#   logical-restore.sh FILE.dump.enc SCHEMA...   only these schemas (e.g. billing)
# BACKUP_PRIVATE_KEY: the PEM private key matching the backup job's public
# key (from the vault, for the time of the restore; never stored in the
# cluster). FILE.dump.key (beside FILE.dump.enc) holds the dump's secret and
# digest encrypted to it: a wrong key, or a .enc file changed since the
# backup, stops the restore before anything is written.
# The decrypted dump is written to a private temporary directory
# (RESTORE_TMPDIR, default TMPDIR or /tmp; as large as the dump) and removed
# at exit: pg_restore needs a seekable file to pick entries.
# DATABASE_URL: a superuser of the target database (object owners and grants
# are restored as they were; the roles must exist: roles.sql). The schemas
# restored must not exist: drop them, or rename the damaged one first
# (ALTER SCHEMA billing RENAME TO billing_damaged) to compare afterwards.
# One transaction: either everything is restored or nothing.
set -eu
enc=$1; shift
case $enc in
  *.dump.enc) ;;
  *) echo "logical-restore.sh: $enc is not an encrypted backup (*.dump.enc)" >&2; exit 1 ;;
esac
priv=${BACKUP_PRIVATE_KEY:?BACKUP_PRIVATE_KEY: the private key the backups are encrypted to}
umask 077
work=$(mktemp -d "${RESTORE_TMPDIR:-${TMPDIR:-/tmp}}/ww-restore.XXXXXX")
trap 'rm -rf "$work"' EXIT
openssl pkeyutl -decrypt -inkey "$priv" -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 \
  -pkeyopt rsa_mgf1_md:sha256 -in "${enc%.enc}.key" -out "$work/envelope" 2>"$work/err" \
  || { echo "logical-restore.sh: ${enc%.enc}.key does not open with $priv (wrong key?)" >&2; exit 1; }
read -r magic secret digest <"$work/envelope"
[ "$magic" = waterworks-backup-v1 ] || { echo "logical-restore.sh: ${enc%.enc}.key: unknown format" >&2; exit 1; }
[ "$(sha256sum "$enc" | cut -d' ' -f1)" = "$digest" ] \
  || { echo "logical-restore.sh: $enc was changed since the backup (digest mismatch): not restoring" >&2; exit 1; }
printf '%s\n' "$secret" >"$work/secret"
file=$work/waterworks.dump
openssl enc -d -aes-256-ctr -pbkdf2 -iter 100000 -pass "file:$work/secret" -in "$enc" -out "$file"
if [ $# -eq 0 ]; then
  pg_restore --exit-on-error --single-transaction --dbname="$DATABASE_URL" "$file"
  exit 0
fi
# pg_restore --schema would skip the CREATE SCHEMA entry (and its grants):
# select the schemas' entries from the dump's table of contents instead.
pattern=""
for s in "$@"; do pattern="$pattern|( - | )$s( |\$)"; done
pg_restore --list "$file" | grep -E "^[0-9]+;.*(${pattern#|})" >"$work/list"
pg_restore --exit-on-error --single-transaction --use-list="$work/list" --dbname="$DATABASE_URL" "$file"
