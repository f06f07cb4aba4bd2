//! What `verify.rs` and `hardening.rs` share: the token facts and a JWKS
//! endpoint on 127.0.0.1:0 whose document, `Cache-Control` header and
//! health the test changes while it runs.

#![allow(dead_code)] // each test file uses its own part of this module

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_layer::testkit::TestIssuer;
use auth_layer::Claims;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

pub const ISS: &str = "didmesh:test";
pub const AUD: &str = "home-api";
pub const SUB: &str = "did:mesh:aaaabbbbccccddddeeeeffffgggghhhh";

/// Claims for `SUB`, valid for ten minutes.
pub fn claims() -> Claims {
    TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600))
}

/// A JWKS endpoint whose document the test can change, count and break.
pub struct JwksServer {
    pub url: String,
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl JwksServer {
    /// Serves `doc`, with `Cache-Control: cache_control` when given.
    pub async fn start(doc: Value, cache_control: Option<&'static str>) -> Self {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let (d, h, f) = (doc.clone(), hits.clone(), failing.clone());
        let app = Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let (d, h, f) = (d.clone(), h.clone(), f.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if f.load(Ordering::SeqCst) {
                        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                    }
                    let mut response = Json(d.lock().unwrap().clone()).into_response();
                    if let Some(value) = cache_control {
                        response
                            .headers_mut()
                            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            doc,
            hits,
            failing,
        }
    }

    pub fn set(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// From now on, answer 500 (or serve again).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}
