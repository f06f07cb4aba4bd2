"""Sign in with an external OpenID provider from the sign-in page, in a real
browser (issue 10): "Continue with NAME", the provider's login, the node's
not-linked page, "create a DID in this browser and link it", and back.

A real network (testkit/mesh.py: two member nodes, the Envoy front door as
the issuer) whose nodes read a providers file naming a real OpenID provider
(sidecars/federation/provider.js: panva's oidc-provider, RS256, with a
non-interactive login that signs in the account the test set with
`POST /test/account`), the Flask home app signing people in with Authlib,
and headless Chromium clicking through by data-testid:

* open the app, sign in, at node 1 `continue-with-acme` → the provider signs
  in an account no DID links → the node's `not-linked` page →
  `create-and-link` → the sign-in page explains the offer →
  `create-and-link` → recovery words → `continue` → back in the app signed
  in as the new DID, whose ledger state now holds the link (provider and
  commitment, never the account's subject);
* sign out; at node 2 (which only got the ops over libp2p)
  `continue-with-acme` → straight back in the app as the same DID, through
  the provider (node 2's log) — no key of this browser involved;
* a second browser profile signed in at the provider as another account
  gets the not-linked page, not the first account's DID.

Run: `.venv/bin/python -m pytest sidecars/browser/test_federation_page.py`
(needs target/debug binaries, Debian's chromium + chromium-driver, and
`bash sidecars/setup.sh` for sidecars/federation/node_modules)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from browserkit import require_browser
from federation.conftest import Provider, node_binary
from testkit.mesh import Mesh, session
from testkit.procs import free_port
from test_signin import read_recovery_words_and_continue, sign_out, start_sign_in, tid, wait, wait_signed_in


@dataclass
class FedWorld:
    """What test_signin's helpers read (mesh, app_url, client, logs()) and
    the provider."""

    mesh: Mesh
    app_url: str
    client: object
    provider: Provider

    def logs(self) -> str:
        out = []
        for i, n in enumerate(self.mesh.nodes, start=1):
            out.append(f"--- node{i}\n{n.child.log_tail(30)}")
        if self.provider.child:
            out.append(f"--- provider\n{self.provider.child.log_tail(20)}")
        for log in sorted(self.mesh.logs.glob("signin-app-*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(out)

    def set_account(self, sub: str) -> None:
        """The account provider.js's next login signs in."""
        r = session().post(self.provider.issuer + "/test/account", json={"sub": sub}, timeout=5)
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def fed_world(tmp_path_factory):
    require_browser()
    node_binary()  # fail before anything starts when Node.js or oidc-provider is missing
    work = tmp_path_factory.mktemp("fedpage")
    provider = Provider("acme", "Acme", "RS256", free_port(), work, client_id="didmesh-acme",
                        client_secret=secrets.token_urlsafe(32))
    providers_toml = work / "providers.toml"
    providers_toml.write_text(provider.toml(None))
    with Mesh(work / "mesh", nodes=2, node_args=("--providers", providers_toml)) as mesh:
        try:
            # Each node has its own callback (state is kept where the flow began).
            provider.redirect_uris = [f"{n.url}/federation/acme/callback" for n in mesh.nodes]
            provider.start()
            rp = mesh.wallet("rp")
            rp.create_did(mesh.nodes[0].url)
            app_url, client = mesh.signin_app(rp)
            yield FedWorld(mesh, app_url.rstrip("/"), client, provider)
        finally:
            provider.stop()


def continue_with_acme(driver, world: FedWorld) -> None:
    button = wait(driver, world, EC.element_to_be_clickable(tid("continue-with-acme")), "the Continue with Acme button")
    assert button.text == "Continue with Acme"
    button.click()


def did_log(world: FedWorld, node: int, did: str) -> list[dict]:
    """The DID's ops as node `node` holds them (GET /v1/dids/DID/log)."""
    r = session().get(f"{world.mesh.nodes[node].addr}/v1/dids/{did}/log", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["ops"]


def test_continue_with_a_provider_create_and_link_then_sign_in_at_the_other_node(fed_world, browsers):
    world, mesh = fed_world, fed_world.mesh
    account = "acct-" + secrets.token_hex(8)
    world.set_account(account)
    dana = browsers.new(authenticator=False)

    # At node 1: the provider signs in an account no DID links yet.
    start_sign_in(dana, world, node_index=0)
    assert dana.find_element(*tid("federation")).is_displayed()
    assert not dana.find_element(*tid("fed-offer")).is_displayed()
    continue_with_acme(dana, world)
    not_linked = wait(dana, world, EC.visibility_of_element_located(tid("not-linked")), "the node's not-linked page")
    assert dana.current_url.startswith(mesh.nodes[0].url + "/federation/acme/callback?"), dana.current_url
    assert "Acme" in not_linked.text and "No new identity was created" in not_linked.text
    assert not dana.find_elements(*tid("signed-in-did"))

    # Its create-and-link leads back to the sign-in page, which explains the offer.
    dana.find_element(*tid("create-and-link")).click()
    explanation = wait(dana, world, EC.visibility_of_element_located(tid("fed-explanation")), "the link offer")
    assert dana.current_url.startswith(mesh.nodes[0].url + "/oidc/authorize?"), dana.current_url
    assert explanation.text == ("Your account at Acme is not linked to a DID yet. "
                                "Create a DID in this browser and link it?")
    assert dana.find_element(*tid("client-name")).text == "Home activities"
    dana.find_element(*tid("create-and-link")).click()
    words = read_recovery_words_and_continue(dana)
    assert len(words) == 32
    did = wait_signed_in(dana, world)

    # The DID holds the link: an update by the browser key after the create,
    # naming the provider and a commitment, never the account's subject.
    ops = did_log(world, 0, did)
    assert sorted(e["op"]["type"] for e in ops) == ["create", "update"], ops  # the log is not in op order
    (create,) = [e for e in ops if e["op"]["type"] == "create"]
    (update,) = [e for e in ops if e["op"]["type"] == "update"]
    assert update["winning"], ops
    assert update["op"]["prev"] == create["cid"]
    assert update["op"]["signer"] == create["op"]["state"]["rotation_keys"][1]  # the browser key
    (link,) = update["op"]["state"]["links"]
    assert (link["id"], link["provider"]) == ("acme", "acme"), link
    assert len(link["commitment"]) == 43 and link["attested_by"] and link["attestation"]
    assert account not in str(ops), "the provider subject is on the ledger in the clear"

    sign_out(dana)

    # At node 2, which got the ops over libp2p: straight back in, no key used.
    mesh.wait_replicated()
    start_sign_in(dana, world, node_index=1)
    assert "node2" in dana.find_element(*tid("node-name")).text
    continue_with_acme(dana, world)
    assert wait_signed_in(dana, world) == did
    # Node 2 signed the browser in through the provider (its log says so;
    # the ID token's amr is `fed`, which the node tests and the federation
    # sidecar check on the token itself).
    node2_log = (mesh.logs / "node2.log").read_text(errors="replace")
    assert "federated sign-in (page)" in node2_log, world.logs()

    # Another browser, another account at the provider: not this DID.
    world.set_account("acct-" + secrets.token_hex(8))
    eve = browsers.new(authenticator=False)
    start_sign_in(eve, world, node_index=1)
    continue_with_acme(eve, world)
    wait(eve, world, EC.visibility_of_element_located(tid("not-linked")), "the not-linked page for another account")
    eve.get(world.app_url + "/")
    assert eve.find_elements(*tid("signin")) and not eve.find_elements(*tid("signed-in-did"))
    assert not eve.find_elements(By.XPATH, f"//*[contains(text(), '{did}')]")
