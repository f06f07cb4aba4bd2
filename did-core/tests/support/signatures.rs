//! Crafted Ed25519 signatures for the signature-rule tests: the holder of a
//! key choosing its own nonce point, small-order components included.

#![allow(dead_code)]

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

/// A signature by the holder of scalar `a` (public `big_a`) over `msg`,
/// with nonce point `rB + extra` and s = r + H(R, A, msg)·a.
pub fn crafted(
    a: Scalar,
    big_a: &EdwardsPoint,
    msg: &[u8],
    r: Scalar,
    extra: EdwardsPoint,
) -> [u8; 64] {
    let big_r = r * ED25519_BASEPOINT_POINT + extra;
    let h = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r.compress().as_bytes())
            .chain_update(big_a.compress().as_bytes())
            .chain_update(msg),
    );
    let s = r + h * a;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(big_r.compress().as_bytes());
    out[32..].copy_from_slice(s.as_bytes());
    out
}
