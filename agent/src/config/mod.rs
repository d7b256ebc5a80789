//! `agent.toml`: the schema, its defaults, and validation.
//!
//! Owns turning a file into an [`AgentConfig`] or into errors a person can act
//! on: every error names the file, the key path and the reason
//! (`agent.toml: metrics.interval: expected a duration such as "30s", got "abc"`).
//! Unknown keys are errors, not warnings: a typo in a security agent's config
//! must not silently fall back to a default. Never starts or stops anything.
//!
//! Each section lives in its own file beside this one; a section validates
//! itself and resolves its relative paths against the config file's
//! directory, so `rules/*.yaml` in `/etc/edge-agent/agent.toml` means
//! `/etc/edge-agent/rules/*.yaml`.

mod bootstrap;
mod bridge;
mod core;
pub(crate) mod diff;
mod fleet;
mod metrics;
mod outbox;
mod rules;
mod sensor;
mod units;
mod uplink;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub(crate) use self::bootstrap::BootstrapConfig;
pub use self::bootstrap::{KubeProxyMode, Role, Snapshotter};
#[cfg(test)]
pub(crate) use self::bootstrap::{MirrorConfig, RegistryAuthConfig};
pub(crate) use self::bridge::BridgeConfig;
pub(crate) use self::core::{
    ControlConfig, LogConfig, LogFormat, LogLevel, NodeConfig, PathsConfig, RESERVED_NODE_IDS,
};
pub(crate) use self::diff::{ConfigDiff, SectionId};
pub(crate) use self::fleet::FleetConfig;
pub(crate) use self::metrics::MetricsConfig;
pub(crate) use self::outbox::OutboxConfig;
pub use self::rules::Priority;
pub(crate) use self::rules::RulesConfig;
#[cfg(test)]
pub(crate) use self::sensor::Access;
pub(crate) use self::sensor::DenyOpen;
pub use self::sensor::SensorConfig;
pub(crate) use self::units::{ByteSize, HumanDuration};
pub(crate) use self::uplink::{BrokerAddress, UplinkConfig};

/// Where the agent looks for its config when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/edge-agent/agent.toml";

/// The whole of `agent.toml`. Every section has defaults, so an empty file is
/// a valid config for a local, offline try.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub(crate) node: NodeConfig,
    pub paths: PathsConfig,
    pub(crate) log: LogConfig,
    pub(crate) control: ControlConfig,
    pub(crate) uplink: UplinkConfig,
    pub(crate) outbox: OutboxConfig,
    pub(crate) sensor: SensorConfig,
    pub(crate) rules: RulesConfig,
    pub(crate) metrics: MetricsConfig,
    pub bootstrap: BootstrapConfig,
    pub(crate) fleet: FleetConfig,
    /// Operator side only (`edge-agent fleet bridge`); a node ignores it.
    pub(crate) bridge: BridgeConfig,
}

/// One thing wrong with a value that parsed: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `uplink.cert_file`.
    pub(crate) key: String,
    pub(crate) reason: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Why a config could not be used. Display gives one line per problem, each
/// starting with the file path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source} (check the path given with --config)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}{}", path.display(), key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default(), message)]
    Parse {
        path: PathBuf,
        /// The dotted key path where the value was wrong, when known.
        key: Option<String>,
        /// `message` already carries "(line L, column C)" when the position is known.
        message: String,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}: {}", path.display(), p.key, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A config that parsed and validated, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadedConfig {
    pub(crate) config: AgentConfig,
    /// The file it was read from (as given, not canonicalised).
    pub(crate) path: PathBuf,
    /// Its text as read (fleet config lays its layers over it).
    pub(crate) text: String,
}

impl AgentConfig {
    /// Read, parse, resolve defaults and relative paths, and validate.
    pub(crate) fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::from_toml(&text, path)?;
        Ok(LoadedConfig {
            config,
            path: path.to_path_buf(),
            text,
        })
    }

    /// Parse `text` as if it were the file at `path` (used for error messages
    /// and to resolve relative paths).
    pub fn from_toml(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let mut config = parse_text(text, path, Positions::Show)?;
        config.resolve(config_dir(path));
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Build a config from a TOML table that stands for the file at `path`
    /// (fleet config merges the local file's table with the bundles'
    /// overlays): the same checks, defaults and relative-path resolution as
    /// [`AgentConfig::from_toml`]. Errors carry the key, not a position.
    pub(crate) fn from_table(table: toml::Table, path: &Path) -> Result<AgentConfig, ConfigError> {
        // Through the text deserializer, not `toml::Value`'s: a second
        // deserializer for the whole schema doubled its code in the static
        // binary (about 300 KiB). Positions in the rewritten text would mean
        // nothing to anyone, so errors carry only the key.
        let text = toml::to_string(&table).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            key: None,
            message: e.to_string().trim().to_string(),
        })?;
        let mut config = parse_text(&text, path, Positions::Omit)?;
        config.resolve(config_dir(path));
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// The file's text as a TOML table (syntax only; no schema check).
    pub(crate) fn parse_table(text: &str, path: &Path) -> Result<toml::Table, ConfigError> {
        text.parse::<toml::Table>().map_err(|e| {
            let position = e
                .span()
                .map(|span| {
                    let (line, column) = line_column(text, span.start);
                    format!(" (line {line}, column {column})")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                key: None,
                message: format!("not valid TOML: {}{position}", e.message().trim()),
            }
        })
    }

    /// Fill derived defaults (node id, state paths) and make relative paths
    /// absolute against `base`, the directory holding the config file.
    fn resolve(&mut self, base: &Path) {
        self.node.resolve();
        self.paths.resolve(base);
        self.uplink.resolve(base);
        self.outbox.resolve(base);
        self.sensor.resolve(base);
        self.rules.resolve(base);
        self.metrics.resolve(base);
        self.bootstrap.resolve(base);
        self.fleet.resolve(base);
        self.bridge.resolve(base);
    }

    /// Every problem at once, so an operator fixes the file in one pass.
    pub(crate) fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.node.validate(&mut problems);
        self.paths.validate(&mut problems);
        self.control.validate(&mut problems);
        self.uplink.validate(&mut problems);
        self.outbox.validate(&mut problems);
        self.sensor.validate(&mut problems);
        self.rules.validate(&mut problems);
        self.metrics.validate(&mut problems);
        self.bootstrap.validate(&mut problems);
        self.fleet.validate(&mut problems);
        self.bridge.validate(&mut problems);
        problems
    }
}

/// The directory relative paths in the file at `path` are relative to.
fn config_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether errors name a line and column of the text parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Positions {
    Show,
    Omit,
}

/// The one deserializer of the schema: every way into an `AgentConfig`
/// goes through it.
fn parse_text(text: &str, path: &Path, positions: Positions) -> Result<AgentConfig, ConfigError> {
    let position = |span: Option<std::ops::Range<usize>>| -> String {
        match span.filter(|_| positions == Positions::Show) {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!(" (line {line}, column {column})")
            }
            None => String::new(),
        }
    };
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        key: None,
        message: format!(
            "not valid TOML: {}{}",
            e.message().trim(),
            position(e.span())
        ),
    })?;
    AgentConfig::deserialize(de).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        key: error_key(&e),
        message: format!("{}{}", e.message().trim(), position(e.span())),
    })
}

/// The dotted key a schema error is about (`metrics.interval`), `None` at
/// the top level. toml tracks it as the error travels up through the
/// tables but shows it only in its `Display`, and there only without the
/// input text: ``"<message>\nin `<key>`"``. (serde_path_to_error gave the
/// same path with array indexes, but wrapping every visitor of the schema
/// cost the static binary about 300 KiB.)
fn error_key(e: &toml::de::Error) -> Option<String> {
    let mut e = e.clone();
    e.set_input(None);
    let shown = e.to_string();
    let table = shown
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("in `")?.strip_suffix('`'))
        .unwrap_or("");
    // An unknown key's trail ends at its table; the key itself is only in
    // the message ("unknown field `max_bursts`, expected ...").
    let unknown = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(field, _)| field);
    let key = match (table, unknown) {
        ("", Some(field)) => field.to_string(),
        (table, Some(field)) => format!("{table}.{field}"),
        (table, None) => table.to_string(),
    };
    (!key.is_empty()).then_some(key)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Make `p` absolute against `base` when it is relative. Empty stays empty.
pub(crate) fn resolve_path(base: &Path, p: &mut PathBuf) {
    if !p.as_os_str().is_empty() && p.is_relative() {
        *p = base.join(&*p);
    }
}

/// Check a value that becomes one level of an MQTT topic (node id, fleet,
/// group): non-empty, no `/`, `+`, `#`, whitespace or control characters.
pub(crate) fn check_topic_level(key: &str, value: &str, problems: &mut Vec<Problem>) {
    /// Long enough for a UUID or a machine-id with a prefix; short enough that
    /// topics stay readable.
    const MAX_TOPIC_LEVEL: usize = 64;
    if value.is_empty() {
        problems.push(Problem::new(key, "must not be empty"));
    } else if value.len() > MAX_TOPIC_LEVEL {
        problems.push(Problem::new(
            key,
            format!(
                "must be at most {MAX_TOPIC_LEVEL} characters, got {}",
                value.len()
            ),
        ));
    } else if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_whitespace() || c.is_control())
    {
        problems.push(Problem::new(
            key,
            format!("\"{value}\" contains {c:?}, which cannot appear in an MQTT topic level; use letters, digits, '-', '_' or '.'"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        AgentConfig::from_toml(text, Path::new("agent.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_empty_file_is_a_valid_config() {
        let c = AgentConfig::from_toml("", Path::new("agent.toml")).unwrap();
        assert!(!c.node.id.is_empty());
    }

    #[test]
    fn a_bad_duration_names_file_key_and_reason() {
        let e = err("[metrics]\ninterval = \"abc\"\n");
        assert!(
            e.starts_with(
                "agent.toml: metrics.interval: expected a duration such as \"30s\", got \"abc\""
            ),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = err("[metrics]\nintervall = \"30s\"\n");
        assert!(e.starts_with("agent.toml: metrics.intervall: "), "{e}");
        let e = err("[metrix]\n");
        assert!(e.starts_with("agent.toml: metrix: "), "{e}");
        let e = err("[[sensor.deny_open]]\npath = \"/etc\"\nacess = \"write\"\n");
        assert!(e.contains("sensor.deny_open"), "{e}");
        assert!(e.contains("acess"), "{e}");
    }

    #[test]
    fn wrong_types_are_rejected_with_their_path() {
        let e = err("[node]\ngroups = \"edge\"\n");
        assert!(e.starts_with("agent.toml: node.groups: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[bridge.remote_write_headers]\nx = 1\n");
        assert!(
            e.starts_with("agent.toml: bridge.remote_write_headers.x: "),
            "{e}"
        );
    }

    #[test]
    fn a_merged_table_is_read_like_the_file_and_its_errors_name_the_key_only() {
        let text = "[metrics]\ninterval = \"15s\"\n[node]\ngroups = [\"edge\"]\n";
        let table = AgentConfig::parse_table(text, Path::new("agent.toml")).unwrap();
        assert_eq!(
            AgentConfig::from_table(table, Path::new("agent.toml")).unwrap(),
            AgentConfig::from_toml(text, Path::new("agent.toml")).unwrap()
        );
        let table =
            AgentConfig::parse_table("[metrics]\ninterval = \"abc\"\n", Path::new("x")).unwrap();
        let e = AgentConfig::from_table(table, Path::new("agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.toml: metrics.interval: expected a duration"),
            "{e}"
        );
        assert!(!e.contains("line"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = err("[node\n");
        assert!(e.starts_with("agent.toml: not valid TOML"), "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn impossible_values_are_all_reported_at_once() {
        let e = err("[node]\nid = \"a/b\"\nfleet = \"\"\n");
        assert!(e.contains("agent.toml: node.id:"), "{e}");
        assert!(
            e.contains("agent.toml: node.fleet: must not be empty"),
            "{e}"
        );
    }

    #[test]
    fn node_ids_all_and_group_are_reserved_for_fleet_topics() {
        for id in ["all", "group"] {
            let e = err(&format!("[node]\nid = \"{id}\"\n"));
            assert!(
                e.contains("agent.toml: node.id:") && e.contains("reserved"),
                "{e}"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = AgentConfig::from_toml(
            "[paths]\nstate_dir = \"state\"\n",
            Path::new("/etc/edge-agent/agent.toml"),
        )
        .unwrap();
        assert_eq!(c.paths.state_dir, PathBuf::from("/etc/edge-agent/state"));
    }

    #[test]
    fn a_broken_file_still_yields_its_runtime_dir_for_clients() {
        let text = "[paths]\nruntime_dir = \"run\"\n[metrics]\ninterval = \"abc\"\n";
        assert!(AgentConfig::from_toml(text, Path::new("/etc/ea/agent.toml")).is_err());
        let p = PathsConfig::lenient(text, Path::new("/etc/ea/agent.toml"));
        assert_eq!(p.runtime_dir, PathBuf::from("/etc/ea/run"));
        assert_eq!(
            p.control_socket_candidates(),
            [PathBuf::from("/etc/ea/run/control.sock")]
        );
    }

    #[test]
    fn a_file_that_is_not_toml_still_yields_the_paths_section_lines() {
        let text = "[node]\nid = \"a\"\n[paths]  # ours\nruntime_dir = \"/srv/run\"\nstate_dir = oops\n[metrics\n";
        let p = PathsConfig::lenient(text, Path::new("/etc/ea/agent.toml"));
        assert_eq!(p.runtime_dir, PathBuf::from("/srv/run"));
        let default = PathsConfig::lenient("", Path::new("/etc/ea/agent.toml"));
        assert_eq!(
            p.state_dir, default.state_dir,
            "an unparsable line keeps its default"
        );
        let nothing = PathsConfig::lenient("[paths\n", Path::new("/etc/ea/agent.toml"));
        assert_eq!(nothing, default);
    }

    #[test]
    fn a_defaulted_runtime_dir_also_points_clients_at_the_system_socket() {
        let p = PathsConfig::lenient("", Path::new("/etc/ea/agent.toml"));
        let candidates = p.control_socket_candidates();
        assert_eq!(candidates[0], p.control_socket());
        assert_eq!(
            candidates.last().unwrap(),
            &PathBuf::from("/run/edge-agent/control.sock")
        );
    }
}
