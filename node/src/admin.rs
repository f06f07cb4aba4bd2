//! Administration commands: `init-network`, `member-entry`, `member-add`,
//! `member-remove`, `member-rotate-keys`, `member-rotate`, `member-revoke`.
//!
//! A member entry carries a node's Ed25519 key and its RS256/ES256
//! ID-token keys ([`crate::token_keys`]); `init-network` writes them for
//! every founder into the genesis, and a new member's reach the ledger
//! through `member-entry` → `member-add --member-entry`.
//!
//! A key rotation is `member-rotate-keys` on the rotating node's folder
//! (new keys wait in `pending-keys/`; it prints the entry) →
//! `member-rotate --member-entry ENTRY --sign-with …` by a quorum; the node
//! switches once the op commits ([`crate::token_keys`]). `member-revoke
//! --did D` has a quorum revoke every session of D issued before now.

use crate::config::{MemberChange, MemberRevokeArgs};
use crate::identity::{self, Genesis, GenesisFile as _, Member};
use crate::token_keys::TokenKeys;
use did_core::proto::{ErrorBody, OpSubmitted, OPS_PATH};
use did_core::{OpKind, Operation, PublicKey};
use std::path::Path;

/// Writes `out/genesis.json` and `out/node1..N` data folders.
pub fn init_network(
    nodes: usize,
    out: &Path,
    issuer: &str,
    quorum: Option<usize>,
) -> Result<Genesis, String> {
    init_network_with_overlap(
        nodes,
        out,
        issuer,
        quorum,
        did_core::member::DEFAULT_KEY_OVERLAP_SECS,
    )
}

/// [`init_network`] with the network rule `key_overlap_secs` (how long a
/// rotated-away member key stays in the JWKS).
pub fn init_network_with_overlap(
    nodes: usize,
    out: &Path,
    issuer: &str,
    quorum: Option<usize>,
    key_overlap_secs: u64,
) -> Result<Genesis, String> {
    if nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    // A genesis may ask for more than a strict majority, never less
    // (did_core::member): otherwise two disjoint groups could each change
    // membership, and no equivocation would be left to show for it.
    let majority = nodes / 2 + 1;
    let quorum = quorum.unwrap_or(majority);
    if quorum < majority || quorum > nodes {
        return Err(format!(
            "--quorum must be between {majority} (a strict majority) and {nodes}"
        ));
    }
    let genesis_path = out.join(identity::GENESIS_FILE);
    if genesis_path.exists() {
        return Err(format!(
            "{} exists; refusing to overwrite a network",
            genesis_path.display()
        ));
    }
    let mut members = vec![];
    for i in 1..=nodes {
        let dir = out.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let keys = TokenKeys::load_or_create(&dir).map_err(|e| e.to_string())?;
        members.push(keys.member_entry(&format!("node{i}")));
    }
    let genesis = Genesis::with_overlap(issuer, members, quorum, crate::now(), key_overlap_secs)
        .map_err(|e| e.to_string())?;
    genesis.save(&genesis_path).map_err(|e| e.to_string())?;
    for i in 1..=nodes {
        genesis
            .save(&out.join(format!("node{i}")).join(identity::GENESIS_FILE))
            .map_err(|e| e.to_string())?;
    }
    Ok(genesis)
}

/// `member-entry`: the node's member entry as one line of JSON.
pub fn member_entry(dir: &Path, name: &str) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("--data-dir {}: no such folder", dir.display()));
    }
    if !dir.join(identity::MEMBER_KEY_FILE).exists() {
        eprintln!(
            "note: {} held no member key; created a new one (start the node with this folder)",
            dir.display()
        );
    }
    let keys = TokenKeys::load_or_create(dir).map_err(|e| e.to_string())?;
    serde_json::to_string(&keys.member_entry(name)).map_err(|e| e.to_string())
}

/// `member-rotate-keys`: makes the data folder's pending key set (or reuses
/// it) and returns the entry for `member-rotate --member-entry` as one
/// line of JSON.
pub fn member_rotate_keys(dir: &Path, name: &str) -> Result<String, String> {
    if !dir.join(identity::MEMBER_KEY_FILE).exists() {
        return Err(format!(
            "--data-dir {}: no member key there (rotate the keys of a node that has some)",
            dir.display()
        ));
    }
    let entry = crate::token_keys::prepare_rotation(dir, name).map_err(|e| e.to_string())?;
    serde_json::to_string(&entry).map_err(|e| e.to_string())
}

/// The member a change names: from `--member-entry` (JSON or a file), or
/// from `--member` (a key, or a data folder whose keys are read).
fn member_of(kind: OpKind, args: &MemberChange) -> Result<Member, String> {
    let mut member = match (&args.member_entry, &args.member) {
        (Some(spec), _) => parse_entry(kind, spec)?,
        (None, Some(spec)) if kind == OpKind::MemberRotate => {
            // The rotating node's folder: its pending keys.
            let path = Path::new(spec);
            if !path.join(crate::token_keys::PENDING_DIR).is_dir() {
                return Err(format!(
                    "--member: {spec} holds no pending keys; run member-rotate-keys there first"
                ));
            }
            crate::token_keys::prepare_rotation(path, "member").map_err(|e| e.to_string())?
        }
        (None, Some(spec)) if spec.starts_with('z') => Member::from_key(
            "member",
            PublicKey::from_multibase(spec).map_err(|e| format!("--member: {e}"))?,
        ),
        (None, Some(spec)) => {
            let path = Path::new(spec);
            if !path.join(identity::MEMBER_KEY_FILE).exists() {
                return Err(format!(
                    "--member: {spec} is neither a z6Mk… key nor a data folder with a member key"
                ));
            }
            if kind == OpKind::MemberAdd {
                // A new member's ID-token keys go on the ledger with it
                // (created here if the node never started, as its first
                // start would).
                TokenKeys::load_or_create(path)
                    .map_err(|e| e.to_string())?
                    .member_entry("member")
            } else {
                // A removal names the member by its Ed25519 key only.
                let key = identity::load_or_create_member_key(path).map_err(|e| e.to_string())?;
                Member::from_key("member", did_core::keys::public_of(&key))
            }
        }
        (None, None) => return Err("give --member or --member-entry".into()),
    };
    if let Some(name) = &args.name {
        member.name = name.clone();
    }
    Ok(member)
}

/// A member entry given inline (`{…}`) or as a file. A rotated entry keeps
/// the member's first did:key as `node_did`; any other names its own key.
fn parse_entry(kind: OpKind, spec: &str) -> Result<Member, String> {
    let text = if spec.trim_start().starts_with('{') {
        spec.to_string()
    } else {
        std::fs::read_to_string(spec).map_err(|e| format!("--member-entry {spec}: {e}"))?
    };
    let member: Member = serde_json::from_str(text.trim())
        .map_err(|e| format!("--member-entry: not a member entry: {e}"))?;
    if kind != OpKind::MemberRotate && member.node_did != member.key.did_key() {
        return Err("--member-entry: node_did is not the did:key of key".into());
    }
    Ok(member)
}

/// The node's `/v1/network` view, its network id and membership head: what
/// a membership op names and builds on.
async fn network_view(
    client: &reqwest::Client,
    base: &str,
) -> Result<(serde_json::Value, String, Option<did_core::Cid>), String> {
    let network: serde_json::Value = client
        .get(format!("{base}/v1/network"))
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{base}/v1/network: {e}"))?;
    let network_id = network["network_id"]
        .as_str()
        .ok_or("node answered no network_id")?
        .to_string();
    let prev = match network["membership_head"].as_str() {
        Some(s) => Some(did_core::Cid::parse(s).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((network, network_id, prev))
}

/// Builds, signs and submits a membership op; returns the node's answer.
pub async fn member_change(kind: OpKind, args: &MemberChange) -> Result<serde_json::Value, String> {
    let base = args.node.trim_end_matches('/');
    let client = reqwest::Client::new();
    let (network, network_id, prev) = network_view(&client, base).await?;
    let network_id = network_id.as_str();
    let mut member = member_of(kind, args)?;
    if kind == OpKind::MemberRotate && args.name.is_none() {
        // Keep the label the ledger has for this member.
        if let Some(name) = network["members"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m["node_did"].as_str() == Some(member.node_did.as_str()))
                .and_then(|m| m["name"].as_str())
        }) {
            member.name = name.to_string();
        }
    }
    let signers = signing_keys(&args.sign_with)?;
    let refs: Vec<&ed25519_dalek::SigningKey> = signers.iter().collect();
    let op = Operation::membership_forced(
        kind,
        network_id,
        prev,
        member,
        crate::now(),
        args.force && kind == OpKind::MemberRemove,
        &refs,
    )
    .map_err(|e| e.to_string())?;
    submit(&client, base, &op).await
}

/// The member keys of the `--sign-with` data folders.
fn signing_keys(dirs: &[std::path::PathBuf]) -> Result<Vec<ed25519_dalek::SigningKey>, String> {
    let mut signers = vec![];
    for dir in dirs {
        if !dir.join(identity::MEMBER_KEY_FILE).exists() {
            return Err(format!(
                "--sign-with {}: no member key there",
                dir.display()
            ));
        }
        signers.push(identity::load_or_create_member_key(dir).map_err(|e| e.to_string())?);
    }
    Ok(signers)
}

/// `member-revoke`: a quorum revokes every session of `--did` issued
/// before `--before` (default: now) with a `member-revoke` op built on the
/// membership head.
pub async fn member_revoke(args: &MemberRevokeArgs) -> Result<serde_json::Value, String> {
    did_core::op::parse_mesh_did(&args.did).map_err(|e| format!("--did: {e}"))?;
    let base = args.node.trim_end_matches('/');
    let client = reqwest::Client::new();
    let (_, network_id, prev) = network_view(&client, base).await?;
    let network_id = network_id.as_str();
    let now = crate::now();
    let before = args.before.unwrap_or(now);
    if before > now {
        return Err("--before may not be in the future".into());
    }
    let signers = signing_keys(&args.sign_with)?;
    let refs: Vec<&ed25519_dalek::SigningKey> = signers.iter().collect();
    let op = Operation::member_revoke(
        network_id,
        prev,
        did_core::member::MemberRevocation {
            did: args.did.clone(),
            before,
        },
        now,
        &refs,
    )
    .map_err(|e| e.to_string())?;
    submit(&client, base, &op).await
}

/// Posts `op` to the node; its answer, or the reason it was refused.
async fn submit(
    client: &reqwest::Client,
    base: &str,
    op: &Operation,
) -> Result<serde_json::Value, String> {
    let resp = client
        .post(format!("{base}{OPS_PATH}"))
        .json(op)
        .send()
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{base}{OPS_PATH}: reading the answer: {e}"))?;
    if status.is_success() {
        let submitted: OpSubmitted = serde_json::from_slice(&body)
            .map_err(|e| format!("{base}{OPS_PATH}: unexpected answer (HTTP {status}): {e}"))?;
        return serde_json::to_value(submitted).map_err(|e| e.to_string());
    }
    Err(match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) if !e.reason.is_empty() => {
            format!("{} ({}, HTTP {})", e.reason, e.error, status.as_u16())
        }
        Ok(e) => format!("refused ({}, HTTP {})", e.error, status.as_u16()),
        // Not a node's error body (a proxy's page, say): show its start.
        Err(_) => format!(
            "refused (HTTP {}): {}",
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        ),
    })
}
