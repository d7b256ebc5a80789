//! What a node says about its fleet config: the result of each bundle
//! (a `config/result` record) and the summary carried by the retained
//! state message and `status` (`fleet`). Both are read back by the
//! operator's `fleet results` and `fleet nodes`.
//!
//! # `edge/<fleet>/<node>/config/result` (through the outbox)
//! Exactly these fields (the outbox adds `node`, `seq` and `schema`):
//! - `layer`: the layer of the topic the bundle arrived on (`fleet`,
//!   `group:<name>`, `node:<id>`);
//! - `target`: the layer the bundle says it is for (null when it could not
//!   be read);
//! - `version`: the bundle's version (null when it could not be read);
//! - `bundle_sha256`: SHA-256 of the bundle as received (`sha256sum
//!   bundle.json` on the operator's side);
//! - `outcome`: `applied`, `refused`, `reverted` or `stale`;
//! - `reasons`: why (refusals and reverts), or what waits for a restart;
//! - `effective_sha256`: the effective config in force after the decision;
//! - `time`: RFC 3339, when the node decided.
//!
//! # `fleet` in the state message and in `status --json`
//! `{"enabled": true, "layers": {"fleet": 3, "group:eu": 1, "node:n1": 7},
//!   "effective_sha256": "..", "trial": null | {"layer", "version",
//!   "started_at", "deadline"}, "last_results": {"<layer>": <result>}}`
//! (`layers`: the version in force per layer, lowest precedence first).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the node did with a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// In force: it passed its trial.
    Applied,
    /// Not applied, nothing changed (bad signature, forbidden keys, ...).
    Refused,
    /// Applied, then taken back: a stage was not healthy within the trial
    /// (or the agent stopped during it). The previous config is in force.
    Reverted,
    /// A version below the one in force for its layer; nothing changed.
    Stale,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
            Outcome::Reverted => "reverted",
            Outcome::Stale => "stale",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `config/result` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigResult {
    pub(crate) layer: String,
    pub(crate) target: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) bundle_sha256: String,
    pub(crate) outcome: Outcome,
    pub(crate) reasons: Vec<String>,
    pub(crate) effective_sha256: String,
    pub(crate) time: String,
}

impl ConfigResult {
    /// The record's payload for the outbox.
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("a result serializes") {
            Value::Object(m) => m,
            _ => unreachable!("a struct serializes to an object"),
        }
    }
}

/// The trial in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TrialSummary {
    pub(crate) layer: String,
    pub(crate) version: u64,
    /// Unix seconds.
    pub(crate) started_at: u64,
    /// Unix seconds: reverted unless healthy by then.
    pub(crate) deadline: u64,
}

/// The node's fleet config at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// `fleet.trusted_keys` is set: the node takes fleet config.
    pub(crate) enabled: bool,
    /// Version in force per layer, lowest precedence first.
    pub(crate) layers: Map<String, Value>,
    pub(crate) effective_sha256: Option<String>,
    pub(crate) trial: Option<TrialSummary>,
    pub(crate) last_results: Map<String, Value>,
}

impl Summary {
    /// `fleet v3, group:eu v1, node:n1 v7` (or `none`).
    pub(crate) fn layers_line(&self) -> String {
        if self.layers.is_empty() {
            return "no fleet layers".into();
        }
        self.layers
            .iter()
            .map(|(l, v)| format!("{l} v{}", v.as_u64().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The most recent result of any layer.
    pub(crate) fn last_result(&self) -> Option<ConfigResult> {
        self.last_results
            .values()
            .filter_map(|v| serde_json::from_value::<ConfigResult>(v.clone()).ok())
            .max_by(|a, b| a.time.cmp(&b.time))
    }
}
