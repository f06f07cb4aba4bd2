//! Passkeys (WebAuthn credentials, ES256) as `authentication` keys of a
//! DID, and the verification of a WebAuthn assertion over a login
//! challenge (PROTOCOL.md, "Passkeys").
//!
//! A passkey is registered by the DID's owner in a signed op, like any key:
//! the browser reads the credential's public key at creation
//! (`AuthenticatorAttestationResponse.getPublicKey()`, SPKI) and the op
//! carries it as a P-256 Multikey (`zDn…`, multicodec `p256-pub` 0x1200,
//! compressed point, as did:key writes it). The node never parses CBOR
//! attestation: who vouches for the key is the DID owner's signature, not
//! the authenticator's maker.
//!
//! An assertion is checked as WebAuthn Level 2 §7.2 says, with `p256`
//! (RustCrypto) for the signature and a small parser for the 37 fixed
//! bytes of authenticator data (no extensions are asked for, so none are
//! read):
//!
//! * the credential id is one of the DID's passkeys;
//! * `clientDataJSON.type` is `webauthn.get`, its `challenge` is
//!   base64url(SHA-256(login message)) — the node's one-time challenge —
//!   its `origin` is one the node accepts, and it is not cross-origin;
//! * the authenticator data's `rpIdHash` is SHA-256 of the RP ID and its
//!   user-present flag is set;
//! * the ECDSA signature verifies over `authData ‖ SHA-256(clientDataJSON)`.
//!
//! The signature counter is returned; tracking it (a clone detector) is the
//! node's state, not the ledger's.

use crate::op::OpError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Multicodec varint of a compressed P-256 public key (`p256-pub`, 0x1200).
pub const P256_PUB_MULTICODEC: [u8; 2] = [0x80, 0x24];
/// Longest credential id accepted (WebAuthn allows 1023; authenticators
/// use 16-64).
pub const MAX_CREDENTIAL_ID: usize = 255;
/// Passkeys one DID may hold.
pub const MAX_PASSKEYS: usize = 5;

/// A P-256 public key, serialized as a Multikey (`zDn…`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct P256Key(VerifyingKey);

impl P256Key {
    pub fn from_multibase(s: &str) -> Result<P256Key, &'static str> {
        let body = s
            .strip_prefix('z')
            .ok_or("P-256 key must be multibase base58btc")?;
        if body.len() > 64 {
            return Err("P-256 key too long");
        }
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|_| "P-256 key is not base58btc")?;
        let point = bytes
            .strip_prefix(&P256_PUB_MULTICODEC)
            .ok_or("not a p256-pub multicodec key (0x1200)")?;
        if point.len() != 33 {
            return Err("P-256 key must be a compressed point");
        }
        VerifyingKey::from_sec1_bytes(point)
            .map(P256Key)
            .map_err(|_| "not a point on P-256")
    }

    /// From a SEC1 point (compressed or not).
    pub fn from_sec1(bytes: &[u8]) -> Result<P256Key, &'static str> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(P256Key)
            .map_err(|_| "not a point on P-256")
    }

    pub fn to_multibase(&self) -> String {
        let point = self.0.to_encoded_point(true);
        let mut buf = P256_PUB_MULTICODEC.to_vec();
        buf.extend_from_slice(point.as_bytes());
        format!("z{}", bs58::encode(buf).into_string())
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl fmt::Debug for P256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P256Key({})", self.to_multibase())
    }
}

impl Serialize for P256Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_multibase())
    }
}

impl<'de> Deserialize<'de> for P256Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        P256Key::from_multibase(&s).map_err(serde::de::Error::custom)
    }
}

/// A passkey in a DID state: an `authentication` key that signs through
/// WebAuthn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passkey {
    /// Fragment id (`passkey-1`), shares the namespace of verification
    /// methods and services.
    pub id: String,
    /// The WebAuthn credential id, base64url without padding.
    pub credential_id: String,
    pub public_key_multibase: P256Key,
}

impl Passkey {
    pub(crate) fn check(&self) -> Result<(), OpError> {
        let ok = URL_SAFE_NO_PAD
            .decode(&self.credential_id)
            .map(|b| {
                (16..=MAX_CREDENTIAL_ID).contains(&b.len())
                    && URL_SAFE_NO_PAD.encode(&b) == self.credential_id
            })
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(OpError::Invalid(format!(
                "passkey {}: credential_id must be base64url of 16-{MAX_CREDENTIAL_ID} bytes",
                self.id
            )))
        }
    }
}

/// A WebAuthn assertion as the browser returns it, every field base64url
/// (`PublicKeyCredential.rawId` and the `AuthenticatorAssertionResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    pub credential_id: String,
    pub authenticator_data: String,
    pub client_data_json: String,
    pub signature: String,
    /// The credential's user handle (the DID, for a passkey didmesh made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
}

/// What the relying party (the node) expects of an assertion.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The raw challenge bytes (SHA-256 of the login message).
    pub challenge: &'a [u8],
    /// Origins the page may run on (`scheme://host[:port]`).
    pub origins: &'a [String],
    pub rp_id: &'a str,
}

/// A checked assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<'a> {
    pub passkey: &'a Passkey,
    /// The authenticator's signature counter (0 = it keeps none).
    pub sign_count: u32,
    /// User verified (PIN or biometric), flag UV.
    pub user_verified: bool,
}

/// Why an assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("passkey assertion refused: {0}")]
pub struct AssertionError(pub &'static str);

/// The challenge a passkey signs for a login message.
pub fn challenge_for(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

fn b64(field: &str, max: usize) -> Result<Vec<u8>, AssertionError> {
    if field.len() > max * 4 / 3 + 4 {
        return Err(AssertionError("a field is too long"));
    }
    URL_SAFE_NO_PAD
        .decode(field.trim_end_matches('='))
        .map_err(|_| AssertionError("a field is not base64url"))
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: bool,
}

/// Verifies `a` against the passkeys of a DID (module doc).
pub fn verify<'a>(
    passkeys: &'a [Passkey],
    a: &Assertion,
    want: &Expected<'_>,
) -> Result<Verified<'a>, AssertionError> {
    let passkey = passkeys
        .iter()
        .find(|p| p.credential_id == a.credential_id.trim_end_matches('='))
        .ok_or(AssertionError(
            "the credential is not a passkey of this DID",
        ))?;
    let client_data_raw = b64(&a.client_data_json, 4096)?;
    let client_data: ClientData = serde_json::from_slice(&client_data_raw)
        .map_err(|_| AssertionError("clientDataJSON is not valid JSON"))?;
    if client_data.kind != "webauthn.get" {
        return Err(AssertionError("clientDataJSON.type is not webauthn.get"));
    }
    if client_data.challenge.trim_end_matches('=') != URL_SAFE_NO_PAD.encode(want.challenge) {
        return Err(AssertionError(
            "the challenge is not this login's challenge",
        ));
    }
    if !want.origins.contains(&client_data.origin) {
        return Err(AssertionError("the origin is not one this network accepts"));
    }
    if client_data.cross_origin {
        return Err(AssertionError("cross-origin assertions are not accepted"));
    }
    let auth_data = b64(&a.authenticator_data, 1024)?;
    if auth_data.len() < 37 {
        return Err(AssertionError(
            "authenticator data is shorter than 37 bytes",
        ));
    }
    let rp_id_hash: [u8; 32] = Sha256::digest(want.rp_id.as_bytes()).into();
    if auth_data[..32] != rp_id_hash {
        return Err(AssertionError("the RP ID is not this network's"));
    }
    let flags = auth_data[32];
    if flags & 0x01 == 0 {
        return Err(AssertionError("the user was not present (UP flag)"));
    }
    let sign_count =
        u32::from_be_bytes([auth_data[33], auth_data[34], auth_data[35], auth_data[36]]);
    let sig_der = b64(&a.signature, 128)?;
    let sig = Signature::from_der(&sig_der)
        .map_err(|_| AssertionError("the signature is not DER ECDSA"))?;
    let mut signed = auth_data.clone();
    signed.extend_from_slice(&Sha256::digest(&client_data_raw));
    passkey
        .public_key_multibase
        .0
        .verify(&signed, &sig)
        .map_err(|_| AssertionError("the signature does not verify with the passkey"))?;
    Ok(Verified {
        passkey,
        sign_count,
        user_verified: flags & 0x04 != 0,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;

    /// A software authenticator: what a browser with a virtual
    /// authenticator returns.
    pub fn assert_with(
        key: &SigningKey,
        cred: &[u8],
        challenge: &[u8],
        origin: &str,
        rp_id: &str,
        count: u32,
    ) -> Assertion {
        let cd = format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
            URL_SAFE_NO_PAD.encode(challenge)
        );
        let mut ad = Sha256::digest(rp_id.as_bytes()).to_vec();
        ad.push(0x05);
        ad.extend_from_slice(&count.to_be_bytes());
        let mut signed = ad.clone();
        signed.extend_from_slice(&Sha256::digest(cd.as_bytes()));
        let sig: Signature = key.sign(&signed);
        Assertion {
            credential_id: URL_SAFE_NO_PAD.encode(cred),
            authenticator_data: URL_SAFE_NO_PAD.encode(&ad),
            client_data_json: URL_SAFE_NO_PAD.encode(cd.as_bytes()),
            signature: URL_SAFE_NO_PAD.encode(sig.to_der().as_bytes()),
            user_handle: None,
        }
    }

    fn setup() -> (SigningKey, Vec<Passkey>) {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pk = P256Key(*sk.verifying_key());
        let pass = Passkey {
            id: "passkey-1".into(),
            credential_id: URL_SAFE_NO_PAD.encode([1u8; 16]),
            public_key_multibase: pk,
        };
        (sk, vec![pass])
    }

    #[test]
    fn multibase_round_trips_as_did_key_writes_it() {
        let (_, p) = setup();
        let mb = p[0].public_key_multibase.to_multibase();
        assert!(mb.starts_with("zDn"), "{mb}");
        assert_eq!(
            P256Key::from_multibase(&mb).unwrap(),
            p[0].public_key_multibase
        );
    }

    #[test]
    fn an_assertion_verifies_only_for_its_challenge_origin_and_rp() {
        let (sk, keys) = setup();
        let origins = vec!["http://localhost:7000".to_string()];
        let want = Expected {
            challenge: b"challenge-bytes-0123456789abcdef",
            origins: &origins,
            rp_id: "localhost",
        };
        let good = assert_with(&sk, &[1u8; 16], want.challenge, &origins[0], "localhost", 3);
        let v = verify(&keys, &good, &want).unwrap();
        assert_eq!(v.sign_count, 3);
        assert!(v.user_verified);

        let other_challenge = assert_with(&sk, &[1u8; 16], b"other", &origins[0], "localhost", 3);
        assert!(verify(&keys, &other_challenge, &want).is_err());
        let evil_origin = assert_with(
            &sk,
            &[1u8; 16],
            want.challenge,
            "https://evil.example",
            "localhost",
            3,
        );
        assert!(verify(&keys, &evil_origin, &want).is_err());
        let other_rp = assert_with(
            &sk,
            &[1u8; 16],
            want.challenge,
            &origins[0],
            "evil.example",
            3,
        );
        assert!(verify(&keys, &other_rp, &want).is_err());
        let unknown_cred =
            assert_with(&sk, &[2u8; 16], want.challenge, &origins[0], "localhost", 3);
        assert!(verify(&keys, &unknown_cred, &want).is_err());
        let thief = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let forged = assert_with(
            &thief,
            &[1u8; 16],
            want.challenge,
            &origins[0],
            "localhost",
            3,
        );
        assert!(verify(&keys, &forged, &want).is_err());
        let mut tampered = good.clone();
        tampered.authenticator_data = URL_SAFE_NO_PAD.encode([0u8; 37]);
        assert!(verify(&keys, &tampered, &want).is_err());
    }
}
