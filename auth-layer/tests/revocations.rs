//! The revocation feed follower (issue 13): a fake node serves
//! `GET /v1/revocations?since=&wait=` (long-poll, pages signed with a test
//! Ed25519 key published in the test JWKS, format of scale-spec.md) and the
//! verifier must refuse revoked tokens — cached ones included — as soon as
//! it holds the entry; ignore pages with a bad signature; restart from 0
//! when the feed id changes; and reconnect after the node restarts.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_layer::revocations::{Entry, Page, FEED_TYP};
use auth_layer::testkit::{jwks, now, TestIssuer};
use auth_layer::{
    AuthError, AuthLayer, AuthMode, Claims, JwksCache, JwksConfig, Reason, TokenVerifier,
    VerifiedClaims, VerifierConfig,
};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use support::{JwksServer, AUD, ISS, SUB};
use tokio::sync::{oneshot, Notify};
use tower::ServiceExt as _;

/// What the fake node serves.
struct FeedState {
    feed: String,
    entries: Vec<Entry>,
    /// Sign pages with this key (the feed key, or one not in the JWKS).
    signer: Arc<TestIssuer>,
    /// Flip a bit of every page's signature.
    corrupt: bool,
    iss: String,
}

#[derive(Clone)]
struct Feed {
    state: Arc<Mutex<FeedState>>,
    changed: Arc<Notify>,
}

#[derive(Deserialize)]
struct FeedQuery {
    since: u64,
    wait: Option<u64>,
}

fn seq_of(entry: &Entry) -> u64 {
    match entry {
        Entry::Did { seq, .. }
        | Entry::Jti { seq, .. }
        | Entry::Key { seq, .. }
        | Entry::Member { seq, .. } => *seq,
        _ => 0,
    }
}

impl Feed {
    fn new(signer: Arc<TestIssuer>) -> Self {
        Self {
            state: Arc::new(Mutex::new(FeedState {
                feed: "feed-a".into(),
                entries: Vec::new(),
                signer,
                corrupt: false,
                iss: ISS.into(),
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn push(&self, entry: Entry) {
        self.state.lock().unwrap().entries.push(entry);
        self.changed.notify_waiters();
    }

    fn with(&self, f: impl FnOnce(&mut FeedState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_waiters();
    }

    /// The page after `since`, signed, or `None` if there is nothing new.
    fn page(&self, since: u64, even_if_empty: bool) -> Option<String> {
        let state = self.state.lock().unwrap();
        let entries: Vec<Entry> = state
            .entries
            .iter()
            .filter(|e| seq_of(e) > since)
            .cloned()
            .collect();
        if entries.is_empty() && !even_if_empty {
            return None;
        }
        let cursor = entries.iter().map(seq_of).max().unwrap_or(since);
        let page = Page {
            iss: state.iss.clone(),
            feed: state.feed.clone(),
            since,
            cursor,
            iat: now(),
            entries,
        };
        let mut jws = state.signer.sign_jws(FEED_TYP, &page);
        if state.corrupt {
            // Change the first signature character: still base64url, no
            // longer the signature.
            let dot = jws.rfind('.').unwrap();
            let c = jws.as_bytes()[dot + 1];
            let swapped = if c == b'A' { "B" } else { "A" };
            jws.replace_range(dot + 1..dot + 2, swapped);
        }
        Some(jws)
    }

    /// The long-poll handler (scale-spec.md: answer as soon as there is an
    /// entry after `since`, or an empty page at the timeout).
    async fn serve(State(feed): State<Feed>, Query(q): Query<FeedQuery>) -> impl IntoResponse {
        let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(30));
        loop {
            let notified = feed.changed.notified();
            if let Some(jws) = feed.page(q.since, false) {
                return ([(header::CONTENT_TYPE, "application/jwt")], jws);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                let jws = feed.page(q.since, true).unwrap();
                return ([(header::CONTENT_TYPE, "application/jwt")], jws);
            }
        }
    }
}

/// A running fake node; `stop` ends it (graceful: in-flight polls finish).
struct FeedServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl FeedServer {
    async fn start(feed: &Feed, addr: SocketAddr) -> Self {
        let app = Router::new()
            .route("/v1/revocations", get(Feed::serve))
            .with_state(feed.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/revocations", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// The network: a token key `k1`, a second member's key `k2`, and the
/// feed-signing key `feed`, all in the JWKS.
struct Net {
    k1: TestIssuer,
    k2: TestIssuer,
    feed_key: Arc<TestIssuer>,
    jwks: JwksServer,
}

impl Net {
    async fn start() -> Self {
        let k1 = TestIssuer::generate("k1");
        let k2 = TestIssuer::generate("k2");
        let feed_key = Arc::new(TestIssuer::generate("feed"));
        let jwks = JwksServer::start(jwks(&[&k1, &k2, &feed_key]), None).await;
        Self {
            k1,
            k2,
            feed_key,
            jwks,
        }
    }

    /// The network, a feed signed by its feed key, the feed's server, and
    /// a verifier following it.
    async fn with_feed() -> (Self, Feed, FeedServer, TokenVerifier) {
        let net = Net::start().await;
        let feed = Feed::new(net.feed_key.clone());
        let server = FeedServer::start(&feed, "127.0.0.1:0".parse().unwrap()).await;
        let verifier = net.verifier(&server.url()).await;
        (net, feed, server, verifier)
    }

    async fn verifier(&self, feed_url: &str) -> TokenVerifier {
        let cache = JwksCache::new(JwksConfig::new(&self.jwks.url)).unwrap();
        cache.refresh().await.unwrap();
        let mut config = VerifierConfig::new(ISS, AUD).revocations(feed_url);
        // Short polls keep the test quick; the rules do not depend on it.
        config.revocations_wait = Duration::from_secs(1);
        TokenVerifier::new(cache, config)
    }
}

fn token(issuer: &TestIssuer, sub: &str, iat: u64, key: Option<&str>) -> String {
    let mut claims: Claims = TestIssuer::claims(ISS, AUD, sub, Duration::from_secs(600));
    claims.iat = iat;
    claims.nbf = iat;
    claims.auth_time = iat;
    claims.exp = iat + 600;
    claims.key = key.map(str::to_owned);
    issuer.mint(&claims)
}

fn jti_of(token: &str) -> String {
    let verifier_free = token.split('.').nth(1).unwrap();
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        verifier_free,
    )
    .unwrap();
    let claims: Claims = serde_json::from_slice(&bytes).unwrap();
    claims.jti
}

/// Waits until the follower's cursor reaches `cursor` (the entry is held).
async fn until_cursor(verifier: &TokenVerifier, feed: &str, cursor: u64) -> Duration {
    let start = Instant::now();
    loop {
        let status = verifier.revocation_status();
        if status.feed.as_deref() == Some(feed) && status.cursor >= cursor {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the follower never reached cursor {cursor} of {feed}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_revoked(result: Result<Arc<Claims>, AuthError>) -> bool {
    matches!(result, Err(AuthError::InvalidToken(Reason::Revoked)))
}

#[tokio::test]
async fn did_jti_key_and_member_entries_refuse_tokens_cached_or_not() {
    let (net, feed, server, verifier) = Net::with_feed().await;
    let t = now();

    let alice = "did:mesh:alice";
    let bob = "did:mesh:bob";
    let carol = "did:mesh:carol";
    let old_alice = token(&net.k1, alice, t - 20, None);
    let bob_token = token(&net.k1, bob, t - 5, None);
    let bob_other = token(&net.k1, bob, t - 5, None);
    let carol_by_key = token(&net.k1, carol, t - 20, Some("zStolenKey"));
    let carol_other_key = token(&net.k1, carol, t - 20, Some("zPasskey"));
    let by_member_2 = token(&net.k2, SUB, t - 5, None);
    // All valid, and now in the verified-token cache.
    for tok in [
        &old_alice,
        &bob_token,
        &bob_other,
        &carol_by_key,
        &carol_other_key,
        &by_member_2,
    ] {
        verifier.verify(tok).await.unwrap();
    }
    until_cursor(&verifier, "feed-a", 0).await;

    feed.push(Entry::Did {
        seq: 1,
        did: alice.into(),
        before: t - 10,
    });
    feed.push(Entry::Jti {
        seq: 2,
        did: bob.into(),
        jti: jti_of(&bob_token),
        exp: t + 600,
    });
    feed.push(Entry::Key {
        seq: 3,
        did: carol.into(),
        key: "zStolenKey".into(),
        before: t,
    });
    feed.push(Entry::Member {
        seq: 4,
        kids: vec!["k2".into()],
        before: u64::MAX,
    });
    let took = until_cursor(&verifier, "feed-a", 4).await;
    println!("revocation held {took:?} after the entries were published");

    assert!(is_revoked(verifier.verify(&old_alice).await), "did entry");
    assert!(is_revoked(verifier.verify(&bob_token).await), "jti entry");
    assert!(
        is_revoked(verifier.verify(&carol_by_key).await),
        "key entry"
    );
    assert!(
        is_revoked(verifier.verify(&by_member_2).await),
        "member entry"
    );
    // What the entries do not cover still passes.
    verifier.verify(&bob_other).await.unwrap();
    verifier.verify(&carol_other_key).await.unwrap();
    verifier
        .verify(&token(&net.k1, alice, t - 5, None))
        .await
        .expect("a login after the cut-off works");
    // The removed member's key left the JWKS at once, not at its refresh.
    assert_eq!(verifier.jwks().kids(), ["feed", "k1"]);
    assert!(verifier.stats().revoked >= 4);

    // What a client sees: 401 invalid_token, reason "revoked".
    let app = Router::new()
        .route("/me", get(|c: VerifiedClaims| async move { c.sub.clone() }))
        .layer(AuthLayer::new(verifier.clone(), AuthMode::Required));
    let response = app
        .oneshot(
            Request::get("/me")
                .header(header::AUTHORIZATION, format!("Bearer {old_alice}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let www = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(www.contains("invalid_token"), "{www}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "revoked");
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_member_key_verifies_until_the_window_ends() {
    let (net, feed, server, verifier) = Net::with_feed().await;
    let t = now();
    let old = token(&net.k2, SUB, t - 5, None);
    verifier.verify(&old).await.unwrap();
    feed.push(Entry::Member {
        seq: 1,
        kids: vec!["k2".into()],
        before: t + 2,
    });
    until_cursor(&verifier, "feed-a", 1).await;
    verifier
        .verify(&old)
        .await
        .expect("inside the overlap window");
    tokio::time::sleep(Duration::from_millis(
        (t + 2).saturating_sub(now()) * 1000 + 1100,
    ))
    .await;
    assert!(is_revoked(verifier.verify(&old).await), "after the window");
    server.stop().await;
}

#[tokio::test]
async fn a_page_with_a_bad_signature_is_ignored() {
    let (net, feed, server, verifier) = Net::with_feed().await;
    let victim = token(&net.k1, "did:mesh:victim", now() - 5, None);
    verifier.verify(&victim).await.unwrap();
    until_cursor(&verifier, "feed-a", 0).await;

    // A forged page: the signature does not verify, then a page signed by a
    // key outside the JWKS. Neither may revoke anything.
    feed.with(|s| s.corrupt = true);
    feed.push(Entry::Did {
        seq: 1,
        did: "did:mesh:victim".into(),
        before: u64::MAX / 2,
    });
    let start = Instant::now();
    while verifier.revocation_status().bad_pages < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "no page refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feed.with(|s| {
        s.corrupt = false;
        s.signer = Arc::new(TestIssuer::generate("feed"));
    });
    let before = verifier.revocation_status().bad_pages;
    while verifier.revocation_status().bad_pages < before + 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "no page refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verifier
        .verify(&victim)
        .await
        .expect("a forged page revokes nothing");
    assert_eq!(verifier.revocation_status().cursor, 0);

    // The real key again: the entry is now held.
    feed.with(|s| s.signer = net.feed_key.clone());
    until_cursor(&verifier, "feed-a", 1).await;
    assert!(is_revoked(verifier.verify(&victim).await));
    server.stop().await;
}

#[tokio::test]
async fn a_page_of_another_issuer_is_ignored() {
    let net = Net::start().await;
    let feed = Feed::new(net.feed_key.clone());
    feed.with(|s| s.iss = "didmesh:other-network".into());
    let server = FeedServer::start(&feed, "127.0.0.1:0".parse().unwrap()).await;
    let verifier = net.verifier(&server.url()).await;
    let victim = token(&net.k1, SUB, now() - 5, None);
    feed.push(Entry::Jti {
        seq: 1,
        did: SUB.into(),
        jti: jti_of(&victim),
        exp: now() + 600,
    });
    let start = Instant::now();
    while verifier.revocation_status().bad_pages < 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "no page refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    verifier.verify(&victim).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_new_feed_id_restarts_from_zero() {
    let (net, feed, server, verifier) = Net::with_feed().await;
    let first = token(&net.k1, "did:mesh:first", now() - 5, None);
    let second = token(&net.k1, "did:mesh:second", now() - 5, None);
    for (seq, did) in [(1, "did:mesh:x"), (2, "did:mesh:y"), (3, "did:mesh:first")] {
        feed.push(Entry::Did {
            seq,
            did: did.into(),
            before: now(),
        });
    }
    until_cursor(&verifier, "feed-a", 3).await;
    assert!(is_revoked(verifier.verify(&first).await));

    // The node's data folder was replaced: a new feed id whose only entry
    // has seq 1, below the cursor the verifier holds (3). Asking `since=3`
    // of the new feed would miss it.
    feed.with(|s| {
        s.feed = "feed-b".into();
        s.entries = vec![Entry::Jti {
            seq: 1,
            did: "did:mesh:second".into(),
            jti: jti_of(&second),
            exp: now() + 600,
        }];
    });
    until_cursor(&verifier, "feed-b", 1).await;
    assert!(is_revoked(verifier.verify(&second).await));
    // Entries of the old feed are signed facts: still held.
    assert!(is_revoked(verifier.verify(&first).await));
    server.stop().await;
}

#[tokio::test]
async fn the_follower_reconnects_after_the_node_restarts() {
    let net = Net::start().await;
    let feed = Feed::new(net.feed_key.clone());
    let server = FeedServer::start(&feed, "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let verifier = net.verifier(&server.url()).await;
    let victim = token(&net.k1, "did:mesh:victim", now() - 5, None);
    until_cursor(&verifier, "feed-a", 0).await;
    verifier.verify(&victim).await.unwrap();

    server.stop().await;
    // Down for a while: the follower's polls fail and back off.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    feed.push(Entry::Jti {
        seq: 1,
        did: "did:mesh:victim".into(),
        jti: jti_of(&victim),
        exp: now() + 600,
    });
    verifier
        .verify(&victim)
        .await
        .expect("not revoked while the node is down");
    let server = FeedServer::start(&feed, addr).await;
    let took = until_cursor(&verifier, "feed-a", 1).await;
    println!("entry held {took:?} after the node came back");
    assert!(took < Duration::from_secs(7), "{took:?}");
    assert!(is_revoked(verifier.verify(&victim).await));
    server.stop().await;
}

#[tokio::test]
async fn a_feed_signed_by_a_new_member_key_refetches_the_jwks() {
    let k1 = TestIssuer::generate("k1");
    let late = Arc::new(TestIssuer::generate("late-member"));
    let jwks_server = JwksServer::start(jwks(&[&k1]), None).await;
    let feed = Feed::new(late.clone());
    let server = FeedServer::start(&feed, "127.0.0.1:0".parse().unwrap()).await;
    let net = Net {
        k1,
        k2: TestIssuer::generate("unused"),
        feed_key: late.clone(),
        jwks: jwks_server,
    };
    let verifier = net.verifier(&server.url()).await;
    let victim = token(&net.k1, SUB, now() - 5, None);
    feed.push(Entry::Jti {
        seq: 1,
        did: SUB.into(),
        jti: jti_of(&victim),
        exp: now() + 600,
    });
    // Unknown kid: refused until the JWKS lists the new member's key.
    tokio::time::sleep(Duration::from_millis(500)).await;
    verifier.verify(&victim).await.unwrap();
    net.jwks.set(jwks(&[&net.k1, &late]));
    until_cursor(&verifier, "feed-a", 1).await;
    assert!(is_revoked(verifier.verify(&victim).await));
    server.stop().await;
}
