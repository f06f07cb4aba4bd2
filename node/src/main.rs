//! `didmesh-node`: see `didmesh-node --help` and the crate docs.

use clap::Parser;
use didmesh_node::config::Config;
use didmesh_node::NodeState;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let state = match NodeState::open(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("didmesh-node: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.http_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("didmesh-node: cannot listen on {}: {e}", config.http_addr);
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        addr = %config.http_addr,
        network = %state.genesis.network_id,
        node_did = %state.me.node_did,
        "serving"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match didmesh_node::serve(state, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("didmesh-node: {e}");
            ExitCode::FAILURE
        }
    }
}
