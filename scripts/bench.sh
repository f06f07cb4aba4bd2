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
# With BASE=<git rev>, the same replication bench also runs for that
# revision (built in a git worktree under target/bench-base, its own target
# dir) in the same run, and each figure is printed beside the base's.
#
# Usage: scripts/bench.sh            BASE=HEAD~1 scripts/bench.sh
# Knobs (environment): LATENCY_SAMPLES=300 SUSTAINED_OPS=20000 CONCURRENCY=64
#                      DIVERGENCE=10000 (ops on both sides of the cut; the
#                      JSON key stays converge_10k_s, the table names N),
#                      SKIP_HOME=1 (replication only), ONLY=1234 (parts of
#                      the replication bench), BASE=<rev>
# The last line of output is one JSON object with this tree's figures:
#   {"replicated_ops_per_s": N, "converge_10k_s": S, "propagation_p99_ms": MS}
# (null for a figure whose part did not run).
# Every process it starts is stopped on exit (each replication bench runs in
# its own process group, which is killed whatever happens).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

GROUP=""
cleanup() {
    if [[ -n $GROUP ]]; then
        kill -- "-$GROUP" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs bench-replication from build dir $1 (binaries in $1/release), its
# output teed to file $2.
replication() {
    local bin_dir=$1 out=$2
    DIDMESH_BIN_DIR=$bin_dir/release setsid "$bin_dir/release/bench-replication" > >(tee "$out") &
    GROUP=$!
    wait "$GROUP"
    GROUP=""
}

# The three headline figures of a bench-replication output file, as
# "ops_per_s converge_s p99_ms" (a dash for a part that did not run).
figures() {
    local f=$1 ops conv p99
    ops=$(sed -nE 's/.* ([0-9.]+) ops\/s replicated to every node.*/\1/p' "$f" | tail -1)
    conv=$(sed -nE 's/^3\. divergence:.* in ([0-9.]+) s \(restart included\).*/\1/p' "$f" | tail -1)
    p99=$(sed -nE 's/.* p99 ([0-9.]+) ms .*/\1/p' "$f" | tail -1)
    echo "${ops:--} ${conv:--} ${p99:--}"
}

echo "building didmesh-node and bench-replication (release)..." >&2
cargo build --release --quiet -p didmesh-node -p didmesh-tests --bins

OUT=$(mktemp -d)
BASE_FIGURES=""
if [[ -n ${BASE:-} ]]; then
    # One git worktree per base commit, as scripts/bench-scale.sh makes
    # them, and one target dir for all of them. Never `git -C` a folder
    # that is not a worktree of its own: git would find the main repo
    # above it and check the base out over this work tree.
    rev=$(git rev-parse --verify "$BASE^{commit}")
    WT=$ROOT/target/bench-base/$(git rev-parse --short "$rev")
    if [[ ! -e $WT/.git ]]; then
        mkdir -p "$ROOT/target/bench-base"
        git worktree add --quiet --detach "$WT" "$rev"
    fi
    BASE_TARGET=$ROOT/target/bench-base/target
    echo "building the base ${rev:0:12} in $WT (release)..." >&2
    (cd "$WT" && CARGO_TARGET_DIR=$BASE_TARGET cargo build --release --quiet -p didmesh-node -p didmesh-tests --bins)
    echo "== replication, base ${rev:0:12} ==============================================="
    replication "$BASE_TARGET" "$OUT/base.txt"
    BASE_FIGURES=$(figures "$OUT/base.txt")
fi

echo "== replication ==========================================================="
replication "$ROOT/target" "$OUT/new.txt"
read -r OPS CONV P99 <<<"$(figures "$OUT/new.txt")"
DIV_LABEL="converge after $(( ${DIVERGENCE:-10000} / 1000 ))k divergence (s)"

echo
echo "== headline figures (this tree${BASE:+ vs base $BASE}) ========================="
if [[ -n $BASE_FIGURES ]]; then
    read -r B_OPS B_CONV B_P99 <<<"$BASE_FIGURES"
    printf '%-34s %12s %12s\n' figure now base
    printf '%-34s %12s %12s\n' "replicated ops/s (5 nodes)" "$OPS" "$B_OPS"
    printf '%-34s %12s %12s\n' "$DIV_LABEL" "$CONV" "$B_CONV"
    printf '%-34s %12s %12s\n' "propagation p99 (ms)" "$P99" "$B_P99"
else
    printf '%-34s %12s\n' figure now
    printf '%-34s %12s\n' "replicated ops/s (5 nodes)" "$OPS"
    printf '%-34s %12s\n' "$DIV_LABEL" "$CONV"
    printf '%-34s %12s\n' "propagation p99 (ms)" "$P99"
fi

if [[ -z ${SKIP_HOME:-} ]]; then
    echo
    echo "== home-api =============================================================="
    "$ROOT/scripts/bench-home.sh"
fi

json() { [[ $1 == - ]] && echo null || echo "$1"; }
rm -rf "$OUT"
echo "{\"replicated_ops_per_s\": $(json "$OPS"), \"converge_10k_s\": $(json "$CONV"), \"propagation_p99_ms\": $(json "$P99")}"
