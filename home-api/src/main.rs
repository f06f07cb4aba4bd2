//! `home-api` binary: parses flags, sets up logs, binds, serves until
//! Ctrl-C or SIGTERM. Everything else lives in the library (see its doc and
//! `home-api --help`).

use std::process::ExitCode;

use clap::Parser as _;
use home_api::cli::{AuthKind, Cli};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("home-api: error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let auth = cli.build_auth().await?;
    if cli.auth == AuthKind::Off {
        eprintln!(
            "\n\
             ************************************************************\n\
             *  WARNING: --auth off — NO AUTHENTICATION AT ALL.          *\n\
             *  Every caller is anonymous. Benchmark baseline only.      *\n\
             ************************************************************\n"
        );
        tracing::warn!("authentication is OFF");
    }
    let listener = TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    tracing::info!(addr = %listener.local_addr()?, auth = ?cli.auth, "home-api listening");
    axum::serve(listener, home_api::app(auth, &cli.app_options()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("home-api stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
