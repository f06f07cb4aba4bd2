#!/usr/bin/env bash
# bench-verifiers.sh — the home endpoint through each of the four token
# verifiers, under the same wrk load, in the same run, with the same token:
#
#   rust            home-api --auth jwt (the Rust auth-layer, in process)
#   envoy           Envoy jwt_authn -> home-api --auth sidecar
#   aws-jwt-verify  Node.js proxy on aws-jwt-verify -> home-api --auth sidecar
#   flask           the Flask app (PyJWT) under gunicorn
#
# against a real 2-member network (JWKS over http for the Rust layer, over
# https for the sidecars) and a real token from the `didmesh` CLI. Prints
# req/s, p50 and p99 per verifier and each one's req/s as a ratio to the
# Rust layer. Targets: rust >= 3x aws-jwt-verify, rust >= 1x envoy.
# The driver is sidecars/interop/bench.py (python -m interop.bench --help).
#
# Builds the release binaries (cargo build --release -p home-api
# -p didmesh-node -p didmesh-client) unless DIDMESH_BIN_DIR is set; installs
# wrk with apt-get when missing (as root); runs sidecars/setup.sh.
#
# Usage: scripts/bench-verifiers.sh [--duration 10s] [--rounds 3] [--connections 64]
#                                   [--envoy-concurrency N] [--json FILE] [--keep]
# Exit status: 0 targets met; 1 a target missed or errors under load; 2 setup error.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -z ${DIDMESH_BIN_DIR:-} ]]; then
    echo "bench-verifiers: cargo build --release -p home-api -p didmesh-node -p didmesh-client" >&2
    (cd "$ROOT" && cargo build --release --quiet -p home-api -p didmesh-node -p didmesh-client) || exit 2
    BIN_DIR=$ROOT/target/release
else
    BIN_DIR=$DIDMESH_BIN_DIR
fi

if ! command -v wrk >/dev/null; then
    [[ $(id -u) -eq 0 ]] || { echo "bench-verifiers: wrk is missing (apt-get install -y wrk)" >&2; exit 2; }
    echo "bench-verifiers: installing wrk" >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } || exit 2
fi
command -v openssl >/dev/null || { echo "bench-verifiers: openssl is needed for the local CA" >&2; exit 2; }

bash "$ROOT/sidecars/setup.sh" >&2 || exit 2
cd "$ROOT/sidecars"
exec "$ROOT/.venv/bin/python" -m interop.bench --bin-dir "$BIN_DIR" "$@"
