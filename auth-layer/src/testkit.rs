//! Test support (feature `testkit`): an in-memory didmesh issuer that mints
//! EdDSA tokens and publishes its JWK, so tests of this crate and of
//! applications built on it need no node. Never enable it in production.

// Test support: failing loudly is the right behaviour here.
#![allow(clippy::expect_used)]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::{now_secs, Claims};

/// The fixed PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410 §7):
/// SEQUENCE { version 0, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING {
/// OCTET STRING (32 bytes) } }. Followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 key with a `kid`, able to mint tokens.
pub struct TestIssuer {
    kid: String,
    signing: SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("kid", &self.kid)
            .finish()
    }
}

impl TestIssuer {
    /// A fresh random key named `kid`.
    pub fn generate(kid: &str) -> Self {
        Self::from_seed(kid, rand::random())
    }

    /// A deterministic key from a 32-byte seed.
    pub fn from_seed(kid: &str, seed: [u8; 32]) -> Self {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Self {
            kid: kid.to_owned(),
            signing: SigningKey::from_bytes(&seed),
            encoding: EncodingKey::from_ed_der(&der),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public JWK (RFC 8037 §2).
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public_key()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// A JWKS holding only this key.
    pub fn jwks(&self) -> serde_json::Value {
        jwks(&[self])
    }

    /// Claims valid from now for `lifetime`: exactly what a node mints for
    /// a login (`did_core::Claims::for_login`, the function the node calls).
    pub fn claims(iss: &str, aud: &str, sub: &str, lifetime: Duration) -> Claims {
        Claims::for_login(
            iss,
            sub,
            aud,
            now_secs(),
            lifetime.as_secs(),
            rand::random(),
        )
    }

    /// Claims of a login with two distinct factors, as a node mints them
    /// (the spec of issue 11): [`Self::claims`] with `amr` `["swk", "mfa"]`
    /// and `acr` [`crate::ACR_MFA`].
    pub fn mfa_claims(iss: &str, aud: &str, sub: &str, lifetime: Duration) -> Claims {
        let mut claims = Self::claims(iss, aud, sub, lifetime);
        claims.amr = vec![
            did_core::proto::AMR_SOFTWARE_KEY.to_owned(),
            crate::AMR_MFA.to_owned(),
        ];
        claims.acr = Some(crate::ACR_MFA.to_owned());
        claims
    }

    /// A didmesh token: `alg: EdDSA`, `typ: JWT`, `kid`.
    pub fn mint(&self, claims: &Claims) -> String {
        self.mint_raw(claims)
    }

    /// A token with any serializable payload and the standard header.
    pub fn mint_raw<T: Serialize>(&self, payload: &T) -> String {
        self.sign_jws("JWT", payload)
    }

    /// A compact JWS of `payload` with header `alg: EdDSA`, this `kid` and
    /// `typ`: e.g. a revocation feed page
    /// ([`crate::revocations::FEED_TYP`]).
    pub fn sign_jws<T: Serialize>(&self, typ: &str, payload: &T) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, payload, &self.encoding).expect("EdDSA signing")
    }
}

/// Unix seconds now: the clock the verifier checks `exp` and `iat`
/// against, for tests that build claims by hand.
pub fn now() -> u64 {
    now_secs()
}

/// A JWKS document holding the given issuers' keys.
pub fn jwks(issuers: &[&TestIssuer]) -> serde_json::Value {
    serde_json::json!({ "keys": issuers.iter().map(|i| i.jwk()).collect::<Vec<_>>() })
}

/// Envoy's `forward_payload_header` value for `claims`: base64url of the
/// JSON payload, unpadded.
pub fn forwarded_payload(claims: &Claims) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_claims_are_what_a_node_mints() {
        let c = TestIssuer::claims("iss", "aud", "did:key:z6Mk", Duration::from_secs(60));
        assert_eq!(c.amr, vec![did_core::proto::AMR_SOFTWARE_KEY.to_owned()]);
        assert_eq!(c.amr, vec!["swk".to_owned()]);
        assert_eq!(
            (c.iat, c.nbf, c.auth_time, c.exp),
            (c.iat, c.iat, c.iat, c.iat + 60)
        );
        assert!(c.jti.len() == 32 && c.jti.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(c.acr.as_deref(), Some(crate::ACR_1FA));
        let m = TestIssuer::mfa_claims("iss", "aud", "did:key:z6Mk", Duration::from_secs(60));
        assert!(m.is_mfa());
        assert_eq!(m.acr.as_deref(), Some(crate::ACR_MFA));
    }
}
