"""The Flask middleware following the revocation feed (issue 13): a fake node
serves the JWKS and `GET /v1/revocations?since=&wait=` (pages signed with a
member key of that JWKS, format of notes/scale-spec.md); the middleware polls
it and must refuse revoked tokens - also ones it accepted before - within its
poll interval, ignore a page with a bad signature, and restart from cursor 0
when the feed id changes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import didmesh_auth
import home_app
from interop import jose

ISSUER = "https://didmesh.local"
AUDIENCE = "home-api"
HOME = "/api/activities/home"
INTERVAL = 0.3  # the poll interval under test (default 5 s)
U64_MAX = 2**64 - 1


class FakeNode:
    """JWKS at /.well-known/jwks.json, the feed at /v1/revocations."""

    def __init__(self, member: Ed25519PrivateKey, feed_key: Ed25519PrivateKey, other: Ed25519PrivateKey):
        self.keys = [member, feed_key, other]
        self.signer = feed_key
        self.feed = "feed-a"
        self.entries: list[dict] = []
        self.corrupt = False
        self.polls = 0
        self.lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                if url.path == "/.well-known/jwks.json":
                    with node.lock:
                        body = json.dumps({"keys": [jose.public_jwk(k) for k in node.keys]}).encode()
                    ctype = "application/json"
                elif url.path == "/v1/revocations":
                    since = int(parse_qs(url.query)["since"][0])
                    body = node.page(since).encode()
                    ctype = "application/jwt"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.jwks_uri = f"{base}/.well-known/jwks.json"
        self.feed_uri = f"{base}/v1/revocations"

    def page(self, since: int) -> str:
        with self.lock:
            self.polls += 1
            entries = [e for e in self.entries if e["seq"] > since]
            payload = {"iss": ISSUER, "feed": self.feed, "since": since,
                       "cursor": max([since] + [e["seq"] for e in entries]),
                       "iat": int(time.time()), "entries": entries}
            jws = jwt.encode(payload, self.signer, algorithm="EdDSA",
                             headers={"kid": jose.jwk_thumbprint(self.signer), "typ": didmesh_auth.FEED_TYP})
            if self.corrupt:
                head, _, sig = jws.rpartition(".")
                jws = head + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
            return jws

    def push(self, **entry) -> None:
        with self.lock:
            self.entries.append(entry)

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def node():
    keys = [Ed25519PrivateKey.generate() for _ in range(3)]
    n = FakeNode(*keys)
    n.member, n.feed_key, n.other = keys
    yield n
    n.stop()


@pytest.fixture
def client(node):
    app = home_app.create_app(ISSUER, AUDIENCE, node.jwks_uri,
                              revocations_uri=node.feed_uri, revocations_interval=INTERVAL)
    yield app.test_client()
    # The middleware is app.wsgi_app: stop its poller.
    app.wsgi_app.revocations.stop()


def mint(signer: Ed25519PrivateKey, sub: str, iat: int | None = None, **extra) -> str:
    iat = int(time.time()) if iat is None else iat
    claims = {"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "iat": iat, "nbf": iat, "exp": iat + 600,
              "jti": uuid.uuid4().hex, "auth_time": iat, "amr": ["swk"], **extra}
    return jose.sign_eddsa({"alg": "EdDSA", "typ": "JWT", "kid": jose.jwk_thumbprint(signer)}, claims, signer)


def jti_of(token: str) -> str:
    return jose.split(token)[1]["jti"]


def call(client, token: str):
    return client.get(HOME, headers={"Authorization": f"Bearer {token}"})


def wait_refused(client, token: str, deadline: float) -> float:
    start = time.monotonic()
    while True:
        response = call(client, token)
        if response.status_code == 401:
            assert response.get_json() == {"error": "invalid_token", "reason": "the token was revoked"}
            assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
            return time.monotonic() - start
        assert response.status_code == 200
        assert time.monotonic() - start < deadline, f"still accepted after {deadline} s"
        time.sleep(0.05)


def test_revoked_tokens_are_refused_within_the_poll_interval(node, client):
    now = int(time.time())
    alice_old = mint(node.member, "did:mesh:alice", iat=now - 20)
    bob = mint(node.member, "did:mesh:bob")
    bob_other = mint(node.member, "did:mesh:bob")
    carol_stolen = mint(node.member, "did:mesh:carol", iat=now - 20, key="zStolen")
    carol_passkey = mint(node.member, "did:mesh:carol", iat=now - 20, key="zPasskey")
    by_removed_member = mint(node.other, "did:mesh:dave")
    for token in (alice_old, bob, bob_other, carol_stolen, carol_passkey, by_removed_member):
        assert call(client, token).status_code == 200

    node.push(seq=1, kind="did", did="did:mesh:alice", before=now - 10)
    node.push(seq=2, kind="jti", did="did:mesh:bob", jti=jti_of(bob), exp=now + 600)
    node.push(seq=3, kind="key", did="did:mesh:carol", key="zStolen", before=now)
    node.push(seq=4, kind="member", kids=[jose.jwk_thumbprint(node.other)], before=U64_MAX)
    took = wait_refused(client, alice_old, deadline=INTERVAL + 2)
    print(f"revocation refused {took:.2f} s after publication (poll interval {INTERVAL} s)")
    for token in (bob, carol_stolen, by_removed_member):
        assert call(client, token).status_code == 401
    for token in (bob_other, carol_passkey, mint(node.member, "did:mesh:alice")):
        assert call(client, token).get_json()["user"].startswith("did:mesh:")


def test_a_page_with_a_bad_signature_is_ignored(node, client):
    victim = mint(node.member, "did:mesh:victim")
    node.corrupt = True
    node.push(seq=1, kind="jti", did="did:mesh:victim", jti=jti_of(victim), exp=int(time.time()) + 600)
    feed = client.application.wsgi_app.revocations
    deadline = time.monotonic() + 5
    while feed.bad_pages < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert call(client, victim).status_code == 200, "a forged page revokes nothing"
    assert feed.cursor == 0
    node.corrupt = False
    wait_refused(client, victim, deadline=INTERVAL + 2)


def test_a_new_feed_id_restarts_from_zero(node, client):
    first = mint(node.member, "did:mesh:first")
    second = mint(node.member, "did:mesh:second")
    node.push(seq=1, kind="did", did="did:mesh:x", before=int(time.time()))
    node.push(seq=2, kind="jti", did="did:mesh:first", jti=jti_of(first), exp=int(time.time()) + 600)
    wait_refused(client, first, deadline=INTERVAL + 2)
    # The node's data folder was replaced: a new feed whose only entry has
    # seq 1, below the cursor held (2).
    with node.lock:
        node.feed = "feed-b"
        node.entries = [{"seq": 1, "kind": "jti", "did": "did:mesh:second", "jti": jti_of(second),
                         "exp": int(time.time()) + 600}]
    wait_refused(client, second, deadline=INTERVAL + 2)
    assert client.application.wsgi_app.revocations.feed == "feed-b"
    assert call(client, first).status_code == 401, "entries already held stay"


def test_without_a_feed_a_revoked_token_is_accepted_until_it_expires(node):
    """The bound without the feed is the token lifetime: what Envoy
    jwt_authn and aws-jwt-verify give (they cannot follow a feed)."""
    client = home_app.create_app(ISSUER, AUDIENCE, node.jwks_uri).test_client()
    token = mint(node.member, "did:mesh:alice")
    node.push(seq=1, kind="jti", did="did:mesh:alice", jti=jti_of(token), exp=int(time.time()) + 600)
    time.sleep(INTERVAL * 3)
    assert call(client, token).status_code == 200
    assert node.polls == 0


def test_the_issuing_nodes_watermark_decides_not_its_clock(node, client):
    """`rev` is the DID's revocation watermark the issuing node held: a node
    whose clock ran ahead minted iat after the sign-out's `before` without
    having seen it (rev 0) - revoked; a login after the sign-out carries
    rev = before - accepted even with an iat below it."""
    now = int(time.time())
    before = now + 30
    ahead = mint(node.member, "did:mesh:skewed", iat=now + 40, rev=0)
    after = mint(node.member, "did:mesh:skewed", iat=now, rev=before)
    assert call(client, ahead).status_code == 200
    node.push(seq=1, kind="did", did="did:mesh:skewed", before=before)
    wait_refused(client, ahead, deadline=INTERVAL + 2)
    assert call(client, after).status_code == 200, "issued knowing the sign-out"


def test_the_app_follows_the_feed_named_by_its_command_line(node, monkeypatch):
    """`home_app.py --revocations-uri` (or DIDMESH_REVOCATIONS_URI), as
    `scripts/cluster.sh` starts the sign-in app: a signed-out DID's token is
    refused before it expires."""
    parsed = {}
    monkeypatch.setattr(home_app, "create_app", lambda *a, **kw: parsed.update(args=a, kw=kw) or None)
    monkeypatch.setattr("sys.argv", ["home_app.py", "--issuer", ISSUER, "--audience", AUDIENCE,
                                     "--jwks-uri", node.jwks_uri, "--revocations-uri", node.feed_uri])
    with pytest.raises(AttributeError):  # app.run on the stand-in's None: parsing is all we want
        home_app.main()
    assert parsed["kw"]["revocations_uri"] == node.feed_uri
    monkeypatch.undo()

    monkeypatch.setenv("DIDMESH_REVOCATIONS_URI", node.feed_uri)
    app = home_app.create_app(ISSUER, AUDIENCE, node.jwks_uri, revocations_interval=INTERVAL)
    try:
        client = app.test_client()
        now = int(time.time())
        token = mint(node.member, "did:mesh:erin", iat=now - 20)
        assert call(client, token).status_code == 200
        node.push(seq=1, kind="did", did="did:mesh:erin", before=now - 10)
        wait_refused(client, token, deadline=INTERVAL + 2)
    finally:
        app.wsgi_app.revocations.stop()
