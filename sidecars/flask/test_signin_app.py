"""signin.py without a network: what it refuses before any token exists.
(The full sign-in against real nodes is sidecars/oidc/test_rp.py.)"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import home_app  # noqa: E402
import signin  # noqa: E402

REDIRECT = "http://localhost:8090/auth/callback"


def app_for(node, issuer: str):
    app = home_app.create_app(
        issuer=node.issuer, audience=node.audience, jwks_uri=node.jwks_uri,
        oidc={"issuer": issuer, "client_id": "abc.home", "client_secret": "s3cret", "redirect_uri": REDIRECT})
    app.testing = True
    return app


def test_without_a_client_id_the_page_offers_no_sign_in(node):
    app = home_app.create_app(issuer=node.issuer, audience=node.audience, jwks_uri=node.jwks_uri, oidc={})
    page = app.test_client().get("/").get_data(as_text=True)
    assert "Home activities" in page and 'data-testid="signin"' not in page
    assert app.test_client().get("/login").status_code == 404


def test_a_discovery_document_of_another_issuer_is_refused(node):
    # The stand-in node's document names its own issuer, not the one configured.
    base = node.jwks_uri.rsplit("/.well-known/", 1)[0]
    page = app_for(node, base).test_client().get("/login")
    assert page.status_code == 502 and "names issuer" in page.get_data(as_text=True)
    assert "Location" not in page.headers


def test_a_provider_without_an_authorization_endpoint_is_refused(node, monkeypatch):
    base = node.jwks_uri.rsplit("/.well-known/", 1)[0]
    monkeypatch.setattr(node, "issuer", base)  # now the issuers match; the endpoints are still missing
    page = app_for(node, base).test_client().get("/login")
    assert page.status_code == 502 and "no authorization_endpoint, token_endpoint" in page.get_data(as_text=True)


def test_an_unreachable_provider_is_a_502_page(node):
    page = app_for(node, "http://127.0.0.1:9").test_client().get("/login")
    assert page.status_code == 502 and "cannot be reached" in page.get_data(as_text=True)


def test_logout_without_the_form_token_keeps_the_session(node):
    app = app_for(node, "http://127.0.0.1:9")
    browser = app.test_client()
    with browser.session_transaction() as s:
        s.update(did="did:mesh:abc", signed_in_at=2**40, csrf="right")
    assert browser.post("/logout", data={"csrf": "wrong"}).status_code == 403
    assert "did:mesh:abc" in browser.get("/").get_data(as_text=True)
    assert browser.post("/logout", data={"csrf": "right"}).status_code == 302
    assert "did:mesh:abc" not in browser.get("/").get_data(as_text=True)


def test_a_session_older_than_its_max_age_is_signed_out(node):
    browser = app_for(node, "http://127.0.0.1:9").test_client()
    with browser.session_transaction() as s:
        s.update(did="did:mesh:abc", signed_in_at=1, csrf="x")
    assert "did:mesh:abc" not in browser.get("/").get_data(as_text=True)


def test_request_log_lines_carry_no_code_or_state():
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '%s - - [%s] "%s" %s %s',
                               ("127.0.0.1", "now", "GET /auth/callback?code=SECRETCODE&state=S1&iss=x HTTP/1.1",
                                "302", "-"), None)
    assert signin.RedactCodes().filter(record)
    line = record.getMessage()
    assert "SECRETCODE" not in line and "S1" not in line and "code=…&state=…&iss=x" in line


def test_an_unknown_id_token_alg_is_refused_at_start(node):
    with pytest.raises(ValueError, match="id_token_alg"):
        home_app.create_app(issuer=node.issuer, audience=node.audience, jwks_uri=node.jwks_uri,
                            oidc={"issuer": "http://x", "client_id": "a.b", "redirect_uri": REDIRECT,
                                  "id_token_alg": "HS256"})
