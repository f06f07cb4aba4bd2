//! `GET /api/activities/private`, the step-up route: a token of a
//! one-factor login gets 401 `insufficient_user_authentication` (RFC 9470)
//! with `acr_values="urn:didmesh:acr:mfa"`, a token of a multi-factor login
//! gets the caller's private activities, and `/api/activities/home` keeps
//! its public/personal split for both. Every auth mode, driven with
//! `oneshot`; tokens from `auth_layer::testkit` (the node's claims).

use std::time::Duration;

use auth_layer::testkit::{forwarded_payload, TestIssuer};
use auth_layer::{
    AuthLayer, AuthMode, Claims, JwksCache, TokenVerifier, TrustedHeaderLayer, VerifierConfig,
};
use axum::body::Body;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::Router;
use home_api::activities::{private_for, HomeFeed, PrivateFeed, Visibility};
use home_api::{app, AppOptions, Auth};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

const ISS: &str = "didmesh:test";
const AUD: &str = "home-api";
const SUB: &str = "did:mesh:aaaabbbbccccddddeeeeffffgggghhhh";
const HOME: &str = "/api/activities/home";
const PRIVATE: &str = "/api/activities/private";
const MFA_CHALLENGE: &str = "Bearer error=\"insufficient_user_authentication\", \
    error_description=\"this resource requires a sign-in with two or more factors\", \
    acr_values=\"urn:didmesh:acr:mfa\"";

fn one_factor() -> Claims {
    TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600))
}

fn mfa() -> Claims {
    TestIssuer::mfa_claims(ISS, AUD, SUB, Duration::from_secs(600))
}

fn jwt_app(issuer: &TestIssuer) -> Router {
    let jwks = JwksCache::from_json(&issuer.jwks().to_string()).unwrap();
    let verifier = TokenVerifier::new(jwks, VerifierConfig::new(ISS, AUD));
    app(
        Auth::Jwt(AuthLayer::new(verifier, AuthMode::Optional)),
        &AppOptions::default(),
    )
}

fn sidecar_app() -> Router {
    app(
        Auth::Sidecar(TrustedHeaderLayer::new(
            HeaderName::from_static("x-jwt-payload"),
            AuthMode::Optional,
        )),
        &AppOptions::default(),
    )
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap()
    }
}

async fn get(app: &Router, path: &str, header: Option<(&str, String)>) -> Answer {
    let mut request = Request::get(path);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    Answer {
        status: response.status(),
        challenge: response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned()),
        bytes: response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    }
}

fn bearer(issuer: &TestIssuer, claims: &Claims) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {}", issuer.mint(claims))))
}

fn forwarded(claims: &Claims) -> Option<(&'static str, String)> {
    Some(("x-jwt-payload", forwarded_payload(claims)))
}

fn assert_needs_mfa(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}");
    assert_eq!(a.challenge.as_deref(), Some(MFA_CHALLENGE), "{what}");
    assert_eq!(
        a.json(),
        json!({
            "error": "insufficient_user_authentication",
            "reason": "mfa_required",
            "acr_values": "urn:didmesh:acr:mfa",
        }),
        "{what}"
    );
}

#[tokio::test]
async fn a_one_factor_token_is_asked_to_step_up() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let mut legacy = one_factor();
    legacy.acr = None; // a token of a node before issue 11
    for (claims, what) in [(one_factor(), "1fa"), (legacy, "no acr")] {
        assert_needs_mfa(&get(&app, PRIVATE, bearer(&issuer, &claims)).await, what);
    }
}

#[tokio::test]
async fn an_mfa_token_gets_the_private_activities() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let a = get(&app, PRIVATE, bearer(&issuer, &mfa())).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let feed: PrivateFeed = serde_json::from_slice(&a.bytes).unwrap();
    assert_eq!(feed, private_for(SUB));
    assert_eq!(feed.user, SUB);
    assert_eq!(feed.activities.len(), 2);
    assert!(feed
        .activities
        .iter()
        .all(|a| a.visibility == Visibility::Private));
}

#[tokio::test]
async fn no_token_and_bad_tokens_are_refused_as_before() {
    let issuer = TestIssuer::generate("k1");
    let forger = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let a = get(&app, PRIVATE, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.challenge.as_deref(), Some("Bearer"));
    assert_eq!(a.json()["error"], "missing_token");
    // Claims saying mfa, signed by someone else: the verifier refuses them
    // before the step-up rule reads them.
    let a = get(&app, PRIVATE, bearer(&forger, &mfa())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "invalid_token");
    assert_eq!(a.json()["reason"], "bad_signature");
}

#[tokio::test]
async fn the_home_feed_is_unchanged_by_the_factors() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let one = get(&app, HOME, bearer(&issuer, &one_factor())).await;
    let two = get(&app, HOME, bearer(&issuer, &mfa())).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.bytes, two.bytes, "home does not depend on the factors");
    let feed: HomeFeed = serde_json::from_slice(&one.bytes).unwrap();
    assert_eq!(feed.user.as_deref(), Some(SUB));
    assert_eq!(feed.activities.len(), 4);
    let anonymous: HomeFeed = serde_json::from_slice(&get(&app, HOME, None).await.bytes).unwrap();
    assert_eq!(anonymous.user, None);
    assert_eq!(anonymous.activities.len(), 3);
}

#[tokio::test]
async fn sidecar_mode_applies_the_same_rule_to_forwarded_claims() {
    let app = sidecar_app();
    assert_needs_mfa(
        &get(&app, PRIVATE, forwarded(&one_factor())).await,
        "sidecar 1fa",
    );
    let a = get(&app, PRIVATE, forwarded(&mfa())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<PrivateFeed>(&a.bytes).unwrap(),
        private_for(SUB)
    );
    // Same bytes as JWT mode for the same claims.
    let issuer = TestIssuer::generate("k1");
    let c = mfa();
    let via_jwt = get(&jwt_app(&issuer), PRIVATE, bearer(&issuer, &c)).await;
    let via_sidecar = get(&app, PRIVATE, forwarded(&c)).await;
    assert_eq!(via_jwt.bytes, via_sidecar.bytes);
}

#[tokio::test]
async fn off_mode_never_serves_the_private_route() {
    let issuer = TestIssuer::generate("k1");
    let app = app(Auth::Off, &AppOptions::default());
    let a = get(&app, PRIVATE, bearer(&issuer, &mfa())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["error"], "missing_token");
}
