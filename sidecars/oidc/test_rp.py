"""Relying parties against a real didmesh network behind the front door.

Two independent OpenID Connect client libraries complete the authorization
code flow and verify the ID token themselves - Authlib (Python: the Flask
sign-in app, signin.py, with an RS256 confidential client) and openid-client
(npm: js/rp.js, with an ES256 public client) - and PyJWT, a third verifier,
checks an ID token of each alg (RS256, ES256, EdDSA) against the JWKS.

The browser's part (the sign-in page) is played over HTTP exactly as the
page does it with a browser-held key (testkit.mesh.sign_in_over_http): GET
the authorization URL, read `#didmesh-request`, POST the challenge and the
signature to the node that served the page. The user's DID key is a seed
given to `didmesh wallet init --seed-hex`, so the test can sign.

    bash sidecars/test.sh oidc/          # needs target/debug binaries
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import markupsafe
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from oidc.conftest import REDIRECT, Network
from testkit.mesh import session, sign_in_over_http

SIDECARS = Path(__file__).resolve().parent.parent
RP_JS = Path(__file__).with_name("js") / "rp.js"
sys.path.insert(0, str(SIDECARS / "flask"))
import home_app  # noqa: E402

ALG_KEY_TYPE = {"RS256": ("RSA", None), "ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def verify_with_pyjwt(net: Network, id_token: str, client_id: str, alg: str) -> dict:
    """PyJWT: the signature by the JWKS key the header names, only `alg`,
    and iss/aud/exp/iat/sub present and right."""
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == alg and header.get("typ") == "JWT", header
    jwks = net.mesh.jwks()
    listed = {k["kid"]: k for k in jwks["keys"]}
    assert header["kid"] in listed, f"kid {header['kid']} not in the JWKS {sorted(listed)}"
    kty, crv = ALG_KEY_TYPE[alg]
    jwk = listed[header["kid"]]
    assert (jwk["kty"], jwk.get("crv"), jwk["alg"], jwk["use"]) == (kty, crv, alg, "sig"), jwk
    key = jwt.PyJWK.from_dict(jwk)
    claims = jwt.decode(id_token, key=key, algorithms=[alg], audience=client_id, issuer=net.mesh.issuer,
                        options={"require": ["iss", "sub", "aud", "exp", "iat"]})
    # Signed by that member's key: another member's key of the same alg
    # does not verify it.
    other = next(k for k in jwks["keys"] if k["alg"] == alg and k["kid"] != header["kid"])
    with pytest.raises(jwt.exceptions.InvalidSignatureError):
        jwt.decode(id_token, key=jwt.PyJWK.from_dict(other), algorithms=[alg], audience=client_id,
                   issuer=net.mesh.issuer)
    return claims


def authlib_flow(net: Network, name: str, auth_method: str) -> tuple[dict, str, dict]:
    """The code flow with Authlib's requests client: (token answer, nonce, page request)."""
    client = net.clients[name]
    meta = net.mesh.discovery()
    rp = OAuth2Session(client.client_id, client.client_secret, scope="openid", redirect_uri=REDIRECT,
                       code_challenge_method="S256", token_endpoint_auth_method=auth_method)
    rp.trust_env = False
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    signed = sign_in_over_http(url, net.user.did, net.user.key)
    answer = query(signed.redirect)
    assert signed.redirect.startswith(REDIRECT + "?") and answer["state"] == state
    assert answer["iss"] == net.mesh.issuer  # RFC 9207
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=signed.redirect, state=state,
                           code_verifier=verifier)
    return token, nonce, signed.request


# --- Authlib: the Flask app's "Sign in with didmesh" -------------------------------------------

@pytest.fixture(scope="module")
def flask_app(net):
    rs = net.clients["rs256"]
    app = home_app.create_app(
        issuer=net.mesh.issuer, audience="home-api", jwks_uri=net.mesh.issuer + "/.well-known/jwks.json",
        oidc={"issuer": net.mesh.issuer, "client_id": rs.client_id, "client_secret": rs.client_secret,
              "redirect_uri": REDIRECT, "id_token_alg": "RS256"})
    app.testing = True
    return app


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def test_flask_app_signs_in_with_authlib_rs256_and_out_again(net, flask_app):
    browser = flask_app.test_client()  # keeps the session cookie, like a browser
    did = net.user.did
    plan = str(markupsafe.escape(home_app.private_activity(did)["title"]))  # as the page (Jinja) writes it

    page = browser.get("/").get_data(as_text=True)
    assert 'data-testid="signin"' in page and did not in page and plan not in page
    assert all(a["title"] in page for a in home_app.PUBLIC_ACTIVITIES)

    go = browser.get("/login")
    assert go.status_code == 302
    location = go.headers["Location"]
    assert urlsplit(location).path == "/oidc/authorize"  # where: test_discovery_points_every_endpoint_at_the_issuer
    asked = query(location)
    assert asked["response_type"] == "code" and asked["scope"] == "openid"
    assert asked["client_id"] == net.clients["rs256"].client_id and asked["redirect_uri"] == REDIRECT
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["state"] and asked["nonce"]
    cookie = go.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie

    signed = sign_in_over_http(location, did, net.user.key)
    callback = signed.redirect.removeprefix("http://localhost:8090")
    back = browser.get(callback)
    assert back.status_code == 302 and back.headers["Location"] == "/", back.get_data(as_text=True)

    page = browser.get("/").get_data(as_text=True)
    assert f'<code data-testid="signed-in-did">{did}</code>' in page and plan in page
    # The API's split is the bearer token's alone: a signed-in browser's
    # cookie does not personalize it.
    api = browser.get("/api/activities/home").get_json()
    assert "user" not in api and [a["visibility"] for a in api["activities"]] == ["public"] * 3

    # The same answer again (a replayed or re-opened callback): its state
    # was used up, so it signs nobody in and changes nothing.
    again = browser.get(callback)
    assert again.status_code == 400 and "mismatching_state" in again.get_data(as_text=True)

    # Sign-out needs the form's CSRF token.
    refused = browser.post("/logout", data={"csrf": "forged"})
    assert refused.status_code == 403 and did in browser.get("/").get_data(as_text=True)
    out = browser.post("/logout", data={"csrf": csrf_of(page)})
    assert out.status_code == 302
    page = browser.get("/").get_data(as_text=True)
    assert did not in page and plan not in page and 'data-testid="signin"' in page


def test_flask_callback_refuses_another_issuers_answer_and_reports_a_cancel(net, flask_app):
    """RFC 9207: an answer whose `iss` is not the issuer this app sent the
    browser to (a mix-up attack), or that lacks it, is refused before its
    code is redeemed - even with the right state and a real code."""
    browser = flask_app.test_client()
    signed = sign_in_over_http(browser.get("/login").headers["Location"], net.user.did, net.user.key)
    callback = signed.redirect.removeprefix("http://localhost:8090")
    answer = query(callback)
    mixup = browser.get("/auth/callback?" + urlencode({**answer, "iss": "http://evil.example"}))
    assert mixup.status_code == 400 and "another issuer" in mixup.get_data(as_text=True)
    no_iss = browser.get("/auth/callback?" + urlencode({k: v for k, v in answer.items() if k != "iss"}))
    assert no_iss.status_code == 400 and "no iss" in no_iss.get_data(as_text=True)
    assert net.user.did not in browser.get("/").get_data(as_text=True)
    # Nothing was redeemed or used up: the genuine answer still signs in.
    assert browser.get(callback).status_code == 302
    assert net.user.did in browser.get("/").get_data(as_text=True)
    browser = flask_app.test_client()
    browser.get("/login")
    cancelled = browser.get(f"/auth/callback?error=access_denied&state=y&iss={net.mesh.issuer}")
    assert cancelled.status_code == 400 and "cancelled" in cancelled.get_data(as_text=True)
    assert 'data-testid="signin"' in browser.get("/").get_data(as_text=True)


# --- openid-client (npm), ES256, public client -------------------------------------------------

def rp_js(step: str, net: Network, client, session_file: Path, *extra: str) -> tuple[int, dict]:
    argv = [shutil.which("node") or "node", str(RP_JS), step, "--issuer", net.mesh.issuer,
            "--client-id", client.client_id, "--redirect-uri", REDIRECT, "--alg", client.id_token_alg,
            "--session", str(session_file), *extra]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    if client.client_secret:
        env["DIDMESH_OIDC_CLIENT_SECRET"] = client.client_secret
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    try:
        return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"rp.js {step}: exit {done.returncode}\n{done.stdout}{done.stderr}") from None


def test_openid_client_es256_public_client_code_flow(net, tmp_path):
    client = net.clients["es256-public"]
    session_file = tmp_path / "rp-session.json"
    status, out = rp_js("authorize", net, client, session_file)
    assert status == 0, out
    url = out["authorization_url"]
    assert "code_challenge=" in url and "client_secret" not in url

    signed = sign_in_over_http(url, net.user.did, net.user.key)
    status, out = rp_js("callback", net, client, session_file, "--callback-url", signed.redirect)
    assert status == 0, out
    claims = out["claims"]
    assert claims["sub"] == net.user.did and claims["aud"] == client.client_id
    assert claims["iss"] == net.mesh.issuer and claims["amr"] == ["swk"]
    assert out["userinfo"]["sub"] == net.user.did and out["token_type"].lower() == "bearer"
    assert verify_with_pyjwt(net, out["id_token"], client.client_id, "ES256")["sub"] == net.user.did

    # The same code again (through the front door, so likely at the other
    # node): openid-client gets the RFC 6749 §5.2 refusal, no token.
    status, out = rp_js("callback", net, client, session_file, "--callback-url", signed.redirect)
    assert status == 1 and out.get("code") == "OAUTH_RESPONSE_BODY_ERROR", out
    assert (out.get("cause") or {}).get("error") == "invalid_grant", out


# --- PyJWT against the JWKS, every alg ---------------------------------------------------------

@pytest.mark.parametrize("name,alg", [("rs256", "RS256"), ("es256", "ES256"), ("eddsa", "EdDSA")])
def test_pyjwt_verifies_the_id_token_of_each_alg_against_the_jwks(net, name, alg):
    token, nonce, _ = authlib_flow(net, name, "client_secret_basic")
    claims = verify_with_pyjwt(net, token["id_token"], net.clients[name].client_id, alg)
    assert claims["sub"] == net.user.did and claims["nonce"] == nonce
    assert claims["azp"] == net.clients[name].client_id and claims["amr"] == ["swk"]
    assert claims["acr"] == "urn:didmesh:acr:1fa" and claims["auth_time"] <= claims["iat"] < claims["exp"]
    assert token["token_type"].lower() == "bearer" and token["scope"] == "openid"


# --- Amazon Cognito as the relying party -------------------------------------------------------

def test_discovery_and_jwks_meet_cognito_external_idp_requirements(net):
    """What an Amazon Cognito user pool needs of an external OIDC identity
    provider (Cognito developer guide, "Using OIDC identity providers with a
    user pool"; "OIDC IdP ... token signing"): it reads
    {issuer}/.well-known/openid-configuration and takes the document only
    when its issuer is that URL; it needs the authorization, token,
    userinfo and jwks endpoints; it verifies ID tokens signed with RS256 or
    ES256 (not EdDSA) and finds the key by the token's `kid`, each JWKS key
    carrying kid/kty/alg/use; it authenticates at the token endpoint with
    client_secret_post. (Cognito also wants an https issuer: that is the
    deployment's front door; this loopback cluster's is http.)"""
    issuer = net.mesh.issuer
    r = session().get(issuer + "/.well-known/openid-configuration", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    meta = r.json()
    assert meta["issuer"] == issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert urlsplit(meta[endpoint]).scheme == urlsplit(issuer).scheme, (endpoint, meta[endpoint])
    assert {"RS256", "ES256"} <= set(meta["id_token_signing_alg_values_supported"])
    assert "client_secret_post" in meta["token_endpoint_auth_methods_supported"]
    assert "code" in meta["response_types_supported"] and "openid" in meta["scopes_supported"]
    # Every node says the same: the front door may send Cognito to any.
    for node in net.mesh.nodes:
        assert session().get(node.addr + "/.well-known/openid-configuration", timeout=5).json()["issuer"] == issuer

    jwks = session().get(meta["jwks_uri"], timeout=5).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert {"kid", "kty", "alg", "use"} <= set(key) and key["use"] == "sig", key
    algs = {k["alg"] for k in jwks["keys"]}
    assert {"RS256", "ES256"} <= algs and len(jwks["keys"]) == 3 * len(net.mesh.nodes)  # 3 keys per member

    # The flow as Cognito runs it: client_secret_post, an ES256 ID token
    # whose kid is in the JWKS.
    token, nonce, _ = authlib_flow(net, "es256", "client_secret_post")
    header = jwt.get_unverified_header(token["id_token"])
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert verify_with_pyjwt(net, token["id_token"], net.clients["es256"].client_id, "ES256")["nonce"] == nonce
    info = session().get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"},
                         timeout=5)
    assert info.status_code == 200 and info.json()["sub"] == net.user.did


# --- one issuer URL, many nodes ---------------------------------------------------------------

def test_discovery_points_every_endpoint_at_the_issuer(net):
    """Endpoints are issuer + path (oidc-spec Part B), so an RP that read
    discovery once keeps going through the front door: a node that is down
    later is skipped there, instead of the RP being pinned to whichever
    node happened to answer discovery."""
    issuer = net.mesh.issuer
    for _ in range(2 * len(net.mesh.nodes)):  # round robin: every node answers once or more
        meta = net.mesh.discovery()
        assert {k: meta[k] for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")} == {
            "authorization_endpoint": issuer + "/oidc/authorize", "token_endpoint": issuer + "/oidc/token",
            "userinfo_endpoint": issuer + "/oidc/userinfo", "jwks_uri": issuer + "/.well-known/jwks.json"}


# --- one code, many nodes ----------------------------------------------------------------------

def test_a_code_redeems_at_another_node_than_its_issuer_and_only_once(net):
    """Behind the front door there are no sticky sessions: the node that
    served the page issues the code, another redeems it, and the code is
    then used up on every node (its issuer answers the single-use check)."""
    client = net.clients["rs256"]
    meta = net.mesh.discovery()
    verifier = generate_token(48)
    rp = OAuth2Session(client.client_id, client.client_secret, scope="openid", redirect_uri=REDIRECT,
                       code_challenge_method="S256")
    url, _ = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                         nonce=generate_token(20))
    signed = sign_in_over_http(url, net.user.did, net.user.key)
    issuing = next(n for n in net.mesh.nodes if n.url == signed.request["node_url"].rstrip("/"))
    other = next(n for n in net.mesh.nodes if n is not issuing)
    form = {"grant_type": "authorization_code", "code": query(signed.redirect)["code"], "redirect_uri": REDIRECT,
            "client_id": client.client_id, "client_secret": client.client_secret, "code_verifier": verifier}
    first = session().post(other.addr + "/oidc/token", data=form, timeout=10)
    assert first.status_code == 200, first.text
    assert first.headers["Cache-Control"] == "no-store" and first.json()["id_token"]
    for node in (issuing, other):
        again = session().post(node.addr + "/oidc/token", data=form, timeout=10)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant", (node.url, again.text)
        assert "id_token" not in again.text and "access_token" not in again.text


# --- the sign-in app as a process (what scripts/cluster.sh runs) -------------------------------

def test_signin_app_process_signs_in_over_http_and_logs_no_code(net):
    app_url, client = net.mesh.signin_app(net.rp, name="Home activities (process)")
    browser = session()  # keeps cookies, like a browser
    go = browser.get(app_url + "login", allow_redirects=False, timeout=10)
    assert go.status_code == 302, go.text
    signed = sign_in_over_http(go.headers["Location"], net.user.did, net.user.key)
    assert signed.redirect.startswith(app_url + "auth/callback?")
    assert signed.request["client_name"] == "Home activities (process)"
    back = browser.get(signed.redirect, allow_redirects=False, timeout=10)
    assert back.status_code == 302 and back.headers["Location"] == "/", back.text
    page = browser.get(app_url, timeout=10).text
    assert f'data-testid="signed-in-did">{net.user.did}<' in page
    log = next(net.mesh.logs.glob(f"signin-app-{urlsplit(app_url).port}.log")).read_text()
    code, state = query(signed.redirect)["code"], query(signed.redirect)["state"]
    assert "/auth/callback?code=…&state=…" in log and code not in log and state not in log
    assert client.client_secret not in log
