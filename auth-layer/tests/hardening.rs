//! Attacks on the relying party, each reproduced end to end:
//!
//! * a removed member's key must stop verifying within the JWKS answer's
//!   `Cache-Control: max-age` (bounded by the configured ceiling), also for a
//!   token already in the verified-token cache;
//! * claims that only look valid: an `exp` of 2^64-1, an empty or non-DID
//!   `sub`, an `iat` in the future, a lifetime above the configured maximum;
//! * garbage of every shape given to the parsing entry point must give an
//!   error, never a panic.
//!
//! The JWKS server is an axum app on 127.0.0.1:0 whose document and
//! `Cache-Control` header the test changes while it runs.

use std::time::{Duration, Instant};

use auth_layer::testkit::{jwks, now, TestIssuer};
use auth_layer::{
    AuthLayer, AuthMode, JwksCache, JwksConfig, TokenVerifier, VerifiedClaims, VerifierConfig,
};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tower::ServiceExt as _;

mod support;
use support::{claims, JwksServer, AUD, ISS};

/// A verifier on `server` with its keys loaded and the periodic refresh
/// running, as home-api sets it up.
async fn verifier_with(
    server: &JwksServer,
    tweak: impl FnOnce(&mut JwksConfig, &mut VerifierConfig),
) -> TokenVerifier {
    let mut jwks_config = JwksConfig::new(&server.url);
    let mut config = VerifierConfig::new(ISS, AUD);
    tweak(&mut jwks_config, &mut config);
    let cache = JwksCache::new(jwks_config).unwrap();
    cache.refresh().await.unwrap();
    drop(cache.spawn_periodic_refresh());
    TokenVerifier::new(cache, config)
}

fn app(verifier: &TokenVerifier) -> Router {
    Router::new()
        .route(
            "/me",
            get(|claims: VerifiedClaims| async move { Json(json!({ "sub": claims.sub })) }),
        )
        .layer(AuthLayer::new(verifier.clone(), AuthMode::Required))
}

struct Answer {
    status: StatusCode,
    body: Value,
}

async fn call(app: &Router, token: &str) -> Answer {
    let request = Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn assert_invalid(answer: &Answer, reason: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.body["error"], "invalid_token", "{:?}", answer.body);
    assert_eq!(answer.body["reason"], reason, "{:?}", answer.body);
}

/// Polls until a token of the removed key `a` (the cached one and a fresh
/// one) is refused, and returns how long that took after the removal.
async fn wait_until_refused(
    app: &Router,
    a: &TestIssuer,
    cached: &str,
    deadline: Duration,
) -> Duration {
    let removed_at = Instant::now();
    loop {
        let old = call(app, cached).await;
        let new = call(app, &a.mint(&claims())).await;
        if old.status == StatusCode::UNAUTHORIZED && new.status == StatusCode::UNAUTHORIZED {
            assert_invalid(&old, "unknown_kid");
            assert_invalid(&new, "unknown_kid");
            return removed_at.elapsed();
        }
        assert!(
            removed_at.elapsed() < deadline,
            "key a still accepted {:?} after its removal (old token {}, new token {})",
            removed_at.elapsed(),
            old.status,
            new.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_removed_key_is_refused_within_max_age_even_for_a_cached_token() {
    let a = TestIssuer::generate("a");
    let b = TestIssuer::generate("b");
    let server = JwksServer::start(jwks(&[&a, &b]), Some("public, max-age=2")).await;
    // The floor is lowered so that this test sees max-age itself honoured.
    let v = verifier_with(&server, |j, _| j.min_cache_age = Duration::from_secs(1)).await;
    let app = app(&v);

    let token_a = a.mint(&claims());
    let token_b = b.mint(&claims());
    for _ in 0..3 {
        assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    }
    assert!(
        v.stats().cache_hits >= 2,
        "token a is in the verified-token cache"
    );

    // a's member is removed: the network's JWKS no longer lists it.
    server.set(b.jwks());
    let took = wait_until_refused(&app, &a, &token_a, Duration::from_secs(2 + 3)).await;
    eprintln!("key a refused {took:?} after its removal (max-age=2)");
    assert_eq!(call(&app, &token_b).await.status, StatusCode::OK);
}

#[tokio::test]
async fn without_the_periodic_task_requests_revalidate_a_stale_set() {
    // An application that never called spawn_periodic_refresh: a request
    // that finds the set stale (a cache hit included) starts the refetch.
    let a = TestIssuer::generate("a");
    let b = TestIssuer::generate("b");
    let server = JwksServer::start(jwks(&[&a, &b]), Some("max-age=2")).await;
    let mut jwks_config = JwksConfig::new(&server.url);
    jwks_config.min_cache_age = Duration::from_secs(1);
    let cache = JwksCache::new(jwks_config).unwrap();
    cache.refresh().await.unwrap();
    let v = TokenVerifier::new(cache, VerifierConfig::new(ISS, AUD));
    let app = app(&v);
    let token_a = a.mint(&claims());
    assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    server.set(b.jwks());
    wait_until_refused(&app, &a, &token_a, Duration::from_secs(2 + 3)).await;
    assert_eq!(call(&app, &b.mint(&claims())).await.status, StatusCode::OK);
}

#[tokio::test]
async fn max_age_above_the_ceiling_is_capped() {
    let a = TestIssuer::generate("a");
    let b = TestIssuer::generate("b");
    // A proxy (or a hostile node) asks for a day of caching.
    let server = JwksServer::start(jwks(&[&a, &b]), Some("max-age=86400")).await;
    let v = verifier_with(&server, |j, _| {
        j.max_cache_age = Duration::from_secs(2);
        j.min_cache_age = Duration::from_secs(1);
    })
    .await;
    let app = app(&v);
    let token_a = a.mint(&claims());
    assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    server.set(b.jwks());
    wait_until_refused(&app, &a, &token_a, Duration::from_secs(2 + 3)).await;
    assert_eq!(call(&app, &b.mint(&claims())).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_default_ceiling_is_60_seconds() {
    let config = JwksConfig::new("http://127.0.0.1:1/jwks.json");
    assert_eq!(config.max_cache_age, Duration::from_secs(60));
    assert!(config.refresh_interval <= config.max_cache_age);
    assert!(config.min_cache_age >= Duration::from_secs(2));
}

#[tokio::test]
async fn without_cache_control_the_refresh_interval_applies() {
    let a = TestIssuer::generate("a");
    let b = TestIssuer::generate("b");
    let server = JwksServer::start(jwks(&[&a, &b]), None).await;
    let v = verifier_with(&server, |j, _| {
        j.refresh_interval = Duration::from_secs(3);
        j.min_cache_age = Duration::from_secs(1);
    })
    .await;
    let app = app(&v);
    let token_a = a.mint(&claims());
    assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    server.set(b.jwks());

    // Within the interval the old set is used as is: no refetch yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(call(&app, &token_a).await.status, StatusCode::OK);
    assert_eq!(server.hits(), 1, "no refetch before the refresh interval");

    wait_until_refused(&app, &a, &token_a, Duration::from_secs(2 + 3)).await;
    assert_eq!(call(&app, &b.mint(&claims())).await.status, StatusCode::OK);
}

#[tokio::test]
async fn max_age_zero_does_not_make_us_hammer_the_node() {
    let a = TestIssuer::generate("a");
    let server = JwksServer::start(a.jwks(), Some("no-cache, max-age=0")).await;
    let v = verifier_with(&server, |j, _| j.min_cache_age = Duration::from_secs(1)).await;
    let app = app(&v);
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(call(&app, &a.mint(&claims())).await.status, StatusCode::OK);
        calls += 1;
    }
    assert!(calls > 50);
    // One at start, then at most one per floor (1 s) - plus one in flight.
    assert!(server.hits() <= 4, "{} fetches in 2.5 s", server.hits());
}

/// A payload signed by `issuer` with `overrides` applied to valid claims.
fn signed(issuer: &TestIssuer, overrides: Value) -> String {
    let mut payload = serde_json::to_value(claims()).unwrap();
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            payload.as_object_mut().unwrap().remove(k);
        } else {
            payload[k] = v.clone();
        }
    }
    issuer.mint_raw(&payload)
}

#[tokio::test]
async fn claims_that_only_look_valid_are_refused() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier_with(&server, |_, _| {}).await;
    let app = app(&v);
    let t = now();
    let day = 24 * 3600;

    let cases: &[(&str, Value, &str)] = &[
        (
            "exp = 2^64-1",
            json!({ "exp": u64::MAX }),
            "lifetime_too_long",
        ),
        (
            "exp = 2^63",
            json!({ "exp": 1u64 << 63 }),
            "lifetime_too_long",
        ),
        (
            "exp a year out",
            json!({ "exp": t + 365 * day }),
            "lifetime_too_long",
        ),
        (
            "exp - iat above 24 h, iat in the past",
            json!({ "iat": t - 3600, "nbf": t - 3600, "exp": t + day }),
            "lifetime_too_long",
        ),
        ("empty sub", json!({ "sub": "" }), "invalid_sub"),
        ("sub not a DID", json!({ "sub": "alice" }), "invalid_sub"),
        ("sub did: alone", json!({ "sub": "did:" }), "invalid_sub"),
        (
            "sub without an id",
            json!({ "sub": "did:mesh:" }),
            "invalid_sub",
        ),
        (
            "sub with a space",
            json!({ "sub": "did:mesh:a b" }),
            "invalid_sub",
        ),
        (
            "sub upper-case method",
            json!({ "sub": "did:MESH:abc" }),
            "invalid_sub",
        ),
        (
            "iat an hour in the future",
            json!({ "iat": t + 3600, "exp": t + 7200 }),
            "iat_in_future",
        ),
        (
            "nbf an hour in the future",
            json!({ "nbf": t + 3600, "exp": t + 7200 }),
            "not_yet_valid",
        ),
        ("no nbf", json!({ "nbf": null }), "malformed"),
        ("no exp", json!({ "exp": null }), "malformed"),
        ("no sub", json!({ "sub": null }), "malformed"),
        ("no iat", json!({ "iat": null }), "malformed"),
        ("exp a float", json!({ "exp": 1e30 }), "malformed"),
        ("exp negative", json!({ "exp": -1 }), "malformed"),
        (
            "exp a string",
            json!({ "exp": (t + 60).to_string() }),
            "malformed",
        ),
        ("sub a number", json!({ "sub": 7 }), "malformed"),
    ];
    for (name, overrides, reason) in cases {
        let answer = call(&app, &signed(&issuer, overrides.clone())).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["reason"], *reason, "{name}: {:?}", answer.body);
    }

    // The honest edges still pass: a did:key subject, a 23 h token, an iat
    // a few seconds ahead (clock skew within the leeway).
    let fine: &[(&str, Value)] = &[
        (
            "did:key",
            json!({ "sub": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK" }),
        ),
        ("23 h", json!({ "exp": t + 23 * 3600 })),
        ("iat skewed 10 s", json!({ "iat": t + 10 })),
        (
            "pct-encoded id",
            json!({ "sub": "did:web:example.com%3A8443:u:alice" }),
        ),
    ];
    for (name, overrides) in fine {
        let answer = call(&app, &signed(&issuer, overrides.clone())).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {:?}", answer.body);
    }
}

#[tokio::test]
async fn the_maximum_lifetime_is_configurable() {
    let issuer = TestIssuer::generate("k1");
    let server = JwksServer::start(issuer.jwks(), None).await;
    let v = verifier_with(&server, |_, c| {
        c.max_token_lifetime = Duration::from_secs(900)
    })
    .await;
    let app = app(&v);
    let t = now();
    let answer = call(&app, &signed(&issuer, json!({ "exp": t + 1800 }))).await;
    assert_invalid(&answer, "lifetime_too_long");
    let answer = call(&app, &signed(&issuer, json!({ "exp": t + 600 }))).await;
    assert_eq!(answer.status, StatusCode::OK);
}
