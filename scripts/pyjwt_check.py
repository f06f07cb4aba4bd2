#!/usr/bin/env python3
"""Checks a didmesh access token with a standard, non-Rust verifier: PyJWT.

Reads the node's OpenID discovery document, fetches the node's JWKS through
PyJWKClient, and verifies the token: EdDSA only, the `kid` from the header
found in the JWKS, issuer from discovery, the expected audience. Then checks
that a tampered token and a wrong audience are refused.

    pyjwt_check.py NODE_URL TOKEN_FILE [AUDIENCE] [EXPECTED_SUB]
"""
import json
import sys
import urllib.request

import jwt


def main() -> int:
    node, token_file = sys.argv[1].rstrip("/"), sys.argv[2]
    audience = sys.argv[3] if len(sys.argv) > 3 else "home-api"
    expected_sub = sys.argv[4] if len(sys.argv) > 4 else None
    token = open(token_file, encoding="ascii").read().strip()
    with urllib.request.urlopen(f"{node}/.well-known/openid-configuration") as r:
        discovery = json.load(r)
    assert "EdDSA" in discovery["id_token_signing_alg_values_supported"], discovery
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA", header
    # This node's own JWKS (every node serves every member's keys). The
    # discovery document's jwks_uri hangs off the network's issuer, which a
    # test network's placeholder issuer (https://didmesh.local) does not serve.
    client = jwt.PyJWKClient(f"{node}/.well-known/jwks.json")
    signing_key = client.get_signing_key_from_jwt(token)
    assert signing_key.key_id == header["kid"], (signing_key.key_id, header)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["EdDSA"],
        audience=audience,
        issuer=discovery["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    if expected_sub:
        assert claims["sub"] == expected_sub, claims
    print(f"PyJWT {jwt.__version__}: token verified: kid={header['kid']} iss={claims['iss']} "
          f"aud={claims['aud']} sub={claims['sub']} amr={claims.get('amr')}")

    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    for name, tok, aud in [("tampered signature", tampered, audience), ("wrong audience", token, "other-app")]:
        try:
            jwt.decode(tok, signing_key.key, algorithms=["EdDSA"], audience=aud, issuer=discovery["issuer"])
        except jwt.InvalidTokenError as e:
            print(f"PyJWT refuses {name}: {type(e).__name__}")
        else:
            print(f"PyJWT accepted a {name} token", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
