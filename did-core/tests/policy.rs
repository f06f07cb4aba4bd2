//! Login policies and phone commitments in a DID state.
//!
//! The policy decides who gets a token, so its rules are played against an
//! owner who makes mistakes and an attacker who reads the ledger: a policy
//! that could never be met, one that an SMS code alone would satisfy, a
//! phone number guessed from its commitment.

use did_core::keys::public_of;
use did_core::ledger::Ledger;
use did_core::op::{did_from_genesis, DidState, OpError, Operation, Relationship};
use did_core::policy::{is_e164, phone_commitment, FactorKind, LoginPolicy, Phone, PHONE_CONTEXT};
use did_core::VerificationMethod;
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Rotation key 1; authentication keys `laptop` (1) and `phone` (2).
fn two_devices() -> DidState {
    let mut s = DidState::single_key(public_of(&key(1)));
    s.verification_methods[0].id = "laptop".into();
    s.verification_methods[0].device = Some("laptop".into());
    s.verification_methods.push(VerificationMethod {
        id: "phone-key".into(),
        public_key_multibase: public_of(&key(2)),
        relationships: vec![Relationship::Authentication],
        device: Some("phone".into()),
    });
    s
}

fn applies(state: DidState) -> Result<(), OpError> {
    let op = Operation::create(state, 1_800_000_000, &key(1))?;
    Ledger::default().apply(op).map(|_| ())
}

#[test]
fn without_a_policy_any_one_key_is_a_login() {
    let s = two_devices();
    let (required, counted) = s.login_requirement();
    assert_eq!(required, 1);
    assert_eq!(counted.len(), 2);
    assert!(counted.iter().all(|f| f.kind == FactorKind::Key));
}

#[test]
fn two_of_two_keys_is_accepted_and_survives_the_ledger() {
    let mut s = two_devices();
    s.login_policy = Some(LoginPolicy {
        required: 2,
        factors: vec![],
    });
    let create = Operation::create(s.clone(), 1_800_000_000, &key(1)).unwrap();
    let did = did_from_genesis(&create.cid().unwrap());
    let mut l = Ledger::default();
    l.apply(create).unwrap();
    let state = l.resolve(&did).unwrap().state.unwrap();
    assert_eq!(state.login_requirement().0, 2);
    assert_eq!(
        state.verification_methods[1].device.as_deref(),
        Some("phone")
    );
}

#[test]
fn policies_that_could_never_be_met_or_that_an_sms_alone_meets_are_refused() {
    let salt = [7u8; 16];
    let phone = Phone {
        id: "mobile".into(),
        commitment: phone_commitment(&salt, "+14155550100"),
    };
    let cases: Vec<(&str, DidState)> = vec![
        ("3 of 2 keys", {
            let mut s = two_devices();
            s.login_policy = Some(LoginPolicy {
                required: 3,
                factors: vec![],
            });
            s
        }),
        ("zero factors", {
            let mut s = two_devices();
            s.login_policy = Some(LoginPolicy {
                required: 0,
                factors: vec![],
            });
            s
        }),
        ("a factor that does not exist", {
            let mut s = two_devices();
            s.login_policy = Some(LoginPolicy {
                required: 1,
                factors: vec!["laptop".into(), "tablet".into()],
            });
            s
        }),
        ("the SMS code alone", {
            let mut s = two_devices();
            s.phones.push(phone.clone());
            s.login_policy = Some(LoginPolicy {
                required: 1,
                factors: vec!["mobile".into(), "laptop".into()],
            });
            s
        }),
        ("no key among the factors", {
            let mut s = two_devices();
            s.phones.push(phone.clone());
            s.login_policy = Some(LoginPolicy {
                required: 1,
                factors: vec!["mobile".into()],
            });
            s
        }),
        ("a phone id that a key already uses", {
            let mut s = two_devices();
            s.phones.push(Phone {
                id: "laptop".into(),
                commitment: phone.commitment.clone(),
            });
            s
        }),
        ("a commitment that is not 32 bytes", {
            let mut s = two_devices();
            s.phones.push(Phone {
                id: "mobile".into(),
                commitment: "+14155550100".into(),
            });
            s
        }),
        ("a device tag with a control character", {
            let mut s = two_devices();
            s.verification_methods[0].device = Some("lap\ntop".into());
            s
        }),
    ];
    for (what, state) in cases {
        let r = applies(state);
        assert!(
            matches!(r, Err(OpError::Invalid(_)) | Err(OpError::Limit(_))),
            "{what}: {r:?}"
        );
    }
    // Key + SMS, two factors: fine.
    let mut ok = two_devices();
    ok.phones.push(phone);
    ok.login_policy = Some(LoginPolicy {
        required: 2,
        factors: vec!["laptop".into(), "mobile".into()],
    });
    assert_eq!(applies(ok), Ok(()));
}

#[test]
fn a_phone_commitment_is_salted_so_the_ledger_cannot_confirm_a_guess() {
    let number = "+14155550100";
    let a = phone_commitment(&[1u8; 16], number);
    let b = phone_commitment(&[2u8; 16], number);
    assert_ne!(a, b, "the same number under two salts");
    // What an attacker without the salt could compute: no match.
    let unsalted = {
        let mut h = blake3::Hasher::new();
        h.update(PHONE_CONTEXT);
        h.update(number.as_bytes());
        data_encoding::BASE64URL_NOPAD.encode(h.finalize().as_bytes())
    };
    assert_ne!(a, unsalted);
    assert_eq!(a, phone_commitment(&[1u8; 16], number));
}

#[test]
fn e164_numbers_only() {
    for ok in ["+14155550100", "+447911123456", "+4915112345678"] {
        assert!(is_e164(ok), "{ok}");
    }
    for bad in [
        "14155550100",
        "+0123456789",
        "+1 415 555 0100",
        "+1234567",
        "+1234567890123456",
        "+1415555010a",
    ] {
        assert!(!is_e164(bad), "{bad}");
    }
}

#[test]
fn states_without_a_policy_phones_or_devices_keep_their_bytes() {
    let s = DidState::single_key(public_of(&key(1)));
    let json = serde_json::to_string(&s).unwrap();
    for field in ["login_policy", "phones", "device"] {
        assert!(!json.contains(field), "{json}");
    }
}
