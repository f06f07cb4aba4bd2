//! Administration commands: `init-network`, `member-entry`, `member-add`,
//! `member-remove`.
//!
//! A member entry carries a node's Ed25519 key and its RS256/ES256
//! ID-token keys ([`crate::token_keys`]); `init-network` writes them for
//! every founder into the genesis, and a new member's reach the ledger
//! through `member-entry` → `member-add --member-entry`.

use crate::config::MemberChange;
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
    let genesis = Genesis::new(issuer, members, quorum, crate::now()).map_err(|e| e.to_string())?;
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

/// The member a change names: from `--member-entry` (JSON or a file), or
/// from `--member` (a key, or a data folder whose keys are read).
fn member_of(kind: OpKind, args: &MemberChange) -> Result<Member, String> {
    let mut member = match (&args.member_entry, &args.member) {
        (Some(spec), _) => parse_entry(spec)?,
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

/// A member entry given inline (`{…}`) or as a file.
fn parse_entry(spec: &str) -> Result<Member, String> {
    let text = if spec.trim_start().starts_with('{') {
        spec.to_string()
    } else {
        std::fs::read_to_string(spec).map_err(|e| format!("--member-entry {spec}: {e}"))?
    };
    let member: Member = serde_json::from_str(text.trim())
        .map_err(|e| format!("--member-entry: not a member entry: {e}"))?;
    if member.node_did != member.key.did_key() {
        return Err("--member-entry: node_did is not the did:key of key".into());
    }
    Ok(member)
}

/// Builds, signs and submits a membership op; returns the node's answer.
pub async fn member_change(kind: OpKind, args: &MemberChange) -> Result<serde_json::Value, String> {
    let base = args.node.trim_end_matches('/');
    let client = reqwest::Client::new();
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
        .ok_or("node answered no network_id")?;
    let prev = match network["membership_head"].as_str() {
        Some(s) => Some(did_core::Cid::parse(s).map_err(|e| e.to_string())?),
        None => None,
    };
    let member = member_of(kind, args)?;
    let mut signers = vec![];
    for dir in &args.sign_with {
        if !dir.join(identity::MEMBER_KEY_FILE).exists() {
            return Err(format!(
                "--sign-with {}: no member key there",
                dir.display()
            ));
        }
        signers.push(identity::load_or_create_member_key(dir).map_err(|e| e.to_string())?);
    }
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
    let resp = client
        .post(format!("{base}{OPS_PATH}"))
        .json(&op)
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
