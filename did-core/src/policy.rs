//! A DID's login policy and its phone commitments (PROTOCOL.md, "Login
//! policy").
//!
//! The owner decides, in a signed update, what a login of the DID needs:
//! `required` distinct factors out of `factors` (entry ids of the state's
//! authentication keys, passkeys, phones and federated links; empty = all
//! of them). No policy means today's rule: any one authentication key.
//! Every node enforces it on its own at token time.
//!
//! A phone is never on the ledger: the state holds
//! `blake3(PHONE_CONTEXT ‖ salt ‖ number)`, the wallet keeps the E.164
//! number and the 16-byte salt and gives both to a node at login; the node
//! recomputes the commitment before it sends anything. The salt keeps a
//! reader of the ledger from confirming a guessed number by hashing it
//! (phone numbers are few enough to enumerate).

use crate::op::{DidState, OpError, Relationship};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Domain separation of phone commitments.
pub const PHONE_CONTEXT: &[u8] = b"didmesh phone v1\0";
/// Phones one DID may commit to.
pub const MAX_PHONES: usize = 3;
/// Most factors a policy may require.
pub const MAX_REQUIRED: u8 = 5;

/// The kinds of factor a login can present (RFC 8176 `amr` in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum FactorKind {
    /// An Ed25519 authentication key (`swk`).
    Key,
    /// A passkey (`hwk`).
    Passkey,
    /// A one-time code to a committed phone (`sms`).
    Phone,
    /// A sign-in at a linked external provider (`fed`).
    Link,
}

/// One factor the policy counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factor {
    pub id: String,
    pub kind: FactorKind,
}

/// "`required` of `factors`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginPolicy {
    /// Distinct factors a login needs (1-5).
    pub required: u8,
    /// Entry ids that count; empty = every authentication key, passkey,
    /// phone and link of the state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<String>,
}

/// A committed phone number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phone {
    /// Entry id (fragment namespace of the state: unique among keys,
    /// passkeys, services and phones).
    pub id: String,
    /// base64url of `blake3(PHONE_CONTEXT ‖ salt ‖ number)` (32 bytes).
    pub commitment: String,
}

/// The commitment of `number` (E.164, `+` and digits) under `salt`.
pub fn phone_commitment(salt: &[u8], number: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(PHONE_CONTEXT);
    h.update(&(salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(number.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize().as_bytes())
}

/// Whether `number` is an E.164 number: `+`, then 8 to 15 digits, the first
/// not 0 (ITU-T E.164 §6).
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

impl DidState {
    /// Every factor this state offers, whether or not the policy counts it.
    pub fn all_factors(&self) -> Vec<Factor> {
        let keys = self
            .keys_for(Relationship::Authentication)
            .map(|vm| Factor {
                id: vm.id.clone(),
                kind: FactorKind::Key,
            });
        let passkeys = self.passkeys.iter().map(|p| Factor {
            id: p.id.clone(),
            kind: FactorKind::Passkey,
        });
        let phones = self.phones.iter().map(|p| Factor {
            id: p.id.clone(),
            kind: FactorKind::Phone,
        });
        let links = self.links.iter().map(|l| Factor {
            id: l.id.clone(),
            kind: FactorKind::Link,
        });
        keys.chain(passkeys).chain(phones).chain(links).collect()
    }

    /// The factors a login may present, and how many distinct ones it
    /// needs: without a policy, any one authentication key, passkey or
    /// linked provider account (the rule before policies existed; a
    /// federated sign-in counts as one factor). A phone alone never signs
    /// anyone in.
    pub fn login_requirement(&self) -> (u8, Vec<Factor>) {
        match &self.login_policy {
            None => (
                1,
                self.all_factors()
                    .into_iter()
                    .filter(|f| f.kind != FactorKind::Phone)
                    .collect(),
            ),
            Some(p) => {
                let all = self.all_factors();
                let counted = if p.factors.is_empty() {
                    all
                } else {
                    all.into_iter()
                        .filter(|f| p.factors.contains(&f.id))
                        .collect()
                };
                (p.required, counted)
            }
        }
    }

    /// The committed phone with entry id `id`.
    pub fn phone(&self, id: &str) -> Option<&Phone> {
        self.phones.iter().find(|p| p.id == id)
    }

    pub(crate) fn check_policy(&self) -> Result<(), OpError> {
        if self.phones.len() > MAX_PHONES {
            return Err(OpError::Limit(format!("at most {MAX_PHONES} phones")));
        }
        for (i, p) in self.phones.iter().enumerate() {
            let ok = URL_SAFE_NO_PAD
                .decode(&p.commitment)
                .map(|b| b.len() == 32 && URL_SAFE_NO_PAD.encode(&b) == p.commitment)
                .unwrap_or(false);
            if !ok {
                return Err(OpError::Invalid(format!(
                    "phone {}: commitment must be base64url of 32 bytes",
                    p.id
                )));
            }
            let taken = self.verification_methods.iter().any(|vm| vm.id == p.id)
                || self.services.iter().any(|s| s.id == p.id)
                || self.passkeys.iter().any(|k| k.id == p.id)
                || self.phones[..i].iter().any(|o| o.id == p.id);
            if taken {
                return Err(OpError::Invalid(format!("id {} used twice", p.id)));
            }
        }
        let Some(policy) = &self.login_policy else {
            return Ok(());
        };
        if policy.required == 0 || policy.required > MAX_REQUIRED {
            return Err(OpError::Invalid(format!(
                "login policy: required must be 1-{MAX_REQUIRED}"
            )));
        }
        let all = self.all_factors();
        for (i, id) in policy.factors.iter().enumerate() {
            if !all.iter().any(|f| &f.id == id) {
                return Err(OpError::Invalid(format!(
                    "login policy names {id:?}, which is not an authentication key, passkey, \
                     phone or link of this state"
                )));
            }
            if policy.factors[..i].contains(id) {
                return Err(OpError::Invalid(format!("login policy names {id} twice")));
            }
        }
        let (required, counted) = self.login_requirement();
        if usize::from(required) > counted.len() {
            return Err(OpError::Invalid(format!(
                "login policy requires {required} factors but only {} count: the DID could \
                 never log in",
                counted.len()
            )));
        }
        // A policy a phone or link alone could satisfy would let whoever
        // controls that phone number or provider account sign in: at least
        // one factor must be a key the owner holds.
        if !counted
            .iter()
            .any(|f| matches!(f.kind, FactorKind::Key | FactorKind::Passkey))
        {
            return Err(OpError::Invalid(
                "login policy must count at least one authentication key or passkey".into(),
            ));
        }
        if required == 1 && counted.iter().any(|f| f.kind == FactorKind::Phone) {
            return Err(OpError::Invalid(
                "a one-factor policy cannot count a phone: an SMS code alone would be a login \
                 (SIM swaps)"
                    .into(),
            ));
        }
        Ok(())
    }
}
