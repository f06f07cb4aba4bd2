//! `didmesh login --via NAME`, `didmesh link --via NAME` and `didmesh
//! unlink NAME`: signing in through an external OpenID provider the nodes
//! are configured with (issue 10; PROTOCOL.md "Federated links").
//!
//! The browser does the provider's part; this command only starts the flow
//! at a node and waits for its outcome, like `gcloud auth login`:
//!
//! 1. `POST /federation/NAME/cli {"purpose":"login"|"link","did"?}` →
//!    `{"open","poll","expires_at"}`;
//! 2. print `open: URL` on a line of its own on stdout (the user opens it;
//!    the provider sends the browser back to that node's callback, which
//!    verifies the provider's ID token);
//! 3. `GET /federation/cli/POLL` every 500 ms until `done`, `refused` or
//!    `expired` (at most 10 minutes).
//!
//! `login --via` then prints the didmesh access token alone on its last
//! line (as `login` does) and needs no wallet: the account at the provider
//! is the credential, the ledger's link says which DID it signs in as.
//!
//! `link --via` receives a member's attestation for the wallet's DID and
//! adds it to the DID state with an update signed by the wallet's main
//! (rotation) key, built on the DID's verified head like `did add-key`. The
//! attestation is checked here first — signed by a *current* member over
//! this DID, this network and this provider (did-core
//! `Attestation::verify`) — so a node cannot make the wallet put a link
//! that no node would honour, or one for another DID, on the ledger.
//! `unlink` removes a link with another update; from the moment a node
//! holds that op it refuses the account (did-core `find_linked` reads the
//! head state).

use crate::cli::{LinkArgs, NodeArg, UnlinkArgs};
use crate::commands::{emit, node_client, open_did};
use crate::error::ClientError;
use crate::node::{NodeClient, Token};
use crate::wallet::{Wallet, WalletError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::federation::{provider_name_ok, Attestation, FedLink};
use did_core::{Limits, PublicKey};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the node is asked whether the browser finished (issue 10).
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// The longest a command waits for the browser.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(600);
/// How long polling rides out a node that cannot be reached (a restart)
/// before giving up.
const UNREACHABLE_FOR_AT_MOST: Duration = Duration::from_secs(30);
/// Longest poll id accepted into a URL path.
const MAX_POLL_ID: usize = 128;

/// What the node answers to the start of a CLI flow.
#[derive(Debug, Deserialize)]
struct Started {
    /// Where the user's browser goes (the provider, through the node).
    open: String,
    /// The id to poll with.
    poll: String,
    /// Unix seconds after which the flow is dead.
    #[serde(default)]
    expires_at: Option<u64>,
}

/// The end of a CLI flow that went through.
#[derive(Debug)]
pub enum Outcome {
    /// `login`: the didmesh access token, and the DID it is for when the
    /// node says (shown to the user only).
    Token(Token, Option<String>),
    /// `link`: the member's attestation (a link without its entry id).
    Link(Value),
}

/// Refuses provider names that are not a configured provider's shape
/// (`[a-z0-9_-]{1,32}`, did-core): they go into URL paths.
fn check_provider(name: &str) -> Result<(), ClientError> {
    if provider_name_ok(name) {
        Ok(())
    } else {
        Err(ClientError::usage(format!(
            "{name:?} is not a provider name (1-32 of a-z, 0-9, - and _; the node operator names them)"
        )))
    }
}

/// Runs one CLI flow at `client`: start, `open: URL`, poll (module doc).
pub async fn run_flow(
    client: &NodeClient,
    provider: &str,
    body: &Value,
) -> Result<Outcome, ClientError> {
    check_provider(provider)?;
    let started: Started = client
        .post_json(&format!("/federation/{provider}/cli"), body)
        .await?;
    if started.poll.is_empty()
        || started.poll.len() > MAX_POLL_ID
        || !started
            .poll
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return Err(ClientError::protocol("the node named an unusable poll id"));
    }
    if !(started.open.starts_with("https://") || started.open.starts_with("http://"))
        || started.open.chars().any(char::is_whitespace)
    {
        return Err(ClientError::protocol(
            "the node named no http(s) URL to open",
        ));
    }
    emit(format_args!("open: {}", started.open))?;
    eprintln!(
        "open that URL in your browser and sign in at {provider}; waiting (Ctrl-C to give up)…"
    );
    let mut deadline = Instant::now() + WAIT_AT_MOST;
    if let Some(at) = started.expires_at {
        // A little past the node's own expiry, so its `expired` is what
        // the user reads.
        let left = Duration::from_secs(at.saturating_sub(crate::now()) + 5);
        deadline = deadline.min(Instant::now() + left);
    }
    let path = format!("/federation/cli/{}", started.poll);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL_EVERY).await;
        if Instant::now() > deadline {
            return Err(ClientError::Refused {
                code: "expired".into(),
                reason: "the sign-in was not finished in time; run the command again".into(),
            });
        }
        let answer: Value = match client.get_json(&path).await {
            Ok(v) => {
                unreachable_since = None;
                v
            }
            Err(ClientError::Transport(e)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_FOR_AT_MOST {
                    return Err(ClientError::Transport(e));
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match answer["status"].as_str() {
            Some("waiting") => continue,
            Some("done") => return done(answer),
            Some("refused") => {
                return Err(ClientError::Refused {
                    code: answer["error"].as_str().unwrap_or("refused").to_string(),
                    reason: answer["reason"]
                        .as_str()
                        .unwrap_or("the node gave no reason")
                        .to_string(),
                })
            }
            Some("expired") => {
                return Err(ClientError::Refused {
                    code: "expired".into(),
                    reason: "the sign-in was not finished in time; run the command again".into(),
                })
            }
            _ => {
                return Err(ClientError::protocol(format!(
                    "unknown poll status {}",
                    answer["status"]
                )))
            }
        }
    }
}

fn done(mut answer: Value) -> Result<Outcome, ClientError> {
    if let Some(link) = answer.get_mut("link") {
        return Ok(Outcome::Link(link.take()));
    }
    let did = answer["did"].as_str().map(str::to_string);
    match answer.get_mut("token").map(Value::take) {
        // `/v1/auth/token`'s shape …
        Some(t @ Value::Object(_)) => serde_json::from_value::<Token>(t)
            .map(|t| Outcome::Token(t, did))
            .map_err(|e| ClientError::protocol(format!("token: {e}"))),
        // … or the JWT alone.
        Some(Value::String(jwt)) => Ok(Outcome::Token(
            Token {
                expires_in: seconds_left(&jwt),
                access_token: jwt,
                token_type: did_core::proto::TOKEN_TYPE.to_string(),
            },
            did,
        )),
        _ => Err(ClientError::protocol("`done` without a token or a link")),
    }
}

/// Seconds until the JWT's `exp` (0 when unreadable): only shown to the
/// user, never trusted.
fn seconds_left(jwt: &str) -> u64 {
    jwt.split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c["exp"].as_u64())
        .map(|exp| exp.saturating_sub(crate::now()))
        .unwrap_or(0)
}

/// `login --via NAME`: no wallet needed; its node is the default when
/// there is one.
pub async fn login(path: &Path, node: &NodeArg, provider: &str) -> Result<Token, ClientError> {
    check_provider(provider)?;
    let public = match Wallet::read_public(path) {
        Ok(p) => Some(p),
        Err(WalletError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let client = node_client(node, public.as_ref())?;
    match run_flow(&client, provider, &json!({ "purpose": "login" })).await? {
        Outcome::Token(token, did) => {
            if !token
                .token_type
                .eq_ignore_ascii_case(did_core::proto::TOKEN_TYPE)
            {
                return Err(ClientError::protocol(format!(
                    "unexpected token type {:?}",
                    token.token_type
                )));
            }
            eprintln!(
                "logged in to {} through {provider}{} (token expires in {} s)",
                client.base(),
                did.map(|d| format!(" as {d}")).unwrap_or_default(),
                token.expires_in
            );
            Ok(token)
        }
        Outcome::Link(_) => Err(ClientError::protocol(
            "a login flow ended with a link, not a token",
        )),
    }
}

/// The network id and the current members' Ed25519 keys (`GET /v1/network`).
async fn network(client: &NodeClient) -> Result<(String, Vec<PublicKey>), ClientError> {
    #[derive(Deserialize)]
    struct Member {
        key: PublicKey,
    }
    #[derive(Deserialize)]
    struct Network {
        network_id: String,
        members: Vec<Member>,
    }
    let n: Network = client.get_json("/v1/network").await?;
    Ok((n.network_id, n.members.into_iter().map(|m| m.key).collect()))
}

/// `link --via NAME`.
pub async fn link(path: &Path, args: &LinkArgs) -> Result<(), ClientError> {
    let provider = args.via.as_str();
    check_provider(provider)?;
    if let Some(id) = &args.id {
        if !crate::rp::valid_entry(id) {
            return Err(ClientError::usage(format!(
                "--id {id:?} must be 1-32 characters of [A-Za-z0-9_-]"
            )));
        }
    }
    // Unlock and check the DID before the browser part, so the user does
    // not sign in at the provider for nothing.
    let (wallet, client, did, head) = open_did(path, &args.node).await?;
    let max = Limits::default().max_links;
    if head.state.links.len() >= max {
        return Err(ClientError::usage(format!(
            "{did} already has {max} links, the most a DID may have; `didmesh unlink` one first"
        )));
    }
    if let Some(id) = &args.id {
        if head.state.link(id).is_some() {
            return Err(ClientError::usage(format!(
                "{did} already has a link {id}; pick another --id"
            )));
        }
    }
    let (network_id, members) = network(&client).await?;
    let body = json!({ "purpose": "link", "did": did });
    let raw = match run_flow(&client, provider, &body).await? {
        Outcome::Link(v) => v,
        Outcome::Token(..) => {
            return Err(ClientError::protocol(
                "a link flow ended with a token, not a link",
            ))
        }
    };
    let attestation: Attestation = serde_json::from_value(raw)
        .map_err(|e| ClientError::protocol(format!("the node's link is malformed: {e}")))?;
    if attestation.provider != provider {
        return Err(ClientError::protocol(format!(
            "asked to link at {provider}, the node attested a link at {:?}; nothing was signed",
            attestation.provider
        )));
    }
    if !attestation.verify(&did, &network_id, &members) {
        return Err(ClientError::protocol(format!(
            "the node's attestation does not verify for {did} on network {network_id} by a current member; nothing was signed"
        )));
    }
    // The browser part may have taken minutes: build on the head as it is now.
    let head = client.head(&did).await?;
    if let Some(l) = head
        .state
        .links
        .iter()
        .find(|l| l.commitment == attestation.commitment)
    {
        eprintln!(
            "{did} already links this account at {} (link {}); nothing to do",
            l.provider, l.id
        );
        return emit(format_args!("linked: {provider}"));
    }
    let taken: Vec<&str> = head.state.links.iter().map(|l| l.id.as_str()).collect();
    let id = match &args.id {
        Some(id) if taken.contains(&id.as_str()) => {
            return Err(ClientError::usage(format!(
                "{did} already has a link {id}; pick another --id"
            )))
        }
        Some(id) => id.clone(),
        None => crate::rp::default_entry(provider, &taken),
    };
    let mut state = head.state.clone();
    state.links.push(attestation.into_link(id.clone()));
    let cid = crate::rp::submit_state(&wallet, &client, &did, &head, state).await?;
    eprintln!(
        "linked {did} to your account at {provider} (link {id}, op {cid}); sign in with `didmesh login --via {provider}`"
    );
    emit(format_args!("linked: {provider}"))
}

/// The link `name` names: an entry id, else the only link at provider
/// `name`.
fn pick_link<'s>(links: &'s [FedLink], name: &str) -> Result<&'s FedLink, ClientError> {
    if let Some(l) = links.iter().find(|l| l.id == name) {
        return Ok(l);
    }
    let at: Vec<&FedLink> = links.iter().filter(|l| l.provider == name).collect();
    match at.as_slice() {
        [one] => Ok(one),
        [] => Err(ClientError::usage(format!(
            "no link {name:?} (links: {})",
            if links.is_empty() {
                "none".to_string()
            } else {
                links
                    .iter()
                    .map(|l| format!("{} at {}", l.id, l.provider))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
        several => Err(ClientError::usage(format!(
            "several links at {name}: name one by its id ({})",
            several
                .iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `unlink NAME`.
pub async fn unlink(path: &Path, args: &UnlinkArgs) -> Result<(), ClientError> {
    let (wallet, client, did, head) = open_did(path, &args.node).await?;
    let gone = pick_link(&head.state.links, &args.name)?.clone();
    let mut state = head.state.clone();
    state.links.retain(|l| l.id != gone.id);
    let cid = crate::rp::submit_state(&wallet, &client, &did, &head, state).await?;
    eprintln!(
        "unlinked {did} from its account at {} (link {}, op {cid}): every node that holds the op refuses that account's sign-ins",
        gone.provider, gone.id
    );
    emit(format_args!("unlinked: {}", gone.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn link(id: &str, provider: &str, sub: &str) -> FedLink {
        let key = SigningKey::from_bytes(&[7; 32]);
        let c = did_core::federation::commitment("net", "https://idp.example", sub);
        did_core::federation::sign_attestation(&key, "net", "did:mesh:x", provider, &c, 1)
            .into_link(id)
    }

    #[test]
    fn unlink_names_an_entry_or_the_only_link_at_a_provider() {
        let links = vec![
            link("acme", "acme", "a"),
            link("gh", "github", "b"),
            link("gh-2", "github", "c"),
        ];
        assert_eq!(pick_link(&links, "acme").unwrap().id, "acme");
        assert_eq!(pick_link(&links, "gh-2").unwrap().id, "gh-2");
        let e = pick_link(&links, "github").unwrap_err().to_string();
        assert!(e.contains("several") && e.contains("gh, gh-2"), "{e}");
        let e = pick_link(&links, "nope").unwrap_err().to_string();
        assert!(e.contains("acme at acme"), "{e}");
        assert!(pick_link(&[], "x")
            .unwrap_err()
            .to_string()
            .contains("none"));
    }

    #[test]
    fn done_reads_a_token_object_a_bare_jwt_or_a_link() {
        let t = done(json!({"status":"done","token":{"access_token":"a.b.c","token_type":"Bearer","expires_in":5}}))
            .unwrap();
        assert!(
            matches!(t, Outcome::Token(ref t, _) if t.access_token == "a.b.c" && t.expires_in == 5)
        );
        let payload = URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{}}}", crate::now() + 100));
        let t = done(json!({"status":"done","token": format!("h.{payload}.s")})).unwrap();
        assert!(matches!(t, Outcome::Token(ref t, _) if (95..=100).contains(&t.expires_in)));
        assert!(matches!(
            done(json!({"status":"done","link":{"provider":"x"}})).unwrap(),
            Outcome::Link(_)
        ));
        assert!(done(json!({"status":"done"})).is_err());
    }

    #[test]
    fn provider_names_cannot_escape_the_path() {
        assert!(check_provider("acme-1").is_ok());
        for bad in ["", "../v1", "a/b", "A", "a?b", &"x".repeat(33)] {
            assert!(check_provider(bad).is_err(), "{bad}");
        }
    }
}
