//! DID operations: `create`, `update` (carries the whole new state, as
//! did:plc does) and `deactivate`.
//!
//! An operation is signed over the canonical encoding of every field but
//! `sig` and `cosigs` (its *body*), and its CID is the blake3 of that same
//! body. Every byte that can distinguish two ops is therefore covered by a
//! signature: re-encoding, re-ordering co-signatures or dropping a spare
//! one yields the same CID, never a "twin" that the fork rule could prefer
//! (PROTOCOL.md, "Operations"). A DID is `did:mesh:` + base32-lower of the
//! first 20 bytes of the CID digest of its `create` op: self-certifying,
//! nobody assigns it.

use crate::encoding::{
    base32_lower, canonical_json, canonical_value, canonical_value_and_without, Cid,
};
use crate::keys::{sign_b64, signature_from_b64, PublicKey};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// `did:mesh:` method prefix.
pub const DID_MESH_PREFIX: &str = "did:mesh:";
/// Bytes of the genesis digest kept in a did:mesh suffix (160 bits).
pub const DID_SUFFIX_BYTES: usize = 20;

/// Bounds on what one operation may carry. Anything beyond is refused with
/// a reason rather than truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Canonical size of a signed op, in bytes.
    pub max_op_bytes: usize,
    pub max_rotation_keys: usize,
    pub max_verification_methods: usize,
    pub max_services: usize,
    pub max_also_known_as: usize,
    /// Relying parties one DID may register.
    pub max_clients: usize,
    /// Links to external accounts one DID state may hold
    /// ([`crate::federation`]).
    pub max_links: usize,
    /// How far in the future `created_at` may be, in seconds, when an op is
    /// ingested (checked against the receiver's clock, see [`check_clock`]).
    pub max_clock_skew_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_op_bytes: 8 * 1024,
            max_rotation_keys: 5,
            max_verification_methods: 10,
            max_services: 10,
            max_also_known_as: 10,
            max_clients: 5,
            max_links: crate::federation::MAX_LINKS,
            max_clock_skew_secs: 300,
        }
    }
}

/// Verification relationships (W3C DID Core §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    Authentication,
    Assertion,
    /// A second factor: a device key that must also sign for MFA logins.
    Mfa,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationMethod {
    /// Fragment id, e.g. `key-1` (the document shows `did#key-1`).
    pub id: String,
    pub public_key_multibase: PublicKey,
    pub relationships: Vec<Relationship>,
    /// The device that holds the key (`laptop`, `phone`), shown to the
    /// owner when a login asks for a second factor; absent when untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: String,
}

/// The state of a DID after an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidState {
    /// Keys that may sign the next operation; index 0 has the highest
    /// priority in the fork rule.
    pub rotation_keys: Vec<PublicKey>,
    pub verification_methods: Vec<VerificationMethod>,
    pub services: Vec<Service>,
    pub also_known_as: Vec<String>,
    /// Passkeys (WebAuthn ES256), each an `authentication` key
    /// ([`crate::passkey`]). Absent from the encoding when empty, so states
    /// without passkeys keep their bytes and CIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<crate::passkey::Passkey>,
    /// OpenID relying parties this DID owns ([`crate::client`]). Absent
    /// when empty, like `passkeys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<crate::client::ClientReg>,
    /// Links to accounts at external OpenID providers
    /// ([`crate::federation`]): commitments, never the raw subject. Absent
    /// when empty, like `passkeys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<crate::federation::FedLink>,
    /// Committed phone numbers for SMS codes ([`crate::policy`]); absent
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<crate::policy::Phone>,
    /// What a login needs ([`crate::policy`]); absent = any one key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_policy: Option<crate::policy::LoginPolicy>,
    /// Sessions the owner revoked ([`Revocations`]): every token issued
    /// before a time, and single token ids. Absent when empty, like
    /// `passkeys`, so older states keep their bytes and CIDs.
    #[serde(default, skip_serializing_if = "Revocations::is_empty")]
    pub revocations: Revocations,
}

/// Most single token ids a state may revoke at once: the wallet drops a
/// `jti` once its token has expired (its `exp` passed), so the list only
/// holds live tokens (PROTOCOL.md, "Revocation").
pub const MAX_REVOKED_JTI: usize = 64;

/// A DID owner's revocation of its own sessions (issue 13, "sign-out
/// everywhere"). It rides the ledger like every change to the DID: signed
/// by a rotation key, gossiped, and turned by each node into entries of its
/// revocation feed (`GET /v1/revocations`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocations {
    /// Unix seconds: every token of this DID with `iat` before it is
    /// revoked; 0 = none. Never goes down from one state to the next
    /// ([`check_revocations_transition`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub before: u64,
    /// Single tokens revoked by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jti: Vec<RevokedJti>,
}

/// One revoked token: its `jti` and its `exp` (after which the entry can be
/// dropped: the token is dead anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedJti {
    pub jti: String,
    pub exp: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Revocations {
    pub fn is_empty(&self) -> bool {
        self.before == 0 && self.jti.is_empty()
    }

    /// Whether a token of this DID with id `jti` issued at `iat` is revoked.
    pub fn covers(&self, jti: &str, iat: u64) -> bool {
        iat < self.before || self.jti.iter().any(|r| r.jti == jti)
    }

    fn check(&self) -> Result<(), OpError> {
        if self.jti.len() > MAX_REVOKED_JTI {
            return Err(OpError::Limit(format!(
                "at most {MAX_REVOKED_JTI} revoked token ids (drop expired ones)"
            )));
        }
        for (i, r) in self.jti.iter().enumerate() {
            // Token ids are 32 hex digits when didmesh mints them; other
            // issuers' ids are bounded printable text (RFC 7519 §4.1.7).
            check_text("revoked jti", &r.jti, 128)?;
            if self.jti[..i].iter().any(|o| o.jti == r.jti) {
                return Err(OpError::Invalid(format!(
                    "revoked jti {} listed twice",
                    truncate(&r.jti)
                )));
            }
        }
        Ok(())
    }
}

/// The revocation rule between a DID's state at `prev` and the state an
/// update carries: `revocations.before` never goes down. Lowering it would
/// bring revoked sessions back to life, and a verifier that already saw the
/// higher value would disagree with one that did not (PROTOCOL.md,
/// "Revocation"). The ledger applies it to every update.
pub fn check_revocations_transition(parent: &DidState, next: &DidState) -> Result<(), OpError> {
    if next.revocations.before < parent.revocations.before {
        return Err(OpError::Invalid(format!(
            "revocations.before may not go down ({} -> {})",
            parent.revocations.before, next.revocations.before
        )));
    }
    Ok(())
}

impl DidState {
    /// A fresh state where one key is both the rotation key and the
    /// authentication key.
    pub fn single_key(key: PublicKey) -> Self {
        DidState {
            rotation_keys: vec![key],
            verification_methods: vec![VerificationMethod {
                id: "key-1".into(),
                public_key_multibase: key,
                relationships: vec![Relationship::Authentication, Relationship::Assertion],
                device: None,
            }],
            services: vec![],
            also_known_as: vec![],
            passkeys: vec![],
            clients: vec![],
            links: vec![],
            phones: vec![],
            login_policy: None,
            revocations: Revocations::default(),
        }
    }

    /// The registered client with entry id `entry`.
    pub fn client(&self, entry: &str) -> Option<&crate::client::ClientReg> {
        self.clients.iter().find(|c| c.id == entry)
    }

    /// The link with entry id `entry`.
    pub fn link(&self, entry: &str) -> Option<&crate::federation::FedLink> {
        self.links.iter().find(|l| l.id == entry)
    }

    /// Keys holding a relationship.
    pub fn keys_for(&self, rel: Relationship) -> impl Iterator<Item = &VerificationMethod> {
        self.verification_methods
            .iter()
            .filter(move |vm| vm.relationships.contains(&rel))
    }

    /// Position of `key` among the rotation keys (0 = highest priority).
    pub fn rotation_priority(&self, key: &PublicKey) -> Option<usize> {
        self.rotation_keys.iter().position(|k| k == key)
    }

    fn check(&self, limits: &Limits) -> Result<(), OpError> {
        if self.rotation_keys.is_empty() {
            return Err(OpError::Invalid(
                "at least one rotation key is required".into(),
            ));
        }
        if self.rotation_keys.len() > limits.max_rotation_keys {
            return Err(OpError::Limit(format!(
                "at most {} rotation keys",
                limits.max_rotation_keys
            )));
        }
        for (i, k) in self.rotation_keys.iter().enumerate() {
            if self.rotation_keys[..i].contains(k) {
                return Err(OpError::Invalid("duplicate rotation key".into()));
            }
        }
        if self.verification_methods.len() > limits.max_verification_methods {
            return Err(OpError::Limit(format!(
                "at most {} verification methods",
                limits.max_verification_methods
            )));
        }
        for (i, vm) in self.verification_methods.iter().enumerate() {
            check_fragment(&vm.id)?;
            if self.verification_methods[..i].iter().any(|o| o.id == vm.id) {
                return Err(OpError::Invalid(format!(
                    "duplicate verification method id {}",
                    vm.id
                )));
            }
            if vm.relationships.is_empty() || vm.relationships.len() > 3 {
                return Err(OpError::Invalid(format!(
                    "verification method {} needs 1 to 3 relationships",
                    vm.id
                )));
            }
            if vm.relationships.contains(&Relationship::Mfa) {
                // Nothing enforces a second factor yet (login policies are a
                // later protocol version): a key marked `mfa` would give a
                // false sense of protection, so the mark is refused.
                return Err(OpError::Invalid(format!(
                    "verification method {}: the mfa relationship is not enforced by this \
                     protocol version; use authentication",
                    vm.id
                )));
            }
            for (j, r) in vm.relationships.iter().enumerate() {
                if vm.relationships[..j].contains(r) {
                    return Err(OpError::Invalid(format!(
                        "duplicate relationship on {}",
                        vm.id
                    )));
                }
            }
        }
        if self.services.len() > limits.max_services {
            return Err(OpError::Limit(format!(
                "at most {} services",
                limits.max_services
            )));
        }
        for (i, s) in self.services.iter().enumerate() {
            check_fragment(&s.id)?;
            if self.services[..i].iter().any(|o| o.id == s.id) {
                return Err(OpError::Invalid(format!("duplicate service id {}", s.id)));
            }
            check_text("service type", &s.kind, 64)?;
            check_uri("service endpoint", &s.endpoint)?;
            check_scheme("service endpoint", &s.endpoint, SERVICE_SCHEMES)?;
            if self.verification_methods.iter().any(|vm| vm.id == s.id) {
                return Err(OpError::Invalid(format!("id {} used twice", s.id)));
            }
        }
        if self.also_known_as.len() > limits.max_also_known_as {
            return Err(OpError::Limit(format!(
                "at most {} also_known_as entries",
                limits.max_also_known_as
            )));
        }
        for aka in &self.also_known_as {
            check_uri("also_known_as", aka)?;
            check_scheme("also_known_as", aka, ALSO_KNOWN_AS_SCHEMES)?;
        }
        if self.passkeys.len() > crate::passkey::MAX_PASSKEYS {
            return Err(OpError::Limit(format!(
                "at most {} passkeys",
                crate::passkey::MAX_PASSKEYS
            )));
        }
        for (i, p) in self.passkeys.iter().enumerate() {
            check_fragment(&p.id)?;
            p.check()?;
            let taken = self.verification_methods.iter().any(|vm| vm.id == p.id)
                || self.services.iter().any(|s| s.id == p.id)
                || self.passkeys[..i].iter().any(|o| o.id == p.id);
            if taken {
                return Err(OpError::Invalid(format!("id {} used twice", p.id)));
            }
            if self.passkeys[..i]
                .iter()
                .any(|o| o.credential_id == p.credential_id)
            {
                return Err(OpError::Invalid("duplicate passkey credential".into()));
            }
        }
        if self.clients.len() > limits.max_clients {
            return Err(OpError::Limit(format!(
                "at most {} clients",
                limits.max_clients
            )));
        }
        for (i, c) in self.clients.iter().enumerate() {
            c.check()?;
            if self.clients[..i].iter().any(|o| o.id == c.id) {
                return Err(OpError::Invalid(format!("duplicate client id {}", c.id)));
            }
        }
        if self.links.len() > limits.max_links {
            return Err(OpError::Limit(format!(
                "at most {} links",
                limits.max_links
            )));
        }
        for (i, l) in self.links.iter().enumerate() {
            l.check()?;
            if self.links[..i].iter().any(|o| o.id == l.id) {
                return Err(OpError::Invalid(format!("duplicate link id {}", l.id)));
            }
            // One account appears once per state: the index maps a
            // commitment to DIDs, and two entries for one account would
            // make "remove the link" ambiguous.
            if self.links[..i].iter().any(|o| o.commitment == l.commitment) {
                return Err(OpError::Invalid(format!(
                    "link {}: the same account is linked twice",
                    l.id
                )));
            }
        }
        for vm in &self.verification_methods {
            if let Some(device) = &vm.device {
                check_text("device", device, 32)?;
            }
        }
        self.revocations.check()?;
        self.check_policy()
    }
}

fn check_fragment(id: &str) -> Result<(), OpError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "id {id:?} must be 1-64 characters of [A-Za-z0-9._-]"
        )))
    }
}

fn check_text(what: &str, s: &str, max: usize) -> Result<(), OpError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(OpError::Invalid(format!(
            "{what} must be 1-{max} bytes without control characters"
        )));
    }
    Ok(())
}

/// Schemes a service endpoint may use. Documents are shown to browsers and
/// wallets: `javascript:`, `data:`, `file:` and the like would turn a DID
/// document into a script or a local-file pointer.
const SERVICE_SCHEMES: &[&str] = &["https", "http", "wss", "did"];
/// Schemes of `also_known_as` entries (W3C DID Core §5.1.3): handles and
/// other identifiers, never active content.
const ALSO_KNOWN_AS_SCHEMES: &[&str] = &["at", "https", "did", "acct", "mailto"];

fn check_scheme(what: &str, s: &str, allowed: &[&str]) -> Result<(), OpError> {
    let scheme = s.split_once(':').map(|(s, _)| s).unwrap_or_default();
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(scheme)) {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "{what} scheme {:?} is not allowed (allowed: {})",
            truncate(scheme),
            allowed.join(", ")
        )))
    }
}

/// A URI per RFC 3986 §3.1: a scheme, a colon, something after it.
fn check_uri(what: &str, s: &str) -> Result<(), OpError> {
    check_text(what, s, 512)?;
    let (scheme, rest) = s
        .split_once(':')
        .ok_or_else(|| OpError::Invalid(format!("{what} must be a URI")))?;
    let scheme_ok = scheme.len() <= 32
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() || s.contains(char::is_whitespace) {
        return Err(OpError::Invalid(format!("{what} must be a URI")));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    Create,
    Update,
    Deactivate,
    /// Network membership change (see [`crate::member`]).
    MemberAdd,
    MemberRemove,
    /// A member's token keys replaced (same `node_did`; [`crate::member`]).
    MemberRotate,
    /// A member quorum revokes one DID's sessions ([`crate::member`]).
    MemberRevoke,
}

impl OpKind {
    pub fn is_membership(self) -> bool {
        matches!(
            self,
            OpKind::MemberAdd | OpKind::MemberRemove | OpKind::MemberRotate | OpKind::MemberRevoke
        )
    }

    /// Membership ops that change the member set (nodes of the membership
    /// tree; `member-revoke` only names the set that signs it).
    pub fn changes_members(self) -> bool {
        matches!(
            self,
            OpKind::MemberAdd | OpKind::MemberRemove | OpKind::MemberRotate
        )
    }
}

/// A signed DID operation, as it travels and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: OpKind,
    /// The DID this op changes; `null` for `create` (the DID is derived).
    /// For membership ops: the network id.
    pub did: Option<String>,
    /// The CID this op builds on; `null` for `create`.
    pub prev: Option<Cid>,
    /// The whole new state; `null` for `deactivate`.
    pub state: Option<DidState>,
    /// Unix seconds, as claimed by the author.
    pub created_at: u64,
    /// The rotation key that signed (of the state at `prev`, or of `state`
    /// for `create`).
    pub signer: PublicKey,
    /// base64url Ed25519 signature over the canonical op without `sig`
    /// and `cosigs`.
    pub sig: String,
    /// Membership ops only: the member added or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<crate::member::Member>,
    /// Membership ops only: signatures of further members (quorum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cosigs: Vec<crate::member::CoSig>,
    /// Membership removals only: shrink the network below the size where
    /// losing one more key still leaves a quorum (see
    /// [`crate::member::NetworkRules::quorum_for`]). Signed like every field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// `member-revoke` only: the DID whose sessions issued before
    /// `before` a member quorum revokes. Absent on every other op, so their
    /// bytes and CIDs are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke: Option<crate::member::MemberRevocation>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why an operation was refused. Every variant maps to a 4xx with a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("malformed operation: {0}")]
    Malformed(String),
    #[error("invalid operation: {0}")]
    Invalid(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("prev {0} is not known")]
    UnknownPrev(String),
    #[error("created_at is {0}s in the future (clock skew limit)")]
    ClockSkew(u64),
    #[error("DID is deactivated")]
    Deactivated,
}

impl OpError {
    /// A stable machine-readable code for the `error` field of an answer.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::Malformed(_) => "malformed_op",
            OpError::Invalid(_) => "invalid_op",
            OpError::Limit(_) => "limit_exceeded",
            OpError::BadSignature(_) => "bad_signature",
            OpError::UnknownPrev(_) => "unknown_prev",
            OpError::ClockSkew(_) => "clock_skew",
            OpError::Deactivated => "deactivated",
        }
    }
}

impl Operation {
    /// Parses an operation from JSON bytes (strict: unknown fields refused).
    pub fn from_json(bytes: &[u8]) -> Result<Operation, OpError> {
        serde_json::from_slice(bytes).map_err(|e| OpError::Malformed(e.to_string()))
    }

    /// Parses an op that must arrive in its canonical encoding (as ops are
    /// stored and sent between nodes) and returns it with its CID. Another
    /// encoding of the same op is refused, so one op has one byte form.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<(Operation, Cid), OpError> {
        Self::from_canonical_json_form(bytes).map(|(op, form)| (op, form.cid))
    }

    /// [`Operation::from_canonical_json`], returning the op's [`Form`]
    /// (what [`Operation::check_form`] would encode, without the rule
    /// checks of [`Operation::check_rules`]). One JSON value is built for
    /// both encodings, where `canonical_bytes` then `cid` built two.
    pub fn from_canonical_json_form(bytes: &[u8]) -> Result<(Operation, Form), OpError> {
        let op = Self::from_json(bytes)?;
        let form = op.encode()?;
        if form.bytes != bytes {
            return Err(OpError::Malformed("not in canonical encoding".into()));
        }
        Ok((op, form))
    }

    /// The bytes that are signed: canonical JSON of every field but `sig`
    /// and `cosigs`.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, OpError> {
        let mut v = serde_json::to_value(self).map_err(|e| OpError::Malformed(e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("sig");
            obj.remove("cosigs");
        }
        canonical_value(&v).map_err(|e| OpError::Malformed(e.to_string()))
    }

    /// Canonical bytes of the signed op (what the CID names and what is stored).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, OpError> {
        canonical_json(self).map_err(|e| OpError::Malformed(e.to_string()))
    }

    /// The op's name: blake3 of its signed body ([`Operation::signing_bytes`]).
    pub fn cid(&self) -> Result<Cid, OpError> {
        Ok(Cid::of(&self.signing_bytes()?))
    }

    /// Builds and signs an op. `key` must be a rotation key (of `state` for a
    /// create, of the state at `prev` otherwise).
    pub fn sign(
        kind: OpKind,
        did: Option<String>,
        prev: Option<Cid>,
        state: Option<DidState>,
        created_at: u64,
        key: &SigningKey,
    ) -> Result<Operation, OpError> {
        let mut op = Operation {
            kind,
            did,
            prev,
            state,
            created_at,
            signer: crate::keys::public_of(key),
            sig: String::new(),
            member: None,
            cosigs: vec![],
            force: false,
            revoke: None,
        };
        op.sig = sign_b64(key, &op.signing_bytes()?);
        Ok(op)
    }

    pub fn create(
        state: DidState,
        created_at: u64,
        key: &SigningKey,
    ) -> Result<Operation, OpError> {
        Self::sign(OpKind::Create, None, None, Some(state), created_at, key)
    }

    pub fn update(
        did: &str,
        prev: Cid,
        state: DidState,
        created_at: u64,
        key: &SigningKey,
    ) -> Result<Operation, OpError> {
        Self::sign(
            OpKind::Update,
            Some(did.into()),
            Some(prev),
            Some(state),
            created_at,
            key,
        )
    }

    pub fn deactivate(
        did: &str,
        prev: Cid,
        created_at: u64,
        key: &SigningKey,
    ) -> Result<Operation, OpError> {
        Self::sign(
            OpKind::Deactivate,
            Some(did.into()),
            Some(prev),
            None,
            created_at,
            key,
        )
    }

    /// A membership op for `network_id`, signed by `signers[0]` with the
    /// others as co-signers. `prev` is the membership head (`None` = the
    /// genesis).
    pub fn membership(
        kind: OpKind,
        network_id: &str,
        prev: Option<Cid>,
        member: crate::member::Member,
        created_at: u64,
        signers: &[&SigningKey],
    ) -> Result<Operation, OpError> {
        Self::membership_forced(kind, network_id, prev, member, created_at, false, signers)
    }

    /// [`Operation::membership`] with the `force` flag (a removal that
    /// leaves too few members to survive the loss of one more key).
    pub fn membership_forced(
        kind: OpKind,
        network_id: &str,
        prev: Option<Cid>,
        member: crate::member::Member,
        created_at: u64,
        force: bool,
        signers: &[&SigningKey],
    ) -> Result<Operation, OpError> {
        let first = signers
            .first()
            .ok_or_else(|| OpError::Invalid("a membership op needs a signer".into()))?;
        let mut op = Operation {
            kind,
            did: Some(network_id.to_string()),
            prev,
            state: None,
            created_at,
            signer: crate::keys::public_of(first),
            sig: String::new(),
            member: Some(member),
            cosigs: vec![],
            force,
            revoke: None,
        };
        let bytes = op.signing_bytes()?;
        op.sig = sign_b64(first, &bytes);
        op.cosigs = signers[1..]
            .iter()
            .map(|k| crate::member::CoSig {
                signer: crate::keys::public_of(k),
                sig: sign_b64(k, &bytes),
            })
            .collect();
        Ok(op)
    }

    /// A `member-revoke` op for `network_id`: the member set at `prev`
    /// (`None` = the genesis set) revokes `revoke.did`'s sessions issued
    /// before `revoke.before`. Signed by `signers[0]`, co-signed by the rest.
    pub fn member_revoke(
        network_id: &str,
        prev: Option<Cid>,
        revoke: crate::member::MemberRevocation,
        created_at: u64,
        signers: &[&SigningKey],
    ) -> Result<Operation, OpError> {
        let first = signers
            .first()
            .ok_or_else(|| OpError::Invalid("a membership op needs a signer".into()))?;
        let mut op = Operation {
            kind: OpKind::MemberRevoke,
            did: Some(network_id.to_string()),
            prev,
            state: None,
            created_at,
            signer: crate::keys::public_of(first),
            sig: String::new(),
            member: None,
            cosigs: vec![],
            force: false,
            revoke: Some(revoke),
        };
        let bytes = op.signing_bytes()?;
        op.sig = sign_b64(first, &bytes);
        for k in &signers[1..] {
            op.cosigs.push(crate::member::CoSig {
                signer: crate::keys::public_of(k),
                sig: sign_b64(k, &bytes),
            });
        }
        Ok(op)
    }

    /// Adds a co-signature to a membership op (offline quorum gathering).
    pub fn cosign(&mut self, key: &SigningKey) -> Result<(), OpError> {
        let bytes = self.signing_bytes()?;
        self.cosigs.push(crate::member::CoSig {
            signer: crate::keys::public_of(key),
            sig: sign_b64(key, &bytes),
        });
        Ok(())
    }

    /// Every key that validly signed this op (signer first), deduplicated.
    pub fn signers(&self) -> Result<Vec<PublicKey>, OpError> {
        let bytes = self.signing_bytes()?;
        let mut out = vec![];
        let all = std::iter::once((&self.signer, &self.sig))
            .chain(self.cosigs.iter().map(|c| (&c.signer, &c.sig)));
        for (key, sig) in all {
            let sig = signature_from_b64(sig).map_err(|e| OpError::BadSignature(e.to_string()))?;
            if !key.verify_op(&bytes, &sig) {
                return Err(OpError::BadSignature(format!(
                    "signature by {key} does not verify"
                )));
            }
            if out.contains(key) {
                return Err(OpError::Invalid(format!("{key} signed twice")));
            }
            out.push(*key);
        }
        Ok(out)
    }

    /// Checks that need no other op: shape per kind, limits, encoding size,
    /// and that `sig` is a signature by `signer` over the op. Returns the
    /// op's CID and canonical bytes. Whether `signer` may sign is decided
    /// against the parent state by the ledger.
    pub fn check_self(&self, limits: &Limits) -> Result<(Cid, Vec<u8>), OpError> {
        let form = self.check_form(limits)?;
        self.check_signature(&form.signing_bytes)?;
        Ok((form.cid, form.bytes))
    }

    /// The checks of [`Operation::check_self`] short of the signature:
    /// shape per kind, limits, and the canonical encodings (both computed
    /// from one serialization). Cheap; lets a ledger skip the signature of
    /// an op it already holds.
    pub fn check_form(&self, limits: &Limits) -> Result<Form, OpError> {
        self.check_rules(limits)?;
        let form = self.encode()?;
        self.check_size(&form, limits)?;
        Ok(form)
    }

    /// What [`Operation::check_form`] checks of `self` when its form is
    /// already known (from [`Operation::from_canonical_json_form`] or an
    /// earlier `check_form` of this very op): the rules and the size.
    pub fn check_formed(&self, form: &Form, limits: &Limits) -> Result<(), OpError> {
        self.check_rules(limits)?;
        self.check_size(form, limits)
    }

    fn check_size(&self, form: &Form, limits: &Limits) -> Result<(), OpError> {
        if form.bytes.len() > limits.max_op_bytes {
            return Err(OpError::Limit(format!(
                "operation is {} bytes, the limit is {}",
                form.bytes.len(),
                limits.max_op_bytes
            )));
        }
        Ok(())
    }

    /// Both canonical encodings and the CID, from one JSON value.
    fn encode(&self) -> Result<Form, OpError> {
        let value = serde_json::to_value(self).map_err(|e| OpError::Malformed(e.to_string()))?;
        let (bytes, signing_bytes) = canonical_value_and_without(&value, &["sig", "cosigs"])
            .map_err(|e| OpError::Malformed(e.to_string()))?;
        Ok(Form {
            cid: Cid::of(&signing_bytes),
            bytes,
            signing_bytes,
        })
    }

    /// The op's shape and limits: everything [`Operation::check_form`]
    /// checks but the encoded size.
    pub fn check_rules(&self, limits: &Limits) -> Result<(), OpError> {
        match (self.kind, &self.did, &self.prev, &self.state) {
            (OpKind::Create, None, None, Some(_)) => {}
            (OpKind::Create, _, _, _) => {
                return Err(OpError::Invalid(
                    "create has no did or prev and carries a state".into(),
                ))
            }
            (OpKind::Update, Some(_), Some(_), Some(_)) => {}
            (OpKind::Update, _, _, _) => {
                return Err(OpError::Invalid(
                    "update names did and prev and carries a state".into(),
                ))
            }
            (OpKind::Deactivate, Some(_), Some(_), None) => {}
            (OpKind::Deactivate, _, _, _) => {
                return Err(OpError::Invalid(
                    "deactivate names did and prev and carries no state".into(),
                ))
            }
            (OpKind::MemberAdd | OpKind::MemberRemove | OpKind::MemberRotate, Some(_), _, None)
                if self.member.is_some() && self.revoke.is_none() => {}
            (OpKind::MemberAdd | OpKind::MemberRemove | OpKind::MemberRotate, _, _, _) => {
                return Err(OpError::Invalid(
                    "a membership op names the network in did, a member, and carries no state"
                        .into(),
                ))
            }
            (OpKind::MemberRevoke, Some(_), _, None)
                if self.member.is_none() && self.revoke.is_some() => {}
            (OpKind::MemberRevoke, _, _, _) => return Err(OpError::Invalid(
                "member-revoke names the network in did, carries revoke, and no member or state"
                    .into(),
            )),
        }
        if self.kind.is_membership() {
            let network = self.did.as_deref().unwrap_or_default();
            check_text("network id", network, 64)?;
            if let Some(m) = &self.member {
                check_text("member name", &m.name, 64)?;
                // A member's node_did is the did:key of the Ed25519 key it
                // was admitted with and never changes (crate::member): a
                // new member's entry names its own key, while a rotated
                // member keeps its first did:key (the ledger checks it
                // against the member set at prev).
                if self.kind == OpKind::MemberAdd && m.node_did != m.key.did_key() {
                    return Err(OpError::Invalid(
                        "member node_did must be the did:key of its key".into(),
                    ));
                }
                check_text("member node_did", &m.node_did, 64)?;
            }
            if let Some(r) = &self.revoke {
                parse_mesh_did(&r.did)?;
                if r.before > self.created_at {
                    return Err(OpError::Invalid(
                        "revoke.before may not be later than the op's created_at".into(),
                    ));
                }
            }
            if self.cosigs.len() > 32 {
                return Err(OpError::Limit("at most 32 co-signatures".into()));
            }
            if self.force && self.kind != OpKind::MemberRemove {
                return Err(OpError::Invalid(
                    "force applies to member-remove only".into(),
                ));
            }
        } else {
            if self.member.is_some()
                || !self.cosigs.is_empty()
                || self.force
                || self.revoke.is_some()
            {
                return Err(OpError::Invalid(
                    "member and cosigs belong to membership ops only".into(),
                ));
            }
            if let Some(did) = &self.did {
                parse_mesh_did(did)?;
            }
        }
        if let Some(state) = &self.state {
            state.check(limits)?;
        }
        Ok(())
    }

    /// Verifies `sig` by `signer` (and every co-signature) over
    /// `signing_bytes` (from [`Operation::check_form`]).
    pub fn check_signature(&self, signing_bytes: &[u8]) -> Result<(), OpError> {
        if self.kind.is_membership() {
            self.signers()?;
            return Ok(());
        }
        let sig =
            signature_from_b64(&self.sig).map_err(|e| OpError::BadSignature(e.to_string()))?;
        if !self.signer.verify_op(signing_bytes, &sig) {
            return Err(OpError::BadSignature(
                "signature does not verify with signer".into(),
            ));
        }
        Ok(())
    }
}

/// An op's canonical encodings, from [`Operation::check_form`].
#[derive(Debug, Clone)]
pub struct Form {
    /// blake3 of `signing_bytes`.
    pub cid: Cid,
    /// Canonical bytes of the signed op (what is stored and sent).
    pub bytes: Vec<u8>,
    /// Canonical bytes without `sig` and `cosigs`: what is signed, and
    /// what the CID names.
    pub signing_bytes: Vec<u8>,
}

/// The DID a `create` op with this CID defines.
pub fn did_from_genesis(cid: &Cid) -> String {
    format!(
        "{DID_MESH_PREFIX}{}",
        base32_lower(&cid.0[..DID_SUFFIX_BYTES])
    )
}

/// Validates the shape of a `did:mesh:` identifier.
pub fn parse_mesh_did(did: &str) -> Result<&str, OpError> {
    let suffix = did
        .strip_prefix(DID_MESH_PREFIX)
        .ok_or_else(|| OpError::Invalid(format!("not a did:mesh identifier: {}", truncate(did))))?;
    let ok = suffix.len() == 32
        && suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    if ok {
        Ok(suffix)
    } else {
        Err(OpError::Invalid(format!(
            "malformed did:mesh identifier: {}",
            truncate(did)
        )))
    }
}

/// Shortens user input before it is echoed in an error.
pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// The earliest `created_at` a node ingests (2024-01-01T00:00:00Z): no
/// didmesh op predates it, and a zero or tiny value is a forged time.
pub const MIN_CREATED_AT: u64 = 1_704_067_200;

/// Refuses an op whose `created_at` is too far ahead of `now` (both unix
/// seconds). Applied on ingestion only, never on replay, so the ledger
/// itself stays a pure function of its op set.
pub fn check_clock(op: &Operation, now: u64, limits: &Limits) -> Result<(), OpError> {
    if op.created_at < MIN_CREATED_AT {
        return Err(OpError::Invalid(format!(
            "created_at {} is before {MIN_CREATED_AT} (2024-01-01): not a real time",
            op.created_at
        )));
    }
    if op.created_at > now.saturating_add(limits.max_clock_skew_secs) {
        return Err(OpError::ClockSkew(op.created_at - now));
    }
    Ok(())
}

#[cfg(test)]
mod revocation_tests {
    use super::*;

    fn state() -> DidState {
        DidState::single_key(crate::keys::public_of(&SigningKey::from_bytes(&[9u8; 32])))
    }

    fn jti(n: usize) -> RevokedJti {
        RevokedJti {
            jti: format!("{n:032x}"),
            exp: 1_800_000_000,
        }
    }

    #[test]
    fn empty_revocations_leave_the_encoding_alone() {
        let v = serde_json::to_value(state()).unwrap();
        assert!(v.get("revocations").is_none());
        let mut s = state();
        s.revocations.before = 5;
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["revocations"], serde_json::json!({"before": 5}));
    }

    #[test]
    fn at_most_64_jti_and_no_duplicates() {
        let mut s = state();
        s.revocations.jti = (0..MAX_REVOKED_JTI).map(jti).collect();
        s.check(&Limits::default()).unwrap();
        s.revocations.jti.push(jti(MAX_REVOKED_JTI));
        assert!(matches!(
            s.check(&Limits::default()),
            Err(OpError::Limit(_))
        ));
        s.revocations.jti = vec![jti(1), jti(1)];
        assert!(matches!(
            s.check(&Limits::default()),
            Err(OpError::Invalid(_))
        ));
    }

    #[test]
    fn before_never_goes_down() {
        let mut parent = state();
        parent.revocations.before = 1_800_000_000;
        let mut next = parent.clone();
        check_revocations_transition(&parent, &next).unwrap();
        next.revocations.before = 1_800_000_001;
        check_revocations_transition(&parent, &next).unwrap();
        next.revocations.before = 1_799_999_999;
        assert!(check_revocations_transition(&parent, &next).is_err());
        next.revocations = Revocations::default();
        assert!(check_revocations_transition(&parent, &next).is_err());
    }

    #[test]
    fn covers_by_time_and_by_id() {
        let r = Revocations {
            before: 100,
            jti: vec![jti(7)],
        };
        assert!(r.covers("x", 99));
        assert!(!r.covers("x", 100));
        assert!(r.covers(&format!("{:032x}", 7), 500));
    }
}
