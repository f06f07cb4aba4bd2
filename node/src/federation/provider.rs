//! One external OpenID provider as this node talks to it: its discovery
//! document (OpenID Connect Discovery 1.0 §4), its JWKS (RFC 7517) and its
//! token endpoint (RFC 6749 §4.1.3).
//!
//! * Discovery is read on first use and kept for [`DISCOVERY_TTL`]; a
//!   failure is not cached (the next sign-in tries again). The document's
//!   `issuer` must equal the configured one exactly (Discovery §4.3), or a
//!   provider could speak for another.
//! * The JWKS is kept for [`JWKS_TTL`]. A `kid` it does not hold triggers
//!   one refetch (the provider rotated keys, OpenID Connect Core §10.1.1),
//!   at most once per [`REFETCH_GAP`], so a stream of tokens with made-up
//!   `kid`s cannot make the node hammer the provider.
//! * Every request has a [`TIMEOUT`], follows no redirects and reads at
//!   most [`MAX_BODY`] bytes, so a provider that is down, slow or hostile
//!   costs a sign-in at most a few seconds and a little memory.
//!
//! Nothing here logs a secret, a code or a token: errors name the provider
//! and what failed.

use super::config::{parse_alg, ProviderConfig};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Timeout of each request to a provider.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a discovery document is used.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a JWKS is used before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(3600);
/// Least time between two JWKS fetches caused by unknown `kid`s.
pub const REFETCH_GAP: Duration = Duration::from_secs(10);
/// Largest answer read from a provider.
const MAX_BODY: usize = 256 * 1024;

/// Why talking to a provider failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Down, slow, or answering garbage: `provider_unavailable`.
    #[error("the provider {0} did not answer usably: {1}")]
    Unavailable(String, String),
    /// It answered the token request with an error (RFC 6749 §5.2).
    #[error("the provider {0} refused the sign-in: {1}")]
    Refused(String, String),
    /// Its discovery document names another issuer, or lacks a field.
    #[error("the provider {0} is misconfigured: {1}")]
    Misconfigured(String, String),
}

/// The fields of a discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

struct Jwks {
    keys: Vec<Jwk>,
    fetched: Instant,
}

/// A configured provider and its caches.
pub struct Provider {
    pub config: ProviderConfig,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<(Discovery, Instant)>>,
    jwks: tokio::sync::Mutex<Option<Jwks>>,
    /// When an unknown `kid` last caused a fetch.
    last_refetch: Mutex<Option<Instant>>,
    /// JWKS fetches so far (tests, metrics).
    pub jwks_fetches: std::sync::atomic::AtomicU64,
}

/// The answer of a token request (OpenID Connect Core §3.1.3.3).
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: Option<String>,
}

fn short(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>()
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Provider {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false)
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .user_agent(concat!("didmesh-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Provider {
            config,
            http,
            discovery: tokio::sync::Mutex::new(None),
            jwks: tokio::sync::Mutex::new(None),
            last_refetch: Mutex::new(None),
            jwks_fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn unavailable(&self, why: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable(self.config.name.clone(), why.into())
    }

    /// Reads an answer of at most [`MAX_BODY`] bytes.
    async fn body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        let mut out = vec![];
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.unavailable(format!("reading the answer: {}", kind(&e))))?
        {
            if out.len() + chunk.len() > MAX_BODY {
                return Err(self.unavailable("the answer is too large"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, ProviderError> {
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.unavailable(format!("{what}: {}", kind(&e))))?;
        if !resp.status().is_success() {
            return Err(self.unavailable(format!("{what}: HTTP {}", resp.status().as_u16())));
        }
        let body = self.body(resp).await?;
        serde_json::from_slice(&body)
            .map_err(|e| self.unavailable(format!("{what} is not the expected JSON: {e}")))
    }

    /// The discovery document, cached (module doc).
    pub async fn discovery(&self) -> Result<Discovery, ProviderError> {
        let mut cached = self.discovery.lock().await;
        if let Some((d, at)) = cached.as_ref() {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        // Discovery §4: issuer without its trailing slash, then the path.
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url, "discovery document").await?;
        let misconfigured =
            |why: String| ProviderError::Misconfigured(self.config.name.clone(), why);
        if d.issuer != self.config.issuer {
            return Err(misconfigured(format!(
                "its discovery document names the issuer {:?}, not the configured {:?}",
                short(&d.issuer),
                self.config.issuer
            )));
        }
        for (field, url) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
            ("jwks_uri", &d.jwks_uri),
        ] {
            super::config::check_issuer(url)
                .map_err(|_| misconfigured(format!("{field} is not an https URL")))?;
        }
        *cached = Some((d.clone(), Instant::now()));
        Ok(d)
    }

    /// ID-token algorithms accepted: the configured ones, else discovery's
    /// (the asymmetric ones [`parse_alg`] knows; OpenID Connect Core §15.1
    /// makes RS256 the default when the list is missing).
    pub fn algs(&self, d: &Discovery) -> Vec<Algorithm> {
        if let Some(a) = &self.config.algs {
            return a.clone();
        }
        let listed: Vec<Algorithm> = d
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|a| parse_alg(a))
            .collect();
        if d.id_token_signing_alg_values_supported.is_empty() {
            vec![Algorithm::RS256]
        } else {
            listed
        }
    }

    async fn fetch_jwks(&self, d: &Discovery) -> Result<Jwks, ProviderError> {
        self.jwks_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A JWKS may hold keys of kinds jsonwebtoken does not know (e.g.
        // `kty: "OKP"` curves other than Ed25519, or future ones): read the
        // set key by key and keep the ones that parse.
        let raw: serde_json::Value = self.get_json(&d.jwks_uri, "JWKS").await?;
        let keys = raw
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| self.unavailable("the JWKS has no keys array"))?
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .collect();
        Ok(Jwks {
            keys,
            fetched: Instant::now(),
        })
    }

    /// The JWKS key for a token's `kid` (or, without `kid`, the one key
    /// usable with `alg`, OpenID Connect Core §10.1). An unknown `kid`
    /// refetches the set once (module doc). `None`: no such key.
    pub async fn key_for(
        &self,
        d: &Discovery,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Jwk>, ProviderError> {
        let mut jwks = self.jwks.lock().await;
        let stale = jwks
            .as_ref()
            .is_none_or(|j| j.fetched.elapsed() >= JWKS_TTL);
        if stale {
            *jwks = Some(self.fetch_jwks(d).await?);
        }
        if let Some(k) = jwks.as_ref().and_then(|j| pick(&j.keys, kid, alg)) {
            return Ok(Some(k));
        }
        if stale || !self.may_refetch() {
            return Ok(None);
        }
        tracing::info!(provider = %self.config.name, "unknown kid: fetching the JWKS again");
        *jwks = Some(self.fetch_jwks(d).await?);
        Ok(jwks.as_ref().and_then(|j| pick(&j.keys, kid, alg)))
    }

    fn may_refetch(&self) -> bool {
        let Ok(mut last) = self.last_refetch.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < REFETCH_GAP) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Redeems an authorization code at the token endpoint (RFC 6749
    /// §4.1.3, RFC 7636 §4.5) and returns the ID token. Client
    /// authentication is `client_secret_basic` (RFC 6749 §2.3.1, the
    /// Discovery default) unless the provider lists only
    /// `client_secret_post`.
    pub async fn redeem(
        &self,
        d: &Discovery,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, ProviderError> {
        let c = &self.config;
        let methods = d.token_endpoint_auth_methods_supported.as_deref();
        let post_only = methods.is_some_and(|m| {
            m.iter().any(|x| x == "client_secret_post")
                && !m.iter().any(|x| x == "client_secret_basic")
        });
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut req = self
            .http
            .post(&d.token_endpoint)
            .header(reqwest::header::ACCEPT, "application/json");
        if post_only {
            form.push(("client_id", &c.client_id));
            form.push(("client_secret", c.client_secret.expose()));
        } else {
            // RFC 6749 §2.3.1: id and secret form-encoded before Basic.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let creds = format!("{}:{}", enc(&c.client_id), enc(c.client_secret.expose()));
            use base64::Engine as _;
            req = req.header(
                reqwest::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(creds)
                ),
            );
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = req
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.unavailable(format!("token request: {}", kind(&e))))?;
        let status = resp.status();
        let body = self.body(resp).await?;
        if !status.is_success() {
            let error = serde_json::from_slice::<ErrorAnswer>(&body)
                .ok()
                .and_then(|e| e.error)
                .map(|e| short(&e));
            return Err(match (status.as_u16(), error) {
                (400..=499, Some(e)) => ProviderError::Refused(c.name.clone(), e),
                (s, _) => self.unavailable(format!("token request: HTTP {s}")),
            });
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| self.unavailable("the token answer is not JSON"))?;
        answer
            .id_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unavailable("the token answer has no id_token"))
    }
}

/// The key for `kid` usable with `alg` (key type and, when the key says,
/// its `alg` and `use` must fit).
fn pick(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    let fits = |k: &&Jwk| {
        let family = matches!(
            (&k.algorithm, alg),
            (
                AlgorithmParameters::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (
                AlgorithmParameters::EllipticCurve(_),
                Algorithm::ES256 | Algorithm::ES384
            ) | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
        );
        let use_ok = !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption));
        let alg_ok = k
            .common
            .key_algorithm
            .is_none_or(|ka| ka.to_string() == format!("{alg:?}"));
        family && use_ok && alg_ok
    };
    match kid {
        Some(kid) => keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid))
            .find(fits)
            .cloned(),
        None => {
            let mut usable = keys.iter().filter(fits);
            match (usable.next(), usable.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        }
    }
}

/// What kind of transport failure `e` is, without its URL (which for the
/// token endpoint is harmless, but keep log lines short and uniform).
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_builder() {
        "cannot make this request"
    } else if e.is_redirect() {
        "redirected"
    } else if e.is_decode() || e.is_body() {
        "bad answer"
    } else {
        "request failed"
    }
}
