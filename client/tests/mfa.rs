//! Multi-factor logins with the `didmesh` binary against a real
//! `didmesh-node` (issue 11, "The CLI"):
//!
//! * two wallets, policy "2 of 2 keys": `didmesh login` prints `approve:
//!   CODE`, the other wallet runs `didmesh approve CODE --yes`, the token's
//!   `amr` has `mfa`; without the second device no token; a wallet whose
//!   key the DID does not list, or one reached under another host name,
//!   refuses to co-sign; `did policy` refuses what did-core refuses;
//!   `--factors 1` brings back one-key logins;
//! * SMS through a local server speaking Twilio's Messages API: `mfa
//!   add-phone` (the number is neither on the ledger nor readable in the
//!   wallet file), policy "key + phone", the login reads the code from
//!   stdin → token with `sms` and `mfa`; a wrong code → non-zero exit with
//!   the node's reason. The Twilio API is the testkit's
//!   (`didmesh_tests::twilio`).
//!
//! The node is the real binary (`cargo build -p didmesh-node`); a missing
//! binary fails the test, it never passes by skipping.

mod support;

use didmesh_tests::twilio::{Message, TwilioServer};
use didmesh_tests::{issuer, Node};
use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{err, ok};

const PASS: &str = "mfa test passphrase";
const NUMBER: &str = "+15550100134";

fn dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn didmesh(wallet: &Path, args: &[&str]) -> Output {
    support::run(wallet, PASS, args)
}

/// A wallet with a registered DID on `url`.
fn wallet_with_did(dir: &Path, name: &str, url: &str) -> (PathBuf, String) {
    support::wallet_with_did(didmesh, dir, name, url)
}

/// The main key of a wallet, as `wallet show` prints it.
fn main_key(wallet: &Path) -> String {
    let shown: Value = serde_json::from_str(&ok(
        didmesh(wallet, &["wallet", "show", "--json"]),
        "wallet show",
    ))
    .unwrap();
    shown["keys"][0]["public_key_multibase"]
        .as_str()
        .unwrap()
        .to_string()
}

fn version_id(wallet: &Path) -> String {
    let shown: Value =
        serde_json::from_str(&ok(didmesh(wallet, &["did", "show"]), "did show")).unwrap();
    shown["didDocumentMetadata"]["versionId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn amr(token: &str) -> Vec<String> {
    issuer::claims(token)["amr"]
        .as_array()
        .unwrap_or_else(|| panic!("no amr in {}", issuer::claims(token)))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// A `didmesh login` running in the background, its stdout read line by
/// line (the `approve:` line comes before the token).
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(wallet: &Path, args: &[&str]) -> Running {
        let mut child = support::cmd(wallet, PASS, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Running {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    fn next_line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    fn write_stdin(&mut self, text: &str) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }

    /// Waits for the exit: (success, remaining stdout lines, stderr).
    fn finish(mut self, within: Duration) -> (bool, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("didmesh did not finish within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = vec![];
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(l);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.success(), rest, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn node(extra: &[&str]) -> (Node, tempfile::TempDir) {
    support::node("client-mfa-node-", extra)
}

#[test]
fn two_keys_on_two_wallets_need_both() {
    let (node, _data) = node(&[]);
    let url = node.url.as_str();
    let d = dir("client-mfa-keys-");
    let (a, did) = wallet_with_did(d.path(), "laptop", url);
    let b = d.path().join("phone.json");
    ok(didmesh(&b, &["wallet", "init"]), "wallet init (phone)");
    let b_key = main_key(&b);

    // The phone wallet's key joins the DID, tagged with its device.
    let vm = ok(
        didmesh(
            &a,
            &[
                "did",
                "add-key",
                "--public-key",
                &b_key,
                "--device",
                "phone",
            ],
        ),
        "add-key --public-key",
    );
    assert_eq!(vm, format!("{did}#key-2"));
    let shown = ok(didmesh(&a, &["did", "show"]), "did show");
    assert!(shown.contains(&b_key), "{shown}");
    let again = err(
        didmesh(&a, &["did", "add-key", "--public-key", &b_key]),
        "adding the same key twice",
    );
    assert!(again.contains("already lists that key"), "{again}");

    // did-core's refusals, made before anything is sent.
    let before = version_id(&a);
    for (args, why) in [
        (
            &["--factors", "3"][..],
            "requires 3 factors but only 2 count",
        ),
        (&["--factors", "2", "--factor", "key-9"][..], "\"key-9\""),
        (&["--factors", "0"][..], "required must be 1-5"),
    ] {
        let mut full = vec!["did", "policy"];
        full.extend_from_slice(args);
        let e = err(didmesh(&a, &full), "an impossible policy");
        assert!(e.contains(why), "{args:?}: {e}");
    }
    assert_eq!(version_id(&a), before, "a refused policy reached the node");

    let policy: Value = serde_json::from_str(&ok(
        didmesh(&a, &["did", "policy", "--factors", "2"]),
        "did policy",
    ))
    .unwrap();
    assert_eq!(policy["required"], 2);
    assert_eq!(policy["factors"].as_array().unwrap().len(), 2, "{policy}");
    let shown = ok(didmesh(&a, &["mfa", "show"]), "mfa show");
    assert!(
        shown.contains("policy  2 of: key-1 (key, in this wallet), key-2 (key, phone)"),
        "{shown}"
    );

    // The login asks for the other device and waits for it.
    let login = Running::start(&a, &["login"]);
    let line = login
        .next_line(Duration::from_secs(30))
        .expect("no `approve:` line");
    let code = line
        .strip_prefix("approve: ")
        .unwrap_or_else(|| panic!("first line is not `approve: CODE`: {line}"))
        .to_string();
    assert_eq!(code.len(), 9, "{code}");

    // A wallet whose key the DID does not list refuses to co-sign.
    let c = d.path().join("stranger.json");
    ok(didmesh(&c, &["wallet", "init"]), "wallet init (stranger)");
    let e = err(
        didmesh(&c, &["approve", &code, "--node", url, "--yes"]),
        "approve by a stranger",
    );
    assert!(e.contains("lists none of this wallet's keys"), "{e}");
    // Reached under another name, the challenge names a domain the wallet
    // is not talking to: a relayed challenge is not signed.
    let e = err(
        didmesh(
            &b,
            &[
                "approve",
                &code,
                "--node",
                &format!("http://localhost:{}", node.port),
                "--yes",
            ],
        ),
        "approve through another host name",
    );
    assert!(
        e.contains("refusing to sign") && e.contains("phishing"),
        "{e}"
    );
    // Without --yes and without a yes on stdin, nothing is signed.
    let e = err(
        didmesh(&b, &["approve", &code, "--node", url]),
        "approve answered no",
    );
    assert!(
        e.contains(&format!("second factor for a login of {did} at {url}"))
            && e.contains("not approved"),
        "{e}"
    );

    let approved = didmesh(&b, &["approve", &code, "--node", url, "--yes"]);
    let shown = String::from_utf8_lossy(&approved.stderr).to_string();
    ok(approved, "approve by the phone wallet");
    assert!(shown.contains("signed with key-2 (phone)"), "{shown}");

    let (success, rest, stderr) = login.finish(Duration::from_secs(30));
    assert!(success, "login failed: {stderr}");
    let token = rest.last().expect("no token").clone();
    let methods = amr(&token);
    assert!(
        methods.contains(&"mfa".to_string()) && methods.contains(&"swk".to_string()),
        "{methods:?}"
    );
    assert_eq!(issuer::claims(&token)["sub"], did.as_str());
    assert!(stderr.contains("with swk"), "{stderr}");

    // Back to one key: no approval asked, one factor in the token.
    let policy: Value = serde_json::from_str(&ok(
        didmesh(&a, &["did", "policy", "--factors", "1"]),
        "did policy --factors 1",
    ))
    .unwrap();
    assert_eq!(policy["required"], 1);
    let token = ok(didmesh(&a, &["login"]), "one-factor login");
    assert!(!token.contains("approve:"), "{token}");
    assert!(!amr(&token).contains(&"mfa".to_string()));
}

#[test]
fn one_key_is_not_enough_when_two_are_required() {
    // Short challenges, so waiting for a device that never approves ends.
    let (node, _data) = node(&["--challenge-ttl", "4"]);
    let url = node.url.as_str();
    let d = dir("client-mfa-alone-");
    let (a, _did) = wallet_with_did(d.path(), "laptop", url);
    let b = d.path().join("phone.json");
    ok(didmesh(&b, &["wallet", "init"]), "wallet init (phone)");
    ok(
        didmesh(&a, &["did", "add-key", "--public-key", &main_key(&b)]),
        "add-key",
    );
    ok(
        didmesh(&a, &["did", "policy", "--factors", "2"]),
        "did policy",
    );
    let out = didmesh(&a, &["login"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let e = err(out, "login without the second device");
    assert!(stdout.starts_with("approve: "), "{stdout}");
    assert!(!stdout.contains("eyJ"), "a token was printed: {stdout}");
    assert!(e.contains("did not approve"), "{e}");
}

// ------------------------------------------------------------- SMS

/// Waits until the Twilio server holds `count` messages; the last one.
fn wait_for_message(twilio: &TwilioServer, count: usize) -> Message {
    let start = Instant::now();
    loop {
        if let Some(m) = twilio.messages().get(count - 1) {
            return m.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node sent no SMS"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_sms_code_is_the_second_factor() {
    // The testkit's server of Twilio's Messages API (checks the account
    // and password, records each message), on a runtime of its own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let twilio = rt.block_on(TwilioServer::start());
    let d = dir("client-mfa-sms-");
    let sms = d.path().join("sms.toml");
    std::fs::write(
        &sms,
        twilio.sms_file(
            "monthly_budget = 5.00\nallow_prefixes = [\"+1\"]\nper_number_hour = 10\nper_did_hour = 10\n[prices]\n\"+1\" = 0.0079\n",
        ),
    )
    .unwrap();
    let (node, _data) = node(&["--sms", sms.to_str().unwrap()]);
    let url = node.url.as_str();
    let (a, did) = wallet_with_did(d.path(), "laptop", url);

    let e = err(
        didmesh(&a, &["mfa", "add-phone", "5550100134"]),
        "a number without a country code",
    );
    assert!(e.contains("E.164"), "{e}");
    let id = ok(
        didmesh(&a, &["mfa", "add-phone", "+1 555 010-0134"]),
        "mfa add-phone",
    );
    assert_eq!(id, "phone-1");
    // Neither the ledger nor the wallet file shows the number.
    let digits = &NUMBER[1..];
    let doc = ok(didmesh(&a, &["did", "show"]), "did show");
    let log = ok(
        didmesh(&a, &["get", &format!("{url}/v1/dids/{did}/log")]),
        "the DID's log",
    );
    let file = std::fs::read_to_string(&a).unwrap();
    for (what, text) in [("document", &doc), ("log", &log), ("wallet file", &file)] {
        assert!(!text.contains(digits), "the number is in the {what}");
    }
    assert!(log.contains("\"phones\""), "{log}");
    let shown = ok(didmesh(&a, &["mfa", "show"]), "mfa show");
    assert!(shown.contains("phone-1    +1******34"), "{shown}");
    assert!(!shown.contains(digits), "{shown}");

    // A phone alone may not be a login; key + phone may.
    let e = err(
        didmesh(
            &a,
            &["did", "policy", "--factors", "1", "--factor", "phone-1"],
        ),
        "a phone-only policy",
    );
    assert!(e.contains("at least one authentication key"), "{e}");
    ok(
        didmesh(
            &a,
            &[
                "did",
                "policy",
                "--factors",
                "2",
                "--factor",
                "key-1",
                "--factor",
                "phone-1",
            ],
        ),
        "did policy key + phone",
    );

    // The right code: a token with sms and mfa.
    let mut login = Running::start(&a, &["login"]);
    let message = wait_for_message(&twilio, 1);
    assert_eq!(message.to, NUMBER);
    assert_eq!(twilio.unauthorized(), 0);
    let code = message.code().expect("no code in the message");
    login.write_stdin(&format!("{code}\n"));
    let (success, rest, stderr) = login.finish(Duration::from_secs(30));
    assert!(success, "login failed: {stderr}");
    assert!(stderr.contains("sms code sent to +1******34"), "{stderr}");
    assert!(!stderr.contains(digits), "the number was printed: {stderr}");
    let token = rest.last().expect("no token");
    let methods = amr(token);
    for m in ["swk", "sms", "mfa"] {
        assert!(methods.contains(&m.to_string()), "{methods:?}");
    }

    // A wrong code: no token, the node's reason, a non-zero exit.
    let mut login = Running::start(&a, &["login"]);
    let right = wait_for_message(&twilio, 2).code().unwrap();
    let wrong: String = right
        .bytes()
        .map(|b| char::from(b'0' + (b - b'0' + 1) % 10))
        .collect();
    login.write_stdin(&format!("{wrong}\n"));
    let (success, rest, stderr) = login.finish(Duration::from_secs(30));
    assert!(!success, "a wrong code logged in: {rest:?}");
    assert!(rest.iter().all(|l| !l.contains("eyJ")), "{rest:?}");
    assert!(stderr.contains("invalid_sms_code"), "{stderr}");

    // No code at all (stdin closed): no token either.
    let mut login = Running::start(&a, &["login"]);
    let _ = wait_for_message(&twilio, 3);
    login.write_stdin("");
    let (success, _, stderr) = login.finish(Duration::from_secs(30));
    assert!(!success);
    assert!(stderr.contains("no SMS code"), "{stderr}");
}
