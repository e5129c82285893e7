#!/usr/bin/env bash
# Generates the Python stubs of proto/castway/v1 into python/castway/v1 (or into $1/castway/v1):
# *_pb2.py and *_pb2_grpc.py with grpcio-tools, *.pyi with mypy-protobuf. The generated files are
# committed; ci/check-protos.sh fails when they drift from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-python}"
venv="$PWD/.venv/bin"
mkdir -p "$out/castway/v1"
PATH="$venv:$PATH" "$venv/python" -m grpc_tools.protoc -I proto \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" \
  proto/castway/v1/*.proto 2> >(grep -v "^Writing mypy to" >&2)
