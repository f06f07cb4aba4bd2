#!/usr/bin/env bash
# Run the sidecar suites: Envoy, aws-jwt-verify (Node.js), Flask, the interop
# matrix's own tests, the front door, and the OpenID relying parties (oidc/:
# Authlib, openid-client, PyJWT against a real network from target/debug or
# $DIDMESH_BIN_DIR). Everything binds to 127.0.0.1 and stops by itself.
#
#   bash sidecars/test.sh [pytest args, e.g. -k envoy or envoy/]
#
# Runs setup.sh first (a no-op when up to date). The suites start their own
# stand-ins (a fake node serving JWKS over HTTP/HTTPS with a throwaway CA, a
# fake home-api) or real nodes (oidc/), and sidecar processes, and stop them
# in fixture teardown; the trap below also ends any process this run left
# behind, by id.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

bash "$here/setup.sh"

# testkit.procs.Child writes the id of every process it starts here, so the
# trap can end whatever a killed or crashed pytest left running.
export DIDMESH_SIDECARS_PIDFILE
DIDMESH_SIDECARS_PIDFILE=$(mktemp -t didmesh-sidecars-pids.XXXXXX)
cleanup() {
  local pid
  while read -r pid; do
    # Each child leads its own process group (start_new_session): end the group.
    if kill -0 "$pid" 2>/dev/null; then
      echo "test.sh: stopping leftover process group $pid" >&2
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 1
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done < "$DIDMESH_SIDECARS_PIDFILE"
  rm -f "$DIDMESH_SIDECARS_PIDFILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cd "$here"
# A hard ceiling, so that a hung sidecar cannot hold a CI run.
timeout --signal=TERM --kill-after=10 900 "$root/.venv/bin/python" -m pytest -p no:cacheprovider "$@"
