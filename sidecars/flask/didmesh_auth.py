"""WSGI middleware that verifies didmesh JWTs before any view runs.

    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, issuer=..., audience=..., jwks_uri=...)

or, for Flask, `init_app(app, ...)`, which also puts the claims in `flask.g.claims`.

For each request:

* no `Authorization: Bearer` header -> the app runs with `environ["didmesh.claims"] = None`
  (another scheme, e.g. Basic, counts as no token, as in Envoy's jwt_authn);
* a token that verifies -> the app runs with the claims (a dict) there;
* a token that does not -> 401 with `WWW-Authenticate: Bearer error="invalid_token"`
  (RFC 6750 §3) and a JSON body; the app never sees the request;
* the network's keys cannot be fetched -> 503.

Verification: PyJWT, `alg` EdDSA only, signature by a key of the network's
JWKS (chosen by `kid`), `iss` and `aud` equal to the configured ones, `exp`
required, `exp`/`nbf` checked with 60 s of clock skew (the same as Envoy's
`clock_skew_seconds`). The JWKS is cached by PyJWKClient for `jwks_max_age`
seconds, so a removed member's key stops working within that time; an unknown
kid refetches it at once, but not within `refetch_cooldown` seconds of the
last fetch (so junk kids cannot make us hammer the node).

A request cannot forge claims: they live under an environ key with a dot,
which no HTTP header can produce (headers arrive as HTTP_*).
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any, Callable, Iterable

import jwt
from jwt.exceptions import PyJWKClientConnectionError

CLAIMS_KEY = "didmesh.claims"
CLOCK_SKEW_SECONDS = 60
log = logging.getLogger(__name__)


def bearer_token(authorization: str | None) -> str | None:
    """What follows "Bearer " (any case, RFC 7235 §2.1), or None for no token."""
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else None


class BearerAuthMiddleware:
    def __init__(
        self,
        app: Callable,
        *,
        issuer: str,
        audience: str,
        jwks_uri: str,
        jwks_ca: str | None = None,
        jwks_max_age: float = 300,
        refetch_cooldown: float = 10,
    ):
        self.app = app
        self.issuer = issuer
        self.audience = audience
        self.keys = jwt.PyJWKClient(
            jwks_uri,
            cache_jwk_set=True,
            lifespan=jwks_max_age,
            cooldown_duration=refetch_cooldown,
            timeout=5,
            ssl_context=ssl.create_default_context(cafile=jwks_ca) if jwks_ca else None,
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or a jwt.PyJWTError saying why not."""
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "EdDSA":
            # Before the key lookup: alg none / HS256 never reach a key.
            raise jwt.InvalidAlgorithmError(f"alg {header.get('alg')!r} is not EdDSA")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("no kid in the token header")
        key = self.keys.get_signing_key(kid)
        return jwt.decode(
            token,
            key,
            algorithms=["EdDSA"],
            issuer=self.issuer,
            audience=self.audience,
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ[CLAIMS_KEY] = None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is not None:
            try:
                environ[CLAIMS_KEY] = self.verify(token)
            except PyJWKClientConnectionError as err:
                log.error("jwks unavailable: %s", err)
                return _json(start_response, "503 Service Unavailable",
                             {"error": "temporarily_unavailable", "reason": "cannot fetch the network's keys"})
            except jwt.PyJWTError as err:
                return _json(start_response, "401 Unauthorized", {"error": "invalid_token", "reason": str(err)},
                             [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        return self.app(environ, start_response)


def _json(start_response: Callable, status: str, body: dict, headers: list | None = None) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(headers or [])])
    return [data]


def init_app(app, **settings) -> None:
    """Verify tokens for a Flask app; views read `flask.g.claims` (None: no token)."""
    import flask

    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, **settings)

    @app.before_request
    def _claims_to_g() -> None:
        flask.g.claims = flask.request.environ.get(CLAIMS_KEY)
