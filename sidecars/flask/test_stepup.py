"""Step-up in Flask (RFC 9470): GET /api/activities/private of the Flask home
API needs a token of a multi-factor login (amr has "mfa"); a one-factor token
gets 401 insufficient_user_authentication with acr_values - the same answer as
the Rust home-api. Tokens from the stand-in node, with the claims a node
mints (amr/acr of issue 11)."""

from __future__ import annotations

import time

import flask
import pytest

import didmesh_auth
import home_app

HOME = "/api/activities/home"
PRIVATE = "/api/activities/private"
DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
# Exactly what auth-layer's RequireAuthn::mfa() answers (auth-layer/tests/stepup.rs).
MFA_CHALLENGE = ('Bearer error="insufficient_user_authentication", '
                 'error_description="this resource requires a sign-in with two or more factors", '
                 'acr_values="urn:didmesh:acr:mfa"')
ONE_FACTOR = {"amr": ["swk"], "acr": didmesh_auth.ACR_1FA}
MFA = {"amr": ["swk", "mfa"], "acr": didmesh_auth.ACR_MFA}


@pytest.fixture(scope="module")
def client(node):
    return home_app.create_app(node.issuer, node.audience, node.jwks_uri).test_client()


def get(client, path, token=None):
    return client.get(path, headers={"Authorization": f"Bearer {token}"} if token else {})


def assert_needs_mfa(response):
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == MFA_CHALLENGE
    assert response.get_json() == {
        "error": "insufficient_user_authentication",
        "reason": "mfa_required",
        "acr_values": "urn:didmesh:acr:mfa",
    }


def test_a_one_factor_token_is_asked_to_step_up(client, node):
    assert_needs_mfa(get(client, PRIVATE, node.mint(DID, **ONE_FACTOR)))
    # A token of a node before issue 11 (no acr): one factor too.
    assert_needs_mfa(get(client, PRIVATE, node.mint(DID)))


def test_an_mfa_token_gets_the_private_activities(client, node):
    response = get(client, PRIVATE, node.mint(DID, **MFA))
    assert response.status_code == 200
    assert response.get_json() == home_app.private_feed(DID)
    assert {a["visibility"] for a in response.get_json()["activities"]} == {"private"}


def test_amr_must_be_a_list_holding_mfa(client, node):
    """A string amr containing the letters "mfa", or an acr alone, is not a
    multi-factor login (a naive `"mfa" in amr` would let the first through)."""
    for claims in ({"amr": "no-mfa-here", "acr": didmesh_auth.ACR_1FA},
                   {"amr": ["swk"], "acr": didmesh_auth.ACR_MFA},
                   {"amr": [["mfa"]], "acr": didmesh_auth.ACR_1FA}):
        response = get(client, PRIVATE, node.mint(DID, **claims))
        assert response.status_code == 401, claims
        assert response.get_json()["error"] == "insufficient_user_authentication", claims


def test_no_token_and_bad_tokens(client, node):
    response = get(client, PRIVATE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.get_json() == {"error": "missing_token", "reason": "no_token"}
    # An mfa token for another audience: the middleware refuses it first.
    response = get(client, PRIVATE, node.mint(DID, aud="someone-else", **MFA))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_the_home_feed_does_not_depend_on_the_factors(client, node):
    one = get(client, HOME, node.mint(DID, **ONE_FACTOR))
    two = get(client, HOME, node.mint(DID, **MFA))
    assert one.status_code == two.status_code == 200
    assert one.get_json() == two.get_json()
    assert one.get_json()["activities"][3:] == [home_app.private_activity(DID)]
    assert "user" not in get(client, HOME).get_json()


@pytest.fixture()
def rules_app():
    """A bare Flask app with each kind of rule; claims put in the environ as
    the middleware would."""
    app = flask.Flask(__name__)

    @app.get("/acr")
    @didmesh_auth.require_authn(acr=[didmesh_auth.ACR_MFA])
    def acr():
        return {"ok": True}

    @app.get("/acr-1fa")
    @didmesh_auth.require_authn(acr=[didmesh_auth.ACR_1FA])
    def acr_1fa():
        return {"ok": True}

    @app.get("/recent")
    @didmesh_auth.require_authn(amr=["mfa"], max_age=300)
    def recent():
        return {"ok": True}

    client = app.test_client()

    def call(path, **claims):
        now = int(time.time())
        base = {"sub": DID, "auth_time": now, **MFA}
        base.update(claims)
        return client.get(path, environ_base={didmesh_auth.CLAIMS_KEY: base})

    return call


def test_acr_levels_and_max_age(rules_app):
    assert rules_app("/acr").status_code == 200
    response = rules_app("/acr", **ONE_FACTOR)
    assert response.status_code == 401
    assert response.get_json()["reason"] == "acr_required"
    assert 'acr_values="urn:didmesh:acr:mfa"' in response.headers["WWW-Authenticate"]
    assert rules_app("/acr-1fa", **ONE_FACTOR).status_code == 200
    assert rules_app("/acr-1fa").status_code == 200  # mfa meets 1fa
    assert rules_app("/recent").status_code == 200
    response = rules_app("/recent", auth_time=int(time.time()) - 3600)
    assert response.status_code == 401
    assert response.get_json()["reason"] == "auth_too_old"
    assert response.get_json()["max_age"] == 300
    assert response.headers["WWW-Authenticate"].endswith(', max_age="300"')


def test_unsafe_acr_values_stay_out_of_the_header():
    assert didmesh_auth.step_up_challenge("acr_required", ['bad "x"', didmesh_auth.ACR_MFA]) == (
        'Bearer error="insufficient_user_authentication", '
        'error_description="this resource requires a stronger authentication context", '
        'acr_values="urn:didmesh:acr:mfa"')
