#!/bin/sh
# Install the field gateway on a bare Linux box (run as root on the box).
#   install.sh BINARY [PROFILE...]
# BINARY: the static waterworks-gateway (target/x86_64-unknown-linux-gnu/release,
# or the aarch64 build for ARM boxes). Idempotent; never overwrites an existing
# gateway.toml or password.
set -eu
bin=$1; shift
here=$(cd "$(dirname "$0")" && pwd)
getent group waterworks-gateway >/dev/null || groupadd --system waterworks-gateway
getent passwd waterworks-gateway >/dev/null || useradd --system --gid waterworks-gateway \
  --home-dir /var/lib/waterworks-gateway --shell /usr/sbin/nologin waterworks-gateway
install -m 0755 "$bin" /usr/local/bin/waterworks-gateway
install -d -m 0750 -o root -g waterworks-gateway /etc/waterworks-gateway /etc/waterworks-gateway/profiles
for p in "$@"; do install -m 0644 "$p" /etc/waterworks-gateway/profiles/; done
[ -e /etc/waterworks-gateway/gateway.toml ] || install -m 0640 -o root -g waterworks-gateway "$here/gateway.toml" /etc/waterworks-gateway/gateway.toml
install -m 0644 "$here/waterworks-gateway.service" /etc/systemd/system/waterworks-gateway.service
systemctl daemon-reload
echo "edit /etc/waterworks-gateway/gateway.toml, then: systemctl enable --now waterworks-gateway"
