"""The interop matrix against a real didmesh network (scripts/interop.sh).

Starts, on loopback, and stops again whatever happens:

* a 2-member network from `didmesh-node init-network --nodes 2`: node1 serves
  plain HTTP (the `didmesh` CLI logs in there), node2 serves HTTPS with a
  certificate from `testkit/local-ca.sh` (the verifiers read its JWKS); the
  two replicate over libp2p, and serve the same JWKS, which is the point of
  a network;
* a token from the real CLI: `didmesh wallet init`, `did create`, `login
  --audience home-api` against node1;
* four verifiers, all in *optional* mode (no token -> 200 public view):
  `rust` (home-api --auth jwt, the Rust auth-layer, JWKS from node1 over http:
  home-api's HTTP client is built without TLS), and, JWKS from node2 over
  https: `envoy` and `aws-jwt-verify` in front of one home-api --auth sidecar,
  and the `flask` app;

then runs the matrix (`matrix.VARIANTS`), prints it, and checks a **member
added after the verifiers started**: a new member key, `didmesh-node
member-add` with a quorum (both founders), a token signed by the new key, and
each verifier polled until it accepts that token with no restart, printing
how long each took. Envoy runs with a short JWKS `cache_duration`
(--envoy-cache-seconds, default 3): it never refetches on an unknown kid.

Exit status: 0 when every cell matches and every verifier accepted the new
member in time; 1 otherwise; 2 when the network could not be set up.

    python -m interop.network --bin-dir ../target/debug        # from sidecars/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import requests

from interop import fleet, jose, matrix
from testkit.procs import Child, free_port

SIDECARS = Path(__file__).resolve().parent.parent
HOME = "/api/activities/home"
AUDIENCE = "home-api"
PASSPHRASE = "interop-wallet-passphrase"  # a throwaway wallet in the work folder


class SetupError(RuntimeError):
    """The network or a verifier could not be started (exit 2)."""


def run(argv: list[str], env: dict | None = None) -> str:
    """Run a command to completion; its stdout, or SetupError with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(map(str, argv))}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def session(ca: Path | None = None) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only
    if ca is not None:
        s.verify = str(ca)
    return s


def wait_until(what: str, check, timeout: float, every: float = 0.1, child: Child | None = None):
    """Poll `check()` until it returns something truthy; SetupError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and child.proc.poll() is not None:
            raise SetupError(f"{what}: {child.argv[0]} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            value = check()
            if value:
                return value
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: not within {timeout} s" + (f"\n{child.log_tail()}" if child else ""))
        time.sleep(every)


@dataclass
class Node:
    child: Child
    url: str
    http: requests.Session

    def get(self, path: str) -> dict:
        r = self.http.get(self.url + path, timeout=5)
        r.raise_for_status()
        return r.json()

    def kids(self) -> set[str]:
        return {k["kid"] for k in self.get("/.well-known/jwks.json")["keys"]}


def start_node(stack: ExitStack, bins: Path, data: Path, log: Path, *, bootstrap: str | None = None,
               tls: tuple[Path, Path, Path] | None = None) -> Node:
    """A member node on a free port; p2p on a free loopback port."""
    port = free_port()
    argv = [str(bins / "didmesh-node"), "--data-dir", str(data), "--http-addr", f"127.0.0.1:{port}",
            "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "--sync-interval-ms", "500", "--auth-rate", "0"]
    if bootstrap:
        argv += ["--bootstrap", bootstrap]
    scheme, http = "http", session()
    if tls:
        cert, key, ca = tls
        argv += ["--tls-cert", str(cert), "--tls-key", str(key)]
        scheme, http = "https", session(ca)
    child = Child(argv, log, env={"RUST_LOG": os.environ.get("RUST_LOG", "info")})
    stack.callback(child.stop)
    node = Node(child, f"{scheme}://127.0.0.1:{port}", http)
    wait_until(f"{node.url}/healthz", lambda: node.http.get(node.url + "/healthz", timeout=1).ok, 30, child=child)
    return node


def start_home_api(stack: ExitStack, bins: Path, log: Path, *args: str) -> str:
    """home-api on a free port; its home endpoint URL."""
    port = free_port()
    child = Child([str(bins / "home-api"), "--listen", f"127.0.0.1:{port}", *args], log,
                  env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")})
    stack.callback(child.stop)
    child.wait_http(f"http://127.0.0.1:{port}/healthz")
    return f"http://127.0.0.1:{port}"


# How each verifier learns a new key: printed beside the late-member timings.
REFETCH_RULE = {
    "rust": "unknown kid -> refetch (single-flight, at most 1/s)",
    "envoy": "never on unknown kid; only when cache_duration runs out",
    "aws-jwt-verify": "unknown kid -> refetch; after a miss, 10 s penalty box",
    "flask": "unknown kid -> refetch, unless the last fetch was < 10 s ago",
}


@dataclass
class Acceptance:
    seconds: float | None  # None: not accepted within the bound
    attempts: int
    last: str  # last answer, for the report


def poll_acceptance(url: str, token: str, sub: str, start: float, bound: float) -> Acceptance:
    """GET `url` with `token` every 0.25 s until 200 naming `sub`; seconds since `start`."""
    s = session()
    attempts, last = 0, ""
    while time.monotonic() - start < bound:
        attempts += 1
        try:
            r = s.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            last = str(r.status_code)
            if r.status_code == 200:
                if r.json().get("user") == sub:
                    return Acceptance(time.monotonic() - start, attempts, last)
                last = "200 without the token's sub"
        except requests.RequestException as e:
            last = f"no answer ({type(e).__name__})"
        time.sleep(0.25)
    return Acceptance(None, attempts, last)


def late_member_phase(bins: Path, work: Path, nodes: list[Node], founders: list[Path], inp: matrix.Inputs,
                      verifiers: dict[str, str], envoy_cache: int, since_misses: float) -> tuple[str, bool]:
    """Add a member now, then wait for every verifier to accept its tokens.
    `since_misses`: when (monotonic) the last unknown-kid probe was sent."""
    late_dir = work / "late"
    run([str(bins / "didmesh-node"), "init-network", "--nodes", "1", "--out", str(late_dir)])
    late_key = jose.load_member_key(late_dir / "node1" / "member-key.pem")
    late_kid = jose.jwk_thumbprint(late_key)
    token = matrix.signed_by_member(inp, late_key)
    sub = jose.split(token)[1]["sub"]

    argv = [str(bins / "didmesh-node"), "member-add", "--node", nodes[0].url,
            "--member", str(late_dir / "node1"), "--name", "late"]
    for d in founders:
        argv += ["--sign-with", str(d)]
    run(argv)
    start = time.monotonic()
    quiet = start - since_misses

    # When each node's JWKS lists the key (node2 only through replication).
    listed: dict[str, float | None] = {}

    def watch(node: Node) -> None:
        try:
            wait_until(f"{node.url} JWKS lists {late_kid}", lambda: late_kid in node.kids(), 30, every=0.05)
            listed[node.url] = time.monotonic() - start
        except SetupError:
            listed[node.url] = None

    # Bounds: Envoy needs its cache to run out (plus a refetch); the others
    # may sit out a 10 s cooldown or penalty box started by earlier misses.
    bounds = {name: (envoy_cache + 20.0 if name == "envoy" else 30.0) for name in verifiers}
    results: dict[str, Acceptance] = {}

    def poll(name: str, url: str) -> None:
        results[name] = poll_acceptance(url, token, sub, start, bounds[name])

    threads = [threading.Thread(target=watch, args=(n,)) for n in nodes]
    threads += [threading.Thread(target=poll, args=(name, url)) for name, url in verifiers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def secs(v: float | None) -> str:
        return "never" if v is None else f"{v:.2f} s"

    lines = [
        f"member added after the verifiers started: kid {late_kid} (member-add accepted at t=0, "
        f"{quiet:.1f} s after the matrix's last unknown-kid probe)",
        "JWKS lists it: " + ", ".join(f"{n.url} after {secs(listed.get(n.url))}" for n in nodes),
        f"{'verifier':<16}{'accepted after':<16}{'tries':<7}how it learns a new key",
    ]
    ok = True
    for name in verifiers:
        a = results[name]
        ok &= a.seconds is not None
        rule = REFETCH_RULE.get(name, "")
        if name == "envoy":
            rule += f" ({envoy_cache} s here)"
        cell = secs(a.seconds) if a.seconds is not None else f"NOT in {bounds[name]:.0f} s (last {a.last})"
        lines.append(f"{name:<16}{cell:<16}{a.attempts:<7}{rule}")
    lines.append(f"late member: {sum(r.seconds is not None for r in results.values())} of {len(results)} accepted")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interop.network", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", type=Path, default=Path(os.environ.get("DIDMESH_BIN_DIR", SIDECARS.parent / "target/debug")),
                        help="folder with didmesh-node, home-api, didmesh [DIDMESH_BIN_DIR, else target/debug]")
    parser.add_argument("--work", type=Path, help="work folder (default: a new temporary one, removed on success)")
    parser.add_argument("--envoy-cache-seconds", type=int, default=3, help="Envoy's JWKS cache_duration here (default 3)")
    parser.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long after the matrix before adding the member (default 0). The matrix's "
                             "unknown-kid probes start aws-jwt-verify's penalty box and Flask's refetch cooldown "
                             "(10 s each); 11 measures the refetch itself instead of those")
    parser.add_argument("--json", metavar="FILE", help="also write the matrix and the timings as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) even on success")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. a test runner's timeout) must unwind like Ctrl-C, so the
    # ExitStack stops every child: they run in their own sessions.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    return in_work_dir("interop", args, run_all)


def in_work_dir(prog: str, args: argparse.Namespace, body) -> int:
    """Run `body(stack, bins, work, logs, args)` with a work folder and an
    ExitStack that stops every process it started; the folder is removed
    after a success unless --keep or --work. SetupError etc. -> exit 2."""
    bins = args.bin_dir.resolve()
    for name in ("didmesh-node", "home-api", "didmesh"):
        if not (bins / name).exists():
            print(f"{prog}: {bins / name} is missing (cargo build -p didmesh-node -p home-api -p didmesh-client)",
                  file=sys.stderr)
            return 2
    work = args.work or Path(tempfile.mkdtemp(prefix=f"didmesh-{prog}-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    status = 2
    try:
        with ExitStack() as stack:
            status = body(stack, bins, work, logs, args)
    except (SetupError, RuntimeError, TimeoutError) as e:  # procs.Child and fleet raise the last two
        print(f"{prog}: setup failed: {e}", file=sys.stderr)
        status = 2
    finally:
        if status == 0 and not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"{prog}: logs in {logs}", file=sys.stderr)
    return status


@dataclass
class Setup:
    """The running network and verifiers, as `start_all` left them."""

    nodes: list[Node]  # node1 (http), node2 (https)
    founders: list[Path]  # their data folders
    issuer: str
    did: str
    token: str  # from the CLI, issued by node1
    verifiers: dict[str, str]  # name -> home endpoint URL
    described: str  # what runs where, for the report


def start_all(stack: ExitStack, bins: Path, work: Path, logs: Path, *, envoy_cache_seconds: int | None = None,
              envoy_concurrency: int | None = None, flask_server: str = "werkzeug") -> Setup:
    """The network, a token, the four verifiers; all stopped by `stack`."""
    t0 = time.monotonic()
    ca_dir = work / "ca"
    run(["bash", str(SIDECARS / "testkit" / "local-ca.sh"), str(ca_dir)])
    ca = ca_dir / "ca.pem"

    net = work / "net"
    run([str(bins / "didmesh-node"), "init-network", "--nodes", "2", "--out", str(net)])
    issuer = json.loads((net / "genesis.json").read_text())["issuer"]
    founders = [net / "node1", net / "node2"]

    node1 = start_node(stack, bins, founders[0], logs / "node1.log")
    seed = wait_until("node1's p2p address", lambda: node1.get("/v1/status")["listen_addrs"][0], 10)
    node2 = start_node(stack, bins, founders[1], logs / "node2.log", bootstrap=seed,
                       tls=(ca_dir / "node.pem", ca_dir / "node-key.pem", ca))
    nodes = [node1, node2]
    wait_until("node2 connected to node1", lambda: node2.get("/v1/status")["peers"], 20)
    if node1.kids() != node2.kids():
        raise SetupError(f"the two members serve different JWKS: {node1.kids()} vs {node2.kids()}")

    # A real token from the real wallet CLI, issued by node1 (plain HTTP).
    wallet = ["--wallet", str(work / "wallet.json")]
    cli_env = {"DIDMESH_PASSPHRASE": PASSPHRASE}
    didmesh = str(bins / "didmesh")
    run([didmesh, *wallet, "wallet", "init"], cli_env)
    did = run([didmesh, *wallet, "did", "create", "--node", node1.url], cli_env).strip()
    token = run([didmesh, *wallet, "login", "--node", node1.url, "--audience", AUDIENCE], cli_env).strip()
    (work / "token.jwt").write_text(token)
    header, claims, _ = jose.split(token)
    if claims.get("sub") != did or header.get("kid") not in node1.kids():
        raise SetupError(f"the CLI's token does not name {did} or a member kid: {header} {claims}")

    # The verifiers. JWKS over https from node2 for the three sidecars.
    jwks_https = f"{node2.url}/.well-known/jwks.json"
    jwks_http = f"{node1.url}/.well-known/jwks.json"
    rust = start_home_api(stack, bins, logs / "home-api-jwt.log", "--auth", "jwt", "--jwks-url", jwks_http,
                          "--issuer", issuer, "--audience", AUDIENCE)
    upstream = start_home_api(stack, bins, logs / "home-api-sidecar.log", "--auth", "sidecar",
                              "--trusted-header", "x-jwt-payload")
    started = fleet.start(upstream=upstream, issuer=issuer, audience=AUDIENCE, jwks_uri=jwks_https, jwks_ca=ca,
                          log_dir=logs, envoy_cache_seconds=envoy_cache_seconds,
                          envoy_concurrency=envoy_concurrency, flask_server=flask_server)
    stack.callback(fleet.stop, started)
    verifiers = {"rust": rust + HOME, **{name: url for name, (_, url) in started.items()}}
    cache = f"cache_duration {envoy_cache_seconds or 300} s"
    described = "\n".join([
        f"network: {node1.url} (http, CLI login) + {node2.url} (https, JWKS for the sidecars); "
        f"issuer {issuer}; token for {did} from node1, kid {header['kid']}",
        "verifiers (all in optional mode: no token -> 200 public view):",
        f"  rust            home-api --auth jwt (Rust auth-layer), JWKS {jwks_http}",
        f"  envoy           Envoy jwt_authn -> home-api --auth sidecar, JWKS {jwks_https}, {cache}",
        f"  aws-jwt-verify  node server.js -> home-api --auth sidecar, JWKS {jwks_https}",
        f"  flask           Flask + PyJWKClient ({flask_server}), JWKS {jwks_https}",
        f"  (set up in {time.monotonic() - t0:.1f} s)",
    ])
    return Setup(nodes, founders, issuer, did, token, verifiers, described)


def run_all(stack: ExitStack, bins: Path, work: Path, logs: Path, args: argparse.Namespace) -> int:
    env = start_all(stack, bins, work, logs, envoy_cache_seconds=args.envoy_cache_seconds)
    nodes, founders, issuer, token, verifiers = env.nodes, env.founders, env.issuer, env.token, env.verifiers
    print(env.described)
    print()

    inp = matrix.Inputs.load(token, str(founders[0] / "member-key.pem"), issuer, AUDIENCE)
    results = matrix.run(verifiers, inp)
    misses_end = time.monotonic()
    print(matrix.render(results))
    print()
    if args.settle > 0:
        print(f"settling {args.settle:.0f} s (cooldowns and penalty boxes from the matrix run out)")
        time.sleep(args.settle)

    late_report, late_ok = late_member_phase(bins, work, nodes, founders, inp, verifiers, args.envoy_cache_seconds,
                                             misses_end)
    print(late_report)

    failed = matrix.mismatches(results)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "matrix": {v: {k: {"status": c.status, "ok": c.ok, "note": c.note} for k, c in row.items()}
                       for v, row in results.items()},
            "late_member_report": late_report,
        }, indent=2))
    print()
    print(f"interop: {'ok' if not failed and late_ok else 'FAILED'} "
          f"({failed} matrix mismatches, late member {'accepted by all' if late_ok else 'NOT accepted by all'})")
    return 0 if not failed and late_ok else 1


if __name__ == "__main__":
    sys.exit(main())
