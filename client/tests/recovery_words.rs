//! `didmesh wallet init --recovery-words`: the 32 words the browser sign-in
//! page shows for a new DID's recovery key become a CLI wallet holding that
//! key, and `did recover` with it takes the DID back.
//!
//! The word lists are checked against the page's own source
//! (node/src/oidc/page/signin.js), so the two can never drift apart. The
//! end-to-end test starts the real `didmesh-node` through the testkit
//! (`cargo build -p didmesh-node` first); a missing binary fails it.

use did_core::PublicKey;
use didmesh_client::words::{self, PGP_EVEN, PGP_ODD};
use didmesh_tests::{issuer, start_node};
use ed25519_dalek::SigningKey;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PASS: &str = "recovery words passphrase";
/// RFC 8032 §7.1 test 1: secret key (seed) and its public key.
const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const SEED_PUBLIC_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn hex32(s: &str) -> [u8; 32] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("client-words-")
        .tempdir()
        .unwrap()
}

/// `didmesh --wallet W ARGS`, with `stdin` written to its standard input.
fn didmesh(wallet: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_didmesh"))
        .arg("--wallet")
        .arg(wallet)
        .args(args)
        .env("DIDMESH_PASSPHRASE", PASS)
        .env("DIDMESH_KDF_FAST", "1")
        .env_remove("DIDMESH_NODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(o: Output, what: &str) -> (String, String) {
    let (out, err) = (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    );
    assert!(o.status.success(), "{what} failed: {err}\n{out}");
    (out.trim().to_string(), err)
}

fn refused(o: Output, what: &str) -> String {
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(
        !o.status.success(),
        "{what} should fail: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// The words of a JavaScript template literal `const NAME = \`…\`` in
/// signin.js, split as the page splits them (`.trim().split(/\s+/)`).
fn js_list(js: &str, name: &str) -> Vec<String> {
    let start = format!("const {name} = `");
    let at = js
        .find(&start)
        .unwrap_or_else(|| panic!("signin.js no longer defines {start}…`"));
    let body = &js[at + start.len()..];
    let end = body.find('`').expect("unterminated template literal");
    assert!(
        body[end..].starts_with("`.trim().split(/\\s+/)"),
        "signin.js splits {name} differently now: update words.rs and this test"
    );
    body[..end].split_whitespace().map(str::to_string).collect()
}

#[test]
fn rust_lists_are_the_sign_in_pages_lists() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node/src/oidc/page/signin.js");
    let js = std::fs::read_to_string(&path).unwrap();
    assert_eq!(js_list(&js, "PGP_EVEN"), PGP_EVEN.to_vec(), "PGP_EVEN");
    assert_eq!(js_list(&js, "PGP_ODD"), PGP_ODD.to_vec(), "PGP_ODD");
    // and the page encodes as `words::encode` does: byte i from the even
    // list at even i, from the odd list at odd i
    assert!(
        js.contains("Array.from(seed, (b, i) => (i % 2 === 0 ? PGP_EVEN : PGP_ODD)[b])"),
        "seedToWords in signin.js changed: check it still matches words::encode"
    );
}

#[test]
fn words_of_a_seed_make_the_wallet_of_that_seed() {
    let dir = tmp();
    let expected = PublicKey::from_bytes(&hex32(SEED_PUBLIC_HEX)).unwrap();
    let words = words::encode(&hex32(SEED_HEX));
    assert_eq!(words.len(), 32);

    // On the command line, one space between words.
    let w = dir.path().join("arg.json");
    let (out, err) = ok(
        didmesh(
            &w,
            &["wallet", "init", "--recovery-words", &words.join(" ")],
            "",
        ),
        "init --recovery-words WORDS",
    );
    assert_eq!(out, expected.did_key());
    assert!(
        err.contains(&format!("recovery key {expected}")) && err.contains("rotation_keys[0]"),
        "{err}"
    );

    // On stdin, as pasted from the page: numbered, one per line, odd case.
    let pasted: String = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let w = if i % 3 == 0 {
                w.to_uppercase()
            } else {
                w.to_string()
            };
            format!("{}. {w}\r\n", i + 1)
        })
        .collect();
    let w = dir.path().join("stdin.json");
    let (out, _) = ok(
        didmesh(&w, &["wallet", "init", "--recovery-words", "-"], &pasted),
        "init --recovery-words -",
    );
    assert_eq!(out, expected.did_key());
    let (show, _) = ok(didmesh(&w, &["wallet", "show", "--json"], ""), "show");
    assert!(show.contains(&expected.to_string()), "{show}");

    // the same key as --seed-hex gives
    let w = dir.path().join("hex.json");
    let (out, _) = ok(
        didmesh(&w, &["wallet", "init", "--seed-hex", SEED_HEX], ""),
        "init --seed-hex",
    );
    assert_eq!(out, expected.did_key());
}

#[test]
fn wrong_words_are_refused_with_a_reason() {
    let dir = tmp();
    let w = dir.path().join("w.json");
    let good = words::encode(&hex32(SEED_HEX));
    let init = |words: &[&str]| {
        didmesh(
            &w,
            &["wallet", "init", "--recovery-words", &words.join(" ")],
            "",
        )
    };

    // Word 5 from the odd list (e.g. word 4 written twice, or swapped).
    let mut swapped = good.clone();
    swapped.swap(4, 5);
    let e = refused(init(&swapped), "swapped words");
    assert!(
        e.contains(&format!("word 5 '{}' is from the odd list", good[5]))
            && e.contains("swapped or missing"),
        "{e}"
    );

    // A dropped word: word 5 is the first at a wrong position, and the count says so.
    let mut dropped = good.clone();
    dropped.remove(4);
    let e = refused(init(&dropped), "a dropped word");
    assert!(
        e.contains("word 5 ") && e.contains("swapped or missing") && e.contains("31 words given"),
        "{e}"
    );

    // A typo: the closest word of the right list is suggested.
    let mut typo: Vec<&str> = good.clone();
    let misspelt = format!("{}x", &good[6][1..]);
    typo[6] = &misspelt;
    let e = refused(init(&typo), "a typo");
    assert!(
        e.contains(&format!("word 7 '{misspelt}' is not a recovery word"))
            && e.contains(&format!("did you mean '{}'", good[6])),
        "{e}"
    );

    // Not the PGP list at all (a BIP-39 phrase): no guess.
    let e = refused(init(&["zoo"; 32]), "foreign words");
    assert!(e.contains("word 1 'zoo' is not a recovery word"), "{e}");

    // Too many / too few words, and none.
    let mut long = good.clone();
    long.push("aardvark");
    let e = refused(init(&long), "33 words");
    assert!(e.contains("expected 32 recovery words, got 33"), "{e}");
    let e = refused(init(&good[..30]), "30 words");
    assert!(e.contains("expected 32 recovery words, got 30"), "{e}");
    let e = refused(
        didmesh(&w, &["wallet", "init", "--recovery-words", "-"], "\n"),
        "empty stdin",
    );
    assert!(e.contains("no recovery words"), "{e}");

    // Not with --seed-hex too.
    let e = refused(
        didmesh(
            &w,
            &[
                "wallet",
                "init",
                "--seed-hex",
                SEED_HEX,
                "--recovery-words",
                "-",
            ],
            "",
        ),
        "both sources",
    );
    assert!(e.contains("cannot be used with"), "{e}");

    // Nothing was written by any of these.
    assert!(!w.exists());
}

/// A DID whose priority-0 rotation key is the key behind the words (as the
/// sign-in page registers it: [recovery key, browser key]) is taken back
/// with a wallet made from the words, after the daily key is lost.
#[test]
fn a_wallet_from_the_words_recovers_the_did() {
    let data = tmp();
    let node = start_node(data.path(), &["--no-p2p"]);
    let url = node.url.as_str();
    let dir = tmp();
    let (daily, from_words, fresh) = (
        dir.path().join("daily.json"),
        dir.path().join("words.json"),
        dir.path().join("fresh.json"),
    );
    // A fresh seed, as the page draws it.
    let seed: [u8; 32] = rand::random();
    let recovery_key = PublicKey::from(SigningKey::from_bytes(&seed).verifying_key());
    ok(didmesh(&daily, &["wallet", "init"], ""), "daily wallet");
    let did = ok(
        didmesh(
            &daily,
            &[
                "did",
                "create",
                "--node",
                url,
                "--recovery-key",
                &recovery_key.to_string(),
            ],
            "",
        ),
        "did create --recovery-key",
    )
    .0;

    // The browser is lost; the user types the words into a new wallet.
    let typed = words::encode(&seed).join("\n");
    let (out, _) = ok(
        didmesh(
            &from_words,
            &["wallet", "init", "--recovery-words", "-"],
            &typed,
        ),
        "wallet from the words",
    );
    assert_eq!(out, recovery_key.did_key());
    let fresh_key = ok(didmesh(&fresh, &["wallet", "init"], ""), "fresh wallet")
        .0
        .trim_start_matches("did:key:")
        .to_string();
    let (out, _) = ok(
        didmesh(
            &from_words,
            &[
                "did",
                "recover",
                "--node",
                url,
                "--did",
                &did,
                "--new-key",
                &fresh_key,
            ],
            "",
        ),
        "did recover with the wallet from the words",
    );
    assert_eq!(out, did);
    let (token, _) = ok(
        didmesh(&fresh, &["login", "--node", url, "--did", &did], ""),
        "login with the new key",
    );
    assert_eq!(issuer::claims(&token)["sub"], did.as_str());
    refused(
        didmesh(&daily, &["login"], ""),
        "the lost daily key's login",
    );
    drop(node);
}
