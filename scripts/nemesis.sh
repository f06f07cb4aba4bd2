#!/usr/bin/env bash
# Jepsen-style nemesis run (issue 13): 5 didmesh nodes in network namespaces,
# found by name, under a steady load of DID creates, updates and logins,
# while a seeded nemesis cuts random partitions, heals them, SIGKILLs and
# restarts nodes and skews their clocks (libfaketime, within +-120 s; the
# ledger allows 300 s). At the end it checks and prints: every acknowledged
# op on every node, one digest everywhere, the same head for every DID (the
# fork rule's winner) everywhere, logins on every side of every cut.
# The driver is tests/src/bin/nemesis.rs.
#
#   scripts/nemesis.sh            # default run: 5 minutes of faults
#   scripts/nemesis.sh --short    # ~2-3 minutes in all (scripts/test.sh)
#   scripts/nemesis.sh --long     # 20 minutes of faults
#   SEED=1234 scripts/nemesis.sh --short   # replay a seed (printed by every run)
#   scripts/nemesis.sh --duration 600 --nodes 7 --max-skew 200
#
# Needs root, iproute2 and libfaketime (apt-get install faketime).
# Exit status: 0 when every check passed; the data folders and node logs of
# a failed run are kept and their path printed.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=300
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) duration=100 ;;
    --long) duration=1200 ;;
    --duration) duration="$2"; shift ;;
    --nodes|--max-skew|--seed) args+=("$1" "$2"); shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "nemesis.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$(id -u)" != 0 ]; then
  echo "nemesis.sh: needs root (network namespaces)" >&2; exit 2
fi
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "nemesis.sh: libfaketime is missing: apt-get install faketime" >&2; exit 2
fi

cargo build -q -p didmesh-node --bin didmesh-node -p didmesh-tests --bin nemesis
target="${CARGO_TARGET_DIR:-target}/debug"
export DIDMESH_BIN_DIR="${DIDMESH_BIN_DIR:-$target}"
exec "$target/nemesis" --duration "$duration" "${args[@]}"
