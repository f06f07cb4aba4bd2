"""Start the three verifiers side by side, for the interop matrix.

Envoy and the aws-jwt-verify sidecar go in front of one home-api in sidecar
mode (`home-api --auth sidecar --trusted-header x-jwt-payload`); the Flask
home API verifies by itself. All three fetch the JWKS from the node over
https, trusting the CA given.

    python -m interop.fleet --upstream http://127.0.0.1:8080 \
        --issuer https://didmesh.local --audience home-api \
        --jwks-uri https://localhost:7443/.well-known/jwks.json --jwks-ca ca.pem

prints one `NAME=URL` line per verifier (the arguments `python -m
interop.matrix` takes), then runs until SIGTERM or Ctrl-C and stops them all.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from testkit.procs import Child, free_port

SIDECARS = Path(__file__).resolve().parent.parent
HOME = "/api/activities/home"


def start(*, upstream: str, issuer: str, audience: str, jwks_uri: str, jwks_ca: Path, log_dir: Path,
          envoy_cache_seconds: int | None = None, envoy_concurrency: int | None = None,
          flask_server: str = "werkzeug") -> dict[str, tuple[Child, str]]:
    """{name: (process, home URL)}; every process answers when this returns.

    * `envoy_cache_seconds` overrides Envoy's JWKS `cache_duration` (300 s),
      the only way a new member's key reaches Envoy (it never refetches on an
      unknown kid): tests that add a member set it low.
    * `envoy_concurrency`: Envoy worker threads (run.sh's default is 1).
    * `flask_server`: "werkzeug" (the development server, `home_app.py`) or
      "gunicorn" (2 gthread workers x 4 threads, for benchmarks)."""
    if not jwks_uri.startswith("https://"):
        raise ValueError("the fleet needs an https JWKS URI (aws-jwt-verify fetches over https only)")
    common = {"DIDMESH_ISSUER": issuer, "DIDMESH_AUDIENCE": audience, "DIDMESH_JWKS_URI": jwks_uri}
    envoy_port, envoy_admin, node_port, flask_port = (free_port() for _ in range(4))
    launch = {
        "envoy": (
            [str(SIDECARS / "envoy" / "run.sh"), "--listen", f"127.0.0.1:{envoy_port}",
             "--admin", f"127.0.0.1:{envoy_admin}", "--upstream", upstream, "--jwks-ca", str(jwks_ca),
             *([] if envoy_cache_seconds is None else ["--cache-duration", str(envoy_cache_seconds)])],
            common, envoy_port,
        ),
        "aws-jwt-verify": (
            [shutil.which("node") or "node", str(SIDECARS / "aws-jwt-verify" / "server.js")],
            {**common, "DIDMESH_LISTEN": f"127.0.0.1:{node_port}", "DIDMESH_UPSTREAM": upstream,
             "NODE_EXTRA_CA_CERTS": str(jwks_ca)},
            node_port,
        ),
        "flask": (
            [sys.executable, str(SIDECARS / "flask" / "home_app.py"), "--listen", f"127.0.0.1:{flask_port}"]
            if flask_server == "werkzeug" else
            # gthread keeps connections alive (the sync worker closes each one).
            [sys.executable, "-m", "gunicorn", "--chdir", str(SIDECARS / "flask"), "--bind", f"127.0.0.1:{flask_port}",
             "--workers", "2", "--worker-class", "gthread", "--threads", "4", "home_app:create_app()"],
            {**common, "DIDMESH_JWKS_CA": str(jwks_ca)},
            flask_port,
        ),
    }
    if flask_server not in ("werkzeug", "gunicorn"):
        raise ValueError(f"flask_server: werkzeug or gunicorn, not {flask_server!r}")
    if envoy_concurrency is not None:
        launch["envoy"] = (launch["envoy"][0], {**common, "ENVOY_CONCURRENCY": str(envoy_concurrency)}, envoy_port)
    fleet: dict[str, tuple[Child, str]] = {}
    try:
        for name, (argv, env, port) in launch.items():
            child = Child(argv, log_dir / f"{name}.log", env=env)
            fleet[name] = (child, f"http://127.0.0.1:{port}{HOME}")
        for name, (child, url) in fleet.items():
            if name == "envoy":  # ready once its first JWKS fetch is done
                child.wait_http(f"http://127.0.0.1:{envoy_admin}/ready", status=200)
            else:
                child.wait_http(url)
    except Exception:
        stop(fleet)
        raise
    return fleet


def stop(fleet: dict[str, tuple[Child, str]]) -> None:
    for child, _ in fleet.values():
        child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m interop.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="home-api in sidecar mode, e.g. http://127.0.0.1:8080")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--jwks-uri", required=True, help="https://.../.well-known/jwks.json")
    parser.add_argument("--jwks-ca", required=True, type=Path, help="CA file that signed the node's certificate")
    parser.add_argument("--log-dir", type=Path, help="default: a new temporary folder")
    parser.add_argument("--envoy-cache-seconds", type=int, help="Envoy's JWKS cache_duration (default 300)")
    args = parser.parse_args()
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="didmesh-fleet-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    fleet = start(upstream=args.upstream, issuer=args.issuer, audience=args.audience,
                  jwks_uri=args.jwks_uri, jwks_ca=args.jwks_ca.resolve(), log_dir=log_dir,
                  envoy_cache_seconds=args.envoy_cache_seconds)
    for name, (_, url) in fleet.items():
        print(f"{name}={url}", flush=True)
    print(f"# logs in {log_dir}; SIGTERM or Ctrl-C stops them", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop(fleet)


if __name__ == "__main__":
    main()
