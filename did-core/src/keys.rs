//! Ed25519 keys as didmesh writes them: multibase (`z` + base58btc of the
//! multicodec `0xed01` + the 32 key bytes), exactly as `did:key` does
//! (W3C did:key spec, §3.1.1 "Ed25519").

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity as _;
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
        let key = points::decompress(&arr).ok_or(KeyError::BadPoint)?;
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
        points::decompress(bytes)
            .map(PublicKey::from)
            .ok_or(KeyError::BadPoint)
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

    /// Strict verification: exactly dalek's `verify_strict` (RFC 8032
    /// §5.1.7 with a canonical s, refusing small-order keys and R), one
    /// square root cheaper.
    ///
    /// `verify_strict` decompresses R only to refuse a small-order one,
    /// then checks `compress([s]B - [k]A) == R` byte for byte. That
    /// equality already implies that R is the canonical encoding of a
    /// point, and then R has small order exactly when its bytes are one of
    /// the eight canonical encodings of the small-order points. So: the
    /// byte check against [`SMALL_ORDER_ENCODINGS`], the key's own
    /// small-order check, and dalek's cofactorless `verify` (the same
    /// equation and the same canonical-s rule). `tests/verify_strict.rs`
    /// checks the two agree on valid, forged, torsion-tweaked and
    /// small-order inputs.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        use ed25519_dalek::Verifier as _;
        if SMALL_ORDER_ENCODINGS.contains(sig.r_bytes()) || self.key.is_weak() {
            return false;
        }
        self.key.verify(msg, sig).is_ok()
    }
}

impl PublicKey {
    /// The rule for an op's signatures (PROTOCOL.md, "Signatures"): ZIP-215,
    /// the cofactored check `[8]([s]B - [k]A - R) = 0` with a canonical s
    /// and `k = SHA-512(R || A || msg)` over the bytes as given, plus the
    /// key refusal every didmesh check makes (no small-order key: anyone
    /// could sign for one). Unlike [`PublicKey::verify`]'s cofactorless
    /// equation it has a batch form that accepts exactly what single
    /// checks accept ([`verify_op_batch`]), so nodes agree on the op set
    /// however their ops were grouped. Every signature `verify` accepts,
    /// this accepts too; the converse fails only for signatures made with
    /// a nonce or key carrying a small-order component, which no honest
    /// signer produces. `tests/verify_op.rs` checks it against
    /// ed25519-consensus, the reference ZIP-215 implementation.
    pub fn verify_op(&self, msg: &[u8], sig: &Signature) -> bool {
        let Some((s, r)) = op_sig_parts(self, sig) else {
            return false;
        };
        let k = challenge(sig, self, msg);
        let minus_a = -self.key.to_edwards();
        let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &minus_a, &s);
        (r - r_prime).mul_by_cofactor().is_identity()
    }
}

/// The canonical s and the decompressed R of `sig` under `key`, or `None`
/// when the key has small order, s is not canonical or R is not a point:
/// the parts of [`PublicKey::verify_op`] that fail before any equation.
fn op_sig_parts(key: &PublicKey, sig: &Signature) -> Option<(Scalar, EdwardsPoint)> {
    if key.key.is_weak() {
        return None;
    }
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes()))?;
    let r = CompressedEdwardsY(*sig.r_bytes()).decompress()?;
    Some((s, r))
}

/// `k = SHA-512(R || A || msg)` reduced mod l (RFC 8032 §5.1.7 step 2).
fn challenge(sig: &Signature, key: &PublicKey, msg: &[u8]) -> Scalar {
    use sha2::Digest as _;
    let mut h = sha2::Sha512::new();
    h.update(sig.r_bytes());
    h.update(key.as_bytes());
    h.update(msg);
    Scalar::from_hash(h)
}

/// [`PublicKey::verify_op`] for many signatures at once: true exactly when
/// every one of them verifies (false positives with probability below
/// 2^-128), at about half the cost per signature for a few dozen. One
/// cofactored equation with random 128-bit weights `z_i` (from the OS, so
/// no signer can grind against them):
/// `[8]( -(sum z_i s_i) B + sum z_i R_i + sum (z_i k_i) A_i ) = 0`, the
/// batch form of ZIP-215 (as in ed25519-consensus and Zcash). A valid
/// signature contributes zero up to torsion, which the cofactor clears, so
/// a batch of valid signatures always passes; a batch that fails says
/// nothing about which failed, so the caller checks them one by one.
pub fn verify_op_batch(items: &[(&PublicKey, Signature, &[u8])]) -> bool {
    use curve25519_dalek::traits::VartimeMultiscalarMul as _;
    let mut weights = vec![0u8; 16 * items.len()];
    if getrandom::getrandom(&mut weights).is_err() {
        // No randomness: the batch proves nothing; check one by one.
        return items.iter().all(|(k, s, m)| k.verify_op(m, s));
    }
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    let mut points = Vec::with_capacity(2 * items.len() + 1);
    let mut b = Scalar::ZERO;
    scalars.push(Scalar::ZERO);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    for ((key, sig, msg), w) in items.iter().zip(weights.chunks_exact(16)) {
        let Some((s, r)) = op_sig_parts(key, sig) else {
            return false;
        };
        let mut wide = [0u8; 32];
        wide[..16].copy_from_slice(w);
        let z = Scalar::from_bytes_mod_order(wide);
        b -= z * s;
        scalars.push(z);
        points.push(r);
        scalars.push(z * challenge(sig, key, msg));
        points.push(key.key.to_edwards());
    }
    scalars[0] = b;
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
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

/// The canonical encodings of the eight points of small order (the
/// identity, one point of order 2, two of order 4, four of order 8); see
/// [`PublicKey::verify`].
pub const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = {
    const fn enc(first: [u8; 31], last: u8) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 31 {
            out[i] = first[i];
            i += 1;
        }
        out[31] = last;
        out
    }
    let mut one = [0u8; 31];
    one[0] = 1;
    let mut minus_one = [0xff; 31];
    minus_one[0] = 0xec;
    const P8: [u8; 31] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03,
    ];
    const Q8: [u8; 31] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc,
    ];
    [
        enc(one, 0x00),
        enc(minus_one, 0x7f),
        enc([0; 31], 0x00),
        enc([0; 31], 0x80),
        enc(P8, 0x7a),
        enc(P8, 0xfa),
        enc(Q8, 0x05),
        enc(Q8, 0x85),
    ]
};

/// Decompressed keys, remembered: an op's keys are parsed at the door,
/// again when its DID's state is rebuilt from sled, and a `create` names
/// its signer twice. Each parse would otherwise pay a field square root
/// (about a fifth of a signature check). Bounded: a shard that fills is
/// cleared. Only valid points are kept.
mod points {
    use ed25519_dalek::VerifyingKey;
    use std::collections::HashMap;
    use std::sync::Mutex;

    const SHARDS: usize = 16;
    const PER_SHARD: usize = 1024;

    type Shard = Mutex<Option<HashMap<[u8; 32], VerifyingKey>>>;

    static CACHE: [Shard; SHARDS] = [const { Mutex::new(None) }; SHARDS];

    pub(super) fn decompress(bytes: &[u8; 32]) -> Option<VerifyingKey> {
        let shard = &CACHE[usize::from(bytes[0]) % SHARDS];
        if let Some(key) = shard
            .lock()
            .ok()
            .and_then(|map| map.as_ref().and_then(|m| m.get(bytes).copied()))
        {
            return Some(key);
        }
        let key = VerifyingKey::from_bytes(bytes).ok()?;
        if let Ok(mut map) = shard.lock() {
            let map = map.get_or_insert_with(HashMap::new);
            if map.len() >= PER_SHARD {
                map.clear();
            }
            map.insert(*bytes, key);
        }
        Some(key)
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
