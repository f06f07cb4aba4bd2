//! `GET /oidc/authorize` (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1)
//! and the sign-in page's static files.
//!
//! Order of checks, as RFC 6749 §4.1.2.1 and OIDC Core §3.1.2.6 require:
//! first the client and the redirect URI — if either is missing, unknown
//! or not byte-equal to a registered URI, the user sees an error page and
//! is *never* redirected (an open redirector otherwise); then everything
//! else, whose errors go back to the client's redirect URI with `error`,
//! `error_description`, `state` and `iss` (RFC 9207). A request that passes
//! gets the sign-in page with a request handle ([`super::request`]).
//!
//! Parameters sent twice are refused (RFC 6749 §3.1) and parameters sent
//! empty count as absent (same section). The node keeps no session, so
//! `prompt=none` is always `login_required`, every sign-in is fresh
//! (`max_age` is met by `auth_time`, which is always the sign-in's own
//! time), and `prompt=login` changes nothing.
//!
//! `acr_values` (OIDC Core §3.1.2.1) is honoured for
//! `urn:didmesh:acr:mfa`: the request handle then demands two or more
//! distinct factors of the sign-in, even of a DID without a login policy
//! (issue 11), and the ID token's `acr` says whether they were given.
//! Other values are voluntary and ignored (§5.5.1.1: a provider returns
//! the `acr` it satisfied).
//!
//! Two things the page shows besides the request come from this node, not
//! from the client: the configured external providers ("Continue with
//! NAME", issue 10) and, when the node's not-linked page sent the user back
//! here with `fed=HANDLE`, the offer to create a DID and link the account
//! the node verified. `fed` is this node's parameter, not an OAuth one: it
//! is only passed to the page (refused like any parameter when repeated,
//! dropped when it is not a handle's shape, never trusted: `POST
//! /federation/attest` checks the handle again).

use super::code::{redirect_with, MAX_NONCE};
use super::request::{seal, AuthRequest};
use super::{find_client, ClientError, REQUEST_TTL};
use crate::NodeState;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::ClientReg;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const PAGE: &str = include_str!("page/signin.html");
const SCRIPT: &str = include_str!("page/signin.js");
const STYLE: &str = include_str!("page/signin.css");
/// The one marker in the page the request JSON replaces.
const MARKER: &str = "{{REQUEST_JSON}}";
/// Longest `state` accepted (it is echoed in a URL).
const MAX_STATE: usize = 1024;
/// Longest `login_hint` passed on to the page (a DID is < 100).
const MAX_LOGIN_HINT: usize = 256;
/// Longest query string read.
const MAX_QUERY: usize = 8192;
/// Longest `fed` handle passed on to the page (the node's are 22
/// characters of base64url).
const MAX_FED: usize = 64;

/// A refusal before the redirect URI is trusted: an error page.
struct ErrorPage(String);

/// A refusal after it is trusted: an error response to the client.
struct Refusal {
    error: &'static str,
    description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        error,
        description: description.into(),
    }
}

/// The query's parameters: first values, and the names sent more than once.
struct Params {
    values: HashMap<String, String>,
    repeated: Vec<String>,
}

impl Params {
    fn parse(query: &str) -> Params {
        let mut values = HashMap::new();
        let mut repeated = vec![];
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if v.is_empty() {
                continue;
            }
            if values.contains_key(k.as_ref()) {
                if !repeated.contains(&k.to_string()) {
                    repeated.push(k.to_string());
                }
                continue;
            }
            values.insert(k.into_owned(), v.into_owned());
        }
        Params { values, repeated }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn single(&self, name: &str) -> Result<Option<&str>, String> {
        if self.repeated.iter().any(|r| r == name) {
            return Err(format!("{name} is repeated"));
        }
        Ok(self.get(name))
    }
}

/// `GET /oidc/authorize`.
pub async fn authorize(State(state): State<Arc<NodeState>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return error_page(&state, "the authorization request is too long");
    }
    let params = Params::parse(&query);
    let (client, redirect_uri) = match trusted_client(&state, &params) {
        Ok(v) => v,
        Err(ErrorPage(why)) => return error_page(&state, &why),
    };
    // From here on the redirect URI is the client's: errors go back there.
    // `state` is echoed only when it is well formed itself.
    let rp_state = params
        .single("state")
        .ok()
        .flatten()
        .filter(|s| s.len() <= MAX_STATE);
    match check(&state, &params, &client, &redirect_uri) {
        Ok(req) => page(&state, &client, req, &params),
        Err(r) => {
            tracing::debug!(error = r.error, "authorization request refused");
            let mut p = vec![("error", r.error), ("error_description", &r.description)];
            if let Some(s) = rp_state {
                p.push(("state", s));
            }
            p.push(("iss", &state.oidc.settings.issuer));
            redirect(&redirect_with(&redirect_uri, &p))
        }
    }
}

/// The client and its redirect URI, or the error page (module doc).
fn trusted_client(state: &NodeState, params: &Params) -> Result<(ClientReg, String), ErrorPage> {
    let client_id = params
        .single("client_id")
        .map_err(ErrorPage)?
        .ok_or_else(|| ErrorPage("the request names no client_id".into()))?;
    let client = find_client(state, client_id).map_err(|e| {
        ErrorPage(match e {
            ClientError::Busy => "the node is busy; try again".into(),
            e => format!("{e}: the app that sent you here is not registered on this network"),
        })
    })?;
    let redirect_uri = params
        .single("redirect_uri")
        .map_err(ErrorPage)?
        .ok_or_else(|| ErrorPage("the request names no redirect_uri".into()))?;
    // RFC 6749 §3.1.2.3 and OAuth 2.0 Security BCP §4.1.3: simple string
    // comparison, no normalization, no prefix match.
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return Err(ErrorPage(format!(
            "the redirect URI {redirect_uri:?} is not registered for {}; you were not sent anywhere",
            client.name
        )));
    }
    let redirect_uri = redirect_uri.to_string();
    Ok((client, redirect_uri))
}

/// Every check after the redirect URI (module doc).
fn check(
    state: &NodeState,
    params: &Params,
    client: &ClientReg,
    redirect_uri: &str,
) -> Result<AuthRequest, Refusal> {
    if let Some(name) = params.repeated.first() {
        return Err(refuse("invalid_request", format!("{name} is repeated")));
    }
    // OIDC Core §6: request objects are not supported.
    if params.get("request").is_some() {
        return Err(refuse(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if params.get("request_uri").is_some() {
        return Err(refuse(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    if params.get("registration").is_some() {
        return Err(refuse(
            "registration_not_supported",
            "registration is not supported",
        ));
    }
    match params.get("response_type") {
        None => return Err(refuse("invalid_request", "response_type is missing")),
        Some("code") => {}
        Some(_) => {
            return Err(refuse(
                "unsupported_response_type",
                "only the authorization code flow (response_type=code) is supported",
            ))
        }
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return Err(refuse(
            "invalid_request",
            "only response_mode=query is supported",
        ));
    }
    let scope = params.get("scope").unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(refuse("invalid_scope", "scope must contain openid"));
    }
    if params.get("state").is_some_and(|s| s.len() > MAX_STATE) {
        return Err(refuse(
            "invalid_request",
            format!("state is longer than {MAX_STATE} bytes"),
        ));
    }
    if let Some(prompt) = params.get("prompt") {
        let values: Vec<&str> = prompt.split(' ').collect();
        if values.contains(&"none") {
            // OIDC Core §3.1.2.1: none with any other value is an error.
            if values.len() > 1 {
                return Err(refuse("invalid_request", "prompt=none cannot be combined"));
            }
            return Err(refuse(
                "login_required",
                "the provider keeps no session: every sign-in needs the user",
            ));
        }
    }
    if let Some(m) = params.get("max_age") {
        if m.parse::<u64>().is_err() {
            return Err(refuse(
                "invalid_request",
                "max_age must be a number of seconds",
            ));
        }
    }
    let nonce = params.get("nonce");
    if nonce.is_some_and(|n| n.len() > MAX_NONCE) {
        return Err(refuse(
            "invalid_request",
            format!("nonce is longer than {MAX_NONCE} bytes"),
        ));
    }
    let code_challenge = pkce(params, client)?;
    let mfa = params
        .get("acr_values")
        .is_some_and(|v| v.split(' ').any(|a| a == did_core::proto::ACR_MFA));
    if !state.is_member() {
        return Err(refuse(
            "temporarily_unavailable",
            "this node is not a member of the network; sign in at another node",
        ));
    }
    Ok(AuthRequest {
        // Matched to `client` by `trusted_client`.
        client_id: params.get("client_id").unwrap_or_default().to_string(),
        redirect_uri: redirect_uri.to_string(),
        state: params.get("state").map(str::to_string),
        nonce: nonce.map(str::to_string),
        code_challenge,
        mfa,
        expires_at: crate::now().saturating_add(REQUEST_TTL),
    })
}

/// RFC 7636 §4.3-4.4: S256 only (`plain` is what an absent method means,
/// so it is refused too), the challenge is BASE64URL(SHA-256) = 43
/// characters, and a public client must send one (OAuth 2.0 Security BCP
/// §2.1.1).
fn pkce(params: &Params, client: &ClientReg) -> Result<Option<String>, Refusal> {
    let method = params.get("code_challenge_method");
    match params.get("code_challenge") {
        None => {
            if method.is_some() {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                ));
            }
            if !client.confidential() {
                return Err(refuse(
                    "invalid_request",
                    "a public client must use PKCE (code_challenge with code_challenge_method=S256)",
                ));
            }
            Ok(None)
        }
        Some(c) => {
            if method != Some("S256") {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is not supported)",
                ));
            }
            let ok = c.len() == 43
                && URL_SAFE_NO_PAD
                    .decode(c)
                    .is_ok_and(|b| b.len() == 32 && URL_SAFE_NO_PAD.encode(&b) == c);
            if !ok {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge must be BASE64URL(SHA-256(code_verifier)), 43 characters",
                ));
            }
            Ok(Some(c.to_string()))
        }
    }
}

/// JSON safe inside a `<script>` element: no value can close it or open a
/// comment (`<`, `>`, `&` as JSON escapes; the page's contract).
pub fn script_safe_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn page(state: &NodeState, client: &ClientReg, req: AuthRequest, params: &Params) -> Response {
    let settings = &state.oidc.settings;
    let login_hint = params
        .get("login_hint")
        .filter(|h| h.len() <= MAX_LOGIN_HINT && !h.chars().any(char::is_control));
    let mut cancel = vec![
        ("error", "access_denied"),
        ("error_description", "the user cancelled the sign-in"),
    ];
    if let Some(s) = &req.state {
        cancel.push(("state", s));
    }
    cancel.push(("iss", &settings.issuer));
    let providers: Vec<serde_json::Value> = state
        .federation
        .buttons()
        .into_iter()
        .map(|(name, display_name)| json!({"name": name, "display_name": display_name}))
        .collect();
    // A well-formed handle is passed on; which provider's account it holds
    // (null: unknown, used or expired) lets the page say so before the user
    // makes a DID for nothing. Peeking uses nothing up.
    let fed = params
        .get("fed")
        .filter(|f| f.len() <= MAX_FED && f.bytes().all(is_base64url));
    let fed_provider = fed.and_then(|f| {
        state
            .federation
            .flows
            .peek_proof(f, crate::now())
            .map(|p| p.provider)
    });
    let data = json!({
        "request": seal(state, &req),
        "client_id": req.client_id,
        "client_name": client.name,
        "redirect_uri": req.redirect_uri,
        "node_url": settings.node_url,
        "node_name": settings.node_name,
        "rp_id": settings.rp_id,
        "network_id": state.genesis.network_id,
        "login_hint": login_hint,
        "cancel_url": redirect_with(&req.redirect_uri, &cancel),
        "mfa_required": req.mfa,
        "providers": providers,
        "fed": fed,
        "fed_provider": fed_provider,
    });
    let body = PAGE.replacen(MARKER, &script_safe_json(&data), 1);
    html(state, StatusCode::OK, body)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn html(state: &NodeState, status: StatusCode, body: String) -> Response {
    html_page(status, body, page_csp(state))
}

/// An HTML response with `csp` and the headers every page of the node
/// carries: never framed (clickjacking of the sign-in buttons), never
/// cached, no referrer (the page URL carries the request), no sniffing.
/// The sign-in pages here and the federation's result pages share it.
pub(crate) fn html_page(status: StatusCode, body: String, csp: Option<HeaderValue>) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Some(v) = csp {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The sign-in page's Content-Security-Policy: scripts and styles from
/// this origin only, JSON calls to this node and the accepted origins.
fn page_csp(state: &NodeState) -> Option<HeaderValue> {
    let settings = &state.oidc.settings;
    let mut connect = vec!["'self'".to_string()];
    for o in super::origin_of(&settings.node_url)
        .into_iter()
        .chain(settings.origins.iter().cloned())
    {
        if !connect.contains(&o) {
            connect.push(o);
        }
    }
    let csp = format!(
        "default-src 'self'; connect-src {}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        connect.join(" ")
    );
    HeaderValue::from_str(&csp).ok()
}

/// `s` as HTML text or a quoted attribute value.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page shown instead of a redirect (400).
fn error_page(state: &NodeState, why: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Sign-in error</title><link rel=\"stylesheet\" href=\"static/signin.css\"></head>\
         <body><h1>This sign-in request cannot be used</h1>\
         <p class=\"error\" data-testid=\"error\">{}</p>\
         <p>Go back to the app and try again. If this keeps happening, the app is misconfigured.</p>\
         </body></html>\n",
        escape_html(why)
    );
    html(state, StatusCode::BAD_REQUEST, body)
}

/// RFC 6749 §4.1.2: a 302 to the client.
fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /oidc/static/signin.js`.
pub async fn script() -> Response {
    static_file(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /oidc/static/signin.css`.
pub async fn style() -> Response {
    static_file(STYLE, "text/css; charset=utf-8")
}
