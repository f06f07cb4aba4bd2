"""Envoy (jwt_authn) in front of the stand-in home-api, JWKS from a stand-in node.
The step-up tests (the private route needs "mfa" in amr: RBAC on jwt_authn's
payload metadata, RFC 9470 401) put Envoy in front of a path-echoing upstream.

Starts the real Envoy through run.sh, so the template, render.py and the
launcher are what is tested.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

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


# --- Step-up (RFC 9470): /api/activities/private needs "mfa" in amr -------

PRIVATE = "/api/activities/private"
MFA_CHALLENGE = ('Bearer error="insufficient_user_authentication", '
                 'error_description="this resource requires a sign-in with two or more factors", '
                 'acr_values="urn:didmesh:acr:mfa"')
ONE_FACTOR = {"amr": ["swk"], "acr": "urn:didmesh:acr:1fa"}
MFA = {"amr": ["swk", "mfa"], "acr": "urn:didmesh:acr:mfa"}


class PathEcho:
    """An upstream that reads paths the way a WSGI app does (percent-decoded,
    dot segments kept: PATH_INFO) and counts the requests that reached the
    private route, so a test sees whether Envoy let one through."""

    def __init__(self):
        echo = self
        self.private_hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = unquote(self.path.split("?")[0])
                if path not in (HOME, PRIVATE):
                    return self._json(404, {"error": "not_found", "path": path})
                if path == PRIVATE:
                    echo.private_hits += 1
                payload = self.headers.get("x-jwt-payload")
                claims = json.loads(jose.b64url_decode(payload)) if payload else None
                self._json(200, {"path": path, "claims": claims})

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="path-echo", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def step_up(tmp_path_factory, node):
    echo = PathEcho()
    child, url = start_envoy(tmp_path_factory.mktemp("envoy-stepup"), node, echo)
    base = url.removesuffix(HOME)
    yield base, echo
    child.stop()
    echo.stop()


def raw_get(base: str, path: str, token: str | None = None) -> tuple[int, dict, dict]:
    """GET with the path exactly as given (requests/urllib3 would resolve
    dot segments first): status, headers, JSON body (or {})."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        body = response.read()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {"text": body.decode(errors="replace")}
        return response.status, dict(response.headers), parsed
    finally:
        conn.close()


def test_step_up_route_asks_a_one_factor_token_for_mfa(step_up, node):
    base, echo = step_up
    hits = echo.private_hits
    for claims in (ONE_FACTOR, {}):  # {}: a token of a node before issue 11 (no acr)
        status, headers, body = raw_get(base, PRIVATE, node.mint(**claims))
        assert status == 401, (claims, body)
        assert headers["www-authenticate"] == MFA_CHALLENGE
        assert body == {"error": "insufficient_user_authentication", "reason": "mfa_required",
                        "acr_values": "urn:didmesh:acr:mfa"}
    assert echo.private_hits == hits, "a refused request reached the upstream"


def test_step_up_route_passes_an_mfa_token(step_up, node):
    base, echo = step_up
    hits = echo.private_hits
    token = node.mint("did:mesh:stepped", **MFA)
    status, _, body = raw_get(base, PRIVATE, token)
    assert status == 200, body
    assert body["path"] == PRIVATE
    assert body["claims"]["sub"] == "did:mesh:stepped"
    assert body["claims"]["amr"] == ["swk", "mfa"]
    assert echo.private_hits == hits + 1


def test_other_routes_are_unaffected_by_the_step_up_rule(step_up, node):
    base, _ = step_up
    status, _, body = raw_get(base, HOME, node.mint("did:mesh:one", **ONE_FACTOR))
    assert status == 200 and body["claims"]["sub"] == "did:mesh:one"
    status, _, body = raw_get(base, HOME)
    assert status == 200 and body["claims"] is None


def test_step_up_route_needs_a_token(step_up, node, inputs):
    base, echo = step_up
    hits = echo.private_hits
    status, headers, body = raw_get(base, PRIVATE)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = raw_get(base, PRIVATE, matrix.expired(inputs))
    assert status == 401 and body["error"] == "invalid_token"
    assert echo.private_hits == hits


def test_only_an_amr_list_holding_mfa_counts(step_up, node):
    """amr "mfa" as a string, nested, or only an mfa acr: not a multi-factor login."""
    base, echo = step_up
    hits = echo.private_hits
    for claims in ({"amr": "mfa", "acr": "urn:didmesh:acr:mfa"},
                   {"amr": [["mfa"]]},
                   {"amr": ["swk"], "acr": "urn:didmesh:acr:mfa"}):
        status, _, body = raw_get(base, PRIVATE, node.mint(**claims))
        assert status == 401, (claims, body)
        assert body["error"] == "insufficient_user_authentication", claims
    assert echo.private_hits == hits


@pytest.mark.parametrize("path", [
    "/api/activities/./private",
    "//api/activities/private",
    "/api/activities//private",
    "/api/activities/x/../private",
    "/api/activities/%70rivate",
    "/api/activities/privat%65",
    "/api/%61ctivities/private",
    "/api/activities/private?via=query",
    "/api/activities%2Fprivate",
    "/api/activities/private#frag",
])
def test_path_spellings_cannot_skip_the_rule(step_up, node, path):
    """A one-factor token never reaches the upstream's private route,
    however the path is spelled (the upstream decodes like WSGI)."""
    base, echo = step_up
    hits = echo.private_hits
    status, _, body = raw_get(base, path, node.mint(**ONE_FACTOR))
    assert echo.private_hits == hits, f"{path} reached the private route with one factor: {status} {body}"
    assert status in (400, 401, 404), (status, body)
