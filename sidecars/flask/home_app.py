"""The home API in Flask, its tokens checked by didmesh_auth before any view.

The views hold no token code: they read `flask.g.claims` (None without a
token); a bad token never reaches them. `GET /api/activities/private` needs a
multi-factor login: `@didmesh_auth.require_mfa` answers a one-factor token with
401 `insufficient_user_authentication` (RFC 9470) before the view runs.

With an OpenID client id (--oidc-client-id, DIDMESH_OIDC_CLIENT_ID) the app
also signs browsers in with didmesh (signin.py: Authlib, code flow + PKCE,
session cookie): `GET /` is then a page with a "Sign in with didmesh" link,
and, once signed in, the DID and the personal plan. The API's answer still
depends on the bearer token alone.

    python home_app.py --listen 127.0.0.1:10002 --issuer https://didmesh.local \
        --audience home-api --jwks-uri http://127.0.0.1:7000/.well-known/jwks.json

(or the DIDMESH_* variables; --help). That serves with Werkzeug's threaded
server, which is fine on loopback and in tests; in production use a WSGI
server, e.g. `gunicorn 'home_app:create_app()'` with the DIDMESH_* variables.
"""

from __future__ import annotations

import argparse
import logging
import os

import flask

import didmesh_auth
import signin

# The same feed as the Rust home-api (home-api/src/activities.rs), so both
# answer a given caller with the same JSON.
PUBLIC_ACTIVITIES = [
    {"id": "park-run", "title": "Saturday park run, 9:00 at the north gate", "visibility": "public"},
    {"id": "book-club", "title": "Book club: The Dispossessed, Thursday 19:00", "visibility": "public"},
    {"id": "repair-cafe", "title": "Repair café at the library, Sunday afternoon", "visibility": "public"},
]
PRIVATE_PLANS = [
    "Your plan: water the tomatoes before 8",
    "Your plan: call grandma after lunch",
    "Your plan: return the neighbour's ladder",
    "Your plan: piano practice, 30 minutes",
]


PRIVATE_NOTES = [
    "Spare key: under the blue flowerpot",
    "Alarm code change due on the 1st",
    "Bank appointment moved to Friday 10:00",
    "Parcel pick-up PIN is in the kitchen drawer",
]


def private_activity(did: str) -> dict:
    plan = PRIVATE_PLANS[sum(did.encode()) % len(PRIVATE_PLANS)]
    return {"id": "my-plan", "title": plan, "visibility": "private"}


def private_feed(did: str) -> dict:
    """GET /api/activities/private: the plan and a note only a multi-factor
    sign-in may see (home-api/src/activities.rs `private_for`)."""
    note = PRIVATE_NOTES[sum(did.encode()) % len(PRIVATE_NOTES)]
    return {"user": did, "activities": [
        private_activity(did), {"id": "my-note", "title": note, "visibility": "private"}]}


def oidc_settings_from_env() -> dict | None:
    """signin.init_app's settings from DIDMESH_OIDC_* (None without a client id)."""
    env = os.environ.get
    if not env("DIDMESH_OIDC_CLIENT_ID"):
        return None
    settings = {
        "issuer": env("DIDMESH_OIDC_ISSUER") or env("DIDMESH_ISSUER"),
        "client_id": env("DIDMESH_OIDC_CLIENT_ID"),
        "client_secret": env("DIDMESH_OIDC_CLIENT_SECRET") or None,
        "redirect_uri": env("DIDMESH_OIDC_REDIRECT_URI"),
        "id_token_alg": env("DIDMESH_OIDC_ID_TOKEN_ALG") or "RS256",
        "session_secret": env("DIDMESH_SESSION_SECRET") or None,
    }
    missing = [k for k in ("issuer", "redirect_uri") if not settings[k]]
    if missing:
        raise ValueError(f"sign-in needs {', '.join(missing)} (DIDMESH_OIDC_ISSUER, DIDMESH_OIDC_REDIRECT_URI)")
    return settings


def create_app(
    issuer: str | None = None,
    audience: str | None = None,
    jwks_uri: str | None = None,
    jwks_ca: str | None = None,
    oidc: dict | None = None,
    **verifier_settings,
) -> flask.Flask:
    """Settings default to the DIDMESH_* environment variables; `oidc`
    (signin.init_app's keyword arguments) to DIDMESH_OIDC_*."""
    env = os.environ.get
    settings = {
        "issuer": issuer or env("DIDMESH_ISSUER"),
        "audience": audience or env("DIDMESH_AUDIENCE"),
        "jwks_uri": jwks_uri or env("DIDMESH_JWKS_URI"),
    }
    missing = [name for name, value in settings.items() if not value]
    if missing:
        raise ValueError(f"missing setting(s): {', '.join(missing)} (or DIDMESH_*)")

    if not verifier_settings.get("revocations_uri") and env("DIDMESH_REVOCATIONS_URI"):
        verifier_settings["revocations_uri"] = env("DIDMESH_REVOCATIONS_URI")
    app = flask.Flask(__name__)
    didmesh_auth.init_app(app, jwks_ca=jwks_ca or env("DIDMESH_JWKS_CA"), **settings, **verifier_settings)

    @app.get("/api/activities/home")
    def home():
        activities = list(PUBLIC_ACTIVITIES)
        claims = flask.g.claims
        if claims is None:
            return {"activities": activities}
        activities.append(private_activity(claims["sub"]))
        return {"activities": activities, "user": claims["sub"]}

    @app.get("/api/activities/private")
    @didmesh_auth.require_mfa
    def private():
        """Needs a token of a login with two or more factors (RFC 9470 401
        otherwise); the step-up rule is the decorator's, not the view's."""
        return private_feed(flask.g.claims["sub"])

    oidc = oidc if oidc is not None else oidc_settings_from_env()
    if oidc:
        signin.init_app(app, **oidc)

    @app.get("/")
    def page():
        """The same split as the API, for a person: public activities for
        everyone, the personal plan for the DID this browser signed in as."""
        did = signin.signed_in_did() if signin.enabled() else None
        activities = list(PUBLIC_ACTIVITIES) + ([private_activity(did)] if did else [])
        return flask.render_template_string(HOME_PAGE, activities=activities, did=did,
                                            can_sign_in=signin.enabled(), csrf=signin.csrf_token())

    return app


HOME_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Home activities</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}
li.private{font-weight:bold}code{word-break:break-all}</style></head>
<body>
<h1>Home activities</h1>
{% if did %}
<p>Signed in as <code data-testid="signed-in-did">{{ did }}</code></p>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{{ csrf }}">
<button type="submit" data-testid="signout">Sign out</button></form>
{% elif can_sign_in %}
<p><a href="/login" data-testid="signin">Sign in with didmesh</a></p>
{% endif %}
<ul data-testid="activities">
{% for a in activities %}<li class="{{ a.visibility }}" data-testid="activity-{{ a.visibility }}">{{ a.title }}</li>
{% endfor %}</ul>
</body></html>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    parser.add_argument("--listen", default=env("DIDMESH_LISTEN", "127.0.0.1:10002"), help="HOST:PORT [DIDMESH_LISTEN]")
    parser.add_argument("--issuer", default=env("DIDMESH_ISSUER"), help="expected iss [DIDMESH_ISSUER]")
    parser.add_argument("--audience", default=env("DIDMESH_AUDIENCE"), help="expected aud [DIDMESH_AUDIENCE]")
    parser.add_argument("--jwks-uri", default=env("DIDMESH_JWKS_URI"), help="the node's JWKS URL [DIDMESH_JWKS_URI]")
    parser.add_argument("--jwks-ca", default=env("DIDMESH_JWKS_CA"), help="CA file for an https JWKS [DIDMESH_JWKS_CA]")
    parser.add_argument("--revocations-uri", default=env("DIDMESH_REVOCATIONS_URI"),
                        help="a node's /v1/revocations feed: tokens signed out, or of removed keys, are refused "
                             "within seconds, not at their expiry [DIDMESH_REVOCATIONS_URI]")
    group = parser.add_argument_group(
        "sign in with didmesh (OpenID Connect; the client secret only by environment, never on a command line)")
    group.add_argument("--oidc-issuer", default=env("DIDMESH_OIDC_ISSUER"),
                       help="the network's issuer, discovery at ISSUER/.well-known/openid-configuration "
                            "(default: --issuer) [DIDMESH_OIDC_ISSUER]")
    group.add_argument("--oidc-client-id", default=env("DIDMESH_OIDC_CLIENT_ID"),
                       help="client_id from `didmesh client register`; sign-in is off without it [DIDMESH_OIDC_CLIENT_ID]")
    group.add_argument("--oidc-redirect-uri", default=env("DIDMESH_OIDC_REDIRECT_URI"),
                       help="the registered redirect URI, e.g. http://localhost:8090/auth/callback "
                            "[DIDMESH_OIDC_REDIRECT_URI]")
    group.add_argument("--oidc-id-token-alg", default=env("DIDMESH_OIDC_ID_TOKEN_ALG", "RS256"),
                       choices=signin.ID_TOKEN_ALGS, help="the client's registered ID token alg [DIDMESH_OIDC_ID_TOKEN_ALG]")
    args = parser.parse_args()
    oidc = None
    if args.oidc_client_id:
        oidc = {"issuer": args.oidc_issuer or args.issuer, "client_id": args.oidc_client_id,
                "redirect_uri": args.oidc_redirect_uri, "id_token_alg": args.oidc_id_token_alg,
                # Secrets from the environment only: a command line is readable in ps.
                "client_secret": env("DIDMESH_OIDC_CLIENT_SECRET") or None,
                "session_secret": env("DIDMESH_SESSION_SECRET") or None}
        if not oidc["issuer"] or not oidc["redirect_uri"]:
            parser.error("sign-in needs --oidc-redirect-uri and an issuer (--oidc-issuer or --issuer)")
    try:
        extra = {"revocations_uri": args.revocations_uri} if args.revocations_uri else {}
        app = create_app(args.issuer, args.audience, args.jwks_uri, args.jwks_ca, oidc=oidc or {}, **extra)
    except ValueError as err:
        parser.error(str(err))
    logging.getLogger("werkzeug").addFilter(signin.RedactCodes())
    host, _, port = args.listen.rpartition(":")
    app.run(host=host, port=int(port), threaded=True)


if __name__ == "__main__":
    main()
