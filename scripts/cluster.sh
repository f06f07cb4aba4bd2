#!/usr/bin/env bash
# A local didmesh cluster on loopback, no Docker: N member nodes (sled in
# .data/cluster) replicating over libp2p, and home-api verifying their tokens.
#
#   scripts/cluster.sh up [N] [--with envoy,aws-jwt-verify,flask]
#                                 start N nodes (default 3) and home-api, and
#                                 optionally each sidecar in front of its app
#   scripts/cluster.sh status     what runs, peers and ledger digests
#   scripts/cluster.sh down       stop everything (data is kept)
#   scripts/cluster.sh clean      stop and delete .data/cluster
#
# Node i serves HTTP on 127.0.0.1:700i and libp2p on /ip4/127.0.0.1/tcp/710i;
# home-api listens on 127.0.0.1:8080 and trusts node N's JWKS (any node's
# would do: they all serve the same member keys). With --with, node N also
# serves HTTPS (a local CA in .data/cluster/ca; aws-jwt-verify fetches JWKS
# over https only) and the sidecars read its JWKS: Envoy on 127.0.0.1:8081,
# aws-jwt-verify on :8082 (each in front of a home-api in sidecar mode on
# :8181/:8182), the Flask app on :8083. PROFILE=debug uses debug
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
# The URL of node i: https for the node listed in $state/tls-node.
node_url() {
  if [[ $(cat "$state/tls-node" 2>/dev/null) == "$1" ]]; then echo "https://127.0.0.1:$(http_port "$1")"; else echo "http://127.0.0.1:$(http_port "$1")"; fi
}
ncurl() { if [[ -f $state/ca/ca.pem ]]; then curl -fsS --cacert "$state/ca/ca.pem" "$@"; else curl -fsS "$@"; fi; }
wait_http() {
  for _ in $(seq 1 200); do ncurl "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$1 did not answer; see $state/logs"
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

start() { # name, logfile, command...
  local name=$1 log=$2; shift 2
  setsid nohup "$@" >"$log" 2>&1 < /dev/null &
  echo "$! $name" >>"$state/pids"
}

up() {
  local n=3 with=""
  while (($#)); do
    case $1 in
      --with) with=${2:?--with needs a list}; shift 2 ;;
      --with=*) with=${1#--with=}; shift ;;
      *) n=$1; shift ;;
    esac
  done
  for s in ${with//,/ }; do
    [[ $s == envoy || $s == aws-jwt-verify || $s == flask ]] || die "unknown sidecar $s (envoy, aws-jwt-verify, flask)"
  done
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
  rm -f "$state/tls-node"
  [[ -n $with ]] && echo "$n" >"$state/tls-node"
  local bootstrap=() peer1="" tls=()
  if [[ -n $with ]]; then
    bash "$root/sidecars/setup.sh" >/dev/null
    [[ -f $state/ca/node.pem ]] || bash "$root/sidecars/testkit/local-ca.sh" "$state/ca" node
  fi
  for i in $(seq 1 "$n"); do
    tls=()
    if [[ -n $with && $i == "$n" ]]; then
      tls=(--tls-cert "$state/ca/node.pem" --tls-key "$state/ca/node-key.pem")
    fi
    start "node$i" "$state/logs/node$i.log" env RUST_LOG="${RUST_LOG:-info}" "$bin/didmesh-node" \
      --data-dir "$state/net/node$i" \
      --http-addr "127.0.0.1:$(http_port "$i")" \
      --p2p-addr "/ip4/127.0.0.1/tcp/$(p2p_port "$i")" \
      "${tls[@]}" "${bootstrap[@]}"
    wait_http "$(node_url "$i")/healthz"
    if [[ $i == 1 ]]; then
      peer1=$(ncurl "$(node_url 1)/v1/status" | json_field '["peer_id"]')
      bootstrap=(--bootstrap "/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$peer1")
    fi
  done
  local jwks="http://127.0.0.1:$(http_port "$n")/.well-known/jwks.json"
  # home-api's JWKS client speaks plain HTTP: with node N on HTTPS it reads node 1's.
  [[ -n $with ]] && jwks="http://127.0.0.1:$(http_port 1)/.well-known/jwks.json"
  start home-api "$state/logs/home-api.log" "$bin/home-api" --listen "$APP_ADDR" \
    --jwks-url "$jwks" --issuer "$issuer" --audience "$AUDIENCE"
  wait_http "http://$APP_ADDR/healthz"
  local sjwks="https://127.0.0.1:$(http_port "$n")/.well-known/jwks.json"
  for s in ${with//,/ }; do
    case $s in
      envoy)
        start home-api-envoy "$state/logs/home-api-envoy.log" "$bin/home-api" --listen 127.0.0.1:8181 --auth sidecar --trusted-header x-jwt-payload
        start envoy "$state/logs/envoy.log" bash "$root/sidecars/envoy/run.sh" --listen 127.0.0.1:8081 \
          --upstream http://127.0.0.1:8181 --issuer "$issuer" --audience "$AUDIENCE" --jwks-uri "$sjwks" --jwks-ca "$state/ca/ca.pem"
        wait_http "http://127.0.0.1:8081/api/activities/home" ;;
      aws-jwt-verify)
        start home-api-aws "$state/logs/home-api-aws.log" "$bin/home-api" --listen 127.0.0.1:8182 --auth sidecar --trusted-header x-jwt-payload
        start aws-jwt-verify "$state/logs/aws-jwt-verify.log" env NODE_EXTRA_CA_CERTS="$state/ca/ca.pem" node "$root/sidecars/aws-jwt-verify/server.js" \
          --listen 127.0.0.1:8082 --upstream http://127.0.0.1:8182 --issuer "$issuer" --audience "$AUDIENCE" --jwks-uri "$sjwks"
        wait_http "http://127.0.0.1:8082/api/activities/home" ;;
      flask)
        start flask "$state/logs/flask.log" "$root/.venv/bin/python" "$root/sidecars/flask/home_app.py" --listen 127.0.0.1:8083 \
          --issuer "$issuer" --audience "$AUDIENCE" --jwks-uri "$sjwks" --jwks-ca "$state/ca/ca.pem"
        wait_http "http://127.0.0.1:8083/api/activities/home" ;;
    esac
  done
  if ((n > 1)); then
    echo -n "waiting for the nodes to connect"
    for _ in $(seq 1 100); do
      local connected=0
      for i in $(seq 1 "$n"); do
        local peers
        peers=$(ncurl "$(node_url "$i")/v1/status" | json_field '["peers"].__len__()' 2>/dev/null || echo 0)
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
  curl -s $([[ -f $state/tls-node ]] && echo "--cacert $state/ca/ca.pem ")$(node_url "$n")/1.0/identifiers/\$($bin/didmesh --wallet /tmp/alice.wallet wallet show | awk '/^did /{print \$2; exit}')

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
        url=$(node_url "$i")
        detail=$(ncurl "$url/v1/status" 2>/dev/null | python3 -c "
import json, sys
s = json.load(sys.stdin)
print('peers=%d ops=%d digest=%s member=%s' % (len(s.get('peers', [])), s['op_count'], s['ledger_digest'][:12], s['member']))" 2>/dev/null || echo unreachable) ;;
      home-api) url=http://$APP_ADDR/api/activities/home ;;
      envoy) url=http://127.0.0.1:8081/api/activities/home ;;
      aws-jwt-verify) url=http://127.0.0.1:8082/api/activities/home ;;
      flask) url=http://127.0.0.1:8083/api/activities/home ;;
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
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac
