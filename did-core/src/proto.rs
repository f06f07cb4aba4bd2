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
/// RFC 8176 `hwk`: a hardware-held key (a passkey).
pub const AMR_HARDWARE_KEY: &str = "hwk";
/// RFC 8176 `user`: the authenticator tested the user (passkey UV flag).
pub const AMR_USER: &str = "user";
/// RFC 8176 `sms`: a code sent to a committed phone.
pub const AMR_SMS: &str = "sms";
/// `fed` (didmesh's own; RFC 8176 has no value for it): a sign-in at a
/// linked external OpenID provider.
pub const AMR_FEDERATED: &str = "fed";
/// RFC 8176 `mfa`: two or more distinct factors.
pub const AMR_MFA: &str = "mfa";
/// `acr` of a login with one factor.
pub const ACR_1FA: &str = "urn:didmesh:acr:1fa";
/// `acr` of a login with two or more distinct factors (what
/// `acr_values=urn:didmesh:acr:mfa` asks for).
pub const ACR_MFA: &str = "urn:didmesh:acr:mfa";
/// `POST {did, nonce}` → [`CosignSlot`]: a slot for a second device's
/// signature over the same challenge.
pub const COSIGN_PATH: &str = "/v1/auth/cosign";
/// Error code of a token request whose proofs are valid but too few for
/// the DID's login policy ([`MoreFactorsNeeded`]).
pub const MORE_FACTORS_NEEDED: &str = "more_factors_needed";

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
    /// What a login of this DID needs ([`crate::DidState::login_requirement`]).
    /// Every node answer for a DID has it; absent only in a challenge bound
    /// to no DID (usernameless passkey) and from nodes before issue 11.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyAnswer>,
}

/// "`required` distinct factors out of `factors`", as a challenge answer
/// states it (for a `did:key`: 1 of `[{"id":"key","kind":"key"}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyAnswer {
    pub required: u8,
    pub factors: Vec<crate::policy::Factor>,
}

/// An SMS code for the token request: the phone entry's id and the code
/// the node sent to it (`POST /v1/auth/sms`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsProof {
    pub phone: String,
    pub code: String,
}

impl std::fmt::Debug for SmsProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A live one-time code: never in a debug print or a log.
        f.debug_struct("SmsProof")
            .field("phone", &self.phone)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Body of `POST /v1/auth/token`: the challenge, with one or more proofs
/// over its message. The node counts the distinct factors that verify
/// against the DID's login policy; the old body (`signature` alone) is
/// still a valid request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub did: String,
    /// The nonce of the challenge, as the node returned it.
    pub nonce: String,
    /// Base64url (no padding) of the Ed25519 signature over the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// More Ed25519 signatures over the same message (other devices' keys,
    /// e.g. collected through a co-sign slot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
    /// A WebAuthn assertion over SHA-256 of the message by a passkey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assertion: Option<crate::passkey::Assertion>,
    /// An SMS code sent for this challenge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsProof>,
}

impl TokenRequest {
    /// The one-signature request (the body before issue 11).
    pub fn signed(did: &str, nonce: &str, signature: &str) -> TokenRequest {
        TokenRequest {
            did: did.to_string(),
            nonce: nonce.to_string(),
            signature: Some(signature.to_string()),
            ..TokenRequest::default()
        }
    }

    /// Every Ed25519 signature of the request: `signature`, then
    /// `signatures`.
    pub fn all_signatures(&self) -> impl Iterator<Item = &str> {
        self.signature
            .iter()
            .chain(self.signatures.iter())
            .map(String::as_str)
    }
}

/// The 401 answer of `POST /v1/auth/token` (and of the sign-in page) when
/// every proof verified but they are too few: `error` is
/// [`MORE_FACTORS_NEEDED`], `presented` the factor ids that counted. The
/// nonce is not used up: the wallet adds proofs and sends again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoreFactorsNeeded {
    pub error: String,
    pub reason: String,
    pub required: u8,
    pub presented: Vec<String>,
}

/// Answer of `POST /v1/auth/cosign`: an approval code another wallet
/// signs the challenge under (`didmesh approve CODE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignSlot {
    /// `XXXX-XXXX` (Crockford base32).
    pub code: String,
    pub expires_at: u64,
}

/// Answer of `GET /v1/auth/cosign/{code}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CosignStatus {
    Waiting,
    /// The signatures given so far and the keys (entry ids) that made them.
    Signed {
        signatures: Vec<String>,
        keys: Vec<String>,
    },
    Expired,
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
    /// Authentication methods (RFC 8176): `swk`, `hwk`, `user`, `sms`,
    /// `fed`, and `mfa` when two or more distinct factors were presented.
    pub amr: Vec<String>,
    /// Authentication context class: [`ACR_1FA`] or [`ACR_MFA`]. Tokens
    /// of nodes before issue 11 have none (read it as one factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The DID key (multibase) or passkey id that proved the login, so a
    /// verifier can refuse the token once that key leaves the DID (a `key`
    /// entry of the revocation feed, PROTOCOL.md "Revocation"). Absent on
    /// tokens of older nodes and of logins not proved by one DID key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The DID's revocation watermark the issuing node held when it issued
    /// the token: the largest `before` of the DID's own sign-outs and of
    /// member revocations. A `did` entry of the revocation feed revokes the
    /// token when `rev < before` ([`Claims::revoked_by`]), so revocation
    /// does not depend on clocks: a node whose clock runs ahead cannot
    /// issue a token that escapes a sign-out it has not seen yet, and a
    /// login right after a sign-out carries `rev = before` and is good at
    /// once. Absent on tokens of older nodes: `iat` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
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
            acr: Some(ACR_1FA.to_string()),
            key: None,
            rev: None,
        }
    }

    /// Whether a `did` revocation with this `before` covers the token:
    /// `rev < before`, or `iat < before` for a token without `rev`.
    pub fn revoked_by(&self, before: u64) -> bool {
        self.rev.unwrap_or(self.iat) < before
    }

    /// Whether the login presented two or more distinct factors (`amr`
    /// has [`AMR_MFA`]).
    pub fn is_mfa(&self) -> bool {
        self.amr.iter().any(|m| m == AMR_MFA)
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
        // the body before issue 11 still reads, and writes back the same
        let old = json!({"did": "d", "nonce": "n", "signature": "s"});
        let req: TokenRequest = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(req, TokenRequest::signed("d", "n", "s"));
        assert_eq!(serde_json::to_value(&req).unwrap(), old);
        let multi: TokenRequest = serde_json::from_value(json!({
            "did": "d", "nonce": "n", "signatures": ["a", "b"],
            "sms": {"phone": "phone-1", "code": "123456"},
        }))
        .unwrap();
        assert_eq!(multi.all_signatures().collect::<Vec<_>>(), ["a", "b"]);
        assert!(!format!("{multi:?}").contains("123456"));
        // a challenge answer of an old node (no policy) still reads
        let ch: ChallengeResponse = serde_json::from_value(json!({
            "nonce": "n", "message": "m", "issued_at": 1, "expires_at": 2, "audience": "a",
        }))
        .unwrap();
        assert_eq!(ch.policy, None);
        assert_eq!(
            serde_json::to_value(CosignStatus::Signed {
                signatures: vec!["s".into()],
                keys: vec!["key-1".into()]
            })
            .unwrap(),
            json!({"status": "signed", "signatures": ["s"], "keys": ["key-1"]})
        );
        assert_eq!(
            serde_json::to_value(CosignStatus::Waiting).unwrap(),
            json!({"status": "waiting"})
        );
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
                "auth_time": 100, "amr": ["swk"], "acr": ACR_1FA,
            })
        );
    }
}
