//! The `edge-agent` binary: parse flags, call the library, map the result to
//! an exit code. Nothing else lives here.

use std::process::ExitCode;

use edge_agent::cli::{self, Cli, Command, Exit};

fn main() -> ExitCode {
    let cli = match Cli::parse_or_exit() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if !matches!(cli.command, Command::Run) {
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
