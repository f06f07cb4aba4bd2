//! SMS one-time codes (issue 11): the wire format towards Twilio, the
//! commitment check, the code rules, the spend guard, and an SMS pumping
//! attack against a spawned node that is then killed with SIGKILL.
//!
//! In-process tests use the node's own router ([`RouterNode`]) with a local
//! server of Twilio's Messages API ([`TwilioServer`]). The pumping test
//! spawns the real binary (`cargo build -p didmesh-node` first) behind
//! `--trusted-proxy 127.0.0.1`, so each request can come from its own
//! client network through `X-Forwarded-For`.
//!
//! `cargo test -p didmesh-node --test sms -- --nocapture` prints the
//! spend table.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use did_core::keys::public_of;
use did_core::policy::{phone_commitment, LoginPolicy, Phone};
use did_core::{DidState, Operation};
use didmesh_node::sms::{check_code, codes::CODE_TTL, SmsError};
use didmesh_tests::ops::key;
use didmesh_tests::router::RouterNode;
use didmesh_tests::twilio::{TwilioServer, AUTH_TOKEN};
use didmesh_tests::{now, NodeCommand};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Budget, allow-list, prices of the in-process tests.
const CONFIG: &str = r#"
monthly_budget = 10.00
allow_prefixes = ["+1", "+44", "+881"]

[prices]
"+1" = 0.0079
"+44" = 0.04
"#;

/// A phone of a test DID: entry id, number, salt.
#[derive(Clone)]
struct TestPhone {
    id: String,
    number: String,
    salt: Vec<u8>,
}

impl TestPhone {
    fn new(id: &str, number: &str, seed: u32) -> TestPhone {
        let mut salt = vec![7u8; 16];
        salt[..4].copy_from_slice(&seed.to_be_bytes());
        TestPhone {
            id: id.into(),
            number: number.into(),
            salt,
        }
    }
    fn salt_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.salt)
    }
}

/// A create op of a DID with `phones` committed and, when `counted`, a
/// policy "2 of all factors" (its key and its phones).
fn phone_did_op(k: &SigningKey, phones: &[TestPhone], counted: bool) -> (Operation, String) {
    let mut state = DidState::single_key(public_of(k));
    state.phones = phones
        .iter()
        .map(|p| Phone {
            id: p.id.clone(),
            commitment: phone_commitment(&p.salt, &p.number),
        })
        .collect();
    if counted {
        state.login_policy = Some(LoginPolicy {
            required: 2,
            factors: vec![],
        });
    }
    didmesh_tests::ops::create(state, k)
}

/// The SMS file in a temp folder.
fn sms_file(twilio: &TwilioServer, body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sms.toml");
    std::fs::write(&path, twilio.sms_file(body)).unwrap();
    (dir, path)
}

struct Fixture {
    node: RouterNode,
    twilio: TwilioServer,
    _sms_dir: tempfile::TempDir,
}

async fn fixture(body: &str) -> Fixture {
    let twilio = TwilioServer::start().await;
    let (dir, path) = sms_file(&twilio, body);
    let node = RouterNode::start_with(&["--sms", path.to_str().unwrap()]).await;
    Fixture {
        node,
        twilio,
        _sms_dir: dir,
    }
}

impl Fixture {
    async fn did(&self, seed: u32, phones: &[TestPhone], counted: bool) -> String {
        let (op, did) = phone_did_op(&key(0x51, seed), phones, counted);
        let (status, body) = self.node.submit(&op).await;
        assert_eq!(status, 201, "{body}");
        did
    }

    async fn ask(&self, did: &str, nonce: &str, phone: &TestPhone) -> (u16, Value) {
        let (status, body) = self
            .node
            .post(
                "/v1/auth/sms",
                json!({"did": did, "nonce": nonce, "phone": phone.id,
                       "number": phone.number, "salt": phone.salt_b64()}),
            )
            .await;
        (status.as_u16(), body)
    }

    fn nonce_id(&self, did: &str, nonce: &str) -> u64 {
        self.node
            .state
            .auth
            .live_nonce(did, nonce, now())
            .unwrap()
            .id
    }

    async fn sms_status(&self) -> Value {
        self.node.status().await["sms"].clone()
    }
}

#[tokio::test]
async fn a_code_goes_out_in_twilios_wire_format_and_checks_once() {
    let f = fixture(CONFIG).await;
    let phone = TestPhone::new("phone-1", "+447700900123", 1);
    let did = f.did(1, std::slice::from_ref(&phone), true).await;
    let (nonce, _) = f.node.challenge(&did).await;
    let (status, body) = f.ask(&did, &nonce, &phone).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"sent_to": "+4*********23", "expires_in": 300}));
    // Twilio's API saw one message: Basic auth right, form fields right.
    assert_eq!(f.twilio.unauthorized(), 0);
    let sent = f.twilio.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to, "+447700900123");
    assert_eq!(sent[0].from, "+15005550006");
    let code = sent[0].code().expect("a 6-digit code in the body");
    assert!(sent[0].body.contains("didmesh"), "{}", sent[0].body);
    // the code counts once, for this login and phone only
    let id = f.nonce_id(&did, &nonce);
    assert_eq!(
        check_code(&f.node.state, id ^ 1, "phone-1", &code),
        Err(SmsError::NoCode)
    );
    assert_eq!(
        check_code(&f.node.state, id, "phone-2", &code),
        Err(SmsError::NoCode)
    );
    assert_eq!(check_code(&f.node.state, id, "phone-1", &code), Ok(()));
    assert_eq!(
        check_code(&f.node.state, id, "phone-1", &code),
        Err(SmsError::Used)
    );
    // a used slot sends nothing more
    let (status, body) = f.ask(&did, &nonce, &phone).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(f.twilio.messages().len(), 1);
    // status and metrics
    let s = f.sms_status().await;
    assert_eq!(s["enabled"], true);
    assert_eq!(s["sent"], 1);
    assert_eq!(s["spent_micros"], 40_000);
    assert_eq!(s["budget"], 10.0);
    let (_, metrics) = f.node.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    for line in [
        "didmesh_sms_enabled 1",
        "didmesh_sms_sent_total 1",
        "didmesh_sms_spent 0.04",
        "didmesh_sms_budget 10",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(!metrics.contains(AUTH_TOKEN) && !s.to_string().contains(AUTH_TOKEN));
}

#[tokio::test]
async fn a_number_that_does_not_match_the_commitment_sends_and_spends_nothing() {
    let f = fixture(CONFIG).await;
    let phone = TestPhone::new("phone-1", "+447700900123", 2);
    let did = f.did(2, std::slice::from_ref(&phone), true).await;
    let (nonce, _) = f.node.challenge(&did).await;
    let other_number = TestPhone {
        number: "+447700900124".into(),
        ..phone.clone()
    };
    let other_salt = TestPhone {
        salt: vec![9; 16],
        ..phone.clone()
    };
    let other_id = TestPhone {
        id: "phone-9".into(),
        ..phone.clone()
    };
    let not_e164 = TestPhone {
        number: "447700900123".into(),
        ..phone.clone()
    };
    for p in [&other_number, &other_salt, &other_id, &not_e164] {
        let (status, body) = f.ask(&did, &nonce, p).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "phone_mismatch", "{body}");
    }
    // a phone the policy does not count: a code would not help the login
    let uncounted = TestPhone::new("phone-1", "+447700900125", 3);
    let did2 = f.did(3, std::slice::from_ref(&uncounted), false).await;
    let (nonce2, _) = f.node.challenge(&did2).await;
    let (status, body) = f.ask(&did2, &nonce2, &uncounted).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("phone_not_counted"))
    );
    // a nonce of another DID, or made up
    let (status, _) = f.ask(&did2, &nonce, &phone).await;
    assert_eq!(status, 400);
    assert_eq!(f.twilio.requests(), 0, "nothing reached the provider");
    let s = f.sms_status().await;
    assert_eq!(s["spent_micros"], 0);
    assert_eq!(s["sent"], 0);
}

#[tokio::test]
async fn five_wrong_codes_lock_the_login_and_a_code_expires() {
    let f = fixture(CONFIG).await;
    let phone = TestPhone::new("phone-1", "+15550100001", 4);
    let did = f.did(4, std::slice::from_ref(&phone), true).await;
    let (nonce, _) = f.node.challenge(&did).await;
    assert_eq!(f.ask(&did, &nonce, &phone).await.0, 202);
    let code = f.twilio.last_code_to(&phone.number).unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let id = f.nonce_id(&did, &nonce);
    for left in (1..=4).rev() {
        assert_eq!(
            check_code(&f.node.state, id, "phone-1", wrong),
            Err(SmsError::WrongCode { tries_left: left })
        );
    }
    assert_eq!(
        check_code(&f.node.state, id, "phone-1", wrong),
        Err(SmsError::Locked)
    );
    // even the right code, now
    assert_eq!(
        check_code(&f.node.state, id, "phone-1", &code),
        Err(SmsError::Locked)
    );
    // and no new code for this login: nothing sent, nothing spent
    let (status, body) = f.ask(&did, &nonce, &phone).await;
    assert_eq!((status, body["reason"].as_str()), (429, Some("code_slot")));
    assert_eq!(f.twilio.messages().len(), 1);

    // Expiry: a fresh login's code, checked 5 minutes on.
    let (nonce, _) = f.node.challenge(&did).await;
    assert_eq!(f.ask(&did, &nonce, &phone).await.0, 202);
    let code = f.twilio.last_code_to(&phone.number).unwrap();
    let id = f.nonce_id(&did, &nonce);
    let codes = &f.node.state.sms.as_ref().unwrap().codes;
    assert_eq!(
        codes.check(id, "phone-1", &code, now() + CODE_TTL),
        Err(SmsError::Expired)
    );
    assert_eq!(
        check_code(&f.node.state, id, "phone-1", &code),
        Err(SmsError::NoCode),
        "an expired code is forgotten"
    );
}

#[tokio::test]
async fn unlisted_and_unpriced_destinations_are_refused_without_sending() {
    let f = fixture(CONFIG).await;
    let unlisted = TestPhone::new("phone-1", "+79001234567", 5);
    let unpriced = TestPhone::new("phone-2", "+881612345678", 6);
    let did = f.did(5, &[unlisted.clone(), unpriced.clone()], true).await;
    let (nonce, _) = f.node.challenge(&did).await;
    for (p, reason) in [(&unlisted, "not_allowed"), (&unpriced, "no_price")] {
        let resp = f
            .node
            .send(
                axum::http::Request::post("/v1/auth/sms")
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        json!({"did": did, "nonce": nonce, "phone": p.id,
                               "number": p.number, "salt": p.salt_b64()})
                        .to_string(),
                    ))
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), 429);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = serde_json::from_slice(
            &http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes(),
        )
        .unwrap();
        assert_eq!(body["error"], "sms_limited");
        assert_eq!(body["reason"], reason, "{body}");
    }
    assert_eq!(f.twilio.requests(), 0);
    let s = f.sms_status().await;
    assert_eq!(s["spent_micros"], 0);
    assert_eq!(s["refused_by_reason"]["not_allowed"], 1);
    assert_eq!(s["refused_by_reason"]["no_price"], 1);
}

#[tokio::test]
async fn provider_errors_are_502_and_refund_the_reserved_spend() {
    let f = fixture(CONFIG).await;
    let phone = TestPhone::new("phone-1", "+15550100002", 7);
    let did = f.did(7, std::slice::from_ref(&phone), true).await;
    for (status, code) in [(400, 21211), (503, 20500)] {
        f.twilio
            .fail_with(status, code, "The 'To' number is not valid.");
        let (nonce, _) = f.node.challenge(&did).await;
        let (got, body) = f.ask(&did, &nonce, &phone).await;
        assert_eq!(got, 502, "{body}");
        assert_eq!(body["error"], "sms_provider_error");
        assert!(body["reason"].as_str().unwrap().contains(&code.to_string()));
        let s = f.sms_status().await;
        assert_eq!(s["spent_micros"], 0, "refunded after HTTP {status}");
    }
    f.twilio.succeed();
    let (nonce, _) = f.node.challenge(&did).await;
    assert_eq!(f.ask(&did, &nonce, &phone).await.0, 202);
    let s = f.sms_status().await;
    assert_eq!(s["spent_micros"], 7_900);
    assert_eq!(s["sent"], 1);
    assert_eq!(s["refused_by_reason"]["provider_error"], 2);
}

#[tokio::test]
async fn without_an_sms_file_the_factor_is_off_and_says_so() {
    let node = RouterNode::start().await;
    let (status, body) = node
        .post(
            "/v1/auth/sms",
            json!({"did": "did:mesh:x", "nonce": "00", "phone": "p", "number": "+15550100003", "salt": "AAAA"}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (501, Some("sms_disabled"))
    );
    assert_eq!(node.status().await["sms"], json!({"enabled": false}));
    let (_, metrics) = node.get("/metrics").await;
    assert!(metrics.as_str().unwrap().contains("didmesh_sms_enabled 0"));
}

#[tokio::test]
async fn a_bad_sms_file_stops_the_node_with_the_reason() {
    use clap::Parser as _;
    let twilio = TwilioServer::start().await;
    let data = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            twilio.sms_file("monthly_budget = 5\nallow_prefixes = []\n[prices]\n\"+1\" = 0.01\n"),
            "allow_prefixes is empty",
        ),
        (
            twilio.sms_file("monthly_budget = 5\nallow_prefixes = [\"+1\"]\n"),
            "[prices] is empty",
        ),
        (
            twilio
                .sms_file(CONFIG)
                .replace(&format!("auth_token = \"{AUTH_TOKEN}\""), ""),
            "no auth token",
        ),
        (
            twilio
                .sms_file(CONFIG)
                .replace("monthly_budget", "monthly_budgte"),
            "unknown field",
        ),
    ] {
        let (_dir, path) = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sms.toml");
            std::fs::write(&path, text).unwrap();
            (dir, path)
        };
        let config = didmesh_node::config::Config::try_parse_from([
            "didmesh-node",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--sms",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let e = match didmesh_node::NodeState::open(&config) {
            Ok(_) => panic!("a bad SMS file was accepted: {want}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("SMS file") && e.contains(want), "{want}: {e}");
        assert!(!e.contains(AUTH_TOKEN), "{e}");
    }
}

// ---------------------------------------------------------------------
// The pumping attack.

/// What the attack's node is configured with.
const PUMPING: &str = r#"
monthly_budget = 40.00
allow_prefixes = ["+1", "+44", "+881", "+882"]
velocity_max = 30
velocity_window_secs = 600
velocity_block_secs = 3600

[prices]
"+1" = 0.0079
"+44" = 0.04
"+881" = 1.00
"+882" = 0.75
"#;
const BUDGET: u64 = 40_000_000;
const ATTACK_REQUESTS: usize = 2000;
/// Attack requests per DID, and per client network.
const PER_DID: usize = 8;
const PER_NETWORK: usize = 10;
/// A legitimate sign-in after every this many attack requests.
const LEGIT_EVERY: usize = 100;

fn price(number: &str) -> u64 {
    for (p, v) in [
        ("+881", 1_000_000),
        ("+882", 750_000),
        ("+44", 40_000),
        ("+1", 7_900),
    ] {
        if number.starts_with(p) {
            return v;
        }
    }
    0
}

struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    async fn post(&self, path: &str, body: &Value, client_ip: IpAddr) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("x-forwarded-for", client_ip.to_string())
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn sms_status(&self) -> Value {
        let v: Value = self
            .client
            .get(format!("{}/v1/status", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["sms"].clone()
    }

    /// A challenge and an SMS request for (`did`, `phone`) from `ip`.
    async fn ask(&self, did: &str, phone: &TestPhone, ip: IpAddr) -> (u16, Value) {
        let (s, ch) = self
            .post("/v1/auth/challenge", &json!({ "did": did }), ip)
            .await;
        assert_eq!(s, 200, "{ch}");
        let body = json!({"did": did, "nonce": ch["nonce"], "phone": phone.id,
                          "number": phone.number, "salt": phone.salt_b64()});
        self.post("/v1/auth/sms", &body, ip).await
    }
}

/// The spend table of a status's `sms` section.
fn spend_table(s: &Value) -> String {
    let mut out = format!(
        "{:<12} {:>5} {:>9}  refused by reason\n",
        "prefix", "sent", "spent"
    );
    for row in s["prefixes"].as_array().into_iter().flatten() {
        let refused: Vec<String> = row["refused_by_reason"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!(
            "{:<12} {:>5} {:>9.4}  {}\n",
            row["prefix"].as_str().unwrap_or("?"),
            row["sent"],
            row["spent"].as_f64().unwrap_or(0.0),
            refused.join(", ")
        ));
    }
    out.push_str(&format!(
        "total: sent {}, spent {} of {} {}; blocked {}",
        s["sent"], s["spent"], s["budget"], s["currency"], s["blocked_prefixes"]
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_pumping_is_bounded_blocked_and_survives_a_sigkill() {
    let twilio = TwilioServer::start().await;
    let (_sms_dir, sms_path) = sms_file(&twilio, PUMPING);
    let data = tempfile::tempdir().unwrap();
    // `start` waits with a blocking client: off the runtime's threads.
    let start = || {
        tokio::task::block_in_place(|| {
            NodeCommand::new(data.path())
                .args(["--no-p2p", "--trusted-proxy", "127.0.0.1", "--sms"])
                .arg(&sms_path)
                .start()
        })
    };
    let mut node = start();
    let http = Http {
        client: reqwest::Client::new(),
        url: node.url.clone(),
    };
    let one = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

    // The attacker's DIDs: each commits to a +881, a +882 and an unlisted
    // number (all different), and counts them in its policy.
    let unlisted = ["+7", "+234", "+371", "+960"];
    let attackers: Vec<(String, Vec<TestPhone>)> = {
        let mut v = vec![];
        for d in 0..(ATTACK_REQUESTS / PER_DID) as u32 {
            let phones = vec![
                TestPhone::new("phone-1", &format!("+8816{:08}", d), d * 3),
                TestPhone::new("phone-2", &format!("+88234{:07}", d), d * 3 + 1),
                TestPhone::new(
                    "phone-3",
                    &format!("{}9{:08}", unlisted[d as usize % unlisted.len()], d),
                    d * 3 + 2,
                ),
            ];
            let (op, did) = phone_did_op(&key(0xA7, d), &phones, true);
            let (s, b) = http
                .post("/v1/ops", &serde_json::to_value(&op).unwrap(), one)
                .await;
            assert_eq!(s, 201, "{b}");
            v.push((did, phones));
        }
        v
    };
    // Legitimate users in the UK, one sign-in each.
    let legit: Vec<(String, TestPhone)> = {
        let mut v = vec![];
        for u in 0..(ATTACK_REQUESTS / LEGIT_EVERY) as u32 {
            let phone = TestPhone::new("phone-1", &format!("+447700900{:03}", u), 50_000 + u);
            let (op, did) = phone_did_op(&key(0x1E, u), std::slice::from_ref(&phone), true);
            let (s, b) = http
                .post("/v1/ops", &serde_json::to_value(&op).unwrap(), one)
                .await;
            assert_eq!(s, 201, "{b}");
            v.push((did, phone));
        }
        v
    };

    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut legit_results: Vec<(u16, String, u64)> = vec![];
    let mut blocked_at: Option<usize> = None;
    let mut max_spent = 0u64;
    for (batch, (did, phone)) in legit.iter().enumerate() {
        // A legitimate user: own DID, own number, own network.
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, batch as u8, 20));
        let before = http.sms_status().await["spent_micros"].as_u64().unwrap();
        let (s, b) = http.ask(did, phone, ip).await;
        legit_results.push((s, b["reason"].as_str().unwrap_or("").to_string(), before));
        // The attack: LEGIT_EVERY requests, 20 at a time.
        for chunk in (0..LEGIT_EVERY).collect::<Vec<_>>().chunks(20) {
            let requests = chunk.iter().map(|j| {
                let i = batch * LEGIT_EVERY + j;
                let (did, phones) = &attackers[i / PER_DID];
                let net = i / PER_NETWORK;
                let ip = IpAddr::V4(Ipv4Addr::new(10, (net / 250) as u8, (net % 250) as u8, 1));
                let mut phone = phones[i % 3].clone();
                if i % 7 == 6 {
                    // a number that does not match the commitment
                    phone.number = format!("+88163{:07}", i);
                }
                let http = &http;
                async move { http.ask(did, &phone, ip).await }
            });
            for (s, b) in futures::future::join_all(requests).await {
                let what = match s {
                    202 => "202 sent".to_string(),
                    _ => format!(
                        "{s} {}",
                        b["reason"]
                            .as_str()
                            .filter(|_| s == 429)
                            .unwrap_or(b["error"].as_str().unwrap_or(""))
                    ),
                };
                *answers.entry(what).or_default() += 1;
            }
            let st = http.sms_status().await;
            let spent = st["spent_micros"].as_u64().unwrap();
            assert!(spent <= BUDGET, "spent {spent} > budget");
            max_spent = max_spent.max(spent);
            if blocked_at.is_none()
                && st["blocked_prefixes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["prefix"] == "+881")
            {
                blocked_at = Some(batch);
            }
        }
    }
    let before_kill = http.sms_status().await;
    println!("answers to {ATTACK_REQUESTS} attack requests: {answers:#?}");
    println!("legitimate sign-ins (status, reason, spend before): {legit_results:?}");
    println!(
        "spend table after the attack:\n{}",
        spend_table(&before_kill)
    );

    // 1. The money: what the provider actually got never exceeds the
    //    budget, and equals what the node booked.
    let delivered: u64 = twilio.messages().iter().map(|m| price(&m.to)).sum();
    assert!(delivered <= BUDGET, "{delivered}");
    assert_eq!(before_kill["spent_micros"].as_u64().unwrap(), delivered);
    assert!(
        twilio.messages().iter().all(|m| price(&m.to) > 0),
        "a message went to an unpriced or unlisted destination"
    );
    assert_eq!(
        twilio.messages().len() as u64,
        before_kill["sent"].as_u64().unwrap()
    );
    // The budget did run out: less than a UK message is left.
    assert!(BUDGET - delivered < price("+44"), "{delivered}");
    // 2. The spiking prefix is blocked by the velocity alarm.
    let blocked = blocked_at.expect("+881 was never blocked");
    assert!(
        before_kill["refused_by_reason"]["velocity"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(
        before_kill["refused_by_reason"]["prefix_blocked"]
            .as_u64()
            .unwrap()
            > 100
    );
    assert!(
        before_kill["refused_by_reason"]["not_allowed"]
            .as_u64()
            .unwrap()
            > 100
    );
    assert!(answers.get("403 phone_mismatch").copied().unwrap_or(0) > 100);
    // 3. Legitimate users: served until the budget ends, then refused for
    //    the budget only, and served after the attack's prefix was blocked.
    let served: Vec<usize> = (0..legit_results.len())
        .filter(|&i| legit_results[i].0 == 202)
        .collect();
    for (i, (s, reason, spent_before)) in legit_results.iter().enumerate() {
        match s {
            202 => {}
            429 => {
                assert_eq!(reason, "budget", "legit user {i}");
                assert!(
                    BUDGET - spent_before < price("+44"),
                    "legit user {i} refused with budget left"
                );
            }
            other => panic!("legit user {i}: {other} {reason}"),
        }
    }
    assert!(
        served.iter().any(|&i| i > blocked),
        "no legitimate user was served after +881 was blocked at batch {blocked}: {legit_results:?}"
    );
    assert!(
        legit_results.iter().any(|r| r.0 == 429),
        "the budget never ran out for the legit users"
    );

    // 4. SIGKILL and restart: nothing resets. Refusal counts are written
    //    without an fsync (sled flushes every 0.5 s); money, sends and
    //    blocks are flushed before the answer. Wait past sled's interval
    //    so the comparison below can be exact for all of them.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    tokio::task::block_in_place(|| node.kill9());
    let node = start();
    let http = Http {
        client: reqwest::Client::new(),
        url: node.url.clone(),
    };
    let after = http.sms_status().await;
    println!(
        "spend table after SIGKILL and restart:\n{}",
        spend_table(&after)
    );
    assert_eq!(
        after, before_kill,
        "the guard's state changed across a SIGKILL"
    );
    // Still spent, still blocked: a new UK user and a new +881 request.
    let newcomer = TestPhone::new("phone-1", "+447700900999", 90_000);
    let (op, did) = phone_did_op(&key(0x1E, 999), std::slice::from_ref(&newcomer), true);
    let (s, _) = http
        .post("/v1/ops", &serde_json::to_value(&op).unwrap(), one)
        .await;
    assert_eq!(s, 201);
    let (s, b) = http
        .ask(&did, &newcomer, IpAddr::V4(Ipv4Addr::new(198, 51, 200, 1)))
        .await;
    assert_eq!((s, b["reason"].as_str()), (429, Some("budget")), "{b}");
    let (did, phones) = &attackers[0];
    let (s, b) = http
        .ask(did, &phones[0], IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)))
        .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (429, Some("prefix_blocked")),
        "{b}"
    );
}
