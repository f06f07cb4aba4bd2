"""Stand-in for `home-api --auth sidecar --trusted-header x-jwt-payload`.

Used ONLY by the per-sidecar tests (Envoy, aws-jwt-verify), until the Rust
home-api binary exists; the interop matrix runs against the real home-api.

Like the real one in sidecar mode, it trusts the claims in `x-jwt-payload`
(base64url, no padding, of the JSON payload: what Envoy's jwt_authn
`forward_payload_header` sends) and answers `GET /api/activities/home` with the
public activities, plus the caller's private one and `"user"` when claims came.
It also echoes what it received under `"seen"`, so a test can check that a
client-sent `x-jwt-payload` never got through and that the token was not
forwarded.

    python -m testkit.upstream --listen 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from interop import jose

TRUSTED_HEADER = "x-jwt-payload"
PUBLIC = [
    {"id": "pub-1", "title": "Community garden open day", "visibility": "public"},
    {"id": "pub-2", "title": "Street market on Saturday", "visibility": "public"},
]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/api/activities/home":
            return self._json(404, {"error": "not_found", "reason": self.path})
        # Every value the header arrived with, and any spelling of it, so a
        # test can see a smuggled copy (e.g. x_jwt_payload) that got through.
        raw = [v for k, v in self.headers.items() if k.lower().replace("_", "-") == TRUSTED_HEADER]
        seen = {
            "x-jwt-payload": raw,
            "authorization": self.headers.get("Authorization"),
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        body = {"activities": list(PUBLIC), "seen": seen}
        if len(raw) > 1:
            return self._json(400, {"error": "invalid_request", "reason": "x-jwt-payload repeated", "seen": seen})
        if raw:
            try:
                claims = json.loads(jose.b64url_decode(raw[0]))
            except ValueError:
                return self._json(400, {"error": "invalid_request", "reason": "x-jwt-payload unreadable", "seen": seen})
            body["user"] = claims["sub"]
            body["claims"] = claims
            body["activities"].append(
                {"id": f"private-{claims['sub']}", "title": "Your plans for tonight", "visibility": "private"}
            )
        self._json(200, body)

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class StandInUpstream:
    """The stand-in served from a thread, on a free loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-upstream", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandInUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default %(default)s)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"stand-in home-api on http://{args.listen}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
