//! In-process tests of the layers, driven with `oneshot`. The only socket is a
//! JWKS server on 127.0.0.1:0, so that fetching, refetching on an unknown
//! `kid` and key removal are exercised for real.

use std::time::Duration;

use auth_layer::testkit::{forwarded_payload, jwks, now, TestIssuer};
use auth_layer::{
    AuthLayer, AuthMode, JwksCache, JwksConfig, TokenVerifier, TrustedHeaderLayer, VerifiedClaims,
    VerifierConfig,
};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::ServiceExt as _;

mod support;
use support::{claims, JwksServer, AUD, ISS, SUB};

/// A verifier on `server`, keys loaded, with the given tweaks.
async fn verifier_with(
    server: &JwksServer,
    tweak: impl FnOnce(&mut JwksConfig, &mut VerifierConfig),
    preload: bool,
) -> TokenVerifier {
    let mut jwks_config = JwksConfig::new(&server.url);
    let mut config = VerifierConfig::new(ISS, AUD);
    tweak(&mut jwks_config, &mut config);
    let cache = JwksCache::new(jwks_config).unwrap();
    if preload {
        cache.refresh().await.unwrap();
    }
    TokenVerifier::new(cache, config)
}

async fn verifier(server: &JwksServer) -> TokenVerifier {
    verifier_with(server, |_, _| {}, true).await
}

/// `/whoami` takes `Option<VerifiedClaims>`, `/me` takes `VerifiedClaims`.
fn app_with(layer: impl Into<Layered>) -> Router {
    let router = Router::new()
        .route(
            "/whoami",
            get(|claims: Option<VerifiedClaims>| async move {
                Json(json!({ "sub": claims.map(|c| c.sub.clone()) }))
            }),
        )
        .route(
            "/me",
            get(|claims: VerifiedClaims| async move { Json(json!({ "sub": claims.sub })) }),
        )
        .route(
            "/authorization",
            get(|headers: HeaderMap| async move {
                Json(json!({ "present": headers.contains_key(header::AUTHORIZATION) }))
            }),
        );
    match layer.into() {
        Layered::Jwt(l) => router.layer(l),
        Layered::Trusted(l) => router.layer(l),
        Layered::None => router,
    }
}

enum Layered {
    Jwt(AuthLayer),
    Trusted(TrustedHeaderLayer),
    None,
}

impl From<AuthLayer> for Layered {
    fn from(l: AuthLayer) -> Self {
        Layered::Jwt(l)
    }
}

impl From<TrustedHeaderLayer> for Layered {
    fn from(l: TrustedHeaderLayer) -> Self {
        Layered::Trusted(l)
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(app: &Router, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn with_token(app: &Router, path: &str, token: &str) -> Answer {
    send(app, path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Asserts a 401 `invalid_token` with this reason and an RFC 6750 challenge.
fn assert_invalid(answer: &Answer, reason: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "invalid_token");
    assert_eq!(answer.body["reason"], reason, "{:?}", answer.body);
    let challenge = answer.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn valid_token_yields_claims_in_both_modes() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier(&server).await;
    let token = issuer.mint(&claims());
    for mode in [AuthMode::Optional, AuthMode::Required] {
        let app = app_with(AuthLayer::new(v.clone(), mode));
        for path in ["/whoami", "/me"] {
            let answer = with_token(&app, path, &token).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body["sub"], SUB);
        }
    }
}

#[tokio::test]
async fn no_token_passes_when_optional_and_is_refused_when_required() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier(&server).await;

    let optional = app_with(AuthLayer::new(v.clone(), AuthMode::Optional));
    let answer = send(&optional, "/whoami", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["sub"], Value::Null);
    // The `VerifiedClaims` extractor itself refuses a request without claims.
    let answer = send(&optional, "/me", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "missing_token");

    let required = app_with(AuthLayer::new(v, AuthMode::Required));
    let answer = send(&required, "/whoami", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(answer.body["error"], "missing_token");
}

#[tokio::test]
async fn claims_extractor_without_any_layer_is_401() {
    let app = app_with(Layered::None);
    let answer = send(&app, "/me", &[]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "missing_token");
    let answer = send(&app, "/whoami", &[("authorization", "Bearer x.y.z")]).await;
    assert_eq!(answer.body["sub"], Value::Null, "no layer, no claims");
}

#[tokio::test]
async fn expired_token_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let mut c = claims();
    c.iat = now() - 3600;
    c.nbf = c.iat;
    c.exp = now() - 120; // beyond the 30 s leeway
    let answer = with_token(&app, "/whoami", &issuer.mint(&c)).await;
    assert_invalid(&answer, "expired");
}

#[tokio::test]
async fn token_within_leeway_is_accepted() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let mut c = claims();
    c.nbf = now() + 10; // clock skew under the 30 s leeway
    let answer = with_token(&app, "/whoami", &issuer.mint(&c)).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn token_not_yet_valid_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let mut c = claims();
    c.nbf = now() + 3600;
    c.exp = now() + 7200;
    let answer = with_token(&app, "/whoami", &issuer.mint(&c)).await;
    assert_invalid(&answer, "not_yet_valid");
}

#[tokio::test]
async fn tampered_token_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let token = issuer.mint(&claims());
    let (signed, signature) = token.rsplit_once('.').unwrap();

    // A flipped bit in the signature.
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[0] ^= 1;
    let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));
    assert_invalid(&with_token(&app, "/whoami", &forged).await, "bad_signature");

    // Another subject in the payload, original signature.
    let (header, _) = signed.split_once('.').unwrap();
    let mut c = claims();
    c.sub = "did:mesh:someoneelse".into();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    let forged = format!("{header}.{payload}.{signature}");
    assert_invalid(&with_token(&app, "/whoami", &forged).await, "bad_signature");

    // Not a JWT at all.
    assert_invalid(&with_token(&app, "/whoami", "garbage").await, "malformed");
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let mut c = claims();
    c.aud = "another-app".into();
    assert_invalid(
        &with_token(&app, "/whoami", &issuer.mint(&c)).await,
        "wrong_audience",
    );
    let mut c = claims();
    c.iss = "didmesh:another-network".into();
    assert_invalid(
        &with_token(&app, "/whoami", &issuer.mint(&c)).await,
        "wrong_issuer",
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let answer = with_token(&app, "/whoami", &token).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["error"], "invalid_token");
    }
    assert_invalid(
        &with_token(&app, "/whoami", &format!("{header}.{payload}.")).await,
        "unsupported_alg",
    );
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier(&server).await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Optional));
    let x = URL_SAFE_NO_PAD.encode(issuer.public_key());
    // The classic key-confusion attack: the public key, as raw bytes or as
    // its JWK text, used as an HMAC secret.
    for secret in [issuer.public_key().to_vec(), x.into_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("k1".into());
            let token =
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret))
                    .unwrap();
            assert_invalid(
                &with_token(&app, "/whoami", &token).await,
                "unsupported_alg",
            );
        }
    }
    assert_eq!(v.stats().signature_verifications, 0);
}

#[tokio::test]
async fn key_not_in_jwks_is_refused() {
    let trusted = TestIssuer::generate("k1");
    let stranger = TestIssuer::generate("k1"); // same kid, other key
    let unknown = TestIssuer::generate("k-unknown");
    let server = JwksServer::start(trusted.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    assert_invalid(
        &with_token(&app, "/whoami", &stranger.mint(&claims())).await,
        "bad_signature",
    );
    assert_invalid(
        &with_token(&app, "/whoami", &unknown.mint(&claims())).await,
        "unknown_kid",
    );
}

#[tokio::test]
async fn header_without_kid_or_with_other_typ_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let token = issuer.mint(&claims());
    let (_, rest) = token.split_once('.').unwrap();
    let no_kid = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#);
    assert_invalid(
        &with_token(&app, "/whoami", &format!("{no_kid}.{rest}")).await,
        "missing_kid",
    );
    let other_typ = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"dpop+jwt","kid":"k1"}"#);
    assert_invalid(
        &with_token(&app, "/whoami", &format!("{other_typ}.{rest}")).await,
        "unsupported_header",
    );
}

#[tokio::test]
async fn non_bearer_authorization_is_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let app = app_with(AuthLayer::new(verifier(&server).await, AuthMode::Optional));
    let answer = send(&app, "/whoami", &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_invalid(&answer, "bad_authorization_header");
}

#[tokio::test]
async fn key_added_later_is_accepted_after_refetch_without_restart() {
    let old = TestIssuer::generate("k1");
    let new = TestIssuer::generate("k2");
    let server = JwksServer::start(old.jwks(), None).await;
    let v = verifier_with(
        &server,
        |j, _| j.min_refetch_interval = Duration::ZERO,
        true,
    )
    .await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Optional));
    let token = new.mint(&claims());

    assert_invalid(&with_token(&app, "/whoami", &token).await, "unknown_kid");
    assert_eq!(server.hits(), 2, "the unknown kid caused one refetch");

    // A node joins the network: its key appears in the JWKS.
    server.set(jwks(&[&old, &new]));
    let answer = with_token(&app, "/whoami", &token).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["sub"], SUB);
    assert_eq!(v.jwks().kids(), ["k1", "k2"]);
}

#[tokio::test]
async fn a_burst_of_unknown_kids_costs_one_fetch() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    // Not preloaded, so the first unknown kid may fetch; then a long interval.
    let v = verifier_with(
        &server,
        |j, _| j.min_refetch_interval = Duration::from_secs(60),
        false,
    )
    .await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Optional));
    let attackers: Vec<_> = (0..50)
        .map(|i| TestIssuer::generate(&format!("made-up-{i}")).mint(&claims()))
        .collect();

    let answers =
        futures::future::join_all(attackers.iter().map(|t| with_token(&app, "/whoami", t))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::UNAUTHORIZED));
    assert_eq!(server.hits(), 1, "concurrent unknown kids share one fetch");

    for token in &attackers {
        with_token(&app, "/whoami", token).await;
    }
    assert_eq!(server.hits(), 1, "later unknown kids are rate-limited");
    assert_eq!(v.stats().jwks_fetches, 1);

    // The one fetch loaded the real key.
    let answer = with_token(&app, "/whoami", &issuer.mint(&claims())).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_repeated_token_costs_no_signature_check() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier(&server).await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Required));
    let token = issuer.mint(&claims());

    for _ in 0..20 {
        assert_eq!(with_token(&app, "/me", &token).await.status, StatusCode::OK);
    }
    let stats = v.stats();
    assert_eq!(stats.signature_verifications, 1);
    assert_eq!(stats.cache_hits, 19);

    // Refused tokens are not cached: each costs a check again.
    let mut c = claims();
    c.aud = "other".into();
    let bad = issuer.mint(&c);
    with_token(&app, "/me", &bad).await;
    with_token(&app, "/me", &bad).await;
    assert_eq!(v.stats().signature_verifications, 3);
}

#[tokio::test]
async fn a_cached_token_is_refused_after_its_exp() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier_with(&server, |_, c| c.leeway = Duration::ZERO, true).await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Required));
    let mut c = claims();
    c.exp = now() + 1;
    let token = issuer.mint(&c);

    assert_eq!(with_token(&app, "/me", &token).await.status, StatusCode::OK);
    assert_eq!(with_token(&app, "/me", &token).await.status, StatusCode::OK);
    assert_eq!(v.stats().cache_hits, 1);

    while now() <= c.exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_invalid(&with_token(&app, "/me", &token).await, "expired");
}

#[tokio::test]
async fn a_removed_key_stops_verifying_after_refetch_even_when_cached() {
    let leaving = TestIssuer::generate("k1");
    let staying = TestIssuer::generate("k2");
    let server = JwksServer::start(jwks(&[&leaving, &staying]), None).await;
    let v = verifier(&server).await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Required));
    let token = leaving.mint(&claims());
    let other = staying.mint(&claims());
    assert_eq!(with_token(&app, "/me", &token).await.status, StatusCode::OK);
    assert_eq!(with_token(&app, "/me", &other).await.status, StatusCode::OK);

    // k1's node is removed from the network.
    server.set(staying.jwks());
    v.jwks().refresh().await.unwrap();
    assert_invalid(&with_token(&app, "/me", &token).await, "unknown_kid");
    assert_eq!(with_token(&app, "/me", &other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_old_keys() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier_with(&server, |_, c| c.cache_capacity = 0, true).await;
    let app = app_with(AuthLayer::new(v.clone(), AuthMode::Required));
    server.fail(true);
    assert!(v.jwks().refresh().await.is_err());
    assert_eq!(
        with_token(&app, "/me", &issuer.mint(&claims()))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(v.jwks().kids(), ["k1"]);
}

#[tokio::test]
async fn periodic_refresh_picks_up_changes() {
    let old = TestIssuer::generate("k1");
    let new = TestIssuer::generate("k2");
    let server = JwksServer::start(old.jwks(), None).await;
    let v = verifier_with(
        &server,
        |j, _| {
            j.refresh_interval = Duration::from_millis(50);
            j.min_refetch_interval = Duration::from_secs(3600);
        },
        true,
    )
    .await;
    let _task = v.jwks().spawn_periodic_refresh();
    server.set(new.jwks());
    for _ in 0..100 {
        if v.jwks().kids() == ["k2"] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the periodic refresh did not pick up the new JWKS");
}

#[tokio::test]
async fn trusted_header_mode_reads_forwarded_claims() {
    let layer =
        TrustedHeaderLayer::new(HeaderName::from_static("x-jwt-payload"), AuthMode::Optional);
    let app = app_with(layer);
    let c = claims();

    let answer = send(&app, "/me", &[("x-jwt-payload", &forwarded_payload(&c))]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["sub"], SUB);

    // Padded base64url, as Envoy sends with `pad_forward_payload_header`.
    let padded = base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&c).unwrap());
    let answer = send(&app, "/me", &[("x-jwt-payload", &padded)]).await;
    assert_eq!(answer.body["sub"], SUB);

    let answer = send(&app, "/whoami", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["sub"], Value::Null);

    let answer = send(&app, "/whoami", &[("x-jwt-payload", "not base64!")]).await;
    assert_invalid(&answer, "bad_trusted_header");
    let answer = send(
        &app,
        "/whoami",
        &[("x-jwt-payload", &URL_SAFE_NO_PAD.encode(r#"{"sub":1}"#))],
    )
    .await;
    assert_invalid(&answer, "bad_trusted_header");
}

#[tokio::test]
async fn trusted_header_mode_ignores_and_strips_authorization() {
    let app = app_with(TrustedHeaderLayer::new(
        HeaderName::from_static("x-jwt-payload"),
        AuthMode::Optional,
    ));
    let garbage = [("authorization", "Bearer not-even-a-jwt")];
    let answer = send(&app, "/whoami", &garbage).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "Authorization is not ours to judge"
    );
    assert_eq!(answer.body["sub"], Value::Null);
    let answer = send(&app, "/authorization", &garbage).await;
    assert_eq!(answer.body["present"], false);

    let required = app_with(TrustedHeaderLayer::new(
        HeaderName::from_static("x-jwt-payload"),
        AuthMode::Required,
    ));
    let answer = send(&required, "/whoami", &garbage).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["error"], "missing_token");
}

#[tokio::test]
async fn fixed_jwks_needs_no_server() {
    let issuer = TestIssuer::generate("k1");
    let cache = JwksCache::from_json(&issuer.jwks().to_string()).unwrap();
    let v = TokenVerifier::new(cache, VerifierConfig::new(ISS, AUD));
    let claims = v.verify(&issuer.mint(&claims())).await.unwrap();
    assert_eq!(claims.sub, SUB);
    assert!(v.jwks().refresh().await.is_err());
}
