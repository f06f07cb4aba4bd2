//! OpenID relying parties registered on the ledger (PROTOCOL.md,
//! "Clients").
//!
//! A client is an entry in its owner's DID state, so registering, changing
//! and deleting one is a signed `update` of that DID: the fork rule,
//! disputes and recovery keys protect it exactly as they protect keys, and
//! every node knows every client as soon as the op has arrived.
//!
//! ```text
//! client_id = <suffix of the owner's did:mesh> "." <entry id>
//! ```
//!
//! so a node finds a client from its id alone, without an index, and no one
//! can register a client id under somebody else's DID.
//!
//! A confidential client's secret is 32 random bytes the owner's wallet
//! draws; the ledger holds only `blake3(SECRET_CONTEXT ‖ secret)`. The
//! secret has 256 bits of entropy, so a reader of the ledger cannot search
//! for it, and a fast hash is enough (no password-hashing function needed).

use crate::op::{OpError, DID_MESH_PREFIX};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Domain separation of the secret hash.
pub const SECRET_CONTEXT: &[u8] = b"didmesh client secret v1\0";
/// Redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 5;

/// The algorithm a client's ID tokens are signed with (OpenID Connect
/// Dynamic Client Registration, `id_token_signed_response_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum IdTokenAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256: the OIDC default and the only alg
    /// every relying-party library accepts.
    #[default]
    RS256,
    /// ECDSA P-256 with SHA-256 (what AWS Cognito and Auth0 take from an
    /// external IdP besides RS256).
    ES256,
    EdDSA,
}

impl IdTokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            IdTokenAlg::RS256 => "RS256",
            IdTokenAlg::ES256 => "ES256",
            IdTokenAlg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<IdTokenAlg> {
        match s {
            "RS256" => Some(IdTokenAlg::RS256),
            "ES256" => Some(IdTokenAlg::ES256),
            "EdDSA" => Some(IdTokenAlg::EdDSA),
            _ => None,
        }
    }
}

fn is_rs256(a: &IdTokenAlg) -> bool {
    *a == IdTokenAlg::RS256
}

/// One registered relying party, as it sits in its owner's DID state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientReg {
    /// Entry id within the owner's DID (`[A-Za-z0-9_-]`, 1-32 characters;
    /// no `.`, so a client id splits at its first dot).
    pub id: String,
    /// Name shown on the sign-in page.
    pub name: String,
    /// Exact redirect URIs (RFC 6749 §3.1.2; compared byte for byte).
    pub redirect_uris: Vec<String>,
    /// `blake3(SECRET_CONTEXT ‖ secret)`, base64url; present = confidential
    /// client (authenticates at the token endpoint), absent = public client
    /// (must use PKCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// ID-token signing alg; RS256 when absent.
    #[serde(default, skip_serializing_if = "is_rs256")]
    pub id_token_alg: IdTokenAlg,
}

impl ClientReg {
    pub fn confidential(&self) -> bool {
        self.secret_hash.is_some()
    }

    /// Whether `secret` is this client's secret (constant time).
    pub fn secret_matches(&self, secret: &str) -> bool {
        let Some(want) = &self.secret_hash else {
            return false;
        };
        let got = secret_hash(secret);
        got.len() == want.len()
            && got
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub(crate) fn check(&self) -> Result<(), OpError> {
        check_entry_id(&self.id)?;
        if self.name.is_empty() || self.name.len() > 64 || self.name.chars().any(char::is_control) {
            return Err(OpError::Invalid(format!(
                "client {}: name must be 1-64 bytes without control characters",
                self.id
            )));
        }
        if self.redirect_uris.is_empty() || self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(OpError::Invalid(format!(
                "client {}: 1 to {MAX_REDIRECT_URIS} redirect URIs",
                self.id
            )));
        }
        for (i, uri) in self.redirect_uris.iter().enumerate() {
            check_redirect_uri(uri).map_err(|why| {
                OpError::Invalid(format!("client {}: redirect URI {uri:?}: {why}", self.id))
            })?;
            if self.redirect_uris[..i].contains(uri) {
                return Err(OpError::Invalid(format!(
                    "client {}: duplicate redirect URI",
                    self.id
                )));
            }
        }
        if let Some(h) = &self.secret_hash {
            let ok = URL_SAFE_NO_PAD
                .decode(h)
                .map(|b| b.len() == 32 && URL_SAFE_NO_PAD.encode(&b) == *h)
                .unwrap_or(false);
            if !ok {
                return Err(OpError::Invalid(format!(
                    "client {}: secret_hash must be base64url of 32 bytes",
                    self.id
                )));
            }
        }
        Ok(())
    }
}

fn check_entry_id(id: &str) -> Result<(), OpError> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "client id {id:?} must be 1-32 characters of [A-Za-z0-9_-]"
        )))
    }
}

/// A redirect URI a client may register (RFC 6749 §3.1.2, OAuth 2.0
/// Security BCP §2.1, RFC 8252 §7.3): absolute, no fragment, no userinfo,
/// `https`, or `http` only on a loopback host (a native or local app).
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 512 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be at most 512 bytes without spaces or control characters");
    }
    if uri.contains('#') {
        return Err("must not have a fragment");
    }
    let (scheme, rest) = uri.split_once("://").ok_or("must be an absolute URL")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("must name a host");
    }
    if authority.contains('@') {
        return Err("must not carry user information");
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "localhost" | "127.0.0.1" | "::1") => Ok(()),
        "http" => Err("http is allowed only for localhost, 127.0.0.1 and [::1]"),
        _ => Err("scheme must be https (or http on a loopback host)"),
    }
}

/// `client_id` of entry `entry` of `did` (module doc).
pub fn client_id(did: &str, entry: &str) -> Option<String> {
    let suffix = did.strip_prefix(DID_MESH_PREFIX)?;
    Some(format!("{suffix}.{entry}"))
}

/// The owner DID and entry id a `client_id` names. `None` when it cannot
/// be one of ours (the caller answers `invalid_client`).
pub fn parse_client_id(client_id: &str) -> Option<(String, &str)> {
    if client_id.len() > 96 {
        return None;
    }
    let (suffix, entry) = client_id.split_once('.')?;
    check_entry_id(entry).ok()?;
    let did = format!("{DID_MESH_PREFIX}{suffix}");
    crate::op::parse_mesh_did(&did).ok()?;
    Some((did, entry))
}

/// What the ledger stores for a client secret (module doc).
pub fn secret_hash(secret: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(SECRET_CONTEXT);
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_follow_the_security_bcp() {
        for ok in [
            "https://app.example/cb",
            "https://app.example:8443/cb?x=1",
            "http://localhost:5000/callback",
            "http://127.0.0.1/cb",
            "http://[::1]:8080/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "javascript:alert(1)",
            "https://user@app.example/cb",
            "/relative",
            "https:///nohost",
            "http://localhost.evil.example/cb",
            "custom://cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ids_round_trip_and_refuse_strangers() {
        let did = "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let id = client_id(did, "home").unwrap();
        assert_eq!(parse_client_id(&id), Some((did.to_string(), "home")));
        assert_eq!(parse_client_id("nodot"), None);
        assert_eq!(parse_client_id("short.home"), None);
        assert_eq!(parse_client_id(&format!("{id}.x")), None);
    }

    #[test]
    fn a_secret_matches_only_itself() {
        let c = ClientReg {
            id: "a".into(),
            name: "A".into(),
            redirect_uris: vec!["https://a.example/cb".into()],
            secret_hash: Some(secret_hash("s3cret")),
            id_token_alg: IdTokenAlg::RS256,
        };
        assert!(c.check().is_ok());
        assert!(c.secret_matches("s3cret"));
        assert!(!c.secret_matches("s3cre"));
        assert!(!c.secret_matches(""));
    }
}
