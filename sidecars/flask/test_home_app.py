"""The Flask home API through Flask's test client; PyJWKClient fetches the
JWKS from a stand-in node on loopback (HTTP, and HTTPS with a local CA)."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import home_app
from interop import matrix
from testkit.fake_node import FakeNode

HOME = "/api/activities/home"


@pytest.fixture(scope="module")
def client(node):
    app = home_app.create_app(node.issuer, node.audience, node.jwks_uri)
    return app.test_client()


@pytest.fixture(scope="module")
def inputs(node) -> matrix.Inputs:
    return matrix.Inputs.load(node.mint(), node.member_key_path, node.issuer, node.audience)


def get(client, token: str | None = None, path: str = HOME, **headers):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.get(path, headers=headers)


@pytest.mark.parametrize("variant", matrix.VARIANTS, ids=lambda v: v.name)
def test_matrix_variant(client, inputs, variant):
    token = variant.make(inputs)
    response = get(client, token)
    cell = matrix.check(variant, token, response.status_code, response.headers, response.get_data(as_text=True))
    assert cell.ok, f"{variant.name}: got {cell} ({response.get_data(as_text=True)[:200]})"


def test_valid_token_adds_the_private_activity(client, node):
    response = get(client, node.mint("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"))
    body = response.get_json()
    assert response.status_code == 200
    assert body["user"] == "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert body["activities"][:3] == home_app.PUBLIC_ACTIVITIES
    assert body["activities"][3:] == [home_app.private_activity(body["user"])]


def test_no_token_is_the_public_view(client):
    body = get(client).get_json()
    assert "user" not in body
    assert {a["visibility"] for a in body["activities"]} == {"public"}


def test_invalid_token_is_refused_before_routing(client, inputs):
    # The middleware runs before any view, even before Flask looks up the route.
    response = get(client, matrix.expired(inputs), path="/no/such/route")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.get_json()["error"] == "invalid_token"
    assert "expired" in response.get_json()["reason"].lower()


def test_headers_cannot_forge_claims(client):
    forged = "eyJzdWIiOiJkaWQ6bWVzaDpmb3JnZWQifQ"  # {"sub":"did:mesh:forged"}
    body = get(client, **{"x-jwt-payload": forged, "didmesh.claims": forged}).get_json()
    assert "user" not in body


def test_scheme_and_garbage(client):
    assert client.get(HOME, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 200
    assert client.get(HOME, headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
    assert client.get(HOME, headers={"Authorization": "bearer "}).status_code == 401


def test_jwks_over_https_with_local_ca(tls_node, tls_dir):
    app = home_app.create_app(tls_node.issuer, tls_node.audience, tls_node.jwks_uri, str(tls_dir / "ca.pem"))
    response = get(app.test_client(), tls_node.mint("did:mesh:tls"))
    assert response.get_json()["user"] == "did:mesh:tls"


def test_untrusted_node_certificate_is_503(tls_node):
    app = home_app.create_app(tls_node.issuer, tls_node.audience, tls_node.jwks_uri)
    response = get(app.test_client(), tls_node.mint())
    assert response.status_code == 503
    assert get(app.test_client()).status_code == 200


def test_key_rotation(tmp_path):
    """A new member's key: fetched on its unknown kid, once the cooldown since
    the last fetch is over. A removed member's key: refused once the cached
    JWKS is older than jwks_max_age."""
    fake = FakeNode(tmp_path, "https://didmesh.local", "home-api").start()
    try:
        app = home_app.create_app(fake.issuer, fake.audience, fake.jwks_uri, jwks_max_age=2, refetch_cooldown=1)
        client = app.test_client()
        assert get(client, fake.mint()).status_code == 200
        newcomer = Ed25519PrivateKey.generate()
        fake.publish(fake.member_key, newcomer)
        assert get(client, fake.mint(key=newcomer)).status_code == 401  # within the cooldown
        time.sleep(1.2)
        fetches = fake.jwks_fetches
        assert get(client, fake.mint(key=newcomer)).status_code == 200
        assert fake.jwks_fetches == fetches + 1
        assert get(client, fake.mint(key=Ed25519PrivateKey.generate())).status_code == 401
        assert fake.jwks_fetches == fetches + 1  # cooling down: junk kids fetch nothing

        fake.publish(newcomer)  # the first member leaves
        assert get(client, fake.mint()).status_code == 200  # cached
        time.sleep(2.2)
        assert get(client, fake.mint()).status_code == 401
    finally:
        fake.stop()


def test_missing_settings_are_an_error(monkeypatch):
    for var in ("DIDMESH_ISSUER", "DIDMESH_AUDIENCE", "DIDMESH_JWKS_URI"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="issuer"):
        home_app.create_app(audience="a", jwks_uri="http://127.0.0.1:1/jwks")
