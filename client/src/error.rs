//! The one error type of the client. `main` prints it as `error: <Display>`
//! and exits non-zero; nothing in here carries a secret.

use crate::login::ChallengeError;
use crate::wallet::WalletError;

/// Everything a `didmesh` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a 4xx/5xx and its `{"error","reason"}` body.
    #[error("{reason} ({code}, HTTP {status})")]
    Node {
        status: u16,
        code: String,
        reason: String,
    },

    /// The node could not be reached, or its answer could not be read.
    #[error("{0}")]
    Transport(String),

    /// A sign-in through an external provider that the node refused (or
    /// that expired), with the node's code and reason.
    #[error("sign-in refused: {reason} ({code})")]
    Refused { code: String, reason: String },

    /// The node answered 2xx with something that is not what the API says.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),

    #[error(transparent)]
    Wallet(#[from] WalletError),

    /// A challenge the wallet refused to sign (phishing protection).
    #[error(transparent)]
    Challenge(#[from] ChallengeError),

    #[error("cannot build the operation: {0}")]
    Op(#[from] did_core::OpError),

    #[error("cannot write the output: {0}")]
    Output(std::io::Error),

    /// Bad flags or arguments, or a request that makes no sense for this
    /// wallet's state.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    pub fn usage(msg: impl Into<String>) -> ClientError {
        ClientError::Usage(msg.into())
    }

    pub fn protocol(msg: impl Into<String>) -> ClientError {
        ClientError::Protocol(msg.into())
    }
}
