//! The `hookmesh` binary: parses the command line and calls the library.

use clap::Parser;
use hookmesh::cli::{sig, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    match cli.command {
        Command::Sig(cmd) => match sig::run(&cmd, now, &mut std::io::stdout().lock()) {
            Ok(sig::SigOutcome::Ok) => ExitCode::SUCCESS,
            Ok(sig::SigOutcome::Invalid) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}
