//! The wallet file: named Ed25519 seeds encrypted at rest, plus public
//! metadata (public keys, the registered DID, the node last used).
//!
//! ```text
//! {
//!   "format": "didmesh-wallet", "version": 2, "weak": false,
//!   "kdf":    {"alg": "argon2id", "version": 19, "m_cost_kib": 65536,
//!              "t_cost": 2, "p_cost": 1, "salt": "<base64url, 16 bytes>"},
//!   "key_check": "<base64url, 16 bytes>",
//!   "cipher": {"alg": "xchacha20poly1305", "nonce": "<base64url, 24 bytes>"},
//!   "ciphertext": "<base64url>",
//!   "public": {"keys": [{"name": "key-1", "public_key_multibase": "z6Mk…",
//!                        "status": "active", "created_at": 1764400000}],
//!              "did": {"did": "did:mesh:…", "node": "http://…", "created_at": …,
//!                      "deactivated": false},
//!              "previous_dids": [], "node": "http://127.0.0.1:7001"}
//! }
//! ```
//!
//! * argon2id(passphrase, salt) (RFC 9106) gives 48 bytes: the first 32 are
//!   the AEAD key, the last 16 are `key_check`. A matching `key_check` tells
//!   a right passphrase from a wrong one, so a failed decryption under the
//!   right passphrase can be reported as "the file was modified". It gives
//!   an offline guesser nothing the ciphertext does not (both cost one
//!   argon2id run per guess).
//! * The plaintext is `DMS1` followed by the 32-byte seeds, in the order of
//!   `public.keys`, sealed with XChaCha20-Poly1305.
//! * The associated data is the whole file but `ciphertext`:
//!   `didmesh-wallet/v2/aad\n` followed by the canonical JSON (did-core's
//!   RFC 8785 encoder, so member order and whitespace do not matter) of the
//!   parsed header and `public` section. Editing the DID, the node URL, a
//!   key's status, the KDF cost or the `weak` mark makes the decryption
//!   fail: [`WalletError::Modified`]. (Version 1 authenticated only the KDF
//!   header, so an edited `node` silently sent logins elsewhere.)
//! * KDF parameters are checked against [`KdfCost::within_bounds`] when the
//!   file is parsed, before anything runs the KDF: a file cannot make
//!   `open` allocate gigabytes or spin for minutes.
//! * `weak: true` marks a wallet created with a test cost
//!   (`DIDMESH_KDF_FAST=1`, or any cost below [`KdfCost::is_weak`]'s floor);
//!   `wallet show` says so.
//! * `keys[0]` is the main key: the DID's rotation key and the key logins
//!   sign with. A rotated-out main key stays as `retired` (never used to
//!   sign again, kept for audit and recovery). A key generated for an op
//!   whose outcome is not known yet is `pending`, so it is on disk *before*
//!   the node may start trusting it.
//! * Written atomically: a new temporary file with a random name in the same
//!   folder (`O_CREAT|O_EXCL`, mode 0600, so a planted file or symlink is
//!   never written through), fsync, rename, fsync of the folder.
//!
//! * **Version 3** is version 2 with more in the ciphertext, written only
//!   while the wallet holds phone numbers for SMS codes (`didmesh mfa
//!   add-phone`): the plaintext is `DMS2`, the seeds as above, then the
//!   JSON `{"phones": [{"id", "number", "salt"}]}` (E.164 number, the
//!   16-byte commitment salt in base64url). The associated data starts
//!   `didmesh-wallet/v3/aad\n`. A wallet without phones stays version 2,
//!   byte for byte what older `didmesh` builds read; a build that knows
//!   only version 2 refuses a version 3 file by its version instead of
//!   calling it corrupt. Numbers are never in the public section: a
//!   phone number is personal data, and whoever copies the file should
//!   learn it only with the passphrase.
//!
//! **Version 1 files** are still read, and are rewritten as version 2 on the
//! next save; `didmesh` saves right after the first unlock and says so on
//! stderr (see `commands::open_wallet`). Their public section was not
//! authenticated, so that message asks the user to check the DID and node.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use did_core::keys::public_of;
use did_core::PublicKey;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub const WALLET_FORMAT: &str = "didmesh-wallet";
/// The version written (and the oldest whose public section is
/// authenticated).
pub const WALLET_VERSION: u32 = 2;
/// The version written while the wallet holds phone numbers (module doc).
pub const WALLET_VERSION_PHONES: u32 = 3;
/// The oldest version still read (and upgraded on the next save).
pub const WALLET_VERSION_V1: u32 = 1;
/// Domain separation of the version 2 associated data.
const AAD_PREFIX: &[u8] = b"didmesh-wallet/v2/aad\n";
/// Marks the plaintext layout inside the ciphertext.
const SECRET_MAGIC: &[u8; 4] = b"DMS1";
/// Marks the version 3 plaintext: seeds, then the JSON of [`Extras`].
const SECRET_MAGIC_V3: &[u8; 4] = b"DMS2";
/// Domain separation of the version 3 associated data.
const AAD_PREFIX_V3: &[u8] = b"didmesh-wallet/v3/aad\n";
/// Most bytes of the JSON after the seeds (a few phones take ~100 each).
const MAX_EXTRAS_BYTES: usize = 8 * 1024;
/// Phones a wallet keeps at most (did-core allows 3 per DID; a wallet may
/// outlive a DID).
pub const MAX_WALLET_PHONES: usize = 16;
/// Length of a phone commitment's salt (`did_core::policy`).
pub const PHONE_SALT_LEN: usize = 16;
const SALT_LEN: usize = 16;
const SEED_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const KEY_CHECK_LEN: usize = 16;
/// Poly1305 tag.
const TAG_LEN: usize = 16;
/// Bounds on KDF parameters read from a file (checked before the KDF
/// runs). The default cost is 64 MiB, t=2, p=1; the bounds leave 16x
/// headroom in memory. Beyond them a file is refused, so a hostile file
/// cannot make `open` allocate gigabytes or spin for minutes.
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
pub const MAX_T_COST: u32 = 10;
pub const MAX_P_COST: u32 = 8;
/// argon2 needs at least 8 KiB per lane (RFC 9106 §3.1).
const MIN_M_COST_KIB_PER_LANE: u32 = 8;
/// Salt length accepted on read, in bytes (argon2 needs at least 8).
const SALT_BOUNDS: std::ops::RangeInclusive<usize> = 8..=64;
/// A wallet file is a few KiB; anything much larger is refused unread.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most keys a wallet holds (a DID takes at most 10 verification methods).
pub const MAX_KEYS: usize = 64;
/// Below this argon2id work (memory KiB x passes) a cost is a test cost:
/// OWASP's minimum for argon2id is 19 MiB with t=2 (Password Storage Cheat
/// Sheet), i.e. 38 912 KiB-passes.
const MIN_STRONG_WORK: u64 = 19 * 1024 * 2;

/// Why a wallet could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("no wallet at {0}; create one with `didmesh wallet init`")]
    NotFound(PathBuf),
    #[error("a wallet already exists at {0}; pass --force to replace it (the old file is kept as a .bak copy)")]
    Exists(PathBuf),
    #[error("wrong passphrase for wallet {0} (or the file was altered)")]
    WrongPassphrase(PathBuf),
    #[error("wallet file was modified: {0} no longer matches what was sealed with your passphrase (its public section, e.g. the DID or node URL, or its settings were edited); refusing to use it: restore a backup or restore the key with `didmesh wallet init --seed-hex`")]
    Modified(PathBuf),
    #[error("wallet {path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("wallet {path} asks for argon2id cost {cost}, outside the accepted bounds (memory 8 KiB per lane to {max_mib} MiB, 1 to {MAX_T_COST} passes, 1 to {MAX_P_COST} lanes); refusing to run the key derivation: the file was altered or not written by didmesh", max_mib = MAX_M_COST_KIB / 1024)]
    KdfBounds { path: PathBuf, cost: String },
    #[error("wallet {0} has version {1}; this didmesh reads versions {WALLET_VERSION_V1} to {WALLET_VERSION_PHONES}")]
    Version(PathBuf, u32),
    #[error("wallet {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("a wallet holds at most {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("a wallet holds at most {MAX_WALLET_PHONES} phone numbers")]
    TooManyPhones,
}

/// argon2id cost. Stored in the file, so a wallet made with one cost opens
/// with the same cost whatever the defaults become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfCost {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfCost {
    /// 64 MiB, 2 passes, 1 lane: ~100-200 ms on a laptop core, above the
    /// OWASP minimum for argon2id (19 MiB, t=2).
    fn default() -> Self {
        KdfCost {
            m_cost_kib: 64 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }
}

impl KdfCost {
    /// A cheap cost for tests (`DIDMESH_KDF_FAST=1`); never for real keys.
    /// Wallets made with it are marked `weak`.
    pub fn fast() -> Self {
        KdfCost {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Inside the bounds a file may ask for (see [`MAX_M_COST_KIB`] etc.).
    pub fn within_bounds(&self) -> bool {
        (1..=MAX_P_COST).contains(&self.p_cost)
            && (1..=MAX_T_COST).contains(&self.t_cost)
            && self.m_cost_kib <= MAX_M_COST_KIB
            && self.m_cost_kib >= MIN_M_COST_KIB_PER_LANE * self.p_cost
    }

    /// Below OWASP's argon2id minimum work: fine for tests, not for keys.
    pub fn is_weak(&self) -> bool {
        u64::from(self.m_cost_kib) * u64::from(self.t_cost) < MIN_STRONG_WORK
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub alg: String,
    /// argon2 version, 19 (0x13).
    pub version: u32,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// base64url, 16 random bytes.
    pub salt: String,
}

impl KdfParams {
    pub fn cost(&self) -> KdfCost {
        KdfCost {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CipherParams {
    /// Always `xchacha20poly1305`.
    pub alg: String,
    /// base64url, 24 random bytes, fresh on every save.
    pub nonce: String,
}

/// What a key is used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// In use (the main key, or a key added to the DID).
    Active,
    /// Generated for an op whose outcome is not known yet.
    Pending,
    /// Rotated out; never signs again.
    Retired,
}

/// The public half of a wallet key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// Also the verification method id (`did#name`) when added to a DID.
    pub name: String,
    pub public_key_multibase: PublicKey,
    pub status: KeyStatus,
    pub created_at: u64,
}

/// A DID this wallet registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DidRecord {
    pub did: String,
    /// Node it was registered on.
    pub node: String,
    pub created_at: u64,
    #[serde(default)]
    pub deactivated: bool,
}

/// Everything in the wallet that is not secret. Readable without the
/// passphrase (`wallet show`); authenticated when the wallet is unlocked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicInfo {
    pub keys: Vec<KeyInfo>,
    /// The DID the wallet acts as (the latest it registered).
    pub did: Option<DidRecord>,
    /// DIDs registered before (deactivated or abandoned with --force).
    #[serde(default)]
    pub previous_dids: Vec<DidRecord>,
    /// The node URL last used, the default for `--node`.
    pub node: Option<String>,
}

impl PublicInfo {
    pub fn main_key(&self) -> Option<&KeyInfo> {
        self.keys.first()
    }
}

/// The file as stored (both versions; version 1 has no `weak` and no
/// `key_check`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    format: String,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weak: Option<bool>,
    kdf: KdfParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_check: Option<String>,
    cipher: CipherParams,
    ciphertext: String,
    public: PublicInfo,
}

/// The associated data of a version 2 file: everything but `ciphertext`,
/// canonically encoded, so that any edit of a field with meaning changes it
/// while reformatting the JSON does not.
fn aad_v2(repr: &FileRepr) -> Result<Vec<u8>, WalletError> {
    let prefix = if repr.version == WALLET_VERSION_PHONES {
        AAD_PREFIX_V3
    } else {
        AAD_PREFIX
    };
    let mut value = serde_json::to_value(repr).map_err(|e| WalletError::Kdf(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        obj.remove("ciphertext");
    }
    let body =
        did_core::encoding::canonical_value(&value).map_err(|e| WalletError::Kdf(e.to_string()))?;
    let mut aad = Vec::with_capacity(prefix.len() + body.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(&body);
    Ok(aad)
}

/// The version 1 associated data: only the KDF header.
#[derive(Serialize)]
struct HeaderV1<'a> {
    format: &'a str,
    version: u32,
    kdf: &'a KdfParams,
    cipher_alg: &'a str,
}

fn aad_v1(kdf: &KdfParams) -> Result<Vec<u8>, WalletError> {
    serde_json::to_vec(&HeaderV1 {
        format: WALLET_FORMAT,
        version: WALLET_VERSION_V1,
        kdf,
        cipher_alg: "xchacha20poly1305",
    })
    .map_err(|e| WalletError::Kdf(e.to_string()))
}

/// A wallet file parsed and checked as far as possible without the
/// passphrase: format, version, KDF bounds, sizes of salt, nonce, key check
/// and ciphertext. Nothing in it is authenticated yet; [`Wallet::open`]
/// does that.
#[derive(Debug, Clone)]
pub struct WalletFile {
    repr: FileRepr,
    salt: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
    key_check: Option<[u8; KEY_CHECK_LEN]>,
}

impl WalletFile {
    /// The file's format version (1 is upgraded on the next save).
    pub fn version(&self) -> u32 {
        self.repr.version
    }

    /// Made with a test KDF cost (`DIDMESH_KDF_FAST=1`): not for real keys.
    /// For a version 1 file, judged from its cost.
    pub fn weak(&self) -> bool {
        self.repr.weak.unwrap_or_else(|| self.kdf_cost().is_weak())
    }

    pub fn kdf_cost(&self) -> KdfCost {
        self.repr.kdf.cost()
    }

    /// The public section as written (not authenticated until unlocked).
    pub fn public(&self) -> &PublicInfo {
        &self.repr.public
    }

    pub fn into_public(self) -> PublicInfo {
        self.repr.public
    }
}

/// Parses a wallet file from bytes and runs every check that needs no
/// passphrase; never runs the KDF. `path` only names the file in errors.
/// Safe on any input (fuzzed: `fuzz/fuzz_targets/wallet_parse.rs`).
pub fn parse_file(bytes: &[u8], path: &Path) -> Result<WalletFile, WalletError> {
    let corrupt = |reason: &str| WalletError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(corrupt(&format!(
            "{} bytes, more than a wallet can hold ({MAX_FILE_BYTES})",
            bytes.len()
        )));
    }
    // Look at format and version before the strict parse, so a newer file
    // says "newer version" rather than "unknown field".
    let probe: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(&e.to_string()))?;
    if probe.get("format").and_then(|f| f.as_str()) != Some(WALLET_FORMAT) {
        return Err(corrupt("not a didmesh wallet"));
    }
    let version = match probe.get("version").and_then(|v| v.as_u64()) {
        Some(v)
            if (u64::from(WALLET_VERSION_V1)..=u64::from(WALLET_VERSION_PHONES)).contains(&v) =>
        {
            v
        }
        Some(v) => {
            return Err(WalletError::Version(
                path.to_path_buf(),
                u32::try_from(v).unwrap_or(u32::MAX),
            ))
        }
        None => return Err(corrupt("no version")),
    };
    let repr: FileRepr = serde_json::from_value(probe).map_err(|e| corrupt(&e.to_string()))?;
    match (
        version >= u64::from(WALLET_VERSION),
        &repr.weak,
        &repr.key_check,
    ) {
        (true, Some(_), Some(_)) | (false, None, None) => {}
        (true, _, _) => return Err(corrupt("versions 2 and 3 need `weak` and `key_check`")),
        (false, _, _) => return Err(corrupt("version 1 has no `weak` or `key_check`")),
    }

    // The KDF settings, before anything could run the KDF on them.
    let kdf = &repr.kdf;
    if kdf.alg != "argon2id" || kdf.version != 19 {
        return Err(corrupt("kdf must be argon2id version 19"));
    }
    let cost = kdf.cost();
    if !cost.within_bounds() {
        return Err(WalletError::KdfBounds {
            path: path.to_path_buf(),
            cost: format!(
                "m={} KiB, t={}, p={}",
                cost.m_cost_kib, cost.t_cost, cost.p_cost
            ),
        });
    }
    if repr.weak == Some(false) && cost.is_weak() {
        return Err(corrupt(
            "the KDF cost is a test cost but the wallet is not marked weak",
        ));
    }
    let salt = decode_bounded(&kdf.salt, *SALT_BOUNDS.end())
        .filter(|s| SALT_BOUNDS.contains(&s.len()))
        .ok_or_else(|| corrupt("kdf.salt must be 8 to 64 bytes of base64url"))?;

    if repr.cipher.alg != "xchacha20poly1305" {
        return Err(corrupt("cipher must be xchacha20poly1305"));
    }
    let nonce: [u8; NONCE_LEN] = decode_bounded(&repr.cipher.nonce, NONCE_LEN)
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| corrupt("cipher.nonce must be 24 bytes of base64url"))?;
    let key_check = match &repr.key_check {
        None => None,
        Some(k) => Some(
            decode_bounded(k, KEY_CHECK_LEN)
                .and_then(|k| <[u8; KEY_CHECK_LEN]>::try_from(k).ok())
                .ok_or_else(|| corrupt("key_check must be 16 bytes of base64url"))?,
        ),
    };

    let keys = repr.public.keys.len();
    if keys == 0 {
        return Err(corrupt("no keys"));
    }
    if keys > MAX_KEYS {
        return Err(corrupt(&format!("more than {MAX_KEYS} keys")));
    }
    let expected = TAG_LEN + SECRET_MAGIC.len() + SEED_LEN * keys;
    // Version 3 carries the extras after the seeds.
    let extra = if version == u64::from(WALLET_VERSION_PHONES) {
        MAX_EXTRAS_BYTES
    } else {
        0
    };
    let ciphertext = decode_bounded(&repr.ciphertext, expected + extra)
        .filter(|c| (expected..=expected + extra).contains(&c.len()))
        .ok_or_else(|| corrupt("the ciphertext does not hold one seed per key of public.keys"))?;
    Ok(WalletFile {
        repr,
        salt,
        nonce,
        ciphertext,
        key_check,
    })
}

/// base64url without padding, refusing text longer than `max_bytes` would
/// need before decoding it.
fn decode_bounded(text: &str, max_bytes: usize) -> Option<Vec<u8>> {
    if text.len() > max_bytes.div_ceil(3) * 4 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Reads and parses the wallet file at `path` (no passphrase needed).
pub fn read_file(path: &Path) -> Result<WalletFile, WalletError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => WalletError::NotFound(path.to_path_buf()),
        _ => WalletError::Io(path.to_path_buf(), e),
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Read one byte past the cap, so an oversized file is refused without
    // reading all of it.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_FILE_BYTES as u64 + 1),
        &mut bytes,
    )
    .map_err(io)?;
    parse_file(&bytes, path)
}

/// A phone number the wallet keeps for SMS codes (`didmesh mfa
/// add-phone`): the DID holds only `phone_commitment(salt, number)` under
/// entry id `id`. `Debug` masks the number; the number is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneSecret {
    /// The phone's entry id in the DID state.
    pub id: String,
    /// E.164 (`+` and digits).
    pub number: Zeroizing<String>,
    pub salt: [u8; PHONE_SALT_LEN],
}

impl std::fmt::Debug for PhoneSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneSecret")
            .field("id", &self.id)
            .field("number", &mask_number(&self.number))
            .finish_non_exhaustive()
    }
}

/// A number as the wallet shows it: `+`, the first digit, six stars, the
/// last two digits (`+1******34`), whatever its length, so the mask does
/// not tell the length either.
pub fn mask_number(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    match digits.as_slice() {
        [first, .., a, b] => format!("+{first}******{a}{b}"),
        _ => "+******".into(),
    }
}

/// The JSON after the seeds in a version 3 plaintext.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extras {
    #[serde(default)]
    phones: Vec<PhoneRepr>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneRepr {
    id: String,
    number: String,
    /// base64url, [`PHONE_SALT_LEN`] bytes.
    salt: String,
}

impl Drop for PhoneRepr {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.number);
    }
}

/// An unlocked wallet. Seeds live in `SigningKey`s (zeroized on drop) and
/// the derived AEAD key in a `Zeroizing` buffer; the passphrase itself is
/// not kept.
pub struct Wallet {
    path: PathBuf,
    kdf: KdfParams,
    weak: bool,
    key_check: [u8; KEY_CHECK_LEN],
    aead_key: Zeroizing<[u8; 32]>,
    /// The version the file had when opened (1: upgraded on the next save).
    read_version: u32,
    /// Public metadata; `keys` is kept parallel to `secrets`.
    public: PublicInfo,
    secrets: Vec<SigningKey>,
    /// Phone numbers for SMS codes (version 3 files only).
    phones: Vec<PhoneSecret>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("path", &self.path)
            .field("weak", &self.weak)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// Creates a new wallet at `path` with one key (the given seed, or a
    /// fresh one) named `key-1`. Refuses to replace an existing file unless
    /// `force`; a replaced file is first renamed to `<path>.bak-<unix>`.
    /// A cost below OWASP's floor ([`KdfCost::is_weak`]) marks it `weak`.
    pub fn create(
        path: &Path,
        passphrase: &[u8],
        seed: Option<Zeroizing<[u8; 32]>>,
        cost: KdfCost,
        force: bool,
        now: u64,
    ) -> Result<Wallet, WalletError> {
        if !cost.within_bounds() {
            return Err(WalletError::Kdf(format!("cost {cost:?} is out of bounds")));
        }
        if path.exists() {
            if !force {
                return Err(WalletError::Exists(path.to_path_buf()));
            }
            let mut backup = path.as_os_str().to_owned();
            backup.push(format!(".bak-{now}"));
            std::fs::rename(path, &backup).map_err(|e| WalletError::Io(path.to_path_buf(), e))?;
        }
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let kdf = KdfParams {
            alg: "argon2id".into(),
            version: 19,
            m_cost_kib: cost.m_cost_kib,
            t_cost: cost.t_cost,
            p_cost: cost.p_cost,
            salt: URL_SAFE_NO_PAD.encode(salt),
        };
        let (aead_key, key_check) = derive_v2(&kdf, &salt, passphrase)?;
        let key = match seed {
            Some(seed) => SigningKey::from_bytes(&seed),
            None => SigningKey::generate(&mut OsRng),
        };
        let mut wallet = Wallet {
            path: path.to_path_buf(),
            kdf,
            weak: cost.is_weak(),
            key_check,
            aead_key,
            read_version: WALLET_VERSION,
            public: PublicInfo::default(),
            secrets: vec![],
            phones: vec![],
        };
        wallet.push_key("key-1".into(), key, KeyStatus::Active, now)?;
        wallet.save()?;
        Ok(wallet)
    }

    /// Reads the public part without the passphrase (not authenticated).
    pub fn read_public(path: &Path) -> Result<PublicInfo, WalletError> {
        Ok(read_file(path)?.into_public())
    }

    /// Unlocks the wallet at `path`: checks the passphrase, then decrypts
    /// with the whole header and public section as associated data.
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Wallet, WalletError> {
        let file = read_file(path)?;
        Wallet::unlock(file, path, passphrase)
    }

    /// Unlocks a parsed file (`path` is where [`Wallet::save`] writes).
    pub fn unlock(file: WalletFile, path: &Path, passphrase: &[u8]) -> Result<Wallet, WalletError> {
        let corrupt = |reason: &str| WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        let weak = file.weak();
        let (decrypt_key, aad, aead_key, key_check) = match file.key_check {
            Some(stored) => {
                let (key, check) = derive_v2(&file.repr.kdf, &file.salt, passphrase)?;
                if !constant_time_eq(&check, &stored) {
                    return Err(WalletError::WrongPassphrase(path.to_path_buf()));
                }
                (key.clone(), aad_v2(&file.repr)?, key, check)
            }
            None => {
                // Version 1: its own key; the version 2 key and check are
                // derived too, for the upgrade on the next save.
                let old = derive(&file.repr.kdf, &file.salt, passphrase, 32)?;
                let mut key = Zeroizing::new([0u8; 32]);
                key.copy_from_slice(&old);
                let (new_key, check) = derive_v2(&file.repr.kdf, &file.salt, passphrase)?;
                (key, aad_v1(&file.repr.kdf)?, new_key, check)
            }
        };
        let cipher = XChaCha20Poly1305::new((&*decrypt_key).into());
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&file.nonce),
                Payload {
                    msg: &file.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| match file.key_check {
                // The passphrase is right (the check matched): the file is not
                // what was sealed.
                Some(_) => WalletError::Modified(path.to_path_buf()),
                None => WalletError::WrongPassphrase(path.to_path_buf()),
            })?;
        let plain = Zeroizing::new(plain);
        let keys = &file.repr.public.keys;
        let magic = if file.repr.version == WALLET_VERSION_PHONES {
            SECRET_MAGIC_V3
        } else {
            SECRET_MAGIC
        };
        let body = plain
            .strip_prefix(magic.as_slice())
            .ok_or_else(|| corrupt("unknown secret layout"))?;
        let (seeds, extras) = body.split_at(body.len().min(SEED_LEN * keys.len()));
        if seeds.len() != SEED_LEN * keys.len() || (magic == SECRET_MAGIC && !extras.is_empty()) {
            return Err(corrupt("the encrypted keys do not match public.keys"));
        }
        let phones = if magic == SECRET_MAGIC_V3 {
            read_phones(extras).map_err(|why| corrupt(&why))?
        } else {
            vec![]
        };
        let mut secrets = Vec::with_capacity(keys.len());
        for (chunk, info) in seeds.chunks_exact(SEED_LEN).zip(keys) {
            let mut seed = Zeroizing::new([0u8; SEED_LEN]);
            seed.copy_from_slice(chunk);
            let key = SigningKey::from_bytes(&seed);
            // Still checked: in a version 1 file `public.keys` is not
            // authenticated.
            if public_of(&key) != info.public_key_multibase {
                return Err(corrupt(&format!(
                    "public key of {} does not match its secret (file altered?)",
                    info.name
                )));
            }
            secrets.push(key);
        }
        Ok(Wallet {
            path: path.to_path_buf(),
            kdf: file.repr.kdf,
            weak,
            key_check,
            aead_key,
            read_version: file.repr.version,
            public: file.repr.public,
            secrets,
            phones,
        })
    }

    /// Encrypts and writes the wallet atomically (fresh nonce each time),
    /// always in the current version.
    /// Version 2 while the wallet holds no phone, version 3 with phones
    /// (module doc).
    pub fn save(&self) -> Result<(), WalletError> {
        let phones = !self.phones.is_empty();
        let mut plain = Zeroizing::new(Vec::with_capacity(
            SECRET_MAGIC.len() + SEED_LEN * self.secrets.len() + MAX_EXTRAS_BYTES,
        ));
        plain.extend_from_slice(if phones {
            SECRET_MAGIC_V3
        } else {
            SECRET_MAGIC
        });
        for key in &self.secrets {
            plain.extend_from_slice(key.as_bytes());
        }
        if phones {
            write_phones(&self.phones, &mut plain)?;
        }
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut repr = FileRepr {
            format: WALLET_FORMAT.into(),
            version: if phones {
                WALLET_VERSION_PHONES
            } else {
                WALLET_VERSION
            },
            weak: Some(self.weak),
            kdf: self.kdf.clone(),
            key_check: Some(URL_SAFE_NO_PAD.encode(self.key_check)),
            cipher: CipherParams {
                alg: "xchacha20poly1305".into(),
                nonce: URL_SAFE_NO_PAD.encode(nonce),
            },
            ciphertext: String::new(),
            public: self.public.clone(),
        };
        let aad = aad_v2(&repr)?;
        let cipher = XChaCha20Poly1305::new((&*self.aead_key).into());
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| WalletError::Kdf("encryption failed".into()))?;
        repr.ciphertext = URL_SAFE_NO_PAD.encode(ciphertext);
        let mut bytes =
            serde_json::to_vec_pretty(&repr).map_err(|e| WalletError::Kdf(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn public(&self) -> &PublicInfo {
        &self.public
    }

    /// Made with a test KDF cost.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The file version this wallet was read from; 1 means the next
    /// [`Wallet::save`] upgrades it.
    pub fn read_version(&self) -> u32 {
        self.read_version
    }

    /// Mutable public metadata (DID, node). Keys change only through the
    /// methods below so `keys` and the secrets stay parallel.
    pub fn did_mut(&mut self) -> &mut Option<DidRecord> {
        &mut self.public.did
    }

    pub fn previous_dids_mut(&mut self) -> &mut Vec<DidRecord> {
        &mut self.public.previous_dids
    }

    pub fn set_node(&mut self, node: &str) {
        self.public.node = Some(node.to_string());
    }

    /// The main key: rotation key of the DID, login key.
    pub fn main_key(&self) -> &SigningKey {
        // `create` always pushes one key and nothing removes the last one.
        &self.secrets[0]
    }

    pub fn main_public(&self) -> PublicKey {
        public_of(self.main_key())
    }

    /// The signing key for a public key, unless it is retired or pending.
    pub fn usable_key(&self, public: &PublicKey) -> Option<&SigningKey> {
        self.public
            .keys
            .iter()
            .position(|k| k.public_key_multibase == *public && k.status == KeyStatus::Active)
            .map(|i| &self.secrets[i])
    }

    /// A name `key-N` used by no wallet key and none of `taken`.
    pub fn next_key_name<'a>(&self, taken: impl Iterator<Item = &'a str> + Clone) -> String {
        (1..)
            .map(|n| format!("key-{n}"))
            .find(|name| {
                !self.public.keys.iter().any(|k| &k.name == name)
                    && !taken.clone().any(|t| t == name)
            })
            .unwrap_or_else(|| "key-x".into())
    }

    /// Generates a key and appends it with `status`; returns its index.
    pub fn generate_key(
        &mut self,
        name: String,
        status: KeyStatus,
        now: u64,
    ) -> Result<usize, WalletError> {
        self.push_key(name, SigningKey::generate(&mut OsRng), status, now)
    }

    fn push_key(
        &mut self,
        name: String,
        key: SigningKey,
        status: KeyStatus,
        now: u64,
    ) -> Result<usize, WalletError> {
        if self.secrets.len() >= MAX_KEYS {
            return Err(WalletError::TooManyKeys);
        }
        self.public.keys.push(KeyInfo {
            name,
            public_key_multibase: public_of(&key),
            status,
            created_at: now,
        });
        self.secrets.push(key);
        Ok(self.secrets.len() - 1)
    }

    pub fn key_at(&self, index: usize) -> Option<(&KeyInfo, &SigningKey)> {
        Some((self.public.keys.get(index)?, self.secrets.get(index)?))
    }

    pub fn set_status(&mut self, index: usize, status: KeyStatus) {
        if let Some(k) = self.public.keys.get_mut(index) {
            k.status = status;
        }
    }

    /// Drops a key (only ever a pending one the node refused).
    pub fn remove_key(&mut self, index: usize) {
        if index > 0 && index < self.secrets.len() {
            self.public.keys.remove(index);
            self.secrets.remove(index);
        }
    }

    /// The phone numbers the wallet keeps for SMS codes.
    pub fn phones(&self) -> &[PhoneSecret] {
        &self.phones
    }

    pub fn phone(&self, id: &str) -> Option<&PhoneSecret> {
        self.phones.iter().find(|p| p.id == id)
    }

    /// Keeps a phone number (replacing one with the same id).
    pub fn add_phone(&mut self, phone: PhoneSecret) -> Result<(), WalletError> {
        self.phones.retain(|p| p.id != phone.id);
        if self.phones.len() >= MAX_WALLET_PHONES {
            return Err(WalletError::TooManyPhones);
        }
        self.phones.push(phone);
        Ok(())
    }

    /// Forgets the phone with entry id `id`; whether there was one.
    pub fn remove_phone(&mut self, id: &str) -> bool {
        let before = self.phones.len();
        self.phones.retain(|p| p.id != id);
        self.phones.len() != before
    }

    /// Makes the key at `index` the main key; the old main key is retired.
    pub fn promote(&mut self, index: usize) {
        if index == 0 || index >= self.secrets.len() {
            return;
        }
        self.public.keys[0].status = KeyStatus::Retired;
        let info = self.public.keys.remove(index);
        let key = self.secrets.remove(index);
        self.public.keys.insert(
            0,
            KeyInfo {
                status: KeyStatus::Active,
                ..info
            },
        );
        self.secrets.insert(0, key);
    }
}

/// The phones of a version 3 plaintext's JSON, checked.
fn read_phones(json: &[u8]) -> Result<Vec<PhoneSecret>, String> {
    if json.len() > MAX_EXTRAS_BYTES {
        return Err("the encrypted extras are too large".into());
    }
    let extras: Extras =
        serde_json::from_slice(json).map_err(|e| format!("encrypted extras: {e}"))?;
    if extras.phones.is_empty() || extras.phones.len() > MAX_WALLET_PHONES {
        return Err(format!(
            "a version 3 wallet holds 1 to {MAX_WALLET_PHONES} phones"
        ));
    }
    let mut out: Vec<PhoneSecret> = Vec::with_capacity(extras.phones.len());
    for p in &extras.phones {
        let salt = decode_bounded(&p.salt, PHONE_SALT_LEN)
            .and_then(|s| <[u8; PHONE_SALT_LEN]>::try_from(s).ok())
            .ok_or_else(|| format!("phone {}: the salt must be 16 bytes", p.id))?;
        if !did_core::policy::is_e164(&p.number) || p.id.is_empty() || p.id.len() > 64 {
            return Err(format!("phone {}: not an E.164 number or a bad id", p.id));
        }
        if out.iter().any(|o| o.id == p.id) {
            return Err(format!("phone {} is there twice", p.id));
        }
        out.push(PhoneSecret {
            id: p.id.clone(),
            number: Zeroizing::new(p.number.clone()),
            salt,
        });
    }
    Ok(out)
}

/// Appends the version 3 JSON of `phones` to `plain`.
fn write_phones(phones: &[PhoneSecret], plain: &mut Vec<u8>) -> Result<(), WalletError> {
    let extras = Extras {
        phones: phones
            .iter()
            .map(|p| PhoneRepr {
                id: p.id.clone(),
                number: p.number.to_string(),
                salt: URL_SAFE_NO_PAD.encode(p.salt),
            })
            .collect(),
    };
    // Into the zeroized buffer directly (its capacity was reserved).
    let start = plain.len();
    serde_json::to_writer(&mut *plain, &extras).map_err(|e| WalletError::Kdf(e.to_string()))?;
    if plain.len() - start > MAX_EXTRAS_BYTES {
        return Err(WalletError::TooManyPhones);
    }
    Ok(())
}

/// argon2id over the passphrase with the stored parameters, `len` bytes.
/// Callers pass parameters that went through [`parse_file`] or
/// [`Wallet::create`], so they are within bounds; checked again here all
/// the same, since this is the call that allocates.
fn derive(
    kdf: &KdfParams,
    salt: &[u8],
    passphrase: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, WalletError> {
    let cost = kdf.cost();
    if kdf.alg != "argon2id" || kdf.version != 19 || !cost.within_bounds() {
        return Err(WalletError::Kdf(format!(
            "unsupported KDF {} v{} {cost:?}",
            kdf.alg, kdf.version
        )));
    }
    let params = Params::new(cost.m_cost_kib, cost.t_cost, cost.p_cost, Some(len))
        .map_err(|e| WalletError::Kdf(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = Zeroizing::new(vec![0u8; len]);
    argon
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| WalletError::Kdf(e.to_string()))?;
    Ok(out)
}

/// Version 2: 48 bytes of argon2id, split into the AEAD key and the key
/// check.
fn derive_v2(
    kdf: &KdfParams,
    salt: &[u8],
    passphrase: &[u8],
) -> Result<(Zeroizing<[u8; 32]>, [u8; KEY_CHECK_LEN]), WalletError> {
    let out = derive(kdf, salt, passphrase, 32 + KEY_CHECK_LEN)?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&out[..32]);
    let mut check = [0u8; KEY_CHECK_LEN];
    check.copy_from_slice(&out[32..]);
    Ok((key, check))
}

/// Compares without an early exit, so timing says nothing about how many
/// leading bytes of a guess's check matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// file: a new temporary file in the same folder, fsync, rename, fsync of
/// the folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    let io = |e| WalletError::Io(path.to_path_buf(), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        create_private_dir(&dir).map_err(io)?;
    }
    let base = path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "wallet.json".into());
    let names = std::iter::repeat_with(|| {
        let mut r = [0u8; 8];
        OsRng.fill_bytes(&mut r);
        let mut name = std::ffi::OsString::from(".");
        name.push(&base);
        name.push(".tmp-");
        name.push(r.iter().map(|b| format!("{b:02x}")).collect::<String>());
        name
    });
    let (tmp, mut f) = create_temp(&dir, names).map_err(io)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        {
            // Makes the rename itself durable.
            match std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
                // Some filesystems cannot fsync a folder; the rename is done.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
                other => other?,
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Creates a new file (`O_CREAT|O_EXCL`: never an existing file, never
/// through a symlink) with mode 0600, under the first of `names` that is
/// free; gives up after 16 taken names.
fn create_temp(
    dir: &Path,
    names: impl IntoIterator<Item = std::ffi::OsString>,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut last = None;
    for name in names.into_iter().take(16) {
        let tmp = dir.join(name);
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name")
    }))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Parses 64 hex digits into a seed.
pub fn parse_seed_hex(s: &str) -> Option<Zeroizing<[u8; 32]>> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    for (i, out) in seed.iter_mut().enumerate() {
        *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("client-wallet-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn seed_hex_parsing() {
        let s = "00".repeat(31) + "ff";
        assert_eq!(parse_seed_hex(&s).unwrap()[31], 0xff);
        assert!(parse_seed_hex("abc").is_none());
        assert!(parse_seed_hex(&"zz".repeat(32)).is_none());
        assert!(parse_seed_hex(&"é".repeat(32)).is_none());
    }

    #[test]
    fn promote_retires_old_main_and_keeps_secrets_parallel() {
        let dir = tmp();
        let path = dir.path().join("w.json");
        let mut w = Wallet::create(&path, b"passphrase", None, KdfCost::fast(), false, 1).unwrap();
        let old = w.main_public();
        let i = w
            .generate_key("key-2".into(), KeyStatus::Pending, 2)
            .unwrap();
        let new = public_of(w.key_at(i).unwrap().1);
        w.promote(i);
        assert_eq!(w.main_public(), new);
        assert_eq!(w.public().keys[0].status, KeyStatus::Active);
        assert_eq!(w.public().keys[1].public_key_multibase, old);
        assert_eq!(w.public().keys[1].status, KeyStatus::Retired);
        assert!(w.usable_key(&old).is_none());
        w.save().unwrap();
        let again = Wallet::open(&path, b"passphrase").unwrap();
        assert_eq!(again.main_public(), new);
        assert_eq!(again.public(), w.public());
    }

    #[test]
    fn edited_public_keys_are_detected() {
        let dir = tmp();
        let path = dir.path().join("w.json");
        Wallet::create(&path, b"passphrase", None, KdfCost::fast(), false, 1).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let other = public_of(&SigningKey::from_bytes(&[9; 32]));
        v["public"]["keys"][0]["public_key_multibase"] = other.to_multibase().into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = Wallet::open(&path, b"passphrase").unwrap_err();
        assert!(matches!(err, WalletError::Modified(_)), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn temp_file_creation_skips_taken_names_and_never_follows_them() {
        let dir = tmp();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("b"), b"someone else's").unwrap();
        let (path, mut f) = create_temp(dir.path(), ["a".into(), "b".into(), "c".into()]).unwrap();
        assert_eq!(path, dir.path().join("c"));
        f.write_all(b"x").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read(dir.path().join("b")).unwrap(),
            b"someone else's"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        // All names taken: an error, nothing written.
        let err = create_temp(dir.path(), ["a".into(), "b".into()]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn kdf_bounds() {
        assert!(KdfCost::default().within_bounds() && !KdfCost::default().is_weak());
        assert!(KdfCost::fast().within_bounds() && KdfCost::fast().is_weak());
        for bad in [
            (MAX_M_COST_KIB + 1, 1, 1),
            (4 * 1024 * 1024, 2, 1),
            (64, 1, 9),
            (64, 11, 1),
            (64, 0, 1),
            (64, 1, 0),
            (7, 1, 1),
            (8, 1, 2),
        ] {
            let cost = KdfCost {
                m_cost_kib: bad.0,
                t_cost: bad.1,
                p_cost: bad.2,
            };
            assert!(!cost.within_bounds(), "{cost:?}");
        }
    }

    fn phone(id: &str, number: &str) -> PhoneSecret {
        PhoneSecret {
            id: id.into(),
            number: Zeroizing::new(number.into()),
            salt: [7; PHONE_SALT_LEN],
        }
    }

    #[test]
    fn phones_are_sealed_in_version_3_and_gone_again_in_version_2() {
        let dir = tmp();
        let path = dir.path().join("w.json");
        let mut w = Wallet::create(&path, b"passphrase", None, KdfCost::fast(), false, 1).unwrap();
        let v2 = std::fs::read_to_string(&path).unwrap();
        assert!(v2.contains("\"version\": 2"), "{v2}");
        w.add_phone(phone("phone-1", "+15550100134")).unwrap();
        w.save().unwrap();
        let v3 = std::fs::read_to_string(&path).unwrap();
        assert!(v3.contains("\"version\": 3"), "{v3}");
        assert!(!v3.contains("5550100134"), "the number is readable: {v3}");
        let again = Wallet::open(&path, b"passphrase").unwrap();
        assert_eq!(again.phones(), w.phones());
        assert_eq!(again.read_version(), WALLET_VERSION_PHONES);
        assert!(!format!("{again:?}{:?}", again.phones()).contains("5550100134"));
        // Rolling the version back to 2 changes the associated data.
        let mut v: serde_json::Value = serde_json::from_str(&v3).unwrap();
        v["version"] = 2.into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(Wallet::open(&path, b"passphrase").is_err());
        // Without phones the file is version 2 again, as older builds read it.
        let mut w = again;
        assert!(w.remove_phone("phone-1"));
        w.save().unwrap();
        let back = Wallet::open(&path, b"passphrase").unwrap();
        assert!(back.phones().is_empty());
        assert_eq!(back.read_version(), WALLET_VERSION);
    }

    #[test]
    fn kdf_params_are_authenticated() {
        let dir = tmp();
        let path = dir.path().join("w.json");
        Wallet::create(&path, b"passphrase", None, KdfCost::fast(), false, 1).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["kdf"]["t_cost"] = 2.into();
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            Wallet::open(&path, b"passphrase"),
            Err(WalletError::WrongPassphrase(_))
        ));
    }
}
