//! The HTTP wire vocabulary between a node, its wallets and relying parties:
//! the bodies of `POST /v1/auth/challenge`, `POST /v1/auth/token` and
//! `POST /v1/ops`, the error body every endpoint answers with, and the
//! claims of the access token. The node serializes these types, the client
//! and `auth-layer` deserialize the same ones, so a field renamed here is a
//! compile error everywhere instead of a silent mismatch on the wire.
//!
//! Serde only: no HTTP library appears here. Paths are given as constants so
//! that the router and the clients name the same endpoints.

use serde::{Deserialize, Serialize};

/// `POST`: [`ChallengeRequest`] → [`ChallengeResponse`].
pub const CHALLENGE_PATH: &str = "/v1/auth/challenge";
/// `POST`: [`TokenRequest`] → [`TokenResponse`].
pub const TOKEN_PATH: &str = "/v1/auth/token";
/// `POST`: a signed operation → [`OpSubmitted`].
pub const OPS_PATH: &str = "/v1/ops";

/// `token_type` of every access token (RFC 6750 §4, RFC 6749 §7.1).
pub const TOKEN_TYPE: &str = "Bearer";
/// The RFC 8176 `amr` value of a didmesh login: proof of possession of a
/// software-held key (the wallet's Ed25519 key).
pub const AMR_SOFTWARE_KEY: &str = "swk";

/// Body of `POST /v1/auth/challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The DID that wants to log in (`did:mesh:…` or `did:key:…`).
    pub did: String,
    /// The relying party the token will be for; the node's default
    /// audience when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Answer of `POST /v1/auth/challenge`: a one-time challenge. `message` is
/// [`crate::login::LoginChallenge::message`]; the wallet signs its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    pub nonce: String,
    pub message: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub audience: String,
}

/// Body of `POST /v1/auth/token`: the challenge, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub did: String,
    /// The nonce of the challenge, as the node returned it.
    pub nonce: String,
    /// Base64url (no padding) of the Ed25519 signature over the message.
    pub signature: String,
}

/// Answer of `POST /v1/auth/token` (RFC 6749 §5.1 field names).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT; a bearer credential.
    pub access_token: String,
    /// Always [`TOKEN_TYPE`].
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer credential: never in a debug print or a log.
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Answer of `POST /v1/ops`: 201 when the op is new, 200 when the node held
/// it already; either way only once it is durable (fsynced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSubmitted {
    /// The op's CID.
    pub cid: String,
    /// The DID the op belongs to (for a `create`, the DID it defines).
    pub did: String,
    /// `true`: the node answers only after its group commit is fsynced. A
    /// missing field reads `false`, so a client refuses such an answer.
    #[serde(default)]
    pub durable: bool,
}

/// Every error answer of a node: `{"error": code, "reason": text}`. `error`
/// is a stable machine-readable code (`invalid_request`, `unknown_did`, …),
/// `reason` a sentence for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default)]
    pub reason: String,
}

/// The claims of a didmesh access token: RFC 7519 §4.1 registered claims,
/// `auth_time` from OpenID Connect Core §2, `amr` from RFC 8176. The node
/// mints them ([`Claims::for_login`]); relying parties verify them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the network's issuer string (the same on every node).
    pub iss: String,
    /// Subject: the DID that logged in.
    pub sub: String,
    /// Audience: the relying party the token is for. didmesh issues one
    /// audience per token, so this is a string; a token with an array `aud`
    /// is refused as malformed.
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Unique token id (RFC 7519 §4.1.7): 32 lower-case hex digits.
    pub jti: String,
    /// When the user proved possession of the key, seconds since the epoch.
    pub auth_time: u64,
    /// Authentication methods: `["swk"]` ([`AMR_SOFTWARE_KEY`]).
    pub amr: Vec<String>,
}

impl Claims {
    /// The claims a node issues for a login of `sub` at `now`: valid from
    /// `now` for `ttl` seconds, `jti` the hex of 16 random bytes the caller
    /// drew. Test issuers call this too, so they mint what a node mints.
    pub fn for_login(
        issuer: &str,
        sub: &str,
        aud: &str,
        now: u64,
        ttl: u64,
        jti: [u8; 16],
    ) -> Claims {
        Claims {
            iss: issuer.to_string(),
            sub: sub.to_string(),
            aud: aud.to_string(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: data_encoding::HEXLOWER.encode(&jti),
            auth_time: now,
            amr: vec![AMR_SOFTWARE_KEY.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_have_the_documented_shape() {
        let req: ChallengeRequest = serde_json::from_value(json!({"did": "did:key:z6Mk"})).unwrap();
        assert_eq!(req.audience, None);
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"did": "did:key:z6Mk"})
        );
        assert!(serde_json::from_value::<ChallengeRequest>(json!({"did": "d", "x": 1})).is_err());
        assert!(serde_json::from_value::<TokenRequest>(
            json!({"did": "d", "nonce": "n", "signature": "s", "extra": true})
        )
        .is_err());
        let err: ErrorBody = serde_json::from_value(json!({"error": "not_found"})).unwrap();
        assert_eq!(err.reason, "");
        let op: OpSubmitted = serde_json::from_value(json!({"cid": "b", "did": "d"})).unwrap();
        assert!(!op.durable, "an answer without `durable` is not durable");
    }

    #[test]
    fn token_responses_never_print_the_token() {
        let t = TokenResponse {
            access_token: "eyJsecret".into(),
            token_type: TOKEN_TYPE.into(),
            expires_in: 60,
        };
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }

    #[test]
    fn login_claims_are_what_the_node_documents() {
        let c = Claims::for_login(
            "https://didmesh.local",
            "did:key:z6Mk",
            "home-api",
            100,
            60,
            [0xab; 16],
        );
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({
                "iss": "https://didmesh.local", "sub": "did:key:z6Mk", "aud": "home-api",
                "iat": 100, "nbf": 100, "exp": 160, "jti": "ab".repeat(16),
                "auth_time": 100, "amr": ["swk"],
            })
        );
    }
}
