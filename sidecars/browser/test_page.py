"""The sign-in page on its own (node/src/oidc/page/), in headless Chromium.

The page builds and signs DID ops in JavaScript; these tests hold its bytes
to did-core's: the canonical-encoding vectors (did-core/tests/vectors.json),
the PGP word list's published vectors, and a real `didmesh-node` that must
accept the create and passkey-update ops the page makes (served by the
stand-in in pagekit.py, which forwards /v1/ops to the node). What the
page does with the node's OpenID endpoints is test_signin.py's."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_private_key
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browserkit import PAGE_DIR, ROOT, require_bin
from pagekit import PageServer, default_request, script_safe_json
from testkit.procs import Child, free_port

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tid(name: str) -> tuple[str, str]:
    return (By.CSS_SELECTOR, f'[data-testid="{name}"]')


def word_lists() -> tuple[list[str], list[str]]:
    """PGP_EVEN and PGP_ODD as signin.js ships them."""
    js = (PAGE_DIR / "signin.js").read_text()
    lists = []
    for name in ("PGP_EVEN", "PGP_ODD"):
        m = re.search(name + r" = `([^`]*)`", js)
        assert m, f"{name} not found in signin.js"
        lists.append(m.group(1).split())
    return lists[0], lists[1]


@pytest.fixture
def page():
    servers = []

    def start(**kw) -> PageServer:
        s = PageServer(**kw).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One development node, no libp2p, in a fresh data folder."""
    data = tmp_path_factory.mktemp("node")
    port = free_port()
    child = Child(
        [str(require_bin("didmesh-node")), "--data-dir", str(data / "d"), "--http-addr", f"127.0.0.1:{port}", "--no-p2p"],
        data / "node.log",
        env={"RUST_LOG": "warn"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        child.wait_http(url + "/healthz", timeout=30, status=200)
        yield url
    finally:
        child.stop()


def open_page(driver, srv: PageServer):
    driver.get(srv.url + "/oidc/authorize?client_id=abc.app")
    WebDriverWait(driver, 10).until(EC.visibility_of_element_located(tid("create-browser-key")))


def test_list_words_are_the_pgp_word_list():
    even, odd = word_lists()
    assert len(even) == len(set(even)) == 256 and len(odd) == len(set(odd)) == 256
    assert not set(even) & set(odd)
    assert (even[0], odd[0], even[255], odd[255]) == ("aardvark", "adroitness", "zulu", "yucatan")


def test_page_encodings_match_did_core_and_pgp_vectors(browsers, page):
    srv = page()
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    vectors = json.loads((ROOT / "did-core" / "tests" / "vectors.json").read_text())["vectors"]
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    p256_point = p256.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    p256_compressed = p256.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    # Published PGP word list vectors (bytes -> words, lower-cased).
    pgp = [
        ("e58294f2e9a227486e8b061b31cc528fd7fa3f19",
         "topmost istanbul pluto vagabond treadmill pacific brackish dictator goldfish medusa afflict bravado "
         "chatter revolver dupont midsummer stopwatch whimsical cowbell bottomless"),
        ("d1d464c004f00fb5c9a4c8d8e433e7fb7ff56256",
         "stairway souvenir flytrap recipe adrift upcoming artist positive spearhead pandora spaniel stupendous "
         "tonic concurrent transit wichita lockup visitor flagpole escapade"),
    ]
    got = driver.execute_async_script(
        """
        const [vectors, pgp, p256Hex, done] = arguments;
        const P = window.didmeshSignin;
        const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
        const unhex = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
        const enc = (s) => new TextEncoder().encode(s);
        (async () => {
          const out = {ops: [], pgp: [], roundtrip: [], p256: null, b58: null};
          for (const v of vectors) {
            const unsigned = {...v.op}; delete unsigned.sig; delete unsigned.cosigs;
            const signing = enc(P.canonicalJson(unsigned));
            const seed = unhex(v.signer_seed_hex);
            const der = new Uint8Array([...P.PKCS8_ED25519, ...seed]);
            const key = await crypto.subtle.importKey("pkcs8", der, {name: "Ed25519"}, false, ["sign"]);
            out.ops.push({
              name: v.name,
              op_bytes_hex: hex(enc(P.canonicalJson(v.op))),
              signing_bytes_hex: hex(signing),
              signature_b64url: P.b64url(await crypto.subtle.sign({name: "Ed25519"}, key, signing)),
              signer: P.multibaseEd25519(await P.ed25519PublicOfSeed(seed)),
            });
          }
          for (const [h, words] of pgp) {
            out.pgp.push(P.seedToWords(unhex(h)).join(" "));
            out.roundtrip.push(hex(P.wordsToSeed(words.split(" "))));
          }
          out.p256 = P.multibaseP256(unhex(p256Hex));
          out.b58 = [P.base58btc(new Uint8Array([0, 0, 1])), P.base58btc(new Uint8Array([]))];
          return out;
        })().then(done, (e) => done({error: String(e)}));
        """,
        vectors,
        pgp,
        p256_point.hex(),
    )
    assert "error" not in got, got
    assert len(got["ops"]) == len(vectors) >= 3
    for v, mine in zip(vectors, got["ops"]):
        assert mine["op_bytes_hex"] == v["op_bytes_hex"], v["name"]
        assert mine["signing_bytes_hex"] == v["signing_bytes_hex"], v["name"]
        assert mine["signature_b64url"] == v["signature_b64url"] == v["op"]["sig"], v["name"]
        assert mine["signer"] == v["op"]["signer"], v["name"]
    assert got["pgp"] == [w for _, w in pgp]
    assert got["roundtrip"] == [h for h, _ in pgp]
    assert got["p256"] == "z" + b58encode(b"\x80\x24" + p256_compressed)
    assert got["p256"].startswith("zDn")
    assert got["b58"] == ["112", ""]


def test_page_without_a_request_refuses_to_do_anything(browsers, page):
    template = (PAGE_DIR / "signin.html").read_text()
    assert template.count("{{REQUEST_JSON}}") == 1, "the node replaces exactly one marker"
    driver = browsers.new(authenticator=False)
    for html, reason in (
        (template, "unreadable"),  # marker never filled
        (re.sub(r'<script id="didmesh-request".*?</script>', "", template), "no sign-in request"),
        (template.replace("{{REQUEST_JSON}}", json.dumps({"request": "x"})), "lacks client_id"),
        (template.replace("{{REQUEST_JSON}}", script_safe_json({**default_request("http://localhost:9"), "node_url": "javascript:alert(1)"})),
         "node_url is not an http(s) URL"),
    ):
        srv = page(raw_html=html)
        driver.get(srv.url + "/oidc/authorize")
        error = WebDriverWait(driver, 10).until(EC.visibility_of_element_located(tid("error")))
        assert reason in error.text
        for control in ("create-passkey", "signin-passkey", "create-browser-key", "signin-browser-key", "start-approve"):
            assert not driver.find_element(*tid(control)).is_displayed(), control
        assert [c for c in srv.calls if c[0] == "POST"] == []


def test_page_shows_the_app_and_redirect_target_as_text(browsers, page):
    srv = page(request={"login_hint": "did:mesh:abc"})
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    assert driver.find_element(*tid("client-name")).text == "Test </script> app"
    assert driver.find_element(*tid("redirect-target")).text == "http://localhost:9/callback"
    assert "node-test" in driver.find_element(*tid("node-name")).text
    assert driver.find_element(*tid("did-input")).get_attribute("value") == "did:mesh:abc"
    assert not driver.find_element(*tid("error")).is_displayed()
    # It ran under the node's CSP (no inline script or style) without a violation.
    csp = [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
    assert csp == []
    driver.find_element(*tid("cancel")).click()
    WebDriverWait(driver, 10).until(lambda d: "error=access_denied" in d.current_url)


def test_page_follows_no_redirect_but_to_the_apps_redirect_uri(browsers, page):
    """A node (or anything answering at node_url) that names another target
    than the redirect URI the page showed is not followed."""
    srv = page(answers={
        "/oidc/signin/pending": {"code": "ABCD-EFGH", "pending_id": "p1", "expires_at": 0},
        "/oidc/signin/pending/p1": {"status": "approved", "redirect": "http://localhost:9/callback.evil.example/?code=x"},
    })
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    driver.find_element(*tid("did-input")).send_keys("did:mesh:abc")
    driver.find_element(*tid("start-approve")).click()
    assert WebDriverWait(driver, 10).until(EC.visibility_of_element_located(tid("approve-code"))).text == "ABCD-EFGH"
    assert driver.find_element(*tid("approve-command")).text == f"didmesh approve ABCD-EFGH --node {srv.url}"
    error = WebDriverWait(driver, 10).until(EC.visibility_of_element_located(tid("error")))
    assert "somewhere other than the app's address" in error.text
    assert driver.current_url.startswith(srv.url + "/oidc/authorize")


def create_did(driver, srv: PageServer, button: str) -> tuple[list[str], dict]:
    """Clicks `button`, reads the recovery words, continues; returns the words
    and the node's answer to the create op."""
    before = len(srv.ops)
    driver.find_element(*tid(button)).click()
    WebDriverWait(driver, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="recovery-words"] li')) == 32)
    words = [li.text for li in driver.find_elements(By.CSS_SELECTOR, '[data-testid="recovery-words"] li')]
    assert srv.ops[before:] == [], "nothing is registered before the words were seen"
    driver.find_element(*tid("continue")).click()
    # The harness has no OpenID endpoints: the page stops at the sign-in with the reason.
    error = WebDriverWait(driver, 20).until(EC.visibility_of_element_located(tid("error")))
    assert "not_here" in error.text, error.text
    assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="recovery-words"] li') == [], "words are shown once"
    assert srv.ops[before]["status"] == 201, srv.ops[before]
    return words, srv.ops[before]["body"]


def recovery_multibase(words: list[str]) -> str:
    even, odd = word_lists()
    seed = bytes((even if i % 2 == 0 else odd).index(w) for i, w in enumerate(words))
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "z" + b58encode(b"\xed\x01" + pub)


def did_log(node: str, did: str) -> list[dict]:
    s = requests.Session()
    s.trust_env = False
    r = s.get(f"{node}/v1/dids/{did}/log", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_page_makes_dids_a_real_node_accepts(browsers, page, node):
    srv = page(node_url=node)
    driver = browsers.new(authenticator=True)
    open_page(driver, srv)
    s = requests.Session()
    s.trust_env = False

    # A DID held by the browser key.
    words, created = create_did(driver, srv, "create-browser-key")
    did = created["did"]
    assert did.startswith("did:mesh:")
    assert s.get(f"{node}/1.0/identifiers/{did}", timeout=10).status_code == 200
    state = srv.ops[-1]["op"]["state"]
    assert state["rotation_keys"][0] == recovery_multibase(words), "the words are the priority-0 rotation key"
    assert state["rotation_keys"][1] == srv.ops[-1]["op"]["signer"]
    assert state["verification_methods"][0]["public_key_multibase"] == srv.ops[-1]["op"]["signer"]
    assert f"This browser holds {did}." == driver.find_element(*tid("browser-did")).text
    held = driver.execute_async_script(
        """
        const done = arguments[0];
        const req = indexedDB.open("didmesh");
        req.onsuccess = () => {
          const get = req.result.transaction("dids").objectStore("dids").getAll();
          get.onsuccess = () => done(get.result.map((r) => ({did: r.did, extractable: r.private_key.extractable,
                                                              type: r.private_key.type})));
        };
        req.onerror = () => done(null);
        """
    )
    assert held == [{"did": did, "extractable": False, "type": "private"}]

    # A DID with a passkey: create, then an update adding the passkey.
    words2, created2 = create_did(driver, srv, "create-passkey")
    did2 = created2["did"]
    assert words2 != words and did2 != did
    update = srv.ops[-1]
    assert update["status"] == 201, update
    assert update["op"]["type"] == "update" and update["op"]["prev"] == created2["cid"]
    creds = driver.get_credentials()
    assert len(creds) == 1
    cred = creds[0]
    assert cred.is_resident_credential and cred.rp_id == "localhost"
    assert base64.urlsafe_b64decode(cred.user_handle) == did2.encode()
    key = load_der_private_key(base64.urlsafe_b64decode(cred.private_key), None)
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    want = {
        "id": "passkey-1",
        "credential_id": b64url(base64.urlsafe_b64decode(cred.id)),
        "public_key_multibase": "z" + b58encode(b"\x80\x24" + point),
    }
    assert update["op"]["state"]["passkeys"] == [want]
    held = [e["op"] for e in did_log(node, did2)["ops"] if e["winning"] and e["cid"] == update["body"]["cid"]]
    assert held and held[0]["state"]["passkeys"] == [want], "the node holds the passkey in the DID's state"
    doc = s.get(f"{node}/1.0/identifiers/{did2}", timeout=10).json()["didDocument"]
    assert want["public_key_multibase"] in json.dumps(doc)


# --- External providers (issue 10) ---------------------------------------------


def test_page_shows_a_continue_button_per_provider_that_goes_to_the_node(browsers, page):
    """Display names are shown as text; an entry that is not a provider name
    a node configures is left out; the button is a top-level navigation to
    node_url/federation/NAME/start with the request handle."""
    srv = page(request={"providers": [
        {"name": "acme", "display_name": "Acme <b>Corp</b>"},
        {"name": "Bad Name", "display_name": "Nope"},
        {"name": "empty", "display_name": ""},
        "umbrella",
    ]})
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    assert driver.find_element(*tid("federation")).is_displayed()
    buttons = driver.find_elements(By.CSS_SELECTOR, '[data-testid="providers"] button')
    assert [(b.get_attribute("data-testid"), b.text) for b in buttons] == [
        ("continue-with-acme", "Continue with Acme <b>Corp</b>")]
    assert not driver.find_element(*tid("fed-offer")).is_displayed()
    driver.find_element(*tid("continue-with-acme")).click()
    WebDriverWait(driver, 10).until(lambda d: d.current_url.startswith(srv.url + "/federation/"))
    assert driver.current_url == srv.url + "/federation/acme/start?request=test-request-handle"
    assert ("GET", "/federation/acme/start?request=test-request-handle") in srv.calls


def test_page_without_providers_shows_no_provider_section(browsers, page):
    srv = page()  # a request from a node without providers (no `providers` at all)
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    assert not driver.find_element(*tid("federation")).is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="providers"] button') == []
    assert not driver.find_element(*tid("fed-offer")).is_displayed()
    assert not driver.find_element(*tid("error")).is_displayed()


def test_page_with_a_fed_handle_the_node_does_not_know_offers_no_link(browsers, page):
    srv = page(request={"providers": [{"name": "acme", "display_name": "Acme"}], "fed": "gone", "fed_provider": None})
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    error = driver.find_element(*tid("error"))
    assert error.is_displayed() and "unknown, used or expired" in error.text
    assert not driver.find_element(*tid("fed-offer")).is_displayed()
    assert driver.find_element(*tid("continue-with-acme")).is_enabled(), "the way to start again"


def test_create_and_link_makes_a_link_op_a_real_node_accepts_and_a_retry_repeats_nothing(browsers, page, node):
    """create-and-link: the create op (browser key), POST /federation/attest
    {fed, did}, then an update (prev = the create, signed by the browser
    key) adding {id: "acme", ...the attestation}; a real node accepts both
    (the ledger checks a link's shape; whether its attestation is good is a
    sign-in's business). The stand-in has no sign-in endpoints, so the page
    stops there with the reason; clicking again goes straight to the
    sign-in: no second DID, no second attestation."""
    member = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    attestation = {
        "provider": "acme",
        "commitment": b64url(bytes(range(32))),
        "attested_by": "z" + b58encode(b"\xed\x01" + member),
        "attested_at": 1_700_000_000,
        "attestation": b64url(bytes(64)),
    }
    srv = page(node_url=node, answers={"/federation/attest": {"link": attestation}},
               request={"providers": [{"name": "acme", "display_name": "Acme"}], "fed": "handle-1",
                        "fed_provider": "acme"})
    driver = browsers.new(authenticator=False)
    open_page(driver, srv)
    offer = driver.find_element(*tid("fed-offer"))
    assert offer.is_displayed()
    assert driver.find_element(*tid("fed-explanation")).text == (
        "Your account at Acme is not linked to a DID yet. Create a DID in this browser and link it?")
    assert driver.switch_to.active_element.get_attribute("data-testid") == "fed-offer-heading"
    assert driver.find_element(*tid("fed-link-command")).text == f"didmesh link --via acme --node {srv.url}"

    words, created = create_did(driver, srv, "create-and-link")
    did = created["did"]
    assert [p for p in srv.posted if p[0] == "/federation/attest"] == [("/federation/attest", {"fed": "handle-1", "did": did})]
    create, update = srv.ops[-2], srv.ops[-1]
    assert create["body"] == created and update["status"] == 201, update
    assert update["op"]["type"] == "update" and update["op"]["did"] == did
    assert update["op"]["prev"] == created["cid"]
    assert update["op"]["signer"] == create["op"]["state"]["rotation_keys"][1]  # the browser key
    assert create["op"]["state"]["rotation_keys"][0] == recovery_multibase(words)
    assert update["op"]["state"]["links"] == [{"id": "acme", **attestation}]
    held = [e["op"] for e in did_log(node, did)["ops"] if e["winning"] and e["cid"] == update["body"]["cid"]]
    assert held and held[0]["state"]["links"] == [{"id": "acme", **attestation}], "the node holds the link"
    # The sign-in after it went to the node (the stand-in has none: not_here).
    assert [p for p in srv.posted if p[0] == "/oidc/signin/challenge"] == [
        ("/oidc/signin/challenge", {"request": "test-request-handle", "did": did})]

    ops_before, posts_before = len(srv.ops), len(srv.posted)
    driver.find_element(*tid("create-and-link")).click()
    WebDriverWait(driver, 10).until(lambda d: len(srv.posted) > posts_before)
    WebDriverWait(driver, 10).until(EC.visibility_of_element_located(tid("error")))
    assert len(srv.ops) == ops_before, "no second DID, no second link op"
    assert [p[0] for p in srv.posted[posts_before:]] == ["/oidc/signin/challenge"]
    assert driver.find_elements(By.CSS_SELECTOR, '[data-testid="recovery-words"] li') == []
