#!/usr/bin/env bash
# A local didmesh cluster on loopback, no Docker: N member nodes (sled in
# .data/cluster) replicating over libp2p, and home-api verifying their tokens.
#
#   scripts/cluster.sh up [N]     start N nodes (default 3) and home-api
#   scripts/cluster.sh status     what runs, peers and ledger digests
#   scripts/cluster.sh down       stop everything (data is kept)
#   scripts/cluster.sh clean      stop and delete .data/cluster
#
# Node i serves HTTP on 127.0.0.1:700i and libp2p on /ip4/127.0.0.1/tcp/710i;
# home-api listens on 127.0.0.1:8080 and trusts node N's JWKS (any node's
# would do: they all serve the same member keys). PROFILE=debug uses debug
# builds (faster to compile, slower to run); the default is release.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${DIDMESH_CLUSTER_DIR:-$root/.data/cluster}
profile=${PROFILE:-release}
bin=$root/target/$profile
[[ $profile == dev ]] && bin=$root/target/debug
http_port() { echo $((7000 + $1)); }
p2p_port() { echo $((7100 + $1)); }
APP_ADDR=${APP_ADDR:-127.0.0.1:8080}
AUDIENCE=home-api

die() { echo "cluster.sh: $*" >&2; exit 1; }
wait_http() {
  for _ in $(seq 1 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$1 did not answer; see $state/logs"
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

start() { # name, logfile, command...
  local name=$1 log=$2; shift 2
  setsid nohup "$@" >"$log" 2>&1 < /dev/null &
  echo "$! $name" >>"$state/pids"
}

up() {
  local n=${1:-3}
  [[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 9 ]] || die "N must be 1..9"
  if [[ -s $state/pids ]]; then die "already running (scripts/cluster.sh down first)"; fi
  echo "building ($profile)..."
  if [[ $profile == debug ]]; then
    cargo build --quiet -p didmesh-node -p home-api -p didmesh-client
  else
    cargo build --quiet --profile "$profile" -p didmesh-node -p home-api -p didmesh-client
  fi
  mkdir -p "$state/logs"
  if [[ -f $state/net/genesis.json ]] && [[ $(ls -d "$state"/net/node* | wc -l) != "$n" ]]; then
    die "$state holds a network of another size; scripts/cluster.sh clean first"
  fi
  if [[ ! -f $state/net/genesis.json ]]; then
    "$bin/didmesh-node" init-network --nodes "$n" --out "$state/net"
  fi
  local issuer
  issuer=$(json_field '["issuer"]' <"$state/net/genesis.json")
  : >"$state/pids"
  local bootstrap=() peer1=""
  for i in $(seq 1 "$n"); do
    start "node$i" "$state/logs/node$i.log" env RUST_LOG="${RUST_LOG:-info}" "$bin/didmesh-node" \
      --data-dir "$state/net/node$i" \
      --http-addr "127.0.0.1:$(http_port "$i")" \
      --p2p-addr "/ip4/127.0.0.1/tcp/$(p2p_port "$i")" \
      "${bootstrap[@]}"
    wait_http "http://127.0.0.1:$(http_port "$i")/healthz"
    if [[ $i == 1 ]]; then
      peer1=$(curl -fsS "http://127.0.0.1:$(http_port 1)/v1/status" | json_field '["peer_id"]')
      bootstrap=(--bootstrap "/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$peer1")
    fi
  done
  local jwks="http://127.0.0.1:$(http_port "$n")/.well-known/jwks.json"
  start home-api "$state/logs/home-api.log" "$bin/home-api" --listen "$APP_ADDR" \
    --jwks-url "$jwks" --issuer "$issuer" --audience "$AUDIENCE"
  wait_http "http://$APP_ADDR/healthz"
  if ((n > 1)); then
    echo -n "waiting for the nodes to connect"
    for _ in $(seq 1 100); do
      local connected=0
      for i in $(seq 1 "$n"); do
        local peers
        peers=$(curl -fsS "http://127.0.0.1:$(http_port "$i")/v1/status" | json_field '["peers"].__len__()')
        ((peers >= 1)) && connected=$((connected + 1))
      done
      ((connected == n)) && break
      echo -n "."; sleep 0.2
    done
    echo
  fi
  status
  cat <<TXT

Try it (the wallet asks for a passphrase, or set DIDMESH_PASSPHRASE):
  export DIDMESH_PASSPHRASE='correct horse battery staple'
  $bin/didmesh --wallet /tmp/alice.wallet wallet init
  $bin/didmesh --wallet /tmp/alice.wallet did create --node http://127.0.0.1:$(http_port 1)
  $bin/didmesh --wallet /tmp/alice.wallet get http://$APP_ADDR/api/activities/home --node http://127.0.0.1:$(http_port $(( n > 1 ? 2 : 1 )))
  curl -s http://127.0.0.1:$(http_port "$n")/1.0/identifiers/\$($bin/didmesh --wallet /tmp/alice.wallet wallet show | awk '/^did /{print \$2; exit}')

Stop with: scripts/cluster.sh down
TXT
}

status() {
  [[ -s $state/pids ]] || { echo "not running"; return 0; }
  printf '%-9s %-7s %-28s %s\n' process pid url detail
  while read -r pid name; do
    local alive=dead url="" detail=""
    kill -0 "$pid" 2>/dev/null && alive=$pid
    case $name in
      node*)
        local i=${name#node}
        url=http://127.0.0.1:$(http_port "$i")
        detail=$(curl -fsS "$url/v1/status" 2>/dev/null | python3 -c '
import json,sys
s=json.load(sys.stdin)
print(f"peers={len(s.get(\"peers\",[]))} ops={s[\"op_count\"]} digest={s[\"ledger_digest\"][:12]} member={s[\"member\"]}")' 2>/dev/null || echo unreachable) ;;
      home-api) url=http://$APP_ADDR/api/activities/home ;;
    esac
    printf '%-9s %-7s %-28s %s\n' "$name" "$alive" "$url" "$detail"
  done <"$state/pids"
}

down() {
  [[ -f $state/pids ]] || { echo "not running"; return 0; }
  while read -r pid name; do kill -TERM "$pid" 2>/dev/null || true; done <"$state/pids"
  for _ in $(seq 1 50); do
    local alive=0
    while read -r pid name; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$state/pids"
    ((alive == 0)) && break
    sleep 0.1
  done
  while read -r pid name; do kill -KILL "$pid" 2>/dev/null || true; done <"$state/pids"
  rm -f "$state/pids"
  echo "stopped"
}

case ${1:-} in
  up) shift; up "$@" ;;
  status) status ;;
  down) down ;;
  clean) down; rm -rf "$state"; echo "removed $state" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
