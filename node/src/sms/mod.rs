//! SMS one-time codes, a login factor for DIDs that commit to a phone
//! number (README.md, "SMS codes"; the wire protocol in PROTOCOL.md).
//!
//! The ledger holds only a salted commitment to the number
//! ([`did_core::policy::phone_commitment`]); the wallet gives the node the
//! number and salt at login, `POST /v1/auth/sms` ([`routes`]) checks them
//! against the commitment before anything is spent, asks the spend guard
//! ([`guard`]), sends a 6-digit code through Twilio's Messages API
//! ([`twilio`]) and keeps only its keyed hash ([`codes`]); the token path
//! checks the code with [`codes::check_code`].
//!
//! SMS costs money per message, and SMS pumping is how identity services
//! lose it: [`guard`] bounds the monthly spend, the destinations, the
//! rate per number, DID and client network, and blocks a destination
//! prefix that spikes. Without `--sms FILE` ([`config`]) the factor is off
//! and the endpoint answers 501 `sms_disabled`.
//!
//! * [`config`] — the TOML file, checked at start.
//! * [`twilio`] — the provider client (5 s timeout, real wire format).
//! * [`guard`] — budget, allow-list, prices, caps, velocity alarm (sled).
//! * [`codes`] — codes and their checks.
//! * [`routes`] — `POST /v1/auth/sms`.

pub mod codes;
pub mod config;
pub mod guard;
pub mod routes;
pub mod twilio;

pub use codes::check_code;

use crate::storage::{StorageError, Store};
use serde::Serialize;

/// Why an SMS code did not count ([`check_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    #[error("SMS codes are not enabled on this node")]
    Disabled,
    #[error("no SMS code was sent for this login and phone")]
    NoCode,
    #[error("the SMS code has expired; ask for a new one")]
    Expired,
    #[error("too many wrong SMS codes for this login; start a new login")]
    Locked,
    #[error("this SMS code was already used")]
    Used,
    #[error("wrong SMS code ({tries_left} tries left)")]
    WrongCode { tries_left: u8 },
    #[error("too many SMS codes in flight; try again shortly")]
    Busy,
}

impl From<SmsError> for crate::auth::SmsCheckError {
    fn from(e: SmsError) -> crate::auth::SmsCheckError {
        match e {
            SmsError::Disabled => crate::auth::SmsCheckError::Disabled,
            other => crate::auth::SmsCheckError::Invalid(other.to_string()),
        }
    }
}

/// The SMS factor of a node with `--sms`.
pub struct Sms {
    pub guard: guard::Guard,
    pub codes: codes::Codes,
    pub twilio: twilio::Twilio,
}

impl Sms {
    /// Opens the guard's tree in `store` and logs what SMS costs. `None`
    /// config: the factor is off (logged too).
    pub fn open(
        config: Option<config::SmsConfig>,
        store: &Store,
    ) -> Result<Option<Sms>, StorageError> {
        let Some(config) = config else {
            tracing::info!("SMS codes are off (no --sms file): POST /v1/auth/sms answers 501");
            return Ok(None);
        };
        tracing::warn!(
            "SMS costs money: {}; provider {}",
            config.summary(),
            config.api_base
        );
        let twilio = twilio::Twilio::new(&config);
        let tree = store.side_tree(guard::TREE)?;
        let guard =
            guard::Guard::open(tree, config).map_err(|e| StorageError::Damaged(e.to_string()))?;
        Ok(Some(Sms {
            guard,
            codes: codes::Codes::new(),
            twilio,
        }))
    }

    /// Housekeeping: expired codes, old guard windows.
    pub fn prune(&self, now: u64) {
        self.codes.prune(now);
        if let Err(e) = self.guard.prune(now) {
            tracing::warn!(error = %e, "SMS guard pruning failed");
        }
    }
}

/// The `sms` section of `/v1/status`: `{"enabled": false}`, or the
/// month's figures ([`guard::GuardView`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmsStatus {
    pub enabled: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub month: Option<guard::GuardView>,
    /// Set when the guard's store could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`SmsStatus`] of `sms` now.
pub fn status(sms: Option<&Sms>, now: u64) -> SmsStatus {
    match sms {
        None => SmsStatus {
            enabled: false,
            month: None,
            error: None,
        },
        Some(s) => match s.guard.view(now) {
            Ok(v) => SmsStatus {
                enabled: true,
                month: Some(v),
                error: None,
            },
            Err(e) => SmsStatus {
                enabled: true,
                month: None,
                error: Some(e.to_string()),
            },
        },
    }
}

/// A number as shown to the user and in logs: `+`, the first digit, stars,
/// the last two digits (`+1********34`).
pub fn mask(number: &str) -> String {
    let n = number.chars().count();
    number
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 2 || i + 2 >= n { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn masking() {
        assert_eq!(super::mask("+15550001234"), "+1********34");
        assert_eq!(super::mask("+4420"), "+4*20");
    }
}
