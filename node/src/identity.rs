//! The node's member key (the key that signs tokens) and the network
//! genesis file.
//!
//! The member key is kept in the data folder as `member-key.pem`
//! (PKCS#8, RFC 8410, mode 0600) so any standard tool can read it. Its JWK
//! `kid` is the RFC 7638 thumbprint, so every verifier computes the same id.
//! The RS256 and ES256 ID-token keys next to it are [`crate::token_keys`]'.
//!
//! What a genesis is and how its network id is derived lives in
//! [`did_core::network`]; this module reads and writes `genesis.json`
//! ([`GenesisFile`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::network::NetworkError;
use did_core::PublicKey;
use ed25519_dalek::SigningKey;
use sha2::Digest as _;
use std::io::Write as _;
use std::path::Path;

/// PKCS#8 v1 prefix for a bare Ed25519 seed (RFC 8410 §7).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

pub const MEMBER_KEY_FILE: &str = "member-key.pem";
pub const GENESIS_FILE: &str = "genesis.json";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a PKCS#8 Ed25519 private key in PEM")]
    BadKey(String),
    /// An ID-token key file (`member-rsa.pem`, `member-p256.pem`) that is
    /// not what the node writes: the path and why.
    #[error("{0}: {1}")]
    BadTokenKey(String, &'static str),
    #[error("{0}: not a valid genesis file: {1}")]
    BadGenesis(String, String),
    #[error("invalid genesis: {0}")]
    Genesis(#[from] NetworkError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The PKCS#8 DER of an Ed25519 seed.
pub fn pkcs8_der(key: &SigningKey) -> Vec<u8> {
    let mut der = PKCS8_ED25519_PREFIX.to_vec();
    der.extend_from_slice(&key.to_bytes());
    der
}

/// A PKCS#8 private key in PEM (RFC 7468 §10: label `PRIVATE KEY`, base64
/// lines of 64 characters, as OpenSSL writes and expects them).
pub(crate) fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    // base64 is ASCII, so every 64-byte chunk is a whole str.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// The DER inside a PEM file (any line length; header lines skipped).
pub(crate) fn pem_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn parse_pem(text: &str) -> Option<SigningKey> {
    let der = pem_der(text)?;
    let seed = der.strip_prefix(&PKCS8_ED25519_PREFIX)?;
    let seed: [u8; 32] = seed.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

/// Loads the member key from `dir`, creating it on first start.
pub fn load_or_create_member_key(dir: &Path) -> Result<SigningKey, IdentityError> {
    let path = dir.join(MEMBER_KEY_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        return parse_pem(&text).ok_or_else(|| IdentityError::BadKey(path.display().to_string()));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_private(&path, pem(&pkcs8_der(&key)).as_bytes())?;
    Ok(key)
}

/// Writes a secret file readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// JWK of an Ed25519 public key (RFC 8037 §2).
pub fn jwk(key: &PublicKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
        "kid": kid(key),
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// RFC 7638 JWK thumbprint: SHA-256 of the required members in
/// lexicographic order, base64url.
pub fn kid(key: &PublicKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

pub use did_core::member::Member;
pub use did_core::network::Genesis;

/// Reading and writing `genesis.json` (pretty JSON of [`Genesis`]).
pub trait GenesisFile: Sized {
    /// Reads a genesis and checks it ([`Genesis::check`]): a file whose
    /// `network_id` does not match its content is refused.
    fn load(path: &Path) -> Result<Self, IdentityError>;
    /// Writes the genesis (not atomically: it is written once, by
    /// `init-network` or at a development node's first start).
    fn save(&self, path: &Path) -> Result<(), IdentityError>;
}

impl GenesisFile for Genesis {
    fn load(path: &Path) -> Result<Genesis, IdentityError> {
        let bad = |why: String| IdentityError::BadGenesis(path.display().to_string(), why);
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let g: Genesis = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        g.check().map_err(|e| bad(e.to_string()))?;
        Ok(g)
    }

    fn save(&self, path: &Path) -> Result<(), IdentityError> {
        // An encoding failure is an error, never an empty file.
        let text = serde_json::to_string_pretty(self).map_err(|e| {
            IdentityError::BadGenesis(path.display().to_string(), format!("cannot encode: {e}"))
        })?;
        std::fs::write(path, text + "\n").map_err(io(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8037_thumbprint_vector() {
        // RFC 8037 Appendix A.3: thumbprint of the example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = PublicKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(kid(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn genesis_files_round_trip_and_a_tampered_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENESIS_FILE);
        let key = SigningKey::from_bytes(&[5; 32]);
        let me = Member::from_key("dev", did_core::keys::public_of(&key));
        let g = Genesis::new("https://didmesh.local", vec![me], 1, 1_790_000_000).unwrap();
        g.save(&path).unwrap();
        assert_eq!(Genesis::load(&path).unwrap(), g);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("https://didmesh.local", "https://evil.example"),
        )
        .unwrap();
        let err = Genesis::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("network_id does not match its content"),
            "{err}"
        );
    }

    #[test]
    fn pem_round_trip() {
        let k = SigningKey::from_bytes(&[9; 32]);
        assert_eq!(
            parse_pem(&pem(&pkcs8_der(&k))).unwrap().to_bytes(),
            k.to_bytes()
        );
    }
}
