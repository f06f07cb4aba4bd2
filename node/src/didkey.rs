//! `did:key` resolution through the `ssi` crate's did:key method, so a
//! wallet holding only a did:key can log in without registering.

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
    let id = did
        .strip_prefix("did:key:")
        .ok_or_else(|| DidKeyError::Invalid("not a did:key".into()))?;
    if id.len() > 128 {
        return Err(DidKeyError::Invalid("identifier too long".into()));
    }
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
    let key = PublicKey::from_multibase(multibase).map_err(|_| DidKeyError::NotEd25519)?;
    Ok((doc, key))
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
    fn refuses_garbage_and_non_ed25519() {
        assert!(super::resolve("did:key:zzzz").is_err());
        // a secp256k1 did:key (multicodec 0xe7)
        assert!(
            super::resolve("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme").is_err()
        );
    }
}
