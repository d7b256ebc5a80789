//! What the node holds: the trusted keys named in `[fleet]`, and the layers
//! in force read back from the state directory (each bundle verified again
//! against today's keys), merged into the effective config. Used at start,
//! on every local reload, by the receiver, and by `config show --effective`.
//!
//! Never writes; never talks to the broker.

use std::path::Path;

use super::bundle::{self, Target};
use super::keys::PublicKey;
use super::overlay::{self, Effective, EffectiveError, Layer};
use super::state::{Dir, FleetState, Held};
use crate::config::AgentConfig;

/// The node's layers, lowest precedence first: the fleet, each of its
/// groups in `node.groups` order, then the node itself.
pub(crate) fn node_layers(config: &AgentConfig) -> Vec<Target> {
    let mut v = vec![Target::Fleet];
    v.extend(config.node.groups.iter().cloned().map(Target::Group));
    v.push(Target::Node(config.node.id.clone()));
    v
}

/// Read every key `fleet.trusted_keys` names. Keys that cannot be read are
/// left out, each with a sentence saying why.
pub(crate) fn trusted_keys(config: &AgentConfig) -> (Vec<PublicKey>, Vec<String>) {
    let (files, problems) = config.fleet.key_files();
    let mut notes: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let mut keys = Vec::new();
    for f in files {
        match PublicKey::read(&f) {
            Ok(k) => {
                if !keys.iter().any(|have: &PublicKey| have.id() == k.id()) {
                    keys.push(k);
                }
            }
            Err(e) => notes.push(format!("fleet.trusted_keys: {e}")),
        }
    }
    (keys, notes)
}

/// Read back one held bundle as a layer. `None` with a reason when it can
/// no longer be used (its file is gone, its key is no longer trusted).
pub(crate) fn read_layer(
    dir: &Dir,
    config: &AgentConfig,
    target: &Target,
    held: &Held,
    keys: &[PublicKey],
) -> Result<Layer, String> {
    let label = format!("{target} v{}", held.version);
    let bytes = dir
        .read_bundle(&held.bundle)
        .map_err(|e| format!("{label}: {e}"))?;
    // Held bundles were accepted under the size limit of their day; a lower
    // limit today does not drop them.
    let verified = bundle::open(&bytes, &config.node.fleet, target, keys, usize::MAX)
        .and_then(|v| bundle::accept(&v, None).map(|()| v))
        .map_err(|e| format!("{label}: no longer usable: {e}"))?;
    let overlay = overlay::parse_overlay(&verified.payload.overlay).map_err(|problems| {
        let text: Vec<_> = problems.iter().map(ToString::to_string).collect();
        format!("{label}: {}", text.join("; "))
    })?;
    let rule_files = dir.rule_files(target, held.version, verified.payload.rules.keys().cloned());
    if let Some(missing) = rule_files.iter().find(|p| !p.is_file()) {
        return Err(format!(
            "{label}: its rule file {} is missing",
            missing.display()
        ));
    }
    Ok(Layer {
        target: target.clone(),
        version: held.version,
        overlay,
        rule_files,
    })
}

/// The layers in force per `state` (each layer's `good` bundle), in
/// precedence order, with a sentence for each one that had to be left out.
pub(crate) fn good_layers(
    dir: &Dir,
    config: &AgentConfig,
    state: &FleetState,
    keys: &[PublicKey],
) -> (Vec<Layer>, Vec<String>) {
    let mut layers = Vec::new();
    let mut notes = Vec::new();
    for target in node_layers(config) {
        let Some(held) = state
            .layers
            .get(&target.to_string())
            .and_then(|l| l.good.as_ref())
        else {
            continue;
        };
        match read_layer(dir, config, &target, held, keys) {
            Ok(l) => layers.push(l),
            Err(why) => notes.push(why),
        }
    }
    (layers, notes)
}

/// The effective config a node starts with, and what `config show
/// --effective` prints: the local file plus the layers that passed their
/// trial. Fleet config off (no trusted keys): the local file alone.
pub(crate) struct Start {
    pub(crate) effective: Effective,
    pub(crate) layers: Vec<Layer>,
    /// Layers left out, and why (logged, and shown in status).
    pub(crate) notes: Vec<String>,
}

/// Compute [`Start`] from the local file's text and the fleet state (as
/// loaded from the state directory). A local file that is itself invalid
/// is an error; layers that no longer merge into a valid config are left
/// out (all of them) with the reason.
pub(crate) fn start(
    local_text: &str,
    local_path: &Path,
    local: &AgentConfig,
    state: &FleetState,
) -> Result<Start, crate::config::ConfigError> {
    let alone = |notes: Vec<String>| -> Result<Start, crate::config::ConfigError> {
        let effective = overlay::effective(local_text, local_path, &[]).map_err(|e| match e {
            EffectiveError::Local(e) => e,
            EffectiveError::Layers(_) => unreachable!("no layers"),
        })?;
        Ok(Start {
            effective,
            layers: Vec::new(),
            notes,
        })
    };
    if !local.fleet.enabled() {
        return alone(Vec::new());
    }
    let dir = Dir::new(&local.paths.state_dir);
    let (keys, mut notes) = trusted_keys(local);
    let (layers, left_out) = good_layers(&dir, local, state, &keys);
    notes.extend(left_out);
    match overlay::effective(local_text, local_path, &layers) {
        Ok(effective) => Ok(Start {
            effective,
            layers,
            notes,
        }),
        Err(EffectiveError::Local(e)) => Err(e),
        Err(EffectiveError::Layers(problems)) => {
            notes.push(format!(
                "the fleet layers no longer make a valid config with this agent.toml; running the local file alone: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            alone(notes)
        }
    }
}

/// The fleet summary a client can read without the daemon: the versions
/// that passed their trial, the trial that was running when the agent
/// stopped, the last results (`status` with the daemon down).
pub(crate) fn summary_from_disk(config: &AgentConfig) -> super::summary::Summary {
    use super::summary::{Summary, TrialSummary};
    let (state, _) = Dir::new(&config.paths.state_dir_for_client()).load_quiet();
    let mut layers = serde_json::Map::new();
    for target in node_layers(config) {
        let name = target.to_string();
        if let Some(good) = state.layers.get(&name).and_then(|l| l.good.as_ref()) {
            layers.insert(name, serde_json::Value::from(good.version));
        }
    }
    let trial = state.trial.as_ref().map(|t| {
        let started_at = humantime::parse_rfc3339_weak(&t.started_at)
            .ok()
            .and_then(|s| s.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        TrialSummary {
            layer: t.target.clone(),
            version: t.version,
            started_at,
            deadline: started_at + config.fleet.confirm_timeout.get().as_secs(),
        }
    });
    Summary {
        enabled: config.fleet.enabled(),
        layers,
        effective_sha256: state.effective_sha256.clone(),
        trial,
        last_results: state.last_results.into_iter().collect(),
    }
}
