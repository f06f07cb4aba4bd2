//! The `didmesh` binary against a real `didmesh-node` on loopback:
//! init → did create → did show → login → add-key → rotate → login →
//! get → deactivate → login refused, plus the phishing check on a real
//! challenge, a did:key login and a short bench run.
//!
//! The node is the real binary, started by the testkit (`didmesh-tests`):
//! `$DIDMESH_BIN_DIR/didmesh-node`, or `target/debug/didmesh-node`
//! (`cargo build -p didmesh-node`). A missing binary fails the test with
//! that hint; it never passes by skipping.

mod support;

use didmesh_tests::issuer;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use support::{err, ok};

const PASS: &str = "end-to-end passphrase";

/// A node (no p2p: replication is not under test) on a temporary folder,
/// removed after the node is killed.
fn node() -> (didmesh_tests::Node, tempfile::TempDir) {
    support::node("client-e2e-node-", &[])
}

fn didmesh(wallet: &Path, args: &[&str]) -> Output {
    support::run(wallet, PASS, args)
}

fn auth_keys(resolution: &Value) -> Vec<String> {
    resolution["didDocument"]["authentication"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|vm| vm["publicKeyMultibase"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn wallet_lifecycle_against_a_real_node() {
    let (node, _data) = node();
    let dir = tempfile::Builder::new()
        .prefix("client-e2e-")
        .tempdir()
        .unwrap();
    let w = dir.path().join("wallet.json");
    let url = node.url.as_str();

    let did_key = ok(didmesh(&w, &["wallet", "init"]), "wallet init");
    assert!(did_key.starts_with("did:key:z6Mk"));
    let key1 = did_key.trim_start_matches("did:key:").to_string();

    let did = ok(didmesh(&w, &["did", "create", "--node", url]), "did create");
    assert!(did.starts_with("did:mesh:") && !did.contains('\n'), "{did}");
    let refused = err(
        didmesh(&w, &["did", "create", "--node", url]),
        "second did create",
    );
    assert!(refused.contains("already controls"), "{refused}");

    // --node is remembered from here on
    let shown: Value =
        serde_json::from_str(&ok(didmesh(&w, &["did", "show"]), "did show")).unwrap();
    assert_eq!(shown["didDocument"]["id"], did.as_str());
    assert_eq!(auth_keys(&shown), vec![key1.clone()]);
    let v1 = shown["didDocumentMetadata"]["versionId"]
        .as_str()
        .unwrap()
        .to_string();

    let token = ok(didmesh(&w, &["login", "--audience", "home-api"]), "login");
    let c = issuer::claims(&token);
    assert_eq!(c["sub"], did.as_str());
    assert_eq!(c["aud"], "home-api");

    // The node calls itself 127.0.0.1:<port>; reached as localhost the
    // domain line does not match, and the wallet must not sign.
    let phish = err(
        didmesh(
            &w,
            &[
                "login",
                "--node",
                &format!("http://localhost:{}", node.port),
            ],
        ),
        "login via another name",
    );
    assert!(
        phish.contains("refusing to sign") && phish.contains("phishing"),
        "{phish}"
    );

    let vm = ok(
        didmesh(
            &w,
            &[
                "did",
                "add-key",
                "--name",
                "laptop",
                "--relationship",
                "assertion",
            ],
        ),
        "add-key",
    );
    assert_eq!(vm, format!("{did}#laptop"));
    let shown: Value =
        serde_json::from_str(&ok(didmesh(&w, &["did", "show"]), "did show")).unwrap();
    assert_ne!(
        shown["didDocumentMetadata"]["versionId"].as_str().unwrap(),
        v1
    );
    let assertion: Vec<&str> = shown["didDocument"]["assertionMethod"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        assertion.contains(&format!("{did}#laptop").as_str()),
        "{assertion:?}"
    );
    let dup = err(
        didmesh(&w, &["did", "add-key", "--name", "laptop"]),
        "add-key with a taken name",
    );
    assert!(dup.contains("already exists"), "{dup}");

    let new_did_key = ok(didmesh(&w, &["did", "rotate"]), "rotate");
    let key_new = new_did_key.trim_start_matches("did:key:").to_string();
    assert_ne!(key_new, key1);
    let shown: Value =
        serde_json::from_str(&ok(didmesh(&w, &["did", "show"]), "did show")).unwrap();
    assert_eq!(auth_keys(&shown), vec![key_new.clone()]);
    assert!(
        !shown.to_string().contains(&key1),
        "the old key is still in the document"
    );
    assert!(
        shown.to_string().contains("#laptop"),
        "add-key's key was dropped by the rotation"
    );
    let show = ok(didmesh(&w, &["wallet", "show"]), "wallet show");
    assert!(show.contains("retired") && show.contains(&key1), "{show}");

    let token = ok(didmesh(&w, &["login"]), "login after rotate");
    assert_eq!(issuer::claims(&token)["sub"], did.as_str());

    // get: logs in, then GETs with the bearer token
    let status = ok(didmesh(&w, &["get", &format!("{url}/v1/status")]), "get");
    assert!(
        serde_json::from_str::<Value>(&status).unwrap()["did_count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let missing = err(
        didmesh(&w, &["get", &format!("{url}/no/such/path")]),
        "get of a 404",
    );
    assert!(missing.contains("404"), "{missing}");

    ok(didmesh(&w, &["did", "deactivate", "--yes"]), "deactivate");
    let shown: Value =
        serde_json::from_str(&ok(didmesh(&w, &["did", "show", &did]), "did show")).unwrap();
    assert_eq!(shown["didDocumentMetadata"]["deactivated"], true);
    let refused = err(didmesh(&w, &["login"]), "login after deactivate");
    assert!(
        refused.starts_with("error: ") && refused.contains("HTTP 403"),
        "{refused}"
    );
    let refused = err(didmesh(&w, &["did", "rotate"]), "rotate after deactivate");
    assert!(refused.contains("deactivated"), "{refused}");

    // A wallet with no DID logs in with its did:key.
    let w2 = dir.path().join("keyonly.json");
    let did_key2 = ok(didmesh(&w2, &["wallet", "init"]), "wallet init");
    let token = ok(didmesh(&w2, &["login", "--node", url]), "did:key login");
    assert_eq!(issuer::claims(&token)["sub"], did_key2.as_str());

    // Errors from the node read `error: <reason> (<code>, HTTP <status>)`.
    let unknown = err(
        didmesh(
            &w2,
            &["did", "show", "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        ),
        "show of an unknown DID",
    );
    assert!(unknown.contains("(notFound, HTTP 404)"), "{unknown}");

    // The load generator, briefly.
    let out = ok(
        didmesh(
            &w2,
            &[
                "bench",
                "login",
                "--node",
                url,
                "--concurrency",
                "2",
                "--dids",
                "2",
                "--duration",
                "0.5",
            ],
        ),
        "bench login",
    );
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(last["ok"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(last["errors"], 0, "{out}");
}

/// The recovery flow of SECURITY.md with the CLI: a DID created with a
/// recovery key held in another wallet; the daily key is stolen (a copy of
/// the wallet file and its passphrase) and the thief rotates the DID to
/// its own key; `did recover` with the recovery wallet gives the DID to a
/// fresh wallet, and the thief can no longer log in.
#[test]
fn a_recovery_key_takes_a_stolen_did_back() {
    let (node, _data) = node();
    let url = node.url.as_str();
    let dir = tempfile::Builder::new()
        .prefix("client-recover-")
        .tempdir()
        .unwrap();
    let (daily, recovery, stolen, fresh) = (
        dir.path().join("daily.json"),
        dir.path().join("recovery.json"),
        dir.path().join("stolen.json"),
        dir.path().join("fresh.json"),
    );
    let key_of = |w: &Path| {
        ok(didmesh(w, &["wallet", "init"]), "wallet init")
            .trim_start_matches("did:key:")
            .to_string()
    };
    key_of(&daily);
    let recovery_key = key_of(&recovery);
    let fresh_key = key_of(&fresh);
    let did = ok(
        didmesh(
            &daily,
            &[
                "did",
                "create",
                "--node",
                url,
                "--recovery-key",
                &recovery_key,
            ],
        ),
        "did create --recovery-key",
    );
    // The thief copies the wallet and rotates the DID to a key of its own.
    std::fs::copy(&daily, &stolen).unwrap();
    ok(didmesh(&stolen, &["did", "rotate"]), "thief's rotate");
    ok(didmesh(&stolen, &["login"]), "the thief can log in now");
    let refused = err(didmesh(&daily, &["login"]), "owner's login after the theft");
    assert!(!refused.is_empty());
    let recover = |wallet: &Path, new_key: &str| {
        let args = ["did", "recover", "--node", url, "--did", &did];
        didmesh(wallet, &[&args[..], &["--new-key", new_key]].concat())
    };
    // The owner recovers with the offline recovery wallet.
    let out = ok(recover(&recovery, &fresh_key), "did recover");
    assert_eq!(out, did);
    let token = ok(
        didmesh(&fresh, &["login", "--node", url, "--did", &did]),
        "login with the fresh key",
    );
    assert_eq!(issuer::claims(&token)["sub"], did.as_str());
    err(
        didmesh(&stolen, &["login"]),
        "the thief's login after the recovery",
    );
    err(didmesh(&daily, &["login"]), "the stolen daily key's login");
    // and the thief cannot undo it: its wallet's key is no rotation key any more
    err(
        didmesh(&stolen, &["did", "rotate"]),
        "the thief's second rotate",
    );
    // A wallet whose key is not the recovery key cannot recover.
    let e = err(
        recover(&fresh, &recovery_key),
        "recover without the recovery key",
    );
    assert!(e.contains("priority-0"), "{e}");
}
