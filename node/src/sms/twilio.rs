//! Sending one SMS through Twilio's Programmable Messaging API, in its
//! real wire format (Twilio API reference, "Message resource: Create a
//! Message"):
//!
//! ```text
//! POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json
//! Authorization: Basic base64(AccountSid ":" AuthToken)
//! Content-Type: application/x-www-form-urlencoded
//!
//! To=%2B447700900123&From=%2B15005550006&Body=…
//!
//! → 201 {"sid": "SM…", "status": "queued", …}
//! → 4xx/5xx {"code": 21211, "message": "…", "status": 400, …}
//! ```
//!
//! The base URL is configurable (a local server of the same API in tests).
//! Every request has a 5 s timeout and follows no redirect.
//!
//! For the spend guard the failure kind matters: an HTTP error answer
//! means Twilio did not accept the message (it charges nothing), and a
//! connection that never opened sent nothing, so the reserved spend is
//! refunded. A timeout or a connection lost after the request went out is
//! ambiguous (the message may be on its way and billed), so the spend
//! stays reserved: the budget may under-use, never overrun.

use super::config::SmsConfig;
use crate::federation::config::Secret;
use serde::Deserialize;
use std::time::Duration;

/// Time for one request to Twilio.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What Twilio answered for an accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sent {
    pub sid: String,
    pub status: String,
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Twilio answered with an error: nothing was sent or billed.
    #[error("the SMS provider refused the message (HTTP {status}, code {code})")]
    Refused { status: u16, code: i64 },
    /// The connection could not be opened: nothing was sent.
    #[error("the SMS provider cannot be reached")]
    Unreachable,
    /// Timed out or broke after the request went out: the message may
    /// have been sent.
    #[error("the SMS provider did not answer in time; the message may have been sent")]
    Unknown,
}

impl ProviderError {
    /// Whether the provider certainly sent (and billed) nothing.
    pub fn nothing_sent(&self) -> bool {
        !matches!(self, ProviderError::Unknown)
    }
}

/// The Twilio client of this node.
pub struct Twilio {
    http: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: Secret,
    from: String,
}

/// Twilio's error body (only the fields used).
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<i64>,
}

impl Twilio {
    pub fn new(config: &SmsConfig) -> Twilio {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("didmesh-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Twilio {
            http,
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                config.api_base, config.account_sid
            ),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            from: config.from.clone(),
        }
    }

    /// Sends `body` to `to` (E.164).
    pub async fn send(&self, to: &str, body: &str) -> Result<Sent, ProviderError> {
        let resp = self
            .http
            .post(&self.url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .form(&[("To", to), ("From", self.from.as_str()), ("Body", body)])
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ProviderError::Unreachable
                } else {
                    ProviderError::Unknown
                }
            })?;
        let status = resp.status();
        // Error bodies are small; an accepted message's too. Read at most
        // what reqwest buffers under the timeout.
        let bytes = resp.bytes().await.map_err(|_| ProviderError::Unknown)?;
        if status.is_success() {
            // 201 Created is the documented answer; any 2xx means queued.
            return serde_json::from_slice::<Sent>(&bytes).or(Ok(Sent {
                sid: String::new(),
                status: "unknown".into(),
            }));
        }
        let code = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|b| b.code)
            .unwrap_or(0);
        // A redirect is not Twilio's API (a proxy, a wrong api_base): no
        // message was accepted either.
        Err(ProviderError::Refused {
            status: status.as_u16(),
            code,
        })
    }
}
