//! Multi-factor logins on the wallet's side: the DID's login policy
//! (`did policy`), another wallet's key as a factor (`did add-key
//! --public-key`), committed phone numbers (`mfa add-phone`, `mfa show`),
//! a `didmesh login` that collects what the policy asks for, and `didmesh
//! approve` of a second factor.
//!
//! The wire protocol is the node's (PROTOCOL.md, "Login policy";
//! mfa-spec "Wire protocol"):
//!
//! ```text
//!  POST /v1/auth/challenge {did, audience?}  → {nonce, message, …, policy: {required, factors: [{id, kind}]}}
//!  POST /v1/auth/cosign    {did, nonce}      → {code, expires_at}          (a slot another wallet approves)
//!  GET  /v1/auth/cosign/{code}               → {status: waiting | signed {signatures, keys} | expired}
//!  POST /v1/auth/sms {did, nonce, phone, number, salt} → 202 {sent_to, expires_in}
//!  POST /v1/auth/token {did, nonce, signatures: […], sms?: {phone, code}}
//! ```
//!
//! Every factor signs or answers the *same* challenge, and the node counts
//! distinct factors its own copy of the DID's policy counts; the nonce is
//! used up only when a token is issued, so the wallet can gather factors
//! for as long as the challenge lives (2 minutes). The wallet checks the
//! challenge (domain, DID, nonce, audience: [`crate::login`]) before its
//! first signature; the second device checks it again before its own
//! ([`crate::oidc::check_cosign`]), so a phishing node cannot borrow either.
//!
//! A phone number never reaches the ledger: the DID holds
//! `did_core::policy::phone_commitment(salt, number)`, and the wallet keeps
//! number and salt encrypted (wallet format version 3). At login the wallet
//! sends both to the node, which recomputes the commitment before it sends
//! a code. The wallet checks the commitment itself first, so a number that
//! does not match is never sent. Numbers are shown masked (`+1******34`)
//! everywhere, never in full.

use crate::cli::{MfaCmd, NodeArg};
use crate::commands::{emit, open_did, pretty};
use crate::error::ClientError;
use crate::login::check_challenge;
use crate::node::{Head, NodeClient, Token};
use crate::oidc::{self, Approval};
use crate::wallet::{mask_number, PhoneSecret, Wallet, PHONE_SALT_LEN};
use did_core::policy::{is_e164, phone_commitment, Factor, FactorKind, LoginPolicy};
use did_core::proto::{
    ChallengeRequest, CHALLENGE_PATH, COSIGN_PATH, MORE_FACTORS_NEEDED, TOKEN_PATH, TOKEN_TYPE,
};
use did_core::{DidState, PublicKey, Relationship, VerificationMethod};
use ed25519_dalek::SigningKey;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// `POST`: send an SMS code for a challenge (the node's `sms::routes`).
pub const SMS_PATH: &str = "/v1/auth/sms";
/// How often a waiting login asks whether the second device signed.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Digits of an SMS code.
const SMS_CODE_LEN: usize = 6;

/// Where `approve: CODE` goes: stdout for `login` (a script reads it next
/// to the token), stderr for `get` (whose stdout is the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    Stdout,
    Stderr,
}

/// How `login` collects factors.
#[derive(Debug, Clone)]
pub struct LoginOptions<'a> {
    pub audience: Option<&'a str>,
    /// Prefer the SMS code to a second device when both would do.
    pub prefer_sms: bool,
    pub announce: Announce,
}

/// The challenge with the node's `policy` (absent from nodes before login
/// policies: then one key is all it takes).
#[derive(Debug, Clone, Deserialize)]
pub struct Challenge {
    pub nonce: String,
    pub message: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub audience: String,
    #[serde(default)]
    pub policy: Option<PolicyView>,
}

/// `policy` of a challenge: `required` distinct factors out of `factors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    pub required: u8,
    #[serde(default)]
    pub factors: Vec<Factor>,
}

#[derive(Serialize)]
struct TokenBody<'a> {
    did: &'a str,
    nonce: &'a str,
    signatures: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    sms: Option<SmsProof<'a>>,
}

#[derive(Serialize)]
struct SmsProof<'a> {
    phone: &'a str,
    code: &'a str,
}

#[derive(Deserialize)]
struct CosignSlot {
    code: String,
}

#[derive(Deserialize)]
struct CosignStatus {
    status: String,
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Serialize)]
struct SmsRequest<'a> {
    did: &'a str,
    nonce: &'a str,
    phone: &'a str,
    number: &'a str,
    salt: String,
}

pub async fn run(path: &Path, cmd: MfaCmd) -> Result<(), ClientError> {
    match cmd {
        MfaCmd::AddPhone { number, node, id } => {
            add_phone(path, &node, Zeroizing::new(number), id).await
        }
        MfaCmd::RemovePhone { id, node } => remove_phone(path, &node, &id).await,
        MfaCmd::Show { node, json } => show(path, &node, json).await,
    }
}

// ---------------------------------------------------------------- login

/// The whole login: challenge, the phishing checks, the wallet's
/// signature, and whatever else the challenge's policy asks for (module
/// doc). Returns the token.
pub async fn login(
    client: &NodeClient,
    wallet: &Wallet,
    did: &str,
    key: &SigningKey,
    opts: &LoginOptions<'_>,
) -> Result<Token, ClientError> {
    let started = Instant::now();
    let body = ChallengeRequest {
        did: did.to_string(),
        audience: opts.audience.map(str::to_string),
    };
    let ch: Challenge = client.post_json(CHALLENGE_PATH, &body).await?;
    check_challenge(
        &ch.message,
        client.authority(),
        did,
        &ch.nonce,
        opts.audience,
    )?;
    if let Some(a) = opts.audience {
        if ch.audience != a {
            return Err(ClientError::protocol(
                "the node answered for another audience",
            ));
        }
    }
    let needs_more = ch.policy.as_ref().is_some_and(|p| p.required > 1);
    if !needs_more {
        // One factor: the wallet's key, as before policies. Should the
        // policy count only other keys, the node says so and the nonce
        // is still good for the full collection below.
        let signature = did_core::keys::sign_b64(key, ch.message.as_bytes());
        match token(client, did, &ch.nonce, &[signature], None).await {
            Err(ClientError::Node { code, .. })
                if code == MORE_FACTORS_NEEDED && ch.policy.is_some() => {}
            other => return other,
        }
    }
    let policy = ch.policy.clone().unwrap_or(PolicyView {
        required: 1,
        factors: vec![],
    });
    if !did.starts_with("did:mesh:") {
        return Err(ClientError::protocol(format!(
            "the node asks {} factors of {did}, which has one key",
            policy.required
        )));
    }
    // The verified head maps the policy's entry ids to keys and phone
    // commitments.
    let head = client.head(did).await?;
    let plan = plan(&policy, &head.state, wallet, opts.prefer_sms, did)?;
    let lifetime = ch.expires_at.saturating_sub(ch.issued_at);
    let deadline = started + Duration::from_secs(lifetime);
    let mut signatures: Vec<String> = plan
        .keys
        .iter()
        .map(|k| did_core::keys::sign_b64(k, ch.message.as_bytes()))
        .collect();

    let cosign = async {
        if plan.cosign == 0 {
            return Ok(vec![]);
        }
        cosign_wait(client, did, &ch.nonce, &plan, opts.announce, deadline).await
    };
    let sms = async {
        match plan.phone {
            None => Ok(None),
            Some(phone) => sms_code(client, did, &ch.nonce, phone).await.map(Some),
        }
    };
    let (more, code) = tokio::try_join!(cosign, sms)?;
    for s in more {
        if !signatures.contains(&s) {
            signatures.push(s);
        }
    }
    let proof = match (&plan.phone, &code) {
        (Some(p), Some(c)) => Some(SmsProof {
            phone: &p.id,
            code: c.as_str(),
        }),
        _ => None,
    };
    token(client, did, &ch.nonce, &signatures, proof).await
}

/// `POST /v1/auth/token` with every proof gathered.
async fn token(
    client: &NodeClient,
    did: &str,
    nonce: &str,
    signatures: &[String],
    sms: Option<SmsProof<'_>>,
) -> Result<Token, ClientError> {
    let body = TokenBody {
        did,
        nonce,
        signatures,
        sms,
    };
    let token: Token = client.post_json(TOKEN_PATH, &body).await?;
    if !token.token_type.eq_ignore_ascii_case(TOKEN_TYPE) {
        return Err(ClientError::protocol(format!(
            "unexpected token type {:?}",
            token.token_type
        )));
    }
    Ok(token)
}

/// What a login will present besides the wallet's own keys.
struct Plan<'w> {
    /// Wallet keys the policy counts (each one factor).
    keys: Vec<&'w SigningKey>,
    /// Counted keys held elsewhere: `(id, device)`.
    others: Vec<(String, Option<String>)>,
    /// Distinct other keys to wait for.
    cosign: usize,
    /// The phone to send a code to.
    phone: Option<&'w PhoneSecret>,
}

/// Decides which factors to collect: the wallet's counted keys first,
/// then another device and/or an SMS code. Another device comes before
/// SMS unless `prefer_sms`: a key cannot be SIM-swapped (NIST SP 800-63B
/// §5.1.3.3 restricts SMS) and costs the node nothing.
fn plan<'w>(
    policy: &PolicyView,
    state: &DidState,
    wallet: &'w Wallet,
    prefer_sms: bool,
    did: &str,
) -> Result<Plan<'w>, ClientError> {
    let required = usize::from(policy.required);
    let mut keys = vec![];
    let mut mine = vec![];
    let mut others = vec![];
    let mut phone = None;
    for f in &policy.factors {
        match f.kind {
            FactorKind::Key => {
                let Some(vm) = auth_method(state, &f.id) else {
                    continue;
                };
                match wallet.usable_key(&vm.public_key_multibase) {
                    Some(k) if keys.len() < required => {
                        keys.push(k);
                        mine.push(f.id.clone());
                    }
                    Some(_) => {}
                    None => others.push((f.id.clone(), vm.device.clone())),
                }
            }
            FactorKind::Phone if phone.is_none() => {
                let (Some(secret), Some(committed)) = (wallet.phone(&f.id), state.phone(&f.id))
                else {
                    continue;
                };
                if phone_commitment(&secret.salt, &secret.number) == committed.commitment {
                    phone = Some(secret);
                } else {
                    eprintln!(
                        "note: the number this wallet keeps for {} ({}) does not match the DID's commitment; not used",
                        f.id,
                        mask_number(&secret.number)
                    );
                }
            }
            _ => {}
        }
    }
    let remaining = required.saturating_sub(keys.len());
    let use_sms = remaining > 0 && phone.is_some() && (prefer_sms || others.len() < remaining);
    let cosign = remaining - usize::from(use_sms);
    if cosign > others.len() {
        let listed: Vec<String> = policy
            .factors
            .iter()
            .map(|f| format!("{} ({})", f.id, kind_name(f.kind)))
            .collect();
        let mut can = mine.clone();
        if let Some(p) = phone {
            can.push(format!("{} by SMS", p.id));
        }
        can.extend(
            others
                .iter()
                .map(|(id, _)| format!("{id} from another wallet")),
        );
        return Err(ClientError::usage(format!(
            "the login policy of {did} needs {required} of: {}; this wallet can gather only {}: {}. Passkeys and linked accounts sign in on the browser page; `didmesh mfa add-phone` and `did add-key --public-key` add factors the CLI can use",
            listed.join(", "),
            can.len(),
            if can.is_empty() { "none".into() } else { can.join(", ") }
        )));
    }
    Ok(Plan {
        keys,
        others,
        cosign,
        phone: phone.filter(|_| use_sms),
    })
}

/// The authentication key with entry id `id`.
fn auth_method<'s>(state: &'s DidState, id: &str) -> Option<&'s VerificationMethod> {
    state
        .keys_for(Relationship::Authentication)
        .find(|vm| vm.id == id)
}

fn kind_name(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::Key => "key",
        FactorKind::Passkey => "passkey",
        FactorKind::Phone => "phone",
        FactorKind::Link => "linked account",
    }
}

/// Opens a second-device slot, announces `approve: CODE` and polls until
/// enough other keys signed; returns their signatures.
async fn cosign_wait(
    client: &NodeClient,
    did: &str,
    nonce: &str,
    plan: &Plan<'_>,
    announce: Announce,
    deadline: Instant,
) -> Result<Vec<String>, ClientError> {
    let slot: CosignSlot = client
        .post_json(COSIGN_PATH, &json!({"did": did, "nonce": nonce}))
        .await?;
    // Only Crockford characters go into the path and onto the terminal.
    let code = oidc::normalize_code(&slot.code).ok_or_else(|| {
        ClientError::protocol("the node's approval code is not XXXX-XXXX (Crockford base32)")
    })?;
    let line = format!("approve: {code}");
    match announce {
        Announce::Stdout => emit(&line)?,
        Announce::Stderr => eprintln!("{line}"),
    }
    let devices: Vec<String> = plan
        .others
        .iter()
        .map(|(id, device)| match device {
            Some(d) => format!("{id} ({d})"),
            None => id.clone(),
        })
        .collect();
    let wait = deadline.saturating_duration_since(Instant::now()).as_secs();
    eprintln!(
        "a second factor is needed: with the wallet holding {}, run `didmesh approve {code} --node {}` (waiting up to {wait} s{})",
        devices.join(" or "),
        client.base(),
        if plan.cosign > 1 {
            format!(" for {} approvals", plan.cosign)
        } else {
            String::new()
        },
    );
    let status_path = format!("{COSIGN_PATH}/{code}");
    loop {
        let status: CosignStatus = client.get_json(&status_path).await?;
        match status.status.as_str() {
            "waiting" => {}
            "signed" => {
                // A slot may gather approvals from several wallets; go on
                // once there are as many distinct keys as the plan needs.
                let mut keys = status.keys.clone();
                keys.sort();
                keys.dedup();
                let signed = if keys.is_empty() {
                    status.signatures.len()
                } else {
                    keys.len()
                };
                if signed >= plan.cosign {
                    return Ok(status.signatures);
                }
            }
            "expired" => return Err(ClientError::usage(
                "the second device did not approve in time (the approval expired); log in again",
            )),
            other => {
                return Err(ClientError::protocol(format!(
                    "unknown approval status {:?}",
                    other.chars().take(32).collect::<String>()
                )))
            }
        }
        if Instant::now() + POLL_EVERY >= deadline {
            return Err(ClientError::usage(
                "the second device did not approve before the login challenge expired; log in again",
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Asks the node to send a code to `phone`, then reads it from stdin.
async fn sms_code(
    client: &NodeClient,
    did: &str,
    nonce: &str,
    phone: &PhoneSecret,
) -> Result<Zeroizing<String>, ClientError> {
    let body = SmsRequest {
        did,
        nonce,
        phone: &phone.id,
        number: &phone.number,
        salt: base64_url(&phone.salt),
    };
    let _: Value = client.post_json(SMS_PATH, &body).await?;
    // Masked by the wallet itself: what a node echoes is not printed.
    eprintln!("sms code sent to {}", mask_number(&phone.number));
    read_sms_code().await
}

/// One line of stdin: the 6-digit code (spaces ignored). Read on a plain
/// thread, not the runtime's blocking pool, so an error elsewhere (the
/// second device timing out) ends the process without waiting for input.
async fn read_sms_code() -> Result<Zeroizing<String>, ClientError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let interactive = std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        if interactive {
            eprint!("SMS code: ");
            let _ = std::io::stderr().flush();
        }
        let mut line = Zeroizing::new(String::new());
        let read = std::io::stdin().lock().read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    let line = rx
        .await
        .map_err(|_| ClientError::usage("cannot read the SMS code from stdin"))?
        .map_err(|e| ClientError::usage(format!("cannot read the SMS code from stdin: {e}")))?;
    parse_sms_code(&line)
}

/// The code in a line as typed: 6 ASCII digits, spaces and dashes ignored.
pub fn parse_sms_code(line: &str) -> Result<Zeroizing<String>, ClientError> {
    if line.is_empty() {
        return Err(ClientError::usage(
            "no SMS code on standard input (expected one line with the 6 digits)",
        ));
    }
    let code: Zeroizing<String> = Zeroizing::new(
        line.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect(),
    );
    if code.len() != SMS_CODE_LEN || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClientError::usage(format!(
            "an SMS code is {SMS_CODE_LEN} digits; nothing was sent"
        )));
    }
    Ok(code)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// ` with swk, sms, mfa` from the token's `amr` (read, not verified: it is
/// only shown to the user), or nothing.
pub fn amr_note(jwt: &str) -> String {
    use base64::Engine as _;
    let amr = jwt
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| {
            c["amr"].as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|s| s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        });
    match amr {
        Some(a) if !a.is_empty() => format!(" with {a}"),
        _ => String::new(),
    }
}

// ------------------------------------------------------------- approve

/// `didmesh approve CODE` of a `cosign` approval: a second factor for a
/// login of a DID that lists one of this wallet's keys. Shows what it
/// signs, checks the message as `login` does (domain, network, DID, nonce,
/// audience), asks unless `--yes`, signs with that key and posts.
pub async fn approve_cosign(
    path: &Path,
    args: &crate::cli::ApproveArgs,
    client: &NodeClient,
    approval_path: &str,
    approval: &Approval,
) -> Result<(), ClientError> {
    let discovery: Value = client.get_json(oidc::DISCOVERY_PATH).await?;
    let network = discovery["didmesh_network_id"]
        .as_str()
        .ok_or_else(|| ClientError::protocol("discovery names no didmesh_network_id"))?;
    let challenge = oidc::check_cosign(approval, client.authority(), network, crate::now())
        .map_err(|e| ClientError::usage(e.to_string()))?;
    let did = &challenge.did;
    // The ledger, not the node's word: the DID must list a key this wallet
    // holds for authentication. Counted keys first.
    let head = client.head(did).await?;
    let public = Wallet::read_public(path)?;
    let (_, counted) = head.state.login_requirement();
    let mut candidates: Vec<&VerificationMethod> = head
        .state
        .keys_for(Relationship::Authentication)
        .filter(|vm| {
            public.keys.iter().any(|k| {
                k.public_key_multibase == vm.public_key_multibase
                    && k.status == crate::wallet::KeyStatus::Active
            })
        })
        .collect();
    candidates.sort_by_key(|vm| !counted.iter().any(|f| f.id == vm.id));
    let vm = candidates.first().ok_or_else(|| {
        ClientError::usage(format!(
            "refusing to sign: {did} lists none of this wallet's keys for authentication"
        ))
    })?;
    eprintln!(
        "second factor for a login of {did} at {} (audience {}), signed with {}{}",
        client.base(),
        challenge.audience,
        vm.id,
        vm.device
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    if !args.yes {
        eprintln!(
            "only approve a login you started yourself, just now: a code someone sent you lets THEM log in as {did}"
        );
        if !crate::rp::confirm("approve? [y/N] ")? {
            return Err(ClientError::usage("not approved; nothing was signed"));
        }
    }
    // Unlock only now: a refused code never asks for the passphrase.
    let wallet = crate::commands::open_wallet(path)?;
    let key = wallet
        .usable_key(&vm.public_key_multibase)
        .ok_or_else(|| ClientError::usage(format!("the wallet's key {} is not usable", vm.id)))?;
    let signature = did_core::keys::sign_b64(key, approval.message.as_bytes());
    let answer: Value = client
        .post_json(approval_path, &json!({ "signature": signature }))
        .await?;
    if answer.get("approved") == Some(&json!(false)) {
        return Err(ClientError::protocol(format!(
            "the node did not confirm the approval: {answer}"
        )));
    }
    eprintln!(
        "approved: the login of {did} at {} continues",
        client.base()
    );
    Ok(())
}

// ------------------------------------------------------- DID changes

/// Entry ids of `state` (one fragment namespace, did-core).
fn taken_ids(state: &DidState) -> Vec<&str> {
    state
        .verification_methods
        .iter()
        .map(|v| v.id.as_str())
        .chain(state.services.iter().map(|s| s.id.as_str()))
        .chain(state.passkeys.iter().map(|p| p.id.as_str()))
        .chain(state.phones.iter().map(|p| p.id.as_str()))
        .chain(state.links.iter().map(|l| l.id.as_str()))
        .collect()
}

/// `prefix-1`, `prefix-2`, … the first free one.
fn next_id(prefix: &str, taken: &[&str]) -> String {
    (1..)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| !taken.contains(&id.as_str()))
        .unwrap_or_default()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// `did add-key --public-key`: another wallet's key joins the DID.
pub async fn add_foreign_key(
    path: &Path,
    node: &NodeArg,
    public_key: &str,
    name: Option<String>,
    mut rels: Vec<Relationship>,
    device: Option<String>,
) -> Result<(), ClientError> {
    let key = PublicKey::from_multibase(public_key.trim())
        .map_err(|e| ClientError::usage(format!("--public-key: {e}")))?;
    let (wallet, client, did, head) = open_did(path, node).await?;
    if wallet
        .public()
        .keys
        .iter()
        .any(|k| k.public_key_multibase == key)
    {
        return Err(ClientError::usage(
            "--public-key is a key of this wallet; to add a new key held here, leave --public-key out",
        ));
    }
    if let Some(vm) = head
        .state
        .verification_methods
        .iter()
        .find(|vm| vm.public_key_multibase == key)
    {
        return Err(ClientError::usage(format!(
            "{did} already lists that key as {did}#{}",
            vm.id
        )));
    }
    rels.sort();
    rels.dedup();
    let taken = taken_ids(&head.state);
    let name = match name {
        Some(n) if taken.contains(&n.as_str()) => {
            return Err(ClientError::usage(format!(
                "a key named {n} already exists"
            )))
        }
        Some(n) => n,
        None => wallet.next_key_name(taken.iter().copied()),
    };
    let mut state = head.state.clone();
    state.verification_methods.push(VerificationMethod {
        id: name.clone(),
        public_key_multibase: key,
        relationships: rels.clone(),
        device: device.clone(),
    });
    let cid = crate::rp::submit_state(&wallet, &client, &did, &head, state).await?;
    let rels: Vec<String> = rels
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    eprintln!(
        "added {did}#{name} ({key}{}) for {}, held by another wallet (op {cid}); that wallet signs with it through `didmesh approve`",
        device.map(|d| format!(", device {d}")).unwrap_or_default(),
        rels.join(", ")
    );
    emit(format!("{did}#{name}"))
}

/// `did policy`: sets (or, with `--factors 1` and no list, removes) the
/// DID's login policy.
pub async fn set_policy(
    path: &Path,
    node: &NodeArg,
    required: u8,
    factors: Vec<String>,
) -> Result<(), ClientError> {
    let (wallet, client, did, head) = open_did(path, node).await?;
    let mut state = head.state.clone();
    state.login_policy = if required == 1 && factors.is_empty() {
        None
    } else {
        Some(LoginPolicy { required, factors })
    };
    let (required, counted) = state.login_requirement();
    let summary = serde_json::to_string(&PolicyView {
        required,
        factors: counted.clone(),
    })
    .map_err(|e| ClientError::protocol(e.to_string()))?;
    if state.login_policy == head.state.login_policy {
        eprintln!("{did} already has this login policy; nothing was sent");
        return emit(summary);
    }
    // did-core's checks run before anything is sent (submit_state), and
    // their message is the error: a policy the DID could never satisfy,
    // one with no key, or a phone as the only factor.
    let cid = crate::rp::submit_state(&wallet, &client, &did, &head, state.clone()).await?;
    let ids: Vec<&str> = counted.iter().map(|f| f.id.as_str()).collect();
    match &state.login_policy {
        None => eprintln!(
            "removed the login policy of {did} (op {cid}): any one authentication key, passkey or linked account logs in"
        ),
        Some(_) => eprintln!(
            "login policy of {did}: {required} of {} (op {cid})",
            ids.join(", ")
        ),
    }
    let here = counted
        .iter()
        .filter(|f| f.kind == FactorKind::Key)
        .filter_map(|f| auth_method(&state, &f.id))
        .filter(|vm| wallet.usable_key(&vm.public_key_multibase).is_some())
        .count();
    if required > 1 && here >= usize::from(required) {
        eprintln!(
            "note: this wallet alone holds {here} of the counted keys: whoever copies it and learns its passphrase still logs in with it alone"
        );
    }
    emit(summary)
}

/// Makes an E.164 number of what was typed: spaces, dashes, dots and
/// brackets are dropped. The error does not repeat the number.
pub fn normalize_number(typed: &str) -> Result<Zeroizing<String>, ClientError> {
    let number: Zeroizing<String> = Zeroizing::new(
        typed
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect(),
    );
    if !is_e164(&number) {
        return Err(ClientError::usage(
            "not an E.164 number: write +, the country code and the number (8 to 15 digits, e.g. +15550100134)",
        ));
    }
    Ok(number)
}

/// `mfa add-phone`.
async fn add_phone(
    path: &Path,
    node: &NodeArg,
    typed: Zeroizing<String>,
    id: Option<String>,
) -> Result<(), ClientError> {
    let number = normalize_number(&typed)?;
    if let Some(id) = &id {
        if !valid_id(id) {
            return Err(ClientError::usage(
                "--id must be 1-32 characters of [A-Za-z0-9_-]",
            ));
        }
    }
    let (mut wallet, client, did, head) = open_did(path, node).await?;
    if let Some(p) = wallet
        .phones()
        .iter()
        .find(|p| p.number == number && head.state.phone(&p.id).is_some())
    {
        return Err(ClientError::usage(format!(
            "{did} already has this number as {}",
            p.id
        )));
    }
    let taken = taken_ids(&head.state);
    let id = match id {
        Some(id) if taken.contains(&id.as_str()) => {
            return Err(ClientError::usage(format!(
                "{did} already has an entry {id}"
            )))
        }
        Some(id) => id,
        None => next_id("phone", &taken),
    };
    let mut salt = [0u8; PHONE_SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut state = head.state.clone();
    state.phones.push(did_core::policy::Phone {
        id: id.clone(),
        commitment: phone_commitment(&salt, &number),
    });
    let op = signed_update(&wallet, &did, &head, state)?;
    // Write-ahead, like a new key: the number is in the wallet before the
    // DID commits to it, so a commitment never outlives its number.
    wallet.add_phone(PhoneSecret {
        id: id.clone(),
        number: number.clone(),
        salt,
    })?;
    wallet.save()?;
    match client.submit(&op).await {
        Ok(s) => eprintln!(
            "committed {} to {did} as {id} (op {}); the number and its salt stay in this wallet, encrypted. Count it: `didmesh did policy --factors 2 --factor <key> --factor {id}`",
            mask_number(&number),
            s.cid
        ),
        Err(e @ ClientError::Node { .. }) => {
            wallet.remove_phone(&id);
            wallet.save()?;
            return Err(e);
        }
        Err(e) => {
            return Err(ClientError::Transport(format!(
                "{e}; the outcome is unknown: the number stays in the wallet, `didmesh mfa show` tells whether {did} has {id}"
            )))
        }
    }
    emit(id)
}

/// Signs an update and checks it as a node would, before anything leaves.
fn signed_update(
    wallet: &Wallet,
    did: &str,
    head: &Head,
    state: DidState,
) -> Result<did_core::Operation, ClientError> {
    let op = did_core::Operation::update(
        did,
        head.cid,
        state,
        crate::now().max(head.created_at),
        wallet.main_key(),
    )?;
    op.check_self(&did_core::Limits::default())?;
    Ok(op)
}

/// `mfa remove-phone`.
async fn remove_phone(path: &Path, node: &NodeArg, id: &str) -> Result<(), ClientError> {
    let (mut wallet, client, did, head) = open_did(path, node).await?;
    if head.state.phone(id).is_some() {
        let mut state = head.state.clone();
        state.phones.retain(|p| p.id != id);
        let cid = crate::rp::submit_state(&wallet, &client, &did, &head, state).await?;
        eprintln!("removed {id} from {did} (op {cid})");
    } else if wallet.phone(id).is_none() {
        return Err(ClientError::usage(format!("{did} has no phone {id}")));
    }
    if wallet.remove_phone(id) {
        wallet.save()?;
        eprintln!("the wallet forgot the number of {id}");
    }
    Ok(())
}

/// `mfa show`.
async fn show(path: &Path, node: &NodeArg, as_json: bool) -> Result<(), ClientError> {
    let (wallet, _client, did, head) = open_did(path, node).await?;
    let state = &head.state;
    let (required, counted) = state.login_requirement();
    let factor_json = |f: &Factor| {
        let mut v = json!({"id": f.id, "kind": f.kind});
        match f.kind {
            FactorKind::Key => {
                if let Some(vm) = auth_method(state, &f.id) {
                    v["in_wallet"] = json!(wallet.usable_key(&vm.public_key_multibase).is_some());
                    if let Some(d) = &vm.device {
                        v["device"] = json!(d);
                    }
                }
            }
            FactorKind::Phone => v["in_wallet"] = json!(wallet.phone(&f.id).is_some()),
            _ => {}
        }
        v
    };
    let phones: Vec<Value> = state
        .phones
        .iter()
        .map(|p| {
            let known = wallet.phone(&p.id);
            let matches = known
                .map(|s| phone_commitment(&s.salt, &s.number) == p.commitment)
                .unwrap_or(false);
            json!({
                "id": p.id,
                "number": known.map(|s| mask_number(&s.number)),
                "in_wallet": known.is_some(),
                "matches_commitment": matches,
            })
        })
        .collect();
    let out = json!({
        "did": did,
        "policy": state.login_policy.as_ref().map(|_| json!({
            "required": required,
            "factors": counted.iter().map(factor_json).collect::<Vec<_>>(),
        })),
        "login_needs": {"required": required, "factors": counted},
        "phones": phones,
    });
    if as_json {
        return emit(pretty(&out));
    }
    let mut text = format!("did     {did}\n");
    match &state.login_policy {
        None => text.push_str(
            "policy  none: any one authentication key, passkey or linked account logs in\n",
        ),
        Some(_) => {
            let listed: Vec<String> = counted
                .iter()
                .map(|f| {
                    let v = factor_json(f);
                    let mut s = format!("{} ({}", f.id, kind_name(f.kind));
                    if let Some(d) = v["device"].as_str() {
                        s.push_str(&format!(", {d}"));
                    }
                    if v["in_wallet"] == json!(true) {
                        s.push_str(", in this wallet");
                    }
                    s.push(')');
                    s
                })
                .collect();
            text.push_str(&format!("policy  {required} of: {}\n", listed.join(", ")));
        }
    }
    if state.phones.is_empty() {
        text.push_str("phones  none (`didmesh mfa add-phone +…`)");
    } else {
        text.push_str("phones");
        for p in &phones {
            let shown = match (p["number"].as_str(), p["matches_commitment"].as_bool()) {
                (Some(n), Some(true)) => n.to_string(),
                (Some(n), _) => format!("{n} (does not match the DID's commitment)"),
                (None, _) => "(number not in this wallet)".into(),
            };
            text.push_str(&format!(
                "\n  {:<10} {shown}",
                p["id"].as_str().unwrap_or_default()
            ));
        }
    }
    emit(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalized_and_masked() {
        assert_eq!(
            normalize_number("+1 555-010-0134").unwrap().as_str(),
            "+15550100134"
        );
        assert_eq!(
            normalize_number("+44 (20) 7946.0958").unwrap().as_str(),
            "+442079460958"
        );
        for bad in ["15550100999", "+0123456789", "+1234", "+1555abc0134", ""] {
            let e = normalize_number(bad).unwrap_err().to_string();
            assert!(e.contains("E.164"), "{e}");
            if bad.len() > 4 {
                assert!(!e.contains(bad), "the error repeats the number: {e}");
            }
        }
        assert_eq!(mask_number("+15550100134"), "+1******34");
        assert_eq!(mask_number("+442079460958"), "+4******58");
        assert_eq!(mask_number(""), "+******");
    }

    #[test]
    fn sms_codes_are_six_digits() {
        assert_eq!(parse_sms_code("123456\n").unwrap().as_str(), "123456");
        assert_eq!(parse_sms_code(" 123 456 \r\n").unwrap().as_str(), "123456");
        assert!(parse_sms_code("")
            .unwrap_err()
            .to_string()
            .contains("no SMS code"));
        for bad in ["12345\n", "1234567\n", "12345a\n", "١٢٣٤٥٦\n"] {
            assert!(parse_sms_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amr_is_read_for_display_only() {
        let payload = base64_url(br#"{"amr":["swk","sms","mfa"]}"#);
        assert_eq!(amr_note(&format!("h.{payload}.s")), " with swk, sms, mfa");
        let evil = base64_url(br#"{"amr":["\u001b[2J"]}"#);
        assert_eq!(amr_note(&format!("h.{evil}.s")), "");
        assert_eq!(amr_note("garbage"), "");
    }

    #[test]
    fn challenges_without_a_policy_still_parse() {
        let c: Challenge = serde_json::from_value(json!({
            "nonce": "n", "message": "m", "issued_at": 1, "expires_at": 2, "audience": "a"
        }))
        .unwrap();
        assert!(c.policy.is_none());
        let c: Challenge = serde_json::from_value(json!({
            "nonce": "n", "message": "m", "issued_at": 1, "expires_at": 2, "audience": "a",
            "policy": {"required": 2, "factors": [{"id": "key-1", "kind": "key"}, {"id": "phone-1", "kind": "phone"}]}
        }))
        .unwrap();
        let p = c.policy.unwrap();
        assert_eq!(p.required, 2);
        assert_eq!(p.factors[1].kind, FactorKind::Phone);
    }

    #[test]
    fn token_requests_carry_every_proof() {
        let sigs = vec!["a".to_string(), "b".to_string()];
        let body = TokenBody {
            did: "did:mesh:x",
            nonce: "n",
            signatures: &sigs,
            sms: Some(SmsProof {
                phone: "phone-1",
                code: "123456",
            }),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"did": "did:mesh:x", "nonce": "n", "signatures": ["a", "b"],
                   "sms": {"phone": "phone-1", "code": "123456"}})
        );
    }

    #[test]
    fn ids() {
        assert_eq!(next_id("phone", &[]), "phone-1");
        assert_eq!(next_id("phone", &["phone-1", "phone-3"]), "phone-2");
        assert!(valid_id("phone-1") && !valid_id("a/b") && !valid_id(""));
    }
}
