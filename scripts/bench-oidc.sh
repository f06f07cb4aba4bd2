#!/usr/bin/env bash
# bench-oidc.sh — full OpenID code-flow sign-ins per second against one node,
# beside plain DID logins in the same run, as a ratio.
#
# Starts a release `didmesh-node --no-p2p --auth-rate 0 --ops-rate 0` in a
# temporary folder, makes a wallet and a DID, registers three public clients
# (ID tokens RS256, ES256, EdDSA), then runs, ROUNDS times in rotation:
#   didmesh bench login                     (challenge -> sign -> token)
#   didmesh bench oidc  --client-id <alg>   (authorize -> page request ->
#       challenge -> sign -> complete -> code -> token -> ID token verified)
# and prints one line per run and the median per kind. The load generator
# runs on the same 2 cores as the node. Stops everything it started on exit.
#
# Usage: scripts/bench-oidc.sh
# Knobs: CONCURRENCY=32 DURATION=10 ROUNDS=2 ALGS="RS256 ES256 EdDSA"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
ALGS=${ALGS:-RS256 ES256 EdDSA}
WORK=$(mktemp -d -t bench-oidc.XXXXXX)
PID=""
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p didmesh-node -p didmesh-client)
BIN=$ROOT/target/release
PORT=$((20000 + RANDOM % 20000))
NODE=http://localhost:$PORT

"$BIN/didmesh-node" --data-dir "$WORK/node" --http-addr "127.0.0.1:$PORT" \
  --public-url "$NODE" --issuer "$NODE" --no-p2p --auth-rate 0 --ops-rate 0 \
  >"$WORK/node.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -fsS "$NODE/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$NODE/healthz" >/dev/null || { cat "$WORK/node.log" >&2; exit 2; }

export DIDMESH_PASSPHRASE=bench-oidc-passphrase
W=(--wallet "$WORK/rp.wallet")
"$BIN/didmesh" "${W[@]}" wallet init >/dev/null 2>&1
"$BIN/didmesh" "${W[@]}" did create --node "$NODE" >/dev/null 2>&1
declare -A CLIENT
for alg in $ALGS; do
  CLIENT[$alg]=$("$BIN/didmesh" "${W[@]}" client register --node "$NODE" --name "bench $alg" \
    --redirect-uri "http://localhost:9/cb" --id-token-alg "$alg" 2>/dev/null | sed -n 's/^client_id: //p')
done

cat >"$WORK/fmt.py" <<'EOF'
import json, sys
r = json.loads(sys.stdin.read())
l = r["latency_ms"]
print(f"{sys.argv[1]:<12} {r['per_sec']:>8.0f}/s   p50 {l['p50']:>6.1f} ms   p99 {l['p99']:>6.1f} ms   errors {r['errors']}")
EOF
run() { # kind args... -> one line: kind, flows/s, p50, p99, errors
  local kind=$1; shift
  "$BIN/didmesh" "${W[@]}" bench "$@" --node "$NODE" --concurrency "$CONCURRENCY" \
    --duration "$DURATION" 2>/dev/null | tail -1 | python3 "$WORK/fmt.py" "$kind"
}

echo "node $NODE, concurrency $CONCURRENCY, ${DURATION}s per run, $ROUNDS rounds" >&2
for r in $(seq 1 "$ROUNDS"); do
  run "login" login
  for alg in $ALGS; do
    run "oidc $alg" oidc --client-id "${CLIENT[$alg]}" --redirect-uri "http://localhost:9/cb"
  done
done
