//! `[sensor]`: the eBPF sensor.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ByteSize, Problem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorConfig {
    pub enabled: bool,
    /// Process names (comm) whose events are dropped in the kernel.
    pub exclude_comms: Vec<String>,
    /// Path prefixes whose file events are dropped in the kernel.
    pub exclude_paths: Vec<PathBuf>,
    /// Read-only opens are reported only below these prefixes.
    pub watch_open_prefixes: Vec<PathBuf>,
    /// Size of the kernel-to-user ring buffer (a power of two).
    pub ring_buffer_bytes: ByteSize,
    /// Executables (full path or name) killed at exec. Empty: enforcement off.
    pub deny_exec: Vec<String>,
}

impl Default for SensorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exclude_comms: Vec::new(),
            exclude_paths: Vec::new(),
            watch_open_prefixes: [
                "/etc",
                "/root",
                "/var/run/secrets",
                "/run/secrets",
                "/proc/self",
                "/dev/shm",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            ring_buffer_bytes: ByteSize::mib(8),
            deny_exec: Vec::new(),
        }
    }
}

impl SensorConfig {
    pub(super) fn resolve(&mut self, _base: &Path) {}

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let rb = self.ring_buffer_bytes.get();
        if !rb.is_power_of_two() || rb < 4096 {
            problems.push(Problem::new(
                "sensor.ring_buffer_bytes",
                format!("must be a power of two of at least 4 KiB (the kernel's rule), got {rb}"),
            ));
        }
        for (key, list) in [
            ("sensor.exclude_paths", &self.exclude_paths),
            ("sensor.watch_open_prefixes", &self.watch_open_prefixes),
        ] {
            for (i, p) in list.iter().enumerate() {
                if !p.is_absolute() {
                    problems.push(Problem::new(
                        format!("{key}[{i}]"),
                        format!("\"{}\" must be an absolute path", p.display()),
                    ));
                }
            }
        }
    }
}
