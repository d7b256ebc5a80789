//! `fleet keygen`, `fleet bundle` and `fleet publish`: making keys, signing
//! bundles, and putting them on the broker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{exit_for, load_ops, print_ops_error};
use crate::cli::Exit;
use crate::config::{AgentConfig, ConfigError, FleetConfig};
use crate::fleet::bundle::{self, Payload, Target};
use crate::fleet::keys::{self, SigningKey};
use crate::fleet::ops::{ConnectOptions, OpsConnection, OpsError};
use crate::fleet::overlay;

/// A bundle file larger than this is not read (nodes refuse far smaller
/// ones: `fleet.max_bundle_bytes`, 1 MiB by default, 8 MiB at most).
const MAX_BUNDLE_FILE_BYTES: u64 = 16 * 1024 * 1024;

pub(crate) fn keygen(out: &Path) -> Exit {
    match keys::generate(out) {
        Ok(g) => {
            println!(
                "wrote {} (private, mode 0600: keep it off the nodes) and {} (public: list it in fleet.trusted_keys on the nodes); key id {}",
                g.private.display(),
                g.public.display(),
                g.id
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("edge-agent fleet keygen: {e}");
            Exit::Failure
        }
    }
}

pub(crate) struct BundleArgs {
    pub(crate) target: String,
    pub(crate) version: u64,
    pub(crate) overlay: Option<PathBuf>,
    pub(crate) rules_files: Vec<PathBuf>,
    pub(crate) key: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) fleet: Option<String>,
    pub(crate) expires_in: Option<Duration>,
}

/// Build, check, sign and write a bundle. Problems a node would refuse the
/// bundle for are refused here (exit 78 for the overlay, 64 for
/// arguments); what depends on each node's local file is a warning.
pub(crate) fn bundle(config: &Path, args: &BundleArgs) -> Exit {
    let fail = |code: Exit, msg: String| {
        eprintln!("edge-agent fleet bundle: {msg}");
        code
    };
    let target: Target = match args.target.parse() {
        Ok(t) => t,
        Err(e) => return fail(Exit::Usage, format!("--target: {e}")),
    };
    if args.version == 0 {
        return fail(Exit::Usage, "--version must be 1 or more".into());
    }
    let fleet = match fleet_name(config, args.fleet.as_deref()) {
        Ok(f) => f,
        Err(e) => return fail(Exit::Usage, e),
    };
    let key = match SigningKey::read(&args.key) {
        Ok(k) => k,
        Err(e) => return fail(Exit::Failure, e.to_string()),
    };
    let overlay_text = match &args.overlay {
        None => String::new(),
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => return fail(Exit::Failure, format!("{}: {e}", p.display())),
        },
    };
    if let Some(p) = &args.overlay
        && let Err(problems) = check_overlay(&overlay_text, p)
    {
        for problem in problems {
            eprintln!("{}: {problem}", p.display());
        }
        return fail(
            Exit::Config,
            "the overlay is refused (nodes would refuse it too); nothing written".into(),
        );
    }
    let rules = match read_rules(&args.rules_files) {
        Ok(r) => r,
        Err(e) => return fail(Exit::Failure, e),
    };
    let now = SystemTime::now();
    let payload = Payload {
        schema: bundle::SCHEMA,
        fleet,
        target,
        version: args.version,
        created_at: bundle::rfc3339(now),
        expires_at: args.expires_in.map(|d| bundle::rfc3339(now + d)),
        overlay: overlay_text,
        rules,
    };
    if let Some(problem) = bundle::check_payload(&payload).first() {
        return fail(Exit::Usage, problem.to_string());
    }
    let bytes = bundle::seal(&payload, &key);
    if let Err(e) = std::fs::write(&args.out, &bytes) {
        return fail(Exit::Failure, format!("{}: {e}", args.out.display()));
    }
    let default_max = FleetConfig::default().max_bundle_bytes.get();
    if bytes.len() as u64 > default_max {
        eprintln!(
            "edge-agent fleet bundle: warning: {} bytes is over the nodes' default fleet.max_bundle_bytes ({default_max}); nodes that keep the default will refuse it",
            bytes.len()
        );
    }
    println!(
        "wrote {}: fleet {}, target {}, version {}, {} rule file(s), {} bytes, key id {}, bundle_sha256 {}",
        args.out.display(),
        payload.fleet,
        payload.target,
        payload.version,
        payload.rules.len(),
        bytes.len(),
        key.public().id(),
        bundle::sha256_hex(&bytes)
    );
    Exit::Ok
}

/// `--fleet`, else `[node] fleet` of the `--config` file.
fn fleet_name(config: &Path, given: Option<&str>) -> Result<String, String> {
    if let Some(f) = given {
        let mut problems = Vec::new();
        crate::config::check_topic_level("--fleet", f, &mut problems);
        return match problems.first() {
            Some(p) => Err(p.to_string()),
            None => Ok(f.to_string()),
        };
    }
    AgentConfig::load(config)
        .map(|l| l.config.node.fleet)
        .map_err(|e| {
            format!("name the fleet with --fleet NAME, or give the operator's file with --config ops.toml ({e})")
        })
}

/// The overlay's keys must be ones a bundle may set, and its values must
/// parse. Cross-key checks that depend on a node's own file (its
/// bootstrap role, say) are left to the node, which refuses the bundle
/// with the reason if they fail.
fn check_overlay(text: &str, path: &Path) -> Result<(), Vec<String>> {
    let table = overlay::parse_overlay(text)
        .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    match AgentConfig::from_table(table, path) {
        Ok(_) => Ok(()),
        Err(ConfigError::Parse { key, message, .. }) => Err(vec![match key {
            Some(k) => format!("{k}: {message}"),
            None => message,
        }]),
        Err(ConfigError::Invalid { problems, .. }) => {
            for p in problems {
                eprintln!(
                    "{}: warning: {p} (with an otherwise empty agent.toml; a node refuses the bundle if it stays invalid with its own file)",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e @ ConfigError::Read { .. }) => Err(vec![e.to_string()]),
    }
}

/// Rule files by their file names; two files with one name are refused.
fn read_rules(files: &[PathBuf]) -> Result<BTreeMap<String, String>, String> {
    let mut rules = BTreeMap::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bundle::check_rule_name(&name).map_err(|e| format!("{}: {e}", f.display()))?;
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if rules.insert(name.clone(), text).is_some() {
            return Err(format!(
                "two rule files are named {name}; nodes write them into one directory, so names must differ"
            ));
        }
    }
    Ok(rules)
}

pub(crate) async fn publish(config: &Path, path: &Path) -> anyhow::Result<Exit> {
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
            Ok(exit_for(&e))
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
