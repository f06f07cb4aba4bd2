//! The node's three token-signing keys: its Ed25519 member key
//! (`member-key.pem`: ops, access tokens, EdDSA ID tokens), an RSA-2048 key
//! (`member-rsa.pem`, RS256) and a P-256 key (`member-p256.pem`, ES256).
//!
//! OpenID Connect makes RS256 mandatory to implement (OIDC Core §15.1) and
//! the default of most relying-party libraries; AWS Cognito and Auth0 take
//! RS256 or ES256 from an external IdP, never EdDSA. So every member holds
//! all three and the JWKS serves every member's public halves
//! ([`crate::views::jwks`]), each with its RFC 7638 thumbprint as `kid`.
//!
//! The files are PKCS#8 PEM (RFC 5208, RFC 5915 for the EC key inside),
//! mode 0600, created on first start when missing, so a data folder from
//! before ID tokens gains them. The `rsa` and `p256` crates make and read
//! the keys; `ring` (already built for rustls and libp2p) signs RS256 and
//! ES256 because it is 3x (RSA: ~0.9 ms against ~2.8 ms) and 12x (P-256:
//! ~30 µs against ~380 µs) faster than the RustCrypto code behind
//! jsonwebtoken, and an ID token is signed on every sign-in. The compact
//! JWS around the signature (RFC 7515 §7.1) is a few lines here; tests
//! verify every alg with jsonwebtoken against the JWKS. Their public halves reach relying parties
//! only through the ledger (genesis or a member-add op carrying
//! [`TokenKeys::member_entry`]); a member whose entry lacks them signs
//! tokens no verifier can check ([`TokenKeys::listed`]).
//!
//! **Rotation** (PROTOCOL.md, "Member key rotation"): `didmesh-node
//! member-rotate-keys` makes a new set of the three keys in
//! `<data-dir>/pending-keys/` and prints the entry a quorum signs into a
//! `member-rotate` op ([`prepare_rotation`]). The member keeps its
//! `node_did` (the did:key of the Ed25519 key it was admitted with, kept in
//! `member-node-did` once it first rotates). As soon as the ledger's entry
//! for this node names the pending keys ([`TokenKeys::adopt_rotation`],
//! polled by [`watch_rotation`]), the node moves its old key files to
//! `retired-keys/<unix time>/`, the pending ones into place, and signs ID
//! tokens, access tokens, authorization codes and refresh tokens with the
//! new keys from that moment, without a restart: [`crate::auth::Authenticator`]
//! and the OpenID provider share this key set ([`TokenKeys`] clones share
//! one slot). The old keys sign nothing more; what they signed verifies
//! until `retired_at + key_overlap_secs` ([`crate::views::access_token_key`]).

use crate::identity::{self, IdentityError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::IdTokenAlg;
use did_core::member::{p256_thumbprint, Member, RsaPublicJwk};
use did_core::passkey::P256Key;
use did_core::PublicKey;
use ed25519_dalek::Signer as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use ring::signature::{EcdsaKeyPair, RsaKeyPair};
use rsa::traits::PublicKeyParts as _;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Folder (inside the data folder) of the key set a rotation will switch to.
pub const PENDING_DIR: &str = "pending-keys";
/// Folder (inside the data folder) where replaced key files are kept.
pub const RETIRED_DIR: &str = "retired-keys";
/// File holding the member's `node_did` once its Ed25519 key rotated.
pub const NODE_DID_FILE: &str = "member-node-did";

pub const RSA_KEY_FILE: &str = "member-rsa.pem";
pub const P256_KEY_FILE: &str = "member-p256.pem";
/// Bits of the RSA key (RFC 7518 §3.3: 2048 or larger; 2048 keeps an RS256
/// signature near a millisecond).
pub const RSA_BITS: usize = 2048;

/// A token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot encode the token's claims: {0}")]
    Claims(#[from] serde_json::Error),
    #[error("cannot sign a {0} token")]
    Crypto(&'static str),
}

/// The node's token keys, loaded from its data folder; swapped at once when
/// a rotation commits (module doc). A clone shares the key slot, so every
/// holder (the login service, the OpenID provider) signs with the keys in
/// force after a swap.
#[derive(Clone)]
pub struct TokenKeys {
    /// The data folder (`None` for keys that live in memory only).
    dir: Option<PathBuf>,
    /// The member's stable id ([`did_core::member`]).
    node_did: String,
    current: Arc<RwLock<Arc<KeySet>>>,
}

/// One set of the three keys.
struct KeySet {
    ed: ed25519_dalek::SigningKey,
    rsa: RsaKeyPair,
    es: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    ed_kid: String,
    rsa_kid: String,
    es_kid: String,
    ed_public: PublicKey,
    rsa_public: RsaPublicJwk,
    p256_public: P256Key,
}

impl std::fmt::Debug for TokenKeys {
    // Only the public side: a private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys();
        f.debug_struct("TokenKeys")
            .field("node_did", &self.node_did)
            .field("ed25519_kid", &keys.ed_kid)
            .field("rsa_kid", &keys.rsa_kid)
            .field("p256_kid", &keys.es_kid)
            .finish()
    }
}

/// The JOSE header of every token (RFC 7515 §4.1, RFC 7519 §5.1).
#[derive(Serialize)]
struct JoseHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    })?;
    identity::pem_der(&text)
        .map(Some)
        .ok_or_else(|| IdentityError::BadTokenKey(path.display().to_string(), "not a PEM file"))
}

fn bad(path: &Path, why: &'static str) -> IdentityError {
    IdentityError::BadTokenKey(path.display().to_string(), why)
}

/// Reads `member-rsa.pem`, or makes and writes a new key. Returns the
/// signing key and the public JWK.
fn load_or_create_rsa(dir: &Path) -> Result<(RsaKeyPair, RsaPublicJwk), IdentityError> {
    let path = dir.join(RSA_KEY_FILE);
    let (key, der) = match read(&path)? {
        Some(der) => (
            rsa::RsaPrivateKey::from_pkcs8_der(&der)
                .map_err(|_| bad(&path, "not a PKCS#8 RSA private key in PEM"))?,
            der,
        ),
        None => {
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
                .map_err(|_| bad(&path, "RSA key generation failed"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|_| bad(&path, "cannot encode the new RSA key"))?;
            identity::write_private(&path, identity::pem(der.as_bytes()).as_bytes())?;
            (key, der.as_bytes().to_vec())
        }
    };
    // The ledger takes only RSA-2048 with e = 65537 (did_core::member): a
    // key file holding anything else could never be published.
    if key.e() != &rsa::BigUint::from(65_537u32) {
        return Err(bad(&path, "the RSA key's exponent must be 65537"));
    }
    let public = RsaPublicJwk::from_modulus(&key.n().to_bytes_be())
        .map_err(|_| bad(&path, "the RSA key must be 2048 bits"))?;
    let pair = RsaKeyPair::from_pkcs8(&der).map_err(|_| bad(&path, "ring refuses the RSA key"))?;
    Ok((pair, public))
}

/// Reads `member-p256.pem`, or makes and writes a new key. Returns the
/// signing key and the public key.
fn load_or_create_p256(
    dir: &Path,
    rng: &ring::rand::SystemRandom,
) -> Result<(EcdsaKeyPair, P256Key), IdentityError> {
    let path = dir.join(P256_KEY_FILE);
    let key = match read(&path)? {
        Some(der) => p256::ecdsa::SigningKey::from_pkcs8_der(&der)
            .map_err(|_| bad(&path, "not a PKCS#8 P-256 private key in PEM"))?,
        None => {
            let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let der = key
                .to_pkcs8_der()
                .map_err(|_| bad(&path, "cannot encode the new P-256 key"))?;
            identity::write_private(&path, identity::pem(der.as_bytes()).as_bytes())?;
            key
        }
    };
    // Re-encoded here so ring gets the public key it wants inside the
    // PKCS#8 (RFC 5915 `publicKey`, which some tools leave out).
    let der = key
        .to_pkcs8_der()
        .map_err(|_| bad(&path, "cannot encode the P-256 key"))?;
    let public = P256Key::from_sec1(key.verifying_key().to_encoded_point(true).as_bytes())
        .map_err(|_| bad(&path, "not a P-256 key"))?;
    // ES256 signatures are r ‖ s, 64 bytes (RFC 7518 §3.4): ring's FIXED
    // encoding, not ASN.1.
    let pair = EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        der.as_bytes(),
        rng,
    )
    .map_err(|_| bad(&path, "ring refuses the P-256 key"))?;
    Ok((pair, public))
}

impl KeySet {
    fn load_or_create(dir: &Path) -> Result<KeySet, IdentityError> {
        let ed = identity::load_or_create_member_key(dir)?;
        let ed_public = did_core::keys::public_of(&ed);
        let rng = ring::rand::SystemRandom::new();
        let (rsa, rsa_public) = load_or_create_rsa(dir)?;
        let (es, p256_public) = load_or_create_p256(dir, &rng)?;
        Ok(KeySet {
            ed_kid: identity::kid(&ed_public),
            rsa_kid: rsa_public.thumbprint(),
            es_kid: p256_thumbprint(&p256_public),
            ed,
            rsa,
            es,
            rng,
            ed_public,
            rsa_public,
            p256_public,
        })
    }

    /// The entry naming these three keys.
    fn entry(&self, name: &str, node_did: &str) -> Member {
        let mut m = Member::from_key(name, self.ed_public)
            .with_token_keys(self.rsa_public.clone(), self.p256_public);
        m.node_did = node_did.to_string();
        m
    }
}

/// The member's `node_did`: from `member-node-did` once it rotated, else
/// the did:key of its Ed25519 key.
fn read_node_did(dir: &Path, ed: &PublicKey) -> Result<String, IdentityError> {
    let path = dir.join(NODE_DID_FILE);
    if !path.exists() {
        return Ok(ed.did_key());
    }
    let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let did = text.trim();
    if !did.starts_with("did:key:z6Mk") || did.len() > 64 {
        return Err(bad(&path, "not a did:key"));
    }
    Ok(did.to_string())
}

/// `member-rotate-keys`: makes (or reuses) the pending key set in
/// `dir/pending-keys/` and returns the entry a quorum signs into a
/// `member-rotate` op: the new keys under the member's unchanged
/// `node_did`. Nothing the node signs with changes until that op commits.
pub fn prepare_rotation(dir: &Path, name: &str) -> Result<Member, IdentityError> {
    let now = KeySet::load_or_create(dir)?;
    let node_did = read_node_did(dir, &now.ed_public)?;
    let pending_dir = dir.join(PENDING_DIR);
    std::fs::create_dir_all(&pending_dir).map_err(|source| IdentityError::Io {
        path: pending_dir.display().to_string(),
        source,
    })?;
    let pending = KeySet::load_or_create(&pending_dir)?;
    Ok(pending.entry(name, &node_did))
}

impl TokenKeys {
    /// Loads the three keys from `dir`, creating any that is missing
    /// (RSA-2048 generation takes 0.1-1 s).
    pub fn load_or_create(dir: &Path) -> Result<TokenKeys, IdentityError> {
        let keys = KeySet::load_or_create(dir)?;
        Ok(TokenKeys {
            dir: Some(dir.to_path_buf()),
            node_did: read_node_did(dir, &keys.ed_public)?,
            current: Arc::new(RwLock::new(Arc::new(keys))),
        })
    }

    /// The key set in force (a poisoned lock still holds a whole set: the
    /// swap is one pointer write).
    fn keys(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The member's stable id ([`did_core::member`]).
    pub fn node_did(&self) -> &str {
        &self.node_did
    }

    /// Switches to the pending key set once `members` (the ledger's
    /// current set) holds this node's entry with exactly those keys
    /// (module doc). Returns whether it switched. The old key files move
    /// to `retired-keys/<now>/`, so a restart loads the new ones too.
    pub fn adopt_rotation(&self, members: &[Member], now: u64) -> Result<bool, IdentityError> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        let pending_dir = dir.join(PENDING_DIR);
        if !pending_dir.join(identity::MEMBER_KEY_FILE).exists() {
            return Ok(false);
        }
        let Some(listed) = members.iter().find(|m| m.node_did == self.node_did) else {
            return Ok(false);
        };
        let pending = KeySet::load_or_create(&pending_dir)?;
        if pending.entry(&listed.name, &self.node_did) != *listed {
            return Ok(false);
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| IdentityError::Io { path, source }
        };
        let retired = dir.join(RETIRED_DIR).join(now.to_string());
        std::fs::create_dir_all(&retired).map_err(io(&retired))?;
        // The node_did first: a crash between the moves below leaves a
        // folder whose keys and id still agree with the ledger.
        let did_path = dir.join(NODE_DID_FILE);
        if !did_path.exists() {
            identity::write_private(&did_path, format!("{}\n", self.node_did).as_bytes())?;
        }
        for file in [identity::MEMBER_KEY_FILE, RSA_KEY_FILE, P256_KEY_FILE] {
            let from = dir.join(file);
            if from.exists() {
                std::fs::rename(&from, retired.join(file)).map_err(io(&from))?;
            }
            let new = pending_dir.join(file);
            std::fs::rename(&new, dir.join(file)).map_err(io(&new))?;
        }
        let _ = std::fs::remove_dir(&pending_dir);
        match self.current.write() {
            Ok(mut k) => *k = Arc::new(pending),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(pending),
        }
        Ok(true)
    }

    /// A compact JWS (RFC 7515 §7.1) of `claims` with header `{alg, typ:
    /// "JWT", kid}`, `kid` the RFC 7638 thumbprint of the key `alg` names
    /// (the EdDSA kid is the one access tokens have always carried).
    pub fn sign<T: Serialize>(&self, alg: IdTokenAlg, claims: &T) -> Result<String, SignError> {
        let keys = self.keys();
        let header = JoseHeader {
            alg: alg.as_str(),
            typ: "JWT",
            kid: keys.kid_ref(alg),
        };
        let mut jws = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let input = jws.as_bytes();
        let signature = match alg {
            IdTokenAlg::RS256 => {
                let mut sig = vec![0; keys.rsa.public().modulus_len()];
                keys.rsa
                    .sign(
                        &ring::signature::RSA_PKCS1_SHA256,
                        &keys.rng,
                        input,
                        &mut sig,
                    )
                    .map_err(|_| SignError::Crypto("RS256"))?;
                sig
            }
            IdTokenAlg::ES256 => keys
                .es
                .sign(&keys.rng, input)
                .map_err(|_| SignError::Crypto("ES256"))?
                .as_ref()
                .to_vec(),
            IdTokenAlg::EdDSA => keys.ed.sign(input).to_bytes().to_vec(),
        };
        jws.push('.');
        jws.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(jws)
    }

    /// The `kid` of the key `alg` names.
    pub fn kid(&self, alg: IdTokenAlg) -> String {
        self.keys().kid_ref(alg).to_string()
    }

    /// Whether the node holds a key for `alg` (always, once loaded: all
    /// three are created on first start).
    pub fn has(&self, _alg: IdTokenAlg) -> bool {
        true
    }

    /// Whether one of `members` (the ledger's current set) publishes this
    /// node's key for `alg`, i.e. whether the JWKS serves it and a token
    /// signed with it verifies. False for a member added before ID-token
    /// keys until a member op carries them, and for keys a rotation
    /// replaced (the node signs nothing with them).
    pub fn listed(&self, alg: IdTokenAlg, members: &[Member]) -> bool {
        let keys = self.keys();
        members.iter().any(|m| {
            m.key == keys.ed_public
                && match alg {
                    IdTokenAlg::EdDSA => true,
                    IdTokenAlg::RS256 => m.rsa.as_ref() == Some(&keys.rsa_public),
                    IdTokenAlg::ES256 => m.p256.as_ref() == Some(&keys.p256_public),
                }
        })
    }

    /// This node's member entry with all three public keys: what a genesis
    /// or a member-add op should carry for it (its `node_did` kept across
    /// rotations).
    pub fn member_entry(&self, name: &str) -> Member {
        self.keys().entry(name, &self.node_did)
    }

    /// The Ed25519 member key's public half.
    pub fn ed25519_public(&self) -> PublicKey {
        self.keys().ed_public
    }

    /// A copy of the Ed25519 key in force, for an API that takes the key
    /// itself (federation attestations, `did_core::federation::
    /// sign_attestation`). Prefer [`Self::ed25519_sign`]: the copy does not
    /// follow a later rotation.
    pub fn ed25519_signing_key(&self) -> ed25519_dalek::SigningKey {
        self.keys().ed.clone()
    }

    /// Signs `msg` with the Ed25519 key in force, returning that key's
    /// public half with the signature (one snapshot: a rotation between
    /// the two cannot pair a signature with the wrong key). What
    /// authorization codes and refresh tokens are signed with.
    pub fn ed25519_sign(&self, msg: &[u8]) -> (PublicKey, ed25519_dalek::Signature) {
        let keys = self.keys();
        (keys.ed_public, keys.ed.sign(msg))
    }
}

impl KeySet {
    fn kid_ref(&self, alg: IdTokenAlg) -> &str {
        match alg {
            IdTokenAlg::RS256 => &self.rsa_kid,
            IdTokenAlg::ES256 => &self.es_kid,
            IdTokenAlg::EdDSA => &self.ed_kid,
        }
    }
}

/// Adopts a committed rotation of this node's keys as soon as the ledger
/// holds it ([`TokenKeys::adopt_rotation`]): checks twice a second,
/// and only when the membership head moved. Stops with the node.
pub fn watch_rotation(state: &Arc<crate::NodeState>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        let mut seen: Option<Option<did_core::Cid>> = None;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else {
                return;
            };
            let members = match state.ledger.read() {
                Ok(l) if seen != Some(l.membership_head()) => {
                    seen = Some(l.membership_head());
                    l.members().to_vec()
                }
                _ => continue,
            };
            match state.token_keys.adopt_rotation(&members, crate::now()) {
                Ok(true) => tracing::info!(
                    ed25519_kid = %state.token_keys.kid(IdTokenAlg::EdDSA),
                    rs256_kid = %state.token_keys.kid(IdTokenAlg::RS256),
                    es256_kid = %state.token_keys.kid(IdTokenAlg::ES256),
                    "member-rotate committed: signing every token with the new keys"
                ),
                Ok(false) => {}
                Err(e) => {
                    seen = None;
                    tracing::warn!(error = %e, "cannot switch to the rotated keys");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKeys::load_or_create(dir.path()).unwrap();
        let b = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.member_entry("n"), b.member_entry("n"));
        for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256, IdTokenAlg::EdDSA] {
            assert_eq!(a.kid(alg), b.kid(alg));
        }
        for file in [RSA_KEY_FILE, P256_KEY_FILE] {
            let path = dir.path().join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
            assert!(text.lines().all(|l| l.len() <= 64), "RFC 7468 lines");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
        // The Debug form names kids only.
        let shown = format!("{a:?}");
        assert!(shown.contains(&a.kid(IdTokenAlg::RS256)) && !shown.contains("PRIVATE"));
    }

    #[test]
    fn a_damaged_or_foreign_key_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        TokenKeys::load_or_create(dir.path()).unwrap();
        let p256 = dir.path().join(P256_KEY_FILE);
        let rsa = dir.path().join(RSA_KEY_FILE);
        // The RSA key where the P-256 key belongs.
        std::fs::copy(&rsa, &p256).unwrap();
        let err = TokenKeys::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(P256_KEY_FILE) && err.contains("P-256"),
            "{err}"
        );
        std::fs::write(&rsa, "garbage").unwrap();
        let err = TokenKeys::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(RSA_KEY_FILE), "{err}");
    }

    #[test]
    fn a_rotation_switches_only_once_the_ledger_lists_the_pending_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let first = keys.member_entry("n");
        let old_kid = keys.kid(IdTokenAlg::RS256);
        let entry = prepare_rotation(dir.path(), "n").unwrap();
        // Preparing twice reuses the pending keys.
        assert_eq!(prepare_rotation(dir.path(), "n").unwrap(), entry);
        assert_eq!(entry.node_did, first.node_did);
        assert_ne!(entry.key, first.key);
        // Not committed yet: nothing changes.
        assert!(!keys
            .adopt_rotation(std::slice::from_ref(&first), 100)
            .unwrap());
        assert_eq!(keys.kid(IdTokenAlg::RS256), old_kid);
        // Committed: the node signs with the new keys at once.
        assert!(keys
            .adopt_rotation(std::slice::from_ref(&entry), 100)
            .unwrap());
        assert_eq!(keys.member_entry("n"), entry);
        assert_ne!(keys.kid(IdTokenAlg::RS256), old_kid);
        assert!(keys.listed(IdTokenAlg::ES256, std::slice::from_ref(&entry)));
        assert!(!keys.listed(IdTokenAlg::ES256, &[first]));
        assert!(dir
            .path()
            .join(RETIRED_DIR)
            .join("100")
            .join(RSA_KEY_FILE)
            .exists());
        assert!(!dir.path().join(PENDING_DIR).exists());
        // A restart loads the new keys under the same node_did.
        let again = TokenKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(again.member_entry("n"), entry);
        assert_eq!(again.node_did(), entry.node_did);
        assert!(!again.adopt_rotation(&[entry], 200).unwrap());
    }

    #[test]
    fn listed_only_when_the_member_entry_carries_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::load_or_create(dir.path()).unwrap();
        let full = vec![keys.member_entry("n")];
        let old = vec![Member::from_key("n", keys.ed25519_public())];
        for alg in [IdTokenAlg::RS256, IdTokenAlg::ES256] {
            assert!(keys.listed(alg, &full));
            assert!(!keys.listed(alg, &old));
            assert!(!keys.listed(alg, &[]));
        }
        assert!(keys.listed(IdTokenAlg::EdDSA, &old));
    }
}
