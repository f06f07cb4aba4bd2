"""Interop matrix: the same hostile tokens against every verifier.

Each *variant* turns the inputs (a valid token from the node, the node's member
key, the issuer and the audience) into the token a client sends, or into no
token at all. The runner sends every variant to the home endpoint behind each
named verifier and prints one row per verifier, one column per variant, and
exits non-zero if any cell differs from what a relying party must answer:

* valid -> 200 and `"user"` equal to the token's `sub`;
* none  -> 200 and no `"user"` (the public view);
* every other variant -> 401 with `WWW-Authenticate: Bearer ... invalid_token`
  (RFC 6750 §3).

Run (from sidecars/, with the repo's .venv):

    python -m interop.matrix --token-file T --member-key DATA/member-key.pem \
        --issuer https://didmesh.local --audience home-api \
        envoy=http://127.0.0.1:10000/api/activities/home \
        node=http://127.0.0.1:10001/api/activities/home \
        flask=http://127.0.0.1:10002/api/activities/home
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interop import jose


@dataclass(frozen=True)
class Inputs:
    """What every variant is built from."""

    valid_token: str
    member_key: Ed25519PrivateKey
    issuer: str
    audience: str

    @classmethod
    def load(cls, valid_token: str, member_key_pem: str, issuer: str, audience: str) -> "Inputs":
        return cls(valid_token.strip(), jose.load_member_key(member_key_pem), issuer, audience)

    @property
    def member_kid(self) -> str:
        return jose.jwk_thumbprint(self.member_key)


def _fresh_claims(inp: Inputs, **override) -> dict:
    """The valid token's claims, renewed (times, jti) so that a re-signed
    variant fails only for the one reason it is about."""
    _, claims, _ = jose.split(inp.valid_token)
    now = int(time.time())
    claims.update(iat=now, nbf=now, exp=now + 300, jti=str(uuid.uuid4()))
    claims.update(override)
    return claims


def _header(kid: str, alg: str = "EdDSA") -> dict:
    return {"alg": alg, "typ": "JWT", "kid": kid}


# --- the variants: Inputs -> token to send (None: send no Authorization) ---


def valid(inp: Inputs) -> str | None:
    return inp.valid_token


def none(inp: Inputs) -> str | None:
    return None


def expired(inp: Inputs) -> str | None:
    # An hour past, far beyond any verifier's clock-skew allowance (<= 60 s).
    now = int(time.time())
    claims = _fresh_claims(inp, iat=now - 7200, nbf=now - 7200, auth_time=now - 7200, exp=now - 3600)
    return jose.sign_eddsa(_header(inp.member_kid), claims, inp.member_key)


def tampered_signature(inp: Inputs) -> str | None:
    head, payload, signature = inp.valid_token.split(".")
    sig = bytearray(jose.b64url_decode(signature))
    # Flip a whole byte: flipping the last base64 character may only touch padding bits.
    sig[len(sig) // 2] ^= 0xFF
    return f"{head}.{payload}.{jose.b64url(bytes(sig))}"


def wrong_audience(inp: Inputs) -> str | None:
    claims = _fresh_claims(inp, aud=f"not-{inp.audience}")
    return jose.sign_eddsa(_header(inp.member_kid), claims, inp.member_key)


def wrong_issuer(inp: Inputs) -> str | None:
    claims = _fresh_claims(inp, iss="https://not-didmesh.invalid")
    return jose.sign_eddsa(_header(inp.member_kid), claims, inp.member_key)


def unknown_kid(inp: Inputs) -> str | None:
    # Signed by the member key, but names a kid no JWKS lists.
    stranger_kid = jose.jwk_thumbprint(Ed25519PrivateKey.generate())
    return jose.sign_eddsa(_header(stranger_kid), _fresh_claims(inp), inp.member_key)


def alg_none(inp: Inputs) -> str | None:
    return jose.unsigned(_header(inp.member_kid, alg="none"), _fresh_claims(inp))


def hs256_public_key(inp: Inputs) -> str | None:
    # Key confusion: HMAC keyed with the (public) member key, in hope that a
    # verifier feeds the JWK's key material to HMAC. The PEM form is the
    # classic one; the raw key and the JWK `x` are the other obvious choices.
    return jose.sign_hs256(_header(inp.member_kid, alg="HS256"), _fresh_claims(inp), jose.public_pem(inp.member_key))


def hs256_raw_public_key(inp: Inputs) -> str | None:
    return jose.sign_hs256(_header(inp.member_kid, alg="HS256"), _fresh_claims(inp), jose.raw_public(inp.member_key))


def foreign_key_member_kid(inp: Inputs) -> str | None:
    # A key that is not a member, claiming to be the member's kid.
    return jose.sign_eddsa(_header(inp.member_kid), _fresh_claims(inp), Ed25519PrivateKey.generate())


def foreign_key_own_kid(inp: Inputs) -> str | None:
    # A key that is not a member, honest about its own kid.
    stranger = Ed25519PrivateKey.generate()
    return jose.sign_eddsa(_header(jose.jwk_thumbprint(stranger)), _fresh_claims(inp), stranger)


def signed_by_member(inp: Inputs, key: Ed25519PrivateKey) -> str:
    """The valid token's claims, renewed, signed by another member's key
    under that key's own kid: what a token from a member added later looks
    like (a key the verifiers have not seen yet)."""
    return jose.sign_eddsa(_header(jose.jwk_thumbprint(key)), _fresh_claims(inp), key)


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[Inputs], str | None]
    status: int
    description: str


VARIANTS: list[Variant] = [
    Variant("valid", valid, 200, "the node's token as issued"),
    Variant("none", none, 200, "no Authorization header: public view"),
    Variant("expired", expired, 401, "re-signed by the member key, exp an hour ago"),
    Variant("tampered", tampered_signature, 401, "valid token, one signature byte flipped"),
    Variant("wrong-aud", wrong_audience, 401, "re-signed by the member key for another audience"),
    Variant("wrong-iss", wrong_issuer, 401, "re-signed by the member key with another issuer"),
    Variant("unknown-kid", unknown_kid, 401, "signed by the member key, kid not in the JWKS"),
    Variant("alg-none", alg_none, 401, "alg none, empty signature"),
    Variant("hs256-pem", hs256_public_key, 401, "HS256 keyed with the member public key (PEM)"),
    Variant("hs256-raw", hs256_raw_public_key, 401, "HS256 keyed with the member public key (raw 32 bytes)"),
    Variant("foreign-member-kid", foreign_key_member_kid, 401, "non-member key, member's kid"),
    Variant("foreign-own-kid", foreign_key_own_kid, 401, "non-member key, its own kid"),
]


# --- the runner ---


@dataclass(frozen=True)
class Cell:
    status: int | None  # None: no HTTP answer at all
    ok: bool
    note: str = ""  # why a cell with the right status still fails

    def __str__(self) -> str:
        text = "ERR" if self.status is None else str(self.status)
        if self.note:
            text += f"!{self.note}"
        return text if self.ok else f"{text}≠"


def check(variant: Variant, token: str | None, status: int, headers: Mapping[str, str], body: str) -> Cell:
    """Judge one answer: the status, and what a user would notice besides.
    `headers` must look names up case-insensitively (requests and Werkzeug do)."""
    if status != variant.status:
        return Cell(status, False)
    if status == 401:
        challenge = headers.get("WWW-Authenticate", "")
        if not (challenge.startswith("Bearer") and "invalid_token" in challenge):
            return Cell(status, False, "hdr")
        return Cell(status, True)
    try:
        user = json.loads(body).get("user")
    except (ValueError, AttributeError):
        return Cell(status, False, "json")
    if token is None:
        return Cell(status, user is None, "" if user is None else "user")
    sub = jose.split(token)[1].get("sub")
    return Cell(status, user == sub, "" if user == sub else "user")


def probe(session: requests.Session, url: str, variant: Variant, inp: Inputs) -> Cell:
    token = variant.make(inp)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        response = session.get(url, headers=headers, timeout=10)
    except requests.RequestException:
        return Cell(None, False)
    return check(variant, token, response.status_code, response.headers, response.text)


def run(verifiers: dict[str, str], inp: Inputs, variants: list[Variant] = VARIANTS) -> dict[str, dict[str, Cell]]:
    """Every variant against every verifier: {verifier: {variant: Cell}}."""
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxies or netrc from the environment
    return {name: {v.name: probe(session, url, v, inp) for v in variants} for name, url in verifiers.items()}


def render(results: dict[str, dict[str, Cell]], variants: list[Variant] = VARIANTS) -> str:
    names = [v.name for v in variants]
    first = max([len("verifier"), *map(len, results)])
    widths = [max(len(n), 10) for n in names]
    lines = [
        "  ".join(["verifier".ljust(first), *(n.ljust(w) for n, w in zip(names, widths))]).rstrip(),
        "  ".join(["expected".ljust(first), *(str(v.status).ljust(w) for v, w in zip(variants, widths))]).rstrip(),
    ]
    for verifier, row in results.items():
        cells = [str(row[n]).ljust(w) for n, w in zip(names, widths)]
        lines.append("  ".join([verifier.ljust(first), *cells]).rstrip())
    failed = mismatches(results)
    total = sum(len(row) for row in results.values())
    lines.append("")
    lines.append("≠ marks a mismatch; !hdr: 401 without 'WWW-Authenticate: Bearer error=\"invalid_token\"';")
    lines.append("!user: 200 but \"user\" is not the token's sub (or is set without a token); ERR: no answer.")
    lines.append(f"matrix: {total - failed} passed, {failed} failed")
    return "\n".join(lines)


def mismatches(results: dict[str, dict[str, Cell]]) -> int:
    return sum(not cell.ok for row in results.values() for cell in row.values())


def _parse_verifier(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    return name, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interop.matrix",
        description="Send every token variant through every verifier; exit 1 on any mismatch.",
        epilog="variants:\n" + "\n".join(f"  {v.name:<20} {v.status}  {v.description}" for v in VARIANTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help="a valid token from the node (default: env DIDMESH_TOKEN)")
    token.add_argument("--token-file", help="file holding a valid token from the node")
    parser.add_argument("--member-key", required=True, help="the node's <data-dir>/member-key.pem (PKCS#8)")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("verifiers", nargs="+", type=_parse_verifier, metavar="NAME=URL",
                        help="the home endpoint as seen through each verifier")
    args = parser.parse_args(argv)

    if args.token_file:
        valid_token = Path(args.token_file).read_text()
    else:
        valid_token = args.token or os.environ.get("DIDMESH_TOKEN") or parser.error("no token: --token, --token-file or DIDMESH_TOKEN")
    inp = Inputs.load(valid_token, args.member_key, args.issuer, args.audience)
    results = run(dict(args.verifiers), inp)
    print(render(results))
    if args.json:
        expected = {v.name: v.status for v in VARIANTS}
        report = {
            verifier: {
                variant: {"expected": expected[variant], "status": c.status, "ok": c.ok, "note": c.note}
                for variant, c in row.items()
            }
            for verifier, row in results.items()
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
    return 1 if mismatches(results) else 0


if __name__ == "__main__":
    sys.exit(main())
