//! The properties the fuzz targets check, as plain functions: each
//! `fuzz_targets/<name>.rs` calls the function of the same name, and
//! `tests/corpus.rs` runs every committed corpus file through them with
//! `cargo test` (no nightly, no sanitizer), so a crash once found stays a
//! regression test.
//!
//! Every function takes arbitrary bytes. An error from the code under test
//! is fine; a panic, or a broken property (`assert!` below), is a finding.

use std::sync::OnceLock;

/// `did_core::Operation::from_json` on arbitrary bytes, then `check_form`
/// and the canonical encoding. For an op that parses:
/// * its canonical bytes parse back to an equal op with the same CID
///   (the CID is what every node names the op by; two encodings of one op
///   must not name two different ops);
/// * the canonical encoding is a fixed point (encode ∘ parse ∘ encode =
///   encode), so what a node stores is what it re-sends;
/// * a `check_form` that passes reports that same CID and those same bytes.
pub fn op_decode(data: &[u8]) {
    let Ok(op) = did_core::Operation::from_json(data) else {
        return;
    };
    let limits = did_core::op::Limits::default();
    let form = op.check_form(&limits);
    let (Ok(bytes), Ok(cid)) = (op.canonical_bytes(), op.cid()) else {
        // Only a value the canonical encoder refuses (e.g. a float) may
        // fail here, and then the op must not pass check_form either.
        assert!(
            form.is_err(),
            "check_form passed an op with no canonical form"
        );
        return;
    };
    let again = match did_core::Operation::from_json(&bytes) {
        Ok(op) => op,
        Err(e) => panic!("canonical bytes of a parsed op do not parse: {e}"),
    };
    assert_eq!(again, op, "canonical round trip changed the op");
    assert_eq!(
        again.cid().ok(),
        Some(cid),
        "canonical round trip changed the CID"
    );
    assert_eq!(
        again.canonical_bytes().ok().as_deref(),
        Some(bytes.as_slice()),
        "canonical encoding is not idempotent"
    );
    let form_again = again.check_form(&limits);
    assert_eq!(
        form.is_ok(),
        form_again.is_ok(),
        "check_form disagrees between an op and its canonical re-parse"
    );
    if let Ok(form) = form {
        assert_eq!(form.cid, cid, "check_form names another CID than cid()");
        assert_eq!(
            form.bytes, bytes,
            "check_form bytes differ from canonical_bytes"
        );
    }
}

/// did-core's canonical JSON encoder (RFC 8785 subset) on any JSON value:
/// no panic; the output is JSON that parses to the same value (integers,
/// strings, arrays, objects: floats are refused, not rewritten); encoding
/// is idempotent.
pub fn canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(bytes) = did_core::encoding::canonical_value(&value) else {
        return;
    };
    let parsed: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => panic!("canonical output is not JSON: {e}"),
    };
    assert_eq!(parsed, value, "canonical output parses to another value");
    assert_eq!(
        did_core::encoding::canonical_value(&parsed).ok().as_deref(),
        Some(bytes.as_slice()),
        "canonical encoding is not idempotent"
    );
    // No insignificant whitespace outside strings (RFC 8785 §3.2.1): the
    // compact serde_json rendering of the same value has the same length.
    if let Ok(compact) = serde_json::to_vec(&parsed) {
        assert_eq!(
            compact.len(),
            bytes.len(),
            "canonical output is not compact"
        );
    }
}

/// A fixed replica for the reconciliation step: 300 CIDs, enough for the
/// responder to split ranges, list items and answer replies.
fn sync_index() -> &'static did_core::sync::SyncIndex {
    static INDEX: OnceLock<did_core::sync::SyncIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = did_core::sync::SyncIndex::new();
        for i in 0u32..300 {
            index.insert(did_core::Cid::of(&i.to_le_bytes()));
        }
        index
    })
}

/// The anti-entropy wire decoding (`did_core::sync::Message::decode`, what a
/// node runs on every reconciliation message from a peer), then the
/// responder's step on it:
/// * the wire format is canonical: a message that decodes re-encodes to
///   exactly the input bytes (so two peers never disagree on a message);
/// * the responder never panics, and its answer is itself a valid message
///   that survives an encode/decode round trip.
pub fn sync_codec(data: &[u8]) {
    use did_core::sync::{Message, Reconciler, Session, SyncConfig};
    if let Ok(msg) = Message::decode(data) {
        assert_eq!(msg.encode(), data, "decoded message re-encodes differently");
        assert_eq!(msg.encoded_len(), data.len(), "encoded_len is wrong");
        let reconciler = Reconciler::new(SyncConfig::default());
        if let Ok(step) = reconciler.respond(sync_index(), &msg) {
            if let Some(reply) = step.reply {
                assert!(
                    reply.validate().is_ok(),
                    "the responder sent an invalid message"
                );
                let wire = reply.encode();
                assert_eq!(
                    Message::decode(&wire).ok(),
                    Some(reply),
                    "the responder's message does not round-trip"
                );
            }
        }
    }
    // The session wrapper on the same bytes (its own bookkeeping).
    let mut session = Session::new(SyncConfig::default());
    let _ = session.handle(sync_index(), data);
}

/// The `/didmesh/sync/2` frame bodies (`did_core::sync_frame`, what a node
/// decodes from every sync request and response a peer sends). The first
/// byte picks the side (even: request, odd: response), the rest is the
/// body. For a body that decodes:
/// * it re-encodes to exactly the same bytes (one encoding per value);
/// * what it holds is within the limits (at most `MAX_FETCH_CIDS` CIDs or
///   ops, each op at most `MAX_OP_WIRE_BYTES`), and a request never
///   decodes as `Malformed` (that variant is the receiver's own verdict).
///
/// The body is also read as a gossip bundle (`decode_bundle`, what a node
/// decodes from every gossip message): one that decodes re-encodes to the
/// same bytes, holds 1 to `MAX_BUNDLE_OPS` ops of 1 to `MAX_OP_WIRE_BYTES`
/// each, and its count hint is its count.
pub fn sync_frame(data: &[u8]) {
    use did_core::sync_frame::{
        bundle_len_hint, decode_bundle, encode_bundle, SyncRequest, SyncResponse, MAX_BUNDLE_OPS,
        MAX_CODE_BYTES, MAX_FETCH_CIDS, MAX_OP_WIRE_BYTES,
    };
    let Some((side, body)) = data.split_first() else {
        return;
    };
    if let Ok(ops) = decode_bundle(body) {
        assert_eq!(encode_bundle(&ops), body, "a bundle re-encodes differently");
        assert!((1..=MAX_BUNDLE_OPS).contains(&ops.len()));
        assert_eq!(bundle_len_hint(body), ops.len());
        assert!(ops
            .iter()
            .all(|o| !o.is_empty() && o.len() <= MAX_OP_WIRE_BYTES));
    }
    if side % 2 == 0 {
        let Ok(req) = SyncRequest::decode(body) else {
            return;
        };
        assert_eq!(
            req.encode(),
            body,
            "a decoded request re-encodes differently"
        );
        match &req {
            SyncRequest::Fetch(cids) => {
                assert!(!cids.is_empty() && cids.len() <= MAX_FETCH_CIDS)
            }
            SyncRequest::Reconcile(_) => {}
            SyncRequest::Consume(code) => {
                assert!(!code.is_empty() && code.len() <= MAX_CODE_BYTES)
            }
            SyncRequest::Malformed(_) => panic!("decode produced Malformed"),
        }
    } else {
        let Ok(resp) = SyncResponse::decode(body) else {
            return;
        };
        assert_eq!(
            resp.encode(),
            body,
            "a decoded response re-encodes differently"
        );
        if let SyncResponse::Ops(ops) = &resp {
            assert!(ops.len() <= MAX_FETCH_CIDS);
            assert!(ops
                .iter()
                .all(|o| !o.is_empty() && o.len() <= MAX_OP_WIRE_BYTES));
        }
    }
}

struct TokenFixture {
    runtime: tokio::runtime::Runtime,
    verifier: auth_layer::TokenVerifier,
}

/// A verifier pinned to one EdDSA key (no network), with the cache off so
/// every input takes the full path.
fn token_fixture() -> &'static TokenFixture {
    static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = auth_layer::testkit::TestIssuer::from_seed(TOKEN_KID, [7; 32]);
        let jwks = auth_layer::testkit::jwks(&[&issuer]).to_string();
        let cache = match auth_layer::JwksCache::from_json(&jwks) {
            Ok(c) => c,
            Err(e) => panic!("fixture JWKS refused: {e}"),
        };
        let mut config = auth_layer::VerifierConfig::new(TOKEN_ISSUER, TOKEN_AUDIENCE);
        config.cache_capacity = 0;
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("no runtime: {e}"),
        };
        TokenFixture {
            runtime,
            verifier: auth_layer::TokenVerifier::new(cache, config),
        }
    })
}

/// The fixture's key id, issuer and audience (the seed tokens use them).
pub const TOKEN_KID: &str = "fuzz-key";
pub const TOKEN_ISSUER: &str = "https://issuer.fuzz.invalid";
pub const TOKEN_AUDIENCE: &str = "fuzz-app";

/// auth-layer's entry point, `TokenVerifier::verify`, on arbitrary strings
/// (what an application runs on every `Authorization: Bearer` value): no
/// panic, an error or claims. A token accepted must carry the configured
/// issuer and audience.
pub fn token_parse(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = token_fixture();
    if let Ok(claims) = fixture.runtime.block_on(fixture.verifier.verify(token)) {
        assert_eq!(
            claims.iss, TOKEN_ISSUER,
            "accepted a token of another issuer"
        );
        assert_eq!(
            claims.aud, TOKEN_AUDIENCE,
            "accepted a token for another audience"
        );
    }
}

/// The wallet file parser (`didmesh_client::wallet::parse_file`), which
/// stops before the KDF: no panic, and anything it accepts has KDF costs
/// within the bounds (so opening it cannot allocate or spin without limit)
/// and at least one key.
pub fn wallet_parse(data: &[u8]) {
    use didmesh_client::wallet;
    if let Ok(file) = wallet::parse_file(data, std::path::Path::new("fuzz-input")) {
        let cost = file.kdf_cost();
        assert!(
            cost.within_bounds(),
            "parse_file accepted KDF cost {cost:?}"
        );
        assert!(
            !file.public().keys.is_empty(),
            "parse_file accepted a wallet without keys"
        );
        assert!(file.public().keys.len() <= wallet::MAX_KEYS);
    }
}
