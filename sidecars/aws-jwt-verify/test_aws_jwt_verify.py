"""The Node.js sidecar (server.js, aws-jwt-verify) in front of the stand-in
home-api, JWKS over HTTPS from a stand-in node whose certificate comes from a
throwaway CA, trusted through NODE_EXTRA_CA_CERTS."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interop import jose, matrix
from testkit.fake_node import FakeNode
from testkit.procs import Child, free_port

HERE = Path(__file__).parent
HOME = "/api/activities/home"
NODE = shutil.which("node") or "node"


def start_sidecar(log_dir: Path, node, upstream, ca: Path | None, **env: str) -> tuple[Child, str]:
    port = free_port()
    settings = {
        "DIDMESH_LISTEN": f"127.0.0.1:{port}",
        "DIDMESH_UPSTREAM": upstream.url,
        "DIDMESH_ISSUER": node.issuer,
        "DIDMESH_AUDIENCE": node.audience,
        "DIDMESH_JWKS_URI": node.jwks_uri,
        **env,
    }
    if ca is not None:
        settings["NODE_EXTRA_CA_CERTS"] = str(ca)
    child = Child([NODE, str(HERE / "server.js")], log_dir / f"node-sidecar-{port}.log", env=settings, cwd=HERE)
    url = f"http://127.0.0.1:{port}{HOME}"
    try:
        child.wait_http(url)
    except Exception:
        child.stop()
        raise
    return child, url


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory, tls_node, tls_dir, upstream):
    child, url = start_sidecar(tmp_path_factory.mktemp("sidecar"), tls_node, upstream, tls_dir / "ca.pem")
    yield url
    child.stop()


@pytest.fixture(scope="module")
def inputs(tls_node) -> matrix.Inputs:
    return matrix.Inputs.load(tls_node.mint(), tls_node.member_key_path, tls_node.issuer, tls_node.audience)


def get(url: str, token: str | None = None, **headers) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(url, headers=headers, timeout=10)


def forged_payload(sub: str = "did:mesh:forged") -> str:
    return jose.b64url(b'{"iss":"https://didmesh.local","aud":"home-api","sub":"%s"}' % sub.encode())


@pytest.mark.parametrize("variant", matrix.VARIANTS, ids=lambda v: v.name)
def test_matrix_variant(sidecar, inputs, variant):
    token = variant.make(inputs)
    response = get(sidecar, token)
    cell = matrix.check(variant, token, response.status_code, response.headers, response.text)
    assert cell.ok, f"{variant.name}: got {cell} ({response.text[:200]})"


def test_valid_token_forwards_its_payload_not_the_token(sidecar, tls_node):
    token = tls_node.mint("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
    body = get(sidecar, token).json()
    assert body["user"] == "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
    assert body["claims"] == jose.split(token)[1]
    assert body["seen"]["x-jwt-payload"] == [token.split(".")[1]]  # same bytes as Envoy sends
    assert body["seen"]["authorization"] is None


def test_no_token_is_the_public_view(sidecar):
    response = get(sidecar)
    assert response.status_code == 200
    assert "user" not in response.json()
    assert response.json()["seen"]["x-jwt-payload"] == []


@pytest.mark.parametrize("name", ["x-jwt-payload", "X-JWT-Payload", "x_jwt_payload"])
def test_client_sent_payload_header_is_stripped(sidecar, name):
    body = get(sidecar, **{name: forged_payload()}).json()
    assert "user" not in body
    assert body["seen"]["x-jwt-payload"] == []


def test_client_sent_payload_header_is_replaced_by_the_verified_one(sidecar, tls_node):
    token = tls_node.mint("did:mesh:real")
    body = get(sidecar, token, **{"x-jwt-payload": forged_payload(), "x_jwt_payload": forged_payload()}).json()
    assert body["user"] == "did:mesh:real"
    assert body["seen"]["x-jwt-payload"] == [token.split(".")[1]]


def test_invalid_token_gets_rfc6750_challenge_and_json_error(sidecar, inputs):
    response = get(sidecar, matrix.expired(inputs))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["error"] == "invalid_token"
    assert "expired" in response.json()["reason"].lower()


def test_garbage_bearer_is_refused_other_schemes_are_ignored(sidecar):
    assert requests.get(sidecar, headers={"Authorization": "Bearer not a jwt"}, timeout=10).status_code == 401
    response = requests.get(sidecar, headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=10)
    assert response.status_code == 200
    assert "user" not in response.json()


def test_unknown_kid_triggers_one_refetch_then_a_penalty(tmp_path, tls_dir, upstream):
    """aws-jwt-verify refetches the JWKS when a kid is not cached (so a new
    member works at once), and after a miss waits 10 s before fetching again."""
    fake = FakeNode(tmp_path, "https://didmesh.local", "home-api", tls_dir=tls_dir).start()
    child, url = start_sidecar(tmp_path, fake, upstream, tls_dir / "ca.pem")
    try:
        fetches = fake.jwks_fetches  # the one at start-up
        newcomer = Ed25519PrivateKey.generate()
        fake.publish(fake.member_key, newcomer)
        assert get(url, fake.mint("did:mesh:new", key=newcomer)).json()["user"] == "did:mesh:new"
        assert fake.jwks_fetches == fetches + 1

        stranger = Ed25519PrivateKey.generate()
        assert get(url, fake.mint(key=stranger)).status_code == 401  # fetched, not there
        assert get(url, fake.mint(key=Ed25519PrivateKey.generate())).status_code == 401  # penalty: no fetch
        assert fake.jwks_fetches == fetches + 2
    finally:
        child.stop()
        fake.stop()


def test_removed_member_key_stops_working_after_refresh(tmp_path, tls_dir, upstream):
    fake = FakeNode(tmp_path, "https://didmesh.local", "home-api", tls_dir=tls_dir).start()
    child, url = start_sidecar(tmp_path, fake, upstream, tls_dir / "ca.pem", DIDMESH_JWKS_REFRESH_SECONDS="1")
    try:
        assert get(url, fake.mint()).status_code == 200
        fake.publish(Ed25519PrivateKey.generate())  # the member leaves the network
        time.sleep(2.5)
        assert get(url, fake.mint()).status_code == 401
    finally:
        child.stop()
        fake.stop()


def test_untrusted_node_certificate_is_503_not_401(tmp_path, tls_node, upstream):
    # Without NODE_EXTRA_CA_CERTS the node's certificate is not trusted: no keys.
    child, url = start_sidecar(tmp_path, tls_node, upstream, ca=None)
    try:
        response = get(url, tls_node.mint())
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert get(url).status_code == 200  # the public view does not need keys
    finally:
        child.stop()


def test_http_jwks_uri_is_refused_at_start(upstream):
    result = subprocess.run(
        [NODE, str(HERE / "server.js"), "--upstream", upstream.url, "--issuer", "i", "--audience", "a",
         "--jwks-uri", "http://127.0.0.1:1/.well-known/jwks.json"],
        capture_output=True, text=True, timeout=30, cwd=HERE,
    )
    assert result.returncode == 2
    assert "https" in result.stderr
