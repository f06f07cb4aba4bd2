//! `didmesh client …`, `didmesh approve` and `didmesh bench oidc` against a
//! real `didmesh-node` on loopback (started by the testkit, like
//! `end_to_end.rs`; a missing binary fails the test, never skips it).
//!
//! * relying parties on the ledger: a public and a confidential client
//!   registered, seen in the DID's verified state with only a secret hash
//!   (the printed secret appears nowhere the node serves), updated (secret
//!   rotated), deleted;
//! * refusals before anything is signed: a plain-http redirect URI on a
//!   non-loopback host, a client id under another DID;
//! * `approve` refuses a pending sign-in for another DID (against a fake
//!   node, and against the real one), asks `approve? [y/N]`, and the whole
//!   page flow simulated over HTTP ends with a verified ID token;
//! * a short `bench oidc` run with a public and a confidential client.

mod support;

use didmesh_client::oidc::{self, Jwks, Pkce};
use didmesh_tests::Node;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::{err, ok};

const PASS: &str = "oidc client passphrase";
const CB: &str = "http://localhost:5000/cb";

fn node() -> (Node, tempfile::TempDir) {
    support::node("client-oidc-node-", &[])
}

/// Runs `didmesh` with `stdin` as its input.
fn didmesh_in(wallet: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = support::cmd(wallet, PASS, args)
        .env_remove("DIDMESH_CLIENT_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // The command may exit before reading (a refusal): ignore a closed pipe.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().unwrap()
}

fn didmesh(wallet: &Path, args: &[&str]) -> Output {
    didmesh_in(wallet, args, "")
}

/// A wallet with a DID registered at `url`.
fn wallet_with_did(dir: &Path, name: &str, url: &str) -> (PathBuf, String) {
    support::wallet_with_did(didmesh, dir, name, url)
}

/// `client_id: …` / `client_secret: …` lines of `client register/update`.
fn field(stdout: &str, name: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_string)
}

/// A blocking façade over reqwest for the page flow.
struct Http {
    rt: tokio::runtime::Runtime,
    c: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let c = rt.block_on(async {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap()
        });
        Http { rt, c }
    }

    fn text(&self, url: &str) -> (u16, String) {
        self.rt.block_on(async {
            let r = self.c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn get(&self, url: &str) -> (u16, Value) {
        let (s, t) = self.text(url);
        (s, serde_json::from_str(&t).unwrap_or(Value::Null))
    }

    fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self.c.post(url).json(body).send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    }

    fn post_form(&self, url: &str, form: String, basic: Option<String>) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .c
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form);
            if let Some(b) = basic {
                req = req.header("authorization", b);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    }
}

/// Everything the node serves about a DID: its resolution result and its
/// log (the op states).
fn served(http: &Http, url: &str, did: &str) -> String {
    let (s1, resolution) = http.text(&format!("{url}/1.0/identifiers/{did}"));
    let (s2, log) = http.text(&format!("{url}/v1/dids/{did}/log"));
    assert_eq!((s1, s2), (200, 200), "{resolution}\n{log}");
    format!("{resolution}\n{log}")
}

/// The clients in the DID's head state, from its log.
fn head_clients(http: &Http, url: &str, did: &str) -> Vec<Value> {
    let (_, resolution) = http.get(&format!("{url}/1.0/identifiers/{did}"));
    let head = resolution["didDocumentMetadata"]["versionId"].clone();
    let (_, log) = http.get(&format!("{url}/v1/dids/{did}/log"));
    let entry = log["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cid"] == head)
        .unwrap()
        .clone();
    entry["op"]["state"]["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn log_len(http: &Http, url: &str, did: &str) -> usize {
    let (_, log) = http.get(&format!("{url}/v1/dids/{did}/log"));
    log["ops"].as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn clients_are_registered_updated_and_deleted_with_only_a_secret_hash_on_the_ledger() {
    let (node, _data) = node();
    let url = node.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (w, did) = wallet_with_did(dir.path(), "owner", url);
    let http = Http::new();

    // A public client: no secret printed, the entry id from the name.
    let out = ok(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "My Public App",
                "--redirect-uri",
                CB,
                "--redirect-uri",
                "https://app.example/cb",
            ],
        ),
        "register public",
    );
    let public_id = field(&out, "client_id").expect(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    let suffix = did.strip_prefix("did:mesh:").unwrap();
    assert_eq!(public_id, format!("{suffix}.my-public-app"));

    // A confidential ES256 client with a chosen entry id.
    let out = ok(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Backend",
                "--redirect-uri",
                "https://backend.example/oidc/callback",
                "--confidential",
                "--id-token-alg",
                "ES256",
                "--id",
                "backend",
            ],
        ),
        "register confidential",
    );
    let conf_id = field(&out, "client_id").expect(&out);
    let secret = field(&out, "client_secret").expect(&out);
    assert_eq!(conf_id, format!("{suffix}.backend"));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(secret.len(), 43, "32 bytes base64url: {secret}");

    // The same entry id again is refused before signing.
    let e = err(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Again",
                "--redirect-uri",
                CB,
                "--id",
                "backend",
            ],
        ),
        "duplicate id",
    );
    assert!(e.contains("already has a client backend"), "{e}");

    // On the ledger: both clients, the confidential one with the hash of
    // the secret and never the secret.
    let clients = head_clients(&http, url, &did);
    assert_eq!(clients.len(), 2, "{clients:?}");
    assert_eq!(clients[0]["name"], "My Public App");
    assert!(clients[0].get("secret_hash").is_none());
    assert_eq!(clients[1]["id"], "backend");
    assert_eq!(clients[1]["id_token_alg"], "ES256");
    assert_eq!(
        clients[1]["secret_hash"],
        json!(did_core::client::secret_hash(&secret))
    );
    let everything = served(&http, url, &did);
    assert!(!everything.contains(&secret), "the secret is on the ledger");

    // `client show`: all of mine, or one by id (no wallet needed).
    let shown: Value =
        serde_json::from_str(&ok(didmesh(&w, &["client", "show", "--node", url]), "show")).unwrap();
    let ids: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [public_id.as_str(), conf_id.as_str()]);
    assert_eq!(shown[0]["type"], "public");
    assert_eq!(shown[1]["type"], "confidential");
    let nobody = dir.path().join("no-wallet.json");
    let one: Value = serde_json::from_str(&ok(
        didmesh(&nobody, &["client", "show", "--node", url, &conf_id]),
        "show one",
    ))
    .unwrap();
    assert_eq!(one["name"], "Backend");
    assert_eq!(one["owner"], did.as_str());
    assert!(!one.to_string().contains(&secret));

    // Update: new name and redirect URI, rotated secret.
    let out = ok(
        didmesh(
            &w,
            &[
                "client",
                "update",
                &conf_id,
                "--node",
                url,
                "--name",
                "Backend v2",
                "--redirect-uri",
                "https://backend.example/cb2",
                "--rotate-secret",
            ],
        ),
        "update",
    );
    let new_secret = field(&out, "client_secret").expect(&out);
    assert_ne!(new_secret, secret);
    let clients = head_clients(&http, url, &did);
    assert_eq!(clients[1]["name"], "Backend v2");
    assert_eq!(
        clients[1]["redirect_uris"],
        json!(["https://backend.example/cb2"])
    );
    assert_eq!(
        clients[1]["secret_hash"],
        json!(did_core::client::secret_hash(&new_secret))
    );
    let everything = served(&http, url, &did);
    assert!(!everything.contains(&new_secret) && !everything.contains(&secret));

    // Delete.
    ok(
        didmesh(&w, &["client", "delete", &public_id, "--node", url]),
        "delete",
    );
    let clients = head_clients(&http, url, &did);
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["id"], "backend");
    let e = err(
        didmesh(&nobody, &["client", "show", "--node", url, &public_id]),
        "show deleted",
    );
    assert!(e.contains("has no client my-public-app"), "{e}");
    let e = err(
        didmesh(&w, &["client", "delete", &public_id, "--node", url]),
        "delete twice",
    );
    assert!(e.contains("has no client"), "{e}");
}

#[test]
fn bad_redirect_uris_and_foreign_client_ids_are_refused_before_anything_is_signed() {
    let (node, _data) = node();
    let url = node.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_did) = wallet_with_did(dir.path(), "alice", url);
    let (mallory, mallory_did) = wallet_with_did(dir.path(), "mallory", url);
    let http = Http::new();
    let before = log_len(&http, url, &alice_did);

    // http on a non-loopback host: an eavesdropper would read the code.
    for bad in [
        "http://app.example/cb",
        "https://app.example/cb#frag",
        "http://localhost.evil.example/cb",
    ] {
        let e = err(
            didmesh(
                &alice,
                &[
                    "client",
                    "register",
                    "--node",
                    url,
                    "--name",
                    "App",
                    "--redirect-uri",
                    bad,
                ],
            ),
            bad,
        );
        assert!(e.contains("--redirect-uri") && e.contains(bad), "{e}");
    }
    let e = err(
        didmesh(
            &alice,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "App",
                "--redirect-uri",
                "http://app.example/cb",
            ],
        ),
        "http",
    );
    assert!(e.contains("http is allowed only"), "{e}");
    assert_eq!(log_len(&http, url, &alice_did), before, "nothing submitted");

    // Alice's client cannot be changed or deleted from Mallory's wallet.
    let out = ok(
        didmesh(
            &alice,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Alice app",
                "--redirect-uri",
                CB,
            ],
        ),
        "register",
    );
    let id = field(&out, "client_id").unwrap();
    let mallory_len = log_len(&http, url, &mallory_did);
    for args in [
        vec![
            "client",
            "update",
            &id,
            "--node",
            url,
            "--redirect-uri",
            "https://evil.example/cb",
        ],
        vec!["client", "update", &id, "--node", url, "--rotate-secret"],
        vec!["client", "delete", &id, "--node", url],
    ] {
        let e = err(didmesh(&mallory, &args), "foreign client");
        assert!(
            e.contains("belongs to") && e.contains(&alice_did) && e.contains(&mallory_did),
            "{e}"
        );
    }
    assert_eq!(log_len(&http, url, &mallory_did), mallory_len);
    assert_eq!(
        head_clients(&http, url, &alice_did)[0]["redirect_uris"],
        json!([CB])
    );
}

/// A fake node that answers one pending approval (for `did`, with a
/// challenge naming this server's own authority) and records whether a
/// signature was ever posted.
fn fake_approval_node(did: &'static str) -> (String, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let posted = Arc::new(AtomicBool::new(false));
    let seen = posted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let now = didmesh_tests::now();
            let challenge = did_core::login::LoginChallenge {
                domain: format!("127.0.0.1:{port}"),
                did: did.to_string(),
                network_id: "mesh-fake".into(),
                nonce: "00ff".into(),
                audience: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.app".into(),
                issued_at: now,
                expires_at: now + 120,
            };
            let body = if head.starts_with("POST") {
                seen.store(true, Ordering::SeqCst);
                json!({"approved": true})
            } else if head.starts_with("GET /.well-known/openid-configuration") {
                json!({"issuer": format!("http://127.0.0.1:{port}"), "didmesh_network_id": "mesh-fake"})
            } else {
                json!({
                    "did": did,
                    "client_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.app",
                    "client_name": "Totally Legit",
                    "redirect_uri": "https://app.example/cb",
                    "message": challenge.message(),
                    "nonce": "00ff",
                    "expires_at": now + 120,
                })
            }
            .to_string();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://127.0.0.1:{port}"), posted)
}

#[test]
fn approve_refuses_a_pending_sign_in_for_another_did() {
    let (node, _data) = node();
    let dir = tempfile::tempdir().unwrap();
    let (w, _did) = wallet_with_did(dir.path(), "me", &node.url);
    let victim = "did:mesh:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let (fake, posted) = fake_approval_node(victim);
    let e = err(
        didmesh(&w, &["approve", "ABCD-EFGH", "--node", &fake, "--yes"]),
        "approve for another DID",
    );
    assert!(
        e.contains("refusing to sign") && e.contains(victim) && e.contains("not this wallet's DID"),
        "{e}"
    );
    assert!(!posted.load(Ordering::SeqCst), "a signature was posted");
    // A code that is not a code never reaches any node.
    let e = err(
        didmesh(&w, &["approve", "../../v1/ops", "--node", &fake, "--yes"]),
        "bad code",
    );
    assert!(e.contains("not a sign-in code"), "{e}");
}

/// Starts an authorization request at `url` and reads the sign-in page.
fn authorize(
    http: &Http,
    url: &str,
    client_id: &str,
    state: &str,
    nonce: &str,
    pkce: &Pkce,
) -> oidc::SigninRequest {
    let path = oidc::authorize_path(client_id, CB, state, nonce, pkce);
    let (status, page) = http.text(&format!("{url}{path}"));
    assert_eq!(status, 200, "{page}");
    oidc::signin_request_from_html(&page).unwrap()
}

#[test]
fn a_browser_sign_in_approved_from_the_cli_ends_with_a_verified_id_token() {
    let (node, _data) = node();
    let url = node.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (w, did) = wallet_with_did(dir.path(), "user", url);
    let (other, other_did) = wallet_with_did(dir.path(), "other", url);
    let out = ok(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Approve Test App",
                "--redirect-uri",
                CB,
            ],
        ),
        "register",
    );
    let client_id = field(&out, "client_id").unwrap();
    let http = Http::new();
    let (_, discovery) = http.get(&format!("{url}/.well-known/openid-configuration"));
    let issuer = discovery["issuer"].as_str().unwrap().to_string();

    // The page: authorize, then "use my didmesh wallet" for `did`.
    let (state, nonce, pkce) = ("st-1", "nonce-1", Pkce::new());
    let req = authorize(&http, url, &client_id, state, nonce, &pkce);
    assert_eq!(req.client_name, "Approve Test App");
    let (status, pending) = http.post(
        &format!("{}{}", req.node_url, oidc::SIGNIN_PENDING_PATH),
        &json!({"request": req.request, "did": did}),
    );
    assert_eq!(status, 200, "{pending}");
    let code = pending["code"].as_str().unwrap().to_string();
    let poll = format!(
        "{}{}/{}",
        req.node_url,
        oidc::SIGNIN_PENDING_PATH,
        pending["pending_id"].as_str().unwrap()
    );
    let waiting = || http.get(&poll).1["status"] == "waiting";

    // Someone else's wallet is sent the code: it refuses, nothing signed.
    let e = err(
        didmesh(&other, &["approve", &code, "--node", url, "--yes"]),
        "approve with another DID's wallet",
    );
    assert!(
        e.contains("refusing to sign") && e.contains(&other_did),
        "{e}"
    );
    assert!(waiting());

    // The right wallet, but the user answers no (or nothing).
    for answer in ["n\n", "", "yes please\n"] {
        let o = didmesh_in(&w, &["approve", &code, "--node", url], answer);
        let e = err(o, "approve answered no");
        assert!(e.contains("approve? [y/N]"), "{e}");
        assert!(e.contains("not approved"), "{e}");
        assert!(waiting());
    }

    // Yes: what is shown, then the page's poll gets the redirect.
    let o = didmesh_in(&w, &["approve", &code.to_lowercase(), "--node", url], "y\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = String::from_utf8(o.stderr).unwrap();
    assert!(
        shown.contains(&format!(
            "approving sign-in to Approve Test App ({client_id}) -> {CB} as {did}"
        )),
        "{shown}"
    );
    let (_, status) = http.get(&poll);
    assert_eq!(status["status"], "approved", "{status}");
    let redirect = status["redirect"].as_str().unwrap();
    let auth_code = oidc::code_from_redirect(redirect, CB, state, &issuer).unwrap();

    // A second approval of the same code is refused by the node.
    let e = err(
        didmesh(&w, &["approve", &code, "--node", url, "--yes"]),
        "approve twice",
    );
    assert!(e.contains("HTTP 4"), "{e}");

    // The relying party redeems the code (public client: PKCE).
    let form = oidc::form(&[
        ("grant_type", "authorization_code"),
        ("code", &auth_code),
        ("redirect_uri", CB),
        ("client_id", &client_id),
        ("code_verifier", &pkce.verifier),
    ]);
    let (status, tokens) = http.post_form(&format!("{url}{}", oidc::OIDC_TOKEN_PATH), form, None);
    assert_eq!(status, 200, "{tokens}");
    // This node's own JWKS: discovery names the issuer's, which this test
    // network (issuer https://didmesh.local) does not serve.
    let (_, jwks) = http.get(&format!("{url}/.well-known/jwks.json"));
    let claims = Jwks::from_json(&jwks)
        .verify_id_token(
            tokens["id_token"].as_str().unwrap(),
            &issuer,
            &client_id,
            nonce,
        )
        .unwrap();
    assert_eq!(claims.sub, did);
}

/// The last stdout line of `bench`: its JSON report.
fn bench_report(out: &str) -> Value {
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn bench_oidc_runs_full_code_flows_for_public_and_confidential_clients() {
    let (node, _data) = node();
    let url = node.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (w, _did) = wallet_with_did(dir.path(), "rp-owner", url);
    let public = ok(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Bench public",
                "--redirect-uri",
                CB,
            ],
        ),
        "register public",
    );
    let confidential = ok(
        didmesh(
            &w,
            &[
                "client",
                "register",
                "--node",
                url,
                "--name",
                "Bench confidential",
                "--redirect-uri",
                CB,
                "--confidential",
                "--id-token-alg",
                "EdDSA",
            ],
        ),
        "register confidential",
    );
    let public_id = field(&public, "client_id").unwrap();
    let conf_id = field(&confidential, "client_id").unwrap();
    let secret = field(&confidential, "client_secret").unwrap();
    let nobody = dir.path().join("unused.json");
    let common = [
        "--redirect-uri",
        CB,
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--dids",
        "2",
    ];
    let mut args = vec!["bench", "oidc", "--node", url, "--client-id", &public_id];
    args.extend(common);
    let r = bench_report(&ok(didmesh(&nobody, &args), "bench oidc public"));
    assert_eq!(r["bench"], "oidc");
    assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");

    let mut args = vec![
        "bench",
        "oidc",
        "--node",
        url,
        "--client-id",
        &conf_id,
        "--client-secret",
        &secret,
    ];
    args.extend(common);
    let r = bench_report(&ok(didmesh(&nobody, &args), "bench oidc confidential"));
    assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");

    // A wrong secret: every flow fails at the token endpoint, counted so.
    let mut args = vec![
        "bench",
        "oidc",
        "--node",
        url,
        "--client-id",
        &conf_id,
        "--client-secret",
        "wrong",
    ];
    args.extend(common);
    let r = bench_report(&ok(didmesh(&nobody, &args), "bench oidc wrong secret"));
    assert_eq!(r["ok"], 0, "{r}");
    assert!(r["errors_by_kind"]["token"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["first_error"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{r}"
    );
}
