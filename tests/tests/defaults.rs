//! The node's defaults and home-api's documented example agree: following
//! `home-api --help` against a node started with its defaults must give a
//! working pair (issuer, audience, JWKS address), or every token is refused.

use didmesh_tests::bin;
use std::process::Command;

fn help(name: &str) -> String {
    let out = Command::new(bin(name)).arg("--help").output().unwrap();
    assert!(out.status.success(), "{name} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `[default: …]` clap prints after flag `flag`.
fn default_of(help: &str, flag: &str) -> String {
    let at = help
        .find(flag)
        .unwrap_or_else(|| panic!("{flag} not in help"));
    let rest = &help[at..];
    let d = rest
        .find("[default: ")
        .unwrap_or_else(|| panic!("{flag} has no default"));
    let value = &rest[d + "[default: ".len()..];
    value[..value.find(']').unwrap()].to_string()
}

#[test]
fn home_api_help_matches_the_node_defaults() {
    let node = help("didmesh-node");
    let app = help("home-api");
    let issuer = default_of(&node, "--issuer <");
    let audience = default_of(&node, "--audience <");
    let addr = default_of(&node, "--http-addr <");
    assert!(
        app.contains(&format!("--issuer {issuer}")),
        "home-api --help names another issuer than the node's {issuer}:\n{app}"
    );
    assert!(
        app.contains(&format!("--audience {audience}")),
        "audience {audience}:\n{app}"
    );
    assert!(
        app.contains(&format!("http://{addr}/.well-known/jwks.json")),
        "JWKS at {addr}:\n{app}"
    );
}
