#!/usr/bin/env bash
# A local didmesh cluster on loopback, no Docker: N member nodes (sled in
# .data/cluster) replicating over libp2p, the front door in front of them,
# home-api verifying their tokens, and a Flask app that signs people in.
#
#   scripts/cluster.sh up [N] [--with envoy,aws-jwt-verify,flask]
#                                 start N nodes (default 3), the front door,
#                                 home-api and the sign-in app, and optionally
#                                 each sidecar in front of its app
#   scripts/cluster.sh status     what runs, peers and ledger digests
#   scripts/cluster.sh down       stop everything (data is kept)
#   scripts/cluster.sh clean      stop and delete .data/cluster
#
# Node i serves HTTP on 127.0.0.1:700i (public URL http://localhost:700i) and
# libp2p on /ip4/127.0.0.1/tcp/710i. The front door (Envoy,
# sidecars/frontdoor) on 127.0.0.1:7000 spreads requests round robin over the
# nodes: http://localhost:7000 is the network's issuer, the one URL OpenID
# relying parties are given (`localhost`, because WebAuthn refuses IP
# addresses as RP IDs and a relying party wants the issuer to be the URL it
# fetched discovery from). Each node accepts WebAuthn origins of every
# node's http://localhost:700i. home-api listens on 127.0.0.1:8080 and trusts
# node N's JWKS (any node's would do: they all serve the same member keys).
# The Flask app with "Sign in with didmesh" listens on 127.0.0.1:8090 as
# client "Home activities", registered by a wallet in .data/cluster/rp.
# DIDMESH_PROVIDERS=FILE and DIDMESH_SMS=FILE in the environment give every
# node external OpenID providers and SMS codes (README).
# With --with, node N also serves HTTPS (a local CA in .data/cluster/ca;
# aws-jwt-verify fetches JWKS over https only) and the sidecars read its
# JWKS: Envoy on 127.0.0.1:8081, aws-jwt-verify on :8082 (each in front of a
# home-api in sidecar mode on :8181/:8182), the Flask verifier on :8083; the
# front door then leaves node N out (a browser would not trust the local CA
# when a sign-in page it served sends it there), unless it is the only node.
# PROFILE=debug uses debug builds (faster to compile, slower to run); the
# default is release. BUILD=0 skips the cargo build (binaries already there).
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
FRONT_DOOR=127.0.0.1:7000
FRONT_DOOR_ADMIN=127.0.0.1:9700
ISSUER=http://localhost:7000
SIGNIN_ADDR=127.0.0.1:8090
SIGNIN_URL=http://localhost:8090
# The relying party's wallet is a local throwaway under the state dir.
RP_PASSPHRASE=cluster-sh-local-relying-party

die() { echo "cluster.sh: $*" >&2; exit 1; }
# The URL of node i: https for the node listed in $state/tls-node.
node_url() {
  if [[ $(cat "$state/tls-node" 2>/dev/null) == "$1" ]]; then echo "https://127.0.0.1:$(http_port "$1")"; else echo "http://127.0.0.1:$(http_port "$1")"; fi
}
# Its public URL (--public-url): what a browser, the CLI and the login
# messages use (`didmesh login` checks the message names the URL it talks to).
public_url() {
  if [[ $(cat "$state/tls-node" 2>/dev/null) == "$1" ]]; then echo "https://localhost:$(http_port "$1")"; else echo "http://localhost:$(http_port "$1")"; fi
}
# has_flag FLAG COMMAND...: COMMAND --help lists FLAG.
has_flag() { local flag=$1; shift; "$@" --help 2>/dev/null | grep -- "$flag" >/dev/null; }
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
  # External providers (--providers) and SMS (--sms) are node configuration
  # read from the environment: DIDMESH_PROVIDERS=FILE and DIDMESH_SMS=FILE
  # reach every node (made absolute here, since nodes may resolve paths
  # from elsewhere).
  local f
  for f in DIDMESH_PROVIDERS DIDMESH_SMS; do
    if [[ -n ${!f:-} ]]; then
      [[ -f ${!f} ]] || die "$f=${!f}: no such file"
      export "$f=$(cd "$(dirname "${!f}")" && pwd)/$(basename "${!f}")"
    fi
  done
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
  if [[ ${BUILD:-1} == 0 ]]; then
    echo "using the binaries in $bin (BUILD=0)"
  elif [[ $profile == debug ]]; then
    echo "building ($profile)..."
    cargo build --quiet -p didmesh-node -p home-api -p didmesh-client
  else
    echo "building ($profile)..."
    cargo build --quiet --profile "$profile" -p didmesh-node -p home-api -p didmesh-client
  fi
  mkdir -p "$state/logs"
  if [[ -f $state/net/genesis.json ]] && [[ $(ls -d "$state"/net/node* | wc -l) != "$n" ]]; then
    die "$state holds a network of another size; scripts/cluster.sh clean first"
  fi
  if [[ ! -f $state/net/genesis.json ]]; then
    "$bin/didmesh-node" init-network --nodes "$n" --out "$state/net" --issuer "$ISSUER"
  fi
  local issuer
  issuer=$(json_field '["issuer"]' <"$state/net/genesis.json")
  if [[ $issuer != "$ISSUER" ]]; then
    echo "cluster.sh: note: this network's issuer is $issuer (made before the front door); OpenID sign-in" >&2
    echo "cluster.sh: needs the issuer $ISSUER: scripts/cluster.sh clean, then up, makes a new network" >&2
  fi
  : >"$state/pids"
  rm -f "$state/tls-node"
  [[ -n $with ]] && echo "$n" >"$state/tls-node"
  local bootstrap=() peer1="" tls=() web=()
  # The front door's Envoy and the sign-in app's Authlib live in .venv (a
  # no-op when up to date).
  bash "$root/sidecars/setup.sh" >/dev/null
  if [[ -n $with ]]; then
    [[ -f $state/ca/node.pem ]] || bash "$root/sidecars/testkit/local-ca.sh" "$state/ca" node
  fi
  # Every node's public origin may be where a passkey is made or used (the
  # issuer's origin, the front door's, is always accepted).
  if has_flag --webauthn-origin "$bin/didmesh-node"; then
    for i in $(seq 1 "$n"); do web+=(--webauthn-origin "$(public_url "$i")"); done
  else
    echo "cluster.sh: note: this didmesh-node has no --webauthn-origin; passkeys work at $ISSUER only" >&2
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
      --public-url "$(public_url "$i")" \
      "${web[@]}" "${tls[@]}" "${bootstrap[@]}"
    wait_http "$(node_url "$i")/healthz"
    if [[ $i == 1 ]]; then
      peer1=$(ncurl "$(node_url 1)/v1/status" | json_field '["peer_id"]')
      bootstrap=(--bootstrap "/ip4/127.0.0.1/tcp/$(p2p_port 1)/p2p/$peer1")
    fi
  done
  start_front_door "$n" "$with"
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
  local signin_note="(none: this network's issuer is not $ISSUER; scripts/cluster.sh clean, then up)"
  [[ $issuer == "$ISSUER" ]] && signin_note=$(start_signin_app "$issuer")
  status
  cat <<TXT

Sign in with didmesh from a browser: $signin_note
  the network's issuer (front door): $ISSUER/.well-known/openid-configuration

Try it from a terminal (the wallet asks for a passphrase, or set DIDMESH_PASSPHRASE):
  export DIDMESH_PASSPHRASE='correct horse battery staple'
  $bin/didmesh --wallet /tmp/alice.wallet wallet init
  $bin/didmesh --wallet /tmp/alice.wallet did create --node $(public_url 1)
  $bin/didmesh --wallet /tmp/alice.wallet get http://$APP_ADDR/api/activities/home --node $(public_url $(( n > 1 ? 2 : 1 )))
  curl -s $([[ -f $state/tls-node ]] && echo "--cacert $state/ca/ca.pem ")$(node_url "$n")/1.0/identifiers/\$($bin/didmesh --wallet /tmp/alice.wallet wallet show | awk '/^did /{print \$2; exit}')
(node URLs are http://localhost:700i: a login message names the node's public URL, and the
wallet refuses to sign one for another name than the one it talks to, 127.0.0.1 included)

Stop with: scripts/cluster.sh down
TXT
}

# The front door on $FRONT_DOOR, round robin over the nodes (sidecars/frontdoor).
start_front_door() {
  local n=$1 with=$2 ups=() ca=()
  for i in $(seq 1 "$n"); do
    # Node N on HTTPS (--with) stays out unless it is alone: its sign-in page
    # would send the browser to a URL signed by the local CA.
    [[ -n $with && $i == "$n" && $n -gt 1 ]] && continue
    ups+=(--upstream "$(node_url "$i")")
  done
  [[ -n $with ]] && ca=(--upstream-ca "$state/ca/ca.pem")
  start front-door "$state/logs/front-door.log" bash "$root/sidecars/frontdoor/run.sh" \
    --listen "$FRONT_DOOR" --admin "$FRONT_DOOR_ADMIN" "${ups[@]}" "${ca[@]}"
  wait_http "http://$FRONT_DOOR_ADMIN/ready"
  wait_http "http://$FRONT_DOOR/healthz"
}

# Until every node holds the same ledger (a new client is known everywhere).
wait_replicated() {
  local n=$1
  for _ in $(seq 1 150); do
    local digests
    digests=$(for i in $(seq 1 "$n"); do ncurl "$(node_url "$i")/v1/status" | json_field '["ledger_digest"]' 2>/dev/null || echo "?$i"; done | sort -u | wc -l)
    [[ $digests == 1 ]] && return 0
    sleep 0.2
  done
  echo "cluster.sh: note: the nodes' ledgers still differ after 30 s; see $state/logs" >&2
}

# The Flask app's client "Home activities": registered once per network by a
# wallet under $state/rp (its secret kept there, 0600), then the app on
# $SIGNIN_ADDR. Prints the URL to try, or why there is none.
start_signin_app() {
  local issuer=$1 rp=$state/rp didmesh=$bin/didmesh
  local n
  n=$(ls -d "$state"/net/node* | wc -l)
  if ! has_flag register "$didmesh" client; then
    echo "(none: this didmesh has no \`client register\`)"
    return 0
  fi
  mkdir -p "$rp" && chmod 700 "$rp"
  if [[ ! -s $rp/client.env ]]; then
    local out
    if ! out=$(
      export DIDMESH_WALLET=$rp/wallet.json DIDMESH_PASSPHRASE=$RP_PASSPHRASE DIDMESH_KDF_FAST=1
      {
        [[ -f $rp/wallet.json ]] || "$didmesh" wallet init
        "$didmesh" wallet show | grep '^did  *did:' >/dev/null || "$didmesh" did create --node "$(public_url 1)"
        "$didmesh" client register --node "$(public_url 1)" --name "Home activities" \
          --redirect-uri "$SIGNIN_URL/auth/callback" --confidential
      } 2>>"$state/logs/rp-wallet.log"
    ); then
      echo "(none: registering the client failed; see $state/logs/rp-wallet.log)"
      return 0
    fi
    (umask 077 && printf '%s\n' "$out" | sed -n 's/^client_id: /DIDMESH_OIDC_CLIENT_ID=/p; s/^client_secret: /DIDMESH_OIDC_CLIENT_SECRET=/p' >"$rp/client.env")
    wait_replicated "$n"
  fi
  # Sign-outs reach the app within seconds through node 1's revocation
  # feed (one node: a feed's numbering is its own), when node 1 is plain
  # http (the app is given no CA).
  local feed=()
  [[ $(node_url 1) == http://* ]] && feed=(--revocations-uri "$(node_url 1)/v1/revocations")
  # The secret reaches the app by environment, never on a command line.
  (
    set -a; . "$rp/client.env"; set +a
    start signin-app "$state/logs/signin-app.log" "$root/.venv/bin/python" "$root/sidecars/flask/home_app.py" \
      --listen "$SIGNIN_ADDR" --issuer "$issuer" --audience "$AUDIENCE" \
      --jwks-uri "$ISSUER/.well-known/jwks.json" --oidc-redirect-uri "$SIGNIN_URL/auth/callback" "${feed[@]}"
  )
  wait_http "http://$SIGNIN_ADDR/" >&2
  echo "$SIGNIN_URL/"
}

status() {
  [[ -s $state/pids ]] || { echo "not running"; return 0; }
  printf '%-14s %-7s %-28s %s\n' process pid url detail
  while read -r pid name; do
    local alive=dead url="" detail="" clusters=""
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
      front-door) url=$ISSUER
        detail=unreachable
        if clusters=$(curl -fsS "http://$FRONT_DOOR_ADMIN/clusters" 2>/dev/null); then
          # Envoy's view: how many upstream nodes pass its (passive) health checks.
          detail=$(awk -F:: '/::health_flags::/ {n++; if ($4 == "healthy") h++} END {printf "nodes healthy=%d/%d", h, n}' <<<"$clusters")
        fi ;;
      signin-app) url=$SIGNIN_URL/ ;;
      envoy) url=http://127.0.0.1:8081/api/activities/home ;;
      aws-jwt-verify) url=http://127.0.0.1:8082/api/activities/home ;;
      flask) url=http://127.0.0.1:8083/api/activities/home ;;
    esac
    printf '%-14s %-7s %-28s %s\n' "$name" "$alive" "$url" "$detail"
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
  *) sed -n '2,32p' "$0"; exit 2 ;;
esac
