#!/usr/bin/env bash
# Acceptance test of deploy/ (issue 8). From the repository root:
#
#   bash deploy/test.sh
#
# 1. manifests: kustomize renders base/dev/prod; kubernetes-validate (strict)
#    against the Kubernetes schemas; custom resources and the platform's own
#    rules (deploy/test/manifests.py: also database egress, production images
#    by digest, the database CA mounted, backups encrypted; each shown to
#    fail on a broken rendering); the release gate refuses the committed
#    digest markers; checkov with no failed check and every skip carrying
#    its reason; the committed ACL matches its gateway list.
# 2. images: static release binaries, three FROM-scratch images, non-root;
#    pin.py + release gate on a copy of the prod overlay with their digests.
# 3. broker: the machine's mosquitto started privately with the PRODUCTION
#    mosquitto.conf + generated ACL/passwords and test certificates (internal
#    listener and gateway listener TLS); real clients prove a gateway cannot
#    publish under another gateway's prefix and the internal listener speaks
#    only TLS.
# 4. smoke: ingest and billing images (podman, --network host) against a
#    database of our own on the local PostgreSQL, with the per-service roles of
#    roles.sql; the migrate Job's commands first (metering as ingest's role,
#    billing as the owner role); simulated meters -> gateway image -> broker
#    -> ingest (mqtts://, the test CA mounted) -> rows.
# 5. podman kube play of the dev overlay's service workloads, same smoke test.
# 6. restore drill: logical-backup.sh (as the backup role, encrypted to a
#    public key), drop the schemas, logical-restore.sh with the private key
#    (a wrong key and an altered copy are refused), identical row counts and
#    table digests.
#
# Shared services are never stopped or reconfigured: PostgreSQL gets a private
# database and private roles (dropped at the end); the broker is a private
# mosquitto process on free ports; containers have unique names and are
# removed at exit. Any failure exits non-zero with a FAIL line.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
T0=$(date +%s)
ID="wwd$$"
DB="ww_deploy_$$"
PGHOST_URL="postgres://postgres@127.0.0.1:5432"
SHARED_URL=$PGHOST_URL   # the machine's server; PGHOST_URL points elsewhere during the drills
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cargo-target/waterworks}
TMP=$(mktemp -d /tmp/ww-deploy.XXXXXX)
chmod 755 "$TMP"
PIDS=()
CONTAINERS=()
ROLES=("${ID}_ingest" "${ID}_billing" "${ID}_backup" "${ID}_owner")
KUBE_YAML=""
declare -A DUMP_OF=()
IMG_INGEST=localhost/waterworks-ingest:$ID
IMG_BILLING=localhost/waterworks-billing:$ID
IMG_GATEWAY=localhost/waterworks-gateway:$ID

step() { echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
ok() { echo "    ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
psql_su() { psql "$PGHOST_URL/${1}" -v ON_ERROR_STOP=1 -qAtX "${@:2}"; }

cleanup() {
  local rc=$?
  trap - ERR
  set +e
  if [ $rc -ne 0 ]; then
    for c in "${CONTAINERS[@]}"; do podman logs "$c" >"$TMP/logs/container-$c" 2>&1; done
  fi
  if [ -n "$KUBE_YAML" ]; then podman kube down "$KUBE_YAML" >/dev/null 2>&1; fi
  for c in "${CONTAINERS[@]}"; do podman rm -f -v -t 2 "$c" >/dev/null 2>&1; done
  podman pod ls --format '{{.Name}}' 2>/dev/null | grep "^$ID-" | xargs -r podman pod rm -f >/dev/null 2>&1
  podman volume ls --format '{{.Name}}' 2>/dev/null | grep "^$ID-" | xargs -r podman volume rm -f >/dev/null 2>&1
  podman rmi -f "$IMG_INGEST" "$IMG_BILLING" "$IMG_GATEWAY" >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for d in "$TMP/pgbase/src" "$TMP/pgbase/copy"; do
    if [ -f "$d/postmaster.pid" ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1; fi
  done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PGHOST_URL=$SHARED_URL
  for d in "$DB" "${DB}_demo"; do
    if psql_su postgres -c "SELECT 1 FROM pg_database WHERE datname = '$d'" 2>/dev/null | grep -q 1; then
      psql_su postgres -c "DROP DATABASE \"$d\" WITH (FORCE)" >/dev/null 2>&1
    fi
  done
  for r in "${ROLES[@]}"; do psql_su postgres -c "DROP ROLE IF EXISTS \"$r\"" >/dev/null 2>&1; done
  if [ $rc -ne 0 ] && [ -d "$TMP/logs" ]; then
    for f in "$TMP"/logs/*; do
      case $f in *validate-*|*checkov-*) continue ;; esac
      echo "--- $f (tail)"; tail -n 25 "$f"
    done
  fi
  rm -rf "$TMP"
  if [ $rc -eq 0 ]; then echo "=== deploy/test.sh: PASS in $(( $(date +%s) - T0 ))s"; else echo "=== deploy/test.sh: FAIL (exit $rc) after $(( $(date +%s) - T0 ))s" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
mkdir -p "$TMP/logs"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL SECONDS WHAT
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; then ok "$3 answers $1"; return 0; fi
    sleep 0.2
  done
  fail "$3: $1 did not answer within $2 s"
}
wait_sql() { # SECONDS SQL WHAT — until the query returns t
  local i
  for ((i = 0; i < $1 * 2; i++)); do
    if [ "$(psql_su "$DB" -c "$2" 2>/dev/null)" = t ]; then ok "$3"; return 0; fi
    sleep 0.5
  done
  fail "$3: not true within $1 s ($2)"
}

# ---------------------------------------------------------------- 0. tools
step "tools"
need_apt=()
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
command -v mosquitto >/dev/null || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null || need_apt+=(mosquitto-clients)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v kubectl >/dev/null || need_apt+=(kubectl)
# the billing image ships the console's notice font (deploy/images/build.sh)
[ -f /usr/share/fonts/truetype/nanum/NanumGothic.ttf ] || need_apt+=(fonts-nanum)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "    apt-get install ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >"$TMP/logs/apt" 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >"$TMP/logs/apt" 2>&1; } \
    || fail "apt-get install ${need_apt[*]} (kubectl: Debian 12 has none with kustomize v5; install it from the Kubernetes apt repository)"
fi
if ! command -v kubernetes-validate >/dev/null || ! command -v checkov >/dev/null; then
  echo "    pip install kubernetes-validate checkov"
  pip install -q kubernetes-validate checkov >"$TMP/logs/pip" 2>&1 || fail "pip install kubernetes-validate checkov"
fi
python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml >/dev/null
if [ ! -e /etc/containers/containers.conf ]; then
  mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n' >/etc/containers/containers.conf
fi
kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5' || fail "kubectl with Kustomize v5 needed"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)
ok "podman $(podman --version | awk '{print $3}'), $(kubectl version --client | grep Kustomize), checkov $(checkov --version 2>/dev/null)"

# ---------------------------------------------------------------- 1. manifests
step "manifests: render, validate, checkov"
K8S=deploy/k8s
python3 deploy/mosquitto/gen-acl.py --gateways $K8S/base/mosquitto/gateways.txt --acl "$TMP/acl-gateways" \
  --emqx-acl "$TMP/emqx-acl.conf"
diff -u $K8S/base/mosquitto/acl-gateways "$TMP/acl-gateways" \
  || fail "acl-gateways is stale: run deploy/mosquitto/gen-acl.py --gateways gateways.txt --acl acl-gateways"
diff -u $K8S/alternatives/emqx/acl.conf "$TMP/emqx-acl.conf" \
  || fail "alternatives/emqx/acl.conf is stale: gen-acl.py ... --emqx-acl"
ok "committed ACLs (Mosquitto, EMQX) match gateways.txt"
for o in base overlays/dev overlays/prod; do
  name=${o##*/}
  kubectl kustomize "$K8S/$o" >"$TMP/$name.yaml" || fail "kustomize $o"
  mkdir -p "$TMP/split-$name"
  python3 deploy/test/manifests.py split "$TMP/$name.yaml" "$TMP/split-$name"
  n=$(ls "$TMP/split-$name" | wc -l)
  kubernetes-validate --strict --quiet -k 1.30.0 "$TMP/split-$name"/*.yaml >"$TMP/logs/validate-$name" 2>&1 \
    || { cat "$TMP/logs/validate-$name"; fail "kubernetes-validate $o"; }
  # the only objects without a schema must be the operators' custom resources
  if grep "Couldn't find schema" "$TMP/logs/validate-$name" | grep -vE 'kind (Cluster|ScheduledBackup|Certificate|Issuer|ServiceMonitor) '; then
    fail "$o: an object kubernetes-validate has no schema for"
  fi
  python3 deploy/test/manifests.py check "$name" "$TMP/$name.yaml" "$K8S/base" || fail "manifest rules, $o"
  checkov -f "$TMP/$name.yaml" --framework kubernetes --skip-download --compact --quiet -o json \
    >"$TMP/checkov-$name.json" 2>"$TMP/logs/checkov-$name" || true
  python3 - "$TMP/checkov-$name.json" "$name" <<'EOF' || fail "checkov $name"
import json, sys
d = json.load(open(sys.argv[1]))
d = d[0] if isinstance(d, list) else d
s = d["summary"]
for c in d["results"]["failed_checks"]:
    print(f"  FAILED {c['check_id']} {c['resource']}: {c['check_name']}")
print(f"    checkov {sys.argv[2]}: passed {s['passed']}, failed {s['failed']}, skipped {s['skipped']} (each skip's reason is in its annotation)")
sys.exit(1 if s["failed"] or not s["passed"] else 0)
EOF
  ok "$o: $n objects render and validate"
done
# The rules bite: a rendering with an internet egress for the database pods,
# a tag instead of a digest in production, unencrypted backups, or ingest on
# the broker in plaintext fails.
sed 's#cidr: 10.210.0.0/24#cidr: 0.0.0.0/0#' "$TMP/prod.yaml" >"$TMP/neg-egress.yaml"
sed 's#@sha256:UNPINNED-release-sets-the-pushed-digest#:0.1.0#' "$TMP/prod.yaml" >"$TMP/neg-tag.yaml"
grep -v 'encryption: AES256' "$TMP/prod.yaml" >"$TMP/neg-backup.yaml"
sed 's#mqtts://mosquitto:1883#mqtt://mosquitto:1883#' "$TMP/prod.yaml" >"$TMP/neg-mqtt.yaml"
for neg in egress tag backup mqtt; do
  if python3 deploy/test/manifests.py check prod "$TMP/neg-$neg.yaml" "$K8S/base" >"$TMP/logs/neg-$neg" 2>&1; then
    fail "manifests.py accepted a production rendering with the $neg rule broken"
  fi
done
ok "manifests.py refuses database egress to 0.0.0.0/0, a production image by tag, unencrypted WAL/base backups, ingest on the broker without TLS"
# The release gate: the committed prod overlay carries UNPINNED markers (the
# digests are set by the release), so the gate must refuse it, naming each.
if python3 deploy/test/manifests.py pinned "$TMP/prod.yaml" >"$TMP/logs/pinned-prod" 2>&1; then
  fail "release gate accepted the committed prod overlay (its digests are markers)"
fi
ok "release gate refuses the committed prod overlay: $(grep -c 'not pinned' "$TMP/logs/pinned-prod") image references await their release digests"

# ---------------------------------------------------------------- 2. images
step "images: static release build + podman build"
deploy/images/build.sh "$ID" >"$TMP/images.txt" 2>"$TMP/logs/build" || { tail -n 40 "$TMP/logs/build"; fail "image build"; }
[ "$(wc -l <"$TMP/images.txt")" -eq 3 ] || fail "expected 3 images, got $(cat "$TMP/images.txt")"
for img in "$IMG_INGEST" "$IMG_BILLING" "$IMG_GATEWAY"; do
  user=$(podman image inspect --format '{{.Config.User}}' "$img")
  [ "$user" = "10001:10001" ] || fail "$img runs as '$user', not 10001"
  layers=$(podman image inspect --format '{{len .RootFS.Layers}}' "$img")
  size=$(podman image inspect --format '{{.Size}}' "$img")
  ok "$img: user $user, $layers layers, $((size / 1024 / 1024)) MiB, FROM scratch"
done
# The release's pinning step, for real, on a copy of the prod overlay: our two
# images' digests as podman computed them; the upstream images (not pullable
# here) must remain the only ones the gate still refuses.
cp -r "$K8S" "$TMP/k8s-release"
python3 deploy/images/pin.py "$TMP/k8s-release/overlays/prod/kustomization.yaml" \
  "registry.city.example/waterworks/ingest=$(podman image inspect --format '{{.Digest}}' "$IMG_INGEST")" \
  "registry.city.example/waterworks/billing=$(podman image inspect --format '{{.Digest}}' "$IMG_BILLING")" \
  || fail "pin.py"
kubectl kustomize "$TMP/k8s-release/overlays/prod" >"$TMP/prod-release.yaml"
python3 deploy/test/manifests.py pinned "$TMP/prod-release.yaml" >"$TMP/logs/pinned-release" 2>&1 || true
left=$(grep -c 'not pinned' "$TMP/logs/pinned-release" || true)
grep 'not pinned' "$TMP/logs/pinned-release" | grep -vq -e 'eclipse-mosquitto@' -e 'cloudnative-pg/postgresql@' \
  && { cat "$TMP/logs/pinned-release"; fail "pin.py left one of our images unpinned"; }
grep -q "registry.city.example/waterworks/ingest@$(podman image inspect --format '{{.Digest}}' "$IMG_INGEST")" \
  "$TMP/prod-release.yaml" || fail "the pinned rendering does not carry the ingest image's digest"
ok "pin.py pins ingest and billing by their built digests; the gate then refuses only the $left upstream references"
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release

step "edge: systemd unit and config layout"
mkdir -p "$TMP/edge/profiles"
cp deploy/edge/gateway.toml "$TMP/edge/"
cp fixtures/profiles/waterworks-sim-v1.toml "$TMP/edge/profiles/"
"$BIN/waterworks-gateway" check-config "$TMP/edge/gateway.toml" >/dev/null || fail "deploy/edge/gateway.toml"
for u in waterworks-gateway.service waterworks-gateway-container.service; do
  sed -e "s#/usr/local/bin/waterworks-gateway#$BIN/waterworks-gateway#g" -e "s#/usr/bin/podman#$(command -v podman)#g" \
    "deploy/edge/$u" >"$TMP/edge/$u"
  if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$TMP/edge/$u" 2>&1 | grep -v -e 'Failed to .*bus' -e 'not executable' || true)
    [ -z "$out" ] || { echo "$out"; fail "systemd-analyze verify $u"; }
  fi
done
ok "edge gateway.toml valid; units verified$(command -v systemd-analyze >/dev/null || echo ' (no systemd-analyze: skipped verify)')"

# ---------------------------------------------------------------- 3. broker + ACL
step "broker: private mosquitto with the production configuration"
MQ=$TMP/mosquitto
mkdir -p "$MQ/config" "$MQ/data" "$MQ/auth" "$MQ/tls" "$MQ/internal-tls" "$MQ/mqtt-ca"
cp $K8S/base/mosquitto/acl-internal $K8S/base/mosquitto/acl-gateways "$MQ/config/"
printf 'gw-01:%s\n' "pw-$ID-1" >"$MQ/creds"
python3 deploy/mosquitto/gen-acl.py --gateways $K8S/base/mosquitto/gateways.txt --acl "$MQ/config/acl-gateways" \
  --passwd "$MQ/auth/passwd" --credentials "$MQ/creds" --generate-missing --service-user ingest
GW2_PW=$(grep '^gw-02:' "$MQ/creds" | cut -d: -f2-)
INGEST_MQ_PW=$(grep '^ingest:' "$MQ/creds" | cut -d: -f2-)
[ -n "$INGEST_MQ_PW" ] || fail "gen-acl.py --service-user ingest wrote no password for ingest"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$MQ/tls/tls.key" -out "$MQ/tls/tls.crt" -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1
# The internal listener's pair as cert-manager makes it (mosquitto.yaml): a CA
# (the Secret's ca.crt, what ingest trusts) and a certificate it signs, here
# naming localhost (the cluster's names the Service mosquitto).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$MQ/mqtt-ca/ca.key" \
  -out "$MQ/mqtt-ca/ca.crt" -days 1 -subj "/CN=$ID-internal-ca" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$MQ/internal-tls/tls.key" \
  -out "$MQ/internal-tls/tls.csr" -subj /CN=localhost >/dev/null 2>&1
printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$MQ/internal-tls/ext"
openssl x509 -req -in "$MQ/internal-tls/tls.csr" -CA "$MQ/mqtt-ca/ca.crt" -CAkey "$MQ/mqtt-ca/ca.key" \
  -CAcreateserial -days 1 -extfile "$MQ/internal-tls/ext" -out "$MQ/internal-tls/tls.crt" >/dev/null 2>&1
rm -f "$MQ/mqtt-ca/ca.key" "$MQ/mqtt-ca/ca.srl" "$MQ/internal-tls/tls.csr"
openssl verify -CAfile "$MQ/mqtt-ca/ca.crt" "$MQ/internal-tls/tls.crt" >/dev/null || fail "test certificate of the internal listener"
# ingest's containers (uid 10001) read the CA from this directory
chmod 755 "$MQ/mqtt-ca"; chmod 644 "$MQ/mqtt-ca/ca.crt"
MQ_INT=$(free_port); MQ_GW=$(free_port); MQ_TLS=$(free_port)
# internal-listener clients: TLS, the certificate checked against the test CA
INT_TLS=(-h localhost -p "$MQ_INT" --cafile "$MQ/mqtt-ca/ca.crt")
sed -e "s#/mosquitto/#$MQ/#g" \
    -e "s/^listener 1883\$/listener $MQ_INT 127.0.0.1/" \
    -e "s/^listener 1884\$/listener $MQ_GW 127.0.0.1/" \
    -e "s/^listener 8883\$/listener $MQ_TLS 127.0.0.1/" \
    $K8S/base/mosquitto/mosquitto.conf >"$MQ/mosquitto.conf"
grep -q "^listener $MQ_TLS 127.0.0.1" "$MQ/mosquitto.conf" || fail "could not rewrite the listeners"
# mosquitto started as root drops to user mosquitto: let it read its files
chown -R mosquitto "$MQ" 2>/dev/null || chmod -R a+rX "$MQ"
mosquitto -c "$MQ/mosquitto.conf" >"$TMP/logs/mosquitto" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do mosquitto_pub "${INT_TLS[@]}" -u ingest -P "$INGEST_MQ_PW" -t probe -n -q 0 2>/dev/null && break; sleep 0.1; done
kill -0 "${PIDS[-1]}" || fail "mosquitto did not start with the production configuration"
ok "mosquitto up: internal :$MQ_INT (TLS), gateways :$MQ_GW, TLS :$MQ_TLS"

step "broker ACL with real clients"
sub_out=$TMP/acl-sub.out
mosquitto_sub "${INT_TLS[@]}" -i "$ID-aclsub" -u ingest -P "$INGEST_MQ_PW" -q 1 -v \
  -t 'waterworks/v1/+/readings' -t 'waterworks/v1/+/status' >"$sub_out" &
SUBPID=$!; PIDS+=($SUBPID)
# gw-01 subscribes to every ack topic; the ACL delivers only its own.
ack_out=$TMP/acl-ack.out
mosquitto_sub -h 127.0.0.1 -p "$MQ_GW" -i "$ID-acksub" -u gw-01 -P "pw-$ID-1" -q 1 -v -t 'waterworks/v1/+/ack' >"$ack_out" &
ACKPID=$!; PIDS+=($ACKPID)
sleep 0.5
if mosquitto_pub "${INT_TLS[@]}" -q 1 -t probe -m anonymous-probe 2>/dev/null; then
  fail "anonymous client accepted on the internal listener"
fi
# the internal listener speaks only TLS: plaintext is refused even with
# ingest's password, and so is a server certificate the client cannot verify
if mosquitto_pub -h 127.0.0.1 -p "$MQ_INT" -u ingest -P "$INGEST_MQ_PW" -q 1 -t probe -m plaintext-probe 2>/dev/null; then
  fail "plaintext client accepted on the internal listener"
fi
if mosquitto_pub -h localhost -p "$MQ_INT" --cafile "$MQ/tls/tls.crt" -u ingest -P "$INGEST_MQ_PW" -q 1 -t probe \
    -m wrong-ca-probe 2>/dev/null; then
  fail "the internal listener's certificate verified against a CA that did not sign it"
fi
pub() { mosquitto_pub -h 127.0.0.1 -q 1 "$@"; }
pub -p "$MQ_GW" -u gw-01 -P "pw-$ID-1" -t waterworks/v1/gw-02/readings -m "spoofed-by-gw-01" || true
pub -p "$MQ_GW" -u gw-01 -P "pw-$ID-1" -t waterworks/v1/gw-01x/readings -m "prefix-trick-by-gw-01" || true
pub "${INT_TLS[@]}" -t waterworks/v1/gw-01/readings -m "anonymous-internal" 2>/dev/null || true
if pub -p "$MQ_GW" -u gw-01 -P wrong -t waterworks/v1/gw-01/readings -m "bad-password" 2>/dev/null; then
  fail "a wrong password was accepted"
fi
if pub -p "$MQ_GW" -t waterworks/v1/gw-01/readings -m "anonymous-gw-port" 2>/dev/null; then
  fail "anonymous client accepted on the gateway listener"
fi
pub -p "$MQ_GW" -u gw-01 -P "pw-$ID-1" -t waterworks/v1/gw-01/readings -m "own-gw-01"
pub -p "$MQ_GW" -u gw-02 -P "$GW2_PW" -t waterworks/v1/gw-02/status -m "own-gw-02-status"
pub -p "$MQ_TLS" -h localhost --cafile "$MQ/tls/tls.crt" -u gw-02 -P "$GW2_PW" -t waterworks/v1/gw-02/readings -m "own-gw-02-tls"
pub "${INT_TLS[@]}" -u ingest -P "$INGEST_MQ_PW" -t waterworks/v1/gw-01/readings -m "forged-by-ingest" || true
pub -p "$MQ_GW" -u gw-02 -P "$GW2_PW" -t waterworks/v1/gw-01/ack -m "ack-forged-by-gw-02" || true
pub "${INT_TLS[@]}" -u ingest -P "$INGEST_MQ_PW" -t waterworks/v1/gw-02/ack -m "ack-for-gw-02"
pub "${INT_TLS[@]}" -u ingest -P "$INGEST_MQ_PW" -t waterworks/v1/gw-01/ack -m "ack-for-gw-01"
for _ in $(seq 50); do grep -q own-gw-02-tls "$sub_out" && grep -q ack-for-gw-01 "$ack_out" && break; sleep 0.1; done
kill "$SUBPID" "$ACKPID"
grep -qx 'waterworks/v1/gw-01/ack ack-for-gw-01' "$ack_out" || fail "ingest's ack to gw-01 did not reach gw-01"
if grep -E 'gw-02|forged' "$ack_out"; then fail "gw-01 read another gateway's ack, or a forged one"; fi
grep -qx 'waterworks/v1/gw-01/readings own-gw-01' "$sub_out" || fail "gw-01's own reading did not arrive"
grep -qx 'waterworks/v1/gw-02/status own-gw-02-status' "$sub_out" || fail "gw-02's status did not arrive"
grep -qx 'waterworks/v1/gw-02/readings own-gw-02-tls' "$sub_out" || fail "gw-02's TLS publish did not arrive"
if grep -E 'spoofed|prefix-trick|anonymous|bad-password|forged' "$sub_out"; then fail "a forbidden publish was delivered"; fi
ok "gw-01 cannot publish as gw-02 (nor under gw-01x); anonymous refused on both listeners; the internal one refuses plaintext and is verified by the test CA; wrong password refused; ingest publishes acks only, each gateway reads only its own; own prefix, status and TLS delivered"

# ---------------------------------------------------------------- 4. smoke
step "database: private database, per-service roles (roles.sql)"
psql_su postgres -c "CREATE DATABASE \"$DB\"" >/dev/null
sed -e "s/svc_ingest/${ID}_ingest/g" -e "s/svc_billing/${ID}_billing/g" \
    -e "s/svc_backup/${ID}_backup/g" -e "s/svc_owner/${ID}_owner/g" \
    -e "s/DATABASE waterworks /DATABASE \"$DB\" /g" \
    $K8S/base/postgres/roles.sql >"$TMP/roles.sql"
psql_su "$DB" -f "$TMP/roles.sql" >/dev/null || fail "roles.sql"
URL_INGEST="postgres://${ID}_ingest@127.0.0.1:5432/$DB"
URL_BILLING="postgres://${ID}_billing@127.0.0.1:5432/$DB"
URL_BACKUP="postgres://${ID}_backup@127.0.0.1:5432/$DB"
URL_OWNER="postgres://${ID}_owner@127.0.0.1:5432/$DB"
ok "database $DB, roles ${ROLES[*]}"

step "migrations: the waterworks-migrate Job's commands (k8s/base/billing.yaml) in the billing image"
# The services only check their schema at start (migrate_on_start = false).
"${PODMAN[@]}" run --rm --network host --read-only -e DATABASE_URL="$URL_INGEST" "$IMG_BILLING" \
  migrate --schema metering >"$TMP/logs/migrate-metering" 2>&1 || { cat "$TMP/logs/migrate-metering"; fail "migrate --schema metering as the ingest role"; }
"${PODMAN[@]}" run --rm --network host --read-only -e DATABASE_URL="$URL_OWNER" "$IMG_BILLING" \
  migrate --schema billing >"$TMP/logs/migrate-billing" 2>&1 || { cat "$TMP/logs/migrate-billing"; fail "migrate --schema billing as the owner role"; }
"${PODMAN[@]}" run --rm --network host --read-only -e DATABASE_URL="$URL_BILLING" "$IMG_BILLING" \
  migrate --schema all --check >/dev/null 2>"$TMP/logs/migrate-check" || { cat "$TMP/logs/migrate-check"; fail "migrate --check as the billing role"; }
[ "$(psql_su "$DB" -c "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'billing'")" = "${ID}_owner" ] \
  || fail "schema billing is not owned by the owner role"
for sql in "ALTER TABLE billing.postings DISABLE TRIGGER ALL" "DROP TABLE billing.journal_entries" \
           "TRUNCATE billing.audit_log" "UPDATE billing.payments SET amount_krw = 0"; do
  if psql "$URL_BILLING" -qAtX -c "$sql" >/dev/null 2>&1; then fail "the billing role may: $sql"; fi
done
ok "metering migrated as ${ID}_ingest, billing as ${ID}_owner; ${ID}_billing checks them and cannot alter, drop, truncate or update the ledger"

run_ctr() { # NAME IMAGE [podman args...] -- [command args...]
  local name=$1 image=$2; shift 2
  local opts=() 
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift || true
  CONTAINERS+=("$name")
  "${PODMAN[@]}" run -d --name "$name" --network host --read-only --cap-drop ALL \
    --security-opt no-new-privileges "${opts[@]}" "$image" "$@" >/dev/null
}
start_services() { # SUFFIX CLIENT_ID
  local sfx=$1
  ING_PORT=$(free_port); BIL_PORT=$(free_port)
  sed -e "s#^http_listen = .*#http_listen = \"127.0.0.1:$ING_PORT\"#" \
      -e "s#^client_id = .*#client_id = \"$2\"#" \
      -e "s#^subscription = .*#subscription = \"\$share/$ID/waterworks/v1/+/readings\"#" \
      $K8S/base/config/ingest-0.toml >"$TMP/ingest-$sfx.toml"
  sed -e "s#^http_listen = .*#http_listen = \"127.0.0.1:$BIL_PORT\"#" $K8S/base/config/billing.toml >"$TMP/billing-$sfx.toml"
  chmod 644 "$TMP"/*.toml
  run_ctr "$ID-ingest-$sfx" "$IMG_INGEST" -v "$TMP/ingest-$sfx.toml:/etc/waterworks/ingest.toml:ro" \
    -v "$TMP/api-tokens:/run/secrets/waterworks-tokens:ro" -v "$MQ/mqtt-ca:/etc/waterworks-mqtt-ca:ro" \
    -e DATABASE_URL="$URL_INGEST" -e MQTT_URL="mqtts://localhost:$MQ_INT" -e MQTT_PASSWORD="$INGEST_MQ_PW"
  run_ctr "$ID-billing-$sfx" "$IMG_BILLING" -v "$TMP/billing-$sfx.toml:/etc/waterworks/billing.toml:ro" \
    -v "$TMP/api-tokens:/run/secrets/waterworks-tokens:ro" \
    -e DATABASE_URL="$URL_BILLING"
}

step "smoke: ingest and billing images (podman run --network host)"
# The bearer-token directory the Secret waterworks-api-tokens provides in the cluster.
mkdir -p "$TMP/api-tokens"
printf 'name = "deploy-test"\nrole = "viewer"\ntoken = "%s"\n' "$(openssl rand -hex 32)" >"$TMP/api-tokens/deploy-test"
chmod 755 "$TMP/api-tokens"; chmod 644 "$TMP/api-tokens/deploy-test"
start_services run "$ID-ingest-0"
wait_http "http://127.0.0.1:$ING_PORT/ready" 60 "ingest container"
wait_http "http://127.0.0.1:$BIL_PORT/ready" 60 "billing container"
[ "$(psql_su "$DB" -c "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'metering'")" = "${ID}_ingest" ] \
  || fail "schema metering is not owned by the ingest role"

step "smoke: simulated meters -> gateway image -> broker -> ingest -> PostgreSQL"
METERS=6
"$BIN/waterworks" meter-sim --meters $METERS >"$TMP/sim.out" 2>"$TMP/logs/meter-sim" &
PIDS+=($!)
for _ in $(seq 100); do [ "$(wc -l <"$TMP/sim.out")" -ge $METERS ] && break; sleep 0.1; done
[ "$(wc -l <"$TMP/sim.out")" -ge $METERS ] || fail "meter-sim printed no addresses"
{
  echo 'gateway_id = "gw-01"'
  echo 'profiles = ["/usr/share/waterworks/fixtures/profiles/waterworks-sim-v1.toml"]'
  echo '[poll]'
  echo 'interval_s = 2'
  echo '[uplink]'
  echo "url = \"mqtt://127.0.0.1:$MQ_GW\""
  echo "client_id = \"$ID-gw-01\""
  echo 'username = "gw-01"'
  echo "password = \"pw-$ID-1\""
  echo '[spool]'
  echo 'dir = "/var/lib/waterworks-gateway/spool"'
  while IFS=$'\t' read -r meter addr unit; do
    printf '[[meters]]\nmeter_id = "%s"\ntransport = { tcp = "%s" }\nunit_id = %s\nprofile = "waterworks-sim-v1"\n' \
      "$meter" "$addr" "${unit#unit }"
  done <"$TMP/sim.out"
} >"$TMP/gateway.toml"
chmod 644 "$TMP/gateway.toml"
values=$(awk -F'\t' '{printf "%s(\x27%s\x27,\x27gw-01\x27,\x27waterworks-sim-v1\x27)", (NR>1?",":""), $1}' "$TMP/sim.out")
psql_su "$DB" -c "INSERT INTO metering.meters (meter_id, gateway_id, profile_id) VALUES $values" >/dev/null
"${PODMAN[@]}" run --rm --network host -v "$TMP/gateway.toml:/etc/waterworks-gateway/gateway.toml:ro" \
  "$IMG_GATEWAY" check-config /etc/waterworks-gateway/gateway.toml >/dev/null || fail "gateway check-config in its image"
run_ctr "$ID-gateway" "$IMG_GATEWAY" -v "$TMP/gateway.toml:/etc/waterworks-gateway/gateway.toml:ro"
wait_sql 60 "SELECT count(DISTINCT meter_id) = $METERS AND count(*) >= 2 * $METERS FROM metering.readings" \
  "readings of all $METERS meters stored (two rounds)"
wait_sql 20 "SELECT status = 'online' FROM metering.gateways WHERE gateway_id = 'gw-01'" "gateway status online"
curl -fsS -o "$TMP/metrics.txt" "http://127.0.0.1:$ING_PORT/metrics" || fail "ingest /metrics"
grep -q '^ingest_readings_stored_total' "$TMP/metrics.txt" || fail "ingest /metrics lacks ingest_readings_stored_total"
ok "ingest /metrics counts stored readings"
q=$(psql_su "$DB" -c "SELECT count(*) FROM metering.quarantine")
[ "$q" = 0 ] || fail "$q readings quarantined: $(psql_su "$DB" -c "SELECT reason, count(*) FROM metering.quarantine GROUP BY 1")"
# billing's role reads metering's contract, not more
psql "postgres://${ID}_billing@127.0.0.1:5432/$DB" -qAtX -v ON_ERROR_STOP=1 \
  -c "SELECT count(*) FROM metering.period_reads_v1(now() - interval '1 day', now() + interval '1 minute')" | grep -qx $METERS \
  || fail "billing role cannot read metering.period_reads_v1"
if psql "$URL_BILLING" -qAtX -c "DELETE FROM metering.readings" >/dev/null 2>&1; then fail "billing role can delete readings"; fi
if psql "$URL_INGEST" -qAtX -c "SELECT count(*) FROM billing.runs" >/dev/null 2>&1; then fail "ingest role can read billing"; fi
ok "billing role reads period_reads_v1, cannot write metering; ingest role cannot read billing"
"${PODMAN[@]}" run --rm --network host --read-only -e DATABASE_URL="$URL_BILLING" "$IMG_BILLING" \
  billing run --period previous --group A --json >"$TMP/billing-run.json" 2>"$TMP/logs/billing-run" \
  || fail "billing run (the CronJob's command) in the billing image"
ok "billing run --period previous --group A (CronJob command) as the billing role"
# The console (k8s/base/console.yaml runs `waterworks console` from the billing image).
CON_PORT=$(free_port)
run_ctr "$ID-console" "$IMG_BILLING" -e CONSOLE_HTTP_LISTEN="127.0.0.1:$CON_PORT" \
  -e CONSOLE_INGEST_URL="http://127.0.0.1:$ING_PORT" -e CONSOLE_BILLING_URL="http://127.0.0.1:$BIL_PORT" -- console
wait_http "http://127.0.0.1:$CON_PORT/ready" 30 "console container (both APIs reachable)"
curl -fsS -H 'accept-language: ko' "http://127.0.0.1:$CON_PORT/login" -o "$TMP/console-login.html" \
  || fail "console login page"
grep -q '접근 토큰' "$TMP/console-login.html" || fail "console login page is not the Korean sign-in form"
ok "console serves its Korean sign-in page"
# Into a file first: `podman logs | grep -q` fails under pipefail when grep
# stops reading early and podman dies of SIGPIPE.
podman logs "$ID-console" >"$TMP/logs/console-start" 2>&1 || true
grep -q 'notice font loaded' "$TMP/logs/console-start" \
  || fail "console in the billing image has no usable notice PDF font"
ok "console loaded the notice PDF font shipped in the billing image"

step "smoke: SIGTERM stops ingest, billing and the console cleanly"
for c in "$ID-ingest-run" "$ID-billing-run" "$ID-console"; do
  podman stop -t 20 "$c" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$c")
  [ "$code" = 0 ] || fail "$c exited $code after SIGTERM"
done
ok "all three exited 0 after SIGTERM"

# ---------------------------------------------------------------- 5. kube play
step "podman kube play: dev overlay workloads (ingest, billing + ConfigMaps)"
KPORT_I=$(free_port); KPORT_B=$(free_port)
KUBE_YAML=$TMP/kube-play.yaml
python3 deploy/test/manifests.py kubeplay "$TMP/dev.yaml" "$KUBE_YAML" \
  "cfg:0.0.0.0:8081=>127.0.0.1:$KPORT_I" "cfg:0.0.0.0:8082=>127.0.0.1:$KPORT_B" \
  "cfg:mqtts://mosquitto:1883=>mqtts://localhost:$MQ_INT" \
  "cfg:\$share/ingest/=>\$share/$ID/" \
  "cfg:client_id = \"ingest-0\"=>client_id = \"$ID-kube-ingest-0\"" \
  "prefix=>$ID-" \
  "secret:waterworks-db-ingest/DATABASE_URL=>$URL_INGEST" \
  "secret:mosquitto-ingest/password=>$INGEST_MQ_PW" \
  "secret:waterworks-db-billing/DATABASE_URL=>$URL_BILLING" \
  "secretdir:waterworks-api-tokens=>$TMP/api-tokens" \
  "secretdir:mosquitto-internal-tls=>$MQ/mqtt-ca" \
  "field:ingest/metadata.name=>ingest-0"
sed -i "s#localhost/waterworks-\(ingest\|billing\):dev#localhost/waterworks-\1:$ID#" "$KUBE_YAML"
before=$(psql_su "$DB" -c "SELECT count(*) FROM metering.readings")
"${PODMAN[@]}" kube play "$KUBE_YAML" >"$TMP/logs/kube-play" 2>&1 || { cat "$TMP/logs/kube-play"; fail "podman kube play"; }
wait_http "http://127.0.0.1:$KPORT_I/ready" 60 "ingest (kube play)"
wait_http "http://127.0.0.1:$KPORT_B/ready" 60 "billing (kube play)"
wait_sql 30 "SELECT count(*) >= $before + 2 * $METERS FROM metering.readings" "new readings stored through the kube-play ingest"
podman kube down "$KUBE_YAML" >/dev/null 2>&1 || fail "podman kube down"
KUBE_YAML=""
ok "kube play up, smoke passed, kube down"
podman stop -t 10 "$ID-gateway" >/dev/null

# ---------------------------------------------------------------- 6. restore drill
step "restore drill: logical-backup.sh, drop schemas, logical-restore.sh"
# Two databases: the smoke test's (per-service roles, grants) and a month of
# the demo (waterworks demo: readings, bills, the ledger's postings).
snapshot() { # DB
  psql_su "$1" -F ' ' <<'EOF'
SELECT format('SELECT %L, count(*), md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) FROM %I.%I t;',
              n.nspname || '.' || c.relname, '|', '', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('metering', 'billing') AND c.relkind IN ('r', 'p')
 ORDER BY 1
\gexec
EOF
  # the ledger's trial balance (billing/src/reports.rs): per account, and the total
  if [ "$(psql_su "$1" -c "SELECT to_regclass('billing.postings') IS NOT NULL")" = t ]; then
    psql_su "$1" -F ' ' -c "SELECT 'trial_balance', coalesce(ledger_account, 'total'),
        coalesce(sum(amount_krw) FILTER (WHERE amount_krw > 0), 0) AS debit,
        coalesce(-sum(amount_krw) FILTER (WHERE amount_krw < 0), 0) AS credit
      FROM billing.postings GROUP BY ROLLUP (ledger_account) ORDER BY 2"
  fi
  psql_su "$1" -F ' ' -c "SELECT 'default_acl', defaclrole::regrole, defaclnamespace::regnamespace, defaclobjtype, defaclacl::text FROM pg_default_acl ORDER BY 2, 3, 4"
  psql_su "$1" -F ' ' -c "SELECT 'acl', n.nspname, n.nspowner::regrole, coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE nspname IN ('metering','billing') ORDER BY 2"
}
DEMO_DB=${DB}_demo
psql_su postgres -c "CREATE DATABASE \"$DEMO_DB\"" >/dev/null
"$BIN/waterworks" demo --meters 10 --gateways 1 --database-url "$PGHOST_URL/$DEMO_DB" --state-dir "$TMP/demo" \
  >"$TMP/logs/demo" 2>&1 || fail "waterworks demo (drill data)"
mkdir -p "$TMP/backup" "$TMP/backup-keys"
chmod 777 "$TMP/backup"
# The backup key pair (the CronJob mounts only public.pem from the Secret
# waterworks-backup-public-key; private.pem stays in the vault), and a wrong one.
for k in backup wrong; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$TMP/backup-keys/$k.pem" 2>/dev/null
done
openssl pkey -in "$TMP/backup-keys/backup.pem" -pubout -out "$TMP/backup-keys/public.pem"
export BACKUP_PUBLIC_KEY=$TMP/backup-keys/public.pem
for d in "$DB" "$DEMO_DB"; do
  snapshot "$d" >"$TMP/before-$d.txt"
  dump=$(DATABASE_URL="postgres://${ID}_backup@127.0.0.1:5432/$d" BACKUP_DIR="$TMP/backup" \
    sh $K8S/base/postgres/logical-backup.sh) || fail "logical-backup.sh as the backup role ($d)"
  # encrypted: no pg_dump archive header, openssl's instead; nothing readable
  case $dump in *.dump.enc) ;; *) fail "logical-backup.sh wrote $dump, not an encrypted *.dump.enc" ;; esac
  [ -s "${dump%.enc}.key" ] || fail "no key envelope beside $dump"
  [ "$(head -c 8 "$dump")" = Salted__ ] || fail "$dump does not start as an openssl-encrypted file"
  if pg_restore --list "$dump" >/dev/null 2>&1; then fail "pg_restore reads $dump without decrypting: not encrypted"; fi
  psql_su "$d" -c "DROP SCHEMA metering CASCADE; DROP SCHEMA billing CASCADE" >/dev/null 2>&1
  [ "$(psql_su "$d" -c "SELECT count(*) FROM pg_namespace WHERE nspname IN ('metering','billing')")" = 0 ] || fail "schemas not dropped"
  # the wrong private key, and a changed byte in the backup, restore nothing
  if DATABASE_URL="$PGHOST_URL/$d" BACKUP_PRIVATE_KEY="$TMP/backup-keys/wrong.pem" \
      sh $K8S/base/postgres/logical-restore.sh "$dump" metering billing >"$TMP/logs/restore-wrong-key" 2>&1; then
    fail "logical-restore.sh restored with the wrong private key"
  fi
  cp "$dump" "$TMP/backup/altered.dump.enc"; cp "${dump%.enc}.key" "$TMP/backup/altered.dump.key"
  printf 'X' | dd of="$TMP/backup/altered.dump.enc" bs=1 seek=4096 conv=notrunc 2>/dev/null
  if DATABASE_URL="$PGHOST_URL/$d" BACKUP_PRIVATE_KEY="$TMP/backup-keys/backup.pem" \
      sh $K8S/base/postgres/logical-restore.sh "$TMP/backup/altered.dump.enc" >"$TMP/logs/restore-altered" 2>&1; then
    fail "logical-restore.sh restored an altered backup"
  fi
  grep -q 'digest mismatch' "$TMP/logs/restore-altered" || { cat "$TMP/logs/restore-altered"; fail "altered backup: wrong reason"; }
  rm -f "$TMP/backup/altered.dump.enc" "$TMP/backup/altered.dump.key"
  [ "$(psql_su "$d" -c "SELECT count(*) FROM pg_namespace WHERE nspname IN ('metering','billing')")" = 0 ] \
    || fail "a refused restore wrote something"
  DATABASE_URL="$PGHOST_URL/$d" BACKUP_PRIVATE_KEY="$TMP/backup-keys/backup.pem" \
    sh $K8S/base/postgres/logical-restore.sh "$dump" metering billing >"$TMP/logs/restore" 2>&1 \
    || { cat "$TMP/logs/restore"; fail "logical-restore.sh ($d)"; }
  snapshot "$d" >"$TMP/after-$d.txt"
  diff -u "$TMP/before-$d.txt" "$TMP/after-$d.txt" || fail "restored database $d differs"
  rows=$(awk '$1 == "metering.readings" {print $2}' "$TMP/before-$d.txt")
  tb=$(awk '$1 == "trial_balance" && $2 == "total" {print "debit " $3 " = credit " $4}' "$TMP/before-$d.txt")
  ok "$d: encrypted dump $(du -h "$dump" | cut -f1) (wrong key and altered copy refused); $(grep -c '^[a-z_]*\.' "$TMP/before-$d.txt") tables identical (counts, content digests; readings $rows), trial balance identical (${tb:-no postings}), owners and grants too"
  DUMP_OF[$d]=$dump
done
dump=${DUMP_OF[$DB]}
psql "$URL_BILLING" -qAtX -v ON_ERROR_STOP=1 -c "SELECT count(*) FROM metering.period_reads_v1(now() - interval '1 day', now())" >/dev/null \
  || fail "billing role lost its read grant in the restore"

step "restore drill, new cluster + physical: logical dump into a fresh server, pg_basebackup of it, started"
# Losing the whole cluster: a fresh server (initdb, private port), roles.sql,
# the logical dump restored. Then CloudNativePG's method, a physical base
# backup (pg_basebackup -X stream), started as a server of its own. The
# shared server allows no replication connections, hence the private one.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PB=$TMP/pgbase
mkdir -p "$PB"; chown postgres "$PB"
pg_server() { # DATADIR PORT start|stop
  if [ "$3" = start ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$1" -l "$PB/server-$2.log" -w -t 60 \
      -o "-p $2 -k $PB -c listen_addresses=127.0.0.1 -c shared_buffers=32MB -c max_connections=30" start >/dev/null
  else
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null
  fi
}
runuser -u postgres -- "$PGBIN/initdb" -D "$PB/src" -U postgres -A trust --no-sync >"$TMP/logs/initdb" 2>&1 || fail "initdb"
printf "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n" >"$PB/src/pg_hba.conf"
SPORT=$(free_port)
pg_server "$PB/src" "$SPORT" start || fail "private server"
SAVED_URL=$PGHOST_URL
PGHOST_URL="postgres://postgres@127.0.0.1:$SPORT"
psql_su postgres -c "CREATE DATABASE \"$DB\"" >/dev/null
psql_su "$DB" -f "$TMP/roles.sql" >/dev/null
psql_su "$DB" -c "DROP SCHEMA metering; DROP SCHEMA billing" >/dev/null
DATABASE_URL="$PGHOST_URL/$DB" BACKUP_PRIVATE_KEY="$TMP/backup-keys/backup.pem" \
  sh $K8S/base/postgres/logical-restore.sh "$dump" >"$TMP/logs/restore-new" 2>&1 \
  || { cat "$TMP/logs/restore-new"; fail "logical-restore.sh into a fresh server"; }
snapshot "$DB" >"$TMP/after-new-cluster.txt"
diff -u "$TMP/before-$DB.txt" "$TMP/after-new-cluster.txt" || fail "the fresh server's restore differs"
ok "fresh server: roles.sql + dump give identical tables, owners and grants"
pg_basebackup -d "$PGHOST_URL/postgres" -D "$PB/copy" -X stream -c fast --no-sync >"$TMP/logs/basebackup" 2>&1 \
  || fail "pg_basebackup"
"$PGBIN/pg_verifybackup" -n "$PB/copy" >/dev/null 2>&1 || fail "pg_verifybackup"
chown -R postgres "$PB/copy"; chmod 700 "$PB/copy"
pg_server "$PB/src" "$SPORT" stop
CPORT=$(free_port)
pg_server "$PB/copy" "$CPORT" start || fail "the base backup does not start as a server"
PGHOST_URL="postgres://postgres@127.0.0.1:$CPORT"
snapshot "$DB" >"$TMP/after-physical.txt"
pg_server "$PB/copy" "$CPORT" stop
PGHOST_URL=$SAVED_URL
diff -u "$TMP/before-$DB.txt" "$TMP/after-physical.txt" || fail "the physical copy differs"
ok "base backup ($(du -sh "$PB/copy" | cut -f1)) verified and started as a server: identical"
rm -rf "$PB"

start_services restored "$ID-ingest-r"
wait_http "http://127.0.0.1:$ING_PORT/ready" 60 "ingest on the restored database"
wait_http "http://127.0.0.1:$BIL_PORT/ready" 60 "billing on the restored database"
