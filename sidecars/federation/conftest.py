"""A real didmesh network whose nodes federate with two real OpenID
providers: panva's `oidc-provider` (npm, OpenID-certified), one signing ID
tokens with RS256 (`acme`), one with ES256 (`umbrella`), each a process of
its own (`provider.js`) with one client registration whose redirect URIs are
every node's `PUBLIC/federation/NAME/callback`.

The nodes read the providers file (`--providers`) at start and each
provider's discovery document lazily, so the file names the providers'
ports before they run; the providers start once the nodes' URLs (their
callbacks) are known. Started once per module, stopped at teardown.

The test plays the browser with a `requests` session (`Browser`): it
follows redirects itself, and on the provider's authorization endpoint adds
`login_hint=<account>`, which provider.js's non-interactive login signs in.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
import requests

from testkit.mesh import Mesh, Wallet, session
from testkit.procs import Child, free_port

HERE = Path(__file__).resolve().parent
PROVIDER_JS = HERE / "provider.js"
# (name, display name, ID-token alg). Names are what `--via` takes.
PROVIDERS = (("acme", "Acme", "RS256"), ("umbrella", "Umbrella", "ES256"))


def node_binary() -> str:
    """Node.js with oidc-provider installed, or a failure saying what to run."""
    node = shutil.which("node")
    if not node:
        raise RuntimeError("Node.js (>= 20) is needed for sidecars/federation/provider.js: apt-get install nodejs npm")
    if not (HERE / "node_modules" / "oidc-provider" / "package.json").exists():
        raise RuntimeError("sidecars/federation/node_modules lacks oidc-provider: run `bash sidecars/setup.sh`")
    return node


@dataclass
class Provider:
    """One provider.js process; `stop()`/`start()` restart it on the same
    port with the same keys (they are kept in a file)."""

    name: str
    display_name: str
    alg: str
    port: int
    work: Path
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: list[str] = field(default_factory=list)
    child: Child | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorization_endpoint(self) -> str:
        return self.issuer + "/auth"  # oidc-provider's default route

    def start(self) -> None:
        argv = [node_binary(), str(PROVIDER_JS), "--port", str(self.port), "--issuer", self.issuer,
                "--alg", self.alg, "--client-id", self.client_id, "--keys", str(self.work / f"{self.name}-jwks.json")]
        for uri in self.redirect_uris:
            argv += ["--redirect-uri", uri]
        self.child = Child(argv, self.work / f"provider-{self.name}.log", env={"FED_CLIENT_SECRET": self.client_secret})
        self.child.wait_http(self.issuer + "/.well-known/openid-configuration", status=200)

    def stop(self) -> None:
        if self.child:
            self.child.stop()
            self.child = None

    def freeze(self) -> None:
        """Stops the process (SIGSTOP): the kernel still accepts TCP
        connections for it, but nothing answers — the case only a timeout
        catches. `thaw()` resumes it."""
        assert self.child is not None
        os.killpg(self.child.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.child is not None:
            os.killpg(self.child.proc.pid, signal.SIGCONT)

    def jwks(self) -> dict:
        r = session().get(self.issuer + "/jwks", timeout=5)
        r.raise_for_status()
        return r.json()

    def toml(self, secret_file: Path | None) -> str:
        lines = ["[[provider]]", f'name = "{self.name}"', f'display_name = "{self.display_name}"',
                 f'issuer = "{self.issuer}"', f'client_id = "{self.client_id}"']
        if secret_file:
            lines.append(f'client_secret_file = "{secret_file}"')
        else:
            lines.append(f'client_secret = "{self.client_secret}"')
        return "\n".join(lines) + "\n"


@dataclass
class Hop:
    url: str
    status: int


class Browser:
    """A browser without JavaScript: a cookie jar and a redirect follower
    that never leaves loopback and stops where the test says."""

    def __init__(self) -> None:
        self.http = session()
        self.hops: list[Hop] = []

    def follow(self, url: str, *, account: str | None = None, providers: tuple = (), stop=None,
               max_hops: int = 20, timeout: float = 30) -> requests.Response | str:
        """GET `url` and follow redirects. On a provider's authorization
        endpoint, `login_hint=account` is added (provider.js signs that
        account in). Returns the last response that is not a redirect, or
        the URL a redirect pointed at when `stop(url)` is true for it (not
        fetched)."""
        for _ in range(max_hops):
            if account and any(url.startswith(p.authorization_endpoint + "?") for p in providers) \
                    and "login_hint=" not in url:
                url += "&" + urlencode({"login_hint": account})
            host = urlsplit(url).hostname
            if host not in ("localhost", "127.0.0.1"):
                raise AssertionError(f"the flow left loopback: {url}")
            r = self.http.get(url, allow_redirects=False, timeout=timeout)
            self.hops.append(Hop(url, r.status_code))
            if r.status_code not in (301, 302, 303, 307, 308):
                return r
            url = urljoin(url, r.headers["Location"])
            if stop and stop(url):
                return url
        raise AssertionError(f"more than {max_hops} redirects: {[h.url for h in self.hops]}")


@dataclass
class Federation:
    mesh: Mesh
    providers: dict[str, Provider]
    rp: Wallet  # owns the step-6 relying party of the page-flow test
    work: Path

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def wallet(self, name: str) -> Wallet:
        return self.mesh.wallet(name)


@pytest.fixture(scope="module")
def fed(tmp_path_factory) -> Federation:
    node_binary()  # fail before anything starts when Node.js or the package is missing
    work = tmp_path_factory.mktemp("federation")
    providers = {
        name: Provider(name, display, alg, free_port(), work, client_id=f"didmesh-{name}",
                       client_secret=secrets.token_urlsafe(32))
        for name, display, alg in PROVIDERS
    }
    # One secret inline, one in a file (both ways the file allows).
    secret_file = work / "umbrella.secret"
    secret_file.write_text(providers["umbrella"].client_secret + "\n")
    secret_file.chmod(0o600)
    providers_toml = work / "providers.toml"
    providers_toml.write_text(providers["acme"].toml(None) + "\n" + providers["umbrella"].toml(secret_file))
    with Mesh(work / "mesh", nodes=2, node_args=("--providers", providers_toml)) as mesh:
        try:
            for p in providers.values():
                p.redirect_uris = [f"{n.url}/federation/{p.name}/callback" for n in mesh.nodes]
                p.start()
            rp = mesh.wallet("rp")
            rp.create_did(mesh.nodes[0].url)
            yield Federation(mesh, providers, rp, work)
        finally:
            for p in providers.values():
                p.thaw()
                p.stop()


def new_account() -> str:
    """A provider subject no test used before (its `sub`)."""
    return "acct-" + secrets.token_hex(12)

