//! Ed25519 keys as didmesh writes them: multibase (`z` + base58btc of the
//! multicodec `0xed01` + the 32 key bytes), exactly as `did:key` does
//! (W3C did:key spec, §3.1.1 "Ed25519").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Multicodec varint for an Ed25519 public key (`ed25519-pub`, 0xed).
pub const ED25519_PUB_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// Why a key or signature string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key must be multibase base58btc (start with 'z')")]
    NotMultibase,
    #[error("public key is not valid base58btc")]
    BadBase58,
    #[error("public key is not an Ed25519 multicodec key (0xed01 + 32 bytes)")]
    NotEd25519,
    #[error("public key is not a valid Ed25519 point")]
    BadPoint,
    #[error("signature must be base64url of 64 bytes")]
    BadSignatureEncoding,
    #[error("not a did:key identifier")]
    NotDidKey,
}

/// An Ed25519 public key. Serialized as its multibase string, which is
/// computed once, when the key is made: a key is written into canonical
/// bytes (CIDs, signing input) many times per op, and base58 is quadratic.
#[derive(Clone, Copy)]
pub struct PublicKey {
    key: VerifyingKey,
    mb: Multibase,
}

/// `z` + base58btc of 34 bytes: at most 1 + 47 ASCII characters.
#[derive(Clone, Copy)]
struct Multibase {
    len: u8,
    buf: [u8; 48],
}

impl Multibase {
    fn of(key: &VerifyingKey) -> Multibase {
        let mut raw = [0u8; 34];
        raw[..2].copy_from_slice(&ED25519_PUB_MULTICODEC);
        raw[2..].copy_from_slice(key.as_bytes());
        let mut buf = [0u8; 48];
        buf[0] = b'z';
        // 34 bytes never need more than 47 base58 digits.
        let len = bs58::encode(raw).onto(&mut buf[1..]).unwrap_or(0);
        Multibase {
            len: (len + 1) as u8,
            buf,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key.hash(h)
    }
}

impl PublicKey {
    /// Parses `z` + base58btc(0xed01 ‖ key).
    pub fn from_multibase(s: &str) -> Result<Self, KeyError> {
        let body = s.strip_prefix('z').ok_or(KeyError::NotMultibase)?;
        if body.len() > 64 {
            return Err(KeyError::NotEd25519);
        }
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|_| KeyError::BadBase58)?;
        let key = bytes
            .strip_prefix(&ED25519_PUB_MULTICODEC)
            .ok_or(KeyError::NotEd25519)?;
        let arr: [u8; 32] = key.try_into().map_err(|_| KeyError::NotEd25519)?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::BadPoint)?;
        // `s` is already the encoding: base58 is one-to-one on byte strings
        // that do not start with a zero byte (0xed here), so re-encoding
        // would give `s` back.
        let mut mb = Multibase {
            len: s.len() as u8,
            buf: [0u8; 48],
        };
        match mb.buf.get_mut(..s.len()) {
            Some(dst) => dst.copy_from_slice(s.as_bytes()),
            None => mb = Multibase::of(&key),
        }
        Ok(PublicKey { key, mb })
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey::from)
            .map_err(|_| KeyError::BadPoint)
    }

    pub fn to_multibase(&self) -> String {
        self.multibase().to_string()
    }

    /// The multibase string, without allocating.
    pub fn multibase(&self) -> &str {
        self.mb.as_str()
    }

    /// The `did:key` identifier of this key.
    pub fn did_key(&self) -> String {
        format!("did:key:{}", self.multibase())
    }

    /// Parses a `did:key:z6Mk…` identifier (Ed25519 only).
    pub fn from_did_key(did: &str) -> Result<Self, KeyError> {
        let mb = did.strip_prefix("did:key:").ok_or(KeyError::NotDidKey)?;
        Self::from_multibase(mb)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Strict verification (rejects small-order keys and malleable
    /// signatures, RFC 8032 §5.1.7 plus the dalek `verify_strict` checks).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        self.key.verify_strict(msg, sig).is_ok()
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        PublicKey {
            key,
            mb: Multibase::of(&key),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.multibase())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.multibase())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.multibase())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_multibase(&s).map_err(serde::de::Error::custom)
    }
}

/// Encodes a signature as unpadded base64url (RFC 4648 §5).
pub fn signature_to_b64(sig: &Signature) -> String {
    URL_SAFE_NO_PAD.encode(sig.to_bytes())
}

/// Decodes an unpadded base64url signature of exactly 64 bytes.
pub fn signature_from_b64(s: &str) -> Result<Signature, KeyError> {
    if s.len() > 90 {
        return Err(KeyError::BadSignatureEncoding);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| KeyError::BadSignatureEncoding)?;
    let arr: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::BadSignatureEncoding)?;
    Ok(Signature::from_bytes(&arr))
}

/// Signs `msg` and returns the base64url signature.
pub fn sign_b64(key: &SigningKey, msg: &[u8]) -> String {
    signature_to_b64(&key.sign(msg))
}

/// The public key of a signing key, in didmesh's form.
pub fn public_of(key: &SigningKey) -> PublicKey {
    PublicKey::from(key.verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multibase kept beside a key is the one base58 gives, whether the
    /// key was parsed from a string or made from bytes; a non-canonical
    /// spelling (a leading '1' is a zero byte) is refused, never kept.
    #[test]
    fn the_kept_multibase_is_the_encoding() {
        for seed in 0u8..=255 {
            let k = SigningKey::from_bytes(&[seed; 32]).verifying_key();
            let mut raw = ED25519_PUB_MULTICODEC.to_vec();
            raw.extend_from_slice(k.as_bytes());
            let slow = format!("z{}", bs58::encode(&raw).into_string());
            let made = PublicKey::from(k);
            assert_eq!(made.multibase(), slow);
            let parsed = PublicKey::from_multibase(&slow).unwrap();
            assert_eq!(parsed.multibase(), slow);
            assert_eq!(parsed, made);
            assert_eq!(
                serde_json::to_string(&parsed).unwrap(),
                format!("\"{slow}\"")
            );
            let padded = format!("z1{}", &slow[1..]);
            assert!(PublicKey::from_multibase(&padded).is_err());
        }
    }
}
