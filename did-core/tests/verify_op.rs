//! The op signature rule, `PublicKey::verify_op` (PROTOCOL.md §1), is
//! ZIP-215 plus the refusal of small-order keys; its batch form
//! `verify_op_batch` must accept a set exactly when every member passes
//! alone. Both are checked against ed25519-consensus, the reference ZIP-215
//! implementation, on honest and crafted inputs: valid signatures, forged
//! ones, R or the key carrying a small-order component, R or the key of
//! small order, a non-canonical s, and garbage.

mod support;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use did_core::keys::verify_op_batch;
use did_core::PublicKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use proptest::prelude::*;
use support::signatures::crafted;

/// One input: key bytes, message, signature bytes.
type Case = ([u8; 32], Vec<u8>, [u8; 64]);

/// The reference verdict: ed25519-consensus (ZIP-215), and no small-order
/// key. `None` when the key bytes are no point (no key to check with).
fn reference(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Option<bool> {
    let weak = VerifyingKey::from_bytes(key).ok()?.is_weak();
    let vk = ed25519_consensus::VerificationKey::try_from(*key).ok()?;
    let zip215 = vk
        .verify(&ed25519_consensus::Signature::from(*sig), msg)
        .is_ok();
    Some(zip215 && !weak)
}

/// Both verdicts for one case, asserted equal; the verdict.
fn agree((key, msg, sig): &Case) -> Option<bool> {
    let want = reference(key, msg, sig)?;
    let ours = PublicKey::from_bytes(key).ok()?;
    let got = ours.verify_op(msg, &Signature::from_bytes(sig));
    assert_eq!(got, want, "key {key:02x?} sig {sig:02x?}");
    Some(want)
}

/// The cases built from one key, message, nonce, torsion point and
/// garbage, with the verdicts the rule must give where they are known.
fn cases(
    seed: [u8; 32],
    nonce: [u8; 32],
    msg: &[u8],
    t: usize,
    garbage: [u8; 32],
) -> Vec<(Case, Option<bool>)> {
    let sk = SigningKey::from_bytes(&seed);
    let a = sk.to_scalar();
    let pk = sk.verifying_key();
    let big_a = pk.to_edwards();
    let r = Scalar::from_bytes_mod_order(nonce);
    let torsion = EIGHT_TORSION[t];
    let key = pk.to_bytes();
    let m = msg.to_vec();
    let honest = ed25519_dalek::Signer::sign(&sk, msg).to_bytes();
    // The honest signature's R moved by a small-order point: what a third
    // party could try on someone else's op. k changes with R, so it fails.
    let mut moved = honest;
    let big_r = CompressedEdwardsY(honest[..32].try_into().unwrap())
        .decompress()
        .unwrap();
    moved[..32].copy_from_slice(&(big_r + torsion).compress().0);
    let mut high = honest;
    high[63] |= 0xf0;
    let mixed = big_a + torsion;
    let weak = torsion.compress().0;
    let mut any = [0u8; 64];
    any[..32].copy_from_slice(&(r * ED25519_BASEPOINT_POINT).compress().0);
    any[32..].copy_from_slice(r.as_bytes());
    let mut junk = honest;
    junk[..32].copy_from_slice(&garbage);
    let mut flipped = honest;
    flipped[40] ^= 4;
    vec![
        ((key, m.clone(), honest), Some(true)),
        // The holder's own nonce with a small-order component: valid
        // under the cofactored equation (only the holder can make it).
        (
            (key, m.clone(), crafted(a, &big_a, msg, r, torsion)),
            Some(true),
        ),
        ((key, m.clone(), moved), Some(t == 0)),
        // s + l: not canonical.
        ((key, m.clone(), high), Some(false)),
        ((key, m.clone(), flipped), Some(false)),
        // R the identity or another small-order point, s = H·a.
        (
            (
                key,
                m.clone(),
                crafted(a, &big_a, msg, Scalar::ZERO, EdwardsPoint::default()),
            ),
            Some(true),
        ),
        (
            (
                key,
                m.clone(),
                crafted(a, &big_a, msg, Scalar::ZERO, torsion),
            ),
            Some(true),
        ),
        // A key with a small-order component, signed by its holder.
        (
            (
                mixed.compress().0,
                m.clone(),
                crafted(a, &mixed, msg, r, EdwardsPoint::default()),
            ),
            None,
        ),
        // A key of small order: any s verifies with R = [s]B under ZIP-215
        // alone; didmesh refuses the key.
        ((weak, m.clone(), any), Some(false)),
        // Garbage R, honest s.
        ((key, m, junk), None),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    /// Single checks agree with the reference on every case.
    #[test]
    fn single_agrees_with_zip215(
        seed in any::<[u8; 32]>(),
        nonce in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
        t in 0usize..8,
        garbage in any::<[u8; 32]>(),
    ) {
        for (case, known) in cases(seed, nonce, &msg, t, garbage) {
            let got = agree(&case);
            if let Some(known) = known {
                prop_assert_eq!(got, Some(known));
            }
        }
    }

    /// A batch of any subset of the cases passes exactly when each of its
    /// members passes alone.
    #[test]
    fn batch_passes_exactly_when_every_member_does(
        seed in any::<[u8; 32]>(),
        nonce in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 0..64),
        t in 0usize..8,
        garbage in any::<[u8; 32]>(),
        pick in any::<u16>(),
    ) {
        let all = cases(seed, nonce, &msg, t, garbage);
        let chosen: Vec<(PublicKey, Vec<u8>, Signature)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| pick & (1 << i) != 0)
            .filter_map(|(_, ((k, m, s), _))| {
                Some((PublicKey::from_bytes(k).ok()?, m.clone(), Signature::from_bytes(s)))
            })
            .collect();
        let items: Vec<(&PublicKey, Signature, &[u8])> =
            chosen.iter().map(|(k, m, s)| (k, *s, m.as_slice())).collect();
        let singles = items.iter().all(|(k, s, m)| k.verify_op(m, s));
        prop_assert_eq!(verify_op_batch(&items), singles);
    }
}

/// Everything `verify_strict` accepts, the op rule accepts: version 2
/// ledgers stay valid.
#[test]
fn what_verify_strict_accepts_stays_valid() {
    for i in 0u8..64 {
        let sk = SigningKey::from_bytes(&[i; 32]);
        let msg = [i; 7];
        let sig = ed25519_dalek::Signer::sign(&sk, &msg);
        assert!(sk.verifying_key().verify_strict(&msg, &sig).is_ok());
        let pk = PublicKey::from_bytes(&sk.verifying_key().to_bytes()).unwrap();
        assert!(pk.verify_op(&msg, &sig));
        assert!(pk.verify(&msg, &sig));
    }
}

/// A batch of many honest signatures passes, and one bad signature in any
/// position makes it fail.
#[test]
fn one_bad_signature_fails_the_batch_wherever_it_is() {
    const N: usize = 24;
    let keys: Vec<SigningKey> = (0..N as u8)
        .map(|i| SigningKey::from_bytes(&[i; 32]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..N).map(|i| format!("op {i}").into_bytes()).collect();
    let publics: Vec<PublicKey> = keys
        .iter()
        .map(|k| PublicKey::from_bytes(&k.verifying_key().to_bytes()).unwrap())
        .collect();
    let good: Vec<Signature> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| ed25519_dalek::Signer::sign(k, m))
        .collect();
    let items = |sigs: &[Signature]| -> bool {
        let v: Vec<(&PublicKey, Signature, &[u8])> = publics
            .iter()
            .zip(sigs)
            .zip(&msgs)
            .map(|((k, s), m)| (k, *s, m.as_slice()))
            .collect();
        verify_op_batch(&v)
    };
    assert!(items(&good));
    for pos in 0..N {
        let mut sigs = good.clone();
        let mut b = sigs[pos].to_bytes();
        b[33] ^= 1;
        sigs[pos] = Signature::from_bytes(&b);
        assert!(!items(&sigs), "bad signature at {pos} passed the batch");
    }
}
