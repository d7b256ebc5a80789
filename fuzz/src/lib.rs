//! Fuzz targets for edge-agent's parsers of hostile input; the functions
//! they drive live in `edge_agent::fuzz`.
//!
//! Built two ways. With the `libfuzzer` feature and SanitizerCoverage flags
//! (`scripts/fuzz.sh`), each target is a libFuzzer program. Without it (the
//! workspace's own builds), each is a plain program that runs the files or
//! directories it is given through the target once: how a crash found in CI
//! is reproduced with nothing but the pinned stable toolchain,
//! `cargo run -p edge-agent-fuzz --bin rules -- fuzz/artifacts/rules/crash-...`.
//! `tests/corpus.rs` replays the committed corpus the same way in the test
//! suite.

use std::path::{Path, PathBuf};

#[cfg(feature = "libfuzzer")]
pub use libfuzzer_sys;

/// Define a fuzz target's `main` around `fn(&[u8])`.
#[macro_export]
macro_rules! target {
    ($f:path) => {
        #[cfg(feature = "libfuzzer")]
        $crate::libfuzzer_sys::fuzz_target!(|data: &[u8]| $f(data));

        #[cfg(not(feature = "libfuzzer"))]
        fn main() -> std::process::ExitCode {
            $crate::replay_args($f)
        }
    };
}

/// The files below `path` (itself if it is a file), sorted.
pub fn inputs(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(inputs(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Run every input named on the command line (files or directories)
/// through `f`, printing each before it runs so a crash names its input.
pub fn replay_args(f: fn(&[u8])) -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!(
            "usage: TARGET FILE|DIR... (replays inputs; build with --features libfuzzer to fuzz)"
        );
        return std::process::ExitCode::from(64);
    }
    for arg in &args {
        let files = match inputs(arg) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{}: {e}", arg.display());
                return std::process::ExitCode::FAILURE;
            }
        };
        for file in files {
            eprintln!("running {}", file.display());
            match std::fs::read(&file) {
                Ok(data) => f(&data),
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
