#!/usr/bin/env bash
# bench.sh — the project's benchmarks, release builds, one after the other:
#
#   1. bench-replication (tests/src/bin/bench-replication.rs): a cluster of
#      real didmesh-node processes on loopback; propagation latency of one op
#      to all 5 nodes (p50/p90/p99), sustained ops/s replicated to all 5,
#      convergence after a 10,000-op divergence, and bytes exchanged by
#      reconciliation against the number of differing ops.
#   2. scripts/bench-home.sh: home-api throughput with and without JWT
#      verification.
#
# Usage: scripts/bench.sh
# Knobs (environment): LATENCY_SAMPLES=300 SUSTAINED_OPS=20000 CONCURRENCY=64
#                      SKIP_HOME=1 (replication only)
# Every process it starts is stopped on exit (the replication bench runs in
# its own process group, which is killed whatever happens).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

echo "building didmesh-node and bench-replication (release)..." >&2
cargo build --release --quiet -p didmesh-node -p didmesh-tests --bins

GROUP=""
cleanup() {
    if [[ -n $GROUP ]]; then
        kill -- "-$GROUP" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== replication ==========================================================="
DIDMESH_BIN_DIR=$ROOT/target/release setsid "$ROOT/target/release/bench-replication" &
GROUP=$!
wait "$GROUP"
GROUP=""

if [[ -z ${SKIP_HOME:-} ]]; then
    echo
    echo "== home-api =============================================================="
    "$ROOT/scripts/bench-home.sh"
fi
