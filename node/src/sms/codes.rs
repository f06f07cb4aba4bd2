//! One-time SMS codes: made, kept as a keyed hash, checked.
//!
//! **Key.** A code is bound to `(nonce id, phone entry id)`. The nonce id
//! is [`crate::auth::LiveNonce::id`] (= `Opened.id` in [`crate::auth`]):
//! the first 8 bytes of the challenge nonce's MAC, a `u64`, which the
//! token path has in hand after opening the nonce and which is bound by
//! that MAC to the DID the challenge was issued for. So a code sent for
//! one login cannot complete another, nor another DID's.
//!
//! **Code.** Six decimal digits, uniform over 000000-999999, from the
//! operating system's CSPRNG (`OsRng`; NIST SP 800-63B §5.1.3.2: an
//! out-of-band secret of at least 20 bits of entropy, ~19.9 here, made
//! acceptable by the retry limit below).
//!
//! **Kept.** Only `blake3_keyed(secret, nonce id ‖ phone id ‖ code)`, the
//! secret being 32 random bytes made at start and held in memory only: a
//! memory dump shows no code, and no code outlives a restart (nor does any
//! challenge; [`crate::auth`]).
//!
//! **Checked** ([`check_code`]): for [`CODE_TTL`] seconds (5 minutes), at
//! most [`MAX_TRIES`] wrong codes (then the slot is locked: even the right
//! code is refused, SP 800-63B §5.2.2), and once: a right code uses the
//! slot up, a replay is refused. A new code for the same slot (a resend)
//! replaces the old one but keeps the count of wrong tries, so resending
//! never buys more guesses. Comparison is in constant time.

use super::SmsError;
use crate::NodeState;
use rand::{Rng as _, RngCore as _};
use std::collections::HashMap;
use std::sync::Mutex;

/// Seconds a code is accepted.
pub const CODE_TTL: u64 = 300;
/// Wrong codes after which a slot is locked.
pub const MAX_TRIES: u8 = 5;
/// Slots held at most (memory bound). Each one cost a guarded, paid SMS.
const MAX_SLOTS: usize = 100_000;

struct Slot {
    mac: [u8; 32],
    expires_at: u64,
    wrong: u8,
    used: bool,
}

/// The codes of this node (module doc).
pub struct Codes {
    secret: [u8; 32],
    slots: Mutex<HashMap<(u64, String), Slot>>,
}

impl Default for Codes {
    fn default() -> Codes {
        Codes::new()
    }
}

/// A fresh code (module doc).
pub fn new_code() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

impl Codes {
    pub fn new() -> Codes {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Codes {
            secret,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, nonce_id: u64, phone: &str, code: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"didmesh sms code v1");
        h.update(&nonce_id.to_be_bytes());
        h.update(&(phone.len() as u64).to_be_bytes());
        h.update(phone.as_bytes());
        h.update(code.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Whether a code may be sent for this slot now: not locked, not used,
    /// and room for it. Checked before any money is reserved.
    pub fn may_send(&self, nonce_id: u64, phone: &str, now: u64) -> Result<(), SmsError> {
        let mut slots = self.slots.lock().map_err(|_| SmsError::Busy)?;
        match slots.get(&(nonce_id, phone.to_string())) {
            Some(s) if s.expires_at > now && s.used => Err(SmsError::Used),
            Some(s) if s.expires_at > now && s.wrong >= MAX_TRIES => Err(SmsError::Locked),
            Some(_) => Ok(()),
            None => {
                if slots.len() >= MAX_SLOTS {
                    slots.retain(|_, s| s.expires_at > now);
                }
                if slots.len() >= MAX_SLOTS {
                    return Err(SmsError::Busy);
                }
                Ok(())
            }
        }
    }

    /// Keeps `code` for the slot (after the provider accepted it); a
    /// resend keeps the slot's wrong tries.
    pub fn put(&self, nonce_id: u64, phone: &str, code: &str, now: u64) -> Result<(), SmsError> {
        let mac = self.mac(nonce_id, phone, code);
        let mut slots = self.slots.lock().map_err(|_| SmsError::Busy)?;
        let slot = slots.entry((nonce_id, phone.to_string())).or_insert(Slot {
            mac,
            expires_at: 0,
            wrong: 0,
            used: false,
        });
        if slot.expires_at <= now {
            slot.wrong = 0;
            slot.used = false;
        }
        slot.mac = mac;
        slot.expires_at = now + CODE_TTL;
        Ok(())
    }

    /// Checks a code (module doc).
    pub fn check(&self, nonce_id: u64, phone: &str, code: &str, now: u64) -> Result<(), SmsError> {
        // Anything but six digits is a wrong code, and counts as a try.
        let candidate = self.mac(nonce_id, phone, code);
        let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        let mut slots = self.slots.lock().map_err(|_| SmsError::Busy)?;
        let key = (nonce_id, phone.to_string());
        let Some(slot) = slots.get_mut(&key) else {
            return Err(SmsError::NoCode);
        };
        if slot.expires_at <= now {
            slots.remove(&key);
            return Err(SmsError::Expired);
        }
        if slot.used {
            return Err(SmsError::Used);
        }
        if slot.wrong >= MAX_TRIES {
            return Err(SmsError::Locked);
        }
        // Constant time: the comparison must not tell how many bytes matched.
        let same = slot
            .mac
            .iter()
            .zip(candidate.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same && well_formed {
            slot.used = true;
            return Ok(());
        }
        slot.wrong += 1;
        if slot.wrong >= MAX_TRIES {
            return Err(SmsError::Locked);
        }
        Err(SmsError::WrongCode {
            tries_left: MAX_TRIES - slot.wrong,
        })
    }

    /// Drops expired slots (the housekeeping timer calls this).
    pub fn prune(&self, now: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.retain(|_, s| s.expires_at > now);
        }
    }

    /// Slots held.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks an SMS code for the token path: `nonce_id` is the challenge's
/// [`crate::auth::LiveNonce::id`], `phone_id` the phone's entry id in the
/// DID state. `Ok` once per code; the caller counts the phone as a factor.
/// Call it only when the code would complete the login (the nonce is not
/// used up otherwise, but the code is).
pub fn check_code(
    state: &NodeState,
    nonce_id: u64,
    phone_id: &str,
    code: &str,
) -> Result<(), SmsError> {
    let sms = state.sms.as_ref().ok_or(SmsError::Disabled)?;
    let result = sms.codes.check(nonce_id, phone_id, code, crate::now());
    match &result {
        Ok(()) => tracing::info!(phone = phone_id, "SMS code accepted"),
        Err(e) => tracing::info!(phone = phone_id, reason = %e, "SMS code refused"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_spread() {
        let codes: std::collections::HashSet<String> = (0..200).map(|_| new_code()).collect();
        assert!(codes
            .iter()
            .all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        assert!(codes.len() > 190);
    }

    #[test]
    fn single_use_tries_expiry_and_binding() {
        let c = Codes::new();
        let t = 1000;
        c.put(7, "phone-1", "123456", t).unwrap();
        assert_eq!(c.check(8, "phone-1", "123456", t), Err(SmsError::NoCode));
        assert_eq!(c.check(7, "phone-2", "123456", t), Err(SmsError::NoCode));
        assert_eq!(
            c.check(7, "phone-1", "000000", t),
            Err(SmsError::WrongCode { tries_left: 4 })
        );
        assert_eq!(c.check(7, "phone-1", "123456", t + 1), Ok(()));
        assert_eq!(c.check(7, "phone-1", "123456", t + 2), Err(SmsError::Used));
        assert_eq!(c.may_send(7, "phone-1", t + 2), Err(SmsError::Used));
        // expiry
        c.put(9, "phone-1", "111111", t).unwrap();
        assert_eq!(
            c.check(9, "phone-1", "111111", t + CODE_TTL),
            Err(SmsError::Expired)
        );
        // five wrong tries lock, a resend keeps the count
        c.put(10, "phone-1", "222222", t).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                c.check(10, "phone-1", "12345x", t),
                Err(SmsError::WrongCode { .. })
            ));
        }
        c.put(10, "phone-1", "333333", t + 1).unwrap();
        assert_eq!(
            c.check(10, "phone-1", "222222", t + 1),
            Err(SmsError::WrongCode { tries_left: 1 })
        );
        assert_eq!(
            c.check(10, "phone-1", "999999", t + 1),
            Err(SmsError::Locked)
        );
        assert_eq!(
            c.check(10, "phone-1", "333333", t + 1),
            Err(SmsError::Locked)
        );
        assert_eq!(c.may_send(10, "phone-1", t + 1), Err(SmsError::Locked));
        c.prune(t + CODE_TTL + 2);
        assert!(c.is_empty());
    }
}
