//! The OpenID code flow driven the way the sign-in page drives it, without a
//! browser: a relying party registered by a signed DID update, `GET
//! /oidc/authorize`, the page's `#didmesh-request` JSON, the JSON calls the
//! page makes at its `node_url` (challenge, complete, or a pending login
//! approved like `didmesh approve` does), and the token request of RFC 6749
//! §4.1.3 with PKCE (RFC 7636).

use crate::http::{urlencode, Answer, BlockingClient};
use crate::now;
use crate::ops::cid;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::client::{client_id, ClientReg, IdTokenAlg};
use did_core::keys::{public_of, sign_b64};
use did_core::{Cid, DidState, Operation};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

/// A public client (PKCE, no secret) registered on the ledger.
#[derive(Debug, Clone)]
pub struct Rp {
    pub client_id: String,
    pub redirect_uri: String,
    pub name: String,
}

/// The update of `did` (single key `key`, head `prev`) that registers a
/// public client `entry` named `name` with one redirect URI.
pub fn register_op(
    key: &SigningKey,
    did: &str,
    prev: Cid,
    entry: &str,
    name: &str,
    redirect_uri: &str,
) -> Operation {
    let mut state = DidState::single_key(public_of(key));
    state.clients.push(ClientReg {
        id: entry.to_string(),
        name: name.to_string(),
        redirect_uris: vec![redirect_uri.to_string()],
        secret_hash: None,
        id_token_alg: IdTokenAlg::EdDSA,
    });
    Operation::update(did, prev, state, now(), key).unwrap_or_else(|e| panic!("{e}"))
}

/// Creates the owner DID of `key` at `node` and registers a public client
/// on it; panics when the node refuses.
pub fn register_client(
    c: &BlockingClient,
    node: &str,
    key: &SigningKey,
    name: &str,
    redirect_uri: &str,
) -> Rp {
    let (create, did) = crate::ops::create_op(key);
    let a = c.submit(node, &create);
    assert!(a.is_success(), "create owner DID: {a:?}");
    let op = register_op(key, &did, cid(&create), "app", name, redirect_uri);
    let a = c.submit(node, &op);
    assert!(a.is_success(), "register client: {a:?}");
    Rp {
        client_id: client_id(&did, "app").unwrap_or_else(|| panic!("client id of {did}")),
        redirect_uri: redirect_uri.to_string(),
        name: name.to_string(),
    }
}

/// A PKCE pair (RFC 7636 §4.1-4.2, S256).
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new(seed: u8) -> Pkce {
        let verifier = URL_SAFE_NO_PAD.encode([seed; 32]);
        let challenge =
            URL_SAFE_NO_PAD.encode(did_core::passkey::challenge_for(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// The JSON of `<script id="didmesh-request" type="application/json">` in
/// a sign-in page, if any.
pub fn page_request(html: &str) -> Option<Value> {
    let start = html.find("id=\"didmesh-request\"")?;
    let rest = &html[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find("</script>")?;
    serde_json::from_str(rest[open..open + close].trim()).ok()
}

/// `GET {node}/oidc/authorize` for `rp` with `state`, `nonce` and PKCE;
/// the page's request JSON. Panics when no sign-in page comes back.
pub fn authorize(c: &BlockingClient, node: &str, rp: &Rp, pkce: &Pkce, nonce: &str) -> Value {
    let url = format!(
        "{node}/oidc/authorize?response_type=code&scope=openid&client_id={}&redirect_uri={}&state=st-1&nonce={}&code_challenge={}&code_challenge_method=S256",
        urlencode(&rp.client_id),
        urlencode(&rp.redirect_uri),
        urlencode(nonce),
        urlencode(&pkce.challenge),
    );
    let (status, html) = c
        .get_text(&url)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(status, 200, "authorize: {html}");
    page_request(&html).unwrap_or_else(|| panic!("no #didmesh-request in the page: {html}"))
}

/// Where the page sends its JSON calls.
pub fn node_url(request: &Value, fallback: &str) -> String {
    request["node_url"]
        .as_str()
        .unwrap_or(fallback)
        .trim_end_matches('/')
        .to_string()
}

/// The browser-key sign-in: challenge, Ed25519 signature, complete. The
/// answer of `complete` (`{redirect}` on success).
pub fn sign_in(
    c: &BlockingClient,
    at: &str,
    request: &Value,
    did: &str,
    key: &SigningKey,
) -> Answer {
    let handle = request["request"].clone();
    let ch = c
        .post_json(
            &format!("{at}/oidc/signin/challenge"),
            &json!({"request": handle, "did": did}),
        )
        .unwrap_or_else(|e| panic!("challenge: {e}"));
    assert_eq!(ch.status, 200, "challenge: {:?}", ch.body);
    let message = ch.body["message"].as_str().unwrap_or_default();
    let signature = sign_b64(key, message.as_bytes());
    c.post_json(
        &format!("{at}/oidc/signin/complete"),
        &json!({"request": handle, "nonce": ch.body["nonce"], "did": did, "signature": signature}),
    )
    .unwrap_or_else(|e| panic!("complete: {e}"))
}

/// Query parameter `name` of a URL, percent-decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            x => out.push(x),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A whole browser-key sign-in at `node` for user `key`/`did`: the
/// authorization code from the redirect.
pub fn code_for(
    c: &BlockingClient,
    node: &str,
    rp: &Rp,
    pkce: &Pkce,
    did: &str,
    key: &SigningKey,
) -> String {
    let request = authorize(c, node, rp, pkce, "n-0S6_WzA2Mj");
    let at = node_url(&request, node);
    let done = sign_in(c, &at, &request, did, key);
    assert_eq!(done.status, 200, "complete: {:?}", done.body);
    let redirect = done.body["redirect"].as_str().unwrap_or_default();
    assert!(
        redirect.starts_with(&rp.redirect_uri),
        "redirect {redirect} is not to {}",
        rp.redirect_uri
    );
    query_param(redirect, "code").unwrap_or_else(|| panic!("no code in {redirect}"))
}

/// The token request of a public client (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub fn redeem(c: &BlockingClient, node: &str, rp: &Rp, code: &str, verifier: &str) -> Answer {
    c.post_form(
        &format!("{node}/oidc/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &rp.redirect_uri),
            ("client_id", &rp.client_id),
            ("code_verifier", verifier),
        ],
    )
    .unwrap_or_else(|e| panic!("POST {node}/oidc/token: {e}"))
}
