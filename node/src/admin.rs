//! Administration commands: `init-network`, `member-add`, `member-remove`.

use crate::config::MemberChange;
use crate::identity::{self, Genesis, GenesisFile as _, Member};
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
        let key = identity::load_or_create_member_key(&dir).map_err(|e| e.to_string())?;
        members.push(Member::from_key(
            &format!("node{i}"),
            did_core::keys::public_of(&key),
        ));
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

fn member_key(spec: &str) -> Result<PublicKey, String> {
    if spec.starts_with('z') {
        return PublicKey::from_multibase(spec).map_err(|e| format!("--member: {e}"));
    }
    let path = Path::new(spec);
    if !path.join(identity::MEMBER_KEY_FILE).exists() {
        return Err(format!(
            "--member: {spec} is neither a z6Mk… key nor a data folder with a member key"
        ));
    }
    identity::load_or_create_member_key(path)
        .map(|k| did_core::keys::public_of(&k))
        .map_err(|e| e.to_string())
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
    let key = member_key(&args.member)?;
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
        Member::from_key(&args.name, key),
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
