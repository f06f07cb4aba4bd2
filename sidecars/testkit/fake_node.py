"""A stand-in for didmesh-node's token side, for the sidecar tests only.

It does what a relying party sees of a node: a member key written as
`<data-dir>/member-key.pem` (PKCS#8 PEM, as the node writes it), the JWKS at
`/.well-known/jwks.json`, the discovery document, and tokens with the node's
header and claims. HTTP or HTTPS (with a certificate from local-ca.sh). The
set of published keys can be changed while it runs, to test key rotation and
member removal, and it counts JWKS fetches, to see when a verifier refetches.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interop import jose


def random_did() -> str:
    # Shape of a did:mesh id (lowercase base32 of 16 bytes); not derived from an op here.
    return "did:mesh:" + base64.b32encode(os.urandom(16)).decode("ascii").rstrip("=").lower()


class FakeNode:
    def __init__(self, data_dir: Path, issuer: str, audience: str, tls_dir: Path | None = None):
        self.issuer = issuer
        self.audience = audience
        self.member_key = Ed25519PrivateKey.generate()
        self.member_key_path = Path(data_dir) / "member-key.pem"
        jose.write_member_key(self.member_key, self.member_key_path)
        self.published = [self.member_key]  # keys listed in the JWKS, in order
        self.jwks_fetches = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls_dir is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_dir / "node.pem", tls_dir / "node-key.pem")
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-node", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        # "localhost" so that TLS checks the name against the certificate's SAN.
        host = "localhost" if self.scheme == "https" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    @property
    def kid(self) -> str:
        return jose.jwk_thumbprint(self.member_key)

    def start(self) -> "FakeNode":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def publish(self, *keys: Ed25519PrivateKey) -> None:
        """Replace the keys the JWKS lists (a member added or removed)."""
        with self._lock:
            self.published = list(keys)

    def jwks(self) -> dict:
        with self._lock:
            return {"keys": [jose.public_jwk(k) for k in self.published]}

    def mint(self, sub: str | None = None, *, key: Ed25519PrivateKey | None = None, ttl: int = 300, **claims) -> str:
        """A token as the node issues it (claims can be overridden): the claim
        set of `did_core::Claims::for_login` — `jti` 16 random bytes in hex,
        `amr` ["swk"] (RFC 8176, software-held key)."""
        key = key or self.member_key
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "sub": sub or random_did(),
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": os.urandom(16).hex(),
            "auth_time": now,
            "amr": ["swk"],
        }
        body.update(claims)
        return jose.sign_eddsa({"alg": "EdDSA", "typ": "JWT", "kid": jose.jwk_thumbprint(key)}, body, key)

    def _handler(self):
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/jwks.json":
                    with node._lock:
                        node.jwks_fetches += 1
                    self._json(200, node.jwks())
                elif self.path == "/.well-known/openid-configuration":
                    self._json(200, {
                        "issuer": node.issuer,
                        "jwks_uri": node.jwks_uri,
                        "id_token_signing_alg_values_supported": ["EdDSA"],
                    })
                elif self.path == "/healthz":
                    self._json(200, {"status": "ok"})
                else:
                    self._json(404, {"error": "not_found", "reason": self.path})

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        return Handler
