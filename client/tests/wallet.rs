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

// ---------------------------------------------------------------------
// Attacks on the wallet file (each of these failed on format version 1).
// ---------------------------------------------------------------------

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// Editing the unencrypted `public.node` used to redirect the next login to
/// the attacker's node. Now the whole public section is associated data.
#[test]
fn an_edited_public_section_is_refused_as_modified() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let init = didmesh(&path, PASS, &["wallet", "init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let clean = read_json(&path);

    let did = serde_json::json!({"did": "did:mesh:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "node": "http://attacker.invalid", "created_at": 1, "deactivated": false});
    // (what, JSON pointer, new value)
    let edits = [
        ("node", "/public/node", "http://attacker.invalid".into()),
        ("did", "/public/did", did.clone()),
        ("previous dids", "/public/previous_dids", vec![did].into()),
        ("key status", "/public/keys/0/status", "retired".into()),
        ("key name", "/public/keys/0/name", "key-9".into()),
        ("created_at", "/public/keys/0/created_at", 7.into()),
        ("kdf cost", "/kdf/t_cost", 2.into()),
    ];
    for (what, pointer, value) in edits {
        let mut v = clean.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        write_json(&path, &v);
        let err = Wallet::open(&path, PASS.as_bytes()).unwrap_err();
        // A changed KDF cost derives another key: it reads as a wrong
        // passphrase; anything else is reported as a modified file.
        if what == "kdf cost" {
            assert!(
                matches!(err, WalletError::WrongPassphrase(_)),
                "{what}: {err}"
            );
        } else {
            assert!(matches!(err, WalletError::Modified(_)), "{what}: {err}");
            assert!(
                err.to_string().contains("wallet file was modified"),
                "{err}"
            );
        }
    }

    // Through the CLI: the login is refused before any node is contacted,
    // with the clear message.
    let mut v = clean.clone();
    v["public"]["node"] = "http://127.0.0.1:9".into();
    write_json(&path, &v);
    let out = didmesh(&path, PASS, &["login"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: wallet file was modified"),
        "{}",
        stderr(&out)
    );

    // Reformatting (member order, whitespace) is not an edit.
    let mut reordered = serde_json::Map::new();
    for (k, val) in clean.as_object().unwrap().iter().rev() {
        reordered.insert(k.clone(), val.clone());
    }
    std::fs::write(&path, serde_json::to_vec(&reordered).unwrap()).unwrap();
    Wallet::open(&path, PASS.as_bytes()).unwrap();
}

/// A KDF cost of 4 GiB (within the old bounds) or absurd pass/lane counts
/// is refused when the file is parsed, before the KDF could allocate.
#[test]
fn a_huge_kdf_cost_is_refused_fast_without_allocating() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    Wallet::create(&path, PASS.as_bytes(), None, KdfCost::fast(), false, 1).unwrap();
    let clean = read_json(&path);
    for (field, value) in [
        ("m_cost_kib", 4u64 * 1024 * 1024),
        ("m_cost_kib", u64::from(u32::MAX)),
        ("t_cost", 1_000_000),
        ("p_cost", 1000),
        ("p_cost", 0),
    ] {
        let mut v = clean.clone();
        v["kdf"][field] = value.into();
        write_json(&path, &v);
        // The parser alone (no passphrase, so no KDF) refuses it.
        let bytes = std::fs::read(&path).unwrap();
        let err = didmesh_client::wallet::parse_file(&bytes, &path).unwrap_err();
        assert!(
            matches!(err, WalletError::KdfBounds { .. }),
            "{field}={value}: {err}"
        );
        let t0 = Instant::now();
        let err = Wallet::open(&path, PASS.as_bytes()).unwrap_err();
        assert!(matches!(err, WalletError::KdfBounds { .. }), "{err}");
        assert!(t0.elapsed().as_millis() < 500, "{:?}", t0.elapsed());
    }

    // Through the CLI with 1 GiB of address space: an attempt to run argon2
    // over 4 GiB would abort the process; the bound check answers cleanly.
    let mut v = clean.clone();
    v["kdf"]["m_cost_kib"] = (4u64 * 1024 * 1024).into();
    write_json(&path, &v);
    let t0 = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" --wallet \"$1\" login --node http://127.0.0.1:9")
        .arg(env!("CARGO_BIN_EXE_didmesh"))
        .arg(&path)
        .env("DIDMESH_PASSPHRASE", PASS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("outside the accepted bounds"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
}

/// The temporary file of an atomic write used to be `<wallet>.tmp-<pid>`,
/// opened without O_EXCL: a symlink planted there made the save write the
/// wallet through it (clobbering the target) and then renamed the symlink
/// over the wallet.
#[cfg(unix)]
#[test]
fn a_planted_temporary_file_is_never_written_through() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let wallet = Wallet::create(&path, PASS.as_bytes(), None, KdfCost::fast(), false, 1).unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    // Every name the old code could pick from this process.
    let planted = dir
        .path()
        .join(format!("w.json.tmp-{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    wallet.save().unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "the wallet became a symlink");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::symlink_metadata(&planted).is_ok(),
        "planted file removed"
    );
    assert_eq!(
        Wallet::open(&path, PASS.as_bytes()).unwrap().main_public(),
        wallet.main_public()
    );
    // Only the wallet, the victim and the planted link: no temporary left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

/// `DIDMESH_KDF_FAST=1` used to make weak wallets silently.
#[test]
fn kdf_fast_warns_and_marks_the_wallet_weak() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let out = didmesh(&path, PASS, &["wallet", "init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: DIDMESH_KDF_FAST=1"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("never keep real keys"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_json(&path)["weak"], true);

    let show = didmesh(&path, PASS, &["wallet", "show"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(stdout(&show).contains("weak    yes"), "{}", stdout(&show));
    let json = didmesh(&path, PASS, &["wallet", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["weak"], true);

    // Unmarking it is an edit, refused.
    let mut v = read_json(&path);
    v["weak"] = false.into();
    write_json(&path, &v);
    assert!(Wallet::open(&path, PASS.as_bytes()).is_err());

    // The default cost: no warning, not weak.
    let strong = dir.path().join("strong.json");
    let out = Command::new(env!("CARGO_BIN_EXE_didmesh"))
        .arg("--wallet")
        .arg(&strong)
        .args(["wallet", "init"])
        .env("DIDMESH_PASSPHRASE", PASS)
        .env_remove("DIDMESH_KDF_FAST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert_eq!(read_json(&strong)["weak"], false);
    let show = didmesh(&strong, PASS, &["wallet", "show"]);
    assert!(!stdout(&show).contains("weak"), "{}", stdout(&show));
}

/// `mfa` was offered although no login checks a second factor.
#[test]
fn the_cli_does_not_offer_mfa() {
    let dir = tmp();
    let path = dir.path().join("w.json");
    let out = didmesh(
        &path,
        PASS,
        &[
            "did",
            "add-key",
            "--relationship",
            "mfa",
            "--node",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid value 'mfa'"),
        "{}",
        stderr(&out)
    );
    let help = didmesh(&path, PASS, &["did", "add-key", "--help"]);
    assert!(
        !stdout(&help).to_lowercase().contains("mfa"),
        "{}",
        stdout(&help)
    );
}

/// A version 1 wallet (public section not authenticated) still opens, and
/// the first unlock rewrites it as version 2, saying so.
#[test]
fn a_version_1_wallet_is_upgraded_on_first_unlock() {
    use argon2::{Algorithm, Argon2, Params, Version};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

    // Built here independently of the library, as version 1 wrote it.
    let seed: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(&SEED_HEX[2 * i..2 * i + 2], 16).unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let public = did_core::keys::public_of(&ed25519_dalek::SigningKey::from_bytes(&seed));
    let (salt, nonce) = ([5u8; 16], [6u8; 24]);
    let kdf = serde_json::json!({"alg": "argon2id", "version": 19, "m_cost_kib": 256,
        "t_cost": 1, "p_cost": 1, "salt": URL_SAFE_NO_PAD.encode(salt)});
    // Version 1's associated data: its header struct, fields in
    // declaration order.
    let aad = format!(
        r#"{{"format":"didmesh-wallet","version":1,"kdf":{{"alg":"argon2id","version":19,"m_cost_kib":256,"t_cost":1,"p_cost":1,"salt":"{}"}},"cipher_alg":"xchacha20poly1305"}}"#,
        URL_SAFE_NO_PAD.encode(salt)
    )
    .into_bytes();
    let mut key = [0u8; 32];
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(256, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(PASS.as_bytes(), &salt, &mut key)
    .unwrap();
    let mut plain = b"DMS1".to_vec();
    plain.extend_from_slice(&seed);
    let ct = XChaCha20Poly1305::new((&key).into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap();
    let v1 = serde_json::json!({
        "format": "didmesh-wallet", "version": 1, "kdf": kdf,
        "cipher": {"alg": "xchacha20poly1305", "nonce": URL_SAFE_NO_PAD.encode(nonce)},
        "ciphertext": URL_SAFE_NO_PAD.encode(ct),
        "public": {"keys": [{"name": "key-1", "public_key_multibase": public.to_multibase(),
            "status": "active", "created_at": 1}], "did": null, "previous_dids": [],
            "node": "http://127.0.0.1:9"}
    });
    let dir = tmp();
    let path = dir.path().join("w.json");
    write_json(&path, &v1);

    let show = didmesh(&path, PASS, &["wallet", "show"]);
    assert!(stdout(&show).contains("format  v1"), "{}", stdout(&show));
    assert!(stdout(&show).contains("weak    yes"), "{}", stdout(&show));

    // Any command that unlocks it upgrades it (the login itself fails:
    // nothing listens on port 9).
    let out = didmesh(&path, PASS, &["login"]);
    assert!(
        stderr(&out).contains("upgraded from format v1 to v2"),
        "{}",
        stderr(&out)
    );
    let v2 = read_json(&path);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["weak"], true);
    assert_eq!(v2["public"], v1["public"]);
    let opened = Wallet::open(&path, PASS.as_bytes()).unwrap();
    assert_eq!(opened.main_public(), public);
    assert_eq!(opened.read_version(), 2);
    // and from now on the node is sealed
    let mut v = v2.clone();
    v["public"]["node"] = "http://attacker.invalid".into();
    write_json(&path, &v);
    assert!(matches!(
        Wallet::open(&path, PASS.as_bytes()),
        Err(WalletError::Modified(_))
    ));
}

/// The fuzz target's entry point: arbitrary bytes give errors, never a
/// panic (also run by `scripts/fuzz.sh` under libFuzzer).
#[test]
fn parse_file_takes_arbitrary_bytes() {
    let p = Path::new("mem");
    for bytes in [
        &b""[..],
        b"{}",
        b"[]",
        b"null",
        b"{\"format\":\"didmesh-wallet\",\"version\":2}",
        b"{\"format\":\"didmesh-wallet\",\"version\":18446744073709551615}",
        &[0xff, 0xfe, 0x00],
    ] {
        assert!(didmesh_client::wallet::parse_file(bytes, p).is_err());
    }
    let big = vec![b' '; didmesh_client::wallet::MAX_FILE_BYTES + 1];
    assert!(didmesh_client::wallet::parse_file(&big, p).is_err());
}
