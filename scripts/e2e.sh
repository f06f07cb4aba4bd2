#!/usr/bin/env bash
# End-to-end walk-through on real processes: a node, the wallet CLI, home-api,
# and PyJWT as an independent verifier of the token.
#
#   scripts/e2e.sh            (expects target/debug binaries and .venv; test.sh prepares both)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${DIDMESH_BIN_DIR:-$root/target/debug}
py=$root/.venv/bin/python
work=$(mktemp -d /tmp/didmesh-e2e.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "e2e: $1 never answered" >&2; return 1; }

http=$(free_port); app=$(free_port)
node=http://127.0.0.1:$http
RUST_LOG=warn "$bin/didmesh-node" --data-dir "$work/node" --http-addr "127.0.0.1:$http" --no-p2p >"$work/node.log" 2>&1 &
pids+=($!)
wait_http "$node/healthz"
"$bin/home-api" --listen "127.0.0.1:$app" --jwks-url "$node/.well-known/jwks.json" \
  --issuer https://didmesh.local --audience home-api >"$work/home.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$app/healthz"

export DIDMESH_PASSPHRASE="e2e passphrase"
wallet=$work/wallet.json
"$bin/didmesh" --wallet "$wallet" wallet init >/dev/null
if grep -q "$DIDMESH_PASSPHRASE" "$wallet"; then echo "e2e: passphrase found in the wallet file" >&2; exit 1; fi
did=$("$bin/didmesh" --wallet "$wallet" did create --node "$node")
echo "e2e: registered $did"
"$bin/didmesh" --wallet "$wallet" login --node "$node" --audience home-api >"$work/token"
"$py" "$root/scripts/pyjwt_check.py" "$node" "$work/token" home-api "$did"

body=$("$bin/didmesh" --wallet "$wallet" get "http://127.0.0.1:$app/api/activities/home" --node "$node")
echo "$body" | grep -q "\"user\":\"$did\"" || { echo "e2e: home-api did not personalize: $body" >&2; exit 1; }
anon=$(curl -fsS "http://127.0.0.1:$app/api/activities/home")
if echo "$anon" | grep -q '"user"'; then echo "e2e: anonymous call was personalized" >&2; exit 1; fi
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$work/token")x" "http://127.0.0.1:$app/api/activities/home")
[[ $code == 401 ]] || { echo "e2e: tampered token got $code" >&2; exit 1; }
if grep -q "$(cut -d. -f3 "$work/token")" "$work/node.log" "$work/home.log"; then echo "e2e: a token reached a log" >&2; exit 1; fi
echo "e2e: ok (wallet -> DID -> login -> PyJWT -> home-api personalized, anonymous public, tampered 401, no token in logs)"
