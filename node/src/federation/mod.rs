//! Sign-in through external OpenID providers (issue 10): the node as an
//! OpenID *relying party* (OpenID Connect Core 1.0, authorization code
//! flow with PKCE, RFC 7636) of the providers in `--providers FILE`.
//!
//! No provider and no node decides who a DID is: the DID's owner links a
//! provider account with a signed update carrying a member's attestation
//! ([`did_core::federation`]); a node then accepts a verified sign-in at
//! that provider as a login of the one DID whose usable state holds a
//! valid link for the account's commitment.
//!
//! ```text
//!  page ── GET /federation/NAME/start?request=H ──► 303 provider (state, nonce, PKCE)
//!  cli  ── POST /federation/NAME/cli {purpose, did?} ──► {open, poll, expires_at}
//!  provider ── GET /federation/NAME/callback?code&state ──► node:
//!       code → token endpoint (5 s) → ID token verified → commitment →
//!       page: step-6 code (amr fed, idp NAME) → 303 RP | not-linked page
//!       cli:  poll settles with a token | an attestation | a refusal
//!  cli  ── GET /federation/cli/POLL ──► {status: waiting|done|refused|expired}
//!  page ── POST /federation/attest {fed, did} ──► {link} (not-linked page)
//! ```
//!
//! * [`config`] — the providers file (TOML), checked; secrets never shown.
//! * [`provider`] — discovery, JWKS cache with refetch, token exchange.
//! * [`idtoken`] — ID-token verification (Core §3.1.3.7).
//! * [`flow`] — flows by `state`, CLI polls, `fed` handles (memory, bounded).
//! * [`routes`] — the HTTP endpoints and pages.
//!
//! The callback URL a provider must allow for this node is
//! `PUBLIC/federation/NAME/callback`, PUBLIC being `--public-url`: state is
//! kept by the node that started the flow, so each node has its own.
//! `SIGHUP` reloads the file ([`Federation::reload`]); a bad file keeps the
//! set in force.

pub mod config;
pub mod flow;
pub mod idtoken;
pub mod provider;
pub mod routes;

use config::{ConfigError, ProviderConfig};
use provider::Provider;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use routes::routes;

/// The node's providers and flows, in [`crate::NodeState::federation`].
pub struct Federation {
    /// The providers file, when `--providers` was given.
    path: Option<PathBuf>,
    providers: RwLock<Arc<Vec<Arc<Provider>>>>,
    pub flows: flow::Flows,
}

impl Federation {
    /// No providers (no `--providers`).
    pub fn none() -> Federation {
        Federation {
            path: None,
            providers: RwLock::new(Arc::new(vec![])),
            flows: flow::Flows::default(),
        }
    }

    /// Reads and checks the providers file (at start: an error stops the
    /// node with its reason).
    pub fn load(path: Option<&Path>) -> Result<Federation, ConfigError> {
        let Some(path) = path else {
            return Ok(Federation::none());
        };
        let configs = config::load(path)?;
        let providers = configs.into_iter().map(|c| Arc::new(Provider::new(c)));
        Ok(Federation {
            path: Some(path.to_path_buf()),
            providers: RwLock::new(Arc::new(providers.collect())),
            flows: flow::Flows::default(),
        })
    }

    /// Reads the file again (SIGHUP). A bad file keeps the providers in
    /// force and returns why; a provider whose configuration did not change
    /// keeps its caches. Flows in progress keep working for providers that
    /// stay. Returns the provider names now in force.
    pub fn reload(&self) -> Result<Vec<String>, ConfigError> {
        let Some(path) = &self.path else {
            return Ok(vec![]);
        };
        let configs = config::load(path)?;
        let old = self.all();
        let next: Vec<Arc<Provider>> = configs
            .into_iter()
            .map(|c: ProviderConfig| {
                old.iter()
                    .find(|p| p.config == c)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Provider::new(c)))
            })
            .collect();
        let names = next.iter().map(|p| p.config.name.clone()).collect();
        if let Ok(mut guard) = self.providers.write() {
            *guard = Arc::new(next);
        }
        Ok(names)
    }

    /// The providers in force, in file order.
    pub fn all(&self) -> Arc<Vec<Arc<Provider>>> {
        self.providers
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|_| Arc::new(vec![]))
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<Arc<Provider>> {
        self.all().iter().find(|p| p.config.name == name).cloned()
    }

    /// `(name, display_name)` of each provider, for the sign-in page's
    /// "Continue with NAME" buttons.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.all()
            .iter()
            .map(|p| (p.config.name.clone(), p.config.display_name.clone()))
            .collect()
    }

    /// Forgets expired flows, polls and handles (housekeeping timer).
    pub fn prune(&self, now: u64) {
        self.flows.prune(now);
    }
}

/// The callback URL of provider `name` at the node whose public URL is
/// `public_url` (the `redirect_uri` the provider must allow).
pub fn callback_url(public_url: &str, name: &str) -> String {
    format!(
        "{}/federation/{name}/callback",
        public_url.trim_end_matches('/')
    )
}
