//! `[rules]`: which rule files the engine loads and how alerts leave it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{ByteSize, Problem, resolve_path};

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

impl Priority {
    /// Most severe first.
    pub(crate) const ALL: [Priority; 8] = [
        Priority::Emergency,
        Priority::Alert,
        Priority::Critical,
        Priority::Error,
        Priority::Warning,
        Priority::Notice,
        Priority::Info,
        Priority::Debug,
    ];

    /// How Falco prints it in alerts (`"priority": "Warning"`).
    pub(crate) fn falco_name(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Info => "Informational",
            Priority::Debug => "Debug",
        }
    }

    /// Lower-case key (`warning`), as in config and status.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Alert => "alert",
            Priority::Critical => "critical",
            Priority::Error => "error",
            Priority::Warning => "warning",
            Priority::Notice => "notice",
            Priority::Info => "info",
            Priority::Debug => "debug",
        }
    }

    /// A rule file's `priority:` value, in any case (`WARNING`, `Informational`).
    pub(crate) fn parse_falco(s: &str) -> Option<Priority> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "informational" | "info" => Some(Priority::Info),
            _ => Priority::ALL.into_iter().find(|p| p.as_str() == l),
        }
    }

    /// Whether this priority is at least as severe as `threshold`.
    pub(crate) fn at_or_above(self, threshold: Priority) -> bool {
        self <= threshold
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Rotated alert files beyond this are a typo, not a retention policy.
const MAX_JSON_FILES_KEPT: u32 = 100;

/// Alerts kept on the node at most: the history is read whole by
/// `edge-agent alerts`, so it stays small.
const MAX_HISTORY: u32 = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RulesConfig {
    /// Rule files or globs, loaded in order; relative to the config file.
    pub(crate) files: Vec<PathBuf>,
    /// Alerts at or above this priority are critical-alert outbox records.
    pub(crate) alert_threshold: Priority,
    /// Alerts per second each rule may emit (token bucket refill rate).
    pub(crate) rate: f64,
    /// Burst of alerts a rule may emit before `rate` applies.
    pub(crate) max_burst: u32,
    /// Also append every alert as a JSON line to this file. Empty: off.
    pub(crate) json_file: PathBuf,
    /// `json_file` is rotated (`.1`, `.2`, ...) when it reaches this size. 0: never.
    pub(crate) json_file_max_bytes: ByteSize,
    /// Rotated `json_file`s kept.
    pub(crate) json_file_keep: u32,
    /// Alerts kept on the node (state directory) for `edge-agent alerts`. 0: none.
    pub(crate) history: u32,
    /// Disk the kept alerts may take at most.
    pub(crate) history_max_bytes: ByteSize,
    /// One journald line per alert at the rule's priority (Falco's syslog_output).
    pub(crate) syslog_output: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: vec![PathBuf::from("rules/*.yaml")],
            alert_threshold: Priority::Critical,
            rate: 1.0,
            max_burst: 20,
            json_file: PathBuf::new(),
            json_file_max_bytes: ByteSize(64 * 1024 * 1024),
            json_file_keep: 5,
            history: 1000,
            history_max_bytes: ByteSize(2 * 1024 * 1024),
            syslog_output: true,
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
        if self.json_file_max_bytes.0 != 0 && self.json_file_max_bytes.0 < 4096 {
            problems.push(Problem::new(
                "rules.json_file_max_bytes",
                "must be 0 (never rotate) or at least 4 KiB",
            ));
        }
        if self.json_file_keep > MAX_JSON_FILES_KEPT {
            problems.push(Problem::new(
                "rules.json_file_keep",
                format!("must be at most {MAX_JSON_FILES_KEPT}"),
            ));
        }
        if self.history > MAX_HISTORY {
            problems.push(Problem::new(
                "rules.history",
                format!("must be at most {MAX_HISTORY} alerts"),
            ));
        }
        if self.history > 0 && self.history_max_bytes.0 < 64 * 1024 {
            problems.push(Problem::new(
                "rules.history_max_bytes",
                "must be at least 64 KiB",
            ));
        }
        if self.files.is_empty() {
            problems.push(Problem::new(
                "rules.files",
                "must name at least one rule file or glob (the shipped set is \"rules/*.yaml\")",
            ));
        }
    }
}

impl Section for RulesConfig {
    const ID: SectionId = SectionId::Rules;
    /// A change reloads the rule files and swaps the set in whole.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}
