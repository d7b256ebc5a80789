//! `[sensor]`: the eBPF sensor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{ByteSize, Problem, resolve_path};

/// Where containerd keeps its running tasks' bundles (`<dir>/[<namespace>/]<id>/config.json`):
/// K3s's embedded containerd (namespace `k8s.io`) and a plain containerd.
pub(crate) const DEFAULT_RUNTIME_STATE_DIRS: [&str; 2] = [
    "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io",
    "/run/containerd/io.containerd.runtime.v2.task",
];

/// Entries the kernel's filter maps hold (`ea_exclude_comms`,
/// `ea_open_prefixes`, `ea_exclude_paths`: 256; `ea_deny_exec`: 1024 hashes,
/// two per entry).
const MAX_FILTER_ENTRIES: usize = 256;
const MAX_DENY_ENTRIES: usize = 512;

/// One `[[sensor.deny_open]]` entry: opens of `path` (a file, or a
/// directory and everything below it) with `access` are refused, except by
/// the executables in `allow`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyOpen {
    pub(crate) path: PathBuf,
    #[serde(default)]
    pub(crate) access: Access,
    #[serde(default)]
    pub(crate) allow: Vec<PathBuf>,
}

/// What a `deny_open` entry refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Access {
    /// Opens for writing (and creating files below a directory).
    #[default]
    Write,
    /// Opens for reading.
    Read,
    /// Both.
    Any,
}

impl Access {
    /// The kernel's `EA_ACCESS_*` bits.
    pub(crate) fn bits(self) -> u32 {
        use crate::sensor::abi::{ACCESS_READ, ACCESS_WRITE};
        match self {
            Access::Write => ACCESS_WRITE,
            Access::Read => ACCESS_READ,
            Access::Any => ACCESS_READ | ACCESS_WRITE,
        }
    }
}

/// Executables one `deny_open` entry may let through (the kernel's
/// `ea_deny_open_allow` holds 1024 in all).
const MAX_DENY_OPEN_ALLOW: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorConfig {
    pub enabled: bool,
    /// Process names (comm) whose events are dropped in the kernel.
    pub exclude_comms: Vec<String>,
    /// cgroups (paths below the cgroup v2 root) whose processes, and those
    /// of every cgroup below them, are not watched; dropped in the kernel.
    pub exclude_cgroups: Vec<String>,
    /// Path prefixes whose file events are dropped in the kernel.
    pub exclude_paths: Vec<PathBuf>,
    /// Read-only opens are reported only below these prefixes (and any
    /// `/proc/<pid>/environ`, whatever they are).
    pub watch_open_prefixes: Vec<PathBuf>,
    /// Size of the kernel-to-user ring buffer (a power of two).
    pub ring_buffer_bytes: ByteSize,
    /// Executables (full path or name) refused at exec (BPF-LSM) or killed
    /// there (elsewhere). Empty: enforcement off.
    pub deny_exec: Vec<String>,
    /// Files and directories whose opens are refused in the kernel
    /// (BPF-LSM only). Empty: off.
    pub deny_open: Vec<DenyOpen>,
    /// Container runtime state directories holding task bundles.
    pub runtime_state_dirs: Vec<PathBuf>,
    /// Processes the process table keeps at most.
    pub max_processes: usize,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exclude_comms: Vec::new(),
            exclude_cgroups: Vec::new(),
            exclude_paths: Vec::new(),
            watch_open_prefixes: [
                "/etc",
                "/root",
                // Users' credentials (~/.ssh, ~/.aws) that rules watch.
                "/home",
                "/var/run/secrets",
                "/run/secrets",
                "/proc/self",
                "/dev/shm",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            // Enough for a burst of ~10,000 records while the reader is
            // busy; its pages count twice in the agent's RSS (the kernel maps
            // the ring twice for wrap-around), so bigger costs visibly.
            ring_buffer_bytes: ByteSize::mib(4),
            deny_exec: Vec::new(),
            deny_open: Vec::new(),
            runtime_state_dirs: DEFAULT_RUNTIME_STATE_DIRS
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            max_processes: 8192,
        }
    }
}

impl SensorConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        for d in &mut self.runtime_state_dirs {
            resolve_path(base, d);
        }
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let rb = self.ring_buffer_bytes.get();
        if !rb.is_power_of_two() || !(4096..=(1 << 30)).contains(&rb) {
            problems.push(Problem::new(
                "sensor.ring_buffer_bytes",
                format!(
                    "must be a power of two between 4 KiB and 1 GiB (the kernel's rule), got {rb}"
                ),
            ));
        }
        for (key, list, max_len) in [
            ("sensor.exclude_paths", &self.exclude_paths, 127),
            ("sensor.watch_open_prefixes", &self.watch_open_prefixes, 127),
        ] {
            if list.len() > MAX_FILTER_ENTRIES {
                problems.push(Problem::new(
                    key,
                    format!("at most {MAX_FILTER_ENTRIES} entries, got {}", list.len()),
                ));
            }
            for (i, p) in list.iter().enumerate() {
                let s = p.to_string_lossy();
                if !p.is_absolute() {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!("\"{s}\" must be an absolute path"),
                    ));
                } else if s.len() > max_len {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!("\"{s}\" is longer than the {max_len} bytes the kernel filter compares; use a shorter prefix"),
                    ));
                }
            }
        }
        if self.exclude_comms.len() > MAX_FILTER_ENTRIES {
            problems.push(Problem::new(
                "sensor.exclude_comms",
                format!(
                    "at most {MAX_FILTER_ENTRIES} entries, got {}",
                    self.exclude_comms.len()
                ),
            ));
        }
        for (i, c) in self.exclude_comms.iter().enumerate() {
            if c.is_empty() || c.len() > 15 || c.contains('\0') {
                problems.push(Problem::new(
                    format!("sensor.exclude_comms[{i}]"),
                    format!("\"{c}\" must be a process name of 1 to 15 bytes (the kernel's comm is cut at 15)"),
                ));
            }
        }
        if self.exclude_cgroups.len() > MAX_FILTER_ENTRIES {
            problems.push(Problem::new(
                "sensor.exclude_cgroups",
                format!(
                    "at most {MAX_FILTER_ENTRIES} entries, got {}",
                    self.exclude_cgroups.len()
                ),
            ));
        }
        for (i, c) in self.exclude_cgroups.iter().enumerate() {
            let parts: Vec<&str> = c.trim_matches('/').split('/').collect();
            if c.contains('\0')
                || parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                problems.push(Problem::new(
                    format!("sensor.exclude_cgroups[{i}]"),
                    format!("\"{c}\" must be a cgroup path below the cgroup v2 root, such as \"system.slice/backup.service\" (no empty, '.' or '..' parts)"),
                ));
            }
        }
        if self.deny_exec.len() > MAX_DENY_ENTRIES {
            problems.push(Problem::new(
                "sensor.deny_exec",
                format!(
                    "at most {MAX_DENY_ENTRIES} entries, got {}",
                    self.deny_exec.len()
                ),
            ));
        }
        for (i, d) in self.deny_exec.iter().enumerate() {
            let key = format!("sensor.deny_exec[{i}]");
            if d.is_empty() || d.contains('\0') {
                problems.push(Problem::new(
                    key,
                    "must be a full path or a bare executable name",
                ));
            } else if d.starts_with('/') {
                if d.len() > crate::sensor::abi::DENY_PATH_MAX {
                    problems.push(Problem::new(
                        key,
                        format!(
                            "\"{d}\" is longer than the {} bytes the kernel compares",
                            crate::sensor::abi::DENY_PATH_MAX
                        ),
                    ));
                } else if d.ends_with('/') || d.split('/').any(|c| c == "." || c == "..") {
                    problems.push(Problem::new(
                        key,
                        format!("\"{d}\" must be a normalized path to a file (no trailing '/', '.' or '..')"),
                    ));
                }
            } else if d.contains('/') {
                problems.push(Problem::new(
                    key,
                    format!("\"{d}\" is neither an absolute path nor a bare name; write \"/full/path/{}\" or just the name", d.rsplit('/').next().unwrap_or(d)),
                ));
            }
        }
        self.validate_deny_open(problems);
        for (i, p) in self.runtime_state_dirs.iter().enumerate() {
            if p.as_os_str().is_empty() {
                problems.push(Problem::new(
                    format!("sensor.runtime_state_dirs[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if !(64..=1_048_576).contains(&self.max_processes) {
            problems.push(Problem::new(
                "sensor.max_processes",
                format!("must be between 64 and 1048576, got {}", self.max_processes),
            ));
        }
    }
}

impl Section for SensorConfig {
    const ID: SectionId = SectionId::Sensor;
    /// Read when the sensor loads its programs and sizes its tables; the
    /// in-kernel filters and the deny list apply live.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Keys(&[
        ("enabled", |new, running| new.enabled = running.enabled),
        ("ring_buffer_bytes", |new, running| {
            new.ring_buffer_bytes = running.ring_buffer_bytes;
        }),
        ("runtime_state_dirs", |new, running| {
            new.runtime_state_dirs
                .clone_from(&running.runtime_state_dirs);
        }),
        ("max_processes", |new, running| {
            new.max_processes = running.max_processes;
        }),
    ]);
}

impl SensorConfig {
    fn validate_deny_open(&self, problems: &mut Vec<Problem>) {
        let max = crate::sensor::abi::DENY_OPEN_RULES;
        if self.deny_open.len() > max {
            problems.push(Problem::new(
                "sensor.deny_open",
                format!("at most {max} entries, got {}", self.deny_open.len()),
            ));
        }
        let normal = |p: &Path| {
            let s = p.to_string_lossy();
            p.is_absolute() && !s.contains('\0') && !s.split('/').any(|c| c == "." || c == "..")
        };
        for (i, d) in self.deny_open.iter().enumerate() {
            if !normal(&d.path) || d.path == Path::new("/") {
                problems.push(Problem::new(
                    format!("sensor.deny_open[{i}].path"),
                    format!(
                        "\"{}\" must be an absolute path to a file or directory other than / (no '.' or '..')",
                        d.path.display()
                    ),
                ));
            }
            if d.allow.len() > MAX_DENY_OPEN_ALLOW {
                problems.push(Problem::new(
                    format!("sensor.deny_open[{i}].allow"),
                    format!(
                        "at most {MAX_DENY_OPEN_ALLOW} executables, got {}",
                        d.allow.len()
                    ),
                ));
            }
            for (j, a) in d.allow.iter().enumerate() {
                if !normal(a) || a.to_string_lossy().ends_with('/') {
                    problems.push(Problem::new(
                        format!("sensor.deny_open[{i}].allow[{j}]"),
                        format!(
                            "\"{}\" must be the absolute path of an executable (no '.' or '..'); bare names are not accepted here, since any program can take a name",
                            a.display()
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &SensorConfig) -> Vec<String> {
        let mut p = Vec::new();
        c.validate(&mut p);
        p.into_iter().map(|p| format!("{p}")).collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(problems(&SensorConfig::default()).is_empty());
    }

    #[test]
    fn bad_filter_entries_name_the_key_and_the_fix() {
        let c = SensorConfig {
            exclude_comms: vec!["a-name-longer-than-15".into()],
            exclude_cgroups: vec![
                "system.slice/../kubepods".into(),
                "/system.slice/backup.service".into(),
            ],
            deny_exec: vec!["bin/nc".into(), "/usr/bin/../bin/nc".into(), "xmrig".into()],
            watch_open_prefixes: vec![PathBuf::from("etc")],
            max_processes: 1,
            deny_open: vec![
                DenyOpen {
                    path: "etc/rancher".into(),
                    access: Access::Write,
                    allow: vec!["k3s".into(), "/usr/local/bin/k3s".into()],
                },
                DenyOpen {
                    path: "/etc/rancher/k3s/".into(),
                    access: Access::Any,
                    allow: vec![],
                },
            ],
            ..Default::default()
        };
        let p = problems(&c);
        assert!(
            p.iter().any(|p| p.starts_with("sensor.exclude_comms[0]")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.exclude_cgroups[0]") && p.contains("'..'")),
            "{p:?}"
        );
        assert!(
            !p.iter().any(|p| p.starts_with("sensor.exclude_cgroups[1]")),
            "a leading '/' is fine: {p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.deny_exec[0]") && p.contains("bare name")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.deny_exec[1]") && p.contains("normalized")),
            "{p:?}"
        );
        assert!(
            !p.iter().any(|p| p.starts_with("sensor.deny_exec[2]")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.watch_open_prefixes[0]")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("sensor.max_processes")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.deny_open[0].path") && p.contains("absolute")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("sensor.deny_open[0].allow[0]") && p.contains("bare names")),
            "{p:?}"
        );
        assert!(
            !p.iter()
                .any(|p| p.starts_with("sensor.deny_open[0].allow[1]")
                    || p.starts_with("sensor.deny_open[1]")),
            "{p:?}"
        );
    }

    #[test]
    fn deny_open_entries_read_as_an_operator_writes_them() {
        let c: SensorConfig = toml::from_str(
            r#"
            [[deny_open]]
            path = "/etc/rancher/k3s/"
            allow = ["/usr/local/bin/k3s"]
            [[deny_open]]
            path = "/var/lib/secret.key"
            access = "any"
            "#,
        )
        .unwrap();
        assert_eq!(c.deny_open[0].access, Access::Write);
        assert_eq!(
            c.deny_open[0].allow,
            vec![PathBuf::from("/usr/local/bin/k3s")]
        );
        assert_eq!(c.deny_open[1].access.bits(), 0x3);
        let bad =
            toml::from_str::<SensorConfig>("[[deny_open]]\npath = \"/x\"\naccess = \"exec\"\n");
        assert!(bad.unwrap_err().to_string().contains("write"));
    }
}
