"""A real didmesh network for OpenID tests: member nodes, the front door, wallets.

    with Mesh(tmp_path, nodes=2) as mesh:            # everything stops on exit
        rp = mesh.wallet("rp")                        # a `didmesh` CLI wallet
        rp.create_did(mesh.nodes[0].url)
        client = rp.register_client("Home activities", ["http://localhost:8090/auth/callback"],
                                    confidential=True, id_token_alg="RS256")
        user = mesh.wallet("alice", seed=bytes(32))   # its Ed25519 seed known here
        did = user.create_did(mesh.nodes[1].url)
        mesh.wait_replicated()
        redirect = sign_in_over_http(authorize_url, did, user.key).redirect   # the page's part
        app_url, client = mesh.signin_app(rp)         # the Flask sign-in app, for a browser

The layout is the one `scripts/cluster.sh up` makes, on free ports:

* `didmesh-node init-network --nodes N --issuer http://localhost:<door>`;
* node i on `127.0.0.1:<port i>` with `--public-url http://localhost:<port i>`
  and `--webauthn-origin http://localhost:<port j>` for every node j (the
  issuer's origin, the front door's, is always accepted by the node);
  libp2p on a free port, nodes 2.. bootstrapping from node 1;
* the front door (sidecars/frontdoor/run.sh, Envoy) on `127.0.0.1:<door>`,
  round robin over the nodes: the issuer URL.

`localhost`, not 127.0.0.1, because WebAuthn refuses IP addresses as RP IDs
and a relying party checks that the issuer equals the URL it fetched
discovery from. Binaries from $DIDMESH_BIN_DIR, else <repo>/target/debug.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from testkit.procs import Child, free_port

SIDECARS = Path(__file__).resolve().parent.parent
ROOT = SIDECARS.parent
PASSPHRASE = "mesh-test-wallet-passphrase"  # throwaway wallets in a test's own folder


def bin_dir() -> Path:
    d = Path(os.environ.get("DIDMESH_BIN_DIR") or ROOT / "target" / "debug")
    for name in ("didmesh-node", "didmesh"):
        if not (d / name).exists():
            raise RuntimeError(f"no {name} in {d}: cargo build -p didmesh-node -p didmesh-client "
                               "(or set DIDMESH_BIN_DIR)")
    return d


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only: never an environment proxy
    return s


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def run(argv: list, env: dict | None = None, timeout: float = 60) -> str:
    """Run to completion; stdout, or RuntimeError with everything it said."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_until(what: str, check, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (requests.RequestException, KeyError, IndexError, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s" + (f" (last: {last!r})" if last else ""))
        time.sleep(every)


@dataclass
class Node:
    child: Child
    url: str  # its public URL, http://localhost:<port>
    addr: str  # http://127.0.0.1:<port>, what the front door dials
    data_dir: Path | None = None  # its --data-dir (the sled folder is inside)

    def status(self) -> dict:
        r = session().get(self.addr + "/v1/status", timeout=5)
        r.raise_for_status()
        return r.json()


@dataclass
class Client:
    """A relying party registered on the ledger by `Wallet.register_client`."""

    client_id: str
    client_secret: str | None = field(repr=False)  # never in a test report
    redirect_uris: list[str]
    id_token_alg: str
    output: str = field(default="", repr=False)  # what the CLI printed (the secret too)


@dataclass
class Wallet:
    """A `didmesh` CLI wallet. `key` is its main Ed25519 key when the test
    gave the seed (so the test can sign as the browser would)."""

    bins: Path
    path: Path
    key: Ed25519PrivateKey | None = None
    did: str | None = None
    node: str | None = None
    env: dict = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 60) -> str:
        return run([self.bins / "didmesh", "--wallet", self.path, *args], env=self.env, timeout=timeout)

    def create_did(self, node: str) -> str:
        out = self.cli("did", "create", "--node", node)
        self.did, self.node = out.strip().splitlines()[-1], node
        if not self.did.startswith("did:mesh:"):
            raise RuntimeError(f"did create printed {out!r}")
        return self.did

    def register_client(self, name: str, redirect_uris: list[str], *, confidential: bool,
                        id_token_alg: str = "RS256", node: str | None = None) -> Client:
        """`didmesh client register`; reads `client_id: …` / `client_secret: …`."""
        argv = ["client", "register", "--node", node or self.node, "--name", name, "--id-token-alg", id_token_alg]
        for uri in redirect_uris:
            argv += ["--redirect-uri", uri]
        if confidential:
            argv.append("--confidential")
        out = self.cli(*argv)
        fields = dict(re.findall(r"^(client_id|client_secret): (\S+)$", out, re.M))
        if "client_id" not in fields or confidential != ("client_secret" in fields):
            raise RuntimeError(f"`didmesh {' '.join(argv)}` printed no client_id/client_secret lines:\n{out}")
        return Client(fields["client_id"], fields.get("client_secret"), list(redirect_uris), id_token_alg, out)


class Mesh:
    """N member nodes and the front door, on loopback; stopped on exit."""

    def __init__(self, work: Path, nodes: int = 2, *, sync_interval_ms: int = 300, node_args: tuple = ()):
        self.work, self.n = Path(work), nodes
        self.bins = bin_dir()
        self.sync_interval_ms, self.node_args = sync_interval_ms, list(node_args)
        self.stack = ExitStack()
        self.nodes: list[Node] = []
        self.door_port = free_port()
        self.issuer = f"http://localhost:{self.door_port}"
        self.logs = self.work / "logs"

    # -- lifecycle
    def __enter__(self) -> "Mesh":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stack.close()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        net = self.work / "net"
        run([self.bins / "didmesh-node", "init-network", "--nodes", self.n, "--out", net, "--issuer", self.issuer],
            timeout=120)
        ports = [free_port() for _ in range(self.n)]
        origins = [f"http://localhost:{p}" for p in ports]
        bootstrap: list[str] = []
        for i, port in enumerate(ports, start=1):
            argv = [self.bins / "didmesh-node", "--data-dir", net / f"node{i}",
                    "--http-addr", f"127.0.0.1:{port}", "--p2p-addr", "/ip4/127.0.0.1/tcp/0",
                    "--public-url", origins[i - 1], "--sync-interval-ms", self.sync_interval_ms,
                    *bootstrap, *self.node_args]
            for origin in origins:
                argv += ["--webauthn-origin", origin]
            child = Child([str(a) for a in argv], self.logs / f"node{i}.log",
                          env={"RUST_LOG": os.environ.get("RUST_LOG", "info")})
            self.stack.callback(child.stop)
            node = Node(child, origins[i - 1], f"http://127.0.0.1:{port}", net / f"node{i}")
            child.wait_http(node.addr + "/healthz", timeout=60)
            self.nodes.append(node)
            if i == 1:
                seed = wait_until("node1's p2p address", lambda: node.status()["listen_addrs"][0], 10)
                bootstrap = ["--bootstrap", seed]
        if self.n > 1:
            wait_until("every node has a peer", lambda: all(n.status()["peers"] for n in self.nodes), 60)
        door_admin = free_port()
        argv = [str(SIDECARS / "frontdoor" / "run.sh"), "--listen", f"127.0.0.1:{self.door_port}",
                "--admin", f"127.0.0.1:{door_admin}"]
        for node in self.nodes:
            argv += ["--upstream", node.addr]
        door = Child(argv, self.logs / "frontdoor.log")
        self.stack.callback(door.stop)
        door.wait_http(f"http://127.0.0.1:{door_admin}/ready", status=200)
        door.wait_http(f"http://127.0.0.1:{self.door_port}/healthz", status=200)

    # -- helpers
    def wallet(self, name: str, seed: bytes | None = None) -> Wallet:
        """A new CLI wallet (fast KDF: a throwaway). With `seed`, its main
        key is that Ed25519 seed and `Wallet.key` signs with it."""
        path = self.work / f"{name}.wallet"
        env = {"DIDMESH_PASSPHRASE": PASSPHRASE, "DIDMESH_KDF_FAST": "1"}
        w = Wallet(self.bins, path, env=env)
        argv = ["wallet", "init"]
        if seed is not None:
            argv += ["--seed-hex", seed.hex()]
            w.key = Ed25519PrivateKey.from_private_bytes(seed)
        w.cli(*argv)
        return w

    def wait_replicated(self, timeout: float = 30) -> None:
        """Until every node holds the same ledger (so any node knows every
        client and DID, whichever one the front door picks)."""
        wait_until("every node holds the same ledger",
                   lambda: len({n.status()["ledger_digest"] for n in self.nodes}) == 1, timeout)

    def signin_app(self, owner: Wallet, *, name: str = "Home activities", confidential: bool = True,
                   id_token_alg: str = "RS256") -> tuple[str, Client]:
        """The Flask home app with "Sign in with didmesh" (flask/signin.py) as
        a process on a free port, its client registered by `owner` (which
        needs a DID) with redirect URI http://localhost:<port>/auth/callback.
        Returns (http://localhost:<port>/, client); stopped with the mesh."""
        port = free_port()
        base = f"http://localhost:{port}"
        client = owner.register_client(name, [f"{base}/auth/callback"], confidential=confidential,
                                       id_token_alg=id_token_alg)
        self.wait_replicated()
        env = {"DIDMESH_OIDC_CLIENT_ID": client.client_id, "DIDMESH_OIDC_REDIRECT_URI": f"{base}/auth/callback",
               "DIDMESH_OIDC_ID_TOKEN_ALG": id_token_alg}
        if client.client_secret:
            env["DIDMESH_OIDC_CLIENT_SECRET"] = client.client_secret
        # The interpreter running the tests has Flask and Authlib (.venv).
        app = Child([sys.executable, str(SIDECARS / "flask" / "home_app.py"), "--listen", f"127.0.0.1:{port}",
                     "--issuer", self.issuer, "--audience", "home-api",
                     "--jwks-uri", f"{self.issuer}/.well-known/jwks.json"],
                    self.logs / f"signin-app-{port}.log", env=env)
        self.stack.callback(app.stop)
        app.wait_http(f"http://127.0.0.1:{port}/", status=200)
        return base + "/", client

    def discovery(self) -> dict:
        r = session().get(self.issuer + "/.well-known/openid-configuration", timeout=5)
        r.raise_for_status()
        return r.json()

    def jwks(self) -> dict:
        r = session().get(self.discovery()["jwks_uri"], timeout=5)
        r.raise_for_status()
        return r.json()


REQUEST_SCRIPT = re.compile(
    r'<script id="didmesh-request" type="application/json">(.*?)</script>', re.S)


def page_request(page: str) -> dict:
    """The JSON the sign-in page reads from `#didmesh-request`."""
    m = REQUEST_SCRIPT.search(page)
    if not m:
        raise AssertionError(f"no #didmesh-request in the authorize page:\n{page[:2000]}")
    # Raw JSON, as the page's JSON.parse(textContent) reads it (a node
    # writes `<` as \u003c, so nothing in it can close the script element).
    return json.loads(m.group(1))


@dataclass
class SignIn:
    redirect: str  # redirect_uri?code=…&state=…&iss=…
    request: dict  # the page's #didmesh-request (node_url: the node that served it)


def sign_in_over_http(authorize_url: str, did: str, key: Ed25519PrivateKey,
                      http: requests.Session | None = None) -> SignIn:
    """What the sign-in page does with a browser-held Ed25519 key, over plain
    HTTP: GET the authorization URL (the page), POST the page's request and
    the DID to `{node_url}/oidc/signin/challenge`, sign the message, POST it
    to `{node_url}/oidc/signin/complete`; returns the `redirect` it answers
    (redirect_uri?code=…&state=…&iss=…) and the page's request. The page's
    origin is the URL it was served from (the front door), so the JSON calls
    carry that `Origin`, and the node must answer them with CORS for it (or
    a browser would not let the page read the answer)."""
    http = http or session()
    page = http.get(authorize_url, timeout=10, allow_redirects=False)
    if page.status_code != 200:
        raise AssertionError(f"authorize answered {page.status_code}: {page.text[:500]}")
    req = page_request(page.text)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    headers = {"Origin": origin}
    node = req["node_url"].rstrip("/")
    r = http.post(f"{node}/oidc/signin/challenge", json={"request": req["request"], "did": did},
                  headers=headers, timeout=10)
    if r.status_code != 200:
        raise AssertionError(f"challenge answered {r.status_code}: {r.text}")
    if r.headers.get("Access-Control-Allow-Origin") != origin:
        raise AssertionError(f"challenge: no CORS for {origin}: {dict(r.headers)}")
    challenge = r.json()
    signature = b64url(key.sign(challenge["message"].encode()))
    r = http.post(f"{node}/oidc/signin/complete",
                  json={"request": req["request"], "nonce": challenge["nonce"], "did": did, "signature": signature},
                  headers=headers, timeout=10)
    if r.status_code != 200:
        raise AssertionError(f"complete answered {r.status_code}: {r.text}")
    return SignIn(r.json()["redirect"], req)
