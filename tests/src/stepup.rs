//! Step-up (issue 11, RFC 9470) for tests: a DID whose login needs several
//! keys, a login that presents them all at a node, and the home-api route
//! that needs such a login.
//!
//! The end-to-end a plain `#[test]` builds from these (a two-key login at
//! a spawned node, then home-api's private route; the blocking helpers own
//! their runtime, like [`crate::http::BlockingClient`], so they must not be
//! called inside a tokio runtime — use [`login_with_keys`] there):
//!
//! ```no_run
//! use didmesh_tests::{http, ops, stepup, HomeApi, Node};
//! # fn e2e(node: &Node) {
//! let home = HomeApi::start(&format!("{}/.well-known/jwks.json", node.url));
//! let (laptop, phone) = (ops::key(7, 0), ops::key(7, 1));
//! let (op, did) = stepup::create_multi_key(&[(&laptop, "laptop"), (&phone, "phone")], 2);
//! assert!(http::blocking_client().submit(&node.url, &op).is_success());
//! let one = stepup::login_with_keys_blocking(&node.url, &did, &[&laptop], None);
//! assert_eq!(one.unwrap_err().error(), Some("more_factors_needed"));
//! let token = stepup::login_with_keys_blocking(&node.url, &did, &[&laptop, &phone], None).unwrap();
//! assert_eq!(didmesh_tests::issuer::claims(&token)["acr"], "urn:didmesh:acr:mfa");
//! assert_eq!(stepup::private(&home, Some(&token)).status, 200);
//! // a one-key token of a did:key: the RFC 9470 401
//! let user = ops::key(8, 0);
//! let did_key = did_core::keys::public_of(&user).did_key();
//! let single = stepup::login_with_keys_blocking(&node.url, &did_key, &[&user], None).unwrap();
//! assert!(stepup::private(&home, Some(&single)).asks_for_mfa());
//! # }
//! ```

use crate::login::LoginError;
use crate::spawn::HomeApi;
use did_core::keys::{public_of, sign_b64};
use did_core::policy::LoginPolicy;
use did_core::proto::{ChallengeResponse, ErrorBody, TokenRequest, TokenResponse};
use did_core::{DidState, Operation, Relationship, VerificationMethod};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::time::Duration;

/// Path of home-api's step-up route.
pub const PRIVATE_PATH: &str = "/api/activities/private";

/// A did:mesh state whose authentication keys are `keys` (`key-1`,
/// `key-2`, …, tagged with the given device names), whose rotation key is
/// the first one, and whose login needs `required` of them.
pub fn multi_key_state(keys: &[(&SigningKey, &str)], required: u8) -> DidState {
    let (first, _) = keys
        .first()
        .unwrap_or_else(|| panic!("multi_key_state needs at least one key"));
    let mut state = DidState::single_key(public_of(first));
    state.verification_methods.clear();
    for (i, (key, device)) in keys.iter().enumerate() {
        state.verification_methods.push(VerificationMethod {
            id: format!("key-{}", i + 1),
            public_key_multibase: public_of(key),
            relationships: vec![Relationship::Authentication],
            device: Some((*device).to_string()),
        });
    }
    state.login_policy = Some(LoginPolicy {
        required,
        factors: vec![],
    });
    state
}

/// The signed `create` of [`multi_key_state`] (signed by the first key), and
/// its DID.
pub fn create_multi_key(keys: &[(&SigningKey, &str)], required: u8) -> (Operation, String) {
    let (first, _) = keys
        .first()
        .unwrap_or_else(|| panic!("create_multi_key needs at least one key"));
    crate::ops::create(multi_key_state(keys, required), first)
}

/// A login of `did` at the node at `url` that signs the challenge with
/// every key of `keys` and sends the signatures in one token request (the
/// wire format of issue 11: `signature` = the first, `signatures` = the
/// rest). The access token, or the node's refusal (e.g. 401
/// `more_factors_needed` when the keys are too few for the DID's policy).
pub async fn login_with_keys(
    url: &str,
    did: &str,
    keys: &[&SigningKey],
    audience: Option<&str>,
) -> Result<String, LoginError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| LoginError::Client(e.to_string()))?;
    let mut body = json!({ "did": did });
    if let Some(a) = audience {
        body["audience"] = json!(a);
    }
    let challenge: ChallengeResponse =
        post(&client, &format!("{url}/v1/auth/challenge"), &body).await?;
    let mut signatures = keys
        .iter()
        .map(|k| sign_b64(k, challenge.message.as_bytes()));
    let request = TokenRequest {
        did: did.to_string(),
        nonce: challenge.nonce.clone(),
        signature: signatures.next(),
        signatures: signatures.collect(),
        ..TokenRequest::default()
    };
    let body = serde_json::to_value(&request).map_err(|e| LoginError::Client(e.to_string()))?;
    let token: TokenResponse = post(&client, &format!("{url}/v1/auth/token"), &body).await?;
    Ok(token.access_token)
}

/// [`login_with_keys`] on a runtime of its own, for plain `#[test]`
/// functions on spawned binaries.
pub fn login_with_keys_blocking(
    url: &str,
    did: &str,
    keys: &[&SigningKey],
    audience: Option<&str>,
) -> Result<String, LoginError> {
    block_on(login_with_keys(url, did, keys, audience))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
        .block_on(f)
}

/// `POST url` with a JSON body: the answer as `T`, or the node's
/// `{"error","reason"}`.
async fn post<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<T, LoginError> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| LoginError::Client(format!("POST {url}: {e}")))?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| LoginError::Client(format!("POST {url}: {e}")))?;
    if !(200..300).contains(&status) {
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or(ErrorBody {
            error: String::new(),
            reason: String::from_utf8_lossy(&bytes).into_owned(),
        });
        return Err(LoginError::Refused {
            status,
            error: err.error,
            reason: err.reason,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| LoginError::Client(format!("POST {url}: {e}")))
}

/// What home-api answered on its step-up route.
#[derive(Debug, Clone)]
pub struct StepUpAnswer {
    pub status: u16,
    /// The `WWW-Authenticate` header, if any.
    pub challenge: Option<String>,
    pub body: Value,
}

impl StepUpAnswer {
    /// Whether this is the RFC 9470 401 asking for a multi-factor login:
    /// `error="insufficient_user_authentication"` and
    /// `acr_values="urn:didmesh:acr:mfa"` in the challenge, the same error
    /// in the body.
    pub fn asks_for_mfa(&self) -> bool {
        let challenge = self.challenge.as_deref().unwrap_or_default();
        self.status == 401
            && challenge.starts_with("Bearer error=\"insufficient_user_authentication\"")
            && challenge.contains("acr_values=\"urn:didmesh:acr:mfa\"")
            && self.body["error"] == "insufficient_user_authentication"
    }
}

/// `GET /api/activities/private` at `home`, with `token` as the bearer
/// when given (blocking, like [`HomeApi::home`]).
pub fn private(home: &HomeApi, token: Option<&str>) -> StepUpAnswer {
    let url = format!("{}{PRIVATE_PATH}", home.url);
    block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        let mut request = client.get(&url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        StepUpAnswer {
            status,
            challenge,
            body,
        }
    })
}
