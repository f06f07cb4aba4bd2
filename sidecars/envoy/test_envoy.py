"""Envoy (jwt_authn) in front of the stand-in home-api, JWKS from a stand-in node.

Starts the real Envoy through run.sh, so the template, render.py and the
launcher are what is tested.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interop import jose, matrix
from testkit.fake_node import FakeNode
from testkit.procs import Child, free_port

RUN_SH = Path(__file__).with_name("run.sh")
LOCAL_CA = Path(__file__).parent.parent / "testkit" / "local-ca.sh"
HOME = "/api/activities/home"


def start_envoy(log_dir: Path, node, upstream, *extra: str) -> tuple[Child, str]:
    port, admin = free_port(), free_port()
    args = [
        str(RUN_SH),
        "--listen", f"127.0.0.1:{port}",
        "--admin", f"127.0.0.1:{admin}",
        "--upstream", upstream.url,
        "--issuer", node.issuer,
        "--audience", node.audience,
        "--jwks-uri", node.jwks_uri,
        *extra,
    ]
    child = Child(args, log_dir / f"envoy-{port}.log")
    try:
        # /ready says 200 once the listener is up: with async_fetch
        # (fast_listener: false), after the first JWKS fetch.
        child.wait_http(f"http://127.0.0.1:{admin}/ready", status=200)
    except Exception:
        child.stop()
        raise
    return child, f"http://127.0.0.1:{port}{HOME}"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory, node, upstream):
    child, url = start_envoy(tmp_path_factory.mktemp("envoy"), node, upstream)
    yield url
    child.stop()


@pytest.fixture(scope="module")
def inputs(node) -> matrix.Inputs:
    return matrix.Inputs.load(node.mint(), node.member_key_path, node.issuer, node.audience)


def get(url: str, token: str | None = None, **headers) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=10)


@pytest.mark.parametrize("variant", matrix.VARIANTS, ids=lambda v: v.name)
def test_matrix_variant(envoy, inputs, variant):
    token = variant.make(inputs)
    response = get(envoy, token)
    cell = matrix.check(variant, token, response.status_code, response.headers, response.text)
    assert cell.ok, f"{variant.name}: got {cell} ({response.text[:200]})"


def test_valid_token_forwards_its_payload_not_the_token(envoy, node):
    token = node.mint("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    response = get(envoy, token)
    body = response.json()
    assert response.status_code == 200
    assert body["user"] == "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert body["claims"] == jose.split(token)[1]
    # Exactly the token's payload segment: base64url, no padding.
    assert body["seen"]["x-jwt-payload"] == [token.split(".")[1]]
    assert body["seen"]["authorization"] is None  # forward: false
    assert any(a["visibility"] == "private" for a in body["activities"])


def test_no_token_is_the_public_view(envoy):
    response = get(envoy)
    body = response.json()
    assert response.status_code == 200
    assert "user" not in body
    assert body["seen"]["x-jwt-payload"] == []
    assert all(a["visibility"] == "public" for a in body["activities"])


def forged_payload(sub: str = "did:mesh:forged") -> str:
    return jose.b64url(b'{"iss":"https://didmesh.local","aud":"home-api","sub":"%s"}' % sub.encode())


def test_client_sent_payload_header_is_stripped(envoy):
    response = get(envoy, **{"x-jwt-payload": forged_payload()})
    body = response.json()
    assert response.status_code == 200
    assert "user" not in body
    assert body["seen"]["x-jwt-payload"] == []


def test_client_sent_payload_header_is_replaced_by_the_verified_one(envoy, node):
    token = node.mint("did:mesh:real")
    response = get(envoy, token, **{"x-jwt-payload": forged_payload()})
    body = response.json()
    assert body["user"] == "did:mesh:real"
    assert body["seen"]["x-jwt-payload"] == [token.split(".")[1]]


def test_underscore_spelling_of_the_header_is_dropped(envoy):
    # A WSGI/CGI upstream would read x_jwt_payload as HTTP_X_JWT_PAYLOAD.
    response = get(envoy, **{"x_jwt_payload": forged_payload()})
    body = response.json()
    assert "user" not in body
    assert body["seen"]["x-jwt-payload"] == []


def test_invalid_token_gets_rfc6750_challenge_and_json_error(envoy, inputs):
    response = get(envoy, matrix.expired(inputs))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "invalid_token"
    assert "expired" in response.json()["reason"].lower()


def test_token_in_query_string_is_not_read(envoy, node):
    # Only "Authorization: Bearer" counts (tokens in URLs end up in logs).
    response = requests.get(envoy, params={"access_token": node.mint("did:mesh:query")}, timeout=10)
    assert response.status_code == 200
    assert "user" not in response.json()


def test_jwks_over_https_with_local_ca(tmp_path, tls_node, tls_dir, upstream):
    child, url = start_envoy(tmp_path, tls_node, upstream, "--jwks-ca", str(tls_dir / "ca.pem"))
    try:
        assert get(url, tls_node.mint("did:mesh:tls")).json()["user"] == "did:mesh:tls"
        assert get(url, tls_node.mint(key=Ed25519PrivateKey.generate())).status_code == 401
    finally:
        child.stop()


def test_jwks_over_https_refuses_an_untrusted_certificate(tmp_path, tls_node, upstream):
    # Trusting another CA: no JWKS, so every token fails (and no token still passes).
    other_ca = tmp_path / "other-ca"
    subprocess.run([str(LOCAL_CA), str(other_ca)], check=True)
    child, url = start_envoy(tmp_path, tls_node, upstream, "--jwks-ca", str(other_ca / "ca.pem"))
    try:
        assert get(url, tls_node.mint()).status_code == 401
        assert get(url).status_code == 200
    finally:
        child.stop()


def test_member_keys_change_only_when_the_cache_expires(tmp_path, node, upstream):
    """Envoy never refetches the JWKS on an unknown kid: a new member's key
    is accepted, and a removed member's refused, once cache_duration is over."""
    fake = FakeNode(tmp_path, node.issuer, node.audience).start()
    child, url = start_envoy(tmp_path, fake, upstream, "--cache-duration", "2")
    try:
        newcomer = Ed25519PrivateKey.generate()
        fake.publish(fake.member_key, newcomer)
        assert get(url, fake.mint(key=newcomer)).status_code == 401  # not yet known
        fake.publish(newcomer)  # the old member leaves
        assert get(url, fake.mint()).status_code == 200  # still cached
        time.sleep(3.5)
        assert get(url, fake.mint(key=newcomer)).status_code == 200
        assert get(url, fake.mint()).status_code == 401
    finally:
        child.stop()
        fake.stop()
