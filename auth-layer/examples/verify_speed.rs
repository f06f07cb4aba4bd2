//! Per-token cost of the verification path, single-threaded, release:
//! `cargo run --release -p auth-layer --features testkit --example verify_speed [N]`.
//! Prints microseconds per token for the raw Ed25519 check of the JWS
//! signing input, the full uncached verification (`verify_offline`), and a
//! cache hit; the inputs of scripts/bench-home.sh's "unseen" figure.

use std::time::{Duration, Instant};

use auth_layer::testkit::TestIssuer;
use auth_layer::{JwksCache, TokenVerifier, VerifierConfig};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let issuer = TestIssuer::generate("k1");
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            issuer.mint(&TestIssuer::claims(
                "didmesh:bench",
                "home-api",
                &format!("did:mesh:bench{i:024}"),
                Duration::from_secs(3600),
            ))
        })
        .collect();
    let key = VerifyingKey::from_bytes(&issuer.public_key())?;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;

    let start = Instant::now();
    for t in &tokens {
        let (input, sig) = t.rsplit_once('.').ok_or("token")?;
        let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(sig)?.try_into().map_err(|_| "sig")?;
        key.verify(input.as_bytes(), &Signature::from_bytes(&sig))?;
    }
    println!(
        "ed25519 verify only:     {:6.2} us/token",
        per(start.elapsed())
    );

    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(VerifyingKey::from_bytes(&issuer.public_key())?);
    }
    println!(
        "key decompression:       {:6.2} us/key",
        per(start.elapsed())
    );

    let jwks = JwksCache::from_json(&issuer.jwks().to_string())?;
    let verifier = TokenVerifier::new(jwks, VerifierConfig::new("didmesh:bench", "home-api"));
    let start = Instant::now();
    for t in &tokens {
        verifier.verify_offline(t)?;
    }
    println!(
        "verify_offline (full):   {:6.2} us/token",
        per(start.elapsed())
    );

    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    rt.block_on(async {
        let start = Instant::now();
        for t in &tokens {
            verifier.verify(t).await?;
        }
        println!(
            "verify, unseen (+cache): {:6.2} us/token",
            per(start.elapsed())
        );
        let start = Instant::now();
        for t in &tokens {
            verifier.verify(t).await?;
        }
        println!(
            "verify, cache hit:       {:6.2} us/token",
            per(start.elapsed())
        );
        Ok::<_, auth_layer::AuthError>(())
    })?;
    Ok(())
}
