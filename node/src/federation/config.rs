//! The providers file (`--providers FILE`, env `DIDMESH_PROVIDERS`): one
//! `[[provider]]` TOML table per external OpenID provider.
//!
//! ```toml
//! [[provider]]
//! name = "acme"                    # 1-32 of [a-z0-9_-]; in the callback URL
//! display_name = "Acme"            # on the sign-in page's button
//! issuer = "https://id.acme.example"   # its discovery document is read
//! client_id = "didmesh-node-1"
//! client_secret_file = "acme.secret"   # or client_secret = "…"
//! scopes = ["openid"]              # optional; must include openid
//! algs = ["RS256"]                 # optional; default: what discovery lists
//! ```
//!
//! Everything is checked when the file is read, at start (a bad file stops
//! the node with the reason) and on SIGHUP (a bad file keeps the old set):
//! unknown fields, duplicate names, a missing or doubled secret, an
//! unreadable secret file (relative paths are relative to the providers
//! file), an issuer that is not `https://` (plain `http://` only on a
//! loopback host, for tests; OpenID Connect Discovery §3 requires TLS), or
//! a scope list without `openid` (OpenID Connect Core §3.1.2.1). Secrets
//! never reach a log line or `Debug` ([`Secret`]).

use crate::config_file;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Providers in one file at most (each is a button on the sign-in page).
pub const MAX_PROVIDERS: usize = 32;

/// A client secret: shown as `***` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One checked `[[provider]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub name: String,
    pub display_name: String,
    /// Exactly as configured (no trailing slash added or removed): `iss`
    /// must equal it (OpenID Connect Core §3.1.3.7 step 2).
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    /// Allowed ID-token algorithms; `None`: discovery's list (asymmetric
    /// ones only).
    pub algs: Option<Vec<Algorithm>>,
}

/// Why a providers file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("providers file {path}: {why}")]
pub struct ConfigError {
    pub path: String,
    pub why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    provider: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    display_name: String,
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    algs: Option<Vec<String>>,
}

// A hand-written Debug so that a parse error path can never print it.
impl fmt::Debug for RawProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawProvider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The asymmetric JWS algorithms an ID token may use here. HMAC ones are
/// never accepted: their key would be the client secret (OpenID Connect
/// Core §10.1), which a JWKS must not stand in for; `none` is never
/// accepted either (§3.1.3.7 step 7 requires a signature in the code flow
/// for us, since we do not rely on TLS alone).
pub fn parse_alg(s: &str) -> Option<Algorithm> {
    Some(match s {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A provider name: 1-32 of `[a-z0-9_-]` (it is a URL path segment and a
/// ledger field).
pub fn valid_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `host` (no port) is a loopback name or address.
fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks an issuer URL: `https://host[:port][/path]`, no query, fragment
/// or user info (Discovery §2); `http://` only on a loopback host.
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("issuer {issuer:?} {why}"));
    let Some((scheme, rest)) = issuer.split_once("://") else {
        return bad("is not an absolute URL");
    };
    if issuer.contains(['?', '#']) || issuer.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must have no query, fragment or spaces");
    }
    let Some(host) = crate::oidc::host_of(issuer) else {
        return bad("has no host");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || authority.contains('@') {
        return bad("has no host (or has user info)");
    }
    match scheme {
        "https" => Ok(()),
        "http" if loopback(&host) => Ok(()),
        "http" => bad("must be https:// (http:// only on a loopback host)"),
        _ => bad("must be https://"),
    }
}

fn check(raw: RawProvider, base: &Path) -> Result<ProviderConfig, String> {
    let name = raw.name;
    if !valid_name(&name) {
        return Err(format!(
            "provider name {name:?} must be 1-32 characters of a-z, 0-9, _ and -"
        ));
    }
    // `/federation/cli/{poll}` and `/federation/attest` are routes.
    if name == "cli" || name == "attest" {
        return Err(format!("provider name {name:?} is reserved"));
    }
    let within = |why: String| format!("provider {name:?}: {why}");
    let display_name = raw.display_name.trim().to_string();
    if display_name.is_empty()
        || display_name.chars().count() > 64
        || display_name.chars().any(char::is_control)
    {
        return Err(within(
            "display_name must be 1-64 printable characters".into(),
        ));
    }
    check_issuer(&raw.issuer).map_err(within)?;
    if raw.client_id.is_empty()
        || raw.client_id.len() > 255
        || raw.client_id.chars().any(char::is_control)
    {
        return Err(within(
            "client_id must be 1-255 printable characters".into(),
        ));
    }
    let secret = config_file::secret(
        raw.client_secret,
        raw.client_secret_file,
        base,
        "client_secret",
        "client secret",
    )
    .map_err(within)?;
    let scopes = raw.scopes.unwrap_or_else(|| vec!["openid".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(within(
            "scopes must include \"openid\" (OpenID Connect Core §3.1.2.1)".into(),
        ));
    }
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    if scopes.iter().any(|s| {
        s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    }) {
        return Err(within("a scope is not an RFC 6749 §3.3 scope-token".into()));
    }
    let algs = match raw.algs {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(within("algs is empty (leave it out to use discovery's)".into()))
        }
        Some(list) => Some(
            list.iter()
                .map(|a| {
                    parse_alg(a).ok_or_else(|| {
                        within(format!(
                            "alg {a:?} is not accepted (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(ProviderConfig {
        name,
        display_name,
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret: Secret(secret),
        scopes,
        algs,
    })
}

/// Parses providers from TOML text; `base` is the folder relative secret
/// files are read from.
pub fn parse(text: &str, base: &Path) -> Result<Vec<ProviderConfig>, String> {
    let raw: RawFile = config_file::parse_toml(text)?;
    if raw.provider.len() > MAX_PROVIDERS {
        return Err(format!("more than {MAX_PROVIDERS} providers"));
    }
    let mut out: Vec<ProviderConfig> = vec![];
    for p in raw.provider {
        let p = check(p, base)?;
        if out.iter().any(|o| o.name == p.name) {
            return Err(format!("provider name {:?} is used twice", p.name));
        }
        out.push(p);
    }
    Ok(out)
}

/// Reads and checks the providers file at `path`.
pub fn load(path: &Path) -> Result<Vec<ProviderConfig>, ConfigError> {
    config_file::load(path, parse).map_err(|why| ConfigError {
        path: path.display().to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[provider]]
name = "acme"
display_name = "Acme"
issuer = "https://id.acme.example"
client_id = "node-1"
client_secret = "very-secret-value"
"#;

    #[test]
    fn a_good_file_and_its_defaults() {
        let p = parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].scopes, vec!["openid".to_string()]);
        assert_eq!(p[0].algs, None);
        assert!(!format!("{p:?}").contains("very-secret-value"));
        assert!(parse("", Path::new(".")).unwrap().is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "unknown field",
                &GOOD.replace("client_id =", "colour = \"red\"\nclient_id ="),
            ),
            ("used twice", &format!("{GOOD}{GOOD}")),
            (
                "no client secret",
                &GOOD.replace("client_secret = \"very-secret-value\"", ""),
            ),
            (
                "https",
                &GOOD.replace("https://id.acme.example", "http://id.acme.example"),
            ),
            (
                "not both",
                &GOOD.replace(
                    "client_secret =",
                    "client_secret_file = \"x\"\nclient_secret =",
                ),
            ),
            (
                "cannot be read",
                &GOOD.replace(
                    "client_secret = \"very-secret-value\"",
                    "client_secret_file = \"missing.secret\"",
                ),
            ),
            ("openid", &format!("{GOOD}scopes = [\"email\"]\n")),
            ("not accepted", &format!("{GOOD}algs = [\"HS256\"]\n")),
            ("provider name", &GOOD.replace("\"acme\"", "\"Acme!\"")),
        ];
        for (want, text) in cases {
            let e = parse(text, Path::new("/nonexistent")).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("very-secret-value"), "{e}");
        }
        assert!(check_issuer("http://127.0.0.1:9000").is_ok());
        assert!(check_issuer("http://localhost:9000/x").is_ok());
        assert!(check_issuer("https://a.example?x=1").is_err());
        assert!(check_issuer("https://u@a.example").is_err());
    }
}
