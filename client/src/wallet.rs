//! The wallet file: named Ed25519 seeds encrypted at rest, plus public
//! metadata (public keys, the registered DID, the node last used).
//!
//! ```text
//! {
//!   "format": "didmesh-wallet", "version": 1,
//!   "kdf":    {"alg": "argon2id", "version": 19, "m_cost_kib": 65536,
//!              "t_cost": 2, "p_cost": 1, "salt": "<base64url, 16 bytes>"},
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
//! * The AEAD key is argon2id(passphrase, salt) (RFC 9106); the plaintext is
//!   `DMS1` followed by the 32-byte seeds, in the order of `public.keys`.
//! * The associated data is the header (`format`, `version`, `kdf`,
//!   `cipher.alg`), so KDF parameters cannot be swapped without the
//!   decryption failing.
//! * The public part is rewritten from the secrets on every save; on open
//!   each seed must derive the public key listed next to it, so an edited
//!   `public.keys` is detected.
//! * `keys[0]` is the main key: the DID's rotation key and the key logins
//!   sign with. A rotated-out main key stays as `retired` (never used to
//!   sign again, kept for audit and recovery). A key generated for an op
//!   whose outcome is not known yet is `pending`, so it is on disk *before*
//!   the node may start trusting it.
//! * Written atomically (temporary file, fsync, rename), mode 0600.

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
pub const WALLET_VERSION: u32 = 1;
/// Marks the plaintext layout inside the ciphertext.
const SECRET_MAGIC: &[u8; 4] = b"DMS1";
const SALT_LEN: usize = 16;
const SEED_LEN: usize = 32;
/// Upper bounds on KDF parameters read from a file: a hostile file must not
/// make `open` allocate gigabytes or spin for minutes.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 16;
/// Most keys a wallet holds (a DID takes at most 10 verification methods).
pub const MAX_KEYS: usize = 64;

/// Why a wallet could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("no wallet at {0}; create one with `didmesh wallet init`")]
    NotFound(PathBuf),
    #[error("a wallet already exists at {0}; pass --force to replace it (the old file is kept as a .bak copy)")]
    Exists(PathBuf),
    #[error("wrong passphrase for wallet {0} (or the file was altered)")]
    WrongPassphrase(PathBuf),
    #[error("wallet {path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("wallet {0} has version {1}; this didmesh reads version {WALLET_VERSION}")]
    Version(PathBuf, u32),
    #[error("wallet {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("a wallet holds at most {MAX_KEYS} keys")]
    TooManyKeys,
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
    pub fn fast() -> Self {
        KdfCost {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
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
/// passphrase (`wallet show`).
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

/// The file as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletFile {
    format: String,
    version: u32,
    kdf: KdfParams,
    cipher: CipherParams,
    ciphertext: String,
    public: PublicInfo,
}

/// The part of the header that is authenticated as associated data.
#[derive(Serialize)]
struct Header<'a> {
    format: &'a str,
    version: u32,
    kdf: &'a KdfParams,
    cipher_alg: &'a str,
}

/// An unlocked wallet. Seeds live in `SigningKey`s (zeroized on drop) and
/// the derived AEAD key in a `Zeroizing` buffer; the passphrase itself is
/// not kept.
pub struct Wallet {
    path: PathBuf,
    kdf: KdfParams,
    aead_key: Zeroizing<[u8; 32]>,
    /// Public metadata; `keys` is kept parallel to `secrets`.
    public: PublicInfo,
    secrets: Vec<SigningKey>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("path", &self.path)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// Creates a new wallet at `path` with one key (the given seed, or a
    /// fresh one) named `key-1`. Refuses to replace an existing file unless
    /// `force`; a replaced file is first renamed to `<path>.bak-<unix>`.
    pub fn create(
        path: &Path,
        passphrase: &[u8],
        seed: Option<Zeroizing<[u8; 32]>>,
        cost: KdfCost,
        force: bool,
        now: u64,
    ) -> Result<Wallet, WalletError> {
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
        let aead_key = derive_key(&kdf, passphrase)?;
        let key = match seed {
            Some(seed) => SigningKey::from_bytes(&seed),
            None => SigningKey::generate(&mut OsRng),
        };
        let mut wallet = Wallet {
            path: path.to_path_buf(),
            kdf,
            aead_key,
            public: PublicInfo::default(),
            secrets: vec![],
        };
        wallet.push_key("key-1".into(), key, KeyStatus::Active, now)?;
        wallet.save()?;
        Ok(wallet)
    }

    /// Reads the public part without the passphrase.
    pub fn read_public(path: &Path) -> Result<PublicInfo, WalletError> {
        Ok(read_file(path)?.public)
    }

    /// Unlocks the wallet at `path`.
    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Wallet, WalletError> {
        let file = read_file(path)?;
        let corrupt = |reason: &str| WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        let aead_key = derive_key(&file.kdf, passphrase)?;
        let nonce = URL_SAFE_NO_PAD
            .decode(&file.cipher.nonce)
            .map_err(|_| corrupt("cipher.nonce is not base64url"))?;
        if nonce.len() != 24 {
            return Err(corrupt("cipher.nonce must be 24 bytes"));
        }
        let ciphertext = URL_SAFE_NO_PAD
            .decode(&file.ciphertext)
            .map_err(|_| corrupt("ciphertext is not base64url"))?;
        let aad = header_bytes(&file.kdf)?;
        let cipher = XChaCha20Poly1305::new((&*aead_key).into());
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| WalletError::WrongPassphrase(path.to_path_buf()))?,
        );
        let seeds = plain
            .strip_prefix(SECRET_MAGIC.as_slice())
            .ok_or_else(|| corrupt("unknown secret layout"))?;
        if seeds.len() % SEED_LEN != 0 || seeds.len() / SEED_LEN != file.public.keys.len() {
            return Err(corrupt("the encrypted keys do not match public.keys"));
        }
        let mut secrets = Vec::with_capacity(file.public.keys.len());
        for (chunk, info) in seeds.chunks_exact(SEED_LEN).zip(&file.public.keys) {
            let mut seed = Zeroizing::new([0u8; SEED_LEN]);
            seed.copy_from_slice(chunk);
            let key = SigningKey::from_bytes(&seed);
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
            kdf: file.kdf,
            aead_key,
            public: file.public,
            secrets,
        })
    }

    /// Encrypts and writes the wallet atomically (fresh nonce each time).
    pub fn save(&self) -> Result<(), WalletError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(
            SECRET_MAGIC.len() + SEED_LEN * self.secrets.len(),
        ));
        plain.extend_from_slice(SECRET_MAGIC);
        for key in &self.secrets {
            plain.extend_from_slice(key.as_bytes());
        }
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let aad = header_bytes(&self.kdf)?;
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
        let file = WalletFile {
            format: WALLET_FORMAT.into(),
            version: WALLET_VERSION,
            kdf: self.kdf.clone(),
            cipher: CipherParams {
                alg: "xchacha20poly1305".into(),
                nonce: URL_SAFE_NO_PAD.encode(nonce),
            },
            ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
            public: self.public.clone(),
        };
        let mut bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| WalletError::Kdf(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn public(&self) -> &PublicInfo {
        &self.public
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

/// The AEAD key: argon2id over the passphrase with the stored parameters.
fn derive_key(kdf: &KdfParams, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, WalletError> {
    if kdf.alg != "argon2id" || kdf.version != 19 {
        return Err(WalletError::Kdf(format!(
            "unsupported KDF {} v{}",
            kdf.alg, kdf.version
        )));
    }
    if kdf.m_cost_kib > MAX_M_COST_KIB || kdf.t_cost > MAX_T_COST || kdf.p_cost > MAX_P_COST {
        return Err(WalletError::Kdf(
            "KDF parameters are beyond the supported bounds".into(),
        ));
    }
    let salt = URL_SAFE_NO_PAD
        .decode(&kdf.salt)
        .map_err(|_| WalletError::Kdf("salt is not base64url".into()))?;
    let params = Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| WalletError::Kdf(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, &salt, &mut *out)
        .map_err(|e| WalletError::Kdf(e.to_string()))?;
    Ok(out)
}

fn header_bytes(kdf: &KdfParams) -> Result<Vec<u8>, WalletError> {
    serde_json::to_vec(&Header {
        format: WALLET_FORMAT,
        version: WALLET_VERSION,
        kdf,
        cipher_alg: "xchacha20poly1305",
    })
    .map_err(|e| WalletError::Kdf(e.to_string()))
}

fn read_file(path: &Path) -> Result<WalletFile, WalletError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WalletError::NotFound(path.to_path_buf()))
        }
        Err(e) => return Err(WalletError::Io(path.to_path_buf(), e)),
    };
    // Look at format and version before the strict parse, so a newer file
    // says "newer version" rather than "unknown field".
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if probe.get("format").and_then(|f| f.as_str()) != Some(WALLET_FORMAT) {
        return Err(WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: "not a didmesh wallet".into(),
        });
    }
    match probe.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(WALLET_VERSION) => {}
        Some(v) => {
            return Err(WalletError::Version(
                path.to_path_buf(),
                u32::try_from(v).unwrap_or(u32::MAX),
            ))
        }
        None => {
            return Err(WalletError::Corrupt {
                path: path.to_path_buf(),
                reason: "no version".into(),
            })
        }
    }
    let file: WalletFile = serde_json::from_value(probe).map_err(|e| WalletError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.public.keys.is_empty() {
        return Err(WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: "no keys".into(),
        });
    }
    Ok(file)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// file: a temporary file in the same folder (mode 0600), fsync, rename,
/// fsync of the folder.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WalletError> {
    let io = |e| WalletError::Io(path.to_path_buf(), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        create_private_dir(&dir).map_err(io)?;
    }
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "wallet.json".into());
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        // `mode` only applies when the file is created; a stale temporary
        // file from a crash must not keep looser permissions.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
            // Best effort: makes the rename itself durable.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
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
        assert!(matches!(err, WalletError::Corrupt { .. }), "{err}");
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
