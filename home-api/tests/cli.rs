//! Start-up checks: flag combinations, and the real binary refusing to run
//! sidecar mode on a non-loopback address.

use std::process::Command;

use clap::Parser as _;
use home_api::cli::{Cli, StartupError};

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("home-api").chain(args.iter().copied())).unwrap()
}

#[test]
fn sidecar_mode_refuses_a_non_loopback_listen_address() {
    for addr in ["0.0.0.0:8080", "192.168.1.10:8080", "[::]:8080"] {
        let cli = parse(&["--auth", "sidecar", "--listen", addr]);
        assert!(
            matches!(cli.check(), Err(StartupError::SidecarNotLoopback { .. })),
            "{addr}"
        );
    }
    for addr in ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080"] {
        parse(&["--auth", "sidecar", "--listen", addr])
            .check()
            .unwrap();
    }
}

#[test]
fn jwt_mode_needs_jwks_issuer_and_audience() {
    let cli = parse(&["--listen", "0.0.0.0:8080"]);
    assert!(matches!(cli.check(), Err(StartupError::Missing(_))));
    parse(&[
        "--listen",
        "0.0.0.0:8080",
        "--jwks-url",
        "http://127.0.0.1:1/jwks.json",
        "--issuer",
        "didmesh:test",
        "--audience",
        "home-api",
    ])
    .check()
    .unwrap();
    // Off mode needs nothing (and may listen anywhere).
    parse(&["--auth", "off", "--listen", "0.0.0.0:8080"])
        .check()
        .unwrap();
}

#[test]
fn the_binary_exits_with_an_error_for_sidecar_on_a_public_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_home-api"))
        .args(["--auth", "sidecar", "--listen", "0.0.0.0:0"])
        .env_remove("HOME_API_LISTEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[test]
fn the_jwks_is_never_trusted_for_more_than_60_seconds_by_default() {
    // A removed member's tokens must be refused within a minute (the JWKS
    // ceiling also caps the node's own Cache-Control max-age).
    let cli = parse(&[]);
    assert_eq!(cli.jwks_max_cache_secs, 60);
    assert!(cli.jwks_refresh_secs <= cli.jwks_max_cache_secs);
}

#[test]
fn follows_the_jwks_nodes_revocation_feed_by_default() {
    let jwt = [
        "--jwks-url",
        "http://127.0.0.1:7001/.well-known/jwks.json",
        "--issuer",
        "didmesh:test",
        "--audience",
        "home-api",
    ];
    assert_eq!(
        parse(&jwt).revocations_url().as_deref(),
        Some("http://127.0.0.1:7001/v1/revocations")
    );
    let mut other = jwt.to_vec();
    other.extend(["--revocations", "https://n3.example:8443/v1/revocations"]);
    assert_eq!(
        parse(&other).revocations_url().as_deref(),
        Some("https://n3.example:8443/v1/revocations")
    );
    let mut off = jwt.to_vec();
    off.push("--no-revocations");
    assert_eq!(parse(&off).revocations_url(), None);
    assert_eq!(
        home_api::cli::default_feed_url("https://node.example/.well-known/jwks.json"),
        "https://node.example/v1/revocations"
    );
    assert_eq!(
        home_api::cli::default_feed_url("http://node:7000"),
        "http://node:7000/v1/revocations"
    );
}
