//! A small typed client for the node's HTTP API (README.md, "HTTP API of a
//! node"; PROTOCOL.md §6),
//! used by the interactive commands. The load generator has its own
//! lower-level client in [`crate::bench`]. Both speak the bodies of
//! [`did_core::proto`], the types the node itself serializes.

use crate::error::ClientError;
use crate::login::{check_challenge, Authority};
use did_core::proto::{
    ChallengeRequest, ChallengeResponse, ErrorBody, OpSubmitted, TokenRequest, CHALLENGE_PATH,
    OPS_PATH, TOKEN_PATH, TOKEN_TYPE,
};
use did_core::{Cid, DidState, Operation};
use ed25519_dalek::SigningKey;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// The answer to `POST /v1/auth/token` (RFC 6749 §5.1 names), what
/// [`NodeClient::login`] returns; its `Debug` never shows the token.
pub use did_core::proto::TokenResponse as Token;

/// A request that takes longer fails rather than hanging the CLI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest error body echoed from a node that did not answer JSON.
const MAX_ECHO: usize = 200;

/// A DID's current head: what the next `update`/`deactivate` builds on.
#[derive(Debug, Clone)]
pub struct Head {
    pub cid: Cid,
    pub state: DidState,
    pub created_at: u64,
}

/// A resolution answer: the HTTP status and the W3C resolution result.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub status: u16,
    pub body: Value,
}

/// Talks to one node.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    /// The URL without a trailing slash.
    base: String,
    /// Authority of `base`, which challenges must name.
    authority: Authority,
}

impl NodeClient {
    pub fn new(url: &str) -> Result<NodeClient, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ClientError::usage(format!(
                "node URL {base:?} must start with http:// (this build has no TLS; put a TLS proxy in front if needed)"
            )));
        }
        let authority = Authority::of_url(&base).map_err(ClientError::Usage)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("didmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(NodeClient {
            http,
            base,
            authority,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Submits a signed op; returns once the node holds it durably.
    pub async fn submit(&self, op: &Operation) -> Result<OpSubmitted, ClientError> {
        let resp = self
            .send(self.http.post(self.url(OPS_PATH)).json(op))
            .await?;
        let submitted: OpSubmitted = json_ok(resp).await?;
        if !submitted.durable {
            return Err(ClientError::protocol(
                "the node did not confirm the op as durable",
            ));
        }
        Ok(submitted)
    }

    /// `GET /1.0/identifiers/{did}`. A deactivated DID (410) is a result,
    /// not an error; not found and invalid DIDs are errors.
    pub async fn resolve(&self, did: &str) -> Result<Resolution, ClientError> {
        check_did_chars(did)?;
        let resp = self
            .send(self.http.get(self.url(&format!("/1.0/identifiers/{did}"))))
            .await?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| ClientError::protocol(format!("resolution result is not JSON: {e}")))?;
        // 410 deactivated and 409 disputed are results, not errors.
        if status == 200 || status == 410 || status == 409 {
            return Ok(Resolution { status, body });
        }
        let meta = &body["didResolutionMetadata"];
        Err(ClientError::Node {
            status,
            code: meta["error"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("error")
                .to_string(),
            reason: meta["reason"]
                .as_str()
                .or(body["reason"].as_str())
                .unwrap_or("resolution failed")
                .to_string(),
        })
    }

    /// The DID's head CID and full current state, checked: the head op
    /// must hash to the CID the resolution names and carry a valid
    /// signature, so a node cannot make the wallet sign an update over a
    /// state it made up.
    pub async fn head(&self, did: &str) -> Result<Head, ClientError> {
        let resolution = self.resolve(did).await?;
        if resolution.status == 410 {
            return Err(ClientError::Node {
                status: 410,
                code: "deactivated".into(),
                reason: format!("{did} is deactivated"),
            });
        }
        if resolution.status == 409 {
            return Err(ClientError::Node {
                status: 409,
                code: "disputed".into(),
                reason: format!(
                    "{did} is disputed (a rotation key signed conflicting ops); settle it with its recovery key: `didmesh did recover`"
                ),
            });
        }
        let version = resolution.body["didDocumentMetadata"]["versionId"]
            .as_str()
            .and_then(|v| Cid::parse(v).ok())
            .ok_or_else(|| ClientError::protocol("resolution result has no valid versionId"))?;
        self.op_in_log(did, version).await
    }

    /// The DID's genesis (`create`) op, checked like [`NodeClient::head`].
    pub async fn genesis(&self, did: &str) -> Result<Head, ClientError> {
        let resolution = self.resolve(did).await?;
        let genesis = resolution.body["didDocumentMetadata"]["genesis"]
            .as_str()
            .and_then(|v| Cid::parse(v).ok())
            .ok_or_else(|| ClientError::protocol("resolution result has no valid genesis"))?;
        if did_core::op::did_from_genesis(&genesis) != did {
            return Err(ClientError::protocol(format!(
                "the node named a genesis that does not define {did}"
            )));
        }
        self.op_in_log(did, genesis).await
    }

    /// Op `version` from the DID's log, checked: it must hash to `version`
    /// and carry a valid signature and a state.
    async fn op_in_log(&self, did: &str, version: Cid) -> Result<Head, ClientError> {
        #[derive(Deserialize)]
        struct Log {
            ops: Vec<LogEntry>,
        }
        #[derive(Deserialize)]
        struct LogEntry {
            cid: String,
            op: Operation,
        }
        let resp = self
            .send(self.http.get(self.url(&format!("/v1/dids/{did}/log"))))
            .await?;
        let log: Log = json_ok(resp).await?;
        let entry = log
            .ops
            .into_iter()
            .find(|e| e.cid == version.to_string())
            .ok_or_else(|| {
                ClientError::protocol(format!("the log of {did} lacks its head {version}"))
            })?;
        let (cid, _) = entry
            .op
            .check_self(&did_core::Limits::default())
            .map_err(|e| ClientError::protocol(format!("head op does not check: {e}")))?;
        if cid != version {
            return Err(ClientError::protocol(
                "head op does not hash to the versionId",
            ));
        }
        let state = entry
            .op
            .state
            .ok_or_else(|| ClientError::protocol("head op carries no state"))?;
        Ok(Head {
            cid,
            state,
            created_at: entry.op.created_at,
        })
    }

    pub async fn challenge(
        &self,
        did: &str,
        audience: Option<&str>,
    ) -> Result<ChallengeResponse, ClientError> {
        let body = ChallengeRequest {
            did: did.to_string(),
            audience: audience.map(str::to_string),
        };
        json_ok(
            self.send(self.http.post(self.url(CHALLENGE_PATH)).json(&body))
                .await?,
        )
        .await
    }

    pub async fn token(
        &self,
        did: &str,
        nonce: &str,
        signature: &str,
    ) -> Result<Token, ClientError> {
        let body = TokenRequest::signed(did, nonce, signature);
        json_ok(
            self.send(self.http.post(self.url(TOKEN_PATH)).json(&body))
                .await?,
        )
        .await
    }

    /// The whole login: challenge, the phishing checks, sign, token.
    pub async fn login(
        &self,
        did: &str,
        key: &SigningKey,
        audience: Option<&str>,
    ) -> Result<Token, ClientError> {
        let challenge = self.challenge(did, audience).await?;
        check_challenge(
            &challenge.message,
            &self.authority,
            did,
            &challenge.nonce,
            audience,
        )?;
        if let Some(a) = audience {
            if challenge.audience != a {
                return Err(ClientError::protocol(
                    "the node answered for another audience",
                ));
            }
        }
        let signature = did_core::keys::sign_b64(key, challenge.message.as_bytes());
        let token = self.token(did, &challenge.nonce, &signature).await?;
        if !token.token_type.eq_ignore_ascii_case(TOKEN_TYPE) {
            return Err(ClientError::protocol(format!(
                "unexpected token type {:?}",
                token.token_type
            )));
        }
        Ok(token)
    }

    /// `GET {base}{path}`, a 2xx JSON answer or the node's error.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        json_ok(self.send(self.http.get(self.url(path))).await?).await
    }

    /// `POST {base}{path}` with a JSON body, a 2xx JSON answer or the
    /// node's error.
    pub async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        json_ok(self.send(self.http.post(self.url(path)).json(body)).await?).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        req.send().await.map_err(|e| transport(&self.base, e))
    }
}

/// Refuses DIDs that would change the request path (`/`, `?`, `#`, …).
pub fn check_did_chars(did: &str) -> Result<(), ClientError> {
    let ok = did.starts_with("did:")
        && did.len() <= 256
        && did
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'-' | b'_' | b'%'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::usage(format!(
            "{:?} is not a DID",
            truncate(did)
        )))
    }
}

fn transport(base: &str, e: reqwest::Error) -> ClientError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The error's source chain says why (refused, reset, …).
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    ClientError::Transport(format!("cannot reach node {base}: {what} ({detail})"))
}

/// Parses a 2xx JSON body, or turns a 4xx/5xx into [`ClientError::Node`].
pub async fn json_ok<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(format!("reading the answer failed: {e}")))?;
    if !status.is_success() {
        return Err(node_error(status.as_u16(), &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::protocol(format!("HTTP {status}: {e}")))
}

/// The node's `{"error","reason"}` body as an error (or the raw text when
/// the answer is not that shape, e.g. from a proxy).
pub fn node_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Node {
            status,
            reason: if e.reason.is_empty() {
                e.error.clone()
            } else {
                e.reason
            },
            code: e.error,
        },
        Err(_) => ClientError::Node {
            status,
            code: "http_error".into(),
            reason: truncate(String::from_utf8_lossy(body).trim()),
        },
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_ECHO) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None if s.is_empty() => "(empty body)".into(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_read_the_error_body() {
        let e = node_error(
            403,
            br#"{"error":"did_deactivated","reason":"DID is deactivated"}"#,
        );
        assert_eq!(
            e.to_string(),
            "DID is deactivated (did_deactivated, HTTP 403)"
        );
        let e = node_error(502, b"Bad Gateway");
        assert_eq!(e.to_string(), "Bad Gateway (http_error, HTTP 502)");
    }

    #[test]
    fn dids_cannot_escape_the_path() {
        assert!(check_did_chars("did:mesh:abc").is_ok());
        assert!(check_did_chars("did:key:z6Mk").is_ok());
        assert!(check_did_chars("did:mesh:abc/../../v1/ops").is_err());
        assert!(check_did_chars("did:mesh:a?b").is_err());
        assert!(check_did_chars("mesh:abc").is_err());
    }

    #[test]
    fn only_http_urls() {
        assert!(NodeClient::new("https://node.example").is_err());
        assert!(NodeClient::new("node.example:7001").is_err());
        assert_eq!(
            NodeClient::new("http://127.0.0.1:7001/").unwrap().base(),
            "http://127.0.0.1:7001"
        );
    }
}
