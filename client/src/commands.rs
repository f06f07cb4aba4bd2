//! What each `didmesh` command does. Output contract: the one value a
//! script wants (a DID, a token, a body, a JSON document) goes to stdout;
//! everything meant for a human goes to stderr.

use crate::bench;
use crate::cli::{BenchCmd, Cli, Command, DidCmd, GetArgs, LoginArgs, NodeArg, WalletCmd};
use crate::error::ClientError;
use crate::node::{Head, NodeClient, Token};
use crate::wallet::{
    self, parse_seed_hex, DidRecord, KdfCost, KeyStatus, PublicInfo, Wallet, WalletError,
};
use did_core::{DidState, Operation, PublicKey, Relationship, VerificationMethod};
use ed25519_dalek::SigningKey;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// Shortest passphrase `wallet init` accepts.
const MIN_PASSPHRASE_CHARS: usize = 8;

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> Result<(), ClientError> {
    match cli.command {
        // The load generator uses fresh in-memory keys, never the wallet.
        Command::Bench(cmd) => run_bench(cmd),
        command => {
            let wallet = wallet_path(cli.wallet)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ClientError::Transport(format!("cannot start the runtime: {e}")))?;
            rt.block_on(run_command(&wallet, command))
        }
    }
}

async fn run_command(wallet: &Path, command: Command) -> Result<(), ClientError> {
    match command {
        Command::Wallet(WalletCmd::Init {
            seed_hex,
            recovery_words,
            force,
        }) => wallet_init(
            wallet,
            seed_hex.as_deref(),
            recovery_words.map(Zeroizing::new),
            force,
        ),
        Command::Wallet(WalletCmd::Show { json }) => wallet_show(wallet, json),
        Command::Did(DidCmd::Create {
            node,
            force,
            recovery_key,
        }) => did_create(wallet, &node, force, recovery_key.as_deref()).await,
        Command::Did(DidCmd::Recover { node, did, new_key }) => {
            did_recover(wallet, &node, &did, &new_key).await
        }
        Command::Did(DidCmd::Show { node, did }) => did_show(wallet, &node, did.as_deref()).await,
        Command::Did(DidCmd::AddKey {
            node,
            name,
            relationship,
            public_key: Some(public_key),
            device,
        }) => {
            let rels: Vec<Relationship> = relationship.into_iter().map(Into::into).collect();
            crate::mfa::add_foreign_key(wallet, &node, &public_key, name, rels, device).await
        }
        Command::Did(DidCmd::AddKey {
            node,
            name,
            relationship,
            public_key: None,
            device,
        }) => {
            let rels: Vec<Relationship> = relationship.into_iter().map(Into::into).collect();
            did_add_key(wallet, &node, name, rels, device).await
        }
        Command::Did(DidCmd::Policy {
            node,
            factors,
            factor,
        }) => crate::mfa::set_policy(wallet, &node, factors, factor).await,
        Command::Mfa(cmd) => crate::mfa::run(wallet, cmd).await,
        Command::Did(DidCmd::Rotate { node }) => did_rotate(wallet, &node).await,
        Command::Did(DidCmd::Deactivate { node, yes }) => did_deactivate(wallet, &node, yes).await,
        Command::Login(args) => {
            let token = login(wallet, &args, crate::mfa::Announce::Stdout).await?;
            emit(&token.access_token)?;
            Ok(())
        }
        Command::Get(args) => get(wallet, &args).await,
        Command::Client(cmd) => crate::rp::run(wallet, cmd).await,
        Command::Approve(args) => crate::rp::approve(wallet, &args).await,
        Command::Link(args) => crate::federation::link(wallet, &args).await,
        Command::Unlink(args) => crate::federation::unlink(wallet, &args).await,
        Command::SignOut(args) => sign_out(wallet, &args).await,
        Command::Bench(_) => Err(ClientError::usage("bench runs on its own runtime")),
    }
}

/// `--wallet`, or `~/.didmesh/wallet.json`.
fn wallet_path(arg: Option<PathBuf>) -> Result<PathBuf, ClientError> {
    if let Some(p) = arg {
        return Ok(p);
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => {
            Ok(PathBuf::from(home).join(".didmesh").join("wallet.json"))
        }
        _ => Err(ClientError::usage(
            "HOME is not set: pass --wallet FILE or set DIDMESH_WALLET",
        )),
    }
}

/// The passphrase from `DIDMESH_PASSPHRASE` or the terminal. Never echoed,
/// never logged; zeroized when dropped.
fn passphrase(new: bool) -> Result<Zeroizing<String>, ClientError> {
    let pass = match std::env::var("DIDMESH_PASSPHRASE") {
        Ok(p) => Zeroizing::new(p),
        Err(_) => {
            let prompt = |text: &str| {
                rpassword::prompt_password(text)
                    .map(Zeroizing::new)
                    .map_err(|e| {
                        ClientError::usage(format!(
                            "cannot read the passphrase ({e}); set DIDMESH_PASSPHRASE"
                        ))
                    })
            };
            let first = prompt(if new {
                "New wallet passphrase: "
            } else {
                "Wallet passphrase: "
            })?;
            if new && *prompt("Repeat the passphrase: ")? != *first {
                return Err(ClientError::usage("the passphrases differ"));
            }
            first
        }
    };
    if new && pass.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(ClientError::usage(format!(
            "the passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(pass)
}

/// Printed on stderr whenever `DIDMESH_KDF_FAST=1` picks the test cost.
pub const KDF_FAST_WARNING: &str = "warning: DIDMESH_KDF_FAST=1: this wallet gets a test-only key derivation cost (argon2id 256 KiB, 1 pass); anyone who copies the file can try passphrases cheaply. It is marked weak; never keep real keys in it";

/// argon2id cost for new wallets; `DIDMESH_KDF_FAST=1` is for tests only,
/// and says so on stderr (the wallet records it as `weak`).
fn kdf_cost() -> KdfCost {
    match std::env::var("DIDMESH_KDF_FAST") {
        Ok(v) if v == "1" => {
            eprintln!("{KDF_FAST_WARNING}");
            KdfCost::fast()
        }
        _ => KdfCost::default(),
    }
}

pub(crate) fn open_wallet(path: &Path) -> Result<Wallet, ClientError> {
    // Fail on a missing or malformed file (and on out-of-bounds KDF costs)
    // before asking for a passphrase.
    wallet::read_file(path)?;
    let pass = passphrase(false)?;
    let wallet = Wallet::open(path, pass.as_bytes())?;
    if wallet.read_version() < wallet::WALLET_VERSION {
        // Migration on first unlock: version 1 did not authenticate the
        // public section, so the user is asked to look at it once.
        wallet.save()?;
        eprintln!(
            "wallet {} upgraded from format v{} to v{}: its DID and node are now sealed with your passphrase; version {} did not protect them, so check `didmesh wallet show` lists the DID and node you expect",
            path.display(),
            wallet.read_version(),
            wallet::WALLET_VERSION,
            wallet.read_version()
        );
    }
    Ok(wallet)
}

/// The node: `--node`/`DIDMESH_NODE`, else the wallet's DID's node, else
/// the node the wallet used last.
pub(crate) fn node_client(
    arg: &NodeArg,
    public: Option<&PublicInfo>,
) -> Result<NodeClient, ClientError> {
    let url = arg
        .node
        .clone()
        .or_else(|| public.and_then(|p| p.node.clone()))
        .or_else(|| public.and_then(|p| p.did.as_ref().map(|d| d.node.clone())))
        .ok_or_else(|| ClientError::usage("no node given: pass --node URL or set DIDMESH_NODE"))?;
    NodeClient::new(&url)
}

fn wallet_init(
    path: &Path,
    seed_hex: Option<&str>,
    recovery_words: Option<Zeroizing<String>>,
    force: bool,
) -> Result<(), ClientError> {
    let mut seed = match seed_hex {
        Some(s) => Some(parse_seed_hex(s).ok_or_else(|| {
            ClientError::usage("--seed-hex needs exactly 64 hex digits (32 bytes)")
        })?),
        None => None,
    };
    if path.exists() && !force {
        return Err(WalletError::Exists(path.to_path_buf()).into());
    }
    // After the existence check: nobody types 32 words to learn the file exists.
    let from_words = recovery_words.is_some();
    if let Some(words) = recovery_words {
        seed = Some(seed_from_recovery_words(words)?);
    }
    let pass = passphrase(true)?;
    let wallet = Wallet::create(path, pass.as_bytes(), seed, kdf_cost(), force, crate::now())?;
    eprintln!("wallet written to {} (main key key-1)", path.display());
    if from_words {
        eprintln!(
            "recovery key {}: it must be rotation_keys[0] of your DID (`did recover` checks); another key means a wrong word",
            wallet.main_public()
        );
    }
    emit(wallet.main_public().did_key())
}

/// The seed of `--recovery-words` (`-`: read from stdin, prompted on a
/// terminal), decoded as the sign-in page encodes it ([`crate::words`]).
fn seed_from_recovery_words(words: Zeroizing<String>) -> Result<Zeroizing<[u8; 32]>, ClientError> {
    let words = if words.trim() == "-" {
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        if interactive {
            eprintln!(
                "Type the {} recovery words in order (reading stops at the last word or an empty line):",
                crate::words::SEED_WORDS
            );
        }
        crate::words::read_words(stdin.lock(), interactive).map_err(|e| {
            ClientError::usage(format!("cannot read the recovery words from stdin: {e}"))
        })?
    } else {
        words
    };
    crate::words::decode_seed(&words)
        .map_err(|e| ClientError::usage(format!("--recovery-words: {e}")))
}

fn wallet_show(path: &Path, json: bool) -> Result<(), ClientError> {
    let file = wallet::read_file(path)?;
    let (weak, version) = (file.weak(), file.version());
    let public = file.into_public();
    if json {
        let keys: Vec<_> = public
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                serde_json::json!({
                    "name": k.name,
                    "main": i == 0,
                    "status": k.status,
                    "public_key_multibase": k.public_key_multibase,
                    "did_key": k.public_key_multibase.did_key(),
                    "created_at": k.created_at,
                })
            })
            .collect();
        let out = serde_json::json!({
            "wallet": path,
            "did": public.did,
            "previous_dids": public.previous_dids,
            "node": public.node,
            "keys": keys,
            "weak": weak,
            "format_version": version,
        });
        return emit(pretty(&out));
    }
    let mut text = format!("wallet  {}\n", path.display());
    if weak {
        text.push_str(
            "weak    yes: test-only key derivation cost (DIDMESH_KDF_FAST); do not keep real keys in it\n",
        );
    }
    if version < wallet::WALLET_VERSION {
        text.push_str(&format!(
            "format  v{version}: DID and node not authenticated; any command that unlocks the wallet upgrades it\n"
        ));
    }
    match &public.did {
        Some(d) => text.push_str(&format!(
            "did     {}{} (registered on {})\n",
            d.did,
            if d.deactivated { " [deactivated]" } else { "" },
            d.node
        )),
        None => text
            .push_str("did     (none: `didmesh did create`; logins use the main key's did:key)\n"),
    }
    if let Some(n) = &public.node {
        text.push_str(&format!("node    {n}\n"));
    }
    text.push_str("keys");
    for (i, k) in public.keys.iter().enumerate() {
        let status = match (i, k.status) {
            (0, KeyStatus::Active) => "main",
            (_, KeyStatus::Active) => "active",
            (_, KeyStatus::Pending) => "pending",
            (_, KeyStatus::Retired) => "retired",
        };
        let mb = k.public_key_multibase.to_multibase();
        text.push_str(&format!(
            "\n  {:<10} {:<8} {mb}  did:key:{mb}",
            k.name, status
        ));
    }
    emit(text)
}

async fn did_create(
    path: &Path,
    node: &NodeArg,
    force: bool,
    recovery_key: Option<&str>,
) -> Result<(), ClientError> {
    let mut wallet = open_wallet(path)?;
    if let Some(existing) = &wallet.public().did {
        if !existing.deactivated && !force {
            return Err(ClientError::usage(format!(
                "this wallet already controls {}; deactivate it first, or pass --force to register another (the wallet then forgets the old one)",
                existing.did
            )));
        }
    }
    let mut state = DidState::single_key(wallet.main_public());
    match recovery_key {
        Some(text) => {
            let recovery = PublicKey::from_multibase(text)
                .map_err(|e| ClientError::usage(format!("--recovery-key: {e}")))?;
            if recovery == wallet.main_public() {
                return Err(ClientError::usage(
                    "--recovery-key must be another wallet's key, not this wallet's main key",
                ));
            }
            state.rotation_keys.insert(0, recovery);
        }
        None => eprintln!(
            "note: no --recovery-key: if this wallet is stolen before you rotate, the DID is lost (SECURITY.md)"
        ),
    }
    let client = node_client(node, Some(wallet.public()))?;
    let now = crate::now();
    let op = Operation::create(state, now, wallet.main_key())?;
    let did = did_core::op::did_from_genesis(&op.cid()?);
    let submitted = client.submit(&op).await?;
    if submitted.did != did {
        return Err(ClientError::protocol(format!(
            "the node named the DID {} but the op defines {did}",
            submitted.did
        )));
    }
    if let Some(old) = wallet.did_mut().take() {
        wallet.previous_dids_mut().push(old);
    }
    *wallet.did_mut() = Some(DidRecord {
        did: did.clone(),
        node: client.base().to_string(),
        created_at: now,
        deactivated: false,
    });
    wallet.set_node(client.base());
    wallet.save().map_err(|e| {
        ClientError::usage(format!(
            "{did} was registered but the wallet could not record it: {e}"
        ))
    })?;
    eprintln!(
        "registered {did} on {} (op {})",
        client.base(),
        submitted.cid
    );
    emit(did)
}

async fn did_show(path: &Path, node: &NodeArg, did: Option<&str>) -> Result<(), ClientError> {
    let public = match Wallet::read_public(path) {
        Ok(p) => Some(p),
        Err(WalletError::NotFound(_)) if did.is_some() => None,
        Err(e) => return Err(e.into()),
    };
    let did = match did {
        Some(d) => d.to_string(),
        None => public
            .as_ref()
            .and_then(|p| p.did.as_ref())
            .map(|d| d.did.clone())
            .ok_or_else(|| {
                ClientError::usage("the wallet has no DID; name one, or `didmesh did create`")
            })?,
    };
    let client = node_client(node, public.as_ref())?;
    let resolution = client.resolve(&did).await?;
    if resolution.status == 410 {
        eprintln!("note: {did} is deactivated");
    }
    emit(pretty(&resolution.body))
}

/// The wallet's live DID, the node, and the DID's verified head. Also
/// settles keys left `pending` by an earlier run whose outcome was unknown.
pub(crate) async fn open_did(
    path: &Path,
    node: &NodeArg,
) -> Result<(Wallet, NodeClient, String, Head), ClientError> {
    let mut wallet = open_wallet(path)?;
    let record = wallet
        .public()
        .did
        .clone()
        .ok_or_else(|| ClientError::usage("the wallet has no DID yet: `didmesh did create`"))?;
    if record.deactivated {
        return Err(ClientError::usage(format!("{} is deactivated", record.did)));
    }
    let client = node_client(node, Some(wallet.public()))?;
    let head = client.head(&record.did).await?;
    if settle_pending(&mut wallet, &head.state) {
        wallet.save()?;
    }
    if head
        .state
        .rotation_priority(&wallet.main_public())
        .is_none()
    {
        return Err(ClientError::usage(format!(
            "the wallet's main key is not a rotation key of {} any more (was it rotated with another wallet?)",
            record.did
        )));
    }
    Ok((wallet, client, record.did, head))
}

/// Pending keys the DID now lists become active (or the main key, if the
/// DID's first rotation key); returns whether anything changed.
fn settle_pending(wallet: &mut Wallet, state: &DidState) -> bool {
    let mut changed = false;
    let mut i = 0;
    while let Some((info, _)) = wallet.key_at(i) {
        if info.status == KeyStatus::Pending {
            let key = info.public_key_multibase;
            if state.rotation_keys.contains(&key) {
                wallet.promote(i);
                changed = true;
            } else if state
                .verification_methods
                .iter()
                .any(|vm| vm.public_key_multibase == key)
            {
                wallet.set_status(i, KeyStatus::Active);
                changed = true;
            }
        }
        i += 1;
    }
    changed
}

/// Submits `op`, which makes the pending key at `index` count. The key is
/// already on disk. If the node refuses, the key is dropped again; if the
/// outcome is unknown (transport failure) it stays pending, and the next
/// `did` command settles it.
async fn submit_with_pending_key(
    wallet: &mut Wallet,
    client: &NodeClient,
    op: &Operation,
    index: usize,
) -> Result<(), ClientError> {
    match client.submit(op).await {
        Ok(_) => Ok(()),
        Err(e @ ClientError::Node { .. }) => {
            wallet.remove_key(index);
            wallet.save()?;
            Err(e)
        }
        Err(e) => Err(ClientError::Transport(format!(
            "{e}; the outcome is unknown: the new key is kept in the wallet as pending, run `didmesh did show` to check"
        ))),
    }
}

async fn did_add_key(
    path: &Path,
    node: &NodeArg,
    name: Option<String>,
    mut rels: Vec<Relationship>,
    device: Option<String>,
) -> Result<(), ClientError> {
    let (mut wallet, client, did, head) = open_did(path, node).await?;
    rels.sort();
    rels.dedup();
    let taken = head
        .state
        .verification_methods
        .iter()
        .map(|vm| vm.id.as_str());
    let name = match name {
        Some(n) => {
            if wallet.public().keys.iter().any(|k| k.name == n) || taken.clone().any(|t| t == n) {
                return Err(ClientError::usage(format!(
                    "a key named {n} already exists"
                )));
            }
            n
        }
        None => wallet.next_key_name(taken),
    };
    let index = wallet.generate_key(name.clone(), KeyStatus::Pending, crate::now())?;
    let public = wallet
        .key_at(index)
        .map(|(i, _)| i.public_key_multibase)
        .ok_or_else(|| ClientError::usage("key vanished"))?;
    let mut state = head.state.clone();
    state.verification_methods.push(VerificationMethod {
        id: name.clone(),
        public_key_multibase: public,
        relationships: rels.clone(),
        device: device.clone(),
    });
    let op = Operation::update(
        &did,
        head.cid,
        state,
        crate::now().max(head.created_at),
        wallet.main_key(),
    )?;
    if let Err(e) = op.check_self(&did_core::Limits::default()) {
        // Refused here as a node would (e.g. a bad --device): drop the key.
        wallet.remove_key(index);
        return Err(e.into());
    }
    // Write-ahead: the key is on disk before the node may trust it.
    wallet.save()?;
    submit_with_pending_key(&mut wallet, &client, &op, index).await?;
    wallet.set_status(index, KeyStatus::Active);
    wallet.set_node(client.base());
    wallet.save()?;
    let rels: Vec<String> = rels
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    eprintln!("added {did}#{name} ({public}) for {}", rels.join(", "));
    emit(format!("{did}#{name}"))
}

async fn did_rotate(path: &Path, node: &NodeArg) -> Result<(), ClientError> {
    let (mut wallet, client, did, head) = open_did(path, node).await?;
    let old = wallet.main_public();
    let old_name = wallet.public().keys[0].name.clone();
    let taken = head
        .state
        .verification_methods
        .iter()
        .map(|vm| vm.id.as_str());
    let name = wallet.next_key_name(taken);
    let index = wallet.generate_key(name.clone(), KeyStatus::Pending, crate::now())?;
    let new = wallet
        .key_at(index)
        .map(|(i, _)| i.public_key_multibase)
        .ok_or_else(|| ClientError::usage("key vanished"))?;
    let op = Operation::update(
        &did,
        head.cid,
        rotated_state(&head.state, &old, new, &name),
        crate::now().max(head.created_at),
        wallet.main_key(),
    )?;
    wallet.save()?;
    submit_with_pending_key(&mut wallet, &client, &op, index).await?;
    wallet.promote(index);
    wallet.set_node(client.base());
    wallet.save()?;
    eprintln!(
        "rotated {did}: {name} is the main key now; {old_name} ({old}) is retired in the wallet"
    );
    emit(new.did_key())
}

/// The state after rotating from `old` to `new`: `new` is the only
/// rotation key and takes `old`'s place as the login key; `old` leaves the
/// document; other verification methods stay.
pub fn rotated_state(state: &DidState, old: &PublicKey, new: PublicKey, name: &str) -> DidState {
    let mut next = state.clone();
    // `new` takes `old`'s place: keys above it (a recovery key) keep their
    // priority, and `old` is no rotation key any more.
    match next.rotation_keys.iter().position(|k| k == old) {
        Some(i) => next.rotation_keys[i] = new,
        None => next.rotation_keys = vec![new],
    }
    next.rotation_keys.dedup();
    next.verification_methods
        .retain(|vm| vm.public_key_multibase != *old);
    next.verification_methods.insert(
        0,
        VerificationMethod {
            id: name.to_string(),
            public_key_multibase: new,
            relationships: vec![Relationship::Authentication, Relationship::Assertion],
            device: None,
        },
    );
    next
}

async fn did_recover(
    path: &Path,
    node: &NodeArg,
    did: &str,
    new_key: &str,
) -> Result<(), ClientError> {
    let wallet = open_wallet(path)?;
    let new = PublicKey::from_multibase(new_key)
        .map_err(|e| ClientError::usage(format!("--new-key: {e}")))?;
    let recovery = wallet.main_public();
    if new == recovery {
        return Err(ClientError::usage(
            "--new-key must differ from the recovery key (keep the recovery key offline)",
        ));
    }
    let client = node_client(node, Some(wallet.public()))?;
    let genesis = client.genesis(did).await?;
    if genesis.state.rotation_keys.first() != Some(&recovery) {
        return Err(ClientError::usage(format!(
            "this wallet's main key is not the priority-0 rotation key of {did}: only that key can recover it"
        )));
    }
    let mut state = DidState::single_key(new);
    state.rotation_keys = vec![recovery, new];
    state.services = genesis.state.services.clone();
    state.also_known_as = genesis.state.also_known_as.clone();
    let op = Operation::update(
        did,
        genesis.cid,
        state,
        crate::now().max(genesis.created_at),
        wallet.main_key(),
    )?;
    let submitted = client.submit(&op).await?;
    eprintln!(
        "recovered {did} on {} (op {}): log in with the wallet holding {new}, `didmesh login --did {did}`",
        client.base(),
        submitted.cid
    );
    emit(did)
}

async fn did_deactivate(path: &Path, node: &NodeArg, yes: bool) -> Result<(), ClientError> {
    let (mut wallet, client, did, head) = open_did(path, node).await?;
    if !yes && std::io::stdin().is_terminal() {
        eprint!("Deactivate {did}? It can never be used again. Type 'yes': ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|e| ClientError::usage(format!("cannot read the answer: {e}")))?;
        if answer.trim() != "yes" {
            return Err(ClientError::usage("not confirmed; nothing was sent"));
        }
    }
    let op = Operation::deactivate(
        &did,
        head.cid,
        crate::now().max(head.created_at),
        wallet.main_key(),
    )?;
    let submitted = client.submit(&op).await?;
    if let Some(record) = wallet.did_mut() {
        record.deactivated = true;
    }
    wallet.save()?;
    eprintln!("deactivated {did} (op {})", submitted.cid);
    Ok(())
}

/// How long a `--jti` entry stays by default: the longest life of a token
/// a node issues (a refresh token, 30 days).
pub const DEFAULT_JTI_LIFE: u64 = 30 * 24 * 3600;

/// The state after a sign-out at `now` (PROTOCOL.md, "Revocation"):
/// `everywhere` raises `revocations.before` to `now + 1` (every token
/// issued up to and including this second; never lowered), each `jti` is
/// listed once, and listed tokens that expired are dropped so the list
/// stays under its bound.
pub fn signed_out_state(
    state: &DidState,
    everywhere: bool,
    jti: &[String],
    exp: u64,
    now: u64,
) -> Result<DidState, ClientError> {
    let mut next = state.clone();
    next.revocations.jti.retain(|r| r.exp > now);
    if everywhere {
        next.revocations.before = next.revocations.before.max(now + 1);
    }
    for id in jti {
        if !next.revocations.jti.iter().any(|r| &r.jti == id) {
            next.revocations.jti.push(did_core::op::RevokedJti {
                jti: id.clone(),
                exp,
            });
        }
    }
    if next.revocations.jti.len() > did_core::op::MAX_REVOKED_JTI {
        return Err(ClientError::usage(format!(
            "at most {} live revoked token ids; use --everywhere",
            did_core::op::MAX_REVOKED_JTI
        )));
    }
    Ok(next)
}

/// `didmesh sign-out`: an update op carrying the new revocations.
async fn sign_out(path: &Path, args: &crate::cli::SignOutArgs) -> Result<(), ClientError> {
    if !args.everywhere && args.jti.is_empty() {
        return Err(ClientError::usage(
            "say what to revoke: --everywhere, or --jti ID",
        ));
    }
    let (wallet, client, did, head) = open_did(path, &args.node).await?;
    let now = crate::now().max(head.created_at);
    let exp = args.exp.unwrap_or(now + DEFAULT_JTI_LIFE);
    let next = signed_out_state(&head.state, args.everywhere, &args.jti, exp, now)?;
    let op = Operation::update(&did, head.cid, next.clone(), now, wallet.main_key())?;
    let submitted = client.submit(&op).await?;
    if args.everywhere {
        eprintln!(
            "signed out {did} everywhere: tokens issued before {} are revoked (op {})",
            next.revocations.before, submitted.cid
        );
    } else {
        eprintln!(
            "revoked {} token id(s) of {did} (op {})",
            args.jti.len(),
            submitted.cid
        );
    }
    emit(submitted.cid)
}

/// Which identity to log in as, and the key that signs.
fn login_identity<'w>(
    wallet: &'w Wallet,
    args: &LoginArgs,
    resolved: Option<&serde_json::Value>,
) -> Result<(String, &'w SigningKey), ClientError> {
    let main = || (wallet.main_public().did_key(), wallet.main_key());
    if args.did_key {
        return Ok(main());
    }
    let own = wallet.public().did.as_ref().map(|d| d.did.as_str());
    match args.did.as_deref() {
        None => Ok(match own {
            Some(did) => (did.to_string(), wallet.main_key()),
            None => main(),
        }),
        Some(did) if Some(did) == own => Ok((did.to_string(), wallet.main_key())),
        Some(did) if did.starts_with("did:key:") => {
            let key = PublicKey::from_did_key(did)
                .map_err(|e| ClientError::usage(format!("{did}: {e}")))?;
            let signing = wallet
                .usable_key(&key)
                .ok_or_else(|| ClientError::usage(format!("no active wallet key for {did}")))?;
            Ok((did.to_string(), signing))
        }
        Some(did) => {
            // Another did:mesh: sign with a wallet key it lists for authentication.
            let auth = resolved
                .and_then(|r| r["didDocument"]["authentication"].as_array())
                .ok_or_else(|| ClientError::usage(format!("{did} lists no authentication keys")))?;
            auth.iter()
                .filter_map(|vm| vm["publicKeyMultibase"].as_str())
                .filter_map(|mb| PublicKey::from_multibase(mb).ok())
                .find_map(|k| wallet.usable_key(&k))
                .map(|k| (did.to_string(), k))
                .ok_or_else(|| {
                    ClientError::usage(format!(
                        "none of {did}'s authentication keys is in this wallet"
                    ))
                })
        }
    }
}

/// Logs in as [`login_identity`] says (or through a provider with
/// `--via`); returns the token.
async fn login(
    path: &Path,
    args: &LoginArgs,
    announce: crate::mfa::Announce,
) -> Result<Token, ClientError> {
    if let Some(provider) = &args.via {
        return crate::federation::login(path, &args.node, provider).await;
    }
    let mut wallet = open_wallet(path)?;
    let client = node_client(&args.node, Some(wallet.public()))?;
    let own = wallet.public().did.as_ref().map(|d| d.did.clone());
    let resolved = match args.did.as_deref() {
        Some(did)
            if !did.starts_with("did:key:") && Some(did) != own.as_deref() && !args.did_key =>
        {
            Some(client.resolve(did).await?.body)
        }
        _ => None,
    };
    let (did, key) = login_identity(&wallet, args, resolved.as_ref())?;
    let options = crate::mfa::LoginOptions {
        audience: args.audience.as_deref(),
        prefer_sms: args.sms,
        announce,
    };
    let token = crate::mfa::login(&client, &wallet, &did, key, &options).await?;
    eprintln!(
        "logged in to {} as {did}{} (token expires in {} s)",
        client.base(),
        crate::mfa::amr_note(&token.access_token),
        token.expires_in
    );
    if wallet.public().node.as_deref() != Some(client.base()) {
        wallet.set_node(client.base());
        wallet.save()?;
    }
    Ok(token)
}

async fn get(path: &Path, args: &GetArgs) -> Result<(), ClientError> {
    // stdout is the body here: an `approve:` line goes to stderr.
    let token = login(path, &args.login, crate::mfa::Announce::Stderr).await?;
    // Redirects are not followed (as curl): the token goes to the URL the
    // user named and nowhere else.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    let resp = http
        .get(&args.url)
        .bearer_auth(&token.access_token)
        .send()
        .await
        .map_err(|e| ClientError::Transport(format!("GET {}: {e}", args.url)))?;
    let status = resp.status();
    eprintln!("{:?} {status}", resp.version());
    let body = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transport(format!("reading {}: {e}", args.url)))?;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(&body)
        .and_then(|_| {
            if body.ends_with(b"\n") || body.is_empty() {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|_| out.flush());
    ignore_closed_pipe(written)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(ClientError::Usage(format!(
            "GET {} answered HTTP {status}",
            args.url
        )))
    }
}

fn run_bench(cmd: BenchCmd) -> Result<(), ClientError> {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let seconds = |d: f64| {
        if d.is_finite() && d > 0.0 && d <= 86_400.0 {
            Ok(Duration::from_secs_f64(d))
        } else {
            Err(ClientError::usage(
                "--duration must be between 0 and 86400 seconds",
            ))
        }
    };
    let threads = match &cmd {
        BenchCmd::Login { threads, .. }
        | BenchCmd::Home { threads, .. }
        | BenchCmd::Oidc { threads, .. } => threads.unwrap_or(cpus).max(1),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| ClientError::Transport(format!("cannot start the runtime: {e}")))?;
    let report = match cmd {
        BenchCmd::Login {
            node,
            concurrency,
            duration,
            dids,
            ..
        } => {
            let opts = bench::LoginOptions {
                node,
                concurrency,
                duration: seconds(duration)?,
                dids: dids.unwrap_or(concurrency),
                threads,
            };
            rt.block_on(bench::login(opts))?
        }
        BenchCmd::Oidc {
            node,
            client_id,
            redirect_uri,
            client_secret,
            concurrency,
            duration,
            dids,
            ..
        } => {
            let opts = bench::OidcOptions {
                node,
                client_id,
                redirect_uri,
                client_secret: client_secret.map(Zeroizing::new),
                concurrency,
                duration: seconds(duration)?,
                dids: dids.unwrap_or(concurrency),
                threads,
            };
            rt.block_on(bench::oidc(opts))?
        }
        BenchCmd::Home {
            url,
            token,
            concurrency,
            duration,
            ..
        } => {
            let opts = bench::HomeOptions {
                url,
                token,
                concurrency,
                duration: seconds(duration)?,
                threads,
            };
            rt.block_on(bench::home(opts))?
        }
    };
    let json = serde_json::to_string(&report).map_err(|e| ClientError::protocol(e.to_string()))?;
    emit(format!("{}{json}", report.table()))
}

/// Writes `text` and a newline to stdout.
pub(crate) fn emit(text: impl std::fmt::Display) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    ignore_closed_pipe(writeln!(out, "{text}").and_then(|_| out.flush()))
}

/// A reader that went away (`didmesh … | head`) is not an error; a full
/// disk is.
fn ignore_closed_pipe(r: std::io::Result<()>) -> Result<(), ClientError> {
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ClientError::Output(e)),
        _ => Ok(()),
    }
}

pub(crate) fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use did_core::keys::public_of;

    fn key(b: u8) -> PublicKey {
        public_of(&SigningKey::from_bytes(&[b; 32]))
    }

    #[test]
    fn sign_out_raises_before_lists_each_jti_once_and_drops_expired_ones() {
        let mut state = DidState::single_key(key(1));
        state.revocations.before = 5_000;
        state.revocations.jti.push(did_core::op::RevokedJti {
            jti: "old".into(),
            exp: 900,
        });
        let next = signed_out_state(&state, true, &["a".into(), "a".into()], 2_000, 1_000).unwrap();
        // never lowered, even by a wallet whose clock is behind
        assert_eq!(next.revocations.before, 5_000);
        let ids: Vec<&str> = next
            .revocations
            .jti
            .iter()
            .map(|r| r.jti.as_str())
            .collect();
        assert_eq!(ids, ["a"]);
        let next = signed_out_state(&next, true, &[], 0, 6_000).unwrap();
        assert_eq!(next.revocations.before, 6_001);
        let many: Vec<String> = (0..65).map(|i| format!("j{i}")).collect();
        assert!(signed_out_state(&state, false, &many, 2_000, 1_000).is_err());
    }

    #[test]
    fn rotation_replaces_the_main_key_and_keeps_added_keys() {
        let mut state = DidState::single_key(key(1));
        state.verification_methods.push(VerificationMethod {
            id: "key-2".into(),
            public_key_multibase: key(2),
            relationships: vec![Relationship::Assertion],
            device: None,
        });
        let next = rotated_state(&state, &key(1), key(3), "key-3");
        assert_eq!(next.rotation_keys, vec![key(3)]);
        let ids: Vec<_> = next
            .verification_methods
            .iter()
            .map(|vm| vm.id.as_str())
            .collect();
        assert_eq!(ids, ["key-3", "key-2"]);
        assert_eq!(next.keys_for(Relationship::Authentication).count(), 1);
        assert!(next
            .verification_methods
            .iter()
            .all(|vm| vm.public_key_multibase != key(1)));
    }
}
