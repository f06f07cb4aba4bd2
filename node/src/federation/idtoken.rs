//! ID-token verification (OpenID Connect Core 1.0 §3.1.3.7), in the order
//! the section gives, each refusal with its own reason:
//!
//! 1. the JOSE header's `alg` is in the provider's allowed set (configured
//!    `algs`, else discovery's asymmetric ones); `none` and HMAC never
//!    (steps 6-8; [`super::config::parse_alg`]);
//! 2. the signature verifies with the provider's JWKS key for `kid`
//!    ([`super::provider::Provider::key_for`], one refetch on an unknown
//!    `kid`) — done by the caller, which then calls [`check_claims`];
//! 3. `iss` equals the configured issuer exactly (step 2);
//! 4. `aud` contains our `client_id` (step 3); with several audiences,
//!    `azp` must be present (step 4), and when present it must be our
//!    `client_id` (step 5);
//! 5. `exp` is after now (step 9), `iat` within [`IAT_SKEW`] of now
//!    either way (step 10: a token issued for this code exchange is
//!    fresh);
//! 6. `nonce` is present and equals the flow's (step 11). Each flow's
//!    nonce is used once: the flow is taken out of the state map before
//!    the code is redeemed ([`super::flow`]), so a token replayed from an
//!    earlier flow carries a nonce no live flow has.
//!
//! `sub` must be present, 1-255 characters (§2). Nothing from the token is
//! logged; the caller logs the provider and the commitment prefix at most.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::collections::HashSet;

/// Largest ID token read.
pub const MAX_TOKEN: usize = 16 * 1024;
/// How far `iat` may be from now, either way, in seconds.
pub const IAT_SKEW: u64 = 300;

/// Why an ID token was refused. The reasons are shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token is signed with an algorithm that is not allowed for this provider")]
    AlgNotAllowed,
    #[error("the ID token is signed with a key the provider does not publish (kid unknown)")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token is from another issuer")]
    WrongIssuer,
    #[error("the ID token is for another audience (client)")]
    WrongAudience,
    #[error("the ID token's azp is missing or names another client")]
    WrongAzp,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token's issue time (iat) is too far from now")]
    IatSkew,
    #[error("the ID token has no nonce")]
    MissingNonce,
    #[error("the ID token's nonce is not this sign-in's (replayed?)")]
    WrongNonce,
    #[error("the ID token has no usable sub")]
    NoSubject,
}

/// What the caller expects of the token.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
}

/// The verified identity: the provider account.
#[derive(Clone, PartialEq, Eq)]
pub struct Verified {
    pub iss: String,
    pub sub: String,
}

// `sub` is a provider account id: never in a log line.
impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

/// Step 1: the token's `alg` (allowed) and `kid`.
pub fn header(
    token: &str,
    allowed: &[Algorithm],
) -> Result<(Algorithm, Option<String>), IdTokenError> {
    if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
        return Err(IdTokenError::Malformed);
    }
    // An `alg` jsonwebtoken does not know (`none` among them) fails to
    // parse: read it by hand first, so that it is named for what it is.
    use base64::Engine as _;
    let head = token.split('.').next().unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| IdTokenError::Malformed)?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| IdTokenError::Malformed)?;
    let alg = v
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    let alg = super::config::parse_alg(alg).ok_or(IdTokenError::AlgNotAllowed)?;
    if !allowed.contains(&alg) {
        return Err(IdTokenError::AlgNotAllowed);
    }
    let kid = match v.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(IdTokenError::Malformed),
    };
    Ok((alg, kid))
}

/// Step 2: the signature with `key` (found for the header's `kid`), then
/// steps 3-6 on the claims.
pub fn verify(
    token: &str,
    alg: Algorithm,
    key: &Jwk,
    expected: Expected<'_>,
) -> Result<Verified, IdTokenError> {
    let decoding = DecodingKey::from_jwk(key).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(alg);
    // The claims are checked below, each with its own reason.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<Value>(token, &decoding, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            return Err(match e.kind() {
                ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                ErrorKind::InvalidAlgorithm => IdTokenError::AlgNotAllowed,
                ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidAlgorithmName => IdTokenError::UnknownKey,
                _ => IdTokenError::Malformed,
            });
        }
    };
    check_claims(&claims, expected)
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly with a fraction.
fn numeric_date(v: Option<&Value>) -> Option<u64> {
    let n = v?.as_f64()?;
    (n.is_finite() && n >= 0.0).then_some(n as u64)
}

/// Steps 3-6 (module doc) on verified claims.
pub fn check_claims(claims: &Value, e: Expected<'_>) -> Result<Verified, IdTokenError> {
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(e.issuer) {
        return Err(IdTokenError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(IdTokenError::WrongAudience),
    };
    if !audiences.contains(&e.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    match claims.get("azp") {
        None | Some(Value::Null) if audiences.len() > 1 => return Err(IdTokenError::WrongAzp),
        None | Some(Value::Null) => {}
        Some(Value::String(azp)) if azp == e.client_id => {}
        Some(_) => return Err(IdTokenError::WrongAzp),
    }
    let exp = numeric_date(claims.get("exp")).ok_or(IdTokenError::Malformed)?;
    if exp <= e.now {
        return Err(IdTokenError::Expired);
    }
    let iat = numeric_date(claims.get("iat")).ok_or(IdTokenError::Malformed)?;
    if iat > e.now.saturating_add(IAT_SKEW) || iat.saturating_add(IAT_SKEW) < e.now {
        return Err(IdTokenError::IatSkew);
    }
    let nonce = match claims.get("nonce") {
        None | Some(Value::Null) => return Err(IdTokenError::MissingNonce),
        Some(Value::String(n)) => n,
        Some(_) => return Err(IdTokenError::WrongNonce),
    };
    // Constant time: the comparison must not tell how much matched.
    let same = nonce.len() == e.nonce.len()
        && nonce
            .bytes()
            .zip(e.nonce.bytes())
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return Err(IdTokenError::WrongNonce);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or(IdTokenError::NoSubject)?;
    Ok(Verified {
        iss: e.issuer.to_string(),
        sub: sub.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://op.example",
            client_id: "node",
            nonce: "n-1",
            now: NOW,
        }
    }

    fn good() -> Value {
        json!({"iss": "https://op.example", "aud": "node", "sub": "u1",
               "exp": NOW + 60, "iat": NOW, "nonce": "n-1"})
    }

    fn with(k: &str, v: Value) -> Value {
        let mut c = good();
        c[k] = v;
        c
    }

    #[test]
    fn each_claim_rule_refuses_with_its_reason() {
        assert_eq!(check_claims(&good(), expected()).unwrap().sub, "u1");
        let cases = [
            (
                with("iss", json!("https://op.example/")),
                IdTokenError::WrongIssuer,
            ),
            (with("aud", json!("other")), IdTokenError::WrongAudience),
            (
                with("aud", json!(["node", "other"])),
                IdTokenError::WrongAzp,
            ),
            (with("azp", json!("other")), IdTokenError::WrongAzp),
            (with("exp", json!(NOW)), IdTokenError::Expired),
            (
                with("iat", json!(NOW + IAT_SKEW + 1)),
                IdTokenError::IatSkew,
            ),
            (
                with("iat", json!(NOW - IAT_SKEW - 1)),
                IdTokenError::IatSkew,
            ),
            (with("nonce", Value::Null), IdTokenError::MissingNonce),
            (with("nonce", json!("n-2")), IdTokenError::WrongNonce),
            (with("sub", json!("")), IdTokenError::NoSubject),
        ];
        for (claims, want) in cases {
            assert_eq!(
                check_claims(&claims, expected()),
                Err(want.clone()),
                "{want}"
            );
        }
        let mut multi = with("aud", json!(["node", "other"]));
        multi["azp"] = json!("node");
        assert!(check_claims(&multi, expected()).is_ok());
    }

    #[test]
    fn none_and_hmac_are_never_allowed() {
        use base64::Engine as _;
        let b = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let all = [Algorithm::RS256, Algorithm::HS256];
        for alg in ["none", "HS256", "RS1"] {
            let t = format!("{}.{}.", b(json!({"alg": alg})), b(good()));
            assert_eq!(header(&t, &all), Err(IdTokenError::AlgNotAllowed), "{alg}");
        }
        let t = format!("{}.{}.x", b(json!({"alg": "ES256", "kid": "k"})), b(good()));
        assert_eq!(
            header(&t, &[Algorithm::RS256]),
            Err(IdTokenError::AlgNotAllowed)
        );
        assert_eq!(
            header(&t, &[Algorithm::ES256]),
            Ok((Algorithm::ES256, Some("k".into())))
        );
    }
}
