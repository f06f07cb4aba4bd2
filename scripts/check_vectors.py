#!/usr/bin/env python3
"""Recomputes didmesh's canonical-encoding test vectors independently of the
Rust code: canonical JSON (RFC 8785 subset) with Python's json module, Ed25519
with the `cryptography` package, blake3 with the `blake3` package, CIDv1 and
base58btc/base32 by hand. Exits non-zero on any mismatch.

Protocol v2 (PROTOCOL.md): the signing bytes are the op without `sig` and
`cosigs`; the CID and the DID are taken from the signing bytes, so no
unsigned byte can tell two ops apart.

Also a network genesis (PROTOCOL.md §5: network_id = "mesh-" + the first 16
characters of base32 lower-case of blake3(canonical JSON of {created_at,
issuer, members, quorum}), members rebuilt from their seeds) and a login
challenge text (PROTOCOL.md §6), rendered here from its fields.

And a member entry with ID-token keys: the RSA key must be 2048 bits (256
bytes, top bit set, odd) with e = AQAB in canonical base64url, the P-256
Multikey (multicodec 0x1200, compressed point) is rebuilt from its private
scalar, and each JWK and its RFC 7638 thumbprint `kid` is recomputed.

And a federated link (PROTOCOL.md, "Federated links"): the account
commitment from (network_id, iss, sub), the attestation bytes, the member's
Ed25519 signature over them, and the update op that carries the link (which
must not contain the subject in the clear).

And revocations (PROTOCOL.md, "Revocation"): a state's `revocations` member
is absent when empty (so older ops keep their bytes); when present it holds
`before` (unix seconds, omitted when 0) and `jti` ([{exp, jti}], at most 64,
omitted when empty).

And member key rotation (PROTOCOL.md, "Member key rotation"): a
`member-rotate` op's entry keeps the member's `node_did` (the did:key of the
key it was admitted with) while its `key` is new, and must replace the
entry of an earlier vector with that `node_did`; a `member-revoke` op
carries `revoke` = {before, did} and no member entry; a genesis whose
`key_overlap_secs` rule is not the default 3600 hashes that member into
its network id (absent at the default, so older ids are unchanged)."""
import base64
import json
import sys
from datetime import datetime, timezone

import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
import hashlib

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def public_from_multibase(mb: str) -> Ed25519PublicKey:
    raw = b58decode(mb[1:])
    assert mb[0] == "z" and raw[:2] == b"\xed\x01" and len(raw) == 34, mb
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def multibase_ed25519(pub: bytes) -> str:
    return "z" + b58encode(b"\xed\x01" + pub)


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def check(v) -> list:
    errors = []
    op = dict(v["op"])
    signed = canonical(op)
    if signed.hex() != v["op_bytes_hex"]:
        errors.append("op bytes differ")
    unsigned_op = {k: val for k, val in op.items() if k not in ("sig", "cosigs")}
    signing = canonical(unsigned_op)
    if signing.hex() != v["signing_bytes_hex"]:
        errors.append("signing bytes differ")
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["signer_seed_hex"]))
    pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if multibase_ed25519(pub) != op["signer"]:
        errors.append("signer multibase differs")
    sig = base64.urlsafe_b64encode(priv.sign(signing)).decode().rstrip("=")
    if sig != v["signature_b64url"] or sig != op["sig"]:
        errors.append("signature differs (Ed25519 is deterministic)")
    Ed25519PublicKey.from_public_bytes(pub).verify(b64url(op["sig"]), signing)
    for cosig in op.get("cosigs", []):
        # raises InvalidSignature on a mismatch
        public_from_multibase(cosig["signer"]).verify(b64url(cosig["sig"]), signing)
    errors += check_revocations(op)
    errors += check_membership(op)
    digest = blake3.blake3(signing).digest()
    cid = "b" + b32(bytes([0x01, 0x55, 0x1E, 0x20]) + digest)
    if cid != v["cid"]:
        errors.append(f"cid differs: {cid}")
    if op["type"] == "create":
        did = "did:mesh:" + b32(digest[:20])
        if did != v["did"]:
            errors.append(f"did differs: {did}")
    return errors


def check_revocations(op) -> list:
    state = op.get("state") or {}
    if "revocations" not in state:
        return []
    r = state["revocations"]
    errors = []
    if not r or set(r) - {"before", "jti"}:
        errors.append("revocations must be absent when empty and hold only before and jti")
    if "before" in r and not (isinstance(r["before"], int) and r["before"] > 0):
        errors.append("revocations.before must be omitted when 0")
    jti = r.get("jti", [])
    if "jti" in r and not jti:
        errors.append("revocations.jti must be omitted when empty")
    if len(jti) > 64 or any(set(e) != {"exp", "jti"} for e in jti):
        errors.append("revocations.jti: at most 64 entries of {exp, jti}")
    if len({e.get("jti") for e in jti}) != len(jti):
        errors.append("revocations.jti lists a token twice")
    return errors


DEFAULT_KEY_OVERLAP_SECS = 3600
# node_did of each member entry seen so far, in file order (a rotation must
# name one of them).
SEEN_NODE_DIDS: set = set()


def check_membership(op) -> list:
    errors = []
    kind = op["type"]
    member = op.get("member")
    if kind == "member-revoke":
        r = op.get("revoke")
        if member is not None or not isinstance(r, dict) or set(r) != {"before", "did"}:
            errors.append("member-revoke: revoke = {before, did} and no member")
        elif not (isinstance(r["before"], int) and r["before"] > 0 and r["did"].startswith("did:")):
            errors.append("member-revoke: before > 0 and a DID")
    elif "revoke" in op:
        errors.append(f"{kind} must not carry revoke")
    if kind in ("member-add", "member-rotate") and member is not None:
        own = "did:key:" + member["key"]
        if kind == "member-add":
            SEEN_NODE_DIDS.add(member["node_did"])
        else:
            if member["node_did"] == own:
                errors.append("member-rotate: the key must change, the node_did stays")
            if member["node_did"] not in SEEN_NODE_DIDS:
                errors.append("member-rotate names no earlier member's node_did")
    return errors


def check_network(v) -> list:
    errors = []
    members = []
    for i, seed in enumerate(v["member_seeds_hex"]):
        priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
        key = multibase_ed25519(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        members.append({"name": f"node{i + 1}", "node_did": "did:key:" + key, "key": key})
    genesis = v["genesis"]
    if genesis["members"] != members:
        errors.append("members differ from their seeds")
    body = {k: genesis[k] for k in ("created_at", "issuer", "members", "quorum")}
    if "key_overlap_secs" in genesis:
        overlap = genesis["key_overlap_secs"]
        if not isinstance(overlap, int) or overlap == DEFAULT_KEY_OVERLAP_SECS:
            errors.append("key_overlap_secs must be omitted at its default")
        body["key_overlap_secs"] = overlap
    preimage = canonical(body)
    if preimage.hex() != v["id_preimage_hex"]:
        errors.append("id preimage differs")
    network_id = "mesh-" + b32(blake3.blake3(preimage).digest())[:16]
    if network_id != v["network_id"] or network_id != genesis["network_id"]:
        errors.append(f"network id differs: {network_id}")
    return errors


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def thumbprint(required: dict) -> str:
    # RFC 7638 §3: the required members only, lexicographic order, no
    # whitespace, SHA-256, base64url.
    return b64url_encode(hashlib.sha256(canonical(required)).digest())


def check_token_keys(v) -> list:
    errors = []
    member = v["member"]
    rsa = member["rsa"]
    n = b64url(rsa["n"])
    if b64url_encode(n) != rsa["n"]:
        errors.append("rsa n is not canonical base64url")
    if len(n) != 256 or n[0] & 0x80 == 0 or n[-1] & 1 == 0:
        errors.append("rsa n is not an odd 2048-bit modulus")
    if rsa["e"] != "AQAB":
        errors.append("rsa e is not 65537")
    scalar = int.from_bytes(bytes.fromhex(v["p256_seed_hex"]), "big")
    pub = ec.derive_private_key(scalar, ec.SECP256R1()).public_key()
    compressed = pub.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    if "z" + b58encode(b"\x80\x24" + compressed) != member["p256"]:
        errors.append("p256 multikey differs from its scalar")
    numbers = pub.public_numbers()
    x = b64url_encode(numbers.x.to_bytes(32, "big"))
    y = b64url_encode(numbers.y.to_bytes(32, "big"))
    rsa_req = {"e": rsa["e"], "kty": "RSA", "n": rsa["n"]}
    ec_req = {"crv": "P-256", "kty": "EC", "x": x, "y": y}
    want = [
        dict(rsa_req, alg="RS256", use="sig", kid=thumbprint(rsa_req)),
        dict(ec_req, alg="ES256", use="sig", kid=thumbprint(ec_req)),
    ]
    if v["jwks"] != want:
        errors.append(f"jwks differ: {want}")
    # RFC 7638 §3.1 gives this key's thumbprint.
    if thumbprint(rsa_req) != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs":
        errors.append("rsa thumbprint is not RFC 7638's")
    return errors


def check_link(v, ops) -> list:
    errors = []
    pre = b"didmesh federated account v1\0" + "\0".join(
        (v["network_id"], v["iss"], v["sub"])
    ).encode()
    commitment = b64url_encode(blake3.blake3(pre).digest())
    if commitment != v["commitment"]:
        errors.append(f"commitment differs: {commitment}")
    link = v["link"]
    body = {
        "type": "didmesh-link-attestation/1",
        "network_id": v["network_id"],
        "did": v["did"],
        "provider": link["provider"],
        "commitment": commitment,
        "attested_at": link["attested_at"],
    }
    signed = canonical(body)
    if signed.hex() != v["attestation_bytes_hex"]:
        errors.append("attestation bytes differ")
    priv = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["member_seed_hex"]))
    pub = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if multibase_ed25519(pub) != link["attested_by"]:
        errors.append("attested_by differs from the member seed")
    if b64url_encode(priv.sign(signed)) != link["attestation"]:
        errors.append("attestation signature differs (Ed25519 is deterministic)")
    if link["commitment"] != commitment:
        errors.append("link commitment differs")
    carrying = [o for o in ops if link in (o["op"].get("state") or {}).get("links", [])]
    if len(carrying) != 1:
        errors.append("no op vector carries the link")
    for o in carrying:
        if v["sub"].encode() in bytes.fromhex(o["op_bytes_hex"]):
            errors.append("the subject is in the op in the clear")
    return errors


def rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_login_message(v) -> list:
    domain = v["domain"]
    message = (
        f"{domain} wants you to sign in with your DID:\n{v['did']}\n\n"
        "Sign in to didmesh. This request will not trigger any transaction.\n\n"
        f"URI: didmesh://{domain}\n"
        "Version: 1\n"
        f"Network ID: {v['network_id']}\n"
        f"Audience: {v['audience']}\n"
        f"Nonce: {v['nonce']}\n"
        f"Issued At: {rfc3339(v['issued_at'])}\n"
        f"Expiration Time: {rfc3339(v['expires_at'])}"
    )
    return [] if message == v["message"] else ["message text differs"]


def check_phone(v: dict) -> list[str]:
    """Login policy phones: blake3("didmesh phone v1\\0" || len(salt) u64be || salt || number)."""
    salt = bytes.fromhex(v["salt_hex"])
    h = blake3.blake3(b"didmesh phone v1\x00" + len(salt).to_bytes(8, "big") + salt + v["number"].encode())
    got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    return [] if got == v["commitment"] else [f"commitment {got} != {v['commitment']}"]


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    checks = (
        [("vector", v, check) for v in doc["vectors"]]
        + [("network", v, check_network) for v in doc["networks"]]
        + [("login message", v, check_login_message) for v in doc["login_messages"]]
        + [("member token keys", v, check_token_keys) for v in doc["member_token_keys"]]
        + [
            ("federated link", v, lambda v: check_link(v, doc["vectors"]))
            for v in doc["federated_links"]
        ]
        + [("phone commitment", v, check_phone) for v in doc["phone_commitments"]]
    )
    failed = 0
    for kind, v, fn in checks:
        errors = fn(v)
        status = "ok" if not errors else "FAIL " + "; ".join(errors)
        print(f"{kind} {v['name']}: {status}")
        failed += bool(errors)
    print(f"{len(checks) - failed}/{len(checks)} vectors reproduced independently")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "did-core/tests/vectors.json"))
