"""Sign in with didmesh: the Flask app as an OpenID Connect relying party (Authlib).

    signin.init_app(app, issuer="http://localhost:7000", client_id="…",
                    client_secret="…", redirect_uri="http://localhost:8090/auth/callback")

adds

* `GET /login` - a redirect to the network's authorization endpoint
  (authorization code flow, OIDC Core §3.1, with PKCE S256, RFC 7636, a
  `state` and a `nonce`, all kept in the session until the callback);
* `GET /auth/callback` - checks `state`, the `iss` parameter (RFC 9207),
  redeems the code at the token endpoint (client_secret_basic for a
  confidential client, PKCE alone for a public one), verifies the ID token
  against the network's JWKS (signature, `iss`, `aud`, `exp`, `nonce`; its
  `alg` must be the one the client was registered with, OIDC Core
  §3.1.3.7 step 7) and signs the browser in: the session then holds the DID
  (`sub`), nothing else of the tokens;
* `POST /logout` - forgets the session (the provider keeps none, so there
  is nothing to end there); a CSRF token in the form, so a third-party page
  cannot sign a user out;
* `signed_in_did()` - the DID of the browser's session, or None.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax so it comes
back on the provider's top-level redirect, Secure when the redirect URI is
https), signed with `session_secret` (a random one per process when none is
given: sessions then end when the app restarts). A session is good for
`session_max_age` seconds (8 h).

The home API itself (`/api/activities/home`) is untouched: it still answers
by the bearer token alone (didmesh_auth), so the public/personalized split
of the API is the same with or without a signed-in browser.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import secrets
import time

import flask
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from joserfc.errors import JoseError

import didmesh_auth

log = logging.getLogger("didmesh.signin")
PROVIDER = "didmesh"
ID_TOKEN_ALGS = ("RS256", "ES256", "EdDSA")


class SignInError(Exception):
    """A sign-in that must not go on; `reason` is shown to the user."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason, self.status = reason, status


def _jws_header(token: str) -> dict:
    """The protected header of a compact JWS, unverified (only read to
    compare its `alg` with the expected one after Authlib verified it)."""
    head = token.split(".", 1)[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def init_app(
    app: flask.Flask,
    *,
    issuer: str,
    client_id: str,
    redirect_uri: str,
    client_secret: str | None = None,
    id_token_alg: str = "RS256",
    session_secret: str | None = None,
    session_max_age: int = 8 * 3600,
    http_timeout: float = 10.0,
) -> None:
    issuer = issuer.rstrip("/")
    if id_token_alg not in ID_TOKEN_ALGS:
        raise ValueError(f"id_token_alg must be one of {', '.join(ID_TOKEN_ALGS)}, not {id_token_alg!r}")
    app.secret_key = session_secret or secrets.token_urlsafe(32)
    app.config.update(
        SESSION_COOKIE_NAME="didmesh_home_session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, not Strict: the provider sends the browser back with a
        # top-level GET, and the callback needs the state kept in the session.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=redirect_uri.startswith("https://"),
    )
    oauth = OAuth(app)
    oauth.register(
        PROVIDER,
        client_id=client_id,
        client_secret=client_secret,
        # OIDC Discovery §4: the metadata lives at issuer + this path.
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid",
            "code_challenge_method": "S256",
            # RFC 6749 §2.3.1: Basic is what every server must take; a client
            # registered without a secret is public and authenticates with
            # the PKCE verifier alone.
            "token_endpoint_auth_method": "client_secret_basic" if client_secret else "none",
            "timeout": http_timeout,
        },
    )
    client = oauth.create_client(PROVIDER)

    def metadata() -> dict:
        try:
            meta = client.load_server_metadata()
        except (requests.RequestException, ValueError) as err:
            raise SignInError(f"the sign-in service at {issuer} cannot be reached ({type(err).__name__})", 502)
        # OIDC Discovery §4.3: the issuer in the document must be the one
        # it was fetched for, or tokens of another issuer would be taken.
        if meta.get("issuer") != issuer:
            client.server_metadata.clear()  # fetch again next time
            raise SignInError(f"the discovery document names issuer {meta.get('issuer')!r}, not {issuer!r}", 502)
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)]
        if missing:
            client.server_metadata.clear()
            raise SignInError(f"the sign-in service is not an OpenID provider (no {', '.join(missing)})", 502)
        return meta

    @app.errorhandler(SignInError)
    def _sign_in_error(err: SignInError):
        return flask.render_template_string(ERROR_PAGE, reason=err.reason), err.status

    @app.get("/login")
    def login():
        metadata()
        return client.authorize_redirect(redirect_uri)

    @app.get("/auth/callback")
    def callback():
        meta = metadata()
        # RFC 9207 §2.4: with a provider that sends `iss`, a response without
        # it, or with another issuer's, is refused (mix-up attacks).
        iss = flask.request.args.get("iss")
        if iss is not None and iss != issuer:
            raise SignInError("the answer came from another issuer than the one this app signs in with")
        if iss is None and meta.get("authorization_response_iss_parameter_supported"):
            raise SignInError("the answer carries no iss parameter")
        try:
            token = client.authorize_access_token()
        except OAuthError as err:
            if err.error == "access_denied":
                raise SignInError("sign-in was cancelled")
            raise SignInError(f"sign-in failed: {err.error}" + (f" ({err.description})" if err.description else ""))
        except JoseError as err:
            raise SignInError(f"the ID token did not verify ({err.error})")
        except requests.RequestException as err:
            raise SignInError(f"the token endpoint cannot be reached ({type(err).__name__})", 502)
        claims = token.get("userinfo")
        if not claims:  # Authlib verifies the ID token only when it holds a nonce
            raise SignInError("the token answer holds no verified ID token")
        try:
            alg = _jws_header(token["id_token"]).get("alg")
        except (ValueError, KeyError):
            raise SignInError("the ID token is malformed")
        if alg != id_token_alg:
            raise SignInError(f"the ID token is signed with {alg}, not {id_token_alg} as registered")
        if not didmesh_auth.is_did(claims.get("sub")):
            raise SignInError("the ID token's subject is not a DID")
        # A new session: nothing an attacker planted before sign-in survives.
        flask.session.clear()
        flask.session["did"] = claims["sub"]
        flask.session["amr"] = list(claims.get("amr") or [])
        flask.session["signed_in_at"] = int(time.time())
        flask.session["csrf"] = secrets.token_urlsafe(24)
        log.info("signed in %s (amr %s)", claims["sub"], ",".join(flask.session["amr"]))
        return flask.redirect("/")

    @app.post("/logout")
    def logout():
        sent = flask.request.form.get("csrf", "")
        kept = flask.session.get("csrf", "")
        if kept and not hmac.compare_digest(sent.encode(), kept.encode()):
            raise SignInError("sign-out refused: the form is not from this app", 403)
        flask.session.clear()
        return flask.redirect("/")

    app.extensions["didmesh.signin"] = {"max_age": session_max_age, "issuer": issuer}


def enabled() -> bool:
    return "didmesh.signin" in flask.current_app.extensions


def signed_in_did() -> str | None:
    """The DID this browser signed in as, or None (also once the session is
    older than `session_max_age`)."""
    settings = flask.current_app.extensions.get("didmesh.signin")
    did = flask.session.get("did")
    if not settings or not did:
        return None
    if time.time() - flask.session.get("signed_in_at", 0) > settings["max_age"]:
        flask.session.clear()
        return None
    return did


def csrf_token() -> str:
    return flask.session.get("csrf", "")


class RedactCodes(logging.Filter):
    """Keeps authorization codes and states out of request log lines
    (Werkzeug logs every request line, query string included)."""

    PATTERN = re.compile(r"\b(code|state)=[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self.PATTERN.sub(r"\1=…", a) if isinstance(a, str) else a for a in record.args)
        record.msg = self.PATTERN.sub(r"\1=…", str(record.msg))
        return True


ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in failed</title></head>
<body>
<h1>Sign-in did not complete</h1>
<p data-testid="signin-error">{{ reason }}</p>
<p><a href="/">Back to the home page</a></p>
</body></html>
"""

__all__ = ["init_app", "enabled", "signed_in_did", "csrf_token", "RedactCodes", "SignInError"]
