//! `imv`: image volumes from a shell. See `imv --help` and the README.
//!
//! This binary is an adapter: it parses arguments, installs the tracing subscriber and the
//! progress bars (the library never does either: it may live inside someone else's
//! process), calls the library, and turns its errors into messages and exit codes.

// As in the library: no unsafe operation outside its own block, none without a SAFETY line.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod cli;
mod commands;
mod engine;
mod events;
mod exit;
mod metrics;
mod mountarg;
mod progress;
mod serve;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::commands::Failure;
use crate::progress::{Bars, LogWriter};

fn main() -> ExitCode {
    // clap prints its own message and exits 2 on a usage error (0 for --help/--version);
    // an argument that is not UTF-8 is bad input, not bad usage (exit code 3).
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            eprintln!("imv: invalid argument: arguments must be UTF-8 (sandbox IDs, references and paths are CRI strings)");
            return exit::exit_code(imv::ErrorKind::InvalidArgument);
        }
        Err(e) => e.exit(),
    };

    let bars = Bars::for_stderr();
    // The filter was validated while parsing, so this cannot fail; fall back to the
    // default rather than panic should that ever change.
    let filter = EnvFilter::builder()
        .parse(&cli.log_level)
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter::new(bars.clone()))
        // Colour codes are noise in a log file or a CI transcript.
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let progress: Arc<dyn imv::Progress> = match bars {
        Some(bars) => bars,
        None => Arc::new(imv::backend::NoProgress),
    };

    match commands::run(cli, progress) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(Failure::Error(e)) => {
            eprintln!("imv: {e}");
            exit::exit_code(e.kind())
        }
        Err(Failure::Printed(kind)) => exit::exit_code(kind),
    }
}
