"""Sign-in through external OpenID providers (issue 10), end to end on real
processes: two didmesh member nodes and the front door (testkit.mesh), two
real `oidc-provider` instances (RS256 `acme`, ES256 `umbrella`;
conftest.py), the `didmesh` CLI, and a `requests` session playing the
browser through the provider's non-interactive login.

What a user sees:
* `didmesh link --via NAME --node NODE1` prints `open: URL`, waits for the
  browser, then `linked: NAME`; the ledger holds the commitment (checked
  against blake3 of network id, issuer and sub computed here), not the sub;
* `didmesh login --via NAME --node NODE2` (another node) prints a token that
  PyJWT verifies against the network's JWKS, `fed` in `amr`, `idp` NAME;
* the sign-in page's flow (authorize → /federation/NAME/start → provider →
  callback → the RP's redirect with a code → token endpoint) gives an ID
  token with `fed` in `amr`; an unlinked account gets the not-linked page;
* refused with a reason and no token: an unlinked account, a link removed
  with `didmesh unlink` (at the other node, once the op arrived), a provider
  that is down or hangs (within seconds);
* every node's whole data folder, read byte by byte, holds the link's
  commitment and no provider subject.

    bash sidecars/test.sh federation/    # needs target/debug binaries
"""

from __future__ import annotations

import base64
import hashlib
import os
import queue
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import blake3
import jwt
import pytest

from federation.conftest import Browser, Federation, Provider, new_account
from testkit.mesh import Wallet, b64url, page_request, session

REDIRECT = "http://localhost:8090/auth/callback"  # the RP's; registered, never listened on
CLI_TIMEOUT = 90


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    open_url: str
    browser_end: object  # the last response of the browser, or the URL it stopped at
    callback_seconds: float  # how long the node's callback took to answer
    exit_seconds: float  # from the callback to the CLI's exit
    hops: list  # the URLs the browser visited (conftest.Hop)

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def report(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def cli_flow(fed: Federation, wallet: Wallet | None, argv: list[str], provider: Provider, account: str,
             *, before_callback=None) -> CliRun:
    """Runs a `didmesh` command that prints `open: URL`, plays the browser
    through `provider` as `account` up to the node's callback, runs
    `before_callback()` (if given), delivers the callback, and waits for the
    command to end."""
    if wallet is None:  # `login --via` needs no wallet: point at none
        path, env = fed.work / f"no-wallet-{secrets.token_hex(4)}.json", {}
    else:
        path, env = wallet.path, wallet.env
    proc = subprocess.Popen([str(fed.mesh.bins / "didmesh"), "--wallet", str(path), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, **env})
    lines: queue.Queue = queue.Queue()
    out: list[str] = []
    err: list[str] = []

    def pump(stream, into, q=None):
        for line in stream:
            into.append(line)
            if q is not None:
                q.put(line)
        if q is not None:
            q.put(None)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out, lines), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err), daemon=True)]
    for t in threads:
        t.start()
    try:
        open_url = None
        deadline = time.monotonic() + 30
        while open_url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no `open: URL` line within 30 s:\n{''.join(out)}{''.join(err)}") from None
            if line is None:
                proc.wait(timeout=10)
                for t in threads:
                    t.join(timeout=5)
                proc.stdout.close()
                proc.stderr.close()
                return CliRun(proc.returncode, "".join(out), "".join(err), "", None, 0.0, 0.0, [])
            m = re.fullmatch(r"open: (\S+)\n?", line)
            if m:
                open_url = m.group(1)
        browser = Browser()
        callback = f"/federation/{provider.name}/callback"
        end = browser.follow(open_url, account=account, providers=(provider,),
                             stop=lambda u: urlsplit(u).path == callback)
        assert isinstance(end, str), f"the browser never reached {callback}: {[h.url for h in browser.hops]}"
        if before_callback:
            before_callback()
        started = time.monotonic()
        final = browser.follow(end, stop=lambda u: u.startswith(REDIRECT))
        called_back = time.monotonic()
        proc.wait(timeout=CLI_TIMEOUT)
        exited = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for t in threads:
            t.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
    return CliRun(proc.returncode, "".join(out), "".join(err), open_url, final, called_back - started,
                  exited - called_back, browser.hops)


def link(fed: Federation, wallet: Wallet, provider: Provider, node_url: str, account: str) -> CliRun:
    run = cli_flow(fed, wallet, ["link", "--via", provider.name, "--node", node_url], provider, account)
    assert run.code == 0, run.report()
    assert run.last_line == f"linked: {provider.name}", run.report()
    return run


def login_via(fed: Federation, provider: Provider, node_url: str, account: str, **kw) -> CliRun:
    return cli_flow(fed, None, ["login", "--via", provider.name, "--node", node_url], provider, account, **kw)


def expected_commitment(network_id: str, iss: str, sub: str) -> str:
    """did-core federation::commitment, computed independently."""
    digest = blake3.blake3(b"didmesh federated account v1\0" + network_id.encode() + b"\0" + iss.encode()
                           + b"\0" + sub.encode()).digest()
    return b64url(digest)


def network(fed: Federation) -> dict:
    r = session().get(fed.mesh.nodes[0].addr + "/v1/network", timeout=5)
    r.raise_for_status()
    return r.json()


def head_state(node_addr: str, did: str) -> dict:
    r = session().get(f"{node_addr}/1.0/identifiers/{did}", timeout=5)
    r.raise_for_status()
    version = r.json()["didDocumentMetadata"]["versionId"]
    log = session().get(f"{node_addr}/v1/dids/{did}/log", timeout=5).json()
    return next(e["op"]["state"] for e in log["ops"] if e["cid"] == version)


def verify_access_token(fed: Federation, token: str) -> dict:
    """PyJWT: the signature by the JWKS key the header names, the network's
    issuer, not expired."""
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in fed.mesh.jwks()["keys"]}
    assert header.get("kid") in keys, f"kid {header.get('kid')} not in the JWKS {sorted(keys)}"
    key = jwt.PyJWK.from_dict(keys[header["kid"]])
    return jwt.decode(token, key=key, algorithms=[header["alg"]], issuer=fed.mesh.issuer,
                      options={"verify_aud": False, "require": ["iss", "sub", "exp", "iat"]})


def assert_refused(run: CliRun, *words: str) -> None:
    """Exit non-zero, the reason on stderr, and nothing like a token anywhere."""
    assert run.code != 0, run.report()
    said = run.stderr.lower()
    assert all(w.lower() in said for w in words), f"expected {words} in the reason:\n{run.report()}"
    printed = [line for line in run.stdout.splitlines() if not line.startswith("open: ")]
    assert printed == [], f"a refused sign-in printed more than the URL:\n{run.report()}"
    assert "eyJ" not in run.stdout + run.stderr, run.report()


# --- link at one node, log in at another, for each provider ------------------------------------

@pytest.mark.parametrize("name", ["acme", "umbrella"])
def test_link_at_one_node_then_login_via_the_provider_at_another(fed, name):
    provider = fed.provider(name)
    node1, node2 = fed.mesh.nodes
    user = fed.wallet(f"user-{name}")
    did = user.create_did(node1.url)
    account = new_account()

    run = link(fed, user, provider, node1.url, account)
    assert f"open: {run.open_url}" in run.stdout.splitlines(), run.report()
    # The authorization request the node sent the browser to (OpenID
    # Connect Core §3.1.2.1, RFC 7636): code flow, PKCE S256, state, nonce,
    # this node's callback.
    asked = next(query(h.url) for h in run.hops if h.url.startswith(provider.authorization_endpoint + "?"))
    assert asked["response_type"] == "code" and asked["client_id"] == provider.client_id
    assert asked["redirect_uri"] == f"{node1.url}/federation/{name}/callback"
    assert "openid" in asked["scope"].split() and asked["state"] and asked["nonce"]
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43

    # On the ledger: one link at this provider, its commitment the one of
    # (network, issuer, sub), attested by a current member.
    state = head_state(node1.addr, did)
    [entry] = state["links"]
    net = network(fed)
    assert entry["provider"] == name and entry["id"] == name
    assert entry["commitment"] == expected_commitment(net["network_id"], provider.issuer, account)
    assert entry["attested_by"] in {m["key"] for m in net["members"]}

    fed.mesh.wait_replicated()
    run = login_via(fed, provider, node2.url, account)
    assert run.code == 0, run.report()
    token = run.last_line
    claims = verify_access_token(fed, token)
    assert claims["sub"] == did
    assert "fed" in claims["amr"], claims
    assert claims.get("idp") == name, claims
    # The token alone on its last line, the URL before it; nothing else on stdout.
    assert run.stdout.strip().splitlines() == [f"open: {run.open_url}", token], run.report()



# --- the sign-in page's flow, over HTTP ---------------------------------------------------------

def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def page_flow(fed: Federation, client, provider: Provider, account: str) -> tuple[Browser, object, dict]:
    """authorize (the front door) → the page's request → GET
    {node_url}/federation/NAME/start?request=… → the provider (signs
    `account` in) → the node's callback → stops at the RP's redirect (the
    URL, a str) or returns the node's page (a response)."""
    verifier, challenge = pkce()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    authorize = fed.mesh.issuer + "/oidc/authorize?" + urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT, "scope": "openid",
        "state": state, "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
    browser = Browser()
    page = browser.http.get(authorize, timeout=10, allow_redirects=False)
    assert page.status_code == 200, page.text[:500]
    req = page_request(page.text)
    start = f"{req['node_url'].rstrip('/')}/federation/{provider.name}/start?" + urlencode({"request": req["request"]})
    end = browser.follow(start, account=account, providers=(provider,), stop=lambda u: u.startswith(REDIRECT))
    return browser, end, {"state": state, "nonce": nonce, "verifier": verifier}


def test_page_signin_through_a_provider_gives_an_id_token_with_fed(fed):
    provider = fed.provider("acme")
    node1, node2 = fed.mesh.nodes
    user = fed.wallet("page-user")
    did = user.create_did(node2.url)
    account = new_account()
    link(fed, user, provider, node2.url, account)
    client = fed.rp.register_client("Fed RP", [REDIRECT], confidential=True, id_token_alg="RS256")
    fed.mesh.wait_replicated()

    browser, end, sent = page_flow(fed, client, provider, account)
    assert isinstance(end, str), f"no redirect to the RP: {end.status_code} {end.text[:500]}"
    answer = query(end)
    assert answer["state"] == sent["state"] and answer["iss"] == fed.mesh.issuer and answer["code"]
    r = session().post(fed.mesh.discovery()["token_endpoint"],
                       data={"grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
                             "code_verifier": sent["verifier"]},
                       auth=(client.client_id, client.client_secret), timeout=10)
    assert r.status_code == 200, r.text
    id_token = r.json()["id_token"]
    header = jwt.get_unverified_header(id_token)
    keys = {k["kid"]: k for k in fed.mesh.jwks()["keys"]}
    claims = jwt.decode(id_token, key=jwt.PyJWK.from_dict(keys[header["kid"]]), algorithms=["RS256"],
                        audience=client.client_id, issuer=fed.mesh.issuer,
                        options={"require": ["iss", "sub", "aud", "exp", "iat", "nonce"]})
    assert claims["sub"] == did and claims["nonce"] == sent["nonce"]
    assert "fed" in claims["amr"], claims
    assert claims.get("idp") == "acme", claims

    # An account linked to no DID: the node's not-linked page, no code for the RP.
    browser, end, _ = page_flow(fed, client, provider, new_account())
    assert not isinstance(end, str), f"an unlinked account was sent to the RP: {end}"
    assert 'data-testid="not-linked"' in end.text, f"{end.status_code}: {end.text[:1000]}"
    assert not any(h.url.startswith(REDIRECT) for h in browser.hops)


# --- refusals ----------------------------------------------------------------------------------

def test_cli_login_of_an_unlinked_account_is_refused_with_the_reason(fed):
    run = login_via(fed, fed.provider("umbrella"), fed.mesh.nodes[0].url, new_account())
    assert_refused(run, "not_linked")
    assert run.exit_seconds < 5, run.exit_seconds


def test_a_removed_link_is_refused_at_the_other_node_once_the_op_arrived(fed):
    provider = fed.provider("umbrella")
    node1, node2 = fed.mesh.nodes
    user = fed.wallet("unlink-user")
    did = user.create_did(node1.url)
    account = new_account()
    link(fed, user, provider, node1.url, account)
    fed.mesh.wait_replicated()
    run = login_via(fed, provider, node2.url, account)
    assert run.code == 0 and verify_access_token(fed, run.last_line)["sub"] == did, run.report()

    out = user.cli("unlink", provider.name, "--node", node1.url)
    assert out.strip().splitlines()[-1] == f"unlinked: {provider.name}", out
    assert "links" not in head_state(node1.addr, did)
    fed.mesh.wait_replicated()  # node 2 holds the unlink op now
    assert "links" not in head_state(node2.addr, did)
    run = login_via(fed, provider, node2.url, account)
    assert_refused(run, "not_linked")
    # And where it was unlinked, too.
    assert_refused(login_via(fed, provider, node1.url, account), "not_linked")
    # Unlinking what is not there says so, and signs nothing.
    with pytest.raises(RuntimeError, match="no link"):
        user.cli("unlink", provider.name, "--node", node1.url)


def test_a_provider_that_hangs_or_is_down_is_refused_within_seconds(fed):
    provider = fed.provider("acme")
    node = fed.mesh.nodes[0]
    user = fed.wallet("down-user")
    user.create_did(node.url)
    account = new_account()
    link(fed, user, provider, node.url, account)
    fed.mesh.wait_replicated()

    # It accepts connections but never answers (SIGSTOP): the node's token
    # request must time out (5 s), not hang the callback or the CLI.
    try:
        run = login_via(fed, provider, node.url, account, before_callback=provider.freeze)
    finally:
        provider.thaw()
    assert_refused(run, "provider_unavailable")
    assert run.callback_seconds < 10, f"the callback took {run.callback_seconds:.1f} s"
    assert run.exit_seconds < 5, f"the CLI took {run.exit_seconds:.1f} s after the callback"

    # Not running at all (connection refused): refused at once.
    try:
        run = login_via(fed, provider, node.url, account, before_callback=provider.stop)
    finally:
        provider.start()  # same port, same keys
    assert_refused(run, "provider_unavailable")
    assert run.callback_seconds < 5 and run.exit_seconds < 5, (run.callback_seconds, run.exit_seconds)

    # Back up: the same account signs in again.
    run = login_via(fed, provider, node.url, account)
    assert run.code == 0 and "fed" in verify_access_token(fed, run.last_line)["amr"], run.report()


# --- privacy: the ledger holds commitments, never the subject -----------------------------------

def folder_bytes(folder: Path) -> dict[Path, bytes]:
    files = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert files, f"nothing in {folder}"
    return files


def test_no_node_stores_the_provider_subject(fed):
    node1, node2 = fed.mesh.nodes
    user = fed.wallet("privacy-user")
    did = user.create_did(node1.url)
    accounts = {"acme": new_account(), "umbrella": new_account()}
    link(fed, user, fed.provider("acme"), node1.url, accounts["acme"])
    link(fed, user, fed.provider("umbrella"), node2.url, accounts["umbrella"])
    fed.mesh.wait_replicated()
    links = {entry["provider"]: entry for entry in head_state(node1.addr, did)["links"]}
    assert set(links) == {"acme", "umbrella"}

    for node in fed.mesh.nodes:
        files = folder_bytes(node.data_dir)
        everything = b"\0".join(files.values())
        # The check can fail: the op bytes are stored as they are (sled
        # does not compress them here), so the link op's commitment and the
        # DID are found by the same search that looks for the subject.
        for entry in links.values():
            assert entry["commitment"].encode() in everything, f"{node.data_dir}: the link op is not where we look"
        assert did.encode() in everything
        for name, sub in accounts.items():
            for form in (sub, f"{sub}@example.test", b64url(sub.encode()),
                         base64.b64encode(sub.encode()).decode().rstrip("=")):
                found = [str(p) for p, data in files.items() if form.encode() in data]
                assert not found, f"the {name} subject ({form}) is stored in {found}"
