//! A token issuer for tests that mints exactly what a node mints, because
//! it is the node's own code: [`didmesh_node::auth::Authenticator`] with the
//! settings a node started with its defaults uses, asked for a challenge,
//! the challenge signed by the user's key, and the token taken from
//! `Authenticator::token`. No sled, no socket, no p2p.
//!
//! Multi-factor tokens ([`TokenIssuer::mint_mfa`]) go the same way: a
//! did:mesh DID whose login needs two keys ([`crate::stepup`]) in the
//! issuer's in-memory ledger, the challenge signed by both, and
//! `Authenticator::token_with`, so `amr` and `acr` are the node's.
//!
//! Also the token readers tests share: [`header`], [`claims`] (unverified)
//! and [`verify`] against a JWKS.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::keys::{public_of, sign_b64};
use did_core::{Ledger, Limits, PublicKey};
use didmesh_node::auth::{AuthSettings, Authenticator, Proofs};
use didmesh_node::identity;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::sync::RwLock;

/// Mints node tokens for `did:key` users (module doc).
pub struct TokenIssuer {
    auth: Authenticator,
    ledger: RwLock<Ledger>,
    member: PublicKey,
}

impl TokenIssuer {
    /// An issuer whose member key is made from `seed`, with the issuer,
    /// default audience and lifetimes of a node's defaults
    /// ([`crate::node_defaults`]).
    pub fn new(seed: [u8; 32]) -> TokenIssuer {
        let config = crate::node_defaults();
        let key = SigningKey::from_bytes(&seed);
        let member = public_of(&key);
        let settings = AuthSettings {
            domain: config.http_addr.to_string(),
            network_id: "testkit".into(),
            issuer: config.issuer,
            default_audience: config.audience,
            challenge_ttl: config.challenge_ttl,
            token_ttl: config.token_ttl,
            max_redeemed: 1_000,
        };
        TokenIssuer {
            auth: Authenticator::new(settings, &identity::pkcs8_der(&key), identity::kid(&member)),
            ledger: RwLock::new(Ledger::new(Limits::default())),
            member,
        }
    }

    /// The JWKS a node of this issuer's network would serve.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [identity::jwk(&self.member)] })
    }

    /// A token for `user`'s `did:key`, for `audience` (the default one
    /// when `None`), minted now.
    pub fn mint(&self, user: &SigningKey, audience: Option<&str>) -> String {
        let did = public_of(user).did_key();
        let now = crate::now();
        let challenge = self
            .auth
            .challenge(&self.ledger, &did, audience, now)
            .unwrap_or_else(|e| panic!("challenge: {e}"));
        let signature = sign_b64(user, challenge.message.as_bytes());
        let (token, _) = self
            .auth
            .token(&self.ledger, &did, &challenge.nonce, &signature, now)
            .unwrap_or_else(|e| panic!("token: {e}"));
        token.access_token
    }

    /// A token of a login with two factors, for audience `audience` (the
    /// default one when `None`): the did:mesh DID with `first` and `second`
    /// as its authentication keys and a "2 of them" policy is put in this
    /// issuer's ledger (once), both keys sign the challenge, and the node's
    /// `Authenticator::token_with` mints (`amr` `["swk", "mfa"]`, `acr`
    /// `urn:didmesh:acr:mfa`). The DID and the token.
    pub fn mint_mfa(
        &self,
        first: &SigningKey,
        second: &SigningKey,
        audience: Option<&str>,
    ) -> (String, String) {
        let (op, did) = crate::stepup::create_multi_key(&[(first, "laptop"), (second, "phone")], 2);
        self.ledger
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .apply(op)
            .unwrap_or_else(|e| panic!("the two-key DID: {e}"));
        let now = crate::now();
        let challenge = self
            .auth
            .challenge(&self.ledger, &did, audience, now)
            .unwrap_or_else(|e| panic!("challenge: {e}"));
        let signatures = [
            sign_b64(first, challenge.message.as_bytes()),
            sign_b64(second, challenge.message.as_bytes()),
        ];
        let signatures: Vec<&str> = signatures.iter().map(String::as_str).collect();
        let proofs = Proofs {
            signatures: &signatures,
            ..Proofs::default()
        };
        let (token, _, _) = self
            .auth
            .token_with(&self.ledger, &did, &challenge.nonce, &proofs, now)
            .unwrap_or_else(|e| panic!("token: {e}"));
        (did, token.access_token)
    }
}

fn segment(token: &str, i: usize) -> Value {
    let part = token
        .split('.')
        .nth(i)
        .unwrap_or_else(|| panic!("not a JWT: {token:?}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("JWT segment {i} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT segment {i} is not JSON: {e}"))
}

/// The JOSE header of a JWT, not verified.
pub fn header(token: &str) -> Value {
    segment(token, 0)
}

/// The claims of a JWT, not verified.
pub fn claims(token: &str) -> Value {
    segment(token, 1)
}

/// Verifies `token` (EdDSA) against the key of `jwks` its `kid` names, with
/// `issuer` and `audience`; its claims.
pub fn verify(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Result<Value, String> {
    let head = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| {
            keys.iter()
                .find(|k| k["kid"].as_str() == head.kid.as_deref())
        })
        .ok_or_else(|| format!("no key {:?} in the JWKS", head.kid))?;
    let x = jwk["x"].as_str().ok_or("JWK without x")?;
    let key = jsonwebtoken::DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|t| t.claims)
        .map_err(|e| e.to_string())
}
