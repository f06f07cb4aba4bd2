"""One real didmesh network for the relying-party tests: two member nodes
behind the front door (testkit.mesh), an RP owner's wallet that registers
the clients, and a user whose DID key the test holds (it signs as the sign-in
page's browser key would). Started once per module, stopped at teardown."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from testkit.mesh import Client, Mesh, Wallet

REDIRECT = "http://localhost:8090/auth/callback"  # registered, never listened on: the test reads the redirect


@dataclass
class Network:
    mesh: Mesh
    rp: Wallet  # owns the clients
    user: Wallet  # signs in; .key is its Ed25519 key
    clients: dict[str, Client]  # name -> client


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Network:
    work = tmp_path_factory.mktemp("mesh")
    with Mesh(work, nodes=2) as mesh:
        rp = mesh.wallet("rp")
        rp.create_did(mesh.nodes[0].url)
        clients = {
            # the Flask app and PyJWT's RS256 check: confidential, the OIDC default alg
            "rs256": rp.register_client("Home activities", [REDIRECT], confidential=True, id_token_alg="RS256"),
            # openid-client: a public client (PKCE only) with ES256
            "es256-public": rp.register_client("Node RP", [REDIRECT], confidential=False, id_token_alg="ES256"),
            # Cognito's way in: confidential, ES256, client_secret_post
            "es256": rp.register_client("Cognito-like", [REDIRECT], confidential=True, id_token_alg="ES256"),
            "eddsa": rp.register_client("EdDSA RP", [REDIRECT], confidential=True, id_token_alg="EdDSA"),
        }
        user = mesh.wallet("user", seed=os.urandom(32))
        # Registered at node 2, so node 1 knows the DID only by replication.
        user.create_did(mesh.nodes[-1].url)
        mesh.wait_replicated()
        yield Network(mesh, rp, user, clients)
