//! `didmesh client …` and `didmesh approve`: the wallet's side of "Sign in
//! with didmesh".
//!
//! A relying party (an OpenID "client") is an entry of its owner's DID
//! state ([`did_core::client`]), so `register`, `update` and `delete` are
//! DID `update` ops signed by the wallet's main (rotation) key, built on
//! the DID's verified head exactly like `did add-key`. Its client id is
//! `<DID suffix>.<entry>`: a client id names its owner, so the wallet can
//! refuse to touch one that is not under its own DID before it signs
//! anything.
//!
//! A confidential client's secret is 32 random bytes (base64url) drawn
//! here, printed once on stdout and dropped (zeroized): only its hash goes
//! on the ledger, and nothing writes it to the wallet or a log.
//!
//! `approve` signs a sign-in a browser left waiting at a node (the page's
//! "use my didmesh wallet" code). A code is a bearer of intent: whoever
//! holds it can ask you to sign in to *their* browser session (device-code
//! phishing, RFC 8628 §5.4). So the wallet shows what it would sign —
//! the app's name as the ledger registers it, the exact redirect target and
//! the DID — and asks, unless `--yes`.

use crate::cli::{ApproveArgs, ClientCmd, IdTokenAlgArg, NodeArg};
use crate::commands::{emit, node_client, open_did, open_wallet, pretty};
use crate::error::ClientError;
use crate::node::NodeClient;
use crate::oidc::{self, Approval};
use did_core::client::{
    check_redirect_uri, client_id, parse_client_id, secret_hash, ClientReg, IdTokenAlg,
    MAX_REDIRECT_URIS,
};
use did_core::{DidState, Limits, Operation, Relationship};
use serde_json::{json, Value};
use std::io::Write as _;
use std::path::Path;
use zeroize::Zeroizing;

/// Longest entry id (did-core's rule, `[A-Za-z0-9_-]{1,32}`).
const MAX_ENTRY_LEN: usize = 32;

pub async fn run(wallet: &Path, cmd: ClientCmd) -> Result<(), ClientError> {
    match cmd {
        ClientCmd::Register {
            node,
            name,
            redirect_uris,
            confidential,
            id_token_alg,
            id,
        } => {
            register(
                wallet,
                &node,
                Registration {
                    name,
                    redirect_uris,
                    confidential,
                    id_token_alg: id_token_alg.into(),
                    entry: id,
                },
            )
            .await
        }
        ClientCmd::Show { node, client_id } => show(wallet, &node, client_id.as_deref()).await,
        ClientCmd::Update {
            client_id,
            node,
            name,
            redirect_uris,
            id_token_alg,
            rotate_secret,
        } => {
            update(
                wallet,
                &node,
                &client_id,
                Change {
                    name,
                    redirect_uris,
                    id_token_alg: id_token_alg.map(IdTokenAlgArg::into),
                    rotate_secret,
                },
            )
            .await
        }
        ClientCmd::Delete { client_id, node } => delete(wallet, &node, &client_id).await,
    }
}

struct Registration {
    name: String,
    redirect_uris: Vec<String>,
    confidential: bool,
    id_token_alg: IdTokenAlg,
    entry: Option<String>,
}

struct Change {
    name: Option<String>,
    redirect_uris: Vec<String>,
    id_token_alg: Option<IdTokenAlg>,
    rotate_secret: bool,
}

/// A fresh client secret: 32 bytes from the OS, base64url (256 bits, so
/// the ledger's fast hash of it cannot be searched; did-core `client`).
fn new_secret() -> Zeroizing<String> {
    Zeroizing::new(oidc::random_b64(32))
}

/// Refuses redirect URIs the ledger would refuse, with the reason, before
/// anything is signed (did-core `check_redirect_uri`: RFC 6749 §3.1.2,
/// RFC 8252 §7.3, OAuth 2.0 Security BCP §2.1).
fn check_redirect_uris(uris: &[String]) -> Result<(), ClientError> {
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(ClientError::usage(format!(
            "a client needs 1 to {MAX_REDIRECT_URIS} --redirect-uri"
        )));
    }
    for (i, uri) in uris.iter().enumerate() {
        check_redirect_uri(uri)
            .map_err(|why| ClientError::usage(format!("--redirect-uri {uri:?}: {why}")))?;
        if uris[..i].contains(uri) {
            return Err(ClientError::usage(format!(
                "--redirect-uri {uri:?} is given twice"
            )));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ClientError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ClientError::usage(
            "--name must be 1-64 bytes without control characters",
        ));
    }
    Ok(())
}

pub(crate) fn valid_entry(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ENTRY_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The default entry id: a slug of the name (`My App!` → `my-app`), made
/// unique with `-2`, `-3`, …; `c1`, `c2`, … when the name has no letters
/// or digits.
pub fn default_entry(name: &str, taken: &[&str]) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    // Room for a `-NN` suffix within the 32 characters.
    slug.truncate(MAX_ENTRY_LEN - 3);
    let slug = slug.trim_end_matches('-').to_string();
    let free = |c: &String| !taken.contains(&c.as_str());
    if slug.is_empty() {
        return (1..)
            .map(|n| format!("c{n}"))
            .find(free)
            .unwrap_or_default();
    }
    std::iter::once(slug.clone())
        .chain((2..).map(|n| format!("{slug}-{n}")))
        .find(free)
        .unwrap_or_default()
}

/// The wallet's DID and entry of a client id, or a clear refusal when the
/// client is not under that DID.
fn own_entry<'c>(client_id: &'c str, did: &str) -> Result<&'c str, ClientError> {
    let (owner, entry) = parse_client_id(client_id).ok_or_else(|| {
        ClientError::usage(format!(
            "{client_id:?} is not a didmesh client id (<DID suffix>.<entry>)"
        ))
    })?;
    if owner != did {
        return Err(ClientError::usage(format!(
            "client {client_id} belongs to {owner}, not to this wallet's DID {did}: only its owner can change it"
        )));
    }
    Ok(entry)
}

/// Signs an update of `did` to `state` on `head`, checks it locally as a
/// node would, and submits it.
pub(crate) async fn submit_state(
    wallet: &crate::wallet::Wallet,
    client: &NodeClient,
    did: &str,
    head: &crate::node::Head,
    state: DidState,
) -> Result<String, ClientError> {
    let op = Operation::update(
        did,
        head.cid,
        state,
        crate::now().max(head.created_at),
        wallet.main_key(),
    )?;
    // The node's own form and limit checks, before anything leaves.
    op.check_self(&Limits::default())?;
    Ok(client.submit(&op).await?.cid)
}

/// The JSON `client show` prints for one client.
fn client_json(did: &str, c: &ClientReg) -> Value {
    let mut v = json!({
        "client_id": client_id(did, &c.id),
        "owner": did,
        "entry": c.id,
        "name": c.name,
        "redirect_uris": c.redirect_uris,
        "type": if c.confidential() { "confidential" } else { "public" },
        "token_endpoint_auth_method": if c.confidential() { "client_secret_basic" } else { "none" },
        "id_token_alg": c.id_token_alg.as_str(),
    });
    if let Some(h) = &c.secret_hash {
        v["secret_hash"] = json!(h);
    }
    v
}

async fn register(path: &Path, node: &NodeArg, reg: Registration) -> Result<(), ClientError> {
    check_name(&reg.name)?;
    check_redirect_uris(&reg.redirect_uris)?;
    if let Some(e) = &reg.entry {
        if !valid_entry(e) {
            return Err(ClientError::usage(format!(
                "--id {e:?} must be 1-32 characters of [A-Za-z0-9_-]"
            )));
        }
    }
    let (wallet, client, did, head) = open_did(path, node).await?;
    let taken: Vec<&str> = head.state.clients.iter().map(|c| c.id.as_str()).collect();
    let entry = match reg.entry {
        Some(e) if taken.contains(&e.as_str()) => {
            return Err(ClientError::usage(format!(
                "{did} already has a client {e}; pick another --id, or `didmesh client update`"
            )))
        }
        Some(e) => e,
        None => default_entry(&reg.name, &taken),
    };
    let max = Limits::default().max_clients;
    if head.state.clients.len() >= max {
        return Err(ClientError::usage(format!(
            "{did} already has {max} clients, the most a DID may have; delete one first"
        )));
    }
    let id = client_id(&did, &entry)
        .ok_or_else(|| ClientError::usage(format!("{did} is not a did:mesh")))?;
    let secret = reg.confidential.then(new_secret);
    let mut state = head.state.clone();
    state.clients.push(ClientReg {
        id: entry,
        name: reg.name.clone(),
        redirect_uris: reg.redirect_uris,
        secret_hash: secret.as_ref().map(|s| secret_hash(s)),
        id_token_alg: reg.id_token_alg,
    });
    let cid = submit_state(&wallet, &client, &did, &head, state).await?;
    eprintln!(
        "registered {} client {:?} ({}) under {did} (op {cid})",
        if secret.is_some() {
            "confidential"
        } else {
            "public"
        },
        reg.name,
        reg.id_token_alg.as_str()
    );
    print_ids(&id, secret.as_ref().map(|s| s.as_str()))
}

/// `client_id: …` and, when there is one, `client_secret: …`, each on its
/// own stdout line (scripts read them).
fn print_ids(id: &str, secret: Option<&str>) -> Result<(), ClientError> {
    match secret {
        Some(s) => {
            emit(format_args!("client_id: {id}\nclient_secret: {s}"))?;
            eprintln!(
                "the secret is shown only this once; the ledger keeps only its hash (`didmesh client update {id} --rotate-secret` makes a new one)"
            );
            Ok(())
        }
        None => emit(format_args!("client_id: {id}")),
    }
}

async fn show(path: &Path, node: &NodeArg, id: Option<&str>) -> Result<(), ClientError> {
    let public = match crate::wallet::Wallet::read_public(path) {
        Ok(p) => Some(p),
        Err(crate::wallet::WalletError::NotFound(_)) if id.is_some() => None,
        Err(e) => return Err(e.into()),
    };
    let client = node_client(node, public.as_ref())?;
    match id {
        Some(id) => {
            // Anyone's client: the owner DID is in the id.
            let (owner, entry) = parse_client_id(id).ok_or_else(|| {
                ClientError::usage(format!(
                    "{id:?} is not a didmesh client id (<DID suffix>.<entry>)"
                ))
            })?;
            let head = client.head(&owner).await?;
            let c = head.state.client(entry).ok_or_else(|| {
                ClientError::usage(format!("{owner} has no client {entry} (deleted?)"))
            })?;
            emit(pretty(&client_json(&owner, c)))
        }
        None => {
            let did = public
                .as_ref()
                .and_then(|p| p.did.as_ref())
                .map(|d| d.did.clone())
                .ok_or_else(|| {
                    ClientError::usage("the wallet has no DID; name a client id to show")
                })?;
            let head = client.head(&did).await?;
            let all: Vec<Value> = head
                .state
                .clients
                .iter()
                .map(|c| client_json(&did, c))
                .collect();
            if all.is_empty() {
                eprintln!("{did} has no clients: `didmesh client register`");
            }
            emit(pretty(&Value::Array(all)))
        }
    }
}

async fn update(path: &Path, node: &NodeArg, id: &str, change: Change) -> Result<(), ClientError> {
    if let Some(n) = &change.name {
        check_name(n)?;
    }
    if !change.redirect_uris.is_empty() {
        check_redirect_uris(&change.redirect_uris)?;
    }
    if change.name.is_none()
        && change.redirect_uris.is_empty()
        && change.id_token_alg.is_none()
        && !change.rotate_secret
    {
        return Err(ClientError::usage(
            "nothing to change: give --name, --redirect-uri, --id-token-alg or --rotate-secret",
        ));
    }
    let wallet_did = own_did(path)?;
    let entry = own_entry(id, &wallet_did)?.to_string();
    let (wallet, client, did, head) = open_did(path, node).await?;
    let mut state = head.state.clone();
    let c = state
        .clients
        .iter_mut()
        .find(|c| c.id == entry)
        .ok_or_else(|| ClientError::usage(format!("{did} has no client {entry}")))?;
    if let Some(n) = change.name {
        c.name = n;
    }
    if !change.redirect_uris.is_empty() {
        c.redirect_uris = change.redirect_uris;
    }
    if let Some(a) = change.id_token_alg {
        c.id_token_alg = a;
    }
    let secret = change.rotate_secret.then(new_secret);
    if let Some(s) = &secret {
        c.secret_hash = Some(secret_hash(s));
    }
    let cid = submit_state(&wallet, &client, &did, &head, state).await?;
    eprintln!("updated client {id} (op {cid})");
    print_ids(id, secret.as_ref().map(|s| s.as_str()))
}

async fn delete(path: &Path, node: &NodeArg, id: &str) -> Result<(), ClientError> {
    let wallet_did = own_did(path)?;
    let entry = own_entry(id, &wallet_did)?.to_string();
    let (wallet, client, did, head) = open_did(path, node).await?;
    let mut state = head.state.clone();
    let before = state.clients.len();
    state.clients.retain(|c| c.id != entry);
    if state.clients.len() == before {
        return Err(ClientError::usage(format!("{did} has no client {entry}")));
    }
    let cid = submit_state(&wallet, &client, &did, &head, state).await?;
    eprintln!("deleted client {id} (op {cid}): its sign-ins and codes stop working");
    Ok(())
}

/// The wallet's live DID, read without the passphrase, so a foreign client
/// id is refused before anything is unlocked.
fn own_did(path: &Path) -> Result<String, ClientError> {
    crate::wallet::Wallet::read_public(path)?
        .did
        .filter(|d| !d.deactivated)
        .map(|d| d.did)
        .ok_or_else(|| ClientError::usage("the wallet has no live DID: `didmesh did create`"))
}

/// `didmesh approve` (module doc).
pub async fn approve(path: &Path, args: &ApproveArgs) -> Result<(), ClientError> {
    let code = oidc::normalize_code(&args.code).ok_or_else(|| {
        ClientError::usage(format!(
            "{:?} is not a sign-in code (8 letters and digits, shown as XXXX-XXXX)",
            args.code
        ))
    })?;
    let public = crate::wallet::Wallet::read_public(path)?;
    let client = node_client(&args.node, Some(&public))?;
    let approval_path = format!("{}/{code}", oidc::APPROVALS_PATH);
    let approval: Approval = client.get_json(&approval_path).await?;
    match approval.kind.as_str() {
        oidc::APPROVAL_LOGIN => {}
        // A second factor for someone's `didmesh login` (crate::mfa).
        oidc::APPROVAL_COSIGN => {
            return crate::mfa::approve_cosign(path, args, &client, &approval_path, &approval).await
        }
        other => {
            return Err(ClientError::protocol(format!(
                "approval kind {:?} is unknown to this didmesh; nothing was signed",
                other.chars().take(32).collect::<String>()
            )))
        }
    }
    let did = own_did(path)?;
    let discovery: Value = client.get_json(oidc::DISCOVERY_PATH).await?;
    let network = discovery["didmesh_network_id"]
        .as_str()
        .ok_or_else(|| ClientError::protocol("discovery names no didmesh_network_id"))?;
    oidc::check_approval(&approval, &did, client.authority(), network, crate::now())
        .map_err(|e| ClientError::usage(e.to_string()))?;
    check_against_ledger(&client, &approval).await?;
    // The name is shown as the ledger has it (no control characters there);
    // `{:?}` would hide nothing more and make it harder to read.
    eprintln!(
        "approving sign-in to {} ({}) -> {} as {did}",
        approval.client_name, approval.client_id, approval.redirect_uri
    );
    if !args.yes {
        eprintln!(
            "only approve a sign-in you started yourself in your own browser; a code someone sent you signs THEM in as you"
        );
        if !confirm("approve? [y/N] ")? {
            return Err(ClientError::usage("not approved; nothing was signed"));
        }
    }
    // Unlock only now: a refused code never asks for the passphrase.
    let wallet = open_wallet(path)?;
    let head = client.head(&did).await?;
    let key = head
        .state
        .keys_for(Relationship::Authentication)
        .find_map(|vm| wallet.usable_key(&vm.public_key_multibase))
        .ok_or_else(|| {
            ClientError::usage(format!(
                "none of {did}'s authentication keys is in this wallet"
            ))
        })?;
    let signature = did_core::keys::sign_b64(key, approval.message.as_bytes());
    let answer: Value = client
        .post_json(&approval_path, &json!({ "signature": signature }))
        .await?;
    if answer["approved"] != json!(true) {
        return Err(ClientError::protocol(format!(
            "the node did not confirm the approval: {answer}"
        )));
    }
    eprintln!(
        "approved: the browser continues to {}",
        approval.redirect_uri
    );
    Ok(())
}

/// The app name and redirect target shown must be the ledger's, not only
/// what the node says: the client must be registered under its owner's DID
/// with that name and that exact redirect URI.
async fn check_against_ledger(client: &NodeClient, a: &Approval) -> Result<(), ClientError> {
    let refuse = |why: String| ClientError::usage(format!("refusing to sign: {why}"));
    let (owner, entry) = parse_client_id(&a.client_id)
        .ok_or_else(|| refuse(format!("{:?} is not a client id", a.client_id)))?;
    let head = client.head(&owner).await?;
    let reg = head
        .state
        .client(entry)
        .ok_or_else(|| refuse(format!("client {} is not registered", a.client_id)))?;
    if reg.name != a.client_name {
        return Err(refuse(format!(
            "the node calls client {} {:?} but the ledger registers it as {:?}",
            a.client_id, a.client_name, reg.name
        )));
    }
    if !reg.redirect_uris.contains(&a.redirect_uri) {
        return Err(refuse(format!(
            "{} is not a registered redirect URI of client {}",
            a.redirect_uri, a.client_id
        )));
    }
    Ok(())
}

/// Asks on stderr, reads one line of stdin: only `y`/`yes` is consent; an
/// empty line, anything else or end of input is a no.
pub(crate) fn confirm(prompt: &str) -> Result<bool, ClientError> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| ClientError::usage(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_from_names() {
        assert_eq!(default_entry("My App!", &[]), "my-app");
        assert_eq!(default_entry("My App", &["my-app"]), "my-app-2");
        assert_eq!(default_entry("My App", &["my-app", "my-app-2"]), "my-app-3");
        assert_eq!(default_entry("  --  ", &[]), "c1");
        assert_eq!(default_entry("日本", &["c1"]), "c2");
        let long = default_entry(&"x".repeat(80), &[]);
        assert!(valid_entry(&long) && long.len() <= 29, "{long}");
        for name in ["a b", "Flask sign-in", "x__y"] {
            assert!(valid_entry(&default_entry(name, &[])), "{name}");
        }
    }

    #[test]
    fn foreign_client_ids_are_refused() {
        let did = "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let other = "did:mesh:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let mine = client_id(did, "app").unwrap();
        assert_eq!(own_entry(&mine, did).unwrap(), "app");
        let theirs = client_id(other, "app").unwrap();
        let e = own_entry(&theirs, did).unwrap_err().to_string();
        assert!(e.contains("belongs to") && e.contains(other), "{e}");
        assert!(own_entry("nonsense", did).is_err());
    }

    #[test]
    fn redirect_uris_are_checked_before_signing() {
        assert!(check_redirect_uris(&["https://app.example/cb".into()]).is_ok());
        let e = check_redirect_uris(&["http://app.example/cb".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http is allowed only"), "{e}");
        assert!(check_redirect_uris(&[]).is_err());
        assert!(
            check_redirect_uris(&["https://a.example/".into(), "https://a.example/".into()])
                .is_err()
        );
    }
}
