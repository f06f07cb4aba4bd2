//! The network's founding document, its **genesis**, and the network id
//! derived from it (PROTOCOL.md §5).
//!
//! ```text
//! network_id = "mesh-" ‖ base32_lower(blake3(canonical JSON of
//!              {created_at, issuer, members, quorum}))[..16]
//! ```
//!
//! The id covers every other field, so two networks with different members,
//! issuers or quorums never share an id, and a genesis file whose id does
//! not match its content is refused. Reading and writing the file is the
//! node's business (`node/src/identity.rs`); this module only decides.
//!
//! A member's RS256/ES256 ID-token keys ([`crate::member`]) are part of
//! `members`, so the id covers them too; a genesis written before they
//! existed has no such fields and keeps its id. A bad key makes the file
//! unreadable (the keys check themselves when parsed), so a genesis can
//! never hand a relying party an unusable key.

use crate::encoding::{base32_lower, canonical_json, EncodingError};
use crate::member::{Member, NetworkRules, DEFAULT_KEY_OVERLAP_SECS};
use serde::{Deserialize, Serialize};

/// Prefix of every network id.
pub const NETWORK_ID_PREFIX: &str = "mesh-";
/// Base32 characters of the digest kept in the id (80 bits).
const ID_CHARS: usize = 16;

/// Why a genesis is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network_id does not match its content")]
    IdMismatch,
    #[error("needs at least one member and a quorum between a strict majority and all members")]
    Quorum,
    #[error("genesis cannot be encoded: {0}")]
    Encoding(#[from] EncodingError),
}

/// What fixes a network: its issuer, founding members and quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Derived from the other fields ([`network_id`]).
    pub network_id: String,
    /// The `iss` of every token of the network.
    pub issuer: String,
    /// The founding members.
    pub members: Vec<Member>,
    /// Signatures of current members needed for a membership change (at
    /// least a strict majority of `members`; [`NetworkRules::quorum_for`]).
    pub quorum: usize,
    pub created_at: u64,
    /// Seconds a member key replaced by a `member-rotate` op stays in the
    /// JWKS ([`crate::member`]); omitted when it is the default (3600), so a
    /// genesis written before rotation keeps its bytes and its id.
    #[serde(
        default = "default_overlap",
        skip_serializing_if = "is_default_overlap"
    )]
    pub key_overlap_secs: u64,
}

fn default_overlap() -> u64 {
    DEFAULT_KEY_OVERLAP_SECS
}

fn is_default_overlap(secs: &u64) -> bool {
    *secs == DEFAULT_KEY_OVERLAP_SECS
}

/// The bytes the network id hashes: canonical JSON of the genesis without
/// its id.
pub fn id_preimage(
    issuer: &str,
    members: &[Member],
    quorum: usize,
    created_at: u64,
) -> Result<Vec<u8>, EncodingError> {
    id_preimage_with_overlap(
        issuer,
        members,
        quorum,
        created_at,
        DEFAULT_KEY_OVERLAP_SECS,
    )
}

/// [`id_preimage`] with a `key_overlap_secs` rule (left out of the bytes
/// when it is the default, so older ids are unchanged).
pub fn id_preimage_with_overlap(
    issuer: &str,
    members: &[Member],
    quorum: usize,
    created_at: u64,
    key_overlap_secs: u64,
) -> Result<Vec<u8>, EncodingError> {
    #[derive(Serialize)]
    struct Body<'a> {
        created_at: u64,
        issuer: &'a str,
        #[serde(skip_serializing_if = "is_default_overlap")]
        key_overlap_secs: u64,
        members: &'a [Member],
        quorum: usize,
    }
    canonical_json(&Body {
        created_at,
        issuer,
        key_overlap_secs,
        members,
        quorum,
    })
}

/// The id of the network these fields define (module doc).
pub fn network_id(
    issuer: &str,
    members: &[Member],
    quorum: usize,
    created_at: u64,
) -> Result<String, EncodingError> {
    network_id_with_overlap(
        issuer,
        members,
        quorum,
        created_at,
        DEFAULT_KEY_OVERLAP_SECS,
    )
}

/// [`network_id`] of a genesis with a `key_overlap_secs` rule.
pub fn network_id_with_overlap(
    issuer: &str,
    members: &[Member],
    quorum: usize,
    created_at: u64,
    key_overlap_secs: u64,
) -> Result<String, EncodingError> {
    let bytes = id_preimage_with_overlap(issuer, members, quorum, created_at, key_overlap_secs)?;
    let digest = base32_lower(blake3::hash(&bytes).as_bytes());
    Ok(format!("{NETWORK_ID_PREFIX}{}", &digest[..ID_CHARS]))
}

impl Genesis {
    /// Builds a genesis, derives its id and checks it ([`Genesis::check`]).
    pub fn new(
        issuer: &str,
        members: Vec<Member>,
        quorum: usize,
        created_at: u64,
    ) -> Result<Genesis, NetworkError> {
        Genesis::with_overlap(
            issuer,
            members,
            quorum,
            created_at,
            DEFAULT_KEY_OVERLAP_SECS,
        )
    }

    /// [`Genesis::new`] with a `key_overlap_secs` rule (how long a rotated
    /// member key stays in the JWKS).
    pub fn with_overlap(
        issuer: &str,
        members: Vec<Member>,
        quorum: usize,
        created_at: u64,
        key_overlap_secs: u64,
    ) -> Result<Genesis, NetworkError> {
        let genesis = Genesis {
            network_id: network_id_with_overlap(
                issuer,
                &members,
                quorum,
                created_at,
                key_overlap_secs,
            )?,
            issuer: issuer.to_string(),
            members,
            quorum,
            created_at,
            key_overlap_secs,
        };
        genesis.check()?;
        Ok(genesis)
    }

    /// A genesis read from elsewhere is acceptable iff its id is derived
    /// from its content and its quorum is between a strict majority of its
    /// members and all of them (a smaller quorum would let two disjoint
    /// groups each change membership with no equivocation to show for it).
    pub fn check(&self) -> Result<(), NetworkError> {
        let derived = network_id_with_overlap(
            &self.issuer,
            &self.members,
            self.quorum,
            self.created_at,
            self.key_overlap_secs,
        )?;
        if self.network_id != derived {
            return Err(NetworkError::IdMismatch);
        }
        let n = self.members.len();
        if n == 0 || self.quorum < n / 2 + 1 || self.quorum > n {
            return Err(NetworkError::Quorum);
        }
        Ok(())
    }

    /// The membership rules the ledger enforces.
    pub fn rules(&self) -> NetworkRules {
        NetworkRules {
            network_id: self.network_id.clone(),
            founders: self.members.clone(),
            quorum: self.quorum,
            key_overlap_secs: self.key_overlap_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::public_of;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;

    fn members(n: u8) -> Vec<Member> {
        (1..=n)
            .map(|i| {
                Member::from_key(
                    &format!("node{i}"),
                    public_of(&SigningKey::from_bytes(&[i; 32])),
                )
            })
            .collect()
    }

    #[test]
    fn the_id_covers_every_field() {
        let g = Genesis::new("https://didmesh.local", members(3), 2, 1_790_000_000).unwrap();
        assert!(g.network_id.starts_with("mesh-") && g.network_id.len() == 21);
        assert_eq!(g.check(), Ok(()));
        let others = [
            Genesis::new("https://other.example", members(3), 2, 1_790_000_000),
            Genesis::new("https://didmesh.local", members(3), 3, 1_790_000_000),
            Genesis::new("https://didmesh.local", members(3), 2, 1_790_000_001),
            Genesis::new("https://didmesh.local", members(4), 3, 1_790_000_000),
        ];
        for other in others {
            assert_ne!(other.unwrap().network_id, g.network_id);
        }
        let mut tampered = g.clone();
        tampered.quorum = 3;
        assert_eq!(tampered.check(), Err(NetworkError::IdMismatch));
    }

    #[test]
    fn token_keys_are_covered_by_the_id_and_a_bad_one_is_refused() {
        use crate::member::RsaPublicJwk;
        use crate::passkey::P256Key;
        let n = [[0xc1u8].as_slice(), &[0x5a; 254], &[0x01]].concat();
        let p256 = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let p256 =
            P256Key::from_sec1(p256.verifying_key().to_encoded_point(true).as_bytes()).unwrap();
        let mut ms = members(3);
        let plain = Genesis::new("i", ms.clone(), 2, 0).unwrap();
        ms[0] = ms[0]
            .clone()
            .with_token_keys(RsaPublicJwk::from_modulus(&n).unwrap(), p256);
        let keyed = Genesis::new("i", ms, 2, 0).unwrap();
        assert_ne!(keyed.network_id, plain.network_id);
        let text = serde_json::to_string(&keyed).unwrap();
        assert_eq!(serde_json::from_str::<Genesis>(&text).unwrap(), keyed);
        // A genesis naming a 2047-bit modulus does not even parse.
        let bad_n = URL_SAFE_NO_PAD.encode([[0x41u8].as_slice(), &n[1..]].concat());
        let bad = text.replace(keyed.members[0].rsa.as_ref().unwrap().n(), &bad_n);
        let err = serde_json::from_str::<Genesis>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("top bit"), "{err}");
    }

    #[test]
    fn quorum_between_a_strict_majority_and_all() {
        assert_eq!(
            Genesis::new("i", members(4), 2, 0),
            Err(NetworkError::Quorum)
        );
        assert_eq!(
            Genesis::new("i", members(3), 4, 0),
            Err(NetworkError::Quorum)
        );
        assert_eq!(Genesis::new("i", vec![], 0, 0), Err(NetworkError::Quorum));
        assert!(Genesis::new("i", members(4), 3, 0).is_ok());
        assert!(Genesis::new("i", members(1), 1, 0).is_ok());
    }
}
