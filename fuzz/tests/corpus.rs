//! Every committed corpus file (seeds, and each input that once crashed a
//! target) goes through its target's checks on plain `cargo test`, without
//! nightly or libFuzzer: a fixed finding stays fixed.
//!
//! `cd fuzz && cargo test` (stable is fine).

use std::path::Path;

fn run_corpus(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("{target}: {}", path.display());
        check(&bytes);
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn op_decode_corpus() {
    run_corpus("op_decode", didmesh_fuzz::op_decode);
}

#[test]
fn canonical_json_corpus() {
    run_corpus("canonical_json", didmesh_fuzz::canonical_json);
}

#[test]
fn sync_codec_corpus() {
    run_corpus("sync_codec", didmesh_fuzz::sync_codec);
}

#[test]
fn sync_frame_corpus() {
    run_corpus("sync_frame", didmesh_fuzz::sync_frame);
}

#[test]
fn token_parse_corpus() {
    run_corpus("token_parse", didmesh_fuzz::token_parse);
}

#[test]
fn wallet_parse_corpus() {
    run_corpus("wallet_parse", didmesh_fuzz::wallet_parse);
}

/// The seeds must get past the parsers, or the fuzzer starts from nothing
/// (a format change upstream makes them stale: regenerate them with
/// `python3 fuzz/corpus/make_seeds.py target/debug/didmesh`).
#[test]
fn seeds_reach_past_the_parsers() {
    let seed = |target: &str, name: &str| {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target)
                .join(name),
        )
        .unwrap()
    };
    let op = did_core::Operation::from_json(&seed("op_decode", "create")).unwrap();
    op.check_form(&did_core::op::Limits::default()).unwrap();
    did_core::sync::Message::decode(&seed("sync_codec", "items-all")).unwrap();
    did_core::sync::Message::decode(&seed("sync_codec", "reply")).unwrap();
    did_core::sync::Message::decode(&seed("sync_codec", "split")).unwrap();
    for name in ["request-fetch", "request-reconcile"] {
        did_core::sync_frame::SyncRequest::decode(&seed("sync_frame", name)[1..]).unwrap();
    }
    for name in ["response-ops", "response-busy", "response-reconcile"] {
        did_core::sync_frame::SyncResponse::decode(&seed("sync_frame", name)[1..]).unwrap();
    }
    let bundle = seed("sync_frame", "bundle-two-ops");
    assert_eq!(did_core::sync_frame::decode_bundle(&bundle[1..]).unwrap().len(), 2);
    didmesh_client::wallet::parse_file(&seed("wallet_parse", "v2-with-did"), Path::new("s"))
        .unwrap();
    didmesh_client::wallet::parse_file(&seed("wallet_parse", "v1"), Path::new("s")).unwrap();
}
