#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/.

Run from the repository root: python3 fuzz/corpus/make_seeds.py [DIDMESH]
(DIDMESH: path of a built `didmesh` binary, for the wallet seeds; without it
the wallet seeds already committed are kept). Seeds are small, valid or
nearly valid inputs: libFuzzer mutates from them, so each one opens a path
the fuzzer would take long to find from nothing (a signed op, a
reconciliation message with sorted CIDs, a correctly signed JWT).
"""
import base64, hashlib, json, os, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)))


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def canon(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- op_decode and canonical_json: the did-core test vectors ---------------
vectors = json.load(open("did-core/tests/vectors.json"))["vectors"]
for v in vectors:
    op = v["op"]
    put("op_decode", v["name"], canon(op))
    put("op_decode", v["name"] + "-pretty", json.dumps(op, indent=2, ensure_ascii=True))
    put("canonical_json", v["name"], json.dumps(op, indent=1))
create = vectors[0]["op"]
put("op_decode", "unknown-field", canon(dict(create, extra=1)))
put("op_decode", "float-created-at", canon(create).replace('"created_at":1790000000', '"created_at":1.5'))
put("op_decode", "no-sig", canon({k: v for k, v in create.items() if k != "sig"}))
put("op_decode", "cosigs", canon(dict(create, cosigs=[])))
for name, value in {
    "escapes": ["\u0000\u001f\"\\/\b\f\n\r\t", "\u007f\u2028\ud7ff", "😀"],
    "utf16-order": {"\ue000": 1, "\U00010000": 2, "a": 3, "": 4},
    "ints": [0, -1, 9223372036854775807, -9223372036854775808, 18446744073709551615],
    "nested": [[[[{"a": [{}]}]]]],
    "scalars": [True, False, None, "x"],
}.items():
    put("canonical_json", name, json.dumps(value, ensure_ascii=False))
put("canonical_json", "floats", "[1.0, -0, 1e3, 18446744073709551616]")
put("canonical_json", "duplicate-keys", '{"a":1,"a":2}')

# -- sync_codec: wire format version 1 (did-core/src/sync.rs module doc) ---
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


cids = sorted(hashlib.sha256(bytes([i])).digest() for i in range(12))
END = b"\xff"
put("sync_codec", "done", b"\x01")
put("sync_codec", "fingerprint-all", b"\x01" + END + b"\x01" + bytes(range(16)))
put("sync_codec", "items-all", b"\x01" + END + b"\x02" + varint(len(cids)) + b"".join(cids))
bits = len(cids)
bitmap = bytes([0b10100101, 0b00000011])
put("sync_codec", "reply", b"\x01" + END + b"\x03" + varint(3) + b"".join(cids[:3]) + varint(bits) + bitmap)
mid = b"\x80"  # bound: the value 0x80 00 .. 00
put(
    "sync_codec",
    "split",
    b"\x01" + b"\x01" + mid + b"\x01" + bytes(16) + END + b"\x01" + bytes(range(16)),
)
put(
    "sync_codec",
    "skip-then-items",
    b"\x01" + b"\x01" + mid + b"\x00" + END + b"\x02" + varint(2)
    + b"".join(c for c in cids if c[0] >= 0x80)[:64],
)

# -- sync_frame: /didmesh/sync/1 bodies (did-core/src/sync_frame.rs) -------
# First byte: 0 = request, 1 = response; then the body.
put("sync_frame", "request-reconcile", b"\x00\x01" + b"\x01")
put("sync_frame", "request-fetch", b"\x00\x02" + (3).to_bytes(2, "big") + b"".join(cids[:3]))
op = bytes.fromhex(vectors[0]["op_bytes_hex"])
put("sync_frame", "response-ops", b"\x01\x02" + (2).to_bytes(2, "big")
    + b"".join(len(o).to_bytes(4, "big") + o for o in [op, b"{}"]))
put("sync_frame", "response-busy", b"\x01\x03")
put("sync_frame", "response-reconcile", b"\x01\x01\x01")

# -- token_parse: EdDSA JWTs for the fuzz fixture (seed [7; 32], kid fuzz-key)
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    def jwt(header, claims, sign=True):
        h = b64(json.dumps(header, separators=(",", ":")).encode())
        p = b64(json.dumps(claims, separators=(",", ":")).encode())
        s = b64(key.sign(f"{h}.{p}".encode())) if sign else ""
        return f"{h}.{p}.{s}"

    claims = {"iss": "https://issuer.fuzz.invalid", "sub": "did:mesh:aaaa", "aud": "fuzz-app",
              "iat": 1700000000, "nbf": 1700000000, "exp": 4102444800, "jti": "j1",
              "auth_time": 1700000000, "amr": ["swk"]}
    good = {"typ": "JWT", "alg": "EdDSA", "kid": "fuzz-key"}
    put("token_parse", "valid", jwt(good, claims))
    put("token_parse", "expired", jwt(good, dict(claims, exp=1700000001)))
    put("token_parse", "other-aud", jwt(good, dict(claims, aud="other")))
    put("token_parse", "aud-array", jwt(good, dict(claims, aud=["fuzz-app"])))
    put("token_parse", "alg-none", jwt({"alg": "none", "kid": "fuzz-key"}, claims, sign=False))
    put("token_parse", "hs256", jwt({"alg": "HS256", "kid": "fuzz-key"}, claims))
    put("token_parse", "crit", jwt(dict(good, crit=["exp"]), claims))
    put("token_parse", "no-kid", jwt({"alg": "EdDSA"}, claims))
    put("token_parse", "unknown-kid", jwt(dict(good, kid="other"), claims))
except ImportError:
    print("python cryptography missing: token seeds kept as they are", file=sys.stderr)
put("token_parse", "dots", "..")

# -- wallet_parse: files written by the real binary ------------------------
if len(sys.argv) > 1:
    with tempfile.TemporaryDirectory() as d:
        w = os.path.join(d, "w.json")
        env = dict(os.environ, DIDMESH_PASSPHRASE="fuzz passphrase", DIDMESH_KDF_FAST="1")
        subprocess.run([sys.argv[1], "--wallet", w, "wallet", "init", "--seed-hex", "07" * 32],
                       env=env, check=True, capture_output=True)
        data = open(w, "rb").read()
        put("wallet_parse", "v2-weak", data)
        v = json.loads(data)
        put("wallet_parse", "v2-compact", json.dumps(v, separators=(",", ":")))
        v["public"]["did"] = {"did": "did:mesh:aaaa", "node": "http://n", "created_at": 1, "deactivated": False}
        v["public"]["previous_dids"] = [v["public"]["did"]]
        v["public"]["node"] = "http://n"
        put("wallet_parse", "v2-with-did", json.dumps(v))
        v1 = dict(v, version=1)
        del v1["weak"], v1["key_check"]
        put("wallet_parse", "v1", json.dumps(v1))
        put("wallet_parse", "huge-kdf", json.dumps(dict(v, kdf=dict(v["kdf"], m_cost_kib=4194304))))
        put("wallet_parse", "version-3", json.dumps(dict(v, version=3)))
