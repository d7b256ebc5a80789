//! `edge-agent fleet ...`: the operator's commands (keys, bundles, pushing
//! them, watching what nodes did). They run on an operator's workstation
//! against the fleet's broker, configured by `--config ops.toml` (a file in
//! agent.toml's format: `[node] fleet`, `[uplink]`).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::Exit;
use crate::fleet::bundle;
use crate::fleet::keys;
use crate::fleet::ops::{ConnectOptions, Ops, OpsConnection, OpsError};

/// A bundle file larger than this is not read (nodes refuse far smaller
/// ones: `fleet.max_bundle_bytes`, 1 MiB by default).
const MAX_BUNDLE_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Make an Ed25519 key pair for signing bundles: FILE (private, mode 0600) and FILE.pub (what nodes list in fleet.trusted_keys).
    Keygen {
        /// Where to write the private key; never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Publish a bundle (retained, QoS 1) on its target's config topic and wait for the broker's acknowledgement.
    Publish {
        /// The bundle file `edge-agent fleet bundle` wrote; sent byte for byte.
        bundle: PathBuf,
    },
}

pub fn run(config: &Path, cmd: FleetCommand) -> anyhow::Result<Exit> {
    match cmd {
        FleetCommand::Keygen { out } => keygen(&out),
        FleetCommand::Publish { bundle } => super::block_on(publish(config, &bundle)),
    }
}

async fn publish(config: &Path, path: &Path) -> anyhow::Result<Exit> {
    let ops = match load_ops(config) {
        Ok(o) => o,
        Err(exit) => return Ok(exit),
    };
    let bytes = match read_bundle(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("edge-agent fleet publish: {e}");
            return Ok(Exit::Failure);
        }
    };
    let payload = match bundle::peek(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("edge-agent fleet publish: {}: {e}", path.display());
            return Ok(Exit::Failure);
        }
    };
    if payload.fleet != ops.fleet() {
        eprintln!(
            "edge-agent fleet publish: {} is for fleet \"{}\", but {} is about fleet \"{}\" ([node] fleet); nodes of one fleet refuse another fleet's bundles",
            path.display(),
            payload.fleet,
            ops.path.display(),
            ops.fleet()
        );
        return Ok(Exit::Failure);
    }
    let topic = payload.target.topic(&payload.fleet);
    let result = async {
        let mut conn = OpsConnection::connect(&ops, ConnectOptions::one_shot("publish")).await?;
        conn.publish_and_wait(&topic, bytes.clone(), true, |_| {})
            .await?;
        conn.disconnect().await;
        Ok::<_, OpsError>(())
    }
    .await;
    match result {
        Ok(()) => {
            println!(
                "published {} version {} to {topic} (retained; bundle_sha256 {})",
                payload.target,
                payload.version,
                bundle::sha256_hex(&bytes)
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            print_ops_error(&e);
            Ok(if e.is_config() {
                Exit::Config
            } else {
                Exit::Failure
            })
        }
    }
}

fn read_bundle(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_BUNDLE_FILE_BYTES {
        return Err(format!(
            "{}: larger than {MAX_BUNDLE_FILE_BYTES} bytes; not a bundle",
            path.display()
        ));
    }
    Ok(bytes)
}

fn keygen(out: &Path) -> anyhow::Result<Exit> {
    match keys::generate(out) {
        Ok(g) => {
            println!(
                "wrote {} (private, mode 0600: keep it off the nodes) and {} (public: list it in fleet.trusted_keys on the nodes); key id {}",
                g.private.display(),
                g.public.display(),
                g.id
            );
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("edge-agent fleet keygen: {e}");
            Ok(Exit::Failure)
        }
    }
}

/// Load `ops.toml` for a command that talks to the broker; a bad or
/// incomplete file is printed and becomes exit 78.
pub(crate) fn load_ops(config: &Path) -> Result<Ops, Exit> {
    Ops::load(config).map_err(|e| {
        print_ops_error(&e);
        if e.is_config() {
            Exit::Config
        } else {
            Exit::Failure
        }
    })
}

/// Print an operator-side error the way every fleet command does.
pub(crate) fn print_ops_error(e: &OpsError) {
    eprintln!("edge-agent fleet: {e}");
    if let OpsError::Config(crate::config::ConfigError::Read { .. }) = e {
        eprintln!("(fleet commands read the operator's own file: pass --config ops.toml)");
    }
}
