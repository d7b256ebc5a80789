//! `[rules]`: which rule files the engine loads and how alerts leave it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Problem, resolve_path};

/// Falco's eight priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    #[serde(alias = "informational")]
    Info,
    Debug,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule files or globs, loaded in order; relative to the config file.
    pub files: Vec<PathBuf>,
    /// Alerts at or above this priority are critical-alert outbox records.
    pub alert_threshold: Priority,
    /// Alerts per second each rule may emit (token bucket refill rate).
    pub rate: f64,
    /// Burst of alerts a rule may emit before `rate` applies.
    pub max_burst: u32,
    /// Also append every alert as a JSON line to this file. Empty: off.
    pub json_file: PathBuf,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: vec![PathBuf::from("rules/*.yaml")],
            alert_threshold: Priority::Critical,
            rate: 1.0,
            max_burst: 20,
            json_file: PathBuf::new(),
        }
    }
}

impl RulesConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        for f in &mut self.files {
            resolve_path(base, f);
        }
        resolve_path(base, &mut self.json_file);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            problems.push(Problem::new(
                "rules.rate",
                format!(
                    "must be a positive number of alerts per second, got {}",
                    self.rate
                ),
            ));
        }
        if self.max_burst == 0 {
            problems.push(Problem::new("rules.max_burst", "must be at least 1"));
        }
    }
}
