"""A stand-in for the node's page serving, to test the sign-in page on its own.

`PageServer` serves node/src/oidc/page/ the way a node does (GET
/oidc/authorize fills the request marker, GET /oidc/static/signin.{js,css},
the same strict CSP) on http://localhost:PORT, and forwards the ledger
calls the page makes (POST /v1/ops, GET /1.0/identifiers/…) to a real node,
remembering every answer. The OpenID endpoints answer 404 `{error, reason}`:
what the page does with them is the full test's business (test_signin.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

PAGE_DIR = Path(__file__).resolve().parents[2] / "node" / "src" / "oidc" / "page"
MARKER = "{{REQUEST_JSON}}"


def script_safe_json(value) -> str:
    """JSON that cannot close the script element it sits in."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def default_request(url: str) -> dict:
    """What a node puts in the page; `node_url` is the stand-in itself."""
    return {
        "request": "test-request-handle",
        "client_id": "abc.app",
        "client_name": "Test </script> app",
        "redirect_uri": "http://localhost:9/callback",
        "node_url": url,
        "node_name": "node-test",
        "rp_id": "localhost",
        "network_id": "mesh-test",
        "login_hint": None,
        "cancel_url": "http://localhost:9/callback?error=access_denied",
    }


class PageServer:
    def __init__(self, node_url: str | None = None, request: dict | None = None, raw_html: str | None = None,
                 answers: dict | None = None):
        self.node_url = node_url
        # Canned JSON answers by path (stand-ins for the OpenID endpoints).
        self.answers = answers or {}
        self.request_overrides = request or {}
        self.raw_html = raw_html
        self.ops: list[dict] = []  # answers of POST /v1/ops, in order
        self.calls: list[tuple[str, str]] = []
        self.posted: list[tuple[str, object]] = []  # (path, JSON body) of every POST, in order
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        # localhost, not 127.0.0.1: WebAuthn refuses IP addresses as RP IDs.
        self.url = f"http://localhost:{self.port}"

    def request(self) -> dict:
        return {**default_request(self.url), **self.request_overrides}

    def html(self) -> str:
        if self.raw_html is not None:
            return self.raw_html
        return (PAGE_DIR / "signin.html").read_text().replace(MARKER, script_safe_json(self.request()))

    def start(self) -> "PageServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        kit = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, value):
                self._send(status, json.dumps(value).encode(), "application/json")

            def do_GET(self):
                kit.calls.append(("GET", self.path))
                path = self.path.split("?", 1)[0]
                if path in kit.answers:
                    self._json(200, kit.answers[path])
                elif path == "/oidc/authorize":
                    # The CSP the node sends (oidc-spec.md, Part B): no inline script or style.
                    csp = "default-src 'self'; connect-src 'self'; frame-ancestors 'none'"
                    self._send(200, kit.html().encode(), "text/html; charset=utf-8",
                               {"Content-Security-Policy": csp, "X-Frame-Options": "DENY"})
                elif path in ("/oidc/static/signin.js", "/oidc/static/signin.css"):
                    name = path.rsplit("/", 1)[1]
                    ctype = "text/javascript" if name.endswith(".js") else "text/css"
                    self._send(200, (PAGE_DIR / name).read_bytes(), ctype + "; charset=utf-8")
                elif path.startswith("/1.0/identifiers/") and kit.node_url:
                    self._forward("GET", None)
                else:
                    self._json(404, {"error": "not_found", "reason": f"the page harness has no {path}"})

            def do_POST(self):
                kit.calls.append(("POST", self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    kit.posted.append((self.path, json.loads(body or b"null")))
                except ValueError:
                    kit.posted.append((self.path, body))
                if self.path in kit.answers:
                    self._json(200, kit.answers[self.path])
                elif self.path == "/v1/ops" and kit.node_url:
                    self._forward("POST", body)
                else:
                    self._json(404, {"error": "not_here", "reason": f"the page harness has no {self.path}"})

            def _forward(self, method: str, body: bytes | None):
                s = requests.Session()
                s.trust_env = False
                r = s.request(method, kit.node_url + self.path, data=body,
                              headers={"content-type": "application/json"} if body else {}, timeout=10)
                if method == "POST" and self.path == "/v1/ops":
                    kit.ops.append({"status": r.status_code, "body": r.json(), "op": json.loads(body)})
                self._send(r.status_code, r.content, r.headers.get("content-type", "application/json"))

        return Handler
