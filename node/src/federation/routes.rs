//! The federation endpoints (module doc of [`super`]; JSON errors are
//! `{"error","reason"}`, pages are HTML with `data-testid` markers).
//!
//! | route | answer |
//! |---|---|
//! | `GET /federation/{name}/start?request=H` | 303 to the provider |
//! | `POST /federation/{name}/cli {"purpose":"login"\|"link","did"?}` | `{"open","poll","expires_at"}` |
//! | `GET /federation/cli/{poll}` | `{"status":"waiting"\|"done"\|"refused"\|"expired",…}` |
//! | `GET /federation/{name}/callback?code&state` (or `error&state`) | 303 to the app, or a page |
//! | `POST /federation/attest {"fed","did"}` | `{"link":{provider,commitment,attested_by,attested_at,attestation}}` |
//!
//! Error codes (poll `error`, page `data-error`, JSON `error`):
//! `invalid_state` (unknown, used or expired `state`, another provider's,
//! or another browser's), `provider_error` (the provider answered an
//! error), `provider_unavailable` (down, slow: [`TOTAL`] at most),
//! `provider_misconfigured`, `invalid_id_token`, `not_linked`,
//! `ambiguous_link`, `already_linked`, `did_unavailable`, `not_a_member`,
//! `unknown_provider`, `busy`, `more_factors_needed`.
//!
//! A federated sign-in is one factor (issue 11): the linked account. A DID
//! whose login policy needs more than one factor, or does not count that
//! link, or a page request that demands MFA (`acr_values`), gets
//! `more_factors_needed` (401) on the page or in the poll, with a reason
//! that says what to use instead; nothing is issued.

use super::flow::{self, FedProof, Flow, PollStatus, Purpose, FLOW_LIFE};
use super::idtoken::{self, Expected};
use super::provider::{Provider, ProviderError};
use crate::api::ApiError;
use crate::oidc::authorize::{escape_html, html_page};
use crate::oidc::code::{self, redirect_with};
use crate::oidc::request::AuthRequest;
use crate::oidc::token::AccessClaims;
use crate::NodeState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use did_core::client::IdTokenAlg;
use did_core::federation::{commitment, find_linked, sign_attestation, Attestation, LinkLookup};
use did_core::proto::Claims;
use did_core::PublicKey;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Longest a callback waits on the provider in all (discovery, token
/// request, JWKS): a provider that is down or hanging is refused within
/// this, never later.
pub const TOTAL: Duration = Duration::from_secs(5);
/// Longest query string read.
const MAX_QUERY: usize = 8192;
/// Prefix of the browser-binding cookie of a page flow ([`flow`]).
const COOKIE_PREFIX: &str = "didmesh_fed_";

/// A refusal, as a page, a poll answer or JSON.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

fn refusal(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        reason: reason.into(),
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError::new(r.status, r.error, r.reason)
    }
}

impl From<ProviderError> for Refusal {
    fn from(e: ProviderError) -> Refusal {
        let reason = e.to_string();
        match e {
            ProviderError::Unavailable(..) => {
                refusal(StatusCode::BAD_GATEWAY, "provider_unavailable", reason)
            }
            ProviderError::Refused(..) => {
                refusal(StatusCode::BAD_GATEWAY, "provider_error", reason)
            }
            ProviderError::Misconfigured(..) => {
                refusal(StatusCode::BAD_GATEWAY, "provider_misconfigured", reason)
            }
        }
    }
}

/// The routes (merged by [`crate::api::router`]); `limited` wraps them
/// in the per-network login limiter.
pub fn routes(
    state: &Arc<NodeState>,
    limited: impl Fn(Router<Arc<NodeState>>) -> Router<Arc<NodeState>>,
) -> Router<Arc<NodeState>> {
    // The not-linked page calls attest from the sign-in page's origin.
    let origins: Vec<HeaderValue> = state
        .oidc
        .settings
        .origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST])
        .allow_headers([header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let attest = Router::new()
        .route("/federation/attest", post(attest))
        .layer(cors);
    limited(
        Router::new()
            .route("/federation/{name}/start", get(start))
            .route("/federation/{name}/cli", post(cli_start))
            .route("/federation/{name}/callback", get(callback))
            .merge(attest),
    )
    // Polled every 500 ms by the CLI: not counted against logins.
    .route("/federation/cli/{poll}", get(cli_poll))
}

fn query_params(query: Option<String>) -> Result<HashMap<String, String>, String> {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return Err("the query is too long".into());
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if v.is_empty() {
            continue;
        }
        // RFC 6749 §3.1: a parameter sent twice is an error.
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("{k} is repeated"));
        }
    }
    Ok(out)
}

fn member_check(state: &NodeState) -> Result<(), Refusal> {
    if state.is_member() {
        return Ok(());
    }
    Err(refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_a_member",
        "this node is not a member of the network and cannot sign anyone in",
    ))
}

fn find_provider(state: &NodeState, name: &str) -> Result<Arc<Provider>, Refusal> {
    state.federation.provider(name).ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!(
                "this node has no provider called {:?}",
                name.chars().take(32).collect::<String>()
            ),
        )
    })
}

/// Starts a flow at `provider` and returns its `state` and the URL of the
/// provider's authorization endpoint (OpenID Connect Core §3.1.2.1).
async fn begin(
    state: &NodeState,
    provider: &Provider,
    purpose: Purpose,
) -> Result<(String, String, u64), Refusal> {
    let d = provider.discovery().await?;
    let now = crate::now();
    let (verifier, challenge) = flow::pkce();
    let nonce = flow::random_id();
    let expires_at = now + FLOW_LIFE;
    let flow_state = state
        .federation
        .flows
        .start(
            Flow {
                provider: provider.config.name.clone(),
                nonce: nonce.clone(),
                verifier,
                purpose,
                expires_at,
            },
            now,
        )
        .ok_or_else(busy)?;
    let c = &provider.config;
    let scope = c.scopes.join(" ");
    let redirect_uri = super::callback_url(&state.public_url, &c.name);
    let url = redirect_with(
        &d.authorization_endpoint,
        &[
            ("response_type", "code"),
            ("client_id", &c.client_id),
            ("redirect_uri", &redirect_uri),
            ("scope", &scope),
            ("state", &flow_state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    Ok((flow_state, url, expires_at))
}

fn busy() -> Refusal {
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many sign-ins in progress; try again shortly",
    )
}

/// `GET /federation/{name}/start?request=HANDLE`: the sign-in page's
/// "Continue with NAME".
async fn start(
    State(state): State<Arc<NodeState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    match start_inner(&state, &name, query).await {
        Ok(r) => r,
        Err((r, back)) => refusal_page(&state, &r, back.as_ref()),
    }
}

async fn start_inner(
    state: &NodeState,
    name: &str,
    query: Option<String>,
) -> Result<Response, (Refusal, Option<AuthRequest>)> {
    let params = query_params(query)
        .map_err(|e| (refusal(StatusCode::BAD_REQUEST, "invalid_request", e), None))?;
    let handle = params.get("request").ok_or_else(|| {
        (
            refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the sign-in request is missing; start again from the app",
            ),
            None,
        )
    })?;
    let request = code::open_request(state, handle).map_err(|e| {
        (
            refusal(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
            None,
        )
    })?;
    let back = Some(request.clone());
    member_check(state).map_err(|r| (r, back.clone()))?;
    let provider = find_provider(state, name).map_err(|r| (r, back.clone()))?;
    let binder = flow::random_id();
    let purpose = Purpose::Page {
        request,
        binder: flow::binder_hash(&binder),
    };
    let (flow_state, url, _) = begin(state, &provider, purpose)
        .await
        .map_err(|r| (r, back.clone()))?;
    let mut resp = see_other(&url);
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    // SameSite=Lax: sent on the provider's top-level redirect back to us,
    // not on cross-site subrequests; HttpOnly: no script reads it.
    let cookie = format!(
        "{}={binder}; Path=/federation/; Max-Age={FLOW_LIFE}; HttpOnly; SameSite=Lax{secure}",
        cookie_name(&flow_state)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    tracing::info!(provider = %provider.config.name, "federated sign-in started (page)");
    Ok(resp)
}

/// The cookie of the flow `state`: one per flow, so two tabs do not
/// overwrite each other's.
fn cookie_name(flow_state: &str) -> String {
    let h = flow::binder_hash(flow_state);
    format!("{COOKIE_PREFIX}{}", data_encoding::HEXLOWER.encode(&h[..8]))
}

/// The cookie that binds a link offer (`fed` handle) to the browser that
/// signed in at the provider ([`attest`]).
fn fedlink_cookie_name(fed: &str) -> String {
    let h = blake3::hash(fed.as_bytes());
    format!(
        "{FEDLINK_COOKIE_PREFIX}{}",
        data_encoding::HEXLOWER.encode(&h.as_bytes()[..8])
    )
}

/// Prefix of [`fedlink_cookie_name`].
const FEDLINK_COOKIE_PREFIX: &str = "didmesh_fedlink_";

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Body of `POST /federation/{name}/cli`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliBody {
    pub purpose: String,
    #[serde(default)]
    pub did: Option<String>,
}

/// The DID named for a link, resolved now: a `did:mesh` in good standing.
fn usable_did(state: &NodeState, did: &str) -> Result<(), Refusal> {
    did_core::op::parse_mesh_did(did).map_err(|e| {
        refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("only a did:mesh can hold links: {e}"),
        )
    })?;
    let ledger = state.ledger.read().map_err(|_| busy())?;
    let view = ledger.resolve(did).ok_or_else(|| {
        refusal(
            StatusCode::NOT_FOUND,
            "unknown_did",
            "this DID is not known to this node (yet)",
        )
    })?;
    if view.usable_state().is_none() {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "did_unavailable",
            "this DID is deactivated or disputed",
        ));
    }
    Ok(())
}

/// `POST /federation/{name}/cli`.
async fn cli_start(
    State(state): State<Arc<NodeState>>,
    Path(name): Path<String>,
    body: Result<Json<CliBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let provider = find_provider(&state, &name)?;
    member_check(&state)?;
    let now = crate::now();
    let link_did = match (body.purpose.as_str(), body.did) {
        ("login", None) => None,
        ("login", Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "did is for purpose link only",
            ))
        }
        ("link", Some(did)) => {
            usable_did(&state, &did)?;
            Some(did)
        }
        ("link", None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "purpose link needs the did to link",
            ))
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "purpose must be login or link",
            ))
        }
    };
    let poll = state.federation.flows.new_poll(now).ok_or_else(busy)?;
    let purpose = match link_did {
        None => Purpose::CliLogin { poll: poll.clone() },
        Some(did) => Purpose::CliLink {
            poll: poll.clone(),
            did,
        },
    };
    let (_, open, expires_at) = begin(&state, &provider, purpose).await?;
    tracing::info!(provider = %provider.config.name, purpose = %body.purpose, "federated sign-in started (cli)");
    Ok(no_store(
        StatusCode::OK,
        json!({"open": open, "poll": poll, "expires_at": expires_at}),
    ))
}

/// `GET /federation/cli/{poll}`.
async fn cli_poll(State(state): State<Arc<NodeState>>, Path(poll): Path<String>) -> Response {
    let body = match state.federation.flows.poll(&poll, crate::now()) {
        PollStatus::Waiting => json!({"status": "waiting"}),
        PollStatus::Token { token, did } => json!({"status": "done", "token": token, "did": did}),
        PollStatus::Link(a) => json!({"status": "done", "link": a}),
        PollStatus::Refused { error, reason } => {
            json!({"status": "refused", "error": error, "reason": reason})
        }
        PollStatus::Expired => json!({"status": "expired"}),
    };
    no_store(StatusCode::OK, body)
}

/// What a verified callback produced.
enum Outcome {
    /// Page flow: on to the app.
    Redirect(String),
    /// Page flow: the account is not linked; the `fed` handle.
    NotLinked { request: AuthRequest, fed: String },
    /// CLI flow: settled; back to the terminal.
    CliDone,
}

/// `GET /federation/{name}/callback`.
async fn callback(
    State(state): State<Arc<NodeState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match query_params(query) {
        Ok(p) => p,
        Err(e) => {
            let r = refusal(StatusCode::BAD_REQUEST, "invalid_request", e);
            return refusal_page(&state, &r, None);
        }
    };
    let now = crate::now();
    let flow = params
        .get("state")
        .and_then(|s| Some((s.clone(), state.federation.flows.take(s, now)?)));
    let Some((flow_state, flow)) = flow else {
        tracing::info!(provider = %name.chars().take(32).collect::<String>(), "federation callback with an unknown state");
        let r = refusal(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "this sign-in answer does not belong to a sign-in this node started, or it was already used or expired (state mismatch); start again",
        );
        return refusal_page(&state, &r, None);
    };
    let back = match &flow.purpose {
        Purpose::Page { request, .. } => Some(request.clone()),
        _ => None,
    };
    let poll = match &flow.purpose {
        Purpose::CliLogin { poll } | Purpose::CliLink { poll, .. } => Some(poll.clone()),
        Purpose::Page { .. } => None,
    };
    let result = finish(&state, &name, &flow_state, flow, &params, &headers).await;
    let mut resp = match result {
        Ok(Outcome::Redirect(url)) => see_other(&url),
        Ok(Outcome::NotLinked { request, fed }) => {
            let mut page = not_linked_page(&state, &name, &request, &fed);
            // The link offer belongs to THIS browser: `attest` wants the
            // handle back in this cookie too, so a create-and-link URL sent
            // to someone else (to link the sender's account to the
            // victim's new DID) is refused in the victim's browser.
            let secure = if state.public_url.starts_with("https://") {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!(
                "{}={fed}; Path=/federation/attest; Max-Age={FLOW_LIFE}; HttpOnly; \
                 SameSite=Strict{secure}",
                fedlink_cookie_name(&fed)
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                page.headers_mut().append(header::SET_COOKIE, v);
            }
            page
        }
        Ok(Outcome::CliDone) => done_page(&state),
        Err(r) => {
            tracing::info!(provider = %name, error = r.error, "federated sign-in refused");
            state.metrics.logins_failed.inc();
            if let Some(poll) = &poll {
                state.federation.flows.settle(
                    poll,
                    PollStatus::Refused {
                        error: r.error.to_string(),
                        reason: r.reason.clone(),
                    },
                );
            }
            refusal_page(&state, &r, back.as_ref())
        }
    };
    // The flow is over either way: drop its browser cookie.
    let clear = format!(
        "{}=; Path=/federation/; Max-Age=0; HttpOnly; SameSite=Lax",
        cookie_name(&flow_state)
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Everything after the flow was found (module doc of [`super`]).
async fn finish(
    state: &NodeState,
    name: &str,
    flow_state: &str,
    flow: Flow,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Outcome, Refusal> {
    let invalid_state = |why: &str| refusal(StatusCode::BAD_REQUEST, "invalid_state", why);
    if flow.provider != name {
        return Err(invalid_state(
            "this sign-in answer came back for another provider than the one it was sent to",
        ));
    }
    if let Purpose::Page { binder, .. } = &flow.purpose {
        let cookie = cookie_value(headers, &cookie_name(flow_state));
        if cookie.is_none_or(|c| flow::binder_hash(&c) != *binder) {
            return Err(invalid_state(
                "this sign-in was started in another browser (or its cookie was lost); start again here",
            ));
        }
    }
    let provider = find_provider(state, name)?;
    // RFC 9207 §2.4: an `iss` in the answer must be the provider's.
    if params
        .get("iss")
        .is_some_and(|iss| *iss != provider.config.issuer)
    {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "invalid_state",
            "the answer names another issuer than this provider (mix-up)",
        ));
    }
    if let Some(error) = params.get("error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "provider_error",
            format!("the provider did not sign you in ({error})"),
        ));
    }
    let code_text = params.get("code").ok_or_else(|| {
        refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the provider's answer has no code",
        )
    })?;
    let verified = tokio::time::timeout(TOTAL, verify_at(state, &provider, &flow, code_text))
        .await
        .map_err(|_| {
            refusal(
                StatusCode::GATEWAY_TIMEOUT,
                "provider_unavailable",
                format!(
                    "the provider {name} did not answer within {} s",
                    TOTAL.as_secs()
                ),
            )
        })??;
    let network_id = &state.genesis.network_id;
    let account = commitment(network_id, &verified.iss, &verified.sub);
    let prefix: String = account.chars().take(8).collect();
    let lookup = lookup(state, name, &account)?;
    match flow.purpose {
        Purpose::Page { request, .. } => match lookup {
            LinkLookup::One(did) => {
                check_client(state, &request)?;
                one_factor_enough(state, &did, name, &account, request.mfa)?;
                let code = code::issue_with_idp(state, &request, &did, &["fed"], Some(name))
                    .map_err(|e| {
                        tracing::error!(error = %e, "authorization code not issued");
                        refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    })?;
                tracing::info!(provider = %name, commitment = %prefix, "federated sign-in (page)");
                Ok(Outcome::Redirect(code::success_redirect(
                    state, &request, &code,
                )))
            }
            LinkLookup::NotLinked => {
                let now = crate::now();
                let fed = state
                    .federation
                    .flows
                    .keep_proof(
                        FedProof {
                            provider: name.to_string(),
                            commitment: account,
                            expires_at: now + FLOW_LIFE,
                        },
                        now,
                    )
                    .ok_or_else(busy)?;
                tracing::info!(provider = %name, commitment = %prefix, "federated account not linked");
                Ok(Outcome::NotLinked { request, fed })
            }
            LinkLookup::Ambiguous(_) => Err(ambiguous()),
        },
        Purpose::CliLogin { poll } => match lookup {
            LinkLookup::One(did) => {
                one_factor_enough(state, &did, name, &account, false)?;
                let token = cli_token(state, &did, name)?;
                state.metrics.tokens_issued.inc();
                tracing::info!(provider = %name, commitment = %prefix, "federated sign-in (cli)");
                state
                    .federation
                    .flows
                    .settle(&poll, PollStatus::Token { token, did });
                Ok(Outcome::CliDone)
            }
            LinkLookup::NotLinked => Err(not_linked()),
            LinkLookup::Ambiguous(_) => Err(ambiguous()),
        },
        Purpose::CliLink { poll, did } => {
            let attestation = attest_for(state, name, &account, &did, &lookup)?;
            tracing::info!(provider = %name, commitment = %prefix, "federated account attested for linking");
            state
                .federation
                .flows
                .settle(&poll, PollStatus::Link(Box::new(attestation)));
            Ok(Outcome::CliDone)
        }
    }
}

/// The code exchange and the ID token's checks ([`idtoken`]).
async fn verify_at(
    state: &NodeState,
    provider: &Provider,
    flow: &Flow,
    code_text: &str,
) -> Result<idtoken::Verified, Refusal> {
    let c = &provider.config;
    let d = provider.discovery().await?;
    let redirect_uri = super::callback_url(&state.public_url, &c.name);
    let id_token = provider
        .redeem(&d, code_text, &redirect_uri, &flow.verifier)
        .await?;
    let bad = |e: idtoken::IdTokenError| {
        refusal(StatusCode::FORBIDDEN, "invalid_id_token", e.to_string())
    };
    let (alg, kid) = idtoken::header(&id_token, &provider.algs(&d)).map_err(bad)?;
    let key = provider
        .key_for(&d, kid.as_deref(), alg)
        .await?
        .ok_or_else(|| bad(idtoken::IdTokenError::UnknownKey))?;
    let expected = Expected {
        issuer: &c.issuer,
        client_id: &c.client_id,
        nonce: &flow.nonce,
        now: crate::now(),
    };
    idtoken::verify(&id_token, alg, &key, expected).map_err(bad)
}

fn member_keys(ledger: &did_core::Ledger) -> Vec<PublicKey> {
    ledger.members().iter().map(|m| m.key).collect()
}

/// Who the account signs in as ([`find_linked`]).
fn lookup(state: &NodeState, provider: &str, account: &str) -> Result<LinkLookup, Refusal> {
    let ledger = state.ledger.read().map_err(|_| busy())?;
    let members = member_keys(&ledger);
    Ok(find_linked(
        &ledger,
        &state.genesis.network_id,
        provider,
        account,
        &members,
    ))
}

/// Whether the federated sign-in of `did` through `provider` (account
/// commitment `account`), one factor, is a login on its own: the DID's
/// policy counts that link and needs one factor, and the request does not
/// demand MFA (module doc).
fn one_factor_enough(
    state: &NodeState,
    did: &str,
    provider: &str,
    account: &str,
    mfa: bool,
) -> Result<(), Refusal> {
    let ledger = state.ledger.read().map_err(|_| busy())?;
    let did_state = ledger
        .resolve(did)
        .and_then(|v| v.usable_state().cloned())
        .ok_or_else(|| {
            refusal(
                StatusCode::FORBIDDEN,
                "did_unavailable",
                "this DID is deactivated or disputed",
            )
        })?;
    drop(ledger);
    let (policy, counted) = did_state.login_requirement();
    let required = if mfa { policy.max(2) } else { policy };
    let link = did_state
        .links
        .iter()
        .find(|l| l.commitment == account && l.provider == provider)
        .map(|l| l.id.as_str());
    let counts = link.is_some_and(|id| counted.iter().any(|f| f.id == id));
    if counts && required <= 1 {
        return Ok(());
    }
    let why = if !counts {
        format!("this DID's login policy does not count the linked {provider} account")
    } else if policy > 1 {
        format!("this DID's login policy needs {required} distinct factors, and a sign-in through {provider} is one")
    } else {
        format!("the app asks for two factors, and a sign-in through {provider} is one")
    };
    Err(refusal(
        StatusCode::UNAUTHORIZED,
        "more_factors_needed",
        format!(
            "{why}; sign in with your wallet's keys or passkey instead (didmesh login, or the sign-in page)"
        ),
    ))
}

fn not_linked() -> Refusal {
    refusal(
        StatusCode::FORBIDDEN,
        "not_linked",
        "this account at the provider is not linked to any DID; link it first with `didmesh link --via`",
    )
}

fn ambiguous() -> Refusal {
    refusal(
        StatusCode::CONFLICT,
        "ambiguous_link",
        "this account at the provider is linked to more than one DID; its owner must remove one link",
    )
}

/// An attestation that `did` may link `account` — unless the account is
/// already validly linked to another DID (one account, one DID).
fn attest_for(
    state: &NodeState,
    provider: &str,
    account: &str,
    did: &str,
    lookup: &LinkLookup,
) -> Result<Attestation, Refusal> {
    match lookup {
        LinkLookup::One(other) if other != did => {
            return Err(refusal(
                StatusCode::CONFLICT,
                "already_linked",
                "this account at the provider is already linked to another DID",
            ))
        }
        LinkLookup::Ambiguous(_) => return Err(ambiguous()),
        _ => {}
    }
    usable_did(state, did)?;
    member_check(state)?;
    Ok(sign_attestation(
        &state.token_keys.ed25519_signing_key(),
        &state.genesis.network_id,
        did,
        provider,
        account,
        crate::now(),
    ))
}

/// The authorization request's client must still be registered with this
/// redirect URI (as [`crate::oidc::signin`] checks).
fn check_client(state: &NodeState, req: &AuthRequest) -> Result<(), Refusal> {
    let client = crate::oidc::find_client(state, &req.client_id)
        .map_err(|e| refusal(StatusCode::BAD_REQUEST, "invalid_client", e.to_string()))?;
    if !client.redirect_uris.contains(&req.redirect_uri) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "the app no longer has this redirect URI",
        ));
    }
    Ok(())
}

/// The CLI's access token: what `/v1/auth/token` issues (audience the
/// node's default), with `amr ["fed"]` and `idp` (RFC 8176 has no method
/// for "a federated provider"; `fed` is ours).
fn cli_token(state: &NodeState, did: &str, idp: &str) -> Result<String, Refusal> {
    member_check(state)?;
    let s = state.auth.settings();
    let now = crate::now();
    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let mut claims = Claims::for_login(&s.issuer, did, &s.default_audience, now, s.token_ttl, jti);
    claims.amr = vec!["fed".to_string()];
    claims.rev = Some(crate::revocations::watermark(state, did));
    state
        .token_keys
        .sign(
            IdTokenAlg::EdDSA,
            &AccessClaims {
                claims: &claims,
                idp: Some(idp),
            },
        )
        .map_err(|e| {
            tracing::error!(error = %e, "token not signed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "token signing failed",
            )
        })
}

/// Body of `POST /federation/attest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestBody {
    pub fed: String,
    pub did: String,
}

/// `POST /federation/attest {fed, did}`: the not-linked page, after it
/// created a DID in the browser wallet, gets the attestation to link the
/// account it verified. The handle is used up only when the attestation
/// is given, so a DID that has not reached this node yet can be retried.
async fn attest(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Result<Json<AttestBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let now = crate::now();
    // Only the browser that came back from the provider holds the offer's
    // cookie (set with the not-linked page): someone who forwards their
    // create-and-link URL to a victim gets nothing linked.
    let bound = cookie_value(&headers, &fedlink_cookie_name(&body.fed))
        .is_some_and(|v| v.len() == body.fed.len() && v == body.fed);
    if !bound {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fed_not_this_browser",
            "this link offer was made for another browser: sign in at the provider from this \
             browser to link your account",
        ));
    }
    let unknown = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_fed",
            "this link offer is unknown, used or expired; sign in at the provider again",
        )
    };
    let proof = state
        .federation
        .flows
        .peek_proof(&body.fed, now)
        .ok_or_else(unknown)?;
    let lookup = lookup(&state, &proof.provider, &proof.commitment)?;
    let attestation = attest_for(
        &state,
        &proof.provider,
        &proof.commitment,
        &body.did,
        &lookup,
    )?;
    state
        .federation
        .flows
        .take_proof(&body.fed, now)
        .ok_or_else(unknown)?;
    let prefix: String = proof.commitment.chars().take(8).collect();
    tracing::info!(provider = %proof.provider, commitment = %prefix, "federated account attested for linking (page)");
    Ok(no_store(StatusCode::OK, json!({"link": attestation})))
}

fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// An HTML page with the sign-in page's security headers: nothing but
/// this origin's stylesheet, never framed, cached or referred.
fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/oidc/static/signin.css\"></head>\
         <body><main>{body}</main></body></html>\n",
        escape_html(title)
    );
    html_page(
        status,
        page,
        Some(HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'none'",
        )),
    )
}

/// The sign-in page of `req` again (a new authorization request at this
/// node with the same parameters), with `extra` parameters.
fn signin_url(state: &NodeState, req: &AuthRequest, extra: &[(&str, &str)]) -> String {
    let mut p: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("scope", "openid"),
    ];
    if let Some(s) = &req.state {
        p.push(("state", s));
    }
    if let Some(n) = &req.nonce {
        p.push(("nonce", n));
    }
    if let Some(c) = &req.code_challenge {
        p.push(("code_challenge", c));
        p.push(("code_challenge_method", "S256"));
    }
    if req.mfa {
        p.push(("acr_values", did_core::proto::ACR_MFA));
    }
    p.extend_from_slice(extra);
    redirect_with(
        &format!("{}/oidc/authorize", state.oidc.settings.node_url),
        &p,
    )
}

/// A refusal: what went wrong and what to do (`data-testid="fed-error"`,
/// `data-error` = the code).
fn refusal_page(state: &NodeState, r: &Refusal, back: Option<&AuthRequest>) -> Response {
    let again = match back {
        Some(req) => format!(
            "<p><a data-testid=\"back-to-signin\" href=\"{}\">Back to the sign-in page</a></p>",
            escape_html(&signin_url(state, req, &[]))
        ),
        None => "<p>Go back to the app (or your terminal) and start again.</p>".to_string(),
    };
    let body = format!(
        "<h1>Sign-in refused</h1>\
         <p class=\"error\" data-testid=\"fed-error\" data-error=\"{}\">{}</p>{again}",
        r.error,
        escape_html(&r.reason)
    );
    html(r.status, "Sign-in refused", &body)
}

/// The not-linked page (`data-testid="not-linked"`): the account is
/// verified but no DID has linked it; no token for a new identity, but
/// the offer to create a DID in the browser wallet and link it.
fn not_linked_page(state: &NodeState, provider: &str, req: &AuthRequest, fed: &str) -> Response {
    let display = state
        .federation
        .provider(provider)
        .map(|p| p.config.display_name.clone())
        .unwrap_or_else(|| provider.to_string());
    let create = signin_url(state, req, &[("fed", fed)]);
    let body = format!(
        "<h1>This account is not linked to a DID</h1>\
         <p data-testid=\"not-linked\" data-provider=\"{p}\">You signed in at {d}, but that account is not \
         linked to any DID on this network, so it cannot sign you in to the app. No new identity was \
         created for you.</p>\
         <p>If you already have a DID, link this account to it from your wallet \
         (<code>didmesh link --via {p}</code>) and sign in again.</p>\
         <p><a data-testid=\"create-and-link\" data-fed=\"{f}\" href=\"{u}\">Create a DID in this \
         browser and link this {d} account to it</a></p>",
        p = escape_html(provider),
        d = escape_html(&display),
        f = escape_html(fed),
        u = escape_html(&create),
    );
    html(StatusCode::FORBIDDEN, "Account not linked", &body)
}

/// A CLI flow is finished (`data-testid="fed-done"`).
fn done_page(_state: &NodeState) -> Response {
    html(
        StatusCode::OK,
        "Signed in",
        "<h1>Done</h1><p data-testid=\"fed-done\">The provider signed you in. \
         Go back to your terminal; you can close this window.</p>",
    )
}
