//! Step-up routes (RFC 9470) behind both layers, driven with `oneshot`:
//! a token of a one-factor login on a route that needs `mfa` gets 401
//! `insufficient_user_authentication` with `acr_values`, a token of a
//! multi-factor login passes, other routes do not change. Tokens come from
//! the testkit issuer, which mints the node's claims (`Claims::for_login`)
//! with the `amr`/`acr` of issue 11.

use std::time::Duration;

use auth_layer::testkit::{forwarded_payload, TestIssuer};
use auth_layer::{
    AuthLayer, AuthMode, Claims, JwksCache, Mfa, RequireAuthn, TokenVerifier, TrustedHeaderLayer,
    VerifiedClaims, VerifierConfig, ACR_1FA, ACR_MFA,
};
use axum::body::Body;
use axum::http::{header, HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

mod support;
use support::{AUD, ISS, SUB};

/// The exact challenge a one-factor token gets on an `mfa` route.
const MFA_CHALLENGE: &str = "Bearer error=\"insufficient_user_authentication\", \
    error_description=\"this resource requires a sign-in with two or more factors\", \
    acr_values=\"urn:didmesh:acr:mfa\"";

fn one_factor() -> Claims {
    TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600))
}

fn mfa() -> Claims {
    TestIssuer::mfa_claims(ISS, AUD, SUB, Duration::from_secs(600))
}

/// A token of a node before issue 11: no `acr` at all.
fn legacy() -> Claims {
    let mut c = one_factor();
    c.acr = None;
    c
}

/// Routes with every kind of requirement, behind `outer`.
fn routes() -> Router {
    let sub = |c: VerifiedClaims| async move { Json(json!({ "sub": c.sub })) };
    Router::new()
        .route(
            "/public",
            get(|c: Option<VerifiedClaims>| async move {
                Json(json!({ "sub": c.map(|c| c.sub.clone()) }))
            }),
        )
        .route("/me", get(sub))
        .route("/mfa", get(sub).route_layer(RequireAuthn::mfa()))
        .route("/acr", get(sub).route_layer(RequireAuthn::acr(ACR_MFA)))
        .route("/acr-1fa", get(sub).route_layer(RequireAuthn::acr(ACR_1FA)))
        .route(
            "/recent",
            get(sub).route_layer(RequireAuthn::mfa().and_max_age(Duration::from_secs(300))),
        )
        .route(
            "/extractor",
            get(|c: Mfa| async move { Json(json!({ "sub": c.sub, "amr": c.amr })) }),
        )
}

fn jwt_app(issuer: &TestIssuer) -> Router {
    let jwks = JwksCache::from_json(&issuer.jwks().to_string()).unwrap();
    let verifier = TokenVerifier::new(jwks, VerifierConfig::new(ISS, AUD));
    routes().layer(AuthLayer::new(verifier, AuthMode::Optional))
}

fn sidecar_app() -> Router {
    routes().layer(TrustedHeaderLayer::new(
        HeaderName::from_static("x-jwt-payload"),
        AuthMode::Optional,
    ))
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    json: Value,
}

async fn get_with(app: &Router, path: &str, header: Option<(&str, String)>) -> Answer {
    let mut request = Request::get(path);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        challenge,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn with_token(app: &Router, path: &str, token: &str) -> Answer {
    get_with(
        app,
        path,
        Some(("authorization", format!("Bearer {token}"))),
    )
    .await
}

fn assert_step_up(a: &Answer, reason: &str, what: &str) {
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {}", a.json);
    assert_eq!(
        a.json["error"], "insufficient_user_authentication",
        "{what}"
    );
    assert_eq!(a.json["reason"], reason, "{what}");
    let challenge = a.challenge.as_deref().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_user_authentication\""),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("acr_values=\"urn:didmesh:acr:mfa\""),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn a_one_factor_token_gets_the_rfc_9470_challenge() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    for (claims, what) in [(one_factor(), "1fa"), (legacy(), "no acr")] {
        let token = issuer.mint(&claims);
        let a = with_token(&app, "/mfa", &token).await;
        assert_step_up(&a, "mfa_required", what);
        assert_eq!(a.challenge.as_deref(), Some(MFA_CHALLENGE), "{what}");
        assert_eq!(
            a.json,
            json!({
                "error": "insufficient_user_authentication",
                "reason": "mfa_required",
                "acr_values": ACR_MFA,
            })
        );
        // The same token again comes from the verified-token cache (the
        // layer's synchronous path): still refused.
        assert_step_up(
            &with_token(&app, "/mfa", &token).await,
            "mfa_required",
            what,
        );
        assert_step_up(
            &with_token(&app, "/extractor", &token).await,
            "mfa_required",
            what,
        );
        assert_step_up(
            &with_token(&app, "/acr", &token).await,
            "acr_required",
            what,
        );
    }
}

#[tokio::test]
async fn an_mfa_token_passes() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let token = issuer.mint(&mfa());
    for path in ["/mfa", "/acr", "/acr-1fa", "/recent", "/me", "/public"] {
        let a = with_token(&app, path, &token).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.json);
        assert_eq!(a.json["sub"], SUB, "{path}");
    }
    let a = with_token(&app, "/extractor", &token).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["amr"], json!(["swk", "mfa"]));
}

#[tokio::test]
async fn other_routes_are_unaffected() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    for claims in [one_factor(), legacy()] {
        let token = issuer.mint(&claims);
        for path in ["/public", "/me", "/acr-1fa"] {
            let a = with_token(&app, path, &token).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.json);
            assert_eq!(a.json["sub"], SUB);
        }
    }
    let anonymous = get_with(&app, "/public", None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.json["sub"], Value::Null);
}

#[tokio::test]
async fn no_token_is_missing_token_not_a_step_up() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    for path in ["/mfa", "/acr", "/recent", "/extractor"] {
        let a = get_with(&app, path, None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(a.challenge.as_deref(), Some("Bearer"), "{path}");
        assert_eq!(a.json["error"], "missing_token", "{path}");
    }
}

/// A token that claims `mfa` but was not signed by the network is refused
/// by the verifier before any step-up rule looks at its claims.
#[tokio::test]
async fn forged_mfa_claims_are_an_invalid_token() {
    let issuer = TestIssuer::generate("k1");
    let forger = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let a = with_token(&app, "/mfa", &forger.mint(&mfa())).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json["error"], "invalid_token");
    assert_eq!(a.json["reason"], "bad_signature");
}

#[tokio::test]
async fn an_old_sign_in_gets_max_age() {
    let issuer = TestIssuer::generate("k1");
    let app = jwt_app(&issuer);
    let mut old = mfa();
    old.auth_time -= 3600;
    let a = with_token(&app, "/recent", &issuer.mint(&old)).await;
    assert_step_up(&a, "auth_too_old", "old sign-in");
    assert!(
        a.challenge
            .as_deref()
            .unwrap()
            .ends_with(", max_age=\"300\""),
        "{:?}",
        a.challenge
    );
    assert_eq!(a.json["max_age"], 300);
    // Old is fine where no max_age is asked.
    assert_eq!(
        with_token(&app, "/mfa", &issuer.mint(&old)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_same_rules_hold_in_sidecar_mode() {
    let app = sidecar_app();
    let forwarded = |c: &Claims| Some(("x-jwt-payload", forwarded_payload(c)));
    for (claims, what) in [(one_factor(), "1fa"), (legacy(), "no acr")] {
        let a = get_with(&app, "/mfa", forwarded(&claims)).await;
        assert_step_up(&a, "mfa_required", what);
        assert_eq!(a.challenge.as_deref(), Some(MFA_CHALLENGE));
        let a = get_with(&app, "/me", forwarded(&claims)).await;
        assert_eq!(a.status, StatusCode::OK, "{what}");
    }
    let a = get_with(&app, "/mfa", forwarded(&mfa())).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["sub"], SUB);
}
