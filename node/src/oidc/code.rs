//! Authorization codes (RFC 6749 §4.1.2): self-contained, signed by the
//! issuing member's Ed25519 key, so that any node can check a code another
//! node issued (behind a load balancer nothing is sticky), while single use
//! is the issuer's to vouch for ([`super::consume`]).
//!
//! ```text
//! code    = base64url(payload ‖ signature[64])
//! payload = version(1) id[16] issued_at(u64) expires_at(u64) auth_time(u64)
//!           member_key[32] str(peer id) str(client_id) sha256(redirect_uri)[32]
//!           has_challenge(1) [sha256 of the PKCE verifier, 32] str(nonce) str(sub)
//!           amr_count(1) str(amr)…  [str(idp), version 2 only]
//!           [str(idp, empty = none) str(key), version 3 only]
//! str     = len(u8) bytes
//! signature = Ed25519(member key, "didmesh oidc code v1\0" ‖ payload)
//! ```
//!
//! A code lives `--code-ttl` seconds (60 by default; RFC 6749 §4.1.2
//! recommends at most 10 minutes) and is bound to its client, the exact
//! redirect URI (by hash, which is all an equality check needs), the PKCE
//! challenge (decoded) and the nonce, which the ID token echoes. It names
//! the member that signed it and that member's libp2p peer id, which the
//! redeeming node asks to consume it. A sign-in through an external
//! provider ([`crate::federation`]) names the provider (`idp`), which the
//! tokens carry; such a code is version 2, every other code stays
//! version 1, so nodes of the previous release still read those. A code
//! that knows the key that proved the sign-in (a DID key's multibase or a
//! passkey id) is version 3 and carries it, so the tokens carry it as
//! their `key` claim (removing that key revokes them; PROTOCOL.md,
//! "Revocation"). The context string keeps a code from
//! ever being read as any other message the member key signs (ops, tokens).
//!
//! The code is not encrypted: it carries the DID and the nonce, both of
//! which the ID token hands the same client anyway. It fits the 1,024
//! bytes a consume frame allows ([`did_core::sync_frame::MAX_CODE_BYTES`]):
//! at most ~940 with every field at its limit.

pub use super::request::{open as open_request_at, AuthRequest, RequestError};
use crate::auth::{AuthError, Proof};
use crate::NodeState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::PublicKey;
use sha2::{Digest as _, Sha256};

const VERSION: u8 = 1;
/// A code that names the external provider of a federated sign-in.
const VERSION_IDP: u8 = 2;
/// A code that names the key that proved the sign-in (and maybe an idp).
const VERSION_KEY: u8 = 3;
const CONTEXT: &[u8] = b"didmesh oidc code v1\0";
/// Longest code text accepted (base64url of 1,024 bytes would be 1,366;
/// a code is at most ~940 characters, [`MAX_CODE_BYTES`] on the wire).
const MAX_CODE_TEXT: usize = did_core::sync_frame::MAX_CODE_BYTES;
/// Longest nonce a request may carry, so that a code fits its frame.
pub const MAX_NONCE: usize = 255;

/// Why a code could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("malformed authorization code")]
    Malformed,
    #[error("authorization code not signed by a current member")]
    UnknownIssuer,
    #[error("authorization code signature does not verify")]
    BadSignature,
    #[error("a field does not fit an authorization code: {0}")]
    TooLong(&'static str),
}

/// What a verified code says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFacts {
    /// Random id, what the issuer records as used.
    pub id: [u8; 16],
    pub issued_at: u64,
    pub expires_at: u64,
    /// When the user proved possession of a key (OIDC `auth_time`).
    pub auth_time: u64,
    /// The member that issued (and signed) the code.
    pub member_key: PublicKey,
    /// Its libp2p peer id; `None` for a node running without p2p.
    pub peer: Option<String>,
    pub client_id: String,
    pub redirect_uri_hash: [u8; 32],
    /// SHA-256 the PKCE verifier must hash to (RFC 7636 S256).
    pub code_challenge: Option<[u8; 32]>,
    pub nonce: Option<String>,
    /// The DID that signed in.
    pub sub: String,
    /// RFC 8176 methods (`swk`, `hwk`, `user`; `fed` for a sign-in
    /// through an external provider).
    pub amr: Vec<String>,
    /// The external provider of a federated sign-in (its configured name).
    pub idp: Option<String>,
    /// The key that proved the sign-in (the tokens' `key` claim).
    pub key: Option<String>,
}

/// SHA-256 of a redirect URI, as a code binds it.
pub fn redirect_uri_hash(uri: &str) -> [u8; 32] {
    Sha256::digest(uri.as_bytes()).into()
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), CodeError> {
    let len = u8::try_from(s.len()).map_err(|_| CodeError::TooLong(what))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A reader over the payload; every read checks the length left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodeError> {
        if self.0.len() < n {
            return Err(CodeError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, CodeError> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, CodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, CodeError> {
        let n = usize::from(self.byte()?);
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| CodeError::Malformed)
    }
    fn opt_string(&mut self) -> Result<Option<String>, CodeError> {
        Ok(Some(self.string()?).filter(|s| !s.is_empty()))
    }
}

fn encode(f: &CodeFacts) -> Result<Vec<u8>, CodeError> {
    let mut out = Vec::with_capacity(512);
    out.push(match (&f.key, &f.idp) {
        (Some(_), _) => VERSION_KEY,
        (None, Some(_)) => VERSION_IDP,
        (None, None) => VERSION,
    });
    out.extend_from_slice(&f.id);
    for n in [f.issued_at, f.expires_at, f.auth_time] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(f.member_key.as_bytes());
    put_str(&mut out, f.peer.as_deref().unwrap_or_default(), "peer id")?;
    put_str(&mut out, &f.client_id, "client_id")?;
    out.extend_from_slice(&f.redirect_uri_hash);
    match &f.code_challenge {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(c);
        }
        None => out.push(0),
    }
    put_str(&mut out, f.nonce.as_deref().unwrap_or_default(), "nonce")?;
    put_str(&mut out, &f.sub, "sub")?;
    let n = u8::try_from(f.amr.len()).map_err(|_| CodeError::TooLong("amr"))?;
    out.push(n);
    for m in &f.amr {
        put_str(&mut out, m, "amr")?;
    }
    match &f.key {
        Some(key) => {
            put_str(&mut out, f.idp.as_deref().unwrap_or_default(), "idp")?;
            put_str(&mut out, key, "key")?;
        }
        None => {
            if let Some(idp) = &f.idp {
                put_str(&mut out, idp, "idp")?;
            }
        }
    }
    Ok(out)
}

fn decode(payload: &[u8]) -> Result<CodeFacts, CodeError> {
    let mut r = Reader(payload);
    let version = r.byte()?;
    if ![VERSION, VERSION_IDP, VERSION_KEY].contains(&version) {
        return Err(CodeError::Malformed);
    }
    let id = r.array()?;
    let (issued_at, expires_at, auth_time) = (r.u64()?, r.u64()?, r.u64()?);
    let member_key = PublicKey::from_bytes(&r.array()?).map_err(|_| CodeError::Malformed)?;
    let peer = r.opt_string()?;
    let client_id = r.string()?;
    let redirect_uri_hash = r.array()?;
    let code_challenge = match r.byte()? {
        0 => None,
        1 => Some(r.array()?),
        _ => return Err(CodeError::Malformed),
    };
    let nonce = r.opt_string()?;
    let sub = r.string()?;
    let amr = (0..r.byte()?)
        .map(|_| r.string())
        .collect::<Result<Vec<_>, _>>()?;
    let idp = match version {
        VERSION_IDP | VERSION_KEY => r.opt_string()?,
        _ => None,
    };
    let key = match version {
        VERSION_KEY => Some(r.string()?),
        _ => None,
    };
    // One spelling per code: version 2 always names an idp, version 3 a
    // non-empty key.
    if (version == VERSION_IDP && idp.is_none())
        || key.as_ref().is_some_and(|k| k.is_empty())
        || !r.0.is_empty()
    {
        return Err(CodeError::Malformed);
    }
    Ok(CodeFacts {
        id,
        issued_at,
        expires_at,
        auth_time,
        member_key,
        peer,
        client_id,
        redirect_uri_hash,
        code_challenge,
        nonce,
        sub,
        amr,
        idp,
        key,
    })
}

/// What a member signs for a code or a refresh token: the token kind's
/// context string, then the payload (one signature can never pass for the
/// other kind).
pub(super) fn signing_input(context: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + payload.len());
    m.extend_from_slice(context);
    m.extend_from_slice(payload);
    m
}

/// Issues a code for `did`, who just signed in with `amr`, answering the
/// authorization request `req`.
pub fn issue(
    state: &NodeState,
    req: &AuthRequest,
    did: &str,
    amr: &[&str],
) -> Result<String, CodeError> {
    issue_with_idp(state, req, did, amr, None)
}

/// [`issue`] naming `key`, the DID key (multibase) or passkey id that
/// proved the sign-in ([`crate::auth::Verified::key`]): the tokens the code
/// buys carry it as their `key` claim.
pub fn issue_with_key(
    state: &NodeState,
    req: &AuthRequest,
    did: &str,
    amr: &[&str],
    key: Option<&str>,
) -> Result<String, CodeError> {
    issue_full(state, req, did, amr, None, key)
}

/// [`issue`] for a sign-in through the external provider `idp` (its
/// configured name), which the code and then the tokens carry.
pub fn issue_with_idp(
    state: &NodeState,
    req: &AuthRequest,
    did: &str,
    amr: &[&str],
    idp: Option<&str>,
) -> Result<String, CodeError> {
    issue_full(state, req, did, amr, idp, None)
}

fn issue_full(
    state: &NodeState,
    req: &AuthRequest,
    did: &str,
    amr: &[&str],
    idp: Option<&str>,
    key: Option<&str>,
) -> Result<String, CodeError> {
    let now = crate::now();
    // Random, with a tag only this run of the node can check: the issuer
    // consumes only codes of its current run ([`super::consume`]).
    let id = super::consume::fresh_code_id(state);
    let code_challenge = match &req.code_challenge {
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or(CodeError::Malformed)?,
        ),
        None => None,
    };
    let facts = CodeFacts {
        id,
        issued_at: now,
        expires_at: now.saturating_add(state.oidc.settings.code_ttl),
        auth_time: now,
        // Filled in with the key that signs (one snapshot of the key set).
        member_key: state.token_keys.ed25519_public(),
        peer: state.p2p.get().map(|p| p.peer_id().to_string()),
        client_id: req.client_id.clone(),
        redirect_uri_hash: redirect_uri_hash(&req.redirect_uri),
        code_challenge,
        nonce: req.nonce.clone(),
        sub: did.to_string(),
        amr: amr.iter().map(|s| s.to_string()).collect(),
        idp: idp.map(str::to_string),
        key: key.filter(|k| !k.is_empty()).map(str::to_string),
    };
    let mut payload = encode(&facts)?;
    let (signer, sig) = state
        .token_keys
        .ed25519_sign(&signing_input(CONTEXT, &payload));
    if signer != facts.member_key {
        // A rotation landed between the two reads: sign again with the
        // new key named in the code.
        let facts = CodeFacts {
            member_key: signer,
            ..facts
        };
        let mut payload = encode(&facts)?;
        let (_, sig) = state
            .token_keys
            .ed25519_sign(&signing_input(CONTEXT, &payload));
        payload.extend_from_slice(&sig.to_bytes());
        return Ok(URL_SAFE_NO_PAD.encode(payload));
    }
    payload.extend_from_slice(&sig.to_bytes());
    Ok(URL_SAFE_NO_PAD.encode(payload))
}

/// Reads and verifies a code: well formed, signed by the member it names,
/// which is a current member. Expiry and single use are the caller's.
pub fn facts(state: &NodeState, code: &str) -> Result<CodeFacts, CodeError> {
    if code.len() > MAX_CODE_TEXT {
        return Err(CodeError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(code)
        .map_err(|_| CodeError::Malformed)?;
    if raw.len() < 64 {
        return Err(CodeError::Malformed);
    }
    let (payload, sig) = raw.split_at(raw.len() - 64);
    let facts = decode(payload)?;
    // A current member's key, or one rotated away inside the overlap
    // window (a code signed just before the rotation still redeems).
    if !state.is_live_member_key(&facts.member_key) {
        return Err(CodeError::UnknownIssuer);
    }
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| CodeError::Malformed)?;
    if !facts
        .member_key
        .verify(&signing_input(CONTEXT, payload), &sig)
    {
        return Err(CodeError::BadSignature);
    }
    Ok(facts)
}

/// [`super::request::open`] at the current time (the page's handle).
pub fn open_request(state: &NodeState, handle: &str) -> Result<AuthRequest, RequestError> {
    open_request_at(state, handle, crate::now())
}

/// The display name of the request's client (its id if it vanished).
pub fn client_name(state: &NodeState, req: &AuthRequest) -> String {
    super::find_client(state, &req.client_id)
        .map(|c| c.name)
        .unwrap_or_else(|_| req.client_id.clone())
}

/// Checks a login signature like `POST /v1/auth/token` does (nonce MAC and
/// single use, DID resolved now, an `authentication` key) without minting
/// a token.
pub fn verify_login(
    state: &NodeState,
    did: &str,
    nonce: &str,
    signature: &str,
    now: u64,
) -> Result<(), AuthError> {
    state
        .auth
        .verify(
            &state.ledger,
            did,
            nonce,
            Proof::Signature(signature),
            false,
            now,
        )
        .map(|_| ())
}

/// `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2: keep
/// the registered URI's own query, add ours form-encoded).
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{sep}{}", ser.finish())
}

/// The successful authorization response (RFC 6749 §4.1.2, RFC 9207 `iss`).
pub fn success_redirect(state: &NodeState, req: &AuthRequest, code: &str) -> String {
    let mut params = vec![("code", code)];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    params.push(("iss", &state.oidc.settings.issuer));
    redirect_with(&req.redirect_uri, &params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CodeFacts {
        CodeFacts {
            id: [7; 16],
            issued_at: 100,
            expires_at: 160,
            auth_time: 100,
            member_key: did_core::keys::public_of(&ed25519_dalek::SigningKey::from_bytes(&[3; 32])),
            peer: Some("12D3KooWLJtG8fd2hkQzTn96MrLvThmnNQjTUFZwGEsLRz5EmSzc".into()),
            client_id: format!("{}.{}", "a".repeat(32), "b".repeat(32)),
            redirect_uri_hash: [1; 32],
            code_challenge: Some([2; 32]),
            nonce: Some("n".repeat(MAX_NONCE)),
            sub: format!("did:key:z6Mk{}", "x".repeat(44)),
            amr: vec!["hwk".into(), "user".into()],
            idp: None,
            key: None,
        }
    }

    #[test]
    fn a_code_round_trips_and_fits_a_consume_frame_at_its_limits() {
        let f = sample();
        let payload = encode(&f).unwrap();
        assert_eq!(decode(&payload).unwrap(), f);
        let text_len = (payload.len() + 64).div_ceil(3) * 4;
        assert!(text_len <= MAX_CODE_TEXT, "{text_len}");
        let mut none = f.clone();
        none.peer = None;
        none.nonce = None;
        none.code_challenge = None;
        assert_eq!(decode(&encode(&none).unwrap()).unwrap(), none);
        // trailing or missing bytes are refused
        let mut longer = payload.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&payload[..payload.len() - 1]).is_err());
        // a federated sign-in's code (version 2) names its provider
        let mut fed = f.clone();
        fed.amr = vec!["fed".into()];
        fed.idp = Some("p".repeat(32));
        let payload = encode(&fed).unwrap();
        assert_eq!(payload[0], VERSION_IDP);
        assert_eq!(decode(&payload).unwrap(), fed);
        assert!((payload.len() + 64).div_ceil(3) * 4 <= MAX_CODE_TEXT);
        // a code naming the key that proved the sign-in (version 3), with
        // and without an idp, still fits a consume frame
        let mut keyed = f.clone();
        keyed.key = Some(format!("z6Mk{}", "k".repeat(44)));
        let payload = encode(&keyed).unwrap();
        assert_eq!(payload[0], VERSION_KEY);
        assert_eq!(decode(&payload).unwrap(), keyed);
        assert!((payload.len() + 64).div_ceil(3) * 4 <= MAX_CODE_TEXT);
        keyed.idp = Some("p".repeat(32));
        assert_eq!(decode(&encode(&keyed).unwrap()).unwrap(), keyed);
        let mut long_nonce = f;
        long_nonce.nonce = Some("n".repeat(MAX_NONCE + 1));
        assert!(encode(&long_nonce).is_err());
    }

    #[test]
    fn redirects_keep_the_registered_query() {
        assert_eq!(
            redirect_with("https://a.example/cb", &[("code", "x y"), ("state", "s&t")]),
            "https://a.example/cb?code=x+y&state=s%26t"
        );
        assert_eq!(
            redirect_with("https://a.example/cb?app=1", &[("code", "c")]),
            "https://a.example/cb?app=1&code=c"
        );
    }
}
