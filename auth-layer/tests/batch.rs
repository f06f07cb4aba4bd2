//! Never-seen tokens arriving together have their signatures checked in one
//! Ed25519 batch (issue 12). A batch holding one forged token must refuse
//! exactly that token, wherever it sits, and accept the others.

mod support;

use std::time::Duration;

use auth_layer::testkit::TestIssuer;
use auth_layer::{AuthError, JwksCache, Reason, TokenVerifier, VerifierConfig};
use support::{AUD, ISS};

/// `token` with its signature replaced by another token's: well-formed,
/// 64 bytes, wrong.
fn forged(token: &str, other: &str) -> String {
    let (input, _) = token.rsplit_once('.').unwrap();
    let (_, sig) = other.rsplit_once('.').unwrap();
    format!("{input}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_in_a_batch_is_refused_alone_wherever_it_sits() {
    let issuer = TestIssuer::generate("k1");
    let jwks = JwksCache::from_json(&issuer.jwks().to_string()).unwrap();
    let verifier = TokenVerifier::new(jwks, VerifierConfig::new(ISS, AUD));
    for position in [0usize, 17, 63] {
        let mut tokens: Vec<String> = (0..64)
            .map(|i| {
                issuer.mint(&TestIssuer::claims(
                    ISS,
                    AUD,
                    &format!("did:mesh:batch{position}x{i}"),
                    Duration::from_secs(600),
                ))
            })
            .collect();
        tokens[position] = forged(&tokens[position], &tokens[(position + 1) % 64]);
        let results = futures::future::join_all(tokens.iter().map(|t| {
            let v = verifier.clone();
            let t = t.clone();
            tokio::spawn(async move { v.verify(&t).await })
        }))
        .await;
        for (i, result) in results.into_iter().enumerate() {
            let result = result.unwrap();
            if i == position {
                assert_eq!(
                    result.unwrap_err(),
                    AuthError::InvalidToken(Reason::BadSignature),
                    "position {position}"
                );
            } else {
                assert_eq!(result.unwrap().sub, format!("did:mesh:batch{position}x{i}"));
            }
        }
    }
    assert_eq!(verifier.stats().signature_verifications, 3 * 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_and_single_checks_agree_on_every_refusal() {
    let issuer = TestIssuer::generate("k1");
    let other = TestIssuer::generate("k1");
    let jwks = || JwksCache::from_json(&issuer.jwks().to_string()).unwrap();
    let batched = TokenVerifier::new(jwks(), VerifierConfig::new(ISS, AUD));
    let mut config = VerifierConfig::new(ISS, AUD);
    config.batch_signatures = false;
    let single = TokenVerifier::new(jwks(), config);
    let good = issuer.mint(&TestIssuer::claims(
        ISS,
        AUD,
        "did:mesh:a",
        Duration::from_secs(600),
    ));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let cases = [
        good.clone(),
        // Signed by a key with the same kid but not the JWKS key.
        other.mint(&TestIssuer::claims(
            ISS,
            AUD,
            "did:mesh:a",
            Duration::from_secs(600),
        )),
        format!("{input}.{}", &sig[..sig.len() - 4]),
        format!("{input}.{sig}AAAA"),
        format!("{input}.!!!!"),
        format!("{input}."),
        issuer.mint(&TestIssuer::claims(
            "didmesh:other",
            AUD,
            "did:mesh:a",
            Duration::from_secs(600),
        )),
    ];
    let answers_batched = futures::future::join_all(cases.iter().map(|t| batched.verify(t))).await;
    for (token, b) in cases.iter().zip(answers_batched) {
        let s = single.verify(token).await;
        assert_eq!(b.map(|c| c.sub.clone()), s.map(|c| c.sub.clone()));
    }
}
