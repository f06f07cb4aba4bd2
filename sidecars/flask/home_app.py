"""The home API in Flask, its tokens checked by didmesh_auth before any view.

The views hold no token code: they read `flask.g.claims` (None without a
token); a bad token never reaches them.

    python home_app.py --listen 127.0.0.1:10002 --issuer https://didmesh.local \
        --audience home-api --jwks-uri http://127.0.0.1:7000/.well-known/jwks.json

(or the DIDMESH_* variables; --help). That serves with Werkzeug's threaded
server, which is fine on loopback and in tests; in production use a WSGI
server, e.g. `gunicorn 'home_app:create_app()'` with the DIDMESH_* variables.
"""

from __future__ import annotations

import argparse
import os

import flask

import didmesh_auth

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


def private_activity(did: str) -> dict:
    plan = PRIVATE_PLANS[sum(did.encode()) % len(PRIVATE_PLANS)]
    return {"id": "my-plan", "title": plan, "visibility": "private"}


def create_app(
    issuer: str | None = None,
    audience: str | None = None,
    jwks_uri: str | None = None,
    jwks_ca: str | None = None,
    **verifier_settings,
) -> flask.Flask:
    """Settings default to the DIDMESH_* environment variables."""
    env = os.environ.get
    settings = {
        "issuer": issuer or env("DIDMESH_ISSUER"),
        "audience": audience or env("DIDMESH_AUDIENCE"),
        "jwks_uri": jwks_uri or env("DIDMESH_JWKS_URI"),
    }
    missing = [name for name, value in settings.items() if not value]
    if missing:
        raise ValueError(f"missing setting(s): {', '.join(missing)} (or DIDMESH_*)")

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

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    parser.add_argument("--listen", default=env("DIDMESH_LISTEN", "127.0.0.1:10002"), help="HOST:PORT [DIDMESH_LISTEN]")
    parser.add_argument("--issuer", default=env("DIDMESH_ISSUER"), help="expected iss [DIDMESH_ISSUER]")
    parser.add_argument("--audience", default=env("DIDMESH_AUDIENCE"), help="expected aud [DIDMESH_AUDIENCE]")
    parser.add_argument("--jwks-uri", default=env("DIDMESH_JWKS_URI"), help="the node's JWKS URL [DIDMESH_JWKS_URI]")
    parser.add_argument("--jwks-ca", default=env("DIDMESH_JWKS_CA"), help="CA file for an https JWKS [DIDMESH_JWKS_CA]")
    args = parser.parse_args()
    try:
        app = create_app(args.issuer, args.audience, args.jwks_uri, args.jwks_ca)
    except ValueError as err:
        parser.error(str(err))
    host, _, port = args.listen.rpartition(":")
    app.run(host=host, port=int(port), threaded=True)


if __name__ == "__main__":
    main()
