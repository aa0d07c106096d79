#!/usr/bin/env python3
"""Pins images by digest in a kustomization's `images:` table (the release
pipeline's step after pushing, or after reviewing an upstream image):

    deploy/images/pin.py deploy/k8s/overlays/prod/kustomization.yaml \\
        registry.city.example/waterworks/ingest=sha256:<64 hex> ...

Each NAME must already have an entry with a `digest:` line (the committed
UNPINNED marker or an older digest); only that line changes, comments stay.
Digests come from the registry after the push (`podman push --digestfile`,
`skopeo inspect --format '{{.Digest}}' docker://NAME:TAG`), never typed in.
Then `manifests.py pinned` on the rendering must pass (deploy/README.md).
"""
import re
import sys


def pin(path, pairs):
    text = open(path, encoding="utf-8").read()
    for pair in pairs:
        name, _, digest = pair.partition("=")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            sys.exit(f"pin.py: {pair!r}: the digest must be sha256:<64 hex>")
        entry = re.compile(r"(- name: " + re.escape(name) + r"\n(?:[ \t]+#.*\n)*[ \t]+digest: )(\S+)")
        text, n = entry.subn(lambda m: m.group(1) + digest, text)
        if n != 1:
            sys.exit(f"pin.py: {path} has no single `- name: {name}` entry with a digest line")
    open(path, "w", encoding="utf-8").write(text)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pin(sys.argv[1], sys.argv[2:])
