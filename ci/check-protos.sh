#!/usr/bin/env bash
# Fails when the committed stubs in python/castway/v1 differ from what proto/ generates.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bash ci/gen-protos.sh "$tmp"
status=0
for f in "$tmp"/castway/v1/*; do
  committed="python/castway/v1/$(basename "$f")"
  if ! diff -u "$committed" "$f" >/dev/null 2>&1; then
    echo "stub drift: $committed differs from what proto/ generates" >&2
    status=1
  fi
done
for f in python/castway/v1/*_pb2*; do
  [ -e "$tmp/castway/v1/$(basename "$f")" ] || { echo "stub drift: $f has no .proto" >&2; status=1; }
done
[ "$status" = 0 ] && echo "protos: generated stubs match proto/"
exit "$status"
