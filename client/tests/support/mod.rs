//! What the CLI tests (`end_to_end.rs`, `mfa.rs`, `oidc_clients.rs`)
//! share: a real `didmesh-node` on loopback (the testkit's; a missing
//! binary fails the test, it never passes by skipping), the `didmesh`
//! binary run on a test wallet, and what it printed.

#![allow(dead_code)] // each test file uses its own part of this module

use didmesh_tests::{start_node, Node};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A node (no p2p: replication is not under test) with `extra` arguments
/// on a temporary folder named `prefix…`, removed when dropped.
pub fn node(prefix: &str, extra: &[&str]) -> (Node, tempfile::TempDir) {
    let data = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let mut args = vec!["--no-p2p"];
    args.extend_from_slice(extra);
    (start_node(data.path(), &args), data)
}

/// `didmesh --wallet WALLET ARGS…` with the wallet's passphrase `pass`, the
/// fast test KDF and no `DIDMESH_NODE` from the caller's environment.
pub fn cmd(wallet: &Path, pass: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_didmesh"));
    c.arg("--wallet")
        .arg(wallet)
        .args(args)
        .env("DIDMESH_PASSPHRASE", pass)
        .env("DIDMESH_KDF_FAST", "1")
        .env_remove("DIDMESH_NODE");
    c
}

/// [`cmd`] run to the end with no input.
pub fn run(wallet: &Path, pass: &str, args: &[&str]) -> Output {
    cmd(wallet, pass, args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The trimmed stdout of a command that must succeed.
pub fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// The stderr of a command that must fail.
pub fn err(o: Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr).unwrap()
}

/// A wallet `dir/name.json` with a DID registered at `url`, both made by
/// `didmesh` (the test file's way of running the binary).
pub fn wallet_with_did(
    didmesh: fn(&Path, &[&str]) -> Output,
    dir: &Path,
    name: &str,
    url: &str,
) -> (PathBuf, String) {
    let w = dir.join(format!("{name}.json"));
    ok(didmesh(&w, &["wallet", "init"]), "wallet init");
    let did = ok(didmesh(&w, &["did", "create", "--node", url]), "did create");
    (w, did)
}
