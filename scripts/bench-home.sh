#!/usr/bin/env bash
# bench-home.sh — throughput of home-api with in-process JWT verification
# (--auth jwt) against the same binary with no authentication (--auth off),
# under the same wrk load, in the same run. Target: jwt/off >= 0.8.
#
# Self-contained: builds home-api (release), makes an Ed25519 key, a JWKS and
# a token with Python (pyjwt + cryptography in <repo>/.venv), serves the JWKS
# with `python3 -m http.server` on loopback, starts both home-api instances,
# runs wrk against each (alternating, ROUNDS times) with the same
# `Authorization: Bearer` header, prints a table, and stops everything it
# started on exit (trap), whatever happens.
#
# Usage: scripts/bench-home.sh
# Knobs (environment): DURATION=10s ROUNDS=3 CONNECTIONS=64 THREADS=1
#                      WARMUP=2s TARGET=0.8
# Exit status: 0 if the ratio meets TARGET, 1 if not, 2 on a setup error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-2s}
TARGET=${TARGET:-0.8}
ISSUER=didmesh:bench
AUDIENCE=home-api
PATH_HOME=/api/activities/home

WORK=$(mktemp -d -t bench-home.XXXXXX)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "bench-home: $*" >&2
    exit 2
}

# --- tools -------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "wrk is missing (apt-get install -y wrk)"
    echo "installing wrk..." >&2
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
command -v curl >/dev/null || die "curl is missing"

VENV=$ROOT/.venv
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet pyjwt cryptography
fi
PY=$VENV/bin/python

echo "building home-api (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p home-api)
BIN=$ROOT/target/release/home-api
[[ -x $BIN ]] || die "no $BIN after the build"

# --- key, JWKS, token --------------------------------------------------------
mkdir -p "$WORK/www/.well-known"
"$PY" - "$WORK" "$ISSUER" "$AUDIENCE" <<'EOF'
import base64, json, os, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

work, issuer, audience = sys.argv[1:4]
key = Ed25519PrivateKey.generate()
raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "bench-1",
                  "alg": "EdDSA", "use": "sig"}]}
with open(os.path.join(work, "www/.well-known/jwks.json"), "w") as f:
    json.dump(jwks, f)
now = int(time.time())
claims = {"iss": issuer, "sub": "did:mesh:benchbenchbenchbenchbenchbench",
          "aud": audience, "iat": now, "nbf": now, "exp": now + 3600,
          "jti": os.urandom(16).hex(), "auth_time": now, "amr": ["did-sig"]}
token = jwt.encode(claims, key, algorithm="EdDSA",
                   headers={"kid": "bench-1", "typ": "JWT"})
with open(os.path.join(work, "token"), "w") as f:
    f.write(token)
EOF
TOKEN=$(<"$WORK/token")

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
JWKS_PORT=$(free_port)
JWT_PORT=$(free_port)
OFF_PORT=$(free_port)

# --- processes ---------------------------------------------------------------
"$PY" -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$WORK/www" \
    >"$WORK/jwks.log" 2>&1 &
PIDS+=($!)

wait_http() { # url
    local i
    for i in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}
wait_http "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json"

RUST_LOG=warn "$BIN" --auth jwt --listen "127.0.0.1:$JWT_PORT" \
    --jwks-url "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json" \
    --issuer "$ISSUER" --audience "$AUDIENCE" >"$WORK/jwt.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$BIN" --auth off --listen "127.0.0.1:$OFF_PORT" >"$WORK/off.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$JWT_PORT/healthz"
wait_http "http://127.0.0.1:$OFF_PORT/healthz"

# The jwt instance must really authenticate (else we would time 401s or the
# anonymous path), and the off instance must really ignore the token.
AUTH_HEADER="Authorization: Bearer $TOKEN"
curl -fsS -H "$AUTH_HEADER" "http://127.0.0.1:$JWT_PORT$PATH_HOME" | grep -q '"user"' \
    || die "the jwt instance did not accept the benchmark token"
if curl -fsS -H "$AUTH_HEADER" "http://127.0.0.1:$OFF_PORT$PATH_HOME" | grep -q '"user"'; then
    die "the off instance authenticated a caller"
fi
[[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer x.y.z' \
    "http://127.0.0.1:$JWT_PORT$PATH_HOME") == 401 ]] || die "the jwt instance accepted a bad token"

# --- load --------------------------------------------------------------------
run_wrk() { # mode port duration out
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3" --latency -H "$AUTH_HEADER" \
        "http://127.0.0.1:$2$PATH_HOME" >"$4"
}

# Prints "rps avg p50 p99 non2xx" from a wrk report.
parse_wrk() {
    awk '
        /Requests\/sec:/ { rps = $2 }
        /^ +Latency / && !lat { avg = $2; lat = 1 }
        /^ +50%/ { p50 = $2 }
        /^ +99%/ { p99 = $2 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { bad = bad "+sock" }
        END { printf "%s %s %s %s %s\n", rps, avg, p50, p99, (bad == "" ? 0 : bad) }
    ' "$1"
}

echo "warming up ($WARMUP each)..." >&2
run_wrk off "$OFF_PORT" "$WARMUP" /dev/null
run_wrk jwt "$JWT_PORT" "$WARMUP" /dev/null

echo "measuring: $ROUNDS rounds x $DURATION per mode, wrk -t$THREADS -c$CONNECTIONS, $(nproc) cores" >&2
declare -A SUM=([off]=0 [jwt]=0)
ROWS=()
for round in $(seq "$ROUNDS"); do
    # Alternate the order so neither mode always runs on a warmer machine.
    if ((round % 2)); then order=(off jwt); else order=(jwt off); fi
    for mode in "${order[@]}"; do
        port=$OFF_PORT
        [[ $mode == jwt ]] && port=$JWT_PORT
        out=$WORK/wrk-$mode-$round.txt
        run_wrk "$mode" "$port" "$DURATION" "$out"
        read -r rps avg p50 p99 bad < <(parse_wrk "$out")
        [[ $bad == 0 ]] || die "$mode round $round: $bad non-2xx answers or socket errors"
        SUM[$mode]=$(awk -v a="${SUM[$mode]}" -v b="$rps" 'BEGIN { print a + b }')
        ROWS+=("$(printf '%-5s %5s %12s %10s %10s %10s' "$round" "$mode" "$rps" "$avg" "$p50" "$p99")")
        echo "  round $round $mode: $rps req/s" >&2
    done
done

OFF_MEAN=$(awk -v s="${SUM[off]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", s / n }')
JWT_MEAN=$(awk -v s="${SUM[jwt]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", s / n }')
RATIO=$(awk -v j="$JWT_MEAN" -v o="$OFF_MEAN" 'BEGIN { printf "%.3f", j / o }')

echo
echo "home-api GET $PATH_HOME, same Bearer token on both (jwt: verified, then cached)"
printf '%-5s %5s %12s %10s %10s %10s\n' round auth 'req/s' 'lat avg' 'lat p50' 'lat p99'
printf '%s\n' "${ROWS[@]}"
echo "----------------------------------------------------------"
printf 'mean  off   %12s\n' "$OFF_MEAN"
printf 'mean  jwt   %12s\n' "$JWT_MEAN"
printf 'ratio jwt/off = %s (target >= %s)\n' "$RATIO" "$TARGET"

awk -v r="$RATIO" -v t="$TARGET" 'BEGIN { exit !(r >= t) }'
