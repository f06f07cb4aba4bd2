#!/usr/bin/env bash
# compose-run.sh — docker-compose.yml run for real, under podman-compose:
# the cluster comes up from the repo's Dockerfile, a wallet logs in through
# it, one node's container is cut off the compose network and put back, and
# the cluster must converge with the token still accepted by home-api.
#
#   scripts/compose-run.sh            # podman-base.sh first (skips what exists)
#   KEEP=1 scripts/compose-run.sh     # leave the cluster up on failure (debug)
#   BUILD=0 scripts/compose-run.sh    # use didmesh/runtime:dev as it is
#
# Phases, each timed:
#   base      scripts/podman-base.sh: podman, podman-compose, base images
#   build     `podman-compose build` (the runtime image; layer and cargo
#             caches; CARGO_INCREMENTAL=1: a fresh checkout rebuilds the
#             workspace crates in ~25 s instead of ~3 min)
#   up        `podman-compose up -d`: init, node1..3, home-api
#   healthy   each node's compose healthcheck passes (podman runs a
#             healthcheck on demand only: no systemd here to time it)
#   login     the image's `didmesh` CLI, in a --network host container,
#             through the ports published on 127.0.0.1 (free ports chosen
#             here, so a running scripts/cluster.sh does not collide): wallet
#             init, DID created at node1, login at node2, token accepted by
#             home-api (and no token refused)
#   partition `podman network disconnect` node3; a key added to the DID at
#             node1 reaches node2 but not node3
#   heal      `podman network connect --alias node3` (new address, same
#             name); all nodes reach one /v1/status digest
#   verify    the token from before is still accepted by home-api
#   teardown  `podman-compose down -v`, then anything of the project left
#             (containers, pod, volumes, network) removed; also on failure
#
# Node status is read with `podman exec` inside each node's container
# (curl to its own loopback), never by sending packets from the host to a
# container's private address. Prints `compose-run: N passed, M failed`;
# exit 1 on any failure.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=${COMPOSE_RUN_PROJECT:-didmeshrun}
NET=${PROJECT}_mesh
IMAGE=didmesh/runtime:dev
PC=("$ROOT/.venv-compose/bin/podman-compose" --no-ansi -p "$PROJECT" -f "$ROOT/docker-compose.yml")
# Throwaway wallet of this run (never logged).
export DIDMESH_PASSPHRASE="compose-run-$RANDOM-$RANDOM"
passed=0 failed=0
declare -a timings=()
t_start=$SECONDS t_phase=$SECONDS phase_name=""
work=$(mktemp -d /tmp/didmesh-compose-run.XXXXXX)
log=$work/log

say() { echo "compose-run: $*" >&2; }
phase() { # end the current phase, start the next
  [[ -n $phase_name ]] && timings+=("$phase_name $((SECONDS - t_phase))")
  phase_name=$1 t_phase=$SECONDS
  say "== $1"
}
check() { # check WHAT COMMAND...: one assertion
  local what=$1; shift
  if "$@" >>"$log" 2>&1; then passed=$((passed + 1)); say "ok   $what"; else failed=$((failed + 1)); say "FAIL $what"; fi
}
must() { # like check, but the run cannot go on without it
  local what=$1 before=$failed; shift
  check "$what" "$@"
  if ((failed > before)); then say "stopping: $what failed (log tail below)"; tail -25 "$log" >&2; exit 1; fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ ${KEEP:-0} == 1 ]] && ((rc != 0 || failed > 0)); then
    say "KEEP=1: project $PROJECT left up; remove with: ${PC[*]} down -v"
    exit "$rc"
  fi
  phase teardown
  teardown
  local left
  left=$(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT"; podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT"; podman network ls -q --filter "name=^${NET}\$")
  if [[ -n $left ]]; then failed=$((failed + 1)); say "FAIL teardown left: $left"; rc=1; else passed=$((passed + 1)); say "ok   teardown: no container, volume or network of $PROJECT left"; fi
  phase done
  rm -rf "$work"
  local line="" t
  for t in "${timings[@]}"; do line+="${t% *} ${t##* }s, "; done
  say "phases: ${line%, } (total $((SECONDS - t_start)) s)"
  ((rc == 0 || failed > 0)) || say "stopped early (exit status $rc)"
  echo "compose-run: $passed passed, $failed failed"
  ((failed == 0 && rc == 0)) || exit 1
  exit 0
}

teardown() {
  "${PC[@]}" down -v -t 2 >>"$log" 2>&1 || true
  # What down may leave (a container created outside compose's list, a
  # network still in use a moment ago): by the project's label and names.
  local ids
  ids=$(podman ps -a -q --filter "label=io.podman.compose.project=$PROJECT")
  [[ -z $ids ]] || podman rm -f -t 0 $ids >>"$log" 2>&1 || true
  podman pod rm -f "pod_$PROJECT" >>"$log" 2>&1 || true
  ids=$(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT")
  [[ -z $ids ]] || podman volume rm -f $ids >>"$log" 2>&1 || true
  podman network rm -f "$NET" >>"$log" 2>&1 || true
}

# --- base
phase base
bash "$ROOT/scripts/podman-base.sh"
trap cleanup EXIT
trap 'exit 130' INT TERM
teardown # leftovers of an earlier run that was killed

# Free host ports for what the compose file publishes (its defaults are
# scripts/cluster.sh's, which may be in use).
read -r H1 H2 H3 P1 P2 P3 APP < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
export DIDMESH_PUBLISH_HTTP1=$H1 DIDMESH_PUBLISH_HTTP2=$H2 DIDMESH_PUBLISH_HTTP3=$H3
export DIDMESH_PUBLISH_P2P1=$P1 DIDMESH_PUBLISH_P2P2=$P2 DIDMESH_PUBLISH_P2P3=$P3 DIDMESH_PUBLISH_APP=$APP

# --- build: one image serves init, the nodes and home-api
phase build
if [[ ${BUILD:-1} == 0 ]]; then
  must "BUILD=0: image $IMAGE is there" podman image exists "$IMAGE"
else
  must "podman-compose build (target runtime, from the Dockerfile)" \
    "${PC[@]}" --podman-build-args="--network=host --build-arg=CARGO_INCREMENTAL=1" build init
  # Each build with changed sources leaves the previous images untagged
  # (about 1.5 GB): drop those of this Dockerfile, by its stage label.
  podman image prune -f --filter label=io.didmesh.stage >>"$log" 2>&1 || true
fi

# --- up
phase up
must "podman-compose up -d" "${PC[@]}" up -d --no-build
cnt() { echo "${PROJECT}_$1_1"; }
init_exit=$(podman inspect -f '{{.State.ExitCode}}' "$(cnt init)" 2>/dev/null || echo "?")
check "init ran once and exited 0 (genesis, data folders, local CA)" test "$init_exit" = 0

# --- healthy
phase healthy
healthy() { # container: runs its compose healthcheck until it passes (60 s)
  local i
  for i in $(seq 1 120); do
    podman healthcheck run "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
for n in node1 node2 node3; do
  must "$n healthy (its compose healthcheck)" healthy "$(cnt "$n")"
done
app_up() { local i; for i in $(seq 1 60); do curl -fsS "http://127.0.0.1:$APP/healthz" && return 0; sleep 0.5; done; return 1; }
must "home-api answers on its published port 127.0.0.1:$APP" app_up

# status N FIELD: a field of node N's /v1/status, read inside its container.
status() {
  local url=http://127.0.0.1:700$1/v1/status tls=()
  [[ $1 == 3 ]] && url=https://node3:7003/v1/status tls=(--cacert /tls/ca.pem --resolve node3:7003:127.0.0.1)
  podman exec "$(cnt "node$1")" curl -fsS --max-time 5 "${tls[@]}" "$url" \
    | python3 -c "import json,sys; s=json.load(sys.stdin); print($2)"
}
peers_of() { status "$1" 'len(s["peers"])'; }
wait_for() { # seconds command...: until it succeeds
  local end=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < end)) || return 1; sleep 0.5; done
}
meshed() { [[ $(peers_of 1) -ge 2 && $(peers_of 2) -ge 2 && $(peers_of 3) -ge 2 ]]; }
must "the three nodes are connected to each other (found by name)" wait_for 60 meshed

# --- login, through the published ports, with the image's CLI
phase login
chown 10001:10001 "$work"
didmesh() { # the image's didmesh CLI, wallet in $work, on the host's loopback
  podman run --rm --network host -v "$work:/w" -e DIDMESH_PASSPHRASE -e DIDMESH_WALLET=/w/alice.wallet \
    "$IMAGE" didmesh "$@"
}
must "wallet init" didmesh wallet init
did=$(didmesh did create --node "http://127.0.0.1:$H1" 2>>"$log") || true
must "did create at node1 prints a did:mesh ($did)" grep -q '^did:mesh:' <<<"$did"
login2() { token=$(didmesh login --audience home-api --node "http://127.0.0.1:$H2" 2>>"$log") && [[ -n $token ]]; }
token=""
must "login at node2 (the DID replicated from node1) prints a token" wait_for 30 login2
api() { curl -sS -o /dev/null -w '%{http_code}' "$@" "http://127.0.0.1:$APP/api/activities/home"; }
# home-api answers for this DID: the body names it as the user.
accepted() { curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$APP/api/activities/home" | grep -q "\"user\":\"$did\""; }
check "home-api accepts the token: its answer is for $did" accepted
code=$(api -H "Authorization: Bearer ${token}x")
check "home-api refuses the token with one byte added (HTTP $code)" test "$code" = 401

# --- partition
phase partition
ip3_before=$(podman inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$(cnt node3)")
must "podman network disconnect node3" podman network disconnect "$NET" "$(cnt node3)"
ops3=$(status 3 's["op_count"]')
must "did add-key at node1 while node3 is cut off" didmesh did add-key --relationship assertion --node "http://127.0.0.1:$H1"
ops1=$(status 1 's["op_count"]')
at2() { [[ $(status 2 's["ledger_digest"]') == $(status 1 's["ledger_digest"]') ]]; }
check "the op reaches node2 ($ops1 ops)" wait_for 30 at2
sleep 2
check "node3 does not have it while cut off ($(status 3 's["op_count"]') ops, was $ops3)" test "$(status 3 's["op_count"]')" = "$ops3"
check "node1 has one op more than node3" test "$ops1" = $((ops3 + 1))

# --- heal
phase heal
must "podman network connect --alias node3" podman network connect --alias node3 "$NET" "$(cnt node3)"
ip3_after=$(podman inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$(cnt node3)")
say "node3's address: $ip3_before before, $ip3_after after"
converged() {
  local d1 d2 d3
  d1=$(status 1 's["ledger_digest"]+s["state_digest"]') && d2=$(status 2 's["ledger_digest"]+s["state_digest"]') \
    && d3=$(status 3 's["ledger_digest"]+s["state_digest"]') && [[ $d1 == "$d2" && $d2 == "$d3" ]]
}
t_heal=$SECONDS
before=$failed
check "one /v1/status digest (ops and state) on all three nodes" wait_for "${CONVERGE_SECONDS:-120}" converged
((failed > before)) || say "converged $((SECONDS - t_heal)) s after the reconnect"
check "node3 holds the op written while it was away ($(status 3 's["op_count"]') ops)" test "$(status 3 's["op_count"]')" = "$ops1"
check "node3 is connected again (found by name)" wait_for 60 meshed
# Its old connections are gone: no peer is listed at the address it lost.
stale() { status "$1" "[p['addr'] for p in s['peers'] if '/$ip3_before/' in p['addr']]"; }
check "node1 and node2 list no peer at node3's old address $ip3_before" \
  test "$(stale 1)$(stale 2)" = "[][]"

# --- verify
phase verify
check "home-api still accepts the token: its answer is for $did" accepted
exit 0
