//! The node's fleet state on disk: which version of each layer it has
//! decided on, which bundle of each layer passed its trial, the trial in
//! progress, and the last result per layer.
//!
//! Owns `<state_dir>/fleet/`. Never touches the network or the running
//! config; the receiver decides, this module remembers.
//!
//! # On-disk format
//! ```text
//! <state_dir>/fleet/
//!   state.json                       the record below (temp file + fsync + rename)
//!   bundles/<layer>-v<N>.json        a bundle as received (re-verified at start)
//!   rules/<layer>/v<N>/<name>.yaml   rule files a bundle brought
//!   effective.toml                   the last good effective config, for people
//! ```
//! `<layer>` is `fleet`, `group.<name>` or `node`. `state.json`, schema 1:
//! ```json
//! {"schema": 1,
//!  "layers": {"fleet": {"decided": 5,
//!                       "good": {"version": 4, "bundle_sha256": "..", "bundle": "bundles/fleet-v4.json",
//!                                "applied_at": "2026-11-26T07:25:27Z"}}},
//!  "trial": {"target": "fleet", "version": 5, "bundle_sha256": "..", "bundle": "bundles/fleet-v5.json",
//!            "started_at": ".."},
//!  "effective_sha256": "..",
//!  "last_results": {"fleet": {"layer": "fleet", "outcome": "applied", ...}}}
//! ```
//! - `decided`: the highest version of that layer the node has decided on
//!   (applied, reverted, or refused after its signature checked out); a
//!   bundle must be above it. Refusals of bundles that did not verify never
//!   move it, so junk cannot block the operator's next version.
//! - `good`: the bundle in force that passed its trial; the effective
//!   config at start is the local file plus every layer's `good`.
//! - `trial`: written before a bundle is applied, removed when its trial
//!   ends. Found at start, it means the agent stopped during a trial: the
//!   agent starts with the `good` layers and reports `reverted`.
//! - `last_results`: the last result per layer (the retained state message
//!   and `status` show them).
//!
//! A missing file is a node that never took fleet config. A file that does
//! not parse, or has a `schema` this version does not know, is moved aside
//! (`state.json.unreadable-<unix time>`) and the node starts afresh: the
//! retained bundles on the broker bring it back to the latest version of
//! each layer.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bundle::Target;
use crate::bootstrap::fsio;

/// `schema` of `state.json`.
const SCHEMA: u64 = 1;

/// Directories below the state directory: the agent's user and group only.
const DIR_MODE: u32 = 0o750;
/// Files: readable by the control group (`config show --effective` as a
/// technician), written by the agent only.
const FILE_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A layer's bundle in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) version: u64,
    pub(crate) bundle_sha256: String,
    /// The bundle file, relative to `<state_dir>/fleet/`.
    pub(crate) bundle: String,
    pub(crate) applied_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerState {
    pub(crate) decided: u64,
    #[serde(default)]
    pub(crate) good: Option<Held>,
}

/// A bundle on trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trial {
    pub(crate) target: String,
    pub(crate) version: u64,
    pub(crate) bundle_sha256: String,
    pub(crate) bundle: String,
    pub(crate) started_at: String,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FleetState {
    pub(crate) schema: u64,
    #[serde(default)]
    pub(crate) layers: BTreeMap<String, LayerState>,
    #[serde(default)]
    pub(crate) trial: Option<Trial>,
    #[serde(default)]
    pub(crate) effective_sha256: Option<String>,
    #[serde(default)]
    pub(crate) last_results: BTreeMap<String, Value>,
}

impl Default for FleetState {
    fn default() -> Self {
        FleetState {
            schema: SCHEMA,
            layers: BTreeMap::new(),
            trial: None,
            effective_sha256: None,
            last_results: BTreeMap::new(),
        }
    }
}

/// Where the fleet's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dir {
    root: PathBuf,
}

/// A layer's name in file names: `fleet`, `group.<name>`, `node` (group
/// names are topic levels, so they hold no `/`).
pub(crate) fn file_stem(target: &Target) -> String {
    match target {
        Target::Fleet => "fleet".into(),
        Target::Group(g) => format!("group.{g}"),
        Target::Node(_) => "node".into(),
    }
}

impl Dir {
    pub(crate) fn new(state_dir: &Path) -> Dir {
        Dir {
            root: state_dir.join("fleet"),
        }
    }

    #[cfg(test)]
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub(crate) fn effective_file(&self) -> PathBuf {
        self.root.join("effective.toml")
    }

    /// Load `state.json`. Returns the state and, when the file was
    /// unreadable and moved aside, a sentence saying so.
    pub(crate) fn load(&self) -> (FleetState, Option<String>) {
        let path = self.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (FleetState::default(), None),
            Err(e) => {
                return (
                    FleetState::default(),
                    Some(format!(
                        "{}: cannot read it ({e}); starting without fleet layers",
                        path.display()
                    )),
                );
            }
        };
        let why = match serde_json::from_slice::<FleetState>(&bytes) {
            Ok(s) if s.schema == SCHEMA => return (s, None),
            Ok(s) => format!("schema {} is not {SCHEMA}", s.schema),
            Err(e) => format!("not a fleet state file: {e}"),
        };
        let aside = path.with_file_name(format!(
            "state.json.unreadable-{}",
            crate::status::unix_now()
        ));
        let moved = std::fs::rename(&path, &aside);
        let note = match moved {
            Ok(()) => format!(
                "{} ({why}) was moved to {}; starting afresh: the broker's retained bundles bring each layer back",
                path.display(),
                aside.display()
            ),
            Err(e) => format!(
                "{} ({why}) could not be moved aside ({e}); starting afresh",
                path.display()
            ),
        };
        (FleetState::default(), Some(note))
    }

    /// Load `state.json` for a reader that must not change anything (a
    /// CLI command): an unreadable file is not moved aside.
    pub(crate) fn load_quiet(&self) -> (FleetState, Option<String>) {
        let path = self.state_file();
        match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => (FleetState::default(), None),
            Err(e) => (
                FleetState::default(),
                Some(format!("{}: {e}", path.display())),
            ),
            Ok(bytes) => match serde_json::from_slice::<FleetState>(&bytes) {
                Ok(s) if s.schema == SCHEMA => (s, None),
                Ok(s) => (
                    FleetState::default(),
                    Some(format!(
                        "{}: schema {} is not {SCHEMA}",
                        path.display(),
                        s.schema
                    )),
                ),
                Err(e) => (
                    FleetState::default(),
                    Some(format!("{}: {e}", path.display())),
                ),
            },
        }
    }

    /// Write `state.json` (temp file, fsync, rename, fsync of the directory).
    pub(crate) fn save(&self, state: &FleetState) -> Result<(), StateError> {
        let path = self.state_file();
        let mut text = serde_json::to_vec_pretty(state).expect("the state serializes");
        text.push(b'\n');
        self.write(&path, &text)
    }

    /// Keep a received bundle; returns its name relative to the root.
    pub(crate) fn save_bundle(
        &self,
        target: &Target,
        version: u64,
        bytes: &[u8],
    ) -> Result<String, StateError> {
        let rel = format!("bundles/{}-v{version}.json", file_stem(target));
        self.write(&self.root.join(&rel), bytes)?;
        Ok(rel)
    }

    pub(crate) fn read_bundle(&self, rel: &str) -> Result<Vec<u8>, StateError> {
        let path = self.root.join(rel);
        std::fs::read(&path).map_err(io_err(&path))
    }

    /// The directory a layer version's rule files go to.
    pub(crate) fn rules_dir(&self, target: &Target, version: u64) -> PathBuf {
        self.root
            .join("rules")
            .join(file_stem(target))
            .join(format!("v{version}"))
    }

    /// Write a bundle's rule files (names already checked: one safe path
    /// component each) and return their paths in name order.
    pub(crate) fn write_rules(
        &self,
        target: &Target,
        version: u64,
        rules: &BTreeMap<String, String>,
    ) -> Result<Vec<PathBuf>, StateError> {
        let dir = self.rules_dir(target, version);
        let mut out = Vec::new();
        for (name, text) in rules {
            let path = dir.join(name);
            self.write(&path, text.as_bytes())?;
            out.push(path);
        }
        Ok(out)
    }

    /// The rule files of a layer version as written (name order).
    pub(crate) fn rule_files(
        &self,
        target: &Target,
        version: u64,
        names: impl Iterator<Item = String>,
    ) -> Vec<PathBuf> {
        let dir = self.rules_dir(target, version);
        names.map(|n| dir.join(n)).collect()
    }

    /// Remove bundles and rule directories of layer versions not in
    /// `keep` (`(layer stem, version)`). Failures are left for next time.
    pub(crate) fn prune(&self, keep: &[(String, u64)]) {
        let kept = |stem: &str, v: u64| keep.iter().any(|(s, k)| s == stem && *k == v);
        if let Ok(rd) = std::fs::read_dir(self.root.join("bundles")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((stem, v)) = name
                    .strip_suffix(".json")
                    .and_then(|n| n.rsplit_once("-v"))
                    .and_then(|(s, v)| Some((s.to_string(), v.parse::<u64>().ok()?)))
                    && !kept(&stem, v)
                {
                    let _ = fsio::remove(&e.path());
                }
            }
        }
        if let Ok(layers) = std::fs::read_dir(self.root.join("rules")) {
            for layer in layers.flatten() {
                let stem = layer.file_name().to_string_lossy().into_owned();
                let Ok(versions) = std::fs::read_dir(layer.path()) else {
                    continue;
                };
                for v in versions.flatten() {
                    let name = v.file_name().to_string_lossy().into_owned();
                    if let Some(n) = name.strip_prefix('v').and_then(|n| n.parse::<u64>().ok())
                        && !kept(&stem, n)
                    {
                        let _ = std::fs::remove_dir_all(v.path());
                    }
                }
            }
        }
    }

    /// Write the last good effective config for people to read.
    pub(crate) fn save_effective(&self, text: &str) -> Result<(), StateError> {
        self.write(&self.effective_file(), text.as_bytes())
    }

    fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
        fsio::create_parents(path, DIR_MODE).map_err(io_err(path))?;
        fsio::write_atomic(path, bytes, FILE_MODE, None).map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::new(dir.path());
        let mut s = FleetState::default();
        s.layers.insert(
            "fleet".into(),
            LayerState {
                decided: 5,
                good: Some(Held {
                    version: 4,
                    bundle_sha256: "ab".into(),
                    bundle: "bundles/fleet-v4.json".into(),
                    applied_at: "2026-11-26T07:25:27Z".into(),
                }),
            },
        );
        d.save(&s).unwrap();
        let (loaded, note) = d.load();
        assert_eq!(loaded, s);
        assert!(note.is_none());
    }

    #[test]
    fn an_unreadable_state_file_is_moved_aside_and_the_node_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::new(dir.path());
        std::fs::create_dir_all(d.root()).unwrap();
        std::fs::write(d.state_file(), b"{\"schema\": 99}").unwrap();
        let (s, note) = d.load();
        assert_eq!(s, FleetState::default());
        let note = note.unwrap();
        assert!(
            note.contains("schema 99") && note.contains("moved"),
            "{note}"
        );
        assert!(!d.state_file().exists());
        let aside = std::fs::read_dir(d.root()).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.unreadable-")
        });
        assert!(aside);
    }

    #[test]
    fn pruning_keeps_only_the_named_layer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dir::new(dir.path());
        let mut rules = BTreeMap::new();
        rules.insert("a.yaml".to_string(), "- list: x\n  items: []\n".to_string());
        for v in [1, 2, 3] {
            d.save_bundle(&Target::Fleet, v, b"{}").unwrap();
            d.write_rules(&Target::Fleet, v, &rules).unwrap();
        }
        d.save_bundle(&Target::Group("eu".into()), 7, b"{}")
            .unwrap();
        d.prune(&[("fleet".into(), 2), ("group.eu".into(), 7)]);
        let mut bundles: Vec<_> = std::fs::read_dir(d.root().join("bundles"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        bundles.sort();
        assert_eq!(bundles, ["fleet-v2.json", "group.eu-v7.json"]);
        assert!(d.rules_dir(&Target::Fleet, 2).join("a.yaml").exists());
        assert!(!d.rules_dir(&Target::Fleet, 1).exists());
        assert!(!d.rules_dir(&Target::Fleet, 3).exists());
    }
}
