"""The matrix's own tests: the JOSE helpers against RFC 8037's vectors, each
variant is what it says, and the runner flags a verifier that lets junk in."""

from __future__ import annotations

import hashlib
import hmac
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from werkzeug.serving import make_server

from interop import fleet, jose, matrix

sys.path.insert(0, str(Path(__file__).parent.parent / "flask"))
import home_app  # noqa: E402


def test_thumbprint_matches_rfc8037_appendix_a3():
    public = Ed25519PublicKey.from_public_bytes(jose.b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"))
    assert jose.jwk_thumbprint(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_member_key_pem_round_trip(tmp_path):
    key = Ed25519PrivateKey.generate()
    jose.write_member_key(key, tmp_path / "member-key.pem")
    assert (tmp_path / "member-key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert jose.raw_public(jose.load_member_key(tmp_path / "member-key.pem")) == jose.raw_public(key)


@pytest.fixture
def inputs(node) -> matrix.Inputs:
    return matrix.Inputs.load(node.mint("did:mesh:alice"), node.member_key_path, node.issuer, node.audience)


def verifies(token: str, key) -> bool:
    signing_input, _, signature = token.rpartition(".")
    try:
        key.public_key().verify(jose.b64url_decode(signature), signing_input.encode())
        return True
    except InvalidSignature:
        return False


def test_variants_are_what_they_say(inputs):
    member, kid = inputs.member_key, inputs.member_kid
    now = time.time()

    header, claims, _ = jose.split(matrix.expired(inputs))
    assert claims["exp"] < now - 600 and header["kid"] == kid and verifies(matrix.expired(inputs), member)

    tampered = matrix.tampered_signature(inputs)
    assert tampered.rsplit(".", 1)[0] == inputs.valid_token.rsplit(".", 1)[0] and not verifies(tampered, member)

    for make, field, value in [(matrix.wrong_audience, "aud", "not-home-api"),
                               (matrix.wrong_issuer, "iss", "https://not-didmesh.invalid")]:
        token = make(inputs)
        assert jose.split(token)[1][field] == value and verifies(token, member)

    token = matrix.unknown_kid(inputs)
    assert jose.split(token)[0]["kid"] != kid and verifies(token, member)

    assert matrix.alg_none(inputs).endswith(".") and jose.split(matrix.alg_none(inputs))[0]["alg"] == "none"

    for make, secret in [(matrix.hs256_public_key, jose.public_pem(member)),
                         (matrix.hs256_raw_public_key, jose.raw_public(member))]:
        token = make(inputs)
        signing_input, _, mac = token.rpartition(".")
        assert jose.b64url_decode(mac) == hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    token = matrix.foreign_key_member_kid(inputs)
    assert jose.split(token)[0]["kid"] == kid and not verifies(token, member)
    token = matrix.foreign_key_own_kid(inputs)
    assert jose.split(token)[0]["kid"] != kid and not verifies(token, member)

    # Re-signed variants keep the user, so they fail for their one reason only.
    for v in matrix.VARIANTS:
        token = v.make(inputs)
        if token is not None:
            assert jose.split(token)[1]["sub"] == "did:mesh:alice", v.name


@pytest.fixture(scope="module")
def flask_url(node):
    server = make_server("127.0.0.1", 0, home_app.create_app(node.issuer, node.audience, node.jwks_uri), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/activities/home"
    server.shutdown()


def cli_args(node, tmp_path, *verifiers: str) -> list[str]:
    token_file = tmp_path / "token"
    token_file.write_text(node.mint("did:mesh:alice") + "\n")
    return ["--token-file", str(token_file), "--member-key", str(node.member_key_path),
            "--issuer", node.issuer, "--audience", node.audience, "--json", str(tmp_path / "m.json"), *verifiers]


def test_runner_passes_a_correct_verifier(node, flask_url, tmp_path, capsys):
    assert matrix.main(cli_args(node, tmp_path, f"flask={flask_url}")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["verifier", "valid", "none"]
    assert f"matrix: {len(matrix.VARIANTS)} passed, 0 failed" in out


def test_runner_fails_on_a_verifier_that_lets_junk_in(node, flask_url, upstream, tmp_path, capsys):
    # The stand-in upstream reached directly: it ignores Authorization, so
    # every bad token gets the public view (200) instead of a 401.
    naked = f"{upstream.url}/api/activities/home"
    assert matrix.main(cli_args(node, tmp_path, f"flask={flask_url}", f"naked={naked}")) == 1
    out = capsys.readouterr().out
    naked_row = next(line for line in out.splitlines() if line.startswith("naked"))
    assert "200!user≠" in naked_row  # valid token, but no user: claims were not passed
    assert naked_row.count("200≠") == len(matrix.VARIANTS) - 2
    assert "failed" in out and ", 0 failed" not in out


def test_runner_reports_an_unreachable_verifier(node, tmp_path, capsys):
    assert matrix.main(cli_args(node, tmp_path, "gone=http://127.0.0.1:9/api/activities/home")) == 1
    assert "ERR≠" in capsys.readouterr().out


def test_all_three_verifiers_pass_the_matrix(tls_node, tls_dir, upstream, tmp_path):
    """The whole matrix through the fleet (Envoy, aws-jwt-verify, Flask),
    JWKS over https from the stand-in node: what the real run will do."""
    running = fleet.start(upstream=upstream.url, issuer=tls_node.issuer, audience=tls_node.audience,
                          jwks_uri=tls_node.jwks_uri, jwks_ca=tls_dir / "ca.pem", log_dir=tmp_path)
    try:
        inputs = matrix.Inputs.load(tls_node.mint("did:mesh:alice"), tls_node.member_key_path,
                                    tls_node.issuer, tls_node.audience)
        results = matrix.run({name: url for name, (_, url) in running.items()}, inputs)
        print(matrix.render(results))
        assert matrix.mismatches(results) == 0, matrix.render(results)
        assert list(results) == ["envoy", "aws-jwt-verify", "flask"]
    finally:
        fleet.stop(running)
