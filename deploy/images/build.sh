#!/usr/bin/env bash
# Builds the three images from the static release binaries.
#   deploy/images/build.sh [TAG]        (from the repository root; TAG default "dev")
# Env: CARGO_TARGET_DIR (default ~/.cargo-target/waterworks), SKIP_CARGO=1 to
# use binaries already built. Prints the image names on stdout, one a line.
set -euo pipefail
tag=${1:-dev}
root=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$HOME/.cargo-target/waterworks}
triple=x86_64-unknown-linux-gnu
bin="$target_dir/$triple/release"
if [ "${SKIP_CARGO:-0}" != 1 ]; then
  (cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$target_dir" \
     cargo build --release --target "$triple" -p waterworks -p gateway >&2)
fi
for b in waterworks waterworks-gateway; do
  [ -x "$bin/$b" ] || { echo "build.sh: missing $bin/$b" >&2; exit 1; }
  # A scratch image has no loader: the binary must be static.
  if ldd "$bin/$b" >/dev/null 2>&1 && ! ldd "$bin/$b" 2>&1 | grep -q 'not a dynamic\|statically linked'; then
    echo "build.sh: $bin/$b is dynamically linked" >&2; ldd "$bin/$b" >&2; exit 1
  fi
done
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin/waterworks" "$bin/waterworks-gateway" "$ctx/"
strip "$ctx/waterworks" "$ctx/waterworks-gateway" 2>/dev/null || true
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
printf 'root:x:0:0:root:/:/sbin/nologin\nwaterworks:x:10001:10001:waterworks:/nonexistent:/sbin/nologin\n' >"$ctx/passwd"
printf 'root:x:0:\nwaterworks:x:10001:\n' >"$ctx/group"
mkdir -p "$ctx/empty" "$ctx/config" "$ctx/fixtures"
cp "$root"/deploy/config/*.toml "$ctx/config/"
cp -r "$root/fixtures/tariffs" "$root/fixtures/profiles" "$ctx/fixtures/"
# The console (run from the billing image) draws bill notice PDFs with a Korean
# font: Debian's fonts-nanum NanumGothic (SIL Open Font License, its copyright
# file shipped beside it).
font=/usr/share/fonts/truetype/nanum/NanumGothic.ttf
[ -f "$font" ] || { echo "build.sh: missing $font (apt-get install fonts-nanum)" >&2; exit 1; }
mkdir -p "$ctx/fonts"
cp "$font" "$ctx/fonts/"
cp /usr/share/doc/fonts-nanum/copyright "$ctx/fonts/NanumGothic.copyright"
for t in ingest billing gateway; do
  podman build --quiet -f "$root/deploy/images/Containerfile" --target "$t" \
    -t "localhost/waterworks-$t:$tag" "$ctx" >&2
  echo "localhost/waterworks-$t:$tag"
done
