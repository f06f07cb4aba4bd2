//! `didmesh-node`: see `didmesh-node --help` and the crate docs.

/// mimalloc rather than glibc's malloc: see node/Cargo.toml and
/// BENCHMARKS.md (session 15).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use did_core::OpKind;
use didmesh_node::config::{Command, Config};
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
    install_panic_hook();
    let config = Config::parse();
    if let Some(command) = &config.command {
        return run_command(command).await;
    }
    // Before anything else starts, so a bad certificate fails fast.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => match didmesh_node::tls::server_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("didmesh-node: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    // The listener opens before the ledger loads, so the node answers
    // from the first second: `/healthz` 503 with the progress until the
    // ledger is loaded (issue 12, item 4), then the full API on the same
    // listener.
    let listener = match tokio::net::TcpListener::bind(config.http_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("didmesh-node: cannot listen on {}: {e}", config.http_addr);
            return ExitCode::from(2);
        }
    };
    let progress = std::sync::Arc::new(didmesh_node::storage::Progress::default());
    let routes =
        didmesh_node::server::Routes::new(didmesh_node::server::starting_router(progress.clone()));
    let options = didmesh_node::serve_options(&config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let server = match tls {
        Some(tls) => match didmesh_node::tls::TlsListener::new(listener, tls) {
            Ok(listener) => tokio::spawn(didmesh_node::server::serve_on(
                listener,
                routes.clone(),
                options,
                stopped,
            )),
            Err(e) => {
                eprintln!("didmesh-node: cannot listen on {}: {e}", config.http_addr);
                return ExitCode::from(2);
            }
        },
        None => tokio::spawn(didmesh_node::serve_routes(
            listener,
            routes.clone(),
            options,
            stopped,
        )),
    };
    tracing::info!(addr = %config.http_addr, "listening; loading the ledger");

    let opening = {
        let (config, progress) = (config.clone(), progress.clone());
        tokio::task::spawn_blocking(move || NodeState::open_with(&config, &progress))
    };
    let mut stop_wait = stop_rx.clone();
    let state = tokio::select! {
        opened = opening => match opened {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!("didmesh-node: {e}");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("didmesh-node: the start failed: {e}");
                return ExitCode::from(2);
            }
        },
        _ = stop_wait.wait_for(|stop| *stop) => {
            // Nothing was acknowledged yet; the loader thread is not
            // waited for.
            tracing::info!("stopped while loading the ledger");
            std::process::exit(0);
        }
    };
    #[cfg(unix)]
    reload_providers_on_sighup(state.clone());
    didmesh_node::token_keys::watch_rotation(&state);
    if !config.no_p2p {
        let p2p = didmesh_node::p2p::P2pConfig {
            listen: config.p2p_addr.clone(),
            bootstrap: config.bootstrap.clone(),
            announce: config.announce.clone(),
            sync_interval: std::time::Duration::from_millis(config.sync_interval_ms.max(100)),
        };
        match didmesh_node::p2p::start(state.clone(), p2p, &config.data_dir).await {
            Ok(client) => {
                let _ = state.p2p.set(client);
            }
            Err(e) => {
                eprintln!("didmesh-node: {e}");
                return ExitCode::from(2);
            }
        }
    }
    routes.set(didmesh_node::api::router(state.clone()));
    tracing::info!(
        addr = %config.http_addr,
        scheme = config.url_scheme(),
        network = %state.genesis.network_id,
        node_did = %state.me.node_did,
        "serving"
    );
    let served = match server.await {
        Ok(served) => served,
        Err(e) => Err(std::io::Error::other(e.to_string())),
    };
    // A clean stop: a checkpoint, so the next start replays nothing.
    let checkpointing = state.clone();
    match tokio::task::spawn_blocking(move || checkpointing.write_checkpoint()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "no checkpoint written at shutdown"),
        Err(e) => tracing::warn!(error = %e, "no checkpoint written at shutdown"),
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("didmesh-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(command: &Command) -> ExitCode {
    use didmesh_node::admin;
    let result = match command {
        Command::InitNetwork {
            nodes,
            out,
            issuer,
            quorum,
            key_overlap_secs,
        } => admin::init_network_with_overlap(*nodes, out, issuer, *quorum, *key_overlap_secs).map(
            |g| {
                println!(
                    "network {} ({} members, quorum {})",
                    g.network_id,
                    g.members.len(),
                    g.quorum
                );
                for (i, m) in g.members.iter().enumerate() {
                    println!(
                        "  node{}: {}  data folder {}",
                        i + 1,
                        m.node_did,
                        out.join(format!("node{}", i + 1)).display()
                    );
                }
            },
        ),
        Command::MemberEntry { data_dir, name } => {
            admin::member_entry(data_dir, name).map(|line| println!("{line}"))
        }
        Command::MemberAdd(args) => admin::member_change(OpKind::MemberAdd, args)
            .await
            .map(|v| println!("{v}")),
        Command::MemberRemove(args) => admin::member_change(OpKind::MemberRemove, args)
            .await
            .map(|v| println!("{v}")),
        Command::MemberRotateKeys { data_dir, name } => {
            admin::member_rotate_keys(data_dir, name).map(|line| println!("{line}"))
        }
        Command::MemberRotate(args) => admin::member_change(OpKind::MemberRotate, args)
            .await
            .map(|v| println!("{v}")),
        Command::MemberRevoke(args) => admin::member_revoke(args).await.map(|v| println!("{v}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("didmesh-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A panic becomes one log line (where, and what, on one line, cut to 300
/// characters): a handler's panic is answered 500 by the router's
/// `CatchPanic` layer and the node carries on, so a multi-line message with
/// a backtrace hint would only be noise. A panic while the store opens is
/// reported as a damaged folder by `Store::open`, so it is not logged here.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if didmesh_node::storage::opening() {
            return;
        }
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let what: String = what
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic: {what}");
    }));
}

/// SIGHUP reloads the providers file (`--providers`); a bad file keeps the
/// providers in force, and the log line says why.
#[cfg(unix)]
fn reload_providers_on_sighup(state: std::sync::Arc<NodeState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the providers file is read at start only");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match state.federation.reload() {
                Ok(names) => tracing::info!(providers = ?names, "providers file reloaded"),
                Err(e) => {
                    tracing::warn!(error = %e, "providers file refused; the providers in force stay")
                }
            }
        }
    });
}

/// Completes on SIGINT or SIGTERM (what `scripts/cluster.sh down` and
/// container runtimes send). Acknowledged ops are already durable, so a
/// stop at any moment loses nothing.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
