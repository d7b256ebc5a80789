//! The sections every agent has: `[node]`, `[paths]`, `[log]`, `[control]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{Problem, check_topic_level, resolve_path};

/// `[node]`: who this node is in the fleet. These become MQTT topic levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NodeConfig {
    /// Node id; empty means `/etc/machine-id`, else the hostname.
    pub(crate) id: String,
    /// Fleet id: the second level of every topic.
    pub(crate) fleet: String,
    /// Groups this node belongs to, for group-wide config pushes.
    pub(crate) groups: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            fleet: "default".into(),
            groups: Vec::new(),
        }
    }
}

impl NodeConfig {
    pub(super) fn resolve(&mut self) {
        if self.id.is_empty() {
            self.id = default_node_id();
        }
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        check_topic_level("node.id", &self.id, problems);
        if RESERVED_NODE_IDS.contains(&self.id.as_str()) {
            problems.push(Problem::new(
                "node.id",
                format!(
                    "\"{}\" is reserved: edge/<fleet>/all/config and edge/<fleet>/group/... are the fleet's and the groups' config topics; choose another id",
                    self.id
                ),
            ));
        }
        check_topic_level("node.fleet", &self.fleet, problems);
        for (i, g) in self.groups.iter().enumerate() {
            check_topic_level(&format!("node.groups[{i}]"), g, problems);
        }
    }
}

/// Node ids that would collide with the fleet-wide config topics
/// (`edge/<fleet>/all/config`, `edge/<fleet>/group/<group>/config`).
pub(crate) const RESERVED_NODE_IDS: [&str; 2] = ["all", "group"];

/// `/etc/machine-id` when it holds an id, else the hostname, else "unknown".
pub(crate) fn default_node_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Where a system install keeps its state (systemd's `StateDirectory=edge-agent`).
pub(crate) const SYSTEM_STATE_DIR: &str = "/var/lib/edge-agent";
/// Where a system install puts its socket (systemd's `RuntimeDirectory=edge-agent`).
pub(crate) const SYSTEM_RUNTIME_DIR: &str = "/run/edge-agent";

/// `[paths]`: where the agent keeps state (outbox, undo log) and its socket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// Empty means: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`),
    /// else `/var/lib/edge-agent` as root, else `$XDG_STATE_HOME/edge-agent`.
    pub state_dir: PathBuf,
    /// Empty means: `$RUNTIME_DIRECTORY`, else `/run/edge-agent` as root,
    /// else `$XDG_RUNTIME_DIR/edge-agent`, else `/tmp/edge-agent-<uid>`.
    pub(crate) runtime_dir: PathBuf,
    /// Which of the two were left empty and filled from the defaults above.
    /// A default depends on who asks (root or not, under systemd or not), so
    /// a client such as `status` run by a member of the control group also
    /// looks where a system install keeps them.
    #[serde(skip)]
    defaulted: Defaulted,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Defaulted {
    state_dir: bool,
    runtime_dir: bool,
}

impl PathsConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        let root = nix::unistd::geteuid().is_root();
        self.defaulted = Defaulted {
            state_dir: self.state_dir.as_os_str().is_empty(),
            runtime_dir: self.runtime_dir.as_os_str().is_empty(),
        };
        if self.state_dir.as_os_str().is_empty() {
            self.state_dir = first_env_dir("STATE_DIRECTORY").unwrap_or_else(|| {
                if root {
                    PathBuf::from(SYSTEM_STATE_DIR)
                } else {
                    xdg_dir("XDG_STATE_HOME", ".local/state").join("edge-agent")
                }
            });
        }
        if self.runtime_dir.as_os_str().is_empty() {
            self.runtime_dir = first_env_dir("RUNTIME_DIRECTORY").unwrap_or_else(|| {
                if root {
                    PathBuf::from(SYSTEM_RUNTIME_DIR)
                } else if let Some(dir) =
                    std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())
                {
                    PathBuf::from(dir).join("edge-agent")
                } else {
                    PathBuf::from(format!("/tmp/edge-agent-{}", nix::unistd::geteuid()))
                }
            });
        }
        resolve_path(base, &mut self.state_dir);
        resolve_path(base, &mut self.runtime_dir);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        // The socket path must fit in sockaddr_un.sun_path (108 bytes with NUL).
        const SUN_PATH_MAX: usize = 107;
        let sock = self.control_socket();
        if sock.as_os_str().len() > SUN_PATH_MAX {
            problems.push(Problem::new(
                "paths.runtime_dir",
                format!(
                    "{} is too long for a Unix socket path; choose a shorter runtime_dir",
                    sock.display()
                ),
            ));
        }
    }

    /// `<runtime_dir>/control.sock`.
    pub(crate) fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join(CONTROL_SOCKET_NAME)
    }

    /// Where a client should look for the daemon's socket, in order: the
    /// configured (or defaulted) one, then, when `runtime_dir` was left
    /// empty, where a system install puts it. A member of the control group
    /// is not root, so its own default differs from the daemon's.
    pub(crate) fn control_socket_candidates(&self) -> Vec<PathBuf> {
        let mut v = vec![self.control_socket()];
        let system = Path::new(SYSTEM_RUNTIME_DIR).join(CONTROL_SOCKET_NAME);
        if self.defaulted.runtime_dir && !v.contains(&system) {
            v.push(system);
        }
        v
    }

    /// The state directory a client should report: the configured one, or,
    /// when it was left empty and only a system install's exists, that one.
    pub(crate) fn state_dir_for_client(&self) -> PathBuf {
        let system = Path::new(SYSTEM_STATE_DIR);
        if self.defaulted.state_dir && !self.state_dir.is_dir() && system.is_dir() {
            system.to_path_buf()
        } else {
            self.state_dir.clone()
        }
    }

    /// `[paths]` from a file that may not parse or validate as a whole, for
    /// clients that must still find a running daemon (`status` with a broken
    /// config). Keys that are missing or not strings take their defaults.
    ///
    /// A file that is not even TOML is read line by line: the `[paths]`
    /// section's `key = "value"` lines are usually intact when a typo
    /// elsewhere breaks the syntax.
    pub(crate) fn lenient(text: &str, config_path: &Path) -> PathsConfig {
        let table: toml::Table = text.parse().unwrap_or_else(|_| paths_lines(text));
        let paths = table.get("paths").and_then(|p| p.as_table());
        let get = |key: &str| {
            paths
                .and_then(|p| p.get(key))
                .and_then(|v| v.as_str())
                .map(PathBuf::from)
                .unwrap_or_default()
        };
        let mut p = PathsConfig {
            state_dir: get("state_dir"),
            runtime_dir: get("runtime_dir"),
            defaulted: Defaulted::default(),
        };
        p.resolve(super::config_dir(config_path));
        p
    }
}

/// The `[paths]` table of a file that does not parse, from the lines between
/// its `[paths]` header and the next header that parse on their own.
fn paths_lines(text: &str) -> toml::Table {
    let mut paths = toml::Table::new();
    let mut in_paths = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_paths = line.trim_end_matches(|c: char| c != ']') == "[paths]";
        } else if in_paths && let Ok(kv) = line.parse::<toml::Table>() {
            paths.extend(kv);
        }
    }
    let mut table = toml::Table::new();
    table.insert("paths".into(), toml::Value::Table(paths));
    table
}

/// The control socket's file name inside `runtime_dir`.
pub(crate) const CONTROL_SOCKET_NAME: &str = "control.sock";

/// systemd passes `STATE_DIRECTORY=/var/lib/a:/var/lib/b`; the first is ours.
fn first_env_dir(var: &str) -> Option<PathBuf> {
    let v = std::env::var_os(var)?;
    let s = v.to_string_lossy();
    s.split(':')
        .next()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

fn xdg_dir(var: &str, fallback_below_home: &str) -> PathBuf {
    match std::env::var_os(var).filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            home.join(fallback_below_home)
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One line per event, no colours, no timestamps (journald adds its own).
    #[default]
    Plain,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    pub(crate) level: LogLevel,
    pub(crate) format: LogFormat,
}

/// `[control]`: who may talk to the daemon's control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ControlConfig {
    /// Group that owns the socket (mode 0660). Members and root may connect.
    pub(crate) group: String,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            group: "edge-agent".into(),
        }
    }
}

impl ControlConfig {
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.group.is_empty() || self.group.contains(|c: char| c == ':' || c.is_whitespace()) {
            problems.push(Problem::new(
                "control.group",
                format!("\"{}\" is not a valid group name", self.group),
            ));
        }
    }
}

impl Section for NodeConfig {
    const ID: SectionId = SectionId::Node;
    /// The node's identity is in its topics, its client id and its outbox
    /// records.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Everything;
}

impl Section for PathsConfig {
    const ID: SectionId = SectionId::Paths;
    /// The outbox file and the control socket are opened once.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Everything;
}

impl Section for LogConfig {
    const ID: SectionId = SectionId::Log;
    /// The log subscriber's format is fixed when it is installed; its level
    /// is not.
    const RESTART_ONLY: RestartOnly<Self> =
        RestartOnly::Keys(&[("format", |new, running| new.format = running.format)]);
}

impl Section for ControlConfig {
    const ID: SectionId = SectionId::Control;
    /// The socket's group is set when it is created.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Everything;
}
