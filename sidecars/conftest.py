"""Fixtures shared by the sidecar suites: a local CA, a stand-in node, a
stand-in upstream. Everything binds to 127.0.0.1 and is stopped at teardown."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testkit.fake_node import FakeNode
from testkit.upstream import StandInUpstream

SIDECARS = Path(__file__).resolve().parent
ISSUER = "https://didmesh.local"
AUDIENCE = "home-api"


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory) -> Path:
    """ca.pem, node.pem, node-key.pem from testkit/local-ca.sh."""
    out = tmp_path_factory.mktemp("tls")
    subprocess.run([str(SIDECARS / "testkit" / "local-ca.sh"), str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> FakeNode:
    """Stand-in node serving its JWKS over plain HTTP."""
    fake = FakeNode(tmp_path_factory.mktemp("node"), ISSUER, AUDIENCE).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory, tls_dir) -> FakeNode:
    """Stand-in node serving its JWKS over HTTPS (certificate from the local CA)."""
    fake = FakeNode(tmp_path_factory.mktemp("node"), ISSUER, AUDIENCE, tls_dir=tls_dir).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def upstream() -> StandInUpstream:
    server = StandInUpstream().start()
    yield server
    server.stop()
