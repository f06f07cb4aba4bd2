//! DID documents (W3C DID Core 1.0) and DID resolution results (W3C DID
//! Resolution, the shape the Universal Resolver driver binding returns).

use crate::encoding::Cid;
use crate::ledger::DidView;
use crate::op::{DidState, Relationship};
use crate::time::rfc3339;
use serde_json::{json, Map, Value};

pub const DID_CONTEXT: &str = "https://www.w3.org/ns/did/v1";
/// The Multikey context (W3C Controlled Identifiers, `Multikey` type with
/// `publicKeyMultibase`).
pub const MULTIKEY_CONTEXT: &str = "https://w3id.org/security/multikey/v1";
pub const RESOLUTION_CONTEXT: &str = "https://w3id.org/did-resolution/v1";

/// The DID document of `did` in `state`.
///
/// A key with the `authentication` relationship is embedded in
/// `authentication` (W3C DID Core §5.3 allows embedding); a key without it
/// is listed in `verificationMethod`. Other relationships refer to keys by
/// id, so no id is defined twice.
pub fn did_document(did: &str, state: &DidState) -> Value {
    let vm_json = |vm: &crate::op::VerificationMethod| {
        json!({
            "id": format!("{did}#{}", vm.id),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": vm.public_key_multibase.to_multibase(),
        })
    };
    let mut doc = Map::new();
    doc.insert("@context".into(), json!([DID_CONTEXT, MULTIKEY_CONTEXT]));
    doc.insert("id".into(), json!(did));
    if !state.also_known_as.is_empty() {
        doc.insert("alsoKnownAs".into(), json!(state.also_known_as));
    }
    let standalone: Vec<Value> = state
        .verification_methods
        .iter()
        .filter(|vm| !vm.relationships.contains(&Relationship::Authentication))
        .map(vm_json)
        .collect();
    if !standalone.is_empty() {
        doc.insert("verificationMethod".into(), Value::Array(standalone));
    }
    // Passkeys are P-256 Multikeys (`zDn…`) that only authenticate.
    let passkeys = state.passkeys.iter().map(|p| {
        json!({
            "id": format!("{did}#{}", p.id),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": p.public_key_multibase.to_multibase(),
        })
    });
    let authentication: Vec<Value> = state
        .keys_for(Relationship::Authentication)
        .map(vm_json)
        .chain(passkeys)
        .collect();
    if !authentication.is_empty() {
        doc.insert("authentication".into(), Value::Array(authentication));
    }
    let refs = |rel| -> Vec<Value> {
        state
            .keys_for(rel)
            .map(|vm| json!(format!("{did}#{}", vm.id)))
            .collect()
    };
    let assertion = refs(Relationship::Assertion);
    if !assertion.is_empty() {
        doc.insert("assertionMethod".into(), Value::Array(assertion));
    }
    // `mfa` is didmesh's own relationship; DID Core §5.3 lets a method
    // define more. Kept out of the standard ones so a generic verifier never
    // mistakes a second-factor device key for a login key.
    let mfa = refs(Relationship::Mfa);
    if !mfa.is_empty() {
        doc.insert("mfa".into(), Value::Array(mfa));
    }
    if !state.services.is_empty() {
        let services: Vec<Value> = state
            .services
            .iter()
            .map(|s| {
                json!({
                    "id": format!("{did}#{}", s.id),
                    "type": s.kind,
                    "serviceEndpoint": s.endpoint,
                })
            })
            .collect();
        doc.insert("service".into(), Value::Array(services));
    }
    Value::Object(doc)
}

/// A resolution result for a DID the ledger holds.
pub fn resolution_result(view: &DidView) -> Value {
    let document = match view.usable_state() {
        Some(state) => did_document(&view.did, state),
        // A disputed DID shows no keys: nobody may act on them until a
        // higher-priority rotation key settles the dispute (ledger doc).
        None if view.disputed.is_some() => json!({"@context": [DID_CONTEXT], "id": &view.did}),
        // A deactivated DID resolves to a minimal document (DID Core §7.1.2
        // leaves the document to the method; metadata carries the flag).
        None => json!({"@context": [DID_CONTEXT], "id": &view.did}),
    };
    let mut meta = json!({
        "created": rfc3339(view.created_at),
        "updated": rfc3339(view.updated_at),
        "versionId": view.head.to_string(),
        "versionNumber": view.version,
        "genesis": view.genesis.to_string(),
    });
    if view.deactivated() {
        meta["deactivated"] = json!(true);
    }
    if let Some(d) = &view.disputed {
        meta["disputed"] = json!({
            "at": d.at.to_string(),
            "equivocatingKey": d.key.to_string(),
            "conflictingOps": d.ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "reason": "a rotation key signed conflicting operations; a higher-priority rotation key must settle it",
        });
    }
    json!({
        "@context": RESOLUTION_CONTEXT,
        "didDocument": document,
        "didResolutionMetadata": {"contentType": "application/did+ld+json"},
        "didDocumentMetadata": meta,
    })
}

/// A resolution error result (`notFound`, `invalidDid`, …).
pub fn resolution_error(error: &str, reason: &str) -> Value {
    json!({
        "@context": RESOLUTION_CONTEXT,
        "didDocument": null,
        "didResolutionMetadata": {"error": error, "reason": reason},
        "didDocumentMetadata": {},
    })
}

/// Metadata for a CID, as a string (used by logs).
pub fn cid_string(cid: &Cid) -> String {
    cid.to_string()
}
