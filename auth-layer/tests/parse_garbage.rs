//! The parsing entry point, [`TokenVerifier::verify_offline`], on garbage:
//! random strings, three random segments, valid-looking headers over random
//! payloads, byte-mutated real tokens, and signed payloads of any JSON shape.
//! It must answer an error (or, for a signed payload, claims that pass every
//! check), never panic.

use std::time::Duration;

use auth_layer::testkit::TestIssuer;
use auth_layer::{AuthError, Claims, JwksCache, TokenVerifier, VerifierConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};

const ISS: &str = "didmesh:test";
const AUD: &str = "home-api";
const SUB: &str = "did:mesh:aaaabbbbccccddddeeeeffffgggghhhh";

fn issuer() -> TestIssuer {
    TestIssuer::from_seed("k1", [7; 32])
}

fn verifier() -> TokenVerifier {
    let jwks = JwksCache::from_json(&issuer().jwks().to_string()).unwrap();
    TokenVerifier::new(jwks, VerifierConfig::new(ISS, AUD))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Any JSON value, a few levels deep, with numbers at the edges.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        Just(json!(u64::MAX)),
        ".{0,40}".prop_map(Value::from),
        Just(json!("did:mesh:x")),
        Just(json!(ISS)),
        Just(json!(AUD)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("iss".to_owned()),
                    Just("sub".to_owned()),
                    Just("aud".to_owned()),
                    Just("exp".to_owned()),
                    Just("nbf".to_owned()),
                    Just("iat".to_owned()),
                    ".{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A claims object with every field present and each one possibly replaced.
fn claims_like() -> impl Strategy<Value = Value> {
    let base =
        serde_json::to_value(TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600))).unwrap();
    prop::collection::btree_map(
        prop_oneof![
            Just("iss"),
            Just("sub"),
            Just("aud"),
            Just("exp"),
            Just("nbf"),
            Just("iat"),
            Just("jti"),
            Just("auth_time"),
            Just("amr")
        ],
        any_json(),
        0..4,
    )
    .prop_map(move |overrides| {
        let mut v = base.clone();
        for (k, x) in overrides {
            v[k] = x;
        }
        v
    })
}

fn assert_error(v: &TokenVerifier, token: &str) {
    match v.verify_offline(token) {
        Err(AuthError::InvalidToken(_)) => {}
        other => panic!("{token:?} gave {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_are_errors(token in ".{0,300}") {
        assert_error(&verifier(), &token);
    }

    #[test]
    fn random_segments_are_errors(segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 0..6)) {
        let raw: Vec<String> = segments.iter().map(|s| b64(s)).collect();
        assert_error(&verifier(), &raw.join("."));
        // The same bytes not even base64url.
        let text: Vec<String> = segments.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        assert_error(&verifier(), &text.join("."));
    }

    #[test]
    fn a_good_header_over_garbage_is_an_error(header in any_json(), payload in any_json(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
        let v = verifier();
        let payload = b64(payload.to_string().as_bytes());
        let good = b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#);
        assert_error(&v, &format!("{good}.{payload}.{}", b64(&sig)));
        assert_error(&v, &format!("{}.{payload}.{}", b64(header.to_string().as_bytes()), b64(&sig)));
    }

    #[test]
    fn a_mutated_real_token_is_an_error(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let token = issuer().mint(&TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600)));
        let mut bytes = token.into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        // A change in the base64 padding bits of the last character can leave
        // the decoded bytes unchanged; anything else must fail.
        if let Ok(claims) = verifier().verify_offline(&mutated) {
            prop_assert_eq!(claims.sub.as_str(), SUB);
        }
    }

    #[test]
    fn signed_payloads_of_any_shape_never_panic(payload in claims_like()) {
        let token = issuer().mint_raw(&payload);
        if let Ok(claims) = verifier().verify_offline(&token) {
            // Whatever got through satisfies every rule.
            prop_assert!(claims.sub.starts_with("did:"));
            prop_assert!(claims.exp.saturating_sub(claims.iat) <= 24 * 3600);
            prop_assert_eq!(claims.iss.as_str(), ISS);
            prop_assert_eq!(claims.aud.as_str(), AUD);
        }
    }
}

#[test]
fn the_entry_point_accepts_a_real_token() {
    // Guards the tests above from passing because everything fails.
    let claims: Claims = TestIssuer::claims(ISS, AUD, SUB, Duration::from_secs(600));
    let got = verifier().verify_offline(&issuer().mint(&claims)).unwrap();
    assert_eq!(*got, claims);
}

#[test]
fn oversized_and_degenerate_inputs_are_errors() {
    let v = verifier();
    for token in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b.c".into(),
        "\0\0\0".into(),
        "x".repeat(1 << 20),
        format!("{}.{}.{}", "A".repeat(9000), "B", "C"),
        format!("{}..", b64(br#"{"alg":"EdDSA","kid":"k1"}"#)),
        format!("{}.e30.", b64(br#"{"alg":"EdDSA","kid":"k1"}"#)),
        format!(
            "{}.bnVsbA.AA",
            b64(br#"{"alg":"EdDSA","kid":"k1","crit":[]}"#)
        ),
        format!("{}.bnVsbA.AA", b64(br#"{"alg":"EdDSA","kid":7}"#)),
        format!("{}.bnVsbA.AA", b64(b"[]")),
    ] {
        assert_error(&v, &token);
    }
}
