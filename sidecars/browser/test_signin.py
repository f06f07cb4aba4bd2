"""Sign in with didmesh from a browser, end to end (issue 9's browser test).

A real network (testkit/mesh.py: two member nodes on loopback replicating
over libp2p, the Envoy front door as the issuer http://localhost:<door>), a
relying party registered on the ledger with the `didmesh` CLI, the Flask
home app signing people in with Authlib (sidecars/flask/signin.py), and
headless Chromium with a virtual WebAuthn authenticator clicking through
the node's sign-in page by its data-testids:

* passkey: open the app, sign in, create a DID with a passkey on node 1,
  land back signed in; sign out; sign in again at node 2 with the same
  passkey; a second browser profile, whose authenticator holds no passkey,
  cannot;
* browser key: create a DID held by the browser, land back signed in;
  sign out; sign in again with the browser key;
* CLI wallet: a DID of a `didmesh` wallet, the page's code approved with
  `didmesh approve CODE --node URL --yes`.

Run: `.venv/bin/python -m pytest sidecars/browser` (needs target/debug
binaries: cargo build -p didmesh-node -p didmesh-client; and Debian's
chromium + chromium-driver)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browserkit import PAGE_DIR, require_browser
from testkit.mesh import Mesh, session
from testkit.procs import Child, free_port

SIDECARS_FLASK = Path(__file__).resolve().parents[1] / "flask"
WAIT = 30  # seconds for a page step (debug builds, two cores, a passkey, a round trip through the door)


def tid(name: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, f'[data-testid="{name}"]')


class World:
    """The network, the relying party's registration and the Flask app."""

    def __init__(self, mesh: Mesh, app_url: str, app: Child, client):
        self.mesh, self.app_url, self.app, self.client = mesh, app_url, app, client

    def logs(self) -> str:
        out = [f"--- flask\n{self.app.log_tail(30)}"]
        for i, n in enumerate(self.mesh.nodes, start=1):
            out.append(f"--- node{i}\n{n.child.log_tail(30)}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    require_browser()  # before minutes of setup: fail at once, naming the packages
    work = tmp_path_factory.mktemp("mesh")
    with Mesh(work, nodes=2) as mesh:
        app_port = free_port()
        app_url = f"http://localhost:{app_port}"
        redirect_uri = f"{app_url}/auth/callback"
        rp = mesh.wallet("rp")
        rp.create_did(mesh.nodes[0].url)
        client = rp.register_client("Home activities", [redirect_uri], confidential=True, id_token_alg="RS256")
        mesh.wait_replicated()
        app = Child(
            [sys.executable, str(SIDECARS_FLASK / "home_app.py"), "--listen", f"127.0.0.1:{app_port}",
             "--issuer", mesh.issuer, "--audience", "home-api",
             "--jwks-uri", f"{mesh.issuer}/.well-known/jwks.json",
             "--oidc-client-id", client.client_id, "--oidc-redirect-uri", redirect_uri,
             "--oidc-id-token-alg", "RS256"],
            work / "flask.log",
            env={"DIDMESH_OIDC_CLIENT_SECRET": client.client_secret},
        )
        try:
            app.wait_http(f"http://127.0.0.1:{app_port}/", timeout=30, status=200)
            yield World(mesh, app_url, app, client)
        finally:
            app.stop()


def wait(driver, world: World, condition, what: str):
    """WebDriverWait that fails with where the browser is, what it shows, and the logs."""
    try:
        return WebDriverWait(driver, WAIT).until(condition)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text[:800] if driver.find_elements(By.TAG_NAME, "body") else ""
        pytest.fail(f"{what}: not within {WAIT} s {page_failure(driver, world)}\npage text: {body}", pytrace=False)


def start_sign_in(driver, world: World, node_index: int | None = None):
    """App home page -> "Sign in with didmesh" -> the sign-in page, served by
    the front door (the issuer) or, with `node_index`, by that node directly."""
    driver.get(world.app_url + "/")
    wait(driver, world, EC.element_to_be_clickable(tid("signin")), "the app's sign-in link").click()
    origins = [world.mesh.issuer] + [n.url for n in world.mesh.nodes]
    wait(driver, world, lambda d: any(d.current_url.startswith(o + "/oidc/authorize?") for o in origins),
         "the app sends the browser to the authorization endpoint")
    # The same request at the origin the test wants: every node, and the
    # front door in front of them, serves the whole issuer.
    origin = world.mesh.issuer if node_index is None else world.mesh.nodes[node_index].url
    if not driver.current_url.startswith(origin + "/"):
        parts = urlsplit(driver.current_url)
        driver.get(f"{origin}{parts.path}?{parts.query}")
    wait(driver, world, EC.visibility_of_element_located(tid("signin-passkey")), "the sign-in page")
    assert driver.find_element(*tid("client-name")).text == "Home activities"
    assert driver.find_element(*tid("redirect-target")).text == world.client.redirect_uris[0]
    # The node's CSP (script-src 'self') let the page run without a violation.
    csp = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert csp == [], csp


def page_failure(driver, world: World) -> str:
    errors = driver.find_elements(*tid("error")) + driver.find_elements(*tid("signin-error"))
    shown = " | ".join(e.text for e in errors if e.is_displayed())
    return f"at {driver.current_url}: {shown or '(no error shown)'}\n{world.logs()}"


def wait_signed_in(driver, world: World) -> str:
    """Until the app's home page shows a signed-in DID; returns it."""
    wait(driver, world, lambda d: d.current_url.rstrip("/") == world.app_url and d.find_elements(*tid("signed-in-did")),
         "signed in at the app")
    did = driver.find_element(*tid("signed-in-did")).text
    assert did.startswith("did:mesh:")
    # The app's personal part shows for the signed-in DID.
    assert driver.find_elements(*tid("activity-private"))
    return did


def sign_out(driver):
    driver.find_element(*tid("signout")).click()
    WebDriverWait(driver, WAIT).until(EC.visibility_of_element_located(tid("signin")))
    assert not driver.find_elements(*tid("signed-in-did"))


def read_recovery_words_and_continue(driver) -> list[str]:
    words_css = '[data-testid="recovery-words"] li'
    WebDriverWait(driver, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, words_css)) == 32)
    words = [li.text for li in driver.find_elements(By.CSS_SELECTOR, words_css)]
    driver.find_element(*tid("continue")).click()
    return words


def passkey_did(driver) -> str:
    """The DID the virtual authenticator's one passkey belongs to (its user handle)."""
    creds = driver.get_credentials()
    assert len(creds) == 1, creds
    return base64.urlsafe_b64decode(creds[0].user_handle).decode()


def test_passkey_sign_up_on_node1_sign_in_on_node2_and_not_without_the_passkey(world, browsers):
    mesh = world.mesh
    alice = browsers.new(authenticator=True)

    # Sign up: a DID with a passkey, made at node 1.
    start_sign_in(alice, world, node_index=0)
    assert "node1" in alice.find_element(*tid("node-name")).text
    alice.find_element(*tid("create-passkey")).click()
    read_recovery_words_and_continue(alice)
    did = wait_signed_in(alice, world)
    assert did == passkey_did(alice)

    sign_out(alice)

    # Sign in again at node 2, with the same passkey (usernameless).
    mesh.wait_replicated()
    start_sign_in(alice, world, node_index=1)
    assert "node2" in alice.find_element(*tid("node-name")).text
    alice.find_element(*tid("signin-passkey")).click()
    assert wait_signed_in(alice, world) == did

    # Another browser profile: its authenticator holds no passkey.
    mallory = browsers.new(authenticator=True)
    start_sign_in(mallory, world, node_index=1)
    mallory.find_element(*tid("signin-passkey")).click()
    error = WebDriverWait(mallory, WAIT).until(EC.visibility_of_element_located(tid("error")))
    assert "No passkey was used" in error.text
    assert mallory.current_url.startswith(mesh.nodes[1].url + "/oidc/authorize?")
    mallory.get(world.app_url + "/")
    assert mallory.find_elements(*tid("signin")) and not mallory.find_elements(*tid("signed-in-did"))


@pytest.mark.parametrize("node_index", [None, 0], ids=["front-door", "node1"])
def test_browser_key_sign_up_and_sign_in_again(world, browsers, node_index):
    """Through the front door the page's origin is the issuer and its JSON
    calls (ops included) go cross-origin to the serving node's node_url."""
    bob = browsers.new(authenticator=False)
    start_sign_in(bob, world, node_index)
    bob.find_element(*tid("create-browser-key")).click()
    words = read_recovery_words_and_continue(bob)
    assert len(set(words)) > 1
    did = wait_signed_in(bob, world)

    sign_out(bob)

    # Same origin, so the same IndexedDB and key; whichever node the door
    # picks knows the DID once the ledgers agree.
    world.mesh.wait_replicated()
    start_sign_in(bob, world, node_index)
    assert did in bob.find_element(*tid("browser-did")).text
    bob.find_element(*tid("signin-browser-key")).click()
    assert wait_signed_in(bob, world) == did


def test_cli_wallet_approves_a_browser_sign_in(world, browsers):
    carol = world.mesh.wallet("carol")
    did = carol.create_did(world.mesh.nodes[0].url)
    world.mesh.wait_replicated()
    browser = browsers.new(authenticator=False)
    start_sign_in(browser, world, node_index=1)
    field = browser.find_element(*tid("did-input"))
    field.clear()
    field.send_keys(did)
    browser.find_element(*tid("start-approve")).click()
    code = WebDriverWait(browser, WAIT).until(EC.visibility_of_element_located(tid("approve-code"))).text
    node_url = world.mesh.nodes[1].url
    assert browser.find_element(*tid("approve-command")).text == f"didmesh approve {code} --node {node_url}"
    carol.cli("approve", code, "--node", node_url, "--yes")  # as the page tells the person
    assert wait_signed_in(browser, world) == did


def test_the_front_door_serves_the_page_under_a_strict_csp(world):
    """No inline script can run on the page (CSP script-src 'self'), and the
    page's own script and style are what the node serves."""
    http = session()
    # A request the node accepts: the registered client and redirect URI, PKCE.
    r = http.get(
        world.mesh.issuer + "/oidc/authorize",
        params={"response_type": "code", "client_id": world.client.client_id, "scope": "openid",
                "redirect_uri": world.client.redirect_uris[0], "state": "s", "nonce": "n",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"},
        timeout=10, allow_redirects=False,
    )
    assert r.status_code == 200, r.text[:500]
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert "{{" not in r.text, "every marker filled"
    for asset in ("signin.js", "signin.css"):
        a = http.get(world.mesh.issuer + "/oidc/static/" + asset, timeout=10)
        assert a.status_code == 200
        assert a.content == (PAGE_DIR / asset).read_bytes(), f"{asset} is the file in node/src/oidc/page"
