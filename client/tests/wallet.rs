//! The wallet at rest, through the library and through the `didmesh`
//! binary (no node needed).

use didmesh_client::wallet::{KdfCost, Wallet, WalletError};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

const PASS: &str = "correct horse battery staple";
/// RFC 8032 §7.1 test 1 secret key; its public key is known.
const SEED_HEX: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const SEED_PUBLIC_HEX: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("client-wallet-")
        .tempdir()
        .unwrap()
}

fn didmesh(wallet: &Path, pass: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_didmesh"))
        .arg("--wallet")
        .arg(wallet)
        .args(args)
        .env("DIDMESH_PASSPHRASE", pass)
        .env("DIDMESH_KDF_FAST", "1")
        .env_remove("DIDMESH_NODE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn round_trip_with_the_default_cost() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let created =
        Wallet::create(&path, PASS.as_bytes(), None, KdfCost::default(), false, 1).unwrap();
    let t0 = Instant::now();
    let opened = Wallet::open(&path, PASS.as_bytes()).unwrap();
    let kdf_ms = t0.elapsed().as_millis();
    assert_eq!(opened.main_public(), created.main_public());
    assert_eq!(opened.main_key().to_bytes(), created.main_key().to_bytes());
    assert_eq!(opened.public(), created.public());
    // The cost is meant to be noticeable but not annoying.
    eprintln!("argon2id default cost: {kdf_ms} ms");
    assert!(kdf_ms < 3000, "KDF took {kdf_ms} ms");
}

#[test]
fn wrong_passphrase_is_refused() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    Wallet::create(&path, PASS.as_bytes(), None, KdfCost::fast(), false, 1).unwrap();
    let err = Wallet::open(&path, b"not the passphrase").unwrap_err();
    assert!(matches!(err, WalletError::WrongPassphrase(_)), "{err}");

    // and through the CLI: clear message, non-zero exit
    let out = didmesh(
        &path,
        "not the passphrase",
        &["did", "create", "--node", "http://127.0.0.1:9"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_file_holds_no_plain_seed_and_is_private() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let out = didmesh(&path, PASS, &["wallet", "init", "--seed-hex", SEED_HEX]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.to_lowercase().contains(SEED_HEX));
    // nor the seed in base64 / base64url, nor raw
    use base64::Engine as _;
    let seed: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&SEED_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(&seed)));
    assert!(!text.contains(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&seed)));
    assert!(!std::fs::read(&path)
        .unwrap()
        .windows(32)
        .any(|w| w == seed.as_slice()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "didmesh-wallet");
    assert_eq!(v["kdf"]["alg"], "argon2id");
    assert_eq!(v["cipher"]["alg"], "xchacha20poly1305");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // no temporary file left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn seed_hex_restores_the_same_did_key() {
    let dir = tmp();
    let a = didmesh(
        &dir.path().join("a.json"),
        PASS,
        &["wallet", "init", "--seed-hex", SEED_HEX],
    );
    let b = didmesh(
        &dir.path().join("b.json"),
        "another passphrase",
        &["wallet", "init", "--seed-hex", SEED_HEX],
    );
    assert!(a.status.success() && b.status.success());
    assert_eq!(stdout(&a), stdout(&b));
    let public: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&SEED_PUBLIC_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let expected = did_core::PublicKey::from_bytes(&public.try_into().unwrap())
        .unwrap()
        .did_key();
    assert_eq!(stdout(&a), expected);
    assert!(expected.starts_with("did:key:z6Mk"));

    // a fresh key differs
    let c = didmesh(&dir.path().join("c.json"), PASS, &["wallet", "init"]);
    assert_ne!(stdout(&c), stdout(&a));

    // wallet show is public and needs no passphrase
    let show = Command::new(env!("CARGO_BIN_EXE_didmesh"))
        .args(["wallet", "show", "--wallet"])
        .arg(dir.path().join("a.json"))
        .env_remove("DIDMESH_PASSPHRASE")
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains(&expected));
    assert!(!stdout(&show).contains(SEED_HEX));
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let first = didmesh(&path, PASS, &["wallet", "init"]);
    assert!(first.status.success());
    let again = didmesh(&path, PASS, &["wallet", "init"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let forced = didmesh(&path, PASS, &["wallet", "init", "--force"]);
    assert!(forced.status.success());
    assert_ne!(stdout(&first), stdout(&forced));
    // the replaced wallet is kept as a backup, not deleted
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".bak-")
        })
        .count();
    assert_eq!(backups, 1);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let out = didmesh(&path, PASS, &["wallet", "init", "--seed-hex", "xyz"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: --seed-hex"),
        "{}",
        stderr(&out)
    );
    let short = didmesh(&path, "short", &["wallet", "init"]);
    assert!(!short.status.success());
    assert!(stderr(&short).contains("at least 8"));
    let missing = didmesh(&path, PASS, &["wallet", "show"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("didmesh wallet init"));
    std::fs::write(&path, b"{not json").unwrap();
    let garbage = didmesh(&path, PASS, &["login", "--node", "http://127.0.0.1:9"]);
    assert!(!garbage.status.success());
    assert!(
        stderr(&garbage).contains("not valid"),
        "{}",
        stderr(&garbage)
    );
}
