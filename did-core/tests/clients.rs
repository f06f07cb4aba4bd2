//! Relying parties and passkeys in a DID state, against an attacker.
//!
//! A client registration decides where a sign-in of *anyone* is sent
//! (`redirect_uris`), so who may write it is a security rule: only the
//! owner DID's rotation keys, under the same fork rule as every other
//! field. These tests play the attacks: a stranger writing into someone
//! else's DID, a thief with the daily key pointing the owner's client at
//! their own server, and malformed entries a sloppy or hostile wallet
//! might send.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::{client_id, parse_client_id, secret_hash, ClientReg, IdTokenAlg};
use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{did_from_genesis, DidState, OpError, Operation};
use did_core::passkey::{P256Key, Passkey};
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn app(uri: &str) -> ClientReg {
    ClientReg {
        id: "home".into(),
        name: "Home activities".into(),
        redirect_uris: vec![uri.into()],
        secret_hash: None,
        id_token_alg: IdTokenAlg::RS256,
    }
}

fn passkey(id: &str, cred: u8) -> Passkey {
    let sk = p256::ecdsa::SigningKey::from_slice(&[cred; 32]).unwrap();
    let point = sk.verifying_key().to_encoded_point(true);
    Passkey {
        id: id.into(),
        credential_id: URL_SAFE_NO_PAD.encode([cred; 16]),
        public_key_multibase: P256Key::from_sec1(point.as_bytes()).unwrap(),
    }
}

/// `recovery` (priority 0) and `daily` rotate; `daily` authenticates.
fn owner_state(recovery: &SigningKey, daily: &SigningKey) -> DidState {
    let mut s = DidState::single_key(public_of(daily));
    s.rotation_keys = vec![public_of(recovery), public_of(daily)];
    s
}

#[test]
fn the_owner_registers_a_client_and_any_node_finds_it_from_the_id() {
    let (recovery, daily) = (key(1), key(2));
    let create = Operation::create(owner_state(&recovery, &daily), 1_800_000_000, &daily).unwrap();
    let did = did_from_genesis(&create.cid().unwrap());
    let mut with_client = owner_state(&recovery, &daily);
    let mut confidential = app("https://home.example/cb");
    confidential.secret_hash = Some(secret_hash("the-secret"));
    with_client.clients.push(confidential);
    let update = Operation::update(
        &did,
        create.cid().unwrap(),
        with_client,
        1_800_000_010,
        &daily,
    )
    .unwrap();
    let mut l = Ledger::default();
    l.apply(create).unwrap();
    l.apply(update.clone()).unwrap();

    let id = client_id(&did, "home").unwrap();
    let (owner, entry) = parse_client_id(&id).unwrap();
    assert_eq!(owner, did);
    let state = l.resolve(&owner).unwrap().state.unwrap();
    let c = state.client(entry).unwrap();
    assert!(c.secret_matches("the-secret"));
    // What a reader of the ledger sees is the hash, never the secret.
    let bytes = String::from_utf8(update.canonical_bytes().unwrap()).unwrap();
    assert!(!bytes.contains("the-secret"));
}

#[test]
fn a_stranger_cannot_write_a_client_into_someone_elses_did() {
    let (recovery, daily, stranger) = (key(1), key(2), key(3));
    let create = Operation::create(owner_state(&recovery, &daily), 1_800_000_000, &daily).unwrap();
    let did = did_from_genesis(&create.cid().unwrap());
    let mut evil = owner_state(&recovery, &daily);
    evil.clients.push(app("https://evil.example/cb"));
    let forged =
        Operation::update(&did, create.cid().unwrap(), evil, 1_800_000_010, &stranger).unwrap();
    let mut l = Ledger::default();
    l.apply(create).unwrap();
    assert!(matches!(
        l.apply(forged),
        Err(OpError::BadSignature(_)) | Err(OpError::Invalid(_))
    ));
    assert!(l.resolve(&did).unwrap().state.unwrap().clients.is_empty());
}

#[test]
fn a_thief_with_the_daily_key_loses_the_client_to_the_recovery_key() {
    let (recovery, daily, thief) = (key(1), key(2), key(9));
    let create = Operation::create(owner_state(&recovery, &daily), 1_800_000_000, &daily).unwrap();
    let genesis = create.cid().unwrap();
    let did = did_from_genesis(&genesis);
    let mut registered = owner_state(&recovery, &daily);
    registered.clients.push(app("https://home.example/cb"));
    let reg = Operation::update(&did, genesis, registered, 1_800_000_010, &daily).unwrap();
    // The thief redirects the owner's client to their server and locks the
    // owner's keys out.
    let mut hijacked = DidState::single_key(public_of(&thief));
    hijacked.clients.push(app("https://evil.example/cb"));
    let hijack =
        Operation::update(&did, reg.cid().unwrap(), hijacked, 1_800_000_020, &daily).unwrap();
    // The owner recovers from the registration with the offline key.
    let mut recovered = owner_state(&recovery, &key(4));
    recovered.clients.push(app("https://home.example/cb"));
    let recover = Operation::update(
        &did,
        reg.cid().unwrap(),
        recovered,
        1_800_000_030,
        &recovery,
    )
    .unwrap();

    for order in [[&hijack, &recover], [&recover, &hijack]] {
        let mut l = Ledger::default();
        l.apply(create.clone()).unwrap();
        l.apply(reg.clone()).unwrap();
        for op in order {
            l.apply((*op).clone()).unwrap();
        }
        let state = l.resolve(&did).unwrap().state.unwrap();
        assert_eq!(
            state.client("home").unwrap().redirect_uris,
            vec!["https://home.example/cb".to_string()],
            "the recovery key's branch wins in either arrival order"
        );
    }
}

#[test]
fn malformed_clients_and_passkeys_are_refused_with_a_reason() {
    let k = key(1);
    let bad_states: Vec<(&str, DidState)> = vec![
        ("http redirect to a public host", {
            let mut s = DidState::single_key(public_of(&k));
            s.clients.push(app("http://evil.example/cb"));
            s
        }),
        ("redirect with a fragment", {
            let mut s = DidState::single_key(public_of(&k));
            s.clients.push(app("https://a.example/cb#x"));
            s
        }),
        ("dot in an entry id (client ids split at the first dot)", {
            let mut s = DidState::single_key(public_of(&k));
            let mut c = app("https://a.example/cb");
            c.id = "a.b".into();
            s.clients.push(c);
            s
        }),
        ("two clients with one id", {
            let mut s = DidState::single_key(public_of(&k));
            s.clients.push(app("https://a.example/cb"));
            s.clients.push(app("https://b.example/cb"));
            s
        }),
        ("secret hash that is not 32 bytes", {
            let mut s = DidState::single_key(public_of(&k));
            let mut c = app("https://a.example/cb");
            c.secret_hash = Some("plaintext-secret".into());
            s.clients.push(c);
            s
        }),
        ("too many clients", {
            let mut s = DidState::single_key(public_of(&k));
            for i in 0..6 {
                let mut c = app("https://a.example/cb");
                c.id = format!("c{i}");
                s.clients.push(c);
            }
            s
        }),
        ("one credential registered twice", {
            let mut s = DidState::single_key(public_of(&k));
            s.passkeys.push(passkey("passkey-1", 5));
            s.passkeys.push(passkey("passkey-2", 5));
            s
        }),
        ("passkey id taken by a key", {
            let mut s = DidState::single_key(public_of(&k));
            s.passkeys.push(passkey("key-1", 5));
            s
        }),
        ("credential id too short", {
            let mut s = DidState::single_key(public_of(&k));
            let mut p = passkey("passkey-1", 5);
            p.credential_id = URL_SAFE_NO_PAD.encode([1u8; 4]);
            s.passkeys.push(p);
            s
        }),
    ];
    for (what, state) in bad_states {
        let r = Operation::create(state, 1_800_000_000, &k).and_then(|op| {
            let mut l = Ledger::default();
            l.apply(op)
        });
        assert!(
            matches!(r, Err(OpError::Invalid(_)) | Err(OpError::Limit(_))),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn a_point_off_the_curve_is_not_a_passkey() {
    let mut bytes = vec![0x80, 0x24, 0x02];
    bytes.extend_from_slice(&[0xff; 32]);
    let mb = format!("z{}", bs58::encode(bytes).into_string());
    let json = format!(
        r#"{{"id":"passkey-1","credential_id":"{}","public_key_multibase":"{mb}"}}"#,
        URL_SAFE_NO_PAD.encode([1u8; 16])
    );
    assert!(serde_json::from_str::<Passkey>(&json).is_err());
}

#[test]
fn states_without_clients_or_passkeys_keep_their_bytes() {
    let s = DidState::single_key(public_of(&key(1)));
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        !json.contains("clients") && !json.contains("passkeys"),
        "{json}"
    );
}
