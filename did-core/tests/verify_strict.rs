//! `PublicKey::verify` is dalek's `verify_strict` without its square root
//! (see the method's doc): the two must agree on every input, honest or
//! crafted — valid signatures, forged ones, R or the key carrying a
//! small-order component, R or the key of small order, a non-canonical s,
//! and garbage.

mod support;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use did_core::keys::SMALL_ORDER_ENCODINGS;
use did_core::PublicKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use proptest::prelude::*;
use support::signatures::crafted;

/// The byte list is the set of small-order points, nothing more or less.
#[test]
fn the_small_order_encodings_are_the_eight_torsion_points() {
    let mut want: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|p| p.compress().0).collect();
    let mut have = SMALL_ORDER_ENCODINGS.to_vec();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    for enc in SMALL_ORDER_ENCODINGS {
        assert!(VerifyingKey::from_bytes(&enc).unwrap().is_weak());
    }
}

/// Both verdicts for key bytes `key` (skipped when they are no point at
/// all: then neither side has a key to check with).
fn agree(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Option<bool> {
    let strict = VerifyingKey::from_bytes(key).ok()?;
    let ours = PublicKey::from_bytes(key).ok()?;
    let sig = Signature::from_bytes(sig);
    let want = strict.verify_strict(msg, &sig).is_ok();
    assert_eq!(ours.verify(msg, &sig), want, "key {key:02x?} sig {sig:?}");
    Some(want)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn agrees_with_verify_strict(
        seed in any::<[u8; 32]>(),
        nonce in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
        t in 0usize..8,
        garbage in any::<[u8; 32]>(),
    ) {
        let sk = SigningKey::from_bytes(&seed);
        let a = sk.to_scalar();
        let pk = sk.verifying_key();
        let big_a = pk.to_edwards();
        let r = Scalar::from_bytes_mod_order(nonce);
        let torsion = EIGHT_TORSION[t];
        let key = pk.to_bytes();

        // Honest: valid under both.
        let honest = ed25519_dalek::Signer::sign(&sk, &msg).to_bytes();
        prop_assert_eq!(agree(&key, &msg, &honest), Some(true));
        // R with a small-order component, s honest for it.
        agree(&key, &msg, &crafted(a, &big_a, &msg, r, torsion));
        // The honest signature's R moved by a small-order point.
        let mut moved = honest;
        let big_r = curve25519_dalek::edwards::CompressedEdwardsY(honest[..32].try_into().unwrap())
            .decompress()
            .unwrap();
        moved[..32].copy_from_slice(&(big_r + torsion).compress().0);
        prop_assert_eq!(agree(&key, &msg, &moved), Some(t == 0));
        // s + l: not canonical.
        let mut high = honest;
        high[63] |= 0xf0;
        prop_assert_eq!(agree(&key, &msg, &high), Some(false));
        // R of small order: the identity verifies cofactorless when
        // s = H·a, and must still be refused.
        let identity = crafted(a, &big_a, &msg, Scalar::ZERO, EdwardsPoint::default());
        prop_assert_eq!(agree(&key, &msg, &identity), Some(false));
        agree(&key, &msg, &crafted(a, &big_a, &msg, Scalar::ZERO, torsion));
        // A key with a small-order component, and one of small order
        // (any s then verifies cofactorless with R = [s]B).
        let mixed = big_a + torsion;
        agree(&mixed.compress().0, &msg, &crafted(a, &mixed, &msg, r, EdwardsPoint::default()));
        let weak = torsion.compress().0;
        let mut any = [0u8; 64];
        any[..32].copy_from_slice(&(r * ED25519_BASEPOINT_POINT).compress().0);
        any[32..].copy_from_slice(r.as_bytes());
        prop_assert_eq!(agree(&weak, &msg, &any), Some(false));
        // Garbage R, honest s.
        let mut junk = honest;
        junk[..32].copy_from_slice(&garbage);
        agree(&key, &msg, &junk);
    }
}
