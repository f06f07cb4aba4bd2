//! `did:key` resolution through the `ssi` crate's did:key method, so a
//! wallet holding only a did:key can log in without registering.
//!
//! Every identifier is checked here before ssi sees it (the did:key method
//! spec, <https://w3c-ccg.github.io/did-key-spec/>, §3.1 and the Ed25519
//! section): multibase `z` (base58btc), multicodec `0xed 0x01`
//! (ed25519-pub), exactly 32 key bytes, a valid Ed25519 point, and the
//! identifier must be the canonical spelling of that key. ssi's did:key
//! method panics on some malformed identifiers (`did:key:a%20b`,
//! `did:key:z6Mk\0`), so it only ever gets one this module built itself.

use did_core::PublicKey;
use ssi_dids_core::resolution::{DIDMethodResolver as _, Options};

#[derive(Debug, thiserror::Error)]
pub enum DidKeyError {
    #[error("invalid did:key: {0}")]
    Invalid(String),
    #[error("did:key is not an Ed25519 key; didmesh logins use Ed25519")]
    NotEd25519,
}

/// Resolves a `did:key` to its DID document (JSON, as ssi renders it) and
/// the Ed25519 key of its authentication method.
pub fn resolve(did: &str) -> Result<(serde_json::Value, PublicKey), DidKeyError> {
    let key = validate(did)?;
    let canonical = key.did_key();
    let id = canonical
        .strip_prefix("did:key:")
        .ok_or_else(|| DidKeyError::Invalid("not a did:key".into()))?;
    // The did:key method does no IO: its future completes on first poll.
    let output = futures::executor::block_on(
        did_method_key::DIDKey.resolve_method_representation(id, Options::default()),
    )
    .map_err(|e| DidKeyError::Invalid(e.to_string()))?;
    let doc: serde_json::Value = serde_json::from_slice(&output.document)
        .map_err(|e| DidKeyError::Invalid(e.to_string()))?;
    let auth_ref = doc["authentication"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let vm = doc["verificationMethod"]
        .as_array()
        .and_then(|vms| vms.iter().find(|vm| vm["id"] == auth_ref.as_str()))
        .ok_or_else(|| DidKeyError::Invalid("no authentication method".into()))?;
    let multibase = vm["publicKeyMultibase"]
        .as_str()
        .ok_or(DidKeyError::NotEd25519)?;
    let resolved = PublicKey::from_multibase(multibase).map_err(|_| DidKeyError::NotEd25519)?;
    if resolved != key {
        return Err(DidKeyError::Invalid(
            "the resolved document names another key".into(),
        ));
    }
    Ok((doc, key))
}

/// The Ed25519 key a `did:key` names, or why it names none (module doc).
pub fn validate(did: &str) -> Result<PublicKey, DidKeyError> {
    use did_core::keys::KeyError;
    let id = did
        .strip_prefix("did:key:")
        .ok_or_else(|| DidKeyError::Invalid("not a did:key".into()))?;
    // z + base58btc of 34 bytes is 48 characters; anything much longer is
    // not an Ed25519 key and need not be decoded.
    if id.len() > 64 {
        return Err(DidKeyError::Invalid("identifier too long".into()));
    }
    let key = PublicKey::from_multibase(id).map_err(|e| match e {
        KeyError::NotMultibase => {
            DidKeyError::Invalid("the key must be multibase base58btc (start with 'z')".into())
        }
        KeyError::BadBase58 => DidKeyError::Invalid("the key is not valid base58btc".into()),
        KeyError::BadPoint => DidKeyError::Invalid("the key is not a valid Ed25519 point".into()),
        _ => DidKeyError::NotEd25519,
    })?;
    // One spelling per key: no leading-zero or other variants reach ssi.
    if key.did_key() != did {
        return Err(DidKeyError::Invalid(
            "not the canonical encoding of its key".into(),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolves_an_ed25519_did_key() {
        let key = did_core::keys::public_of(&ed25519_dalek::SigningKey::from_bytes(&[3; 32]));
        let (doc, resolved) = super::resolve(&key.did_key()).unwrap();
        assert_eq!(resolved, key);
        assert_eq!(doc["id"], key.did_key());
    }

    #[test]
    fn refuses_what_made_ssi_panic_with_a_reason() {
        for (did, why) in [
            ("did:key:a b", "start with 'z'"),
            ("did:key:a%20b", "start with 'z'"),
            ("did:key:z6Mk\u{0}", "base58btc"),
            ("did:key:z", "not an Ed25519"),
            ("did:key:", "start with 'z'"),
            ("did:key:z6Mk", "not an Ed25519"),
        ] {
            let err = super::resolve(did).unwrap_err().to_string();
            assert!(err.contains(why), "{did:?}: {err}");
        }
        // 32 bytes that are not a point (about half of all y have no x).
        let y = (2u8..)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        let mut bytes = vec![0xed, 0x01];
        bytes.extend(y);
        let did = format!("did:key:z{}", bs58_encode(&bytes));
        let err = super::resolve(&did).unwrap_err().to_string();
        assert!(err.contains("Ed25519 point"), "{err}");
    }

    fn bs58_encode(bytes: &[u8]) -> String {
        // The test builds its own base58 (no extra dependency): big-number
        // division by 58.
        const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        let mut digits: Vec<u8> = vec![];
        for &b in bytes {
            let mut carry = b as u32;
            for d in digits.iter_mut() {
                carry += (*d as u32) << 8;
                *d = (carry % 58) as u8;
                carry /= 58;
            }
            while carry > 0 {
                digits.push((carry % 58) as u8);
                carry /= 58;
            }
        }
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        std::iter::repeat_n(b'1', zeros)
            .chain(digits.iter().rev().map(|&d| ALPHABET[d as usize]))
            .map(char::from)
            .collect()
    }

    #[test]
    fn refuses_garbage_and_non_ed25519() {
        assert!(super::resolve("did:key:zzzz").is_err());
        // a secp256k1 did:key (multicodec 0xe7)
        assert!(
            super::resolve("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme").is_err()
        );
    }
}
