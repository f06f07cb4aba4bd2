//! `didmesh`: see `didmesh --help` and the `didmesh_client` crate docs.

use clap::Parser as _;
use didmesh_client::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match didmesh_client::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
