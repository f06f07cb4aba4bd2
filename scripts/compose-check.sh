#!/usr/bin/env bash
# compose-check.sh — docker-compose.yml and the Dockerfile checked without a
# Docker engine: every command, flag, port and volume against the binaries'
# --help and scripts/cluster.sh (scripts/compose_check.py has the list), plus
# a self-test that typical mistakes are caught.
#
# Builds nothing: expects didmesh-node and home-api in $DIDMESH_BIN_DIR,
# target/debug or target/release; runs sidecars/setup.sh for the .venv
# (PyYAML, gunicorn and render.py's interpreter) and node.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/sidecars/setup.sh" >&2
exec "$ROOT/.venv/bin/python" "$ROOT/scripts/compose_check.py" "$@"
