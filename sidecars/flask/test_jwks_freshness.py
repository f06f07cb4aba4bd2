"""The Flask middleware against a small JWKS server on loopback whose keys and
Cache-Control header the test changes while it runs: a removed member's key
must be refused within the answer's max-age (bounded by jwks_max_age), also
for a token it already accepted; claims that only look valid (exp = 2^64-1,
empty sub, ...) must be refused."""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import didmesh_auth
import home_app
from interop import jose

ISSUER = "https://didmesh.local"
AUDIENCE = "home-api"
HOME = "/api/activities/home"
SUB = "did:mesh:aaaabbbbccccddddeeeeffffgggghhhh"


class JwksServer:
    """Serves {"keys": [...]} for the given private keys, with an optional Cache-Control."""

    def __init__(self, keys: list[Ed25519PrivateKey], cache_control: str | None):
        self.keys = list(keys)
        self.cache_control = cache_control
        self.fetches = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    server.fetches += 1
                    body = json.dumps({"keys": [jose.public_jwk(k) for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if server.cache_control is not None:
                    self.send_header("Cache-Control", server.cache_control)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        self.uri = f"http://127.0.0.1:{self._http.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: Ed25519PrivateKey) -> None:
        with self._lock:
            self.keys = list(keys)

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(keys, cache_control=None):
        servers.append(JwksServer(keys, cache_control))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def mint(key: Ed25519PrivateKey, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": SUB, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
              "jti": str(uuid.uuid4()), "auth_time": now, "amr": ["swk"]}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jose.sign_eddsa({"alg": "EdDSA", "typ": "JWT", "kid": jose.jwk_thumbprint(key)}, claims, key)


def client_for(server: JwksServer, **settings):
    return home_app.create_app(ISSUER, AUDIENCE, server.uri, **settings).test_client()


def call(client, token: str):
    return client.get(HOME, headers={"Authorization": f"Bearer {token}"})


def wait_until_refused(client, key, cached_token: str, deadline: float) -> float:
    """Polls until the removed key's cached token and a new one are both 401."""
    removed_at = time.monotonic()
    while True:
        old, new = call(client, cached_token), call(client, mint(key))
        if old.status_code == 401 and new.status_code == 401:
            for response in (old, new):
                assert response.get_json()["error"] == "invalid_token"
                assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
            return time.monotonic() - removed_at
        elapsed = time.monotonic() - removed_at
        assert elapsed < deadline, f"key still accepted {elapsed:.1f} s after removal ({old.status_code}, {new.status_code})"
        time.sleep(0.1)


def test_a_removed_key_is_refused_within_max_age(serve):
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    server = serve([a, b], "public, max-age=2")
    client = client_for(server, jwks_min_age=1)  # the floor lowered, to see max-age itself
    token_a = mint(a)
    assert call(client, token_a).status_code == 200
    assert call(client, token_a).status_code == 200
    server.publish(b)  # a's member is removed
    took = wait_until_refused(client, a, token_a, deadline=2 + 3)
    print(f"key a refused {took:.2f} s after removal (max-age=2)")
    assert call(client, mint(b)).get_json()["user"] == SUB


def test_max_age_above_the_ceiling_is_capped(serve):
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    server = serve([a, b], "max-age=86400")
    client = client_for(server, jwks_max_age=2, jwks_min_age=1)
    token_a = mint(a)
    assert call(client, token_a).status_code == 200
    server.publish(b)
    wait_until_refused(client, a, token_a, deadline=2 + 3)
    assert call(client, mint(b)).status_code == 200


def test_without_cache_control_the_refresh_interval_applies(serve):
    a, b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    server = serve([a, b])
    client = client_for(server, jwks_refresh=3, jwks_min_age=1)
    token_a = mint(a)
    assert call(client, token_a).status_code == 200
    server.publish(b)
    time.sleep(1)
    assert call(client, token_a).status_code == 200  # the set is still fresh
    assert server.fetches == 1
    wait_until_refused(client, a, token_a, deadline=2 + 3)
    assert call(client, mint(b)).status_code == 200


def test_defaults_never_trust_a_jwks_for_more_than_60_seconds():
    cache = didmesh_auth.JwksCache("http://127.0.0.1:1/jwks.json")
    assert cache.lifetime(None) == 60
    assert cache.lifetime(86400) == 60
    assert cache.lifetime(30) == 30
    assert cache.lifetime(0) == 5


def test_max_age_zero_does_not_make_us_hammer_the_node(serve):
    a = Ed25519PrivateKey.generate()
    server = serve([a], "no-cache, max-age=0")
    client = client_for(server, jwks_min_age=1)
    started, calls = time.monotonic(), 0
    while time.monotonic() - started < 2.5:
        assert call(client, mint(a)).status_code == 200
        calls += 1
    assert calls > 20
    assert server.fetches <= 4, f"{server.fetches} fetches in 2.5 s"


def _headers(*pairs: tuple[str, str]) -> http.client.HTTPMessage:
    message = http.client.HTTPMessage()
    for name, value in pairs:
        message[name] = value
    return message


@pytest.mark.parametrize("pairs, expected", [
    ((), None),
    ((("Cache-Control", "public"),), None),
    ((("Cache-Control", "public, max-age=30"),), 30),
    ((("Cache-Control", 'Max-Age="30"'),), 30),
    ((("Cache-Control", "s-maxage=600"),), None),
    ((("Cache-Control", "max-age=99999999999999999999"),), 2**31),
    ((("Cache-Control", "no-store"),), 0),
    ((("Cache-Control", "no-cache, max-age=30"),), 0),
    ((("Cache-Control", "max-age=-1"),), 0),
    ((("Cache-Control", "max-age=3.5"),), 0),
    ((("Cache-Control", "max-age=30"), ("Cache-Control", "max-age=60")), 0),
    ((("Cache-Control", "max-age=30"), ("Age", "25")), 5),
    ((("Cache-Control", "max-age=30"), ("Age", "99")), 0),
])
def test_reads_max_age_like_rfc_9111(pairs, expected):
    assert didmesh_auth.max_age(_headers(*pairs)) == expected


NOW = int(time.time())
DAY = 24 * 3600


@pytest.mark.parametrize("overrides, why", [
    ({"exp": 2**64 - 1}, "lifetime"),
    ({"exp": 2**63}, "lifetime"),
    ({"exp": NOW + 365 * DAY}, "lifetime"),
    ({"iat": NOW - 3600, "nbf": NOW - 3600, "exp": NOW + DAY}, "lifetime"),
    ({"sub": ""}, "DID"),
    ({"sub": "alice"}, "DID"),
    ({"sub": "did:mesh:"}, "DID"),
    ({"sub": "did:MESH:abc"}, "DID"),
    ({"sub": "did:mesh:a b"}, "DID"),
    ({"sub": "did:mesh:a\n"}, "DID"),
    ({"sub": 7}, "Subject must be a string"),
    ({"iat": NOW + 3600, "exp": NOW + 7200}, "iat"),
    ({"nbf": NOW + 3600, "exp": NOW + 7200}, "nbf"),
    ({"nbf": None}, "nbf"),
    ({"iat": None}, "iat"),
    ({"exp": None}, "exp"),
    ({"sub": None}, "sub"),
    ({"exp": 1e30}, "integer"),
    ({"exp": float(NOW + 60)}, "integer"),
    ({"exp": str(NOW + 60)}, "integer"),
    ({"iat": True}, "integer"),
    ({"iat": -5}, "integer"),
])
def test_claims_that_only_look_valid_are_refused(serve, overrides, why):
    a = Ed25519PrivateKey.generate()
    client = client_for(serve([a]))
    response = call(client, mint(a, **overrides))
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"] == "invalid_token"
    assert why.lower() in response.get_json()["reason"].lower()


@pytest.mark.parametrize("overrides", [
    {"sub": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"},
    {"sub": "did:web:example.com%3A8443:u:alice"},
    {"exp": NOW + 23 * 3600},
    {"iat": NOW + 10},
])
def test_honest_edges_still_pass(serve, overrides):
    a = Ed25519PrivateKey.generate()
    client = client_for(serve([a]))
    response = call(client, mint(a, **overrides))
    assert response.status_code == 200, response.get_json()


def test_the_maximum_lifetime_is_configurable(serve):
    a = Ed25519PrivateKey.generate()
    client = client_for(serve([a]), max_token_lifetime=900)
    assert call(client, mint(a, exp=int(time.time()) + 1800)).status_code == 401
    assert call(client, mint(a, exp=int(time.time()) + 600)).status_code == 200
