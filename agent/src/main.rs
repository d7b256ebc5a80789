//! The `edge-agent` binary: parse flags, call the library, map the result to
//! an exit code. Nothing else lives here.

use std::process::ExitCode;

use edge_agent::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let cli = match Cli::parse_or_exit() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if !cli.is_service() {
        // A one-shot command piped into `head` should end quietly when the
        // reader goes away, as Unix tools do, not panic on EPIPE. The daemon
        // keeps Rust's default (SIGPIPE ignored; EPIPE is an error on one
        // connection).
        // SAFETY: single-threaded here; restoring a default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        cli::init_cli_logging();
    }
    match cli::run(cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("edge-agent: {e:#}");
            Exit::Failure.into()
        }
    }
}
