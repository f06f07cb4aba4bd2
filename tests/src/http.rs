//! A small blocking HTTP client on top of reqwest's async one, so tests on
//! spawned binaries stay plain `#[test]` functions. Each client owns a
//! current-thread runtime; its calls answer the status and the JSON body
//! (`Null` when the body is not JSON).

use crate::login::{self, LoginError};
use did_core::Operation;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use std::time::Duration;

/// A status and a JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

/// A client with a 10 s timeout per request.
pub fn blocking_client() -> BlockingClient {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let client = rt.block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"))
    });
    BlockingClient { rt, client }
}

/// Percent-encodes one form or query value (RFC 3986 unreserved characters
/// kept, everything else `%XX`).
pub fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `k1=v1&k2=v2`, each part percent-encoded.
pub fn form_urlencode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

impl BlockingClient {
    pub fn get_json(&self, url: &str) -> Result<Answer, reqwest::Error> {
        self.rt
            .block_on(async { Ok(answer(self.client.get(url).send().await?).await) })
    }

    /// `GET url` with `Authorization: Bearer token`.
    pub fn get_bearer(&self, url: &str, token: &str) -> Result<Answer, reqwest::Error> {
        self.rt.block_on(async {
            Ok(answer(self.client.get(url).bearer_auth(token).send().await?).await)
        })
    }

    /// `GET url`: the status and the body as text (an HTML page).
    pub fn get_text(&self, url: &str) -> Result<(u16, String), reqwest::Error> {
        self.rt.block_on(async {
            let r = self.client.get(url).send().await?;
            let status = r.status().as_u16();
            Ok((status, r.text().await?))
        })
    }

    /// `POST url` with an `application/x-www-form-urlencoded` body made of
    /// `fields` (an OAuth token request, RFC 6749 §4.1.3).
    pub fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Result<Answer, reqwest::Error> {
        let body = form_urlencode(fields);
        self.rt.block_on(async {
            Ok(answer(
                self.client
                    .post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await?,
            )
            .await)
        })
    }

    pub fn post_json(&self, url: &str, body: &Value) -> Result<Answer, reqwest::Error> {
        self.rt
            .block_on(async { Ok(answer(self.client.post(url).json(body).send().await?).await) })
    }

    /// `POST {node}/v1/ops`; panics when the node cannot be reached.
    pub fn submit(&self, node: &str, op: &Operation) -> Answer {
        self.try_submit(node, op)
            .unwrap_or_else(|e| panic!("POST {node}/v1/ops: {e}"))
    }

    /// `POST {node}/v1/ops`, or the transport error (a node being killed).
    pub fn try_submit(&self, node: &str, op: &Operation) -> Result<Answer, reqwest::Error> {
        let body = serde_json::to_value(op).unwrap_or_else(|e| panic!("op to JSON: {e}"));
        self.post_json(&format!("{node}/v1/ops"), &body)
    }

    /// `GET {node}/v1/status` (`Null` when the node does not answer).
    pub fn status(&self, node: &str) -> Value {
        self.get_json(&format!("{node}/v1/status"))
            .map(|a| a.body)
            .unwrap_or(Value::Null)
    }

    /// `GET {node}/1.0/identifiers/{did}`.
    pub fn resolve(&self, node: &str, did: &str) -> Answer {
        self.get_json(&format!("{node}/1.0/identifiers/{did}"))
            .unwrap_or_else(|e| panic!("resolve {did} at {node}: {e}"))
    }

    /// The DID's current version (`didDocumentMetadata.versionId`) at `node`.
    pub fn head(&self, node: &str, did: &str) -> Option<String> {
        let a = self
            .get_json(&format!("{node}/1.0/identifiers/{did}"))
            .ok()?;
        a.body["didDocumentMetadata"]["versionId"]
            .as_str()
            .map(str::to_string)
    }

    /// How many members `{node}/.well-known/jwks.json` holds keys for: its
    /// Ed25519 (`OKP`) keys, one per member (a member's RSA and P-256
    /// ID-token keys come with it when the ledger has them).
    pub fn jwks_len(&self, node: &str) -> usize {
        self.get_json(&format!("{node}/.well-known/jwks.json"))
            .map(|a| {
                a.body["keys"]
                    .as_array()
                    .map_or(0, |keys| keys.iter().filter(|k| k["kty"] == "OKP").count())
            })
            .unwrap_or(0)
    }

    /// A login at `node` through the client library ([`login::login`]).
    pub fn login(&self, node: &str, did: &str, key: &SigningKey) -> Result<String, LoginError> {
        self.rt.block_on(login::login(node, did, key, None))
    }
}
