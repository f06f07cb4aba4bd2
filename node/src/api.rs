//! The HTTP API (README.md, "HTTP API of a node"; PROTOCOL.md §6). Handlers are thin: parse, call the
//! domain, map the error. Every error is JSON `{"error","reason"}`.
//!
//! Around every route ([`guard`]): a body limit, a request timeout, a trace
//! span without query or headers, and `CatchPanic`, so a panic in a handler
//! (a bug, or a dependency's `unwrap` on input we failed to check) is a 500
//! `{"error":"internal"}` for that request instead of a dropped connection.
//! The login endpoints and `POST /v1/ops` are rate-limited per client
//! network ([`crate::limits`]); a refusal is a 429 with `Retry-After`.

use crate::auth::{AuthError, PasskeyProof, Proofs, SmsCheckError, SmsProof};
use crate::writer::{SubmitError, Submitted};
use crate::NodeState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use did_core::document::{resolution_error, resolution_result};
use did_core::proto::{
    ChallengeRequest, ChallengeResponse, ErrorBody, OpSubmitted, TokenRequest, ACR_1FA, ACR_MFA,
    CHALLENGE_PATH, COSIGN_PATH, MORE_FACTORS_NEEDED, OPS_PATH, TOKEN_PATH,
};
use did_core::{OpError, Operation};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// Largest request body accepted (an op is at most 8 KiB canonical).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A request that takes longer is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The one error type of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
    /// More fields of the body beside `error` and `reason` (e.g.
    /// `required` and `presented` of `more_factors_needed`).
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            reason: reason.into(),
            extra: None,
        }
    }

    /// The machine-readable code (`error`).
    pub fn code(&self) -> &'static str {
        self.error
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The sentence for a human (`reason`).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The error with more body fields.
    pub fn with_fields(mut self, fields: serde_json::Map<String, serde_json::Value>) -> ApiError {
        self.extra = Some(fields);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = match self.extra {
            None => {
                let body = ErrorBody {
                    error: self.error.to_string(),
                    reason: self.reason,
                };
                (self.status, Json(body)).into_response()
            }
            Some(mut fields) => {
                fields.insert("error".into(), self.error.into());
                fields.insert("reason".into(), self.reason.into());
                (self.status, Json(serde_json::Value::Object(fields))).into_response()
            }
        };
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("DIDAuth realm=\"didmesh\""),
            );
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if r.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "invalid_request", r.body_text())
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let status = match e {
            OpError::UnknownPrev(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::Deactivated => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Op(op) => op.into(),
            SubmitError::Storage(_) => {
                tracing::error!(error = %e, "op not stored");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_failure",
                    "the op could not be stored",
                )
            }
            SubmitError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        if let AuthError::MoreFactorsNeeded {
            required,
            presented,
            reason,
        } = e
        {
            let mut fields = serde_json::Map::new();
            fields.insert("required".into(), required.into());
            fields.insert("presented".into(), presented.into());
            return ApiError::new(StatusCode::UNAUTHORIZED, MORE_FACTORS_NEEDED, reason)
                .with_fields(fields);
        }
        let (status, code) = match &e {
            AuthError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            AuthError::UnknownDid(_) => (StatusCode::NOT_FOUND, "unknown_did"),
            AuthError::Deactivated => (StatusCode::FORBIDDEN, "did_deactivated"),
            AuthError::Disputed => (StatusCode::FORBIDDEN, "did_disputed"),
            AuthError::UnknownNonce => (StatusCode::BAD_REQUEST, "invalid_challenge"),
            AuthError::Expired => (StatusCode::BAD_REQUEST, "challenge_expired"),
            AuthError::Signature(_) => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            AuthError::Passkey(_) => (StatusCode::UNAUTHORIZED, "invalid_assertion"),
            AuthError::Sms(SmsCheckError::Disabled) => {
                (StatusCode::NOT_IMPLEMENTED, "sms_disabled")
            }
            AuthError::Sms(SmsCheckError::Invalid(_)) => {
                (StatusCode::UNAUTHORIZED, "invalid_sms_code")
            }
            AuthError::MoreFactorsNeeded { .. } => (StatusCode::UNAUTHORIZED, MORE_FACTORS_NEEDED),
            AuthError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AuthError::Signing => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The node's router. `state` carries everything handlers need.
pub fn router(state: Arc<NodeState>) -> Router {
    let auth_routes = Router::new()
        .route(CHALLENGE_PATH, post(challenge))
        .route(TOKEN_PATH, post(token))
        .route(COSIGN_PATH, post(crate::oidc::pending::cosign_create))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth_rate_limit,
        ));
    // The sign-in page creates DIDs and adds passkeys from the browser,
    // from the issuer's origin (a front door) to this node: CORS for the
    // page's origins (ops are accepted from anyone anyway; the layer only
    // lets those pages read the answer).
    let ops_routes = Router::new()
        .route(OPS_PATH, post(submit_op))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ops_rate_limit,
        ))
        .layer(crate::oidc::page_cors(&state));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route(
            "/v1/network",
            get(|State(s): State<Arc<NodeState>>| async move {
                crate::views::network(&s).map(Json).map_err(ApiError::from)
            }),
        )
        .route("/1.0/identifiers/{did}", get(resolve))
        .route("/v1/dids/{did}/log", get(did_log))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/metrics", get(metrics))
        .merge(auth_routes)
        .merge(ops_routes)
        .merge(crate::oidc::routes(&state, |r| {
            r.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth_rate_limit,
            ))
        }))
        .merge(crate::federation::routes(&state, |r| {
            r.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth_rate_limit,
            ))
        }))
        .merge(crate::revocations::routes(&state))
        .merge(crate::sms::routes::routes(|r| {
            r.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth_rate_limit,
            ))
        }))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state.clone());
    let routes = if state.trusted_proxies.is_empty() {
        routes
    } else {
        routes.layer(middleware::from_fn_with_state(
            state.clone(),
            forwarded_client,
        ))
    };
    guard(routes, Some(state))
}

/// Behind a trusted proxy (`--trusted-proxy`), the client every handler
/// and rate limit sees is the last `X-Forwarded-For` entry: the address the
/// proxy itself appended. Entries before it were written by the client and
/// prove nothing; a request that does not come from a trusted proxy keeps
/// its TCP peer, whatever it claims.
async fn forwarded_client(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if state.trusted_proxies.contains(&peer.ip()) {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty())
            .and_then(|v| v.parse::<std::net::IpAddr>().ok());
        if let Some(ip) = forwarded {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(ip, peer.port())));
        }
    }
    next.run(req).await
}

/// The layers around every route (module doc). `state`, when given, counts
/// panics in `/metrics`. Public so tests can put them around a route of
/// their own (one that panics on purpose).
pub fn guard(routes: Router, state: Option<Arc<NodeState>>) -> Router {
    let on_panic = move |panic: Box<dyn std::any::Any + Send + 'static>| {
        if let Some(state) = &state {
            state.metrics.panics.inc();
        }
        // The binary's panic hook has logged where and what, on one line;
        // the client learns only that it was our fault.
        drop(panic);
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the node failed while handling this request; it is logged",
        )
        .into_response()
    };
    routes
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                // Path only: query strings and headers (tokens) never reach a log line.
                tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
}

/// A 429 telling the client when to come back (RFC 6585 §4, RFC 9110
/// §10.2.3 `Retry-After` in seconds).
fn too_many(what: &str, retry_after: u64) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} from your network; retry in {retry_after} s"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// Per-client-network rate limit for the auth endpoints (`--auth-rate`).
async fn auth_rate_limit(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if let Some(limiter) = &state.auth_limiter {
        if let Err(wait) = limiter.check(addr.ip()) {
            state.metrics.rate_limited.inc();
            return too_many("login requests", wait);
        }
    }
    next.run(req).await
}

/// Per-client-network rate limit for `POST /v1/ops` (`--ops-rate`): every
/// op accepted is kept by every node forever (README, "HTTP API").
async fn ops_rate_limit(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    if let Some(limiter) = &state.ops_limiter {
        if let Err(wait) = limiter.check(addr.ip()) {
            state.metrics.ops_rate_limited.inc();
            state.metrics.ops_rejected.inc();
            return too_many("ops", wait);
        }
    }
    next.run(req).await
}

async fn status(
    State(state): State<Arc<NodeState>>,
) -> Result<Json<crate::views::Status>, ApiError> {
    Ok(Json(crate::views::status(&state)?))
}

async fn submit_op(
    State(state): State<Arc<NodeState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| {
        state.metrics.ops_rejected.inc();
        ApiError::new(r.status(), "invalid_request", r.body_text())
    })?;
    let op = Operation::from_json(&body).inspect_err(|_| state.metrics.ops_rejected.inc())?;
    did_core::op::check_clock(&op, crate::now(), &state.limits)
        .inspect_err(|_| state.metrics.ops_rejected.inc())?;
    let did = match op.kind {
        did_core::OpKind::Create => None,
        _ => op.did.clone(),
    };
    let answer = |cid: did_core::Cid| OpSubmitted {
        cid: cid.to_string(),
        did: did
            .clone()
            .unwrap_or_else(|| did_core::op::did_from_genesis(&cid)),
        durable: true,
    };
    match state.writer.submit(op, false).await {
        Ok(Submitted::Created(cid)) => {
            state.metrics.ops_accepted.inc();
            Ok((StatusCode::CREATED, Json(answer(cid))).into_response())
        }
        Ok(Submitted::Existing(cid)) => Ok((StatusCode::OK, Json(answer(cid))).into_response()),
        Ok(Submitted::Orphaned) => Err(OpError::UnknownPrev("(parked)".into()).into()),
        Err(e) => {
            state.metrics.ops_rejected.inc();
            Err(e.into())
        }
    }
}

async fn resolve(State(state): State<Arc<NodeState>>, Path(did): Path<String>) -> Response {
    let did_json = |status: StatusCode, body: serde_json::Value| {
        let mut r = (status, Json(body)).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(
                "application/ld+json;profile=\"https://w3id.org/did-resolution\"",
            ),
        );
        r
    };
    if did.starts_with("did:key:") {
        return match crate::didkey::resolve(&did) {
            Ok((doc, _)) => did_json(
                StatusCode::OK,
                json!({
                    "@context": did_core::document::RESOLUTION_CONTEXT,
                    "didDocument": doc,
                    "didResolutionMetadata": {"contentType": "application/did+ld+json"},
                    "didDocumentMetadata": {},
                }),
            ),
            Err(e) => did_json(
                StatusCode::BAD_REQUEST,
                resolution_error("invalidDid", &e.to_string()),
            ),
        };
    }
    if let Err(e) = did_core::op::parse_mesh_did(&did) {
        return did_json(
            StatusCode::BAD_REQUEST,
            resolution_error("invalidDid", &e.to_string()),
        );
    }
    let Ok(ledger) = state.ledger.read() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ledger busy",
        )
        .into_response();
    };
    match ledger.resolve(&did) {
        Some(view) => {
            // W3C DID Resolution §7.1 (HTTP binding): a deactivated DID is
            // 410; a disputed one (key equivocation, ledger doc) is 409.
            let status = if view.deactivated() {
                StatusCode::GONE
            } else if view.disputed.is_some() {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            did_json(status, resolution_result(&view))
        }
        None => did_json(
            StatusCode::NOT_FOUND,
            resolution_error("notFound", "DID not found on this network"),
        ),
    }
}

async fn did_log(
    State(state): State<Arc<NodeState>>,
    Path(did): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    did_core::op::parse_mesh_did(&did)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_did", e.to_string()))?;
    let ledger = state.ledger.read().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ledger busy",
        )
    })?;
    let log = ledger.did_log(&did).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "DID not found on this network",
        )
    })?;
    let entries: Vec<serde_json::Value> = log
        .iter()
        .map(|e| json!({"cid": e.stored.cid.to_string(), "winning": e.winning, "op": e.stored.op}))
        .collect();
    Ok(Json(json!({"did": did, "ops": entries})))
}

async fn jwks(State(state): State<Arc<NodeState>>) -> Result<Response, ApiError> {
    let mut r = Json(crate::views::jwks(&state)?).into_response();
    // Short cache (`--jwks-max-age`): a removed member's key must drop out
    // of relying parties' caches quickly.
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", state.jwks_max_age)) {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    Ok(r)
}

/// OpenID Connect Discovery 1.0 §3 (and RFC 8414): what relying parties
/// read. `token_endpoint` is the OpenID one; the DID wallet's login keeps
/// its own under `didmesh_token_endpoint`.
/// OpenID Connect Discovery 1.0 §3. A relying party fetches this from
/// `{issuer}/.well-known/openid-configuration` and refuses it unless
/// `issuer` equals that URL (§4.3), so the issuer is the network's one
/// public name (a load balancer or front door in front of every node) and
/// the provider endpoints hang off it: any node answers them. Only the
/// didmesh login endpoints name this node (`--public-url`), because their
/// challenges are checked by the node that issued them. An issuer that is
/// not an http(s) URL (a bare name) cannot serve OpenID Connect; the
/// endpoints then fall back to this node's URL.
async fn discovery(State(state): State<Arc<NodeState>>) -> Response {
    let node = &state.public_url;
    let issuer = state.genesis.issuer.trim_end_matches('/');
    let base = if issuer.starts_with("https://") || issuer.starts_with("http://") {
        issuer
    } else {
        node.as_str()
    };
    let mut r = Json(json!({
        "issuer": state.genesis.issuer,
        "authorization_endpoint": format!("{base}/oidc/authorize"),
        "token_endpoint": format!("{base}/oidc/token"),
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "revocation_endpoint": format!("{base}/oidc/revoke"),
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "claims_supported":
            ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "amr", "acr"],
        "acr_values_supported": [ACR_1FA, ACR_MFA],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "didmesh_token_endpoint": format!("{node}{TOKEN_PATH}"),
        "didmesh_challenge_endpoint": format!("{node}{CHALLENGE_PATH}"),
        "didmesh_network_id": state.genesis.network_id,
    }))
    .into_response();
    // Relying parties cache it; members and endpoints rarely change.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Result<Response, ApiError> {
    let mut r = crate::views::metrics_text(&state)?.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(r)
}

/// Only a current member (of the ledger's member set now) issues tokens.
fn require_member(state: &NodeState) -> Result<(), ApiError> {
    if state.is_member() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_a_member",
        "this node is not a member of the network and cannot issue tokens; log in at a member node",
    ))
}

async fn challenge(
    State(state): State<Arc<NodeState>>,
    body: Result<Json<ChallengeRequest>, JsonRejection>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let Json(req) = body?;
    require_member(&state)?;
    let resp = state
        .auth
        .challenge(
            &state.ledger,
            &req.did,
            req.audience.as_deref(),
            crate::now(),
        )
        .inspect_err(|_| state.metrics.logins_failed.inc())?;
    state.metrics.challenges_issued.inc();
    Ok(Json(resp))
}

/// The SMS module's check of a code for the token path (single use, five
/// tries; [`crate::sms::check_code`]); without `--sms` the factor is off.
fn check_sms(
    state: &NodeState,
    nonce_id: u64,
    phone: &str,
    code: &str,
) -> Result<(), SmsCheckError> {
    crate::sms::check_code(state, nonce_id, phone, code).map_err(SmsCheckError::from)
}

async fn token(
    State(state): State<Arc<NodeState>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    // Again at token time: a node removed from membership after handing
    // out a challenge must not sign a token with a key verifiers dropped.
    require_member(&state)?;
    let signatures: Vec<&str> = req.all_signatures().collect();
    let settings = &state.oidc.settings;
    let checker = |nonce_id: u64, phone: &str, code: &str| check_sms(&state, nonce_id, phone, code);
    let proofs = Proofs {
        signatures: &signatures,
        passkey: req.assertion.as_ref().map(|assertion| PasskeyProof {
            assertion,
            origins: &settings.origins,
            rp_id: &settings.rp_id,
        }),
        sms: req.sms.as_ref().map(|s| SmsProof {
            phone: &s.phone,
            code: &s.code,
            check: &checker,
        }),
    };
    let result = state
        .auth
        .token_with(&state.ledger, &req.did, &req.nonce, &proofs, crate::now());
    match result {
        Ok((resp, _claims, verified)) => {
            if let Some(p) = &verified.passkey {
                // A cloned passkey is refused here as on the sign-in page.
                if let Err(e) = state
                    .oidc
                    .counters
                    .check_and_record(&req.did, &p.credential_id, p.sign_count)
                    .await
                {
                    state.metrics.logins_failed.inc();
                    tracing::warn!(reason = %e, "passkey login refused");
                    return Err(crate::oidc::signin::counter_refusal(e));
                }
            }
            state.metrics.tokens_issued.inc();
            let mut r = Json(resp).into_response();
            // RFC 6749 §5.1: token responses are not cached.
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        Err(e) => {
            state.metrics.logins_failed.inc();
            tracing::info!(reason = %e, "login refused");
            Err(e.into())
        }
    }
}
