//! Network membership: the nodes whose keys sign access tokens.
//!
//! A network starts from its genesis (founding members and a quorum).
//! `member-add` and `member-remove` ops form a tree rooted at the genesis,
//! each naming the membership op it builds on (`prev`, `null` = the
//! genesis). The rules (PROTOCOL.md, "Membership"; enforced in
//! [`crate::ledger`]):
//!
//! * A change needs distinct signatures of a **strict majority** of the
//!   members at its parent ([`NetworkRules::quorum_for`]); a genesis may ask
//!   for more (extra signatures above a majority), never less. The author signs in `signer`/`sig`, co-signers in
//!   `cosigs`; all sign the same body, which is also what the CID names.
//! * Two strict majorities of one set always share a member, so two
//!   different changes on one parent mean some member signed both: that is
//!   **equivocation**, recorded as evidence against the member.
//! * The members are those of the single chain when there is no fork. When
//!   there is one, a node is a member only if *every* branch's latest set
//!   holds it and it never equivocated. A change built on an old op
//!   therefore cannot bring back anyone a later change removed, and a fork
//!   can only shrink the set, never grow it.
//! * A removal that would leave so few members that losing one more key
//!   freezes membership (fewer than `quorum_for(n) + 1` members) needs the
//!   signed `force` flag.
//!
//! Besides its Ed25519 key (which signs ops, access tokens and EdDSA ID
//! tokens) a member may carry an RSA-2048 and a P-256 public key for ID
//! tokens, because OpenID relying parties want RS256 (OIDC Core §15.1:
//! mandatory to implement) and ES256 (what AWS Cognito and Auth0 accept
//! from an external IdP besides RS256). Both are optional and skipped when
//! absent, so a genesis or membership op without them keeps its bytes, its
//! CID and its network id. A bad key never parses: [`RsaPublicJwk`] and
//! [`P256Key`] check themselves when read, so a genesis or an op carrying
//! one is refused with the reason.

use crate::keys::PublicKey;
use crate::passkey::P256Key;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Digest as _;

/// One member node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Human-readable label (`node1`).
    pub name: String,
    /// The member's DID: the `did:key` of its token-signing key.
    pub node_did: String,
    /// Token-signing key (Ed25519: ops, access tokens, EdDSA ID tokens).
    pub key: PublicKey,
    /// RS256 ID-token key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa: Option<RsaPublicJwk>,
    /// ES256 ID-token key (Multikey `zDn…`, compressed point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p256: Option<P256Key>,
}

impl Member {
    /// A member with only its Ed25519 key (what every member had before
    /// ID tokens; such an entry serializes exactly as it did then).
    pub fn from_key(name: &str, key: PublicKey) -> Member {
        Member {
            name: name.to_string(),
            node_did: key.did_key(),
            key,
            rsa: None,
            p256: None,
        }
    }

    /// [`Member::from_key`] with the RS256 and ES256 keys.
    pub fn with_token_keys(mut self, rsa: RsaPublicJwk, p256: P256Key) -> Member {
        self.rsa = Some(rsa);
        self.p256 = Some(p256);
        self
    }
}

/// Why a member's RSA key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member rsa key: {0}")]
pub struct MemberKeyError(pub &'static str);

/// The public exponent every member RSA key uses: 65537, base64url.
pub const RSA_E: &str = "AQAB";
/// Bytes of an RSA-2048 modulus.
pub const RSA_MODULUS_BYTES: usize = 256;

/// An RSA-2048 public key as the JWK members `n` and `e` (RFC 7518
/// §6.3.1: base64url of the unsigned big-endian integers, no padding).
///
/// Only a real 2048-bit modulus (256 bytes, top bit set, odd) with
/// e = 65537 is accepted, in its one canonical base64url spelling, so the
/// key reads back to the same bytes (the op's CID) and every relying party
/// takes it (RFC 7518 §3.3: 2048 bits or larger; Cognito and others refuse
/// other exponents in practice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RsaPublicJwk {
    n: String,
    e: String,
}

impl RsaPublicJwk {
    /// From the modulus bytes (big-endian) and e = 65537.
    pub fn from_modulus(n: &[u8]) -> Result<RsaPublicJwk, MemberKeyError> {
        RsaPublicJwk::new(&URL_SAFE_NO_PAD.encode(n), RSA_E)
    }

    /// From the JWK members, checked (type doc).
    pub fn new(n: &str, e: &str) -> Result<RsaPublicJwk, MemberKeyError> {
        if e != RSA_E {
            return Err(MemberKeyError("e must be AQAB (65537)"));
        }
        // 256 bytes are 342 base64url characters; refuse anything longer
        // before decoding it.
        if n.len() != 342 {
            return Err(MemberKeyError("n must be 256 bytes (RSA-2048)"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(n)
            .map_err(|_| MemberKeyError("n is not base64url without padding"))?;
        if bytes.len() != RSA_MODULUS_BYTES || URL_SAFE_NO_PAD.encode(&bytes) != n {
            return Err(MemberKeyError("n must be 256 bytes (RSA-2048)"));
        }
        if bytes[0] & 0x80 == 0 {
            return Err(MemberKeyError(
                "n must have its top bit set (a 2048-bit modulus)",
            ));
        }
        if bytes[RSA_MODULUS_BYTES - 1] & 1 == 0 {
            return Err(MemberKeyError("n must be odd"));
        }
        Ok(RsaPublicJwk {
            n: n.to_string(),
            e: e.to_string(),
        })
    }

    /// `n`, base64url.
    pub fn n(&self) -> &str {
        &self.n
    }

    /// `e`, base64url (always `AQAB`).
    pub fn e(&self) -> &str {
        &self.e
    }

    /// RFC 7638 §3.2 thumbprint: SHA-256 of `{"e","kty","n"}` in that
    /// order, no whitespace, base64url.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, self.e, self.n);
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
    }

    /// The JWK a JWKS serves (RFC 7517 §4, RFC 7518 §6.3), `kid` = the
    /// thumbprint.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "RSA",
            "n": self.n,
            "e": self.e,
            "alg": "RS256",
            "use": "sig",
            "kid": self.thumbprint(),
        })
    }
}

impl<'de> Deserialize<'de> for RsaPublicJwk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            n: String,
            e: String,
        }
        let raw = Raw::deserialize(d)?;
        RsaPublicJwk::new(&raw.n, &raw.e).map_err(serde::de::Error::custom)
    }
}

/// The affine coordinates of a P-256 key, base64url of 32 bytes each
/// (RFC 7518 §6.2.1.2-3).
fn p256_xy(key: &P256Key) -> (String, String) {
    let point = key.verifying_key().to_encoded_point(false);
    // An uncompressed point of a valid key always has both coordinates.
    let x = point
        .x()
        .map(|x| URL_SAFE_NO_PAD.encode(x))
        .unwrap_or_default();
    let y = point
        .y()
        .map(|y| URL_SAFE_NO_PAD.encode(y))
        .unwrap_or_default();
    (x, y)
}

/// RFC 7638 §3.2 thumbprint of a P-256 key: SHA-256 of
/// `{"crv","kty","x","y"}` in that order, base64url.
pub fn p256_thumbprint(key: &P256Key) -> String {
    let (x, y) = p256_xy(key);
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// The JWK of a P-256 key as a JWKS serves it (RFC 7518 §6.2), `kid` =
/// its thumbprint.
pub fn p256_jwk(key: &P256Key) -> serde_json::Value {
    let (x, y) = p256_xy(key);
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "alg": "ES256",
        "use": "sig",
        "kid": p256_thumbprint(key),
    })
}

/// What a `member-revoke` op carries: every session of `did` issued
/// before `before` (unix s, at most the op's `created_at`) is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRevocation {
    pub did: String,
    pub before: u64,
}

/// Default of the network rule `key_overlap_secs`: a retired member key
/// stays in the JWKS this long after the rotation that retired it (at least
/// the longest access-token lifetime, so a token signed just before the
/// rotation verifies until it expires).
pub const DEFAULT_KEY_OVERLAP_SECS: u64 = 3600;

/// A member's token keys that a `member-rotate` op replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKeys {
    /// The member's stable id (its entry's `node_did`).
    pub node_did: String,
    /// The entry as it was before the rotation (its three keys).
    pub entry: Member,
    /// The rotation op's `created_at`: the keys sign nothing after it, and
    /// verifiers drop them at `retired_at + key_overlap_secs`.
    pub retired_at: u64,
}

impl RetiredKeys {
    /// When verifiers stop accepting these keys.
    pub fn retires(&self, overlap_secs: u64) -> u64 {
        self.retired_at.saturating_add(overlap_secs)
    }

    /// The retired keys that the rotation really replaced: the Ed25519,
    /// RSA and P-256 keys of `entry` that `current` (the member's entry
    /// now) no longer carries. A rotation that only adds RSA/P-256 keys to
    /// a pre-ID-token entry retires nothing.
    pub fn replaced(&self, current: &Member) -> Member {
        Member {
            name: self.entry.name.clone(),
            node_did: self.entry.node_did.clone(),
            key: self.entry.key,
            rsa: self
                .entry
                .rsa
                .clone()
                .filter(|k| current.rsa.as_ref() != Some(k)),
            p256: self.entry.p256.filter(|k| current.p256.as_ref() != Some(k)),
        }
    }
}

/// A co-signature on a membership op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoSig {
    pub signer: PublicKey,
    pub sig: String,
}

/// What fixes the membership rules of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    pub network_id: String,
    pub founders: Vec<Member>,
    /// Distinct member signatures a membership change needs, as fixed by
    /// the genesis; the ledger never asks for less than a strict majority
    /// ([`NetworkRules::quorum_for`]).
    pub quorum: usize,
    /// Seconds a rotated-away member key stays in the JWKS
    /// ([`DEFAULT_KEY_OVERLAP_SECS`] unless the genesis says otherwise).
    pub key_overlap_secs: u64,
}

impl NetworkRules {
    /// Signatures a change needs when the parent set has `members` members:
    /// a strict majority, plus as many extra signatures as the genesis
    /// quorum asked above the founders' majority (capped at all members).
    /// So a genesis can ask for more than a majority, never less, and what
    /// it asked keeps its meaning as the network grows or shrinks.
    pub fn quorum_for(&self, members: usize) -> usize {
        let extra = self.quorum.saturating_sub(self.founders.len() / 2 + 1);
        (members / 2 + 1 + extra).min(members.max(1))
    }

    /// Whether a set of `members` can lose one key and still reach its
    /// quorum (so membership never freezes on a single lost key).
    pub fn survives_one_loss(&self, members: usize) -> bool {
        members > self.quorum_for(members)
    }
}

/// Evidence that a member signed two different changes on one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    pub member: PublicKey,
    /// The parent both changes build on (`None` = the genesis).
    pub parent: Option<crate::encoding::Cid>,
    /// The two conflicting changes, lower CID first.
    pub ops: [crate::encoding::Cid; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7638 §3.1: the example RSA key (RFC 7517 Appendix A.1) and its
    /// thumbprint.
    const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

    #[test]
    fn rfc7638_rsa_thumbprint_vector() {
        let key = RsaPublicJwk::new(RFC7638_N, "AQAB").unwrap();
        assert_eq!(
            key.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(key.jwk()["kid"], key.thumbprint());
    }

    #[test]
    fn only_a_2048_bit_odd_modulus_with_e_65537_is_accepted() {
        let n = URL_SAFE_NO_PAD.decode(RFC7638_N).unwrap();
        assert!(RsaPublicJwk::from_modulus(&n).is_ok());
        let refused = |n: &[u8], e: &str| {
            RsaPublicJwk::new(&URL_SAFE_NO_PAD.encode(n), e)
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&n, "AAEAAQ").contains("AQAB"));
        assert!(refused(&n, "Aw").contains("AQAB"));
        assert!(refused(&n[1..], "AQAB").contains("256 bytes"));
        assert!(refused(&[n.clone(), vec![1]].concat(), "AQAB").contains("256 bytes"));
        let mut low = n.clone();
        low[0] &= 0x7f;
        assert!(refused(&low, "AQAB").contains("top bit"));
        let mut even = n.clone();
        even[255] &= 0xfe;
        assert!(refused(&even, "AQAB").contains("odd"));
        // Padding and the standard alphabet are other spellings of the
        // same bytes: refused, so one key has one encoding.
        assert!(RsaPublicJwk::new(&format!("{RFC7638_N}=="), "AQAB").is_err());
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&n);
        assert_ne!(standard, RFC7638_N);
        assert!(RsaPublicJwk::new(&standard, "AQAB").is_err());
    }

    #[test]
    fn a_member_entry_reads_back_and_a_bad_key_is_a_parse_error() {
        let ed = crate::keys::public_of(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let plain = Member::from_key("node1", ed);
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("rsa") && !text.contains("p256"), "{text}");
        let p256 = P256Key::from_sec1(
            p256::ecdsa::SigningKey::from_slice(&[7; 32])
                .unwrap()
                .verifying_key()
                .to_encoded_point(true)
                .as_bytes(),
        )
        .unwrap();
        let full = plain.with_token_keys(RsaPublicJwk::new(RFC7638_N, "AQAB").unwrap(), p256);
        let text = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<Member>(&text).unwrap(), full);
        let bad_n = text.replace(RFC7638_N, &RFC7638_N[..340]);
        let err = serde_json::from_str::<Member>(&bad_n)
            .unwrap_err()
            .to_string();
        assert!(err.contains("n must be 256 bytes"), "{err}");
        let unknown = text.replace(r#""e":"AQAB""#, r#""e":"AQAB","kty":"RSA""#);
        assert!(serde_json::from_str::<Member>(&unknown).is_err());
        let jwk = p256_jwk(&p256);
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["kid"], p256_thumbprint(&p256));
    }
}
