//! Links from a DID to accounts at external OpenID providers (issue 10,
//! PROTOCOL.md "Federated links").
//!
//! A link is an entry in its owner's DID state, so adding and removing one
//! is a signed `update`: the fork rule, disputes and recovery keys protect
//! it like any key, and a removal is in force on every node the op reached.
//!
//! The ledger never holds the raw `(iss, sub)`: it holds
//!
//! ```text
//! commitment = base64url(blake3("didmesh federated account v1\0" ‖ network_id ‖ "\0" ‖ iss ‖ "\0" ‖ sub))
//! ```
//!
//! deterministic, so a node that verified an ID token finds the DID with
//! [`crate::ledger::Ledger::linked_dids`]; the network id in it keeps two
//! networks' commitments for one account unlinkable. It is *not* hiding
//! against someone who already knows `(iss, sub)` (they can confirm a guess;
//! a provider can enumerate its own subjects), see PROTOCOL.md.
//!
//! Anyone can copy a commitment into their own DID, so each link carries an
//! **attestation**: a network member's Ed25519 signature over
//!
//! ```text
//! canonical JSON of {"type":"didmesh-link-attestation/1","network_id","did","provider","commitment","attested_at"}
//! ```
//!
//! made only after the member verified a sign-in at the provider. It binds
//! the DID, so a copied entry does not verify for the copier's DID. The
//! ledger checks only the shape of a link ([`FedLink::check`]); whether the
//! attestation is good is decided at sign-in time ([`verify_attestation`],
//! [`find_linked`]) against the *current* members, so a removed member's
//! attestations stop counting at once.

use crate::encoding::canonical_value;
use crate::keys::{sign_b64, signature_from_b64, PublicKey};
use crate::ledger::Ledger;
use crate::op::OpError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Domain separation of the commitment hash.
pub const COMMITMENT_CONTEXT: &[u8] = b"didmesh federated account v1\0";
/// `type` of the attested object (versioned: a new format gets a new type,
/// so no signature can be read as another format's).
pub const ATTESTATION_TYPE: &str = "didmesh-link-attestation/1";
/// Links one DID state may hold (the default of
/// [`crate::op::Limits::max_links`]).
pub const MAX_LINKS: usize = 5;
/// Longest provider name (`[a-z0-9_-]`).
pub const MAX_PROVIDER_NAME: usize = 32;

/// One link, as it sits in its owner's DID state (`DidState.links`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedLink {
    /// Entry id, 1-32 of `[A-Za-z0-9_-]`, unique among the state's links.
    pub id: String,
    /// The provider's name as nodes configure it, 1-32 of `[a-z0-9_-]`.
    pub provider: String,
    /// [`commitment`] of the network, issuer and subject: base64url of 32
    /// bytes.
    pub commitment: String,
    /// The member key that attested.
    pub attested_by: PublicKey,
    /// Unix seconds of the attestation.
    pub attested_at: u64,
    /// base64url Ed25519 signature over [`attestation_bytes`].
    pub attestation: String,
}

/// What a node hands back after a verified sign-in for linking: a
/// [`FedLink`] without its entry id (the owner's wallet picks it when it
/// writes the update op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub provider: String,
    pub commitment: String,
    pub attested_by: PublicKey,
    pub attested_at: u64,
    pub attestation: String,
}

impl Attestation {
    /// The link entry `id` carrying this attestation.
    pub fn into_link(self, id: impl Into<String>) -> FedLink {
        FedLink {
            id: id.into(),
            provider: self.provider,
            commitment: self.commitment,
            attested_by: self.attested_by,
            attested_at: self.attested_at,
            attestation: self.attestation,
        }
    }

    /// [`verify_attestation`] for an attestation not yet in a link.
    pub fn verify(&self, did: &str, network_id: &str, members: &[PublicKey]) -> bool {
        verify_parts(
            &self.provider,
            &self.commitment,
            &self.attested_by,
            self.attested_at,
            &self.attestation,
            did,
            network_id,
            members,
        )
    }
}

impl FedLink {
    /// The attestation part of the link (everything but `id`).
    pub fn attestation_part(&self) -> Attestation {
        Attestation {
            provider: self.provider.clone(),
            commitment: self.commitment.clone(),
            attested_by: self.attested_by,
            attested_at: self.attested_at,
            attestation: self.attestation.clone(),
        }
    }

    /// The shape rules the ledger enforces (PROTOCOL.md, "Federated
    /// links"): ids, names, encodings. Not the attestation's validity,
    /// which depends on the member set at sign-in time.
    pub fn check(&self) -> Result<(), OpError> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !id_ok {
            return Err(OpError::Invalid(format!(
                "link id {:?} must be 1-32 characters of [A-Za-z0-9_-]",
                crate::op::truncate(&self.id)
            )));
        }
        if !provider_name_ok(&self.provider) {
            return Err(OpError::Invalid(format!(
                "link {}: provider name must be 1-{MAX_PROVIDER_NAME} characters of [a-z0-9_-]",
                self.id
            )));
        }
        if !canonical_b64(&self.commitment, 32) {
            return Err(OpError::Invalid(format!(
                "link {}: commitment must be base64url of 32 bytes",
                self.id
            )));
        }
        if !canonical_b64(&self.attestation, 64) {
            return Err(OpError::Invalid(format!(
                "link {}: attestation must be base64url of a 64-byte signature",
                self.id
            )));
        }
        Ok(())
    }
}

/// Whether `name` is a valid provider name: 1-32 of `[a-z0-9_-]` (it
/// appears in URL paths, `/federation/NAME/callback`, and in `idp` claims).
pub fn provider_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROVIDER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// Unpadded base64url of exactly `len` bytes, in its one canonical form
/// (so one link has one byte encoding, and a commitment compares by string).
fn canonical_b64(s: &str, len: usize) -> bool {
    s.len() <= 4 * len.div_ceil(3)
        && URL_SAFE_NO_PAD
            .decode(s)
            .map(|b| b.len() == len && URL_SAFE_NO_PAD.encode(&b) == s)
            .unwrap_or(false)
}

/// The commitment to the account `(iss, sub)` on `network_id` (module doc).
/// `iss` is the issuer exactly as the verified ID token carries it (and as
/// the node's provider configuration names it); `sub` is the token's `sub`.
pub fn commitment(network_id: &str, iss: &str, sub: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(COMMITMENT_CONTEXT);
    h.update(network_id.as_bytes());
    h.update(b"\0");
    h.update(iss.as_bytes());
    h.update(b"\0");
    h.update(sub.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize().as_bytes())
}

/// The bytes a member signs to attest that `did` may hold `commitment` at
/// `provider` on `network_id` (module doc): canonical JSON (RFC 8785
/// subset, [`crate::encoding`]).
pub fn attestation_bytes(
    network_id: &str,
    did: &str,
    provider: &str,
    commitment: &str,
    attested_at: u64,
) -> Vec<u8> {
    let body = json!({
        "type": ATTESTATION_TYPE,
        "network_id": network_id,
        "did": did,
        "provider": provider,
        "commitment": commitment,
        "attested_at": attested_at,
    });
    // Strings and an integer only: canonical encoding refuses floats alone,
    // so this cannot fail; an empty message would verify nothing.
    canonical_value(&body).unwrap_or_default()
}

/// A member's attestation (module doc). The caller must have verified a
/// sign-in at `provider` whose `(iss, sub)` gives `commitment`.
pub fn sign_attestation(
    key: &SigningKey,
    network_id: &str,
    did: &str,
    provider: &str,
    commitment: &str,
    attested_at: u64,
) -> Attestation {
    let bytes = attestation_bytes(network_id, did, provider, commitment, attested_at);
    Attestation {
        provider: provider.to_string(),
        commitment: commitment.to_string(),
        attested_by: crate::keys::public_of(key),
        attested_at,
        attestation: sign_b64(key, &bytes),
    }
}

/// Whether `link` is a good link for `did` on `network_id`: its shape is
/// valid, it was signed by `attested_by`, and `attested_by` is among
/// `members` (pass the *current* members' Ed25519 keys,
/// [`crate::ledger::Ledger::members`]).
pub fn verify_attestation(
    link: &FedLink,
    did: &str,
    network_id: &str,
    members: &[PublicKey],
) -> bool {
    link.check().is_ok()
        && verify_parts(
            &link.provider,
            &link.commitment,
            &link.attested_by,
            link.attested_at,
            &link.attestation,
            did,
            network_id,
            members,
        )
}

#[allow(clippy::too_many_arguments)]
fn verify_parts(
    provider: &str,
    commitment: &str,
    attested_by: &PublicKey,
    attested_at: u64,
    attestation: &str,
    did: &str,
    network_id: &str,
    members: &[PublicKey],
) -> bool {
    if !members.contains(attested_by) {
        return false;
    }
    let Ok(sig) = signature_from_b64(attestation) else {
        return false;
    };
    let bytes = attestation_bytes(network_id, did, provider, commitment, attested_at);
    attested_by.verify(&bytes, &sig)
}

/// Who a verified account `(provider, commitment)` signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkLookup {
    /// No usable DID holds a valid link: "not linked".
    NotLinked,
    /// Exactly one: sign in as this DID.
    One(String),
    /// Several DIDs hold a valid link (two nodes attested at once): refuse
    /// as ambiguous until the owner removes one. Sorted.
    Ambiguous(Vec<String>),
}

/// Sign-in resolution (issue 10): the DIDs the ledger indexes under
/// `commitment`, kept when their *usable* state (not disputed, not
/// deactivated) has a link with this commitment and this provider name
/// whose attestation verifies for that DID, this network and one of
/// `members` (the current members' keys).
///
/// A node also calls this before attesting: a commitment that is already
/// [`LinkLookup::One`] for another DID is not attested again (one account,
/// one DID).
pub fn find_linked(
    ledger: &Ledger,
    network_id: &str,
    provider: &str,
    commitment: &str,
    members: &[PublicKey],
) -> LinkLookup {
    let mut found: Vec<String> = ledger
        .linked_dids(commitment)
        .into_iter()
        .filter(|did| {
            let Some(view) = ledger.resolve(did) else {
                return false;
            };
            let Some(state) = view.usable_state() else {
                return false;
            };
            state.links.iter().any(|l| {
                l.commitment == commitment
                    && l.provider == provider
                    && verify_attestation(l, did, network_id, members)
            })
        })
        .map(str::to_string)
        .collect();
    found.sort();
    match found.len() {
        0 => LinkLookup::NotLinked,
        1 => LinkLookup::One(found.remove(0)),
        _ => LinkLookup::Ambiguous(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let c = commitment("mesh-a", "https://idp.example", "alice");
        let link = sign_attestation(&key, "mesh-a", "did:mesh:x", "idp", &c, 1).into_link("l1");
        assert_eq!(link.check(), Ok(()));
        for bad in [
            FedLink {
                id: String::new(),
                ..link.clone()
            },
            FedLink {
                id: "a.b".into(),
                ..link.clone()
            },
            FedLink {
                id: "x".repeat(33),
                ..link.clone()
            },
            FedLink {
                provider: "Google".into(),
                ..link.clone()
            },
            FedLink {
                provider: String::new(),
                ..link.clone()
            },
            FedLink {
                provider: "p".repeat(33),
                ..link.clone()
            },
            FedLink {
                commitment: "short".into(),
                ..link.clone()
            },
            FedLink {
                commitment: format!("{c}="),
                ..link.clone()
            },
            FedLink {
                commitment: c.replace(|_: char| true, "+"),
                ..link.clone()
            },
            FedLink {
                attestation: c.clone(),
                ..link.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        // 32 bytes leave 2 unused bits in the last character; a lenient
        // decoder accepts them set. Refused: one link has one encoding.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut alt = c.clone();
        let tail = alt.pop().unwrap();
        let idx = ALPHABET.find(tail).unwrap();
        assert_eq!(idx % 4, 0, "canonical: the unused bits are zero");
        alt.push(ALPHABET.as_bytes()[idx + 1] as char);
        assert!(!canonical_b64(&alt, 32));
    }
}
