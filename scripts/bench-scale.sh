#!/usr/bin/env bash
# bench-scale.sh — one node holding many DIDs (issue 12), release builds:
# pushes DIDS creates to one didmesh-node, then prints its resident memory,
# the bytes of its data folder, restart-to-serving time (SIGTERM, start,
# /healthz until 200), resolve p99 for random DIDs and the time a fresh
# second node takes to catch up (tests/src/bin/bench-scale.rs does the
# work). Ends with one JSON line:
#   {"dids","rss_bytes","disk_bytes","restart_s","resolve_p99_ms","late_join_s"}
#
# Usage: scripts/bench-scale.sh
# Knobs (environment): DIDS=1000000 CONCURRENCY=64 RESOLVES=5000
#   BASE=<rev>   also run the same steps against the node of commit <rev>
#                (built in a git worktree under target/bench-base/), and
#                print both sets of figures side by side; the JSON line is
#                this build's.
#   BENCH_DIR    where the data folders go (default: the system temp dir).
# Every process it starts is stopped on exit (each run is its own process
# group, killed whatever happens).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export DIDS=${DIDS:-1000000}

echo "building didmesh-node and bench-scale (release)..." >&2
cargo build --release --quiet -p didmesh-node -p didmesh-tests --bin didmesh-node --bin bench-scale

GROUP=""
cleanup() {
    if [[ -n $GROUP ]]; then
        kill -- "-$GROUP" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run LABEL BIN_DIR OUT: runs the driver against the node in BIN_DIR, its
# output shown and kept in OUT.
run() {
    local label=$1 bin_dir=$2 out=$3
    echo "== $label ($DIDS DIDs) =================================================="
    LABEL=$label DIDMESH_BIN_DIR=$bin_dir setsid "$ROOT/target/release/bench-scale" > >(tee "$out") &
    GROUP=$!
    wait "$GROUP"
    GROUP=""
}

OUT_DIR=$(mktemp -d)
if [[ -n ${BASE:-} ]]; then
    rev=$(git rev-parse --short "$BASE")
    tree=$ROOT/target/bench-base/$rev
    if [[ ! -d $tree ]]; then
        mkdir -p "$ROOT/target/bench-base"
        git worktree add --detach "$tree" "$rev" >&2
    fi
    echo "building didmesh-node of $rev (release, in $tree)..." >&2
    (cd "$tree" && CARGO_TARGET_DIR=$ROOT/target/bench-base/target \
        cargo build --release --quiet -p didmesh-node --bin didmesh-node)
    run "base $rev" "$ROOT/target/bench-base/target/release" "$OUT_DIR/base"
    echo
fi
run "this build" "$ROOT/target/release" "$OUT_DIR/new"

if [[ -n ${BASE:-} ]]; then
    echo
    python3 - "$OUT_DIR/base" "$OUT_DIR/new" "$rev" <<'PY'
import json, sys
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}
base, new, rev = last_json(sys.argv[1]), last_json(sys.argv[2]), sys.argv[3]
rows = [("rss_bytes", "resident memory", lambda v: f"{v/2**20:.1f} MiB"),
        ("disk_bytes", "data folder", lambda v: f"{v/2**20:.1f} MiB"),
        ("restart_s", "restart to serving", lambda v: f"{v:.2f} s"),
        ("resolve_p99_ms", "resolve p99", lambda v: f"{v:.2f} ms"),
        ("late_join_s", "late join", lambda v: f"{v:.1f} s")]
print(f"{'figure (' + str(new.get('dids')) + ' DIDs)':<28}{'base ' + rev:>16}{'this build':>16}")
for key, name, fmt in rows:
    b = fmt(base[key]) if key in base else "-"
    n = fmt(new[key]) if key in new else "-"
    print(f"{name:<28}{b:>16}{n:>16}")
PY
fi
# The JSON line of this build, last.
grep '^{' "$OUT_DIR/new" | tail -1
rm -rf "$OUT_DIR"
