"""The front door (Envoy, round robin over the nodes) in front of stand-in
nodes: it spreads requests, passes answers through unchanged, skips a node
that is down without the client noticing, never sends a request twice to
a node that may have seen it, and reaches a TLS node over TLS.

Starts the real Envoy through run.sh, so the template, render.py and the
launcher are what is tested. The real cluster behind it is in sidecars/oidc/.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from testkit.procs import Child, free_port

RUN_SH = Path(__file__).with_name("run.sh")


class StandInNode:
    """Answers every request with its name and what it saw; counts POSTs.
    `hang_up=True`: reads a POST, then closes the connection unanswered
    (a node that may have acted on the request)."""

    def __init__(self, name: str, tls: tuple[Path, Path] | None = None, hang_up: bool = False):
        node = self
        self.name, self.posts, self.hang_up = name, 0, hang_up
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._answer(200, {"node": node.name, "path": self.path, "host": self.headers.get("Host"),
                                   "xff": self.headers.get("X-Forwarded-For")})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with node.lock:
                    node.posts += 1
                if node.hang_up:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self._answer(201, {"node": node.name, "body": body.decode()})

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, tls))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def start_front_door(log_dir: Path, upstreams: list[str], *extra: str) -> tuple[Child, str]:
    port, admin = free_port(), free_port()
    argv = [str(RUN_SH), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    for url in upstreams:
        argv += ["--upstream", url]
    child = Child(argv + list(extra), log_dir / f"frontdoor-{port}.log")
    try:
        child.wait_http(f"http://127.0.0.1:{admin}/ready", status=200)
    except Exception:
        child.stop()
        raise
    return child, f"http://127.0.0.1:{port}"


@pytest.fixture
def http():
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


@pytest.fixture
def nodes(tls_dir):
    made = [StandInNode("a"), StandInNode("b"), StandInNode("c", tls=(tls_dir / "node.pem", tls_dir / "node-key.pem"))]
    yield made
    for n in made:
        n.stop()


def test_round_robin_over_every_node_including_a_tls_one(tmp_path, nodes, tls_dir, http):
    child, url = start_front_door(tmp_path, [n.url for n in nodes], "--upstream-ca", str(tls_dir / "ca.pem"))
    try:
        seen = Counter()
        for i in range(30):
            # A new connection each time, as many browsers and RPs would.
            with requests.Session() as fresh:
                fresh.trust_env = False  # loopback only, never a proxy from the environment
                r = fresh.get(f"{url}/oidc/authorize?i={i}", headers={"Host": "localhost:7000"}, timeout=5)
            assert r.status_code == 200, r.text
            body = r.json()
            seen[body["node"]] += 1
            # Passed through as sent: path, query and Host (the nodes build
            # no URL from Host, but an operator reading logs should see it).
            assert body["path"] == f"/oidc/authorize?i={i}" and body["host"] == "localhost:7000"
            # One address: the peer's (Envoy writes the host's own address for
            # a loopback peer).
            assert body["xff"] and "," not in body["xff"]
            xff = body["xff"]
        assert set(seen) == {"a", "b", "c"} and min(seen.values()) >= 8, seen
        # A client cannot pose as another address through X-Forwarded-For:
        # what it sent stays in front, the peer address Envoy saw is last,
        # and the last entry is the one a node may trust (xff_num_trusted_hops 0).
        r = http.get(f"{url}/x", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
        assert r.json()["xff"].split(",")[-1].strip() == xff
    finally:
        child.stop()


def test_a_node_that_is_down_is_skipped_without_an_error(tmp_path, nodes, http):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    child, url = start_front_door(tmp_path, [nodes[0].url, dead, nodes[1].url])
    try:
        answers = [http.get(f"{url}/healthz", timeout=5) for _ in range(30)]
        assert [r.status_code for r in answers] == [200] * 30
        assert {r.json()["node"] for r in answers} == {"a", "b"}
        # POSTs too: a refused connection means the node never saw the request.
        posts = [http.post(f"{url}/oidc/token", data={"code": str(i)}, timeout=5) for i in range(10)]
        assert [r.status_code for r in posts] == [201] * 10
        assert nodes[0].posts + nodes[1].posts == 10
    finally:
        child.stop()


def test_a_request_a_node_may_have_seen_is_not_sent_again(tmp_path, http):
    """POST /oidc/token redeems a single-use code: after a node read it and
    hung up, the front door must answer 5xx rather than try another node."""
    hangs, other = StandInNode("hangs", hang_up=True), StandInNode("other")
    child, url = start_front_door(tmp_path, [hangs.url, other.url])
    try:
        statuses = [http.post(f"{url}/oidc/token", data={"code": "x"}, timeout=5).status_code for _ in range(6)]
        assert hangs.posts >= 1, "round robin never reached the node that hangs up"
        assert hangs.posts + other.posts == 6, (hangs.posts, other.posts)  # no request sent twice
        assert statuses.count(503) == hangs.posts and statuses.count(201) == other.posts
    finally:
        child.stop()
        hangs.stop()
        other.stop()


def test_no_node_reachable_is_a_json_error(tmp_path, http):
    child, url = start_front_door(tmp_path, [f"http://127.0.0.1:{free_port()}"])
    try:
        r = http.get(f"{url}/.well-known/openid-configuration", timeout=10)
        assert r.status_code == 503
        assert r.json()["error"] == "front_door"
    finally:
        child.stop()


def test_render_refuses_names_and_tls_without_a_ca():
    def render(*args):
        return subprocess.run([str(RUN_SH), *args], capture_output=True, text=True,
                              env={"ENVOY_PRINT_CONFIG": "1", "PATH": "/usr/bin:/bin"})
    assert "names" in render("--upstream", "http://localhost:7001").stderr
    assert "--upstream-ca" in render("--upstream", "https://127.0.0.1:7003").stderr
    assert "at least one --upstream" in render().stderr
    ok = render("--upstream", "http://127.0.0.1:7001", "--upstream", "http://127.0.0.1:7002")
    assert ok.returncode == 0 and "num_retries: 1" in ok.stdout and "ROUND_ROBIN" in ok.stdout
