//! The OpenID Connect pieces the wallet and the load generator share: the
//! node's sign-in endpoints as a browser (or a script simulating one) calls
//! them, the relying party's side of the code flow (PKCE, the redirect,
//! the token request, ID-token checks), and the checks `didmesh approve`
//! makes before it signs a pending sign-in.
//!
//! The endpoints are those of the node's OpenID provider (README, "Sign in
//! with didmesh"): `GET /oidc/authorize` answers the sign-in page, whose
//! `<script id="didmesh-request" type="application/json">` carries the
//! authorization request handle; `POST /oidc/signin/challenge` and
//! `/oidc/signin/complete` turn a signed login challenge into a redirect
//! with a code; `POST /oidc/token` redeems it (RFC 6749 §4.1.3).

use crate::login::{check_challenge, Authority, ChallengeError};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use did_core::login::LoginChallenge;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;

pub const AUTHORIZE_PATH: &str = "/oidc/authorize";
pub const SIGNIN_CHALLENGE_PATH: &str = "/oidc/signin/challenge";
pub const SIGNIN_COMPLETE_PATH: &str = "/oidc/signin/complete";
pub const SIGNIN_PENDING_PATH: &str = "/oidc/signin/pending";
pub const OIDC_TOKEN_PATH: &str = "/oidc/token";
pub const APPROVALS_PATH: &str = "/v1/approvals";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The element of the sign-in page that carries the request.
const REQUEST_SCRIPT_ID: &str = "id=\"didmesh-request\"";

/// `len` random bytes, base64url without padding.
pub fn random_b64(len: usize) -> String {
    let mut b = vec![0u8; len];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A PKCE pair (RFC 7636 §4.1-4.2): a verifier of 32 random octets
/// base64url-encoded (43 characters, the RFC's recommendation) and its S256
/// challenge, `BASE64URL(SHA256(ASCII(verifier)))`.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = random_b64(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// `application/x-www-form-urlencoded` encoding of one component (WHATWG
/// URL §5.2, the serializer RFC 6749 Appendix B and §2.3.1 refer to).
pub fn form_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `k=v&k=v`, each side form-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_component(k), form_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `Authorization` value of `client_secret_basic` (RFC 6749 §2.3.1:
/// id and secret are form-encoded, then joined by `:` and base64-encoded).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    let pair = format!("{}:{}", form_component(client_id), form_component(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

/// An authorization request (OIDC Core §3.1.2.1) of the code flow with
/// PKCE: path and query of `GET /oidc/authorize`.
pub fn authorize_path(
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    pkce: &Pkce,
) -> String {
    let query = form(&[
        ("response_type", "code"),
        ("scope", "openid"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ]);
    format!("{AUTHORIZE_PATH}?{query}")
}

/// What the sign-in page carries (the fields this crate uses; the page has
/// more).
#[derive(Debug, Clone, Deserialize)]
pub struct SigninRequest {
    /// The opaque handle of the whole authorization request.
    pub request: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    /// Where the page sends its JSON calls (the serving node).
    pub node_url: String,
}

/// Reads the `<script id="didmesh-request" type="application/json">`
/// element of the sign-in page.
pub fn signin_request_from_html(html: &str) -> Result<SigninRequest, String> {
    let at = html
        .find(REQUEST_SCRIPT_ID)
        .ok_or("the page has no didmesh-request element")?;
    let rest = &html[at..];
    let open_end = rest.find('>').ok_or("unterminated didmesh-request tag")?;
    let body = &rest[open_end + 1..];
    let close = body
        .find("</script>")
        .ok_or("unterminated didmesh-request element")?;
    serde_json::from_str(body[..close].trim()).map_err(|e| format!("didmesh-request: {e}"))
}

/// `POST /oidc/signin/challenge` body (DID case).
#[derive(Debug, Serialize)]
pub struct SigninChallengeRequest<'a> {
    pub request: &'a str,
    pub did: &'a str,
}

/// Its answer.
#[derive(Debug, Clone, Deserialize)]
pub struct SigninChallenge {
    pub message: String,
    pub nonce: String,
}

/// `POST /oidc/signin/complete` body (a signature by an Ed25519 key).
#[derive(Debug, Serialize)]
pub struct SigninCompleteRequest<'a> {
    pub request: &'a str,
    pub nonce: &'a str,
    pub did: &'a str,
    pub signature: &'a str,
}

/// Its answer: where the browser goes next.
#[derive(Debug, Clone, Deserialize)]
pub struct SigninComplete {
    pub redirect: String,
}

/// The code of a successful authorization response (RFC 6749 §4.1.2), after
/// checking it goes to `redirect_uri`, echoes `state` and, when present,
/// names `issuer` (RFC 9207 §2.4: a mismatched `iss` is a mix-up attack).
/// An error response comes back as `Err` with its `error` and description.
pub fn code_from_redirect(
    redirect: &str,
    redirect_uri: &str,
    state: &str,
    issuer: &str,
) -> Result<String, String> {
    let rest = redirect
        .strip_prefix(redirect_uri)
        .ok_or("the redirect does not go to the redirect URI")?;
    let url = reqwest::Url::parse(redirect).map_err(|e| format!("redirect: {e}"))?;
    if !(rest.starts_with('?') || rest.starts_with('&')) {
        return Err("the redirect carries no query".into());
    }
    let mut params: HashMap<String, String> = HashMap::new();
    for (k, v) in url.query_pairs() {
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("the redirect repeats {k}"));
        }
    }
    if let Some(e) = params.get("error") {
        return Err(format!(
            "{e}: {}",
            params
                .get("error_description")
                .map(String::as_str)
                .unwrap_or("")
        ));
    }
    if params.get("state").map(String::as_str) != Some(state) {
        return Err("the redirect's state differs from the one sent".into());
    }
    if let Some(iss) = params.get("iss") {
        if iss != issuer {
            return Err(format!("the redirect names issuer {iss}, not {issuer}"));
        }
    }
    params
        .remove("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| "the redirect carries no code".into())
}

/// The token endpoint's answer (RFC 6749 §5.1, OIDC Core §3.1.3.3). Its
/// `Debug` shows no token.
#[derive(Clone, Deserialize)]
pub struct OidcTokens {
    pub access_token: String,
    pub token_type: String,
    #[serde(default)]
    pub expires_in: u64,
    pub id_token: String,
}

impl std::fmt::Debug for OidcTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcTokens")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// The ID-token claims checked beyond what `jsonwebtoken` checks.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    /// Required by OIDC Core §2 (`jsonwebtoken` only checks `exp`).
    pub iat: u64,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// A node's JWKS, ready to verify ID tokens of all three algorithms.
pub struct Jwks {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl Jwks {
    /// The usable keys of a JWKS document (RFC 7517 §5); keys of other
    /// kinds, or without a `kid`, are left out.
    pub fn from_json(doc: &Value) -> Jwks {
        let mut keys = HashMap::new();
        for k in doc["keys"].as_array().into_iter().flatten() {
            let Some(kid) = k["kid"].as_str() else {
                continue;
            };
            let s = |name: &str| k[name].as_str().unwrap_or_default();
            let parsed =
                match (s("kty"), s("crv")) {
                    ("RSA", _) => DecodingKey::from_rsa_components(s("n"), s("e"))
                        .map(|d| (Algorithm::RS256, d)),
                    ("EC", "P-256") => DecodingKey::from_ec_components(s("x"), s("y"))
                        .map(|d| (Algorithm::ES256, d)),
                    ("OKP", "Ed25519") => {
                        DecodingKey::from_ed_components(s("x")).map(|d| (Algorithm::EdDSA, d))
                    }
                    _ => continue,
                };
            if let Ok(key) = parsed {
                keys.insert(kid.to_string(), key);
            }
        }
        Jwks { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies an ID token as a relying party must (OIDC Core §3.1.3.7):
    /// the signature by the JWKS key its `kid` names with that key's
    /// algorithm (never the alg the header asks for alone), `iss`, `aud`
    /// (and `azp` when present), `exp`, and `nonce` equal to the one sent.
    pub fn verify_id_token(
        &self,
        token: &str,
        issuer: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<IdClaims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let kid = header.kid.ok_or("the ID token has no kid")?;
        let (alg, key) = self
            .keys
            .get(&kid)
            .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
        if header.alg != *alg {
            return Err(format!(
                "header alg {:?} differs from the key's {alg:?}",
                header.alg
            ));
        }
        let mut v = Validation::new(*alg);
        v.set_issuer(&[issuer]);
        v.set_audience(&[client_id]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 5;
        let data = jsonwebtoken::decode::<Value>(token, key, &v).map_err(|e| e.to_string())?;
        if let Some(azp) = data.claims.get("azp") {
            if azp.as_str() != Some(client_id) {
                return Err("azp is not the client".into());
            }
        }
        let claims: IdClaims =
            serde_json::from_value(data.claims).map_err(|e| format!("claims: {e}"))?;
        if claims.nonce.as_deref() != Some(nonce) {
            return Err("the ID token's nonce differs from the one sent".into());
        }
        Ok(claims)
    }
}

/// `GET /v1/approvals/{code}`: a sign-in waiting for a wallet. Two kinds
/// share the codes (mfa-spec, "Second device"): `login`, a browser
/// sign-in to an OpenID client (the client fields are set), and `cosign`,
/// a second factor for a `didmesh login` of the DID. A node from before
/// kinds sends none: a `login`.
#[derive(Debug, Clone, Deserialize)]
pub struct Approval {
    #[serde(default = "login_kind")]
    pub kind: String,
    pub did: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_name: String,
    #[serde(default)]
    pub redirect_uri: String,
    pub message: String,
    pub nonce: String,
    #[serde(default)]
    pub expires_at: u64,
    #[serde(default)]
    pub audience: Option<String>,
}

/// [`Approval::kind`] of a browser sign-in.
pub const APPROVAL_LOGIN: &str = "login";
/// [`Approval::kind`] of a second factor for a CLI login.
pub const APPROVAL_COSIGN: &str = "cosign";

fn login_kind() -> String {
    APPROVAL_LOGIN.into()
}

/// Why `didmesh approve` will not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("refusing to sign: this sign-in is for {found}, not this wallet's DID {expected}")]
    OtherDid { expected: String, found: String },
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error(
        "refusing to sign: the challenge is for network {found:?} but the node is in {expected:?}"
    )]
    Network { expected: String, found: String },
    #[error(
        "refusing to sign: the challenge is for audience {found:?}, not the client {expected}"
    )]
    Audience { expected: String, found: String },
    #[error("refusing to sign: the sign-in expired; start it again in the browser")]
    Expired,
    #[error("refusing to sign: {0}")]
    Client(String),
    #[error(
        "refusing to sign: the node shows audience {shown:?} but the challenge is for {found:?}"
    )]
    ShownAudience { shown: String, found: String },
    #[error("refusing to sign: this code is a {0:?} approval, not a second factor for a login")]
    Kind(String),
}

/// The checks `didmesh approve` makes before it signs (the login checks of
/// [`crate::login`], plus the network and the client): the pending sign-in
/// is for `wallet_did`, its message is a challenge of the node the wallet
/// talks to (`node`), for that DID, with the nonce given next to it, in
/// `network_id`, for the client the approval names, and not expired.
pub fn check_approval(
    a: &Approval,
    wallet_did: &str,
    node: &Authority,
    network_id: &str,
    now: u64,
) -> Result<LoginChallenge, ApprovalError> {
    if a.did != wallet_did {
        return Err(ApprovalError::OtherDid {
            expected: wallet_did.to_string(),
            found: a.did.clone(),
        });
    }
    let c = check_challenge(&a.message, node, wallet_did, &a.nonce, None)?;
    if c.network_id != network_id {
        return Err(ApprovalError::Network {
            expected: network_id.to_string(),
            found: c.network_id,
        });
    }
    // The challenge's audience is the client (the node makes the OIDC
    // challenge with aud = client_id): what is shown is what is signed.
    if c.audience != a.client_id {
        return Err(ApprovalError::Audience {
            expected: a.client_id.clone(),
            found: c.audience,
        });
    }
    if c.expires_at <= now {
        return Err(ApprovalError::Expired);
    }
    Ok(c)
}

/// The checks `didmesh approve` makes before it signs a second factor (a
/// `cosign` approval): its message is a challenge of the node the wallet
/// talks to, for the DID the approval names, with the nonce given next to
/// it, in `network_id`, for the audience shown, and not expired. Whether
/// the DID lists a key of this wallet is the caller's check (the ledger).
pub fn check_cosign(
    a: &Approval,
    node: &Authority,
    network_id: &str,
    now: u64,
) -> Result<LoginChallenge, ApprovalError> {
    if a.kind != APPROVAL_COSIGN {
        return Err(ApprovalError::Kind(a.kind.clone()));
    }
    let c = check_challenge(&a.message, node, &a.did, &a.nonce, None)?;
    if c.network_id != network_id {
        return Err(ApprovalError::Network {
            expected: network_id.to_string(),
            found: c.network_id,
        });
    }
    // What is shown is what is signed: an audience the node names must be
    // the challenge's.
    if let Some(aud) = &a.audience {
        if *aud != c.audience {
            return Err(ApprovalError::ShownAudience {
                shown: aud.clone(),
                found: c.audience,
            });
        }
    }
    if c.expires_at <= now {
        return Err(ApprovalError::Expired);
    }
    Ok(c)
}

/// `XXXX-XXXX` from what a user typed: case and spaces do not matter, the
/// dash may be left out, and `O`, `I`, `L` read as `0`, `1`, `1`
/// (Crockford base32's decoding rules, as the node reads codes). Only the
/// 32 Crockford characters come out, so the code can go into a URL path.
pub fn normalize_code(input: &str) -> Option<String> {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut cleaned = String::with_capacity(8);
    for c in input.chars().filter(|c| !c.is_whitespace() && *c != '-') {
        let c = match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !CROCKFORD.contains(c) {
            return None;
        }
        cleaned.push(c);
    }
    if cleaned.len() != 8 {
        return None;
    }
    Some(format!("{}-{}", &cleaned[..4], &cleaned[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        let p = Pkce::new();
        assert_eq!(p.verifier.len(), 43);
        assert_ne!(p.verifier, Pkce::new().verifier);
    }

    #[test]
    fn form_encoding_and_basic_auth() {
        assert_eq!(form_component("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            form(&[("redirect_uri", "http://localhost:5000/cb")]),
            "redirect_uri=http%3A%2F%2Flocalhost%3A5000%2Fcb"
        );
        // RFC 6749 §2.3.1 example credentials, already form-safe
        assert_eq!(
            basic_auth("s6BhdRkqt3", "7Fjfp0ZBr1KtDRbnfVdmIw"),
            "Basic czZCaGRSa3F0Mzo3RmpmcDBaQnIxS3REUmJuZlZkbUl3"
        );
        assert_eq!(
            basic_auth("a:b", "c"),
            format!("Basic {}", STANDARD.encode("a%3Ab:c"))
        );
    }

    #[test]
    fn reads_the_request_element_of_the_page() {
        let html = r#"<html><script id="didmesh-request" type="application/json">
            {"request":"r1","client_id":"abc.app","client_name":"App \u003c1\u003e",
             "redirect_uri":"https://app.example/cb","node_url":"http://127.0.0.1:7001","rp_id":"x"}
        </script><script src="/oidc/static/signin.js"></script></html>"#;
        let r = signin_request_from_html(html).unwrap();
        assert_eq!(r.request, "r1");
        assert_eq!(r.client_name, "App <1>");
        assert!(signin_request_from_html("<html></html>").is_err());
        assert!(signin_request_from_html(r#"<script id="didmesh-request">{"#).is_err());
    }

    #[test]
    fn redirects_are_checked() {
        let cb = "https://app.example/cb";
        let iss = "http://localhost:7000";
        let ok = format!("{cb}?code=C1&state=S&iss=http%3A%2F%2Flocalhost%3A7000");
        assert_eq!(code_from_redirect(&ok, cb, "S", iss).unwrap(), "C1");
        assert!(code_from_redirect(&ok, cb, "T", iss).is_err());
        assert!(code_from_redirect(&ok, cb, "S", "http://evil.example").is_err());
        assert!(code_from_redirect(&ok, "https://other.example/cb", "S", iss).is_err());
        assert!(code_from_redirect(&format!("{cb}evil?code=C&state=S"), cb, "S", iss).is_err());
        let err = code_from_redirect(
            &format!("{cb}?error=access_denied&error_description=no&state=S"),
            cb,
            "S",
            iss,
        )
        .unwrap_err();
        assert!(err.contains("access_denied"), "{err}");
        assert!(code_from_redirect(&format!("{cb}?code=A&code=B&state=S"), cb, "S", iss).is_err());
    }

    #[test]
    fn approval_codes_normalize() {
        assert_eq!(normalize_code("abcd-efgh").as_deref(), Some("ABCD-EFGH"));
        assert_eq!(normalize_code(" ABCDEFGH ").as_deref(), Some("ABCD-EFGH"));
        assert_eq!(normalize_code("ABCD-EFG"), None);
        assert_eq!(normalize_code("ABCD-EFG/"), None);
        assert_eq!(normalize_code("abcd-efgi").as_deref(), Some("ABCD-EFG1"));
        assert_eq!(normalize_code("oooo-llll").as_deref(), Some("0000-1111"));
        assert_eq!(normalize_code("ABCD-EFGU"), None);
        assert_eq!(normalize_code("../../v1/ops"), None);
    }

    fn approval(domain: &str, did: &str, aud: &str, network: &str, exp: u64) -> Approval {
        let c = LoginChallenge {
            domain: domain.into(),
            did: did.into(),
            network_id: network.into(),
            nonce: "n1".into(),
            audience: aud.into(),
            issued_at: 1_000,
            expires_at: exp,
        };
        Approval {
            kind: APPROVAL_LOGIN.into(),
            did: did.into(),
            client_id: "abc.app".into(),
            client_name: "App".into(),
            redirect_uri: "https://app.example/cb".into(),
            message: c.message(),
            nonce: "n1".into(),
            expires_at: exp,
            audience: None,
        }
    }

    fn cosign(domain: &str, did: &str, network: &str, exp: u64) -> Approval {
        let mut a = approval(domain, did, "home-api", network, exp);
        a.kind = APPROVAL_COSIGN.into();
        (a.client_id, a.client_name, a.redirect_uri) =
            (String::new(), String::new(), String::new());
        a.audience = Some("home-api".into());
        a
    }

    #[test]
    fn cosign_approvals_are_checked_like_logins() {
        let node = Authority::of_url("http://127.0.0.1:7001").unwrap();
        let did = "did:mesh:someone";
        let good = cosign("127.0.0.1:7001", did, "net", 2_000);
        let c = check_cosign(&good, &node, "net", 1_500).unwrap();
        assert_eq!(c.audience, "home-api");
        // another node's challenge (relayed by a phishing node)
        assert!(matches!(
            check_cosign(
                &cosign("evil.example:7001", did, "net", 2_000),
                &node,
                "net",
                1_500
            ),
            Err(ApprovalError::Challenge(
                ChallengeError::DomainMismatch { .. }
            ))
        ));
        // another network
        assert!(matches!(
            check_cosign(&good, &node, "other", 1_500),
            Err(ApprovalError::Network { .. })
        ));
        // the DID shown is not the DID signed for
        let mut other = good.clone();
        other.did = "did:mesh:victim".into();
        assert!(matches!(
            check_cosign(&other, &node, "net", 1_500),
            Err(ApprovalError::Challenge(ChallengeError::DidMismatch { .. }))
        ));
        // a nonce shown that is not the one signed
        let mut other = good.clone();
        other.nonce = "n2".into();
        assert!(check_cosign(&other, &node, "net", 1_500).is_err());
        // the audience shown is not the one signed
        let mut other = good.clone();
        other.audience = Some("bank".into());
        assert!(matches!(
            check_cosign(&other, &node, "net", 1_500),
            Err(ApprovalError::ShownAudience { .. })
        ));
        assert_eq!(
            check_cosign(&good, &node, "net", 2_000),
            Err(ApprovalError::Expired)
        );
        // a browser sign-in is not a second factor
        let login = approval("127.0.0.1:7001", did, "abc.app", "net", 2_000);
        assert!(matches!(
            check_cosign(&login, &node, "net", 1_500),
            Err(ApprovalError::Kind(_))
        ));
    }

    #[test]
    fn approvals_are_checked_like_logins() {
        let node = Authority::of_url("http://127.0.0.1:7001").unwrap();
        let me = "did:mesh:me";
        let good = approval("127.0.0.1:7001", me, "abc.app", "net", 2_000);
        assert!(check_approval(&good, me, &node, "net", 1_500).is_ok());
        assert!(matches!(
            check_approval(&good, "did:mesh:other", &node, "net", 1_500),
            Err(ApprovalError::OtherDid { .. })
        ));
        assert!(matches!(
            check_approval(&good, me, &node, "othernet", 1_500),
            Err(ApprovalError::Network { .. })
        ));
        assert_eq!(
            check_approval(&good, me, &node, "net", 2_000),
            Err(ApprovalError::Expired)
        );
        let phish = approval("evil.example:7001", me, "abc.app", "net", 2_000);
        assert!(matches!(
            check_approval(&phish, me, &node, "net", 1_500),
            Err(ApprovalError::Challenge(
                ChallengeError::DomainMismatch { .. }
            ))
        ));
        let other_aud = approval("127.0.0.1:7001", me, "abc.other", "net", 2_000);
        assert!(matches!(
            check_approval(&other_aud, me, &node, "net", 1_500),
            Err(ApprovalError::Audience { .. })
        ));
        // the approval says it is for me, the message is for someone else
        let mut swapped = approval("127.0.0.1:7001", "did:mesh:victim", "abc.app", "net", 2_000);
        swapped.did = me.into();
        assert!(matches!(
            check_approval(&swapped, me, &node, "net", 1_500),
            Err(ApprovalError::Challenge(ChallengeError::DidMismatch { .. }))
        ));
    }
}
