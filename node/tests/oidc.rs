//! The OpenID provider end to end through the in-process router: the
//! authorization request, the sign-in page's calls (a software Ed25519 key
//! as the browser key, a software P-256 authenticator as the passkey), the
//! token endpoint and userinfo, and each refusal RFC 6749, RFC 7636,
//! OpenID Connect Core and WebAuthn require — every one asserting the RFC
//! error code and that no token came out.
//!
//! Clients are registered as a relying party would: a signed update of the
//! owner's DID adding a `clients` entry, submitted to `/v1/ops`.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use did_core::client::{client_id, secret_hash, ClientReg, IdTokenAlg};
use did_core::keys::{public_of, sign_b64};
use did_core::passkey::{Assertion, P256Key, Passkey};
use did_core::{Cid, DidState, Operation};
use didmesh_tests::now;
use didmesh_tests::router::RouterNode;
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use p256::ecdsa::signature::Signer as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::time::Duration;

const ISSUER: &str = "https://didmesh.local";
const REDIRECT: &str = "https://app.example/callback";
const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret-0123456";

/// A registered relying party.
struct Rp {
    client_id: String,
    redirect_uri: String,
    secret: Option<String>,
}

/// A node whose codes can be consumed: a code issued in the very second
/// the node started is refused by design (consume.rs), so wait that out.
async fn node(extra: &[&str]) -> RouterNode {
    let n = RouterNode::start_with(extra).await;
    let started = n.state.oidc.used_codes.started_at();
    while now() <= started {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

async fn submit(n: &RouterNode, op: &Operation) -> Cid {
    let (status, body) = n.submit(op).await;
    assert!(status.is_success(), "{body}");
    op.cid().unwrap()
}

/// Registers an owner DID with one client entry `entry`.
async fn register_client(
    n: &RouterNode,
    seed: u8,
    entry: &str,
    confidential: bool,
    alg: IdTokenAlg,
) -> Rp {
    let owner = SigningKey::from_bytes(&[seed; 32]);
    let (did, genesis) = n.register(&owner).await;
    let mut state = DidState::single_key(public_of(&owner));
    state.clients.push(ClientReg {
        id: entry.into(),
        name: format!("App {entry}"),
        redirect_uris: vec![REDIRECT.into(), "http://localhost:5000/cb?x=1".into()],
        secret_hash: confidential.then(|| secret_hash(SECRET)),
        id_token_alg: alg,
    });
    let op = Operation::update(&did, genesis, state, now(), &owner).unwrap();
    submit(n, &op).await;
    Rp {
        client_id: client_id(&did, entry).unwrap(),
        redirect_uri: REDIRECT.into(),
        secret: confidential.then(|| SECRET.to_string()),
    }
}

fn query(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Standard authorization parameters for `rp`.
fn auth_params<'a>(rp: &'a Rp, challenge: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", rp.client_id.as_str()),
        ("redirect_uri", rp.redirect_uri.as_str()),
        ("scope", "openid"),
        ("state", "st&te 1"),
        ("nonce", "n-0S6_WzA2Mj"),
    ];
    if let Some(c) = challenge {
        p.push(("code_challenge", c));
        p.push(("code_challenge_method", "S256"));
    }
    p
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
    fn location(&self) -> Option<String> {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string())
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

async fn authorize(n: &RouterNode, params: &[(&str, &str)]) -> Answer {
    let req = Request::get(format!("/oidc/authorize?{}", query(params)))
        .body(Body::empty())
        .unwrap();
    send(n, req).await
}

/// The `#didmesh-request` JSON of a sign-in page.
fn page_data(html: &str) -> Value {
    let start = html
        .find(r#"<script id="didmesh-request" type="application/json">"#)
        .expect("request element");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    serde_json::from_str(&rest[open..close]).unwrap()
}

async fn post_json(n: &RouterNode, path: &str, body: Value) -> (StatusCode, Value) {
    n.post(path, body).await
}

/// Authorize and return the page's request handle.
async fn request_handle(n: &RouterNode, params: &[(&str, &str)]) -> String {
    let a = authorize(n, params).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    page_data(&a.text)["request"].as_str().unwrap().to_string()
}

/// Signs in `did` with the browser key `key` for `handle`; the redirect.
async fn signin_with_key(
    n: &RouterNode,
    handle: &str,
    did: &str,
    key: &SigningKey,
) -> (StatusCode, Value) {
    let (status, ch) = post_json(
        n,
        "/oidc/signin/challenge",
        json!({"request": handle, "did": did}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    let sig = sign_b64(key, ch["message"].as_str().unwrap().as_bytes());
    post_json(
        n,
        "/oidc/signin/complete",
        json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
    )
    .await
}

/// The query of a redirect.
fn redirect_params(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Full front half of the flow: authorize, sign in; the code.
async fn code_for(
    n: &RouterNode,
    rp: &Rp,
    challenge: Option<&str>,
    did: &str,
    key: &SigningKey,
) -> String {
    let handle = request_handle(n, &auth_params(rp, challenge)).await;
    let (status, done) = signin_with_key(n, &handle, did, key).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let redirect = done["redirect"].as_str().unwrap();
    assert!(
        redirect.starts_with(&format!("{}?", rp.redirect_uri)),
        "{redirect}"
    );
    let p = redirect_params(redirect);
    assert_eq!(p["state"], "st&te 1");
    assert_eq!(p["iss"], ISSUER);
    p["code"].clone()
}

async fn token(n: &RouterNode, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
    let mut req = Request::post("/oidc/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        // RFC 6749 §2.3.1: each part form-encoded, then Basic (RFC 7617).
        let enc = |s: &str| query(&[("", s)])[1..].to_string();
        let creds = STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
        req = req.header(header::AUTHORIZATION, format!("Basic {creds}"));
    }
    send(n, req.body(Body::from(query(form))).unwrap()).await
}

/// Asserts a §5.2 refusal: status, error code, no token, no-store.
fn assert_refused(a: &Answer, status: StatusCode, error: &str) {
    assert_eq!(a.status, status, "{}", a.text);
    let body = a.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body.get("id_token").is_none() && body.get("access_token").is_none());
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
}

/// Verifies an ID token against the node's JWKS; its claims.
async fn verify_id_token(n: &RouterNode, id_token: &str, aud: &str) -> Value {
    let (_, jwks) = n.get("/.well-known/jwks.json").await;
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let kid = header.kid.clone().expect("kid in the ID token");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(jwk["alg"], json!(format!("{:?}", header.alg)));
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[ISSUER]);
    v.set_audience(&[aud]);
    jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .unwrap()
        .claims
}

fn user(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

#[tokio::test]
async fn discovery_names_the_provider_endpoints() {
    let n = RouterNode::start().await;
    let (status, d) = n.get("/.well-known/openid-configuration").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(d["issuer"], ISSUER);
    // The provider endpoints hang off the issuer (any node answers them);
    // the didmesh login endpoints name this node.
    assert_eq!(
        d["authorization_endpoint"],
        format!("{ISSUER}/oidc/authorize")
    );
    assert_eq!(d["token_endpoint"], format!("{ISSUER}/oidc/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{ISSUER}/oidc/userinfo"));
    assert_eq!(d["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(
        d["didmesh_token_endpoint"],
        format!("{}/v1/auth/token", n.url)
    );
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        d["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256", "EdDSA"])
    );
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
}

#[tokio::test]
async fn public_client_with_pkce_signs_in_with_a_browser_key_for_every_alg() {
    let n = node(&[]).await;
    let key = user(1);
    let (did, _) = n.register(&key).await;
    for (seed, alg) in [
        (51, IdTokenAlg::RS256),
        (52, IdTokenAlg::ES256),
        (53, IdTokenAlg::EdDSA),
    ] {
        let rp = register_client(&n, seed, "spa", false, alg).await;
        let (verifier, challenge) = pkce();
        let code = code_for(&n, &rp, Some(&challenge), &did, &key).await;
        let a = token(
            &n,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &rp.redirect_uri),
                ("client_id", &rp.client_id),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
        let body = a.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "openid");
        let id_token = body["id_token"].as_str().unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(id_token).unwrap().alg,
            match alg {
                IdTokenAlg::RS256 => jsonwebtoken::Algorithm::RS256,
                IdTokenAlg::ES256 => jsonwebtoken::Algorithm::ES256,
                IdTokenAlg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            }
        );
        let claims = verify_id_token(&n, id_token, &rp.client_id).await;
        assert_eq!(claims["sub"], did.as_str());
        assert_eq!(claims["azp"], rp.client_id.as_str());
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj", "the nonce is echoed");
        assert_eq!(claims["amr"], json!(["swk"]));
        assert_eq!(claims["acr"], "urn:didmesh:acr:1fa");
        assert!(claims["auth_time"].as_u64().unwrap() <= claims["iat"].as_u64().unwrap());

        // userinfo with the access token
        let access = body["access_token"].as_str().unwrap();
        let info = send(
            &n,
            Request::get("/oidc/userinfo")
                .header(header::AUTHORIZATION, format!("Bearer {access}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(info.status, StatusCode::OK, "{}", info.text);
        assert_eq!(info.json(), json!({"sub": did}));
    }
    // userinfo without a token, and with a forged one (RFC 6750 §3)
    let none = send(
        &n,
        Request::get("/oidc/userinfo").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"didmesh\""
    );
    // a well-formed token by a key that is not a member's
    let forged = didmesh_tests::issuer::TokenIssuer::new([9; 32]).mint(&user(99), Some("x"));
    let bad = send(
        &n,
        Request::get("/oidc/userinfo")
            .header(header::AUTHORIZATION, format!("Bearer {forged}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
}

#[tokio::test]
async fn confidential_client_authenticates_with_basic_and_with_post() {
    let n = node(&[]).await;
    let key = user(2);
    let (did, _) = n.register(&key).await;
    let rp = register_client(&n, 61, "web", true, IdTokenAlg::RS256).await;
    let secret = rp.secret.clone().unwrap();

    // Basic, no PKCE (allowed for a confidential client)
    let code = code_for(&n, &rp, None, &did, &key).await;
    let a = token(
        &n,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &rp.redirect_uri),
        ],
        Some((&rp.client_id, &secret)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    verify_id_token(&n, a.json()["id_token"].as_str().unwrap(), &rp.client_id).await;

    // post, with PKCE as well
    let (verifier, challenge) = pkce();
    let code = code_for(&n, &rp, Some(&challenge), &did, &key).await;
    let a = token(
        &n,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &rp.redirect_uri),
            ("client_id", &rp.client_id),
            ("client_secret", &secret),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let claims = verify_id_token(&n, a.json()["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(claims["sub"], did.as_str());
}

#[tokio::test]
async fn token_refusals_have_the_rfc_error_and_no_token() {
    let n = node(&[]).await;
    let key = user(3);
    let (did, _) = n.register(&key).await;
    let public = register_client(&n, 71, "spa", false, IdTokenAlg::ES256).await;
    let web = register_client(&n, 72, "web", true, IdTokenAlg::RS256).await;
    let secret = web.secret.clone().unwrap();
    let grant = |code: &str, rp: &Rp| {
        vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".to_string(), code.to_string()),
            ("redirect_uri".to_string(), rp.redirect_uri.clone()),
            ("client_id".to_string(), rp.client_id.clone()),
        ]
    };
    let with = |mut base: Vec<(String, String)>, extra: &[(&str, &str)]| {
        base.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        base
    };
    let refs = |v: &Vec<(String, String)>| {
        v.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    async fn post(
        n: &RouterNode,
        form: &[(String, String)],
        basic: Option<(&str, &str)>,
    ) -> Answer {
        let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        token(n, &f, basic).await
    }

    // wrong code_verifier
    let (verifier, challenge) = pkce();
    let code = code_for(&n, &public, Some(&challenge), &did, &key).await;
    let (other_verifier, _) = pkce();
    let a = post(
        &n,
        &with(grant(&code, &public), &[("code_verifier", &other_verifier)]),
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
    // missing code_verifier for a code with a challenge
    let a = post(&n, &grant(&code, &public), None).await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
    // a redirect_uri that differs from the request's
    let a = post(
        &n,
        &with(
            vec![
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), code.clone()),
                ("redirect_uri".into(), format!("{}/", public.redirect_uri)),
                ("client_id".into(), public.client_id.clone()),
            ],
            &[("code_verifier", &verifier)],
        ),
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
    // the right verifier still works (failed attempts did not use it up) …
    let ok = post(
        &n,
        &with(grant(&code, &public), &[("code_verifier", &verifier)]),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    // … once: a replayed code
    let a = post(
        &n,
        &with(grant(&code, &public), &[("code_verifier", &verifier)]),
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");

    // a code for another client, redeemed by the confidential client with
    // its own valid credentials
    let (verifier, challenge) = pkce();
    let code = code_for(&n, &public, Some(&challenge), &did, &key).await;
    let a = post(
        &n,
        &with(
            vec![
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), code.clone()),
                ("redirect_uri".into(), web.redirect_uri.clone()),
                ("code_verifier".into(), verifier.clone()),
            ],
            &[],
        ),
        Some((&web.client_id, &secret)),
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");

    // wrong client secret: Basic → 401 with WWW-Authenticate: Basic
    let code = code_for(&n, &web, None, &did, &key).await;
    let no_id: Vec<(String, String)> = refs(&grant(&code, &web))
        .into_iter()
        .filter(|(k, _)| k != "client_id")
        .collect();
    let a = post(&n, &no_id, Some((&web.client_id, "wrong-secret"))).await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(a.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // post → 401 too
    let a = post(
        &n,
        &with(grant(&code, &web), &[("client_secret", "wrong-secret")]),
        None,
    )
    .await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "invalid_client");
    // no secret at all for a confidential client
    let a = post(&n, &grant(&code, &web), None).await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "invalid_client");
    // two methods at once
    let a = post(
        &n,
        &with(no_id.clone(), &[("client_secret", &secret)]),
        Some((&web.client_id, &secret)),
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_request");
    // the code is still good after all these refusals
    let a = post(&n, &no_id, Some((&web.client_id, &secret))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);

    // grant types and malformed requests
    let a = post(&n, &[("grant_type".into(), "password".into())], None).await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let a = post(&n, &[("code".into(), "x".into())], None).await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = post(
        &n,
        &[
            ("grant_type".into(), "authorization_code".into()),
            ("grant_type".into(), "authorization_code".into()),
        ],
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_request");
    let a = post(
        &n,
        &with(grant("garbage", &public), &[("code_verifier", &verifier)]),
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
    let a = post(
        &n,
        &[
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), "x".into()),
            ("client_id".into(), "nobody.app".into()),
        ],
        None,
    )
    .await;
    assert_refused(&a, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let n = node(&["--code-ttl", "1"]).await;
    let key = user(4);
    let (did, _) = n.register(&key).await;
    let rp = register_client(&n, 81, "spa", false, IdTokenAlg::EdDSA).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&n, &rp, Some(&challenge), &did, &key).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let a = token(
        &n,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &rp.redirect_uri),
            ("client_id", &rp.client_id),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(a.text.contains("expired"), "{}", a.text);
}

#[tokio::test]
async fn unregistered_redirect_uris_get_an_error_page_never_a_redirect() {
    let n = node(&[]).await;
    let rp = register_client(&n, 91, "spa", false, IdTokenAlg::RS256).await;
    let (_, challenge) = pkce();
    let base = auth_params(&rp, Some(&challenge));
    for bad in [
        "https://evil.example/callback".to_string(),
        format!("{REDIRECT}/"),
        format!("{REDIRECT}?x=1"),
        "http://localhost:5000/cb".to_string(),
        "http://localhost:5000/cb?x=1&y=2".to_string(),
        REDIRECT.to_uppercase(),
    ] {
        let params: Vec<(&str, &str)> = base
            .iter()
            .map(|(k, v)| {
                if *k == "redirect_uri" {
                    (*k, bad.as_str())
                } else {
                    (*k, *v)
                }
            })
            .collect();
        let a = authorize(&n, &params).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
        assert!(a.location().is_none(), "{bad}: redirected");
        assert!(a.text.contains("not registered"), "{}", a.text);
        assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    }
    // an unknown client, a missing redirect_uri: the same
    for params in [
        vec![
            ("response_type", "code"),
            ("client_id", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.x"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", rp.client_id.as_str()),
            ("scope", "openid"),
        ],
        vec![
            ("response_type", "code"),
            ("client_id", rp.client_id.as_str()),
            ("client_id", rp.client_id.as_str()),
            ("redirect_uri", REDIRECT),
        ],
    ] {
        let a = authorize(&n, &params).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
        assert!(a.location().is_none());
    }
    // the registered one with its own query is accepted
    let params: Vec<(&str, &str)> = base
        .iter()
        .map(|(k, v)| {
            if *k == "redirect_uri" {
                (*k, "http://localhost:5000/cb?x=1")
            } else {
                (*k, *v)
            }
        })
        .collect();
    assert_eq!(authorize(&n, &params).await.status, StatusCode::OK);
}

#[tokio::test]
async fn authorization_errors_redirect_with_error_state_and_iss() {
    let n = node(&[]).await;
    let public = register_client(&n, 92, "spa", false, IdTokenAlg::RS256).await;
    let (_, challenge) = pkce();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        // a public client without PKCE
        (auth_params(&public, None), "invalid_request"),
        (
            {
                let mut p = auth_params(&public, None);
                p.push(("code_challenge", &challenge));
                p.push(("code_challenge_method", "plain"));
                p
            },
            "invalid_request",
        ),
        (
            {
                let mut p = auth_params(&public, None);
                p.push(("code_challenge", &challenge));
                p
            },
            "invalid_request",
        ),
        (
            {
                let mut p = auth_params(&public, Some(&challenge));
                p[0] = ("response_type", "token");
                p
            },
            "unsupported_response_type",
        ),
        (
            {
                let mut p = auth_params(&public, Some(&challenge));
                p[3] = ("scope", "profile");
                p
            },
            "invalid_scope",
        ),
        (
            {
                let mut p = auth_params(&public, Some(&challenge));
                p.push(("prompt", "none"));
                p
            },
            "login_required",
        ),
        (
            {
                let mut p = auth_params(&public, Some(&challenge));
                p.push(("request", "eyJ.x.y"));
                p
            },
            "request_not_supported",
        ),
        (
            {
                let mut p = auth_params(&public, Some(&challenge));
                p.push(("nonce", "again"));
                p
            },
            "invalid_request",
        ),
    ];
    for (params, error) in cases {
        let a = authorize(&n, &params).await;
        assert_eq!(a.status, StatusCode::FOUND, "{error}: {}", a.text);
        let loc = a.location().unwrap();
        assert!(loc.starts_with(&format!("{REDIRECT}?")), "{loc}");
        let p = redirect_params(&loc);
        assert_eq!(p["error"], error, "{loc}");
        assert_eq!(p["state"], "st&te 1");
        assert_eq!(p["iss"], ISSUER);
        assert!(!p.contains_key("code"));
    }
}

#[tokio::test]
async fn the_page_carries_the_request_safely_with_strict_headers() {
    let n = node(&["--webauthn-origin", "http://localhost:7000"]).await;
    let rp = register_client(&n, 93, "spa", false, IdTokenAlg::RS256).await;
    let (_, challenge) = pkce();
    let mut params = auth_params(&rp, Some(&challenge));
    params.push(("login_hint", "</script><script>alert(1)</script>"));
    let a = authorize(&n, &params).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(
        !a.text.contains("<script>alert"),
        "the hint closed the element"
    );
    let data = page_data(&a.text);
    assert_eq!(data["login_hint"], "</script><script>alert(1)</script>");
    assert_eq!(data["client_id"], rp.client_id.as_str());
    assert_eq!(data["client_name"], "App spa");
    assert_eq!(data["redirect_uri"], REDIRECT);
    assert_eq!(data["node_url"], n.url.as_str());
    assert_eq!(data["rp_id"], "didmesh.local");
    assert!(data["cancel_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{REDIRECT}?error=access_denied")));
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        csp.contains("http://localhost:7000") && csp.contains(&n.url),
        "{csp}"
    );
    assert_eq!(a.headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
    for path in ["/oidc/static/signin.js", "/oidc/static/signin.css"] {
        let s = send(&n, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(s.status, StatusCode::OK, "{path}");
    }
    // CORS: an accepted origin is echoed (preflight too), another is not.
    // `/v1/ops` too: the page creates DIDs and adds passkeys from the
    // issuer's origin (the front door) at its node.
    for path in ["/oidc/signin/challenge", "/v1/ops"] {
        let pre = send(
            &n,
            Request::options(path)
                .header(header::ORIGIN, "http://localhost:7000")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(pre.status.is_success(), "{path}: {}", pre.status);
        assert_eq!(
            pre.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:7000",
            "{path}"
        );
        let evil = send(
            &n,
            Request::options(path)
                .header(header::ORIGIN, "https://evil.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(
            evil.headers
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_request_handle_from_another_node_is_refused() {
    let a = node(&[]).await;
    let b = node(&[]).await;
    let key = user(5);
    let (did, _) = a.register(&key).await;
    b.register(&key).await;
    let rp = register_client(&a, 94, "spa", false, IdTokenAlg::RS256).await;
    let (_, challenge) = pkce();
    let handle = request_handle(&a, &auth_params(&rp, Some(&challenge))).await;
    let (status, body) = post_json(
        &b,
        "/oidc/signin/challenge",
        json!({"request": handle, "did": did}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request_handle");
    // a tampered handle at its own node too
    let mut tampered = handle.clone();
    tampered.insert(5, 'A');
    let (status, body) = post_json(
        &a,
        "/oidc/signin/challenge",
        json!({"request": tampered, "did": did}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn disputed_or_deactivated_dids_get_no_code() {
    let n = node(&[]).await;
    let rp = register_client(&n, 95, "spa", false, IdTokenAlg::RS256).await;
    let (_, challenge) = pkce();

    // deactivated between the challenge and the completion
    let key = user(6);
    let (did, genesis) = n.register(&key).await;
    let handle = request_handle(&n, &auth_params(&rp, Some(&challenge))).await;
    let (_, ch) = post_json(
        &n,
        "/oidc/signin/challenge",
        json!({"request": handle, "did": did}),
    )
    .await;
    submit(
        &n,
        &Operation::deactivate(&did, genesis, now(), &key).unwrap(),
    )
    .await;
    let sig = sign_b64(&key, ch["message"].as_str().unwrap().as_bytes());
    let (status, body) = post_json(
        &n,
        "/oidc/signin/complete",
        json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "did_deactivated");
    assert!(body.get("redirect").is_none());

    // disputed: its only rotation key signed two conflicting updates
    let key = user(7);
    let (did, genesis) = n.register(&key).await;
    let handle = request_handle(&n, &auth_params(&rp, Some(&challenge))).await;
    let (_, ch) = post_json(
        &n,
        "/oidc/signin/challenge",
        json!({"request": handle, "did": did}),
    )
    .await;
    for alias in ["at://one.example", "at://two.example"] {
        let mut s = DidState::single_key(public_of(&key));
        s.also_known_as.push(alias.into());
        submit(
            &n,
            &Operation::update(&did, genesis, s, now(), &key).unwrap(),
        )
        .await;
    }
    let sig = sign_b64(&key, ch["message"].as_str().unwrap().as_bytes());
    let (status, body) = post_json(
        &n,
        "/oidc/signin/complete",
        json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "did_disputed");

    // deactivated after the code was issued: the token endpoint refuses
    let key = user(8);
    let (did, genesis) = n.register(&key).await;
    let (verifier, challenge) = pkce();
    let code = code_for(&n, &rp, Some(&challenge), &did, &key).await;
    submit(
        &n,
        &Operation::deactivate(&did, genesis, now(), &key).unwrap(),
    )
    .await;
    let a = token(
        &n,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &rp.redirect_uri),
            ("client_id", &rp.client_id),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_refused(&a, StatusCode::BAD_REQUEST, "invalid_grant");
}

// ---- passkeys --------------------------------------------------------------

/// A software WebAuthn authenticator: what a browser returns from
/// `navigator.credentials.get`.
fn assertion(
    key: &p256::ecdsa::SigningKey,
    cred: &[u8],
    challenge_b64: &str,
    origin: &str,
    rp_id: &str,
    count: u32,
    user_handle: Option<&str>,
) -> Assertion {
    let cd = format!(
        r#"{{"type":"webauthn.get","challenge":"{challenge_b64}","origin":"{origin}","crossOrigin":false}}"#
    );
    let mut ad = Sha256::digest(rp_id.as_bytes()).to_vec();
    ad.push(0x05); // UP | UV
    ad.extend_from_slice(&count.to_be_bytes());
    let mut signed = ad.clone();
    signed.extend_from_slice(&Sha256::digest(cd.as_bytes()));
    let sig: p256::ecdsa::Signature = key.sign(&signed);
    Assertion {
        credential_id: URL_SAFE_NO_PAD.encode(cred),
        authenticator_data: URL_SAFE_NO_PAD.encode(&ad),
        client_data_json: URL_SAFE_NO_PAD.encode(cd.as_bytes()),
        signature: URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes()),
        user_handle: user_handle.map(|h| URL_SAFE_NO_PAD.encode(h.as_bytes())),
    }
}

/// A DID with a browser key and a passkey.
async fn passkey_did(n: &RouterNode, seed: u8) -> (String, p256::ecdsa::SigningKey, Vec<u8>) {
    let key = user(seed);
    let (did, genesis) = n.register(&key).await;
    let pk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let cred = vec![seed; 16];
    let mut s = DidState::single_key(public_of(&key));
    s.passkeys.push(Passkey {
        id: "passkey-1".into(),
        credential_id: URL_SAFE_NO_PAD.encode(&cred),
        public_key_multibase: P256Key::from_sec1(
            pk.verifying_key().to_encoded_point(true).as_bytes(),
        )
        .unwrap(),
    });
    submit(
        n,
        &Operation::update(&did, genesis, s, now(), &key).unwrap(),
    )
    .await;
    (did, pk, cred)
}

/// One passkey sign-in attempt: challenge (for `did`, or usernameless),
/// assertion made by `make`, completion.
async fn passkey_signin(
    n: &RouterNode,
    handle: &str,
    did: Option<&str>,
    make: impl Fn(&str) -> Assertion,
) -> (StatusCode, Value) {
    let body = match did {
        Some(d) => json!({"request": handle, "did": d}),
        None => json!({"request": handle, "passkey": true}),
    };
    let (status, ch) = post_json(n, "/oidc/signin/challenge", body).await;
    assert_eq!(status, StatusCode::OK, "{ch}");
    let a = make(ch["webauthn_challenge"].as_str().unwrap());
    let mut done = json!({"request": handle, "nonce": ch["nonce"], "assertion": a});
    if let Some(d) = did {
        done["did"] = json!(d);
    }
    post_json(n, "/oidc/signin/complete", done).await
}

#[tokio::test]
async fn passkeys_sign_in_usernameless_and_refuse_other_origins_rps_and_clones() {
    let n = node(&["--webauthn-origin", "http://localhost:7000"]).await;
    let rp = register_client(&n, 96, "spa", false, IdTokenAlg::ES256).await;
    let (did, pk, cred) = passkey_did(&n, 20).await;
    let (verifier, challenge) = pkce();
    let params = auth_params(&rp, Some(&challenge));

    // usernameless, from an extra accepted origin, counter 5
    let handle = request_handle(&n, &params).await;
    let (status, done) = passkey_signin(&n, &handle, None, |c| {
        assertion(
            &pk,
            &cred,
            c,
            "http://localhost:7000",
            "didmesh.local",
            5,
            Some(&did),
        )
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let code = redirect_params(done["redirect"].as_str().unwrap())["code"].clone();
    let a = token(
        &n,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &rp.redirect_uri),
            ("client_id", &rp.client_id),
            ("code_verifier", &verifier),
        ],
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let claims = verify_id_token(&n, a.json()["id_token"].as_str().unwrap(), &rp.client_id).await;
    assert_eq!(claims["sub"], did.as_str());
    assert_eq!(claims["amr"], json!(["hwk", "user"]));

    // with the DID named, from the issuer's origin, counter 6
    let handle = request_handle(&n, &params).await;
    let (status, done) = passkey_signin(&n, &handle, Some(&did), |c| {
        assertion(&pk, &cred, c, ISSUER, "didmesh.local", 6, None)
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");

    // another origin, another RP ID: refused, no redirect
    for (origin, rp_id) in [
        ("https://evil.example", "didmesh.local"),
        (ISSUER, "evil.example"),
    ] {
        let handle = request_handle(&n, &params).await;
        let (status, body) = passkey_signin(&n, &handle, Some(&did), |c| {
            assertion(&pk, &cred, c, origin, rp_id, 7, None)
        })
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{origin} {rp_id}: {body}");
        assert_eq!(body["error"], "invalid_assertion");
        assert!(body.get("redirect").is_none());
    }

    // a cloned authenticator: the counter does not grow (6 again, then 3)
    for count in [6, 3] {
        let handle = request_handle(&n, &params).await;
        let (status, body) = passkey_signin(&n, &handle, Some(&did), |c| {
            assertion(&pk, &cred, c, ISSUER, "didmesh.local", count, None)
        })
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{count}: {body}");
        assert_eq!(body["error"], "passkey_cloned");
        assert!(body.get("redirect").is_none());
    }
    // the genuine authenticator carries on
    let handle = request_handle(&n, &params).await;
    let (status, body) = passkey_signin(&n, &handle, Some(&did), |c| {
        assertion(&pk, &cred, c, ISSUER, "didmesh.local", 8, None)
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        n.state
            .oidc
            .counters
            .get(&did, &URL_SAFE_NO_PAD.encode(&cred))
            .unwrap(),
        8
    );

    // a usernameless challenge cannot be redeemed with an Ed25519 signature
    let handle = request_handle(&n, &params).await;
    let (_, ch) = post_json(
        &n,
        "/oidc/signin/challenge",
        json!({"request": handle, "passkey": true}),
    )
    .await;
    let sig = sign_b64(&user(20), ch["message"].as_str().unwrap().as_bytes());
    let (status, body) = post_json(
        &n,
        "/oidc/signin/complete",
        json!({"request": handle, "nonce": ch["nonce"], "did": did, "signature": sig}),
    )
    .await;
    assert!(status.is_client_error(), "{body}");
    assert!(body.get("redirect").is_none());
}
