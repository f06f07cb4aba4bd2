"""The little JOSE the interop matrix and the sidecar tests need, by hand.

Tokens are assembled here byte by byte rather than through a JWT library on
purpose: the matrix must be able to build tokens a library refuses to make
(`alg: none`, HS256 keyed with a public key, a kid that lies), and every
verifier under test should see exactly the bytes we meant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def load_member_key(path: str | Path) -> Ed25519PrivateKey:
    """The node's member signing key, `<data-dir>/member-key.pem` (PKCS#8 PEM)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def write_member_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write a key the way the node does (PKCS#8 PEM), for stand-ins in tests."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    Path(path).write_bytes(pem)


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    """SubjectPublicKeyInfo PEM: what the classic HS256 key-confusion attack uses as secret."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_thumbprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint of an OKP key: SHA-256 over the required members
    (crv, kty, x) in lexicographic order, no whitespace (RFC 8037 §2)."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url(raw_public(key))}
    return b64url(hashlib.sha256(_json(members)).digest())


def public_jwk(key: Ed25519PrivateKey | Ed25519PublicKey) -> dict:
    """The JWK as the node's `/.well-known/jwks.json` lists it."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(raw_public(key)),
        "kid": jwk_thumbprint(key),
        "alg": "EdDSA",
        "use": "sig",
    }


def split(token: str) -> tuple[dict, dict, bytes]:
    """Header, claims and signature of a compact JWS, without verifying it."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    return (
        json.loads(b64url_decode(header_b64)),
        json.loads(b64url_decode(payload_b64)),
        b64url_decode(signature_b64),
    )


def sign_eddsa(header: dict, claims: dict, key: Ed25519PrivateKey) -> str:
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode('ascii')))}"


def sign_hs256(header: dict, claims: dict, secret: bytes) -> str:
    signing_input = f"{b64url(_json(header))}.{b64url(_json(claims))}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def unsigned(header: dict, claims: dict) -> str:
    """`alg: none` form: empty signature (RFC 7519 §6.1)."""
    return f"{b64url(_json(header))}.{b64url(_json(claims))}."
