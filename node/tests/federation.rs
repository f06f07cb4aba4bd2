//! Sign-in through an external OpenID provider (issue 10), node side: a
//! fake provider inside the test (a small axum app on loopback signing ID
//! tokens with fixed P-256 keys) and an in-process node whose providers
//! file points at it. The test plays the provider's authorization step
//! itself: it reads `state`, `nonce` and the PKCE challenge from the URL
//! the node sends the browser to, registers a code with them at the fake,
//! and calls the node's callback as the browser would.
//!
//! Every refusal asserts what the user sees (the callback page's
//! `data-error`, the CLI poll's `error` and `reason`) and that no token
//! came out. Run: `cargo test -p didmesh-node --test federation`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use did_core::client::{client_id, secret_hash, ClientReg, IdTokenAlg};
use did_core::federation::{verify_attestation, Attestation};
use did_core::keys::public_of;
use did_core::{Cid, DidState, Operation};
use didmesh_tests::now;
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "didmesh-node";
const CLIENT_SECRET: &str = "fake-provider-client-secret-0123456789";
const RP_REDIRECT: &str = "https://app.example/callback";
const RP_SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret-0123456";

// ---------------------------------------------------------------- provider

/// What the fake's next ID token looks like.
#[derive(Clone)]
struct Mode {
    sub: String,
    iss: Option<String>,
    aud: Option<Value>,
    exp_in: i64,
    iat_in: i64,
    /// `None`: the flow's nonce; `Some(None)`: no nonce; `Some(Some(n))`: n.
    nonce: Option<Option<String>>,
    /// Sign with a key the JWKS does not hold, under the published kid.
    forge: bool,
    kid: String,
    /// Sign HS256 with the client secret.
    hs256: bool,
    /// The token endpoint never answers.
    hang: bool,
}

impl Mode {
    fn account(sub: &str) -> Mode {
        Mode {
            sub: sub.into(),
            iss: None,
            aud: None,
            exp_in: 300,
            iat_in: 0,
            nonce: None,
            forge: false,
            kid: "k1".into(),
            hs256: false,
            hang: false,
        }
    }
}

struct FakeInner {
    issuer: String,
    /// code → (nonce, PKCE challenge)
    codes: Mutex<HashMap<String, (String, String)>>,
    mode: Mutex<Mode>,
    /// kids the JWKS publishes.
    published: Mutex<Vec<&'static str>>,
    jwks_fetches: AtomicUsize,
    token_requests: AtomicUsize,
}

struct Fake {
    inner: Arc<FakeInner>,
    issuer: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn p256_key(seed: u8) -> p256::SecretKey {
    p256::SecretKey::from_slice(&[seed; 32]).unwrap()
}

fn jwk(kid: &str, key: &p256::SecretKey) -> Value {
    let point = key.public_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
           "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
           "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())})
}

/// The key of each published kid (k1, k2); seed 99 is the forger's.
fn key_for_kid(kid: &str) -> p256::SecretKey {
    match kid {
        "k2" => p256_key(12),
        _ => p256_key(11),
    }
}

async fn discovery(State(f): State<Arc<FakeInner>>) -> Json<Value> {
    let b = &f.issuer;
    Json(json!({
        "issuer": b,
        "authorization_endpoint": format!("{b}/authorize"),
        "token_endpoint": format!("{b}/token"),
        "jwks_uri": format!("{b}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}

async fn jwks(State(f): State<Arc<FakeInner>>) -> Json<Value> {
    f.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = f
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|kid| jwk(kid, &key_for_kid(kid)))
        .collect();
    Json(json!({ "keys": keys }))
}

async fn token(
    State(f): State<Arc<FakeInner>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    f.token_requests.fetch_add(1, Ordering::SeqCst);
    let mode = f.mode.lock().unwrap().clone();
    if mode.hang {
        tokio::time::sleep(Duration::from_secs(120)).await;
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let bad = |e: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": e})));
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&basic)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return bad("unsupported_grant_type");
    }
    let Some((nonce, challenge)) = form
        .get("code")
        .and_then(|c| f.codes.lock().unwrap().remove(c))
    else {
        return bad("invalid_grant");
    };
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != challenge {
        return bad("invalid_grant");
    }
    let t = now() as i64;
    let mut claims = json!({
        "iss": mode.iss.clone().unwrap_or_else(|| f.issuer.clone()),
        "sub": mode.sub,
        "aud": mode.aud.clone().unwrap_or_else(|| json!(CLIENT_ID)),
        "exp": t + mode.exp_in,
        "iat": t + mode.iat_in,
        "auth_time": t,
    });
    match &mode.nonce {
        None => claims["nonce"] = json!(nonce),
        Some(Some(n)) => claims["nonce"] = json!(n),
        Some(None) => {}
    }
    let id_token = if mode.hs256 {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
        )
        .unwrap()
    } else {
        let key = if mode.forge {
            p256_key(99)
        } else {
            key_for_kid(&mode.kid)
        };
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(mode.kid.clone());
        let der = key.to_pkcs8_der().unwrap();
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(der.as_bytes())).unwrap()
    };
    (
        StatusCode::OK,
        Json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})),
    )
}

impl Fake {
    async fn start(sub: &str) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(FakeInner {
            issuer: issuer.clone(),
            codes: Mutex::new(HashMap::new()),
            mode: Mutex::new(Mode::account(sub)),
            published: Mutex::new(vec!["k1"]),
            jwks_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            inner,
            issuer,
            server,
        }
    }

    fn set(&self, f: impl FnOnce(&mut Mode)) {
        f(&mut self.inner.mode.lock().unwrap());
    }

    fn jwks_fetches(&self) -> usize {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The provider's authorization step for the URL the node sent the
    /// browser to: checks its parameters, records a code; the callback
    /// query the provider would send back.
    fn authorize(&self, open: &str, node_url: &str) -> String {
        let q = params(open);
        assert!(
            open.starts_with(&format!("{}/authorize?", self.issuer)),
            "{open}"
        );
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(q["scope"], "openid");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["redirect_uri"],
            format!("{node_url}/federation/acme/callback")
        );
        let code = format!("code-{}", rand::random::<u64>());
        self.inner.codes.lock().unwrap().insert(
            code.clone(),
            (q["nonce"].clone(), q["code_challenge"].clone()),
        );
        query(&[("code", &code), ("state", &q["state"])])
    }
}

// ---------------------------------------------------------------- node

fn params(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn query(p: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in p {
        s.append_pair(k, v);
    }
    s.finish()
}

fn providers_file(dir: &std::path::Path, entries: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::new();
    for (name, issuer) in entries {
        text.push_str(&format!(
            "[[provider]]\nname = \"{name}\"\ndisplay_name = \"Acme {name}\"\nissuer = \"{issuer}\"\n\
             client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{name}.secret\"\n\n"
        ));
        std::fs::write(
            dir.join(format!("{name}.secret")),
            format!("{CLIENT_SECRET}\n"),
        )
        .unwrap();
    }
    let path = dir.join("providers.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct World {
    node: RouterNode,
    fake: Fake,
    _dir: tempfile::TempDir,
}

/// A node with the provider `acme` = a fake provider whose account is
/// `sub`; its codes can be consumed (not in its first second).
async fn world(sub: &str) -> World {
    let fake = Fake::start(sub).await;
    let dir = tempfile::tempdir().unwrap();
    let path = providers_file(dir.path(), &[("acme", &fake.issuer)]);
    let node = RouterNode::start_with(&["--providers", path.to_str().unwrap()]).await;
    let started = node.state.oidc.used_codes.started_at();
    while now() <= started {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    World {
        node,
        fake,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    fn location(&self) -> String {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    /// `data-error` of a refusal page.
    fn page_error(&self) -> Option<String> {
        let at = self.text.find("data-error=\"")? + "data-error=\"".len();
        Some(self.text[at..].split('"').next()?.to_string())
    }
    /// The cookie that binds a link offer to this browser (`name=value`).
    fn fedlink_cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("didmesh_fedlink_"))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
    fn cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("didmesh_fed_") && !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap().to_string())
    }
}

async fn send(n: &RouterNode, req: Request<Body>) -> Answer {
    let resp = n.send(req).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `POST /federation/attest` from a browser holding `cookie` (or none).
async fn attest(n: &RouterNode, fed: &str, did: &str, cookie: Option<&str>) -> (StatusCode, Value) {
    let mut req =
        Request::post("/federation/attest").header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let a = send(
        n,
        req.body(Body::from(json!({"fed": fed, "did": did}).to_string()))
            .unwrap(),
    )
    .await;
    (
        a.status,
        serde_json::from_str(&a.text).unwrap_or(Value::Null),
    )
}

async fn fetch(n: &RouterNode, uri: &str, cookie: Option<&str>) -> Answer {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(n, req.body(Body::empty()).unwrap()).await
}

impl World {
    fn node_url(&self) -> String {
        self.node.state.public_url.clone()
    }

    /// `POST /federation/acme/cli`; the `open` URL and the poll id.
    async fn cli_start(&self, purpose: &str, did: Option<&str>) -> (String, String) {
        let mut body = json!({"purpose": purpose});
        if let Some(d) = did {
            body["did"] = json!(d);
        }
        let (status, v) = self.node.post("/federation/acme/cli", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert!(v["expires_at"].as_u64().unwrap() > now());
        (
            v["open"].as_str().unwrap().to_string(),
            v["poll"].as_str().unwrap().to_string(),
        )
    }

    async fn poll(&self, poll: &str) -> Value {
        self.node.get(&format!("/federation/cli/{poll}")).await.1
    }

    async fn callback(&self, q: &str, cookie: Option<&str>) -> Answer {
        fetch(
            &self.node,
            &format!("/federation/acme/callback?{q}"),
            cookie,
        )
        .await
    }

    /// A whole CLI flow; the callback page and the poll's answer.
    async fn cli(&self, purpose: &str, did: Option<&str>) -> (Answer, Value) {
        let (open, poll) = self.cli_start(purpose, did).await;
        assert_eq!(self.poll(&poll).await, json!({"status": "waiting"}));
        let q = self.fake.authorize(&open, &self.node_url());
        let page = self.callback(&q, None).await;
        (page, self.poll(&poll).await)
    }

    /// A CLI login that must be refused with `error`; the reason.
    async fn refused(&self, error: &str) -> String {
        let (page, polled) = self.cli("login", None).await;
        assert_eq!(polled["status"], "refused", "{polled}");
        assert_eq!(polled["error"], error, "{polled}");
        assert!(polled.get("token").is_none());
        assert_eq!(page.page_error().as_deref(), Some(error), "{}", page.text);
        assert_ne!(page.status, StatusCode::OK);
        polled["reason"].as_str().unwrap().to_string()
    }

    /// Registers a DID whose key is `owner`; its DID and genesis CID.
    async fn did(&self, owner: &SigningKey) -> (String, Cid) {
        self.node.register(owner).await
    }

    /// Links the fake's current account to `did` (CLI link flow, then the
    /// owner's update op); the new head.
    async fn link(&self, did: &str, prev: Cid, owner: &SigningKey, id: &str) -> Cid {
        let att = self.attestation(did).await;
        let mut state = self.state_of(did).await;
        state.links.push(att.into_link(id));
        self.update(did, prev, state, owner).await
    }

    async fn attestation(&self, did: &str) -> Attestation {
        let (page, polled) = self.cli("link", Some(did)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert!(page.text.contains("data-testid=\"fed-done\""));
        assert_eq!(polled["status"], "done", "{polled}");
        serde_json::from_value(polled["link"].clone()).unwrap()
    }

    async fn state_of(&self, did: &str) -> DidState {
        let ledger = self.node.state.ledger.read().unwrap();
        DidState::clone(&ledger.resolve(did).unwrap().state.unwrap())
    }

    async fn update(&self, did: &str, prev: Cid, state: DidState, owner: &SigningKey) -> Cid {
        let op = Operation::update(did, prev, state, now(), owner).unwrap();
        let (status, body) = self.node.submit(&op).await;
        assert!(status.is_success(), "{body}");
        op.cid().unwrap()
    }

    fn members(&self) -> Vec<did_core::PublicKey> {
        let ledger = self.node.state.ledger.read().unwrap();
        ledger.members().iter().map(|m| m.key).collect()
    }

    async fn node_jwks(&self) -> Value {
        self.node.get("/.well-known/jwks.json").await.1
    }
}

fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A world with one DID whose key is seed 1 and that linked the fake's
/// account `sub`.
async fn linked(sub: &str) -> (World, String, Cid, SigningKey) {
    let w = world(sub).await;
    let owner = SigningKey::from_bytes(&[1; 32]);
    let (did, genesis) = w.did(&owner).await;
    let head = w.link(&did, genesis, &owner, "acme1").await;
    (w, did, head, owner)
}

// ---------------------------------------------------------------- happy paths

#[tokio::test]
async fn link_then_cli_login_gives_a_token_with_amr_fed_and_idp() {
    let w = world("alice@acme").await;
    let owner = SigningKey::from_bytes(&[1; 32]);
    let (did, genesis) = w.did(&owner).await;
    let att = w.attestation(&did).await;
    let network = w.node.state.genesis.network_id.clone();
    assert_eq!(att.provider, "acme");
    assert_eq!(att.attested_by, w.node.state.me.key);
    assert!(att.verify(&did, &network, &w.members()));
    let link = att.clone().into_link("acme1");
    assert!(verify_attestation(&link, &did, &network, &w.members()));
    // bound to this DID: worthless for another
    assert!(!verify_attestation(
        &link,
        "did:mesh:someoneelse",
        &network,
        &w.members()
    ));
    // not linked yet: no token
    w.refused("not_linked").await;
    let mut state = w.state_of(&did).await;
    state.links.push(link);
    w.update(&did, genesis, state, &owner).await;

    let (page, polled) = w.cli("login", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(polled["status"], "done", "{polled}");
    assert_eq!(polled["did"], did.as_str());
    let token = polled["token"].as_str().unwrap();
    let issuer = &w.node.state.genesis.issuer;
    let c = didmesh_tests::issuer::verify(token, &w.node_jwks().await, issuer, "home-api").unwrap();
    assert_eq!(c["sub"], did.as_str());
    assert_eq!(c["amr"], json!(["fed"]));
    assert_eq!(c["idp"], "acme");
    // the ledger never holds the provider subject
    let ops = w
        .node
        .get(&format!("/v1/dids/{did}/log"))
        .await
        .1
        .to_string();
    assert!(!ops.contains("alice@acme"));
}

#[tokio::test]
async fn page_login_gives_a_code_with_amr_fed_redeemed_at_the_token_endpoint() {
    let (w, did, _, _) = linked("bob@acme").await;
    // a relying party
    let rp_owner = SigningKey::from_bytes(&[7; 32]);
    let (rp_did, rp_genesis) = w.did(&rp_owner).await;
    let mut rp_state = DidState::single_key(public_of(&rp_owner));
    rp_state.clients.push(ClientReg {
        id: "app".into(),
        name: "App".into(),
        redirect_uris: vec![RP_REDIRECT.into()],
        secret_hash: Some(secret_hash(RP_SECRET)),
        id_token_alg: IdTokenAlg::ES256,
    });
    w.update(&rp_did, rp_genesis, rp_state, &rp_owner).await;
    let rp = client_id(&rp_did, "app").unwrap();
    let verifier = URL_SAFE_NO_PAD.encode([5u8; 32]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let auth = fetch(
        &w.node,
        &format!(
            "/oidc/authorize?{}",
            query(&[
                ("response_type", "code"),
                ("client_id", &rp),
                ("redirect_uri", RP_REDIRECT),
                ("scope", "openid"),
                ("state", "rp-state"),
                ("nonce", "rp-nonce"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
        ),
        None,
    )
    .await;
    assert_eq!(auth.status, StatusCode::OK, "{}", auth.text);
    let data = didmesh_tests::oidc::page_request(&auth.text).unwrap();
    let handle = data["request"].as_str().unwrap();

    let start = fetch(
        &w.node,
        &format!("/federation/acme/start?{}", query(&[("request", handle)])),
        None,
    )
    .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text);
    let cookie = start.cookie().expect("a browser-binding cookie");
    let q = w.fake.authorize(&start.location(), &w.node_url());

    // the callback in another browser (no cookie) is refused, and uses up
    // nothing the real browser needs... but the state is single use, so
    // check the cookie-less case on a second flow below.
    let back = w.callback(&q, Some(&cookie)).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.text);
    let redirect = back.location();
    assert!(redirect.starts_with(RP_REDIRECT), "{redirect}");
    let r = params(&redirect);
    assert_eq!(r["state"], "rp-state");
    let form = query(&[
        ("grant_type", "authorization_code"),
        ("code", &r["code"]),
        ("redirect_uri", RP_REDIRECT),
        ("code_verifier", &verifier),
        ("client_id", &rp),
        ("client_secret", RP_SECRET),
    ]);
    let tok = send(
        &w.node,
        Request::post("/oidc/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await;
    assert_eq!(tok.status, StatusCode::OK, "{}", tok.text);
    let id = claims(tok.json()["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], did.as_str());
    assert_eq!(id["amr"], json!(["fed"]));
    assert_eq!(id["idp"], "acme");
    assert_eq!(id["nonce"], "rp-nonce");
    let access = claims(tok.json()["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], json!(["fed"]));
    assert_eq!(access["idp"], "acme");

    // another browser: the callback without the start's cookie is refused
    let start = fetch(
        &w.node,
        &format!("/federation/acme/start?{}", query(&[("request", handle)])),
        None,
    )
    .await;
    let q = w.fake.authorize(&start.location(), &w.node_url());
    let other = w.callback(&q, Some("didmesh_fed_0000000000000000=x")).await;
    assert_eq!(
        other.page_error().as_deref(),
        Some("invalid_state"),
        "{}",
        other.text
    );
    assert!(other.location().is_empty());
}

#[tokio::test]
async fn an_unlinked_account_on_the_page_gets_the_offer_to_create_and_link() {
    let w = world("carol@acme").await;
    let rp_owner = SigningKey::from_bytes(&[7; 32]);
    let (rp_did, rp_genesis) = w.did(&rp_owner).await;
    let mut rp_state = DidState::single_key(public_of(&rp_owner));
    rp_state.clients.push(ClientReg {
        id: "app".into(),
        name: "App".into(),
        redirect_uris: vec![RP_REDIRECT.into()],
        secret_hash: None,
        id_token_alg: IdTokenAlg::ES256,
    });
    w.update(&rp_did, rp_genesis, rp_state, &rp_owner).await;
    let rp = client_id(&rp_did, "app").unwrap();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest([b'v'; 43]));
    let auth = fetch(
        &w.node,
        &format!(
            "/oidc/authorize?{}",
            query(&[
                ("response_type", "code"),
                ("client_id", &rp),
                ("redirect_uri", RP_REDIRECT),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
        ),
        None,
    )
    .await;
    let data = didmesh_tests::oidc::page_request(&auth.text).unwrap();
    let start = fetch(
        &w.node,
        &format!(
            "/federation/acme/start?{}",
            query(&[("request", data["request"].as_str().unwrap())])
        ),
        None,
    )
    .await;
    let cookie = start.cookie().unwrap();
    let q = w.fake.authorize(&start.location(), &w.node_url());
    let page = w.callback(&q, Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.text.contains("data-testid=\"not-linked\""),
        "{}",
        page.text
    );
    assert!(page.location().is_empty(), "no code, no redirect");
    let at = page.text.find("data-fed=\"").unwrap() + "data-fed=\"".len();
    let fed = page.text[at..].split('"').next().unwrap().to_string();
    assert!(page.text.contains("/oidc/authorize?"));

    // the browser wallet made a DID; the node attests the verified account
    let owner = SigningKey::from_bytes(&[3; 32]);
    let (did, genesis) = w.did(&owner).await;
    let bound = page
        .fedlink_cookie()
        .expect("the not-linked page binds the offer to this browser");
    // The offer forwarded to another browser (no cookie, or the cookie of
    // another offer): nothing is attested.
    let (status, v) = attest(&w.node, &fed, &did, None).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("fed_not_this_browser")),
        "{v}"
    );
    let (status, v) = attest(
        &w.node,
        &fed,
        &did,
        Some("didmesh_fedlink_0000000000000000=x"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = attest(&w.node, &fed, &did, Some(&bound)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let att: Attestation = serde_json::from_value(v["link"].clone()).unwrap();
    let network = w.node.state.genesis.network_id.clone();
    assert!(att.verify(&did, &network, &w.members()));
    // single use
    let (status, v) = attest(&w.node, &fed, &did, Some(&bound)).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_fed"))
    );
    // linked now: the CLI login signs in as that DID
    let mut state = w.state_of(&did).await;
    state.links.push(att.into_link("acme"));
    w.update(&did, genesis, state, &owner).await;
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["did"], did.as_str(), "{polled}");
}

// ---------------------------------------------------------------- the sign-in page

impl World {
    /// A relying party whose client (`app`, redirect [`RP_REDIRECT`]) is
    /// public (PKCE required) or confidential; its client_id.
    async fn rp(&self, confidential: bool) -> String {
        let rp_owner = SigningKey::from_bytes(&[7; 32]);
        let (rp_did, rp_genesis) = self.did(&rp_owner).await;
        let mut rp_state = DidState::single_key(public_of(&rp_owner));
        rp_state.clients.push(ClientReg {
            id: "app".into(),
            name: "App".into(),
            redirect_uris: vec![RP_REDIRECT.into()],
            secret_hash: confidential.then(|| secret_hash(RP_SECRET)),
            id_token_alg: IdTokenAlg::ES256,
        });
        self.update(&rp_did, rp_genesis, rp_state, &rp_owner).await;
        client_id(&rp_did, "app").unwrap()
    }
}

/// The query parameters of an authorization request, in order.
type AuthParams = Vec<(&'static str, String)>;

/// A request `/oidc/authorize` accepts for the public client `rp`.
fn good_authorize(rp: &str) -> AuthParams {
    vec![
        ("response_type", "code".into()),
        ("client_id", rp.into()),
        ("redirect_uri", RP_REDIRECT.into()),
        ("scope", "openid".into()),
        ("state", "rp-state".into()),
        (
            "code_challenge",
            URL_SAFE_NO_PAD.encode(Sha256::digest([b'v'; 43])),
        ),
        ("code_challenge_method", "S256".into()),
    ]
}

async fn authorize(w: &World, p: &[(&str, String)]) -> Answer {
    let pairs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fetch(&w.node, &format!("/oidc/authorize?{}", query(&pairs)), None).await
}

fn page_json(a: &Answer) -> Value {
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    didmesh_tests::oidc::page_request(&a.text).expect("the page's #didmesh-request JSON")
}

/// `href` of the element with `data-testid="{testid}"`, HTML-unescaped.
fn href_of(html: &str, testid: &str) -> String {
    let at = html
        .find(&format!("data-testid=\"{testid}\""))
        .unwrap_or_else(|| panic!("no {testid} in {html}"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
    let h = tag.find("href=\"").unwrap() + "href=\"".len();
    tag[h..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

#[tokio::test]
async fn the_sign_in_page_lists_the_providers_and_carries_the_fed_handle() {
    let w = world("dora@acme").await;
    let rp = w.rp(false).await;

    // The page of a plain request: one button per configured provider, no offer.
    let data = page_json(&authorize(&w, &good_authorize(&rp)).await);
    assert_eq!(
        data["providers"],
        json!([{"name": "acme", "display_name": "Acme acme"}])
    );
    assert_eq!(data["fed"], Value::Null);
    assert_eq!(data["fed_provider"], Value::Null);

    // "Continue with Acme acme" → provider → an account no DID links → the
    // not-linked page, whose create-and-link goes back to the sign-in page.
    let start = fetch(
        &w.node,
        &format!(
            "/federation/acme/start?{}",
            query(&[("request", data["request"].as_str().unwrap())])
        ),
        None,
    )
    .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.text);
    let cookie = start.cookie().unwrap();
    let q = w.fake.authorize(&start.location(), &w.node_url());
    let not_linked = w.callback(&q, Some(&cookie)).await;
    assert!(not_linked.text.contains("data-testid=\"not-linked\""));
    let at = not_linked.text.find("data-fed=\"").unwrap() + "data-fed=\"".len();
    let fed = not_linked.text[at..].split('"').next().unwrap().to_string();
    let create = href_of(&not_linked.text, "create-and-link");
    let path = create
        .strip_prefix(&w.node_url())
        .unwrap_or_else(|| panic!("{create} is not at this node"));
    assert!(path.starts_with("/oidc/authorize?"), "{create}");
    assert_eq!(params(&create)["fed"], fed);

    // That link is a request /oidc/authorize accepts (fed is not an error),
    // and the page it gives carries the handle and its provider.
    let back = fetch(&w.node, path, None).await;
    let data = page_json(&back);
    assert_eq!(data["fed"], fed.as_str());
    assert_eq!(data["fed_provider"], "acme");
    assert_eq!(data["client_id"], rp.as_str());
    assert_eq!(data["redirect_uri"], RP_REDIRECT);
    assert!(data["request"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(data["providers"].as_array().is_some_and(|p| p.len() == 1));
    // Showing the page used nothing up: the handle still attests once.
    let owner = SigningKey::from_bytes(&[4; 32]);
    let (did, _) = w.did(&owner).await;
    let bound = not_linked.fedlink_cookie().unwrap();
    let (status, v) = attest(&w.node, &fed, &did, Some(&bound)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["link"]["provider"], "acme");
    // Used now: the page says the node does not know it.
    let data = page_json(&fetch(&w.node, path, None).await);
    assert_eq!(data["fed"], fed.as_str());
    assert_eq!(data["fed_provider"], Value::Null);

    // A made-up handle is passed on but names no provider; one that is not
    // a handle's shape (or would break out of the script element) is not
    // passed on at all.
    let mut p = good_authorize(&rp);
    p.push(("fed", "AAAAAAAAAAAAAAAAAAAAAA".into()));
    let data = page_json(&authorize(&w, &p).await);
    assert_eq!(data["fed"], "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(data["fed_provider"], Value::Null);
    for bad in ["</script><script>alert(1)</script>", &"A".repeat(65)] {
        let mut p = good_authorize(&rp);
        p.push(("fed", bad.to_string()));
        let a = authorize(&w, &p).await;
        assert!(!a.text.contains("<script>alert"), "{}", a.text);
        assert_eq!(page_json(&a)["fed"], Value::Null, "{bad}");
    }
}

#[tokio::test]
async fn a_node_without_providers_lists_none() {
    let node = RouterNode::start().await;
    let w = World {
        node,
        fake: Fake::start("nobody").await,
        _dir: tempfile::tempdir().unwrap(),
    };
    let rp = w.rp(false).await;
    let data = page_json(&authorize(&w, &good_authorize(&rp)).await);
    assert_eq!(data["providers"], json!([]));
    assert_eq!(data["fed"], Value::Null);
}

/// What a refused authorization request gives the browser: the status and
/// either the redirect's `error` or the error page's text.
fn outcome(a: &Answer) -> (StatusCode, String) {
    let loc = a.location();
    if loc.is_empty() {
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
        let at = a.text.find("data-testid=\"error\">").unwrap() + "data-testid=\"error\">".len();
        (
            a.status,
            a.text[at..].split('<').next().unwrap().to_string(),
        )
    } else {
        assert!(loc.starts_with(RP_REDIRECT), "{loc}");
        (a.status, params(&loc)["error"].clone())
    }
}

#[tokio::test]
async fn authorize_with_fed_still_refuses_everything_it_refused() {
    let w = world("erin@acme").await;
    let rp = w.rp(false).await;
    let set = |k: &'static str, v: &str| {
        let mut p = good_authorize(&rp);
        p.retain(|(n, _)| *n != k);
        if !v.is_empty() {
            p.push((k, v.to_string()));
        }
        p
    };
    let with = |mut p: AuthParams, k: &'static str, v: &str| {
        p.push((k, v.to_string()));
        p
    };
    // (what is wrong, the request, the error the browser must see)
    let cases: Vec<(&str, AuthParams, &str)> = vec![
        (
            "unknown client",
            set("client_id", "did:mesh:nobody#app"),
            "not registered",
        ),
        (
            "unregistered redirect",
            set("redirect_uri", "https://evil.example/cb"),
            "is not registered",
        ),
        (
            "no redirect",
            set("redirect_uri", ""),
            "names no redirect_uri",
        ),
        (
            "repeated client_id",
            with(good_authorize(&rp), "client_id", &rp),
            "client_id is repeated",
        ),
        (
            "repeated state",
            with(good_authorize(&rp), "state", "again"),
            "invalid_request",
        ),
        (
            "implicit flow",
            set("response_type", "token"),
            "unsupported_response_type",
        ),
        (
            "no response_type",
            set("response_type", ""),
            "invalid_request",
        ),
        ("no openid scope", set("scope", "profile"), "invalid_scope"),
        (
            "public client without PKCE",
            set("code_challenge", ""),
            "invalid_request",
        ),
        (
            "plain PKCE",
            set("code_challenge_method", "plain"),
            "invalid_request",
        ),
        (
            "prompt=none",
            with(good_authorize(&rp), "prompt", "none"),
            "login_required",
        ),
        (
            "request object",
            with(good_authorize(&rp), "request", "eyJ9.e30."),
            "request_not_supported",
        ),
        (
            "request_uri",
            with(good_authorize(&rp), "request_uri", "https://x.example/r"),
            "request_uri_not_supported",
        ),
        (
            "response_mode",
            with(good_authorize(&rp), "response_mode", "fragment"),
            "invalid_request",
        ),
        (
            "bad max_age",
            with(good_authorize(&rp), "max_age", "soon"),
            "invalid_request",
        ),
    ];
    let handle = "AAAAAAAAAAAAAAAAAAAAAA";
    for (what, p, want) in cases {
        let without = outcome(&authorize(&w, &p).await);
        assert!(without.1.contains(want), "{what}: {without:?}");
        // with a handle, first or last, the same refusal, never the page
        let mut first = vec![("fed", handle.to_string())];
        first.extend(p.iter().cloned());
        for q in [with(p.clone(), "fed", handle), first] {
            let a = authorize(&w, &q).await;
            assert!(
                didmesh_tests::oidc::page_request(&a.text).is_none(),
                "{what}: a page"
            );
            assert_eq!(outcome(&a), without, "{what}");
        }
    }
    // fed sent twice is a repeated parameter, like any other
    let p = with(with(good_authorize(&rp), "fed", handle), "fed", "BBBB");
    let a = authorize(&w, &p).await;
    assert_eq!(outcome(&a).1, "invalid_request");
    assert!(params(&a.location())["error_description"].contains("fed is repeated"));
    // and alone it is no error
    let data = page_json(&authorize(&w, &with(good_authorize(&rp), "fed", handle)).await);
    assert_eq!(data["fed"], handle);
}

// ---------------------------------------------------------------- refusals

/// A change to the fake's next ID token.
type Tweak = Box<dyn Fn(&mut Mode)>;

#[tokio::test]
async fn id_tokens_that_break_a_rule_are_refused_each_with_its_reason() {
    let (w, _, _, _) = linked("dave@acme").await;
    let cases: Vec<(Tweak, &str)> = vec![
        (
            Box::new(|m| m.iss = Some("http://127.0.0.1:1".into())),
            "another issuer",
        ),
        (
            Box::new(|m| m.aud = Some(json!("someone-else"))),
            "another audience",
        ),
        (
            Box::new(|m| m.aud = Some(json!([CLIENT_ID, "other"]))),
            "azp",
        ),
        (Box::new(|m| m.exp_in = -10), "expired"),
        (Box::new(|m| m.iat_in = 3600), "issue time"),
        (Box::new(|m| m.nonce = Some(None)), "no nonce"),
        (Box::new(|m| m.forge = true), "signature does not verify"),
        (
            Box::new(|m| m.hs256 = true),
            "algorithm that is not allowed",
        ),
    ];
    for (set, want) in cases {
        w.fake.set(|m| *m = Mode::account("dave@acme"));
        w.fake.set(set);
        let reason = w.refused("invalid_id_token").await;
        assert!(reason.contains(want), "{want}: {reason}");
    }
    // and the same account with a well-formed token still gets in
    w.fake.set(|m| *m = Mode::account("dave@acme"));
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["status"], "done", "{polled}");
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let (w, _, _, _) = linked("erin@acme").await;
    // the first flow's nonce, captured
    let (open, _) = w.cli_start("login", None).await;
    let first_nonce = params(&open)["nonce"].clone();
    let q = w.fake.authorize(&open, &w.node_url());
    w.callback(&q, None).await;
    // a later flow gets a token carrying the first flow's nonce
    w.fake.set(|m| m.nonce = Some(Some(first_nonce)));
    let reason = w.refused("invalid_id_token").await;
    assert!(reason.contains("nonce"), "{reason}");
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_jwks_refetch_and_a_rotated_key_is_picked_up() {
    let (w, _, _, _) = linked("frank@acme").await;
    let before = w.fake.jwks_fetches();
    // the provider rotates to k2: one refetch finds it
    *w.fake.inner.published.lock().unwrap() = vec!["k1", "k2"];
    w.fake.set(|m| m.kid = "k2".into());
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["status"], "done", "{polled}");
    assert_eq!(w.fake.jwks_fetches(), before + 1);
    // a kid the JWKS does not have: refused; within the refetch gap no
    // second fetch (a stream of made-up kids cannot hammer the provider)
    w.fake.set(|m| m.kid = "nope".into());
    let reason = w.refused("invalid_id_token").await;
    assert!(reason.contains("kid unknown"), "{reason}");
    assert_eq!(w.fake.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn an_unknown_kid_on_a_fresh_node_costs_exactly_one_refetch() {
    let (w, _, _, _) = linked("gina@acme").await;
    // the linking flow fetched the JWKS once; wait out the refetch gap? no:
    // a fresh provider object has never refetched, so the first unknown
    // kid refetches once and then refuses
    let before = w.fake.jwks_fetches();
    w.fake.set(|m| m.kid = "nope".into());
    let reason = w.refused("invalid_id_token").await;
    assert!(reason.contains("kid unknown"), "{reason}");
    assert_eq!(w.fake.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn unknown_used_or_mismatched_state_is_refused() {
    let (w, _, _, _) = linked("hank@acme").await;
    // a state this node never issued
    let page = w.callback("code=x&state=made-up", None).await;
    assert_eq!(page.page_error().as_deref(), Some("invalid_state"));
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = w.callback("code=x", None).await;
    assert_eq!(page.page_error().as_deref(), Some("invalid_state"));
    // a real flow, then its callback replayed
    let (open, poll) = w.cli_start("login", None).await;
    let q = w.fake.authorize(&open, &w.node_url());
    let mangled = q.replace("state=", "state=x");
    assert_eq!(
        w.callback(&mangled, None).await.page_error().as_deref(),
        Some("invalid_state")
    );
    assert_eq!(w.poll(&poll).await["status"], "waiting");
    assert_eq!(w.callback(&q, None).await.status, StatusCode::OK);
    assert_eq!(w.poll(&poll).await["status"], "done");
    let again = w.callback(&q, None).await;
    assert_eq!(again.page_error().as_deref(), Some("invalid_state"));
    // the provider's own error (the user said no)
    let (open, poll) = w.cli_start("login", None).await;
    let state = params(&open)["state"].clone();
    let page = w
        .callback(
            &query(&[("error", "access_denied"), ("state", &state)]),
            None,
        )
        .await;
    assert_eq!(page.page_error().as_deref(), Some("provider_error"));
    let polled = w.poll(&poll).await;
    assert_eq!(polled["error"], "provider_error");
    assert!(polled["reason"].as_str().unwrap().contains("access_denied"));
}

#[tokio::test]
async fn a_removed_link_is_refused_at_once() {
    let (w, did, head, owner) = linked("ivy@acme").await;
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["status"], "done");
    let mut state = w.state_of(&did).await;
    state.links.clear();
    w.update(&did, head, state, &owner).await;
    let reason = w.refused("not_linked").await;
    assert!(reason.contains("not linked"), "{reason}");
}

#[tokio::test]
async fn one_account_one_did_and_two_links_at_once_are_ambiguous() {
    let w = world("jack@acme").await;
    let a = SigningKey::from_bytes(&[1; 32]);
    let b = SigningKey::from_bytes(&[2; 32]);
    let (did_a, gen_a) = w.did(&a).await;
    let (did_b, gen_b) = w.did(&b).await;
    // both attested before either link lands (two nodes at once)
    let att_a = w.attestation(&did_a).await;
    let att_b = w.attestation(&did_b).await;
    let mut sa = w.state_of(&did_a).await;
    sa.links.push(att_a.into_link("l"));
    let head_a = w.update(&did_a, gen_a, sa, &a).await;
    // now linked to A: the node refuses to attest it for B
    let (_, polled) = w.cli("link", Some(&did_b)).await;
    assert_eq!(polled["error"], "already_linked", "{polled}");
    // B adds its earlier attestation anyway: ambiguous, nobody signs in
    let mut sb = w.state_of(&did_b).await;
    sb.links.push(att_b.into_link("l"));
    w.update(&did_b, gen_b, sb, &b).await;
    let reason = w.refused("ambiguous_link").await;
    assert!(reason.contains("more than one DID"), "{reason}");
    // A removes its link: B signs in
    let mut sa = w.state_of(&did_a).await;
    sa.links.clear();
    w.update(&did_a, head_a, sa, &a).await;
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["did"], did_b.as_str(), "{polled}");
}

#[tokio::test]
async fn a_copied_link_does_not_sign_in_as_the_copier() {
    let (w, did, _, _) = linked("kim@acme").await;
    let mallory = SigningKey::from_bytes(&[9; 32]);
    let (m_did, m_gen) = w.did(&mallory).await;
    // Mallory copies the victim's link entry into her own DID
    let victim_link = w.state_of(&did).await.links[0].clone();
    let mut s = w.state_of(&m_did).await;
    s.links.push(victim_link);
    w.update(&m_did, m_gen, s, &mallory).await;
    let (_, polled) = w.cli("login", None).await;
    assert_eq!(polled["did"], did.as_str(), "{polled}");
}

#[tokio::test]
async fn a_provider_that_is_down_or_hangs_is_refused_within_six_seconds() {
    let (w, _, _, _) = linked("lou@acme").await;
    // hanging token endpoint
    w.fake.set(|m| m.hang = true);
    let t = Instant::now();
    let reason = w.refused("provider_unavailable").await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(6500), "{took:?}");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    assert!(
        reason.contains("5 s") || reason.contains("timed out"),
        "{reason}"
    );
    // down: the flow started, then the provider went away
    w.fake.set(|m| m.hang = false);
    let (open, poll) = w.cli_start("login", None).await;
    let q = w.fake.authorize(&open, &w.node_url());
    w.fake.server.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let page = w.callback(&q, None).await;
    assert!(t.elapsed() < Duration::from_millis(6500));
    assert_eq!(page.page_error().as_deref(), Some("provider_unavailable"));
    assert_eq!(w.poll(&poll).await["error"], "provider_unavailable");
    // and a start against it fails fast with a JSON reason
    let (status, v) = w
        .node
        .post("/federation/acme/cli", json!({"purpose": "login"}))
        .await;
    assert!(
        status == StatusCode::OK || v["error"] == "provider_unavailable",
        "{v}"
    );
}

#[tokio::test]
async fn cli_start_checks_its_body_and_the_provider() {
    let w = world("mo@acme").await;
    for (body, want) in [
        (json!({"purpose": "link"}), "invalid_request"),
        (json!({"purpose": "dance"}), "invalid_request"),
        (
            json!({"purpose": "login", "did": "did:mesh:x"}),
            "invalid_request",
        ),
        (json!({"purpose": "login", "extra": 1}), "invalid_request"),
        (
            json!({"purpose": "link", "did": "did:mesh:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"}),
            "",
        ),
    ] {
        let (status, v) = w.node.post("/federation/acme/cli", body.clone()).await;
        assert!(status.is_client_error(), "{body} {v}");
        if !want.is_empty() {
            assert_eq!(v["error"], want, "{body} {v}");
        }
    }
    let (status, v) = w
        .node
        .post("/federation/nobody/cli", json!({"purpose": "login"}))
        .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_provider"))
    );
    assert_eq!(w.poll("never-issued").await, json!({"status": "expired"}));
}

// ---------------------------------------------------------------- config

#[tokio::test]
async fn a_bad_providers_file_stops_the_node_with_a_clear_message() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let good = providers_file(dir.path(), &[("acme", "https://id.acme.example")]);
    let text = std::fs::read_to_string(&good).unwrap();
    let cases = [
        (
            "unknown field",
            text.replace("client_id =", "colour = \"red\"\nclient_id ="),
        ),
        ("used twice", format!("{text}{text}")),
        (
            "no client secret",
            text.replace("client_secret_file = \"acme.secret\"", ""),
        ),
        (
            "must be https",
            text.replace("https://id.acme.example", "http://id.acme.example"),
        ),
        (
            "cannot be read",
            text.replace("acme.secret", "missing.secret"),
        ),
    ];
    for (want, bad) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = didmesh_node::config::Config::try_parse_from([
            "didmesh-node",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--no-p2p",
            "--providers",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let e = match didmesh_node::NodeState::open(&config) {
            Ok(_) => panic!("{want}: the node started"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(want) && e.contains("bad.toml"), "{want}: {e}");
        assert!(!e.contains(CLIENT_SECRET), "{e}");
    }
}

#[tokio::test]
async fn sighup_reloads_the_providers_and_a_bad_reload_keeps_them() {
    let fake = Fake::start("nat@acme").await;
    let dir = tempfile::tempdir().unwrap();
    let path = providers_file(dir.path(), &[("acme", &fake.issuer)]);
    let data = tempfile::tempdir().unwrap();
    let port = didmesh_tests::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_didmesh-node"))
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--no-p2p", "--providers", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let start = |name: &'static str| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/federation/{name}/cli"))
                .json(&json!({"purpose": "login"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while start("acme").await != 200 {
        assert!(Instant::now() < deadline, "the node did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(start("second").await, 404);
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    // a new provider appears on SIGHUP
    providers_file(
        dir.path(),
        &[("acme", &fake.issuer), ("second", &fake.issuer)],
    );
    hup(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while start("second").await != 200 {
        assert!(Instant::now() < deadline, "SIGHUP did not add the provider");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a bad file on SIGHUP keeps both
    std::fs::write(&path, "[[provider]]\nname = \"Bad Name\"\n").unwrap();
    hup(child.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(start("acme").await, 200);
    assert_eq!(start("second").await, 200);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    // tracing writes to stdout
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("providers file refused"), "{log}");
    assert!(!log.contains(CLIENT_SECRET), "{log}");
}
