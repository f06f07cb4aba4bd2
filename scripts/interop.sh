#!/usr/bin/env bash
# interop.sh — the interop matrix against a real didmesh network.
#
# One table: rows = verifiers (the Rust auth-layer in home-api, Envoy
# jwt_authn, the aws-jwt-verify Node.js proxy, Flask + PyJWT), columns = token
# variants (valid, none, expired, tampered, wrong-aud, wrong-iss, unknown-kid,
# alg-none, hs256-pem, hs256-raw, foreign-member-kid, foreign-own-kid). Then a
# member is added to the network after the verifiers started, and each must
# accept that member's tokens without a restart; how long each took is printed.
#
# What it starts, all on 127.0.0.1, all stopped on exit: a 2-member network
# (`didmesh-node init-network --nodes 2`; node1 over http, where the `didmesh`
# CLI logs in; node2 over https with a certificate from
# sidecars/testkit/local-ca.sh, whose JWKS the three sidecars read; the two
# replicate over libp2p), home-api --auth jwt, home-api --auth sidecar behind
# Envoy and behind aws-jwt-verify, and the Flask app. Every verifier runs in
# optional mode: no token -> 200 with the public view.
# The driver is sidecars/interop/network.py (python -m interop.network --help).
#
# Builds nothing: expects didmesh-node, home-api and didmesh in
# $DIDMESH_BIN_DIR (default target/debug), e.g. after
#   cargo build -p didmesh-node -p home-api -p didmesh-client
# Runs sidecars/setup.sh (the .venv, Envoy, npm ci; a no-op when up to date).
#
# Usage: scripts/interop.sh [--envoy-cache-seconds N] [--json FILE] [--keep] [--work DIR]
# Exit status: 0 all matched; 1 a mismatch or a verifier that never accepted
# the new member; 2 setup error.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${DIDMESH_BIN_DIR:-$ROOT/target/debug}
BIN_DIR=$(cd "$BIN_DIR" 2>/dev/null && pwd) || { echo "interop: no folder ${DIDMESH_BIN_DIR:-$ROOT/target/debug}" >&2; exit 2; }

for bin in didmesh-node home-api didmesh; do
    [[ -x $BIN_DIR/$bin ]] || {
        echo "interop: $BIN_DIR/$bin is missing: cargo build -p didmesh-node -p home-api -p didmesh-client" >&2
        exit 2
    }
done
command -v openssl >/dev/null || { echo "interop: openssl is needed for the local CA" >&2; exit 2; }

bash "$ROOT/sidecars/setup.sh" >&2 || exit 2
cd "$ROOT/sidecars"
# exec: the driver stops everything it started itself (also on SIGTERM/Ctrl-C).
exec "$ROOT/.venv/bin/python" -m interop.network --bin-dir "$BIN_DIR" "$@"
