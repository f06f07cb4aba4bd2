#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#   FUZZ_TARGETS="op_decode sync_codec" scripts/fuzz.sh 30   # a subset
#
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz when it
# is missing. Each target starts from its committed seeds (fuzz/corpus/<t>/,
# read only) plus a scratch folder that collects what this run finds, so the
# committed corpus stays small. Exits non-zero on any finding (crash, panic,
# broken property, timeout, leak, out-of-memory) and names the input that
# reproduces it: `cargo +nightly fuzz run <t> <file>` in fuzz/.
set -euo pipefail

SECS="${1:-60}"
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

TARGETS="${FUZZ_TARGETS:-$(cargo fuzz list)}"
echo "fuzz: building $(echo $TARGETS | wc -w) targets (first build: several minutes)" >&2
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/didmesh-fuzz.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
build_start=$(date +%s)
for t in $TARGETS; do
  if ! cargo +nightly fuzz build "$t" >"$SCRATCH/build.log" 2>&1; then
    tail -n 60 "$SCRATCH/build.log" >&2
    echo "fuzz: the build of $t failed" >&2
    exit 1
  fi
done
echo "fuzz: built in $(( $(date +%s) - build_start )) s" >&2

failed=()
for t in $TARGETS; do
  mkdir -p "$SCRATCH/$t" "artifacts/$t" "corpus/$t"
  log="$SCRATCH/$t.log"
  start=$(date +%s)
  # -timeout: an input slower than 10 s is a finding (a hang);
  # -rss_limit_mb: more than 2 GiB is a finding (an allocation bomb).
  if cargo +nightly fuzz run "$t" "$SCRATCH/$t" "corpus/$t" -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -m1 -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
    echo "fuzz: $t ok ($(( $(date +%s) - start )) s, $execs runs, ${cov:-cov: ?})"
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; last lines of its log:" >&2
    tail -n 40 "$log" >&2
    cp "$log" "artifacts/$t/last-run.log"
    echo "fuzz: reproduce with: (cd fuzz && cargo +nightly fuzz run $t artifacts/$t/<crash file>)" >&2
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz: all targets ran ${SECS} s each without a finding"
