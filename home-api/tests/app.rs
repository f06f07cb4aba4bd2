//! The router driven with `oneshot`, in every auth mode. Tokens come from
//! `auth_layer::testkit`; the JWKS is fixed, so no socket is opened.

use std::time::Duration;

use auth_layer::testkit::{forwarded_payload, TestIssuer};
use auth_layer::{
    AuthLayer, AuthMode, Claims, JwksCache, TokenVerifier, TrustedHeaderLayer, VerifierConfig,
};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, StatusCode};
use axum::Router;
use home_api::activities::{HomeFeed, Visibility};
use home_api::{app, AppOptions, Auth};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

const ISS: &str = "didmesh:test";
const AUD: &str = "home-api";
const SUB: &str = "did:mesh:aaaabbbbccccddddeeeeffffgggghhhh";
const HOME: &str = "/api/activities/home";

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

fn claims() -> Claims {
    TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn feed(&self) -> HomeFeed {
        serde_json::from_slice(&self.bytes).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap()
    }
}

async fn get(app: &Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        bytes: response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn healthz_answers_without_auth() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let answer = get(&app, "/healthz", &[("authorization", "Bearer garbage")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.bytes, b"ok");
}

#[tokio::test]
async fn anonymous_caller_gets_the_public_activities() {
    let issuer = TestIssuer::generate("k1");
    let answer = get(&jwt_app(&issuer), HOME, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json = answer.json();
    assert!(json.get("user").is_none(), "{json}");
    let feed = answer.feed();
    assert_eq!(feed.activities.len(), 3);
    assert!(feed
        .activities
        .iter()
        .all(|a| a.visibility == Visibility::Public));
}

#[tokio::test]
async fn signed_in_caller_also_gets_a_private_activity() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let token = issuer.mint(&claims());
    let answer = get(&app, HOME, &[("authorization", &bearer(&token))]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let feed = answer.feed();
    assert_eq!(feed.user.as_deref(), Some(SUB));
    assert_eq!(feed.activities.len(), 4);
    let anonymous = get(&app, HOME, &[]).await.feed();
    assert_eq!(feed.activities[..3], anonymous.activities[..]);
    assert_eq!(feed.activities[3].visibility, Visibility::Private);
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_bearer_challenge() {
    let issuer = TestIssuer::generate("k1");
    let forger = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);

    let mut expired = claims();
    expired.iat -= 7200;
    expired.nbf -= 7200;
    expired.exp = expired.iat + 600;
    let mut other_audience = claims();
    other_audience.aud = "someone-else".into();

    let cases = [
        (issuer.mint(&expired), "expired"),
        (forger.mint(&claims()), "bad_signature"),
        (issuer.mint(&other_audience), "wrong_audience"),
        ("not.a.jwt".to_owned(), "malformed"),
    ];
    for (token, reason) in cases {
        let answer = get(&app, HOME, &[("authorization", &bearer(&token))]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{reason}");
        let challenge = answer.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
        assert_eq!(answer.json()["error"], "invalid_token");
        assert_eq!(answer.json()["reason"], reason);
    }
}

#[tokio::test]
async fn sidecar_and_jwt_modes_give_the_same_answer_for_the_same_claims() {
    let issuer = TestIssuer::generate("k1");
    let c = claims();
    let via_jwt = get(
        &jwt_app(&issuer),
        HOME,
        &[("authorization", &bearer(&issuer.mint(&c)))],
    )
    .await;
    let via_sidecar = get(
        &sidecar_app(),
        HOME,
        &[("x-jwt-payload", &forwarded_payload(&c))],
    )
    .await;
    assert_eq!(via_jwt.status, StatusCode::OK);
    assert_eq!(via_sidecar.status, StatusCode::OK);
    assert_eq!(via_jwt.bytes, via_sidecar.bytes);
    assert_eq!(via_sidecar.feed().user.as_deref(), Some(SUB));

    let anonymous_jwt = get(&jwt_app(&issuer), HOME, &[]).await;
    let anonymous_sidecar = get(&sidecar_app(), HOME, &[]).await;
    assert_eq!(anonymous_jwt.bytes, anonymous_sidecar.bytes);
}

#[tokio::test]
async fn sidecar_mode_ignores_authorization_and_refuses_a_malformed_header() {
    let app = sidecar_app();
    let answer = get(&app, HOME, &[("authorization", "Bearer forged.by.client")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.feed().user, None);

    let answer = get(&app, HOME, &[("x-jwt-payload", "%%%")]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"], "invalid_token");
}

#[tokio::test]
async fn off_mode_never_authenticates() {
    let issuer = TestIssuer::generate("k1");
    let app = app(Auth::Off, &AppOptions::default());
    let token = issuer.mint(&claims());
    let answer = get(&app, HOME, &[("authorization", &bearer(&token))]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.feed().user, None);
}
