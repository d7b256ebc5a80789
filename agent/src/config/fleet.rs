//! `[fleet]`: whether, and from whom, this node takes config pushed over
//! MQTT. Local only: a bundle can never change it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{ByteSize, HumanDuration, Problem, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FleetConfig {
    /// Ed25519 public key files (PEM or raw) or globs of them whose
    /// signatures this node accepts. Empty: fleet config is off and the
    /// uplink subscribes to nothing.
    pub(crate) trusted_keys: Vec<PathBuf>,
    /// How long a newly applied bundle has to prove every stage healthy
    /// before it is reverted.
    pub(crate) confirm_timeout: HumanDuration,
    /// Bundles larger than this are refused unread.
    pub(crate) max_bundle_bytes: ByteSize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            confirm_timeout: HumanDuration::from_secs(60),
            max_bundle_bytes: ByteSize::mib(1),
        }
    }
}

impl FleetConfig {
    /// The trial must leave the uplink time to reconnect (first retry
    /// within a second, a TLS handshake on a slow link) and the rules to
    /// compile: below this a healthy bundle would be reverted.
    const MIN_CONFIRM: HumanDuration = HumanDuration::from_secs(5);
    /// Past an hour a broken bundle keeps a node broken for too long.
    const MAX_CONFIRM: HumanDuration = HumanDuration::from_secs(3600);
    /// A bundle with an overlay and no rule files is a few hundred bytes.
    const MIN_BUNDLE: ByteSize = ByteSize::kib(4);
    /// The uplink reads packets up to this size (and drops the connection
    /// on larger ones), so a bundle must fit well inside it.
    pub(crate) const MAX_BUNDLE: ByteSize = ByteSize::mib(8);

    pub(crate) fn enabled(&self) -> bool {
        !self.trusted_keys.is_empty()
    }

    pub(super) fn resolve(&mut self, base: &Path) {
        for k in &mut self.trusted_keys {
            resolve_path(base, k);
        }
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.confirm_timeout < Self::MIN_CONFIRM || self.confirm_timeout > Self::MAX_CONFIRM {
            problems.push(Problem::new(
                "fleet.confirm_timeout",
                format!(
                    "must be between \"{}\" and \"{}\", got \"{}\"",
                    Self::MIN_CONFIRM,
                    Self::MAX_CONFIRM,
                    self.confirm_timeout
                ),
            ));
        }
        if self.max_bundle_bytes < Self::MIN_BUNDLE || self.max_bundle_bytes > Self::MAX_BUNDLE {
            problems.push(Problem::new(
                "fleet.max_bundle_bytes",
                format!(
                    "must be between {} and {}, got {}",
                    Self::MIN_BUNDLE,
                    Self::MAX_BUNDLE,
                    self.max_bundle_bytes
                ),
            ));
        }
        for (i, k) in self.trusted_keys.iter().enumerate() {
            if k.as_os_str().is_empty() {
                problems.push(Problem::new(
                    format!("fleet.trusted_keys[{i}]"),
                    "must not be empty",
                ));
            } else if let Some(dir) = k.parent()
                && has_wildcard(dir)
            {
                problems.push(Problem::new(
                    format!("fleet.trusted_keys[{i}]"),
                    format!(
                        "\"{}\": wildcards are allowed only in the file name, not in directories",
                        k.display()
                    ),
                ));
            }
        }
    }

    /// The key files `trusted_keys` names now: plain paths as given (a
    /// missing one is reported when read), globs expanded in name order.
    /// A glob that matches nothing is an error, as in `rules.files`.
    pub(crate) fn key_files(&self) -> (Vec<PathBuf>, Vec<Problem>) {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for (i, pattern) in self.trusted_keys.iter().enumerate() {
            if !has_wildcard(pattern) {
                files.push(pattern.clone());
                continue;
            }
            let matched = glob_files(pattern);
            if matched.is_empty() {
                problems.push(Problem::new(
                    format!("fleet.trusted_keys[{i}]"),
                    format!("no key file matches \"{}\"", pattern.display()),
                ));
            }
            for m in matched {
                if !files.contains(&m) {
                    files.push(m);
                }
            }
        }
        (files, problems)
    }
}

fn has_wildcard(p: &Path) -> bool {
    p.to_string_lossy().contains(['*', '?', '['])
}

/// Regular files (or links to them) in `pattern`'s directory whose name
/// matches its last component, sorted; names starting with '.' are left
/// out unless the pattern asks for them.
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let Some(name) = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    let Ok(glob) = globset::GlobBuilder::new(&name)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
    else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    (!n.starts_with('.') || name.starts_with('.')) && glob.is_match(&n)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Section for FleetConfig {
    const ID: SectionId = SectionId::Fleet;
    /// The uplink follows the trusted keys (which topics it subscribes to);
    /// the fleet stage reads the rest with each bundle.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;
    use std::path::Path;

    fn err(text: &str) -> String {
        AgentConfig::from_toml(text, Path::new("agent.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fleet_config_is_off_by_default() {
        let c = AgentConfig::from_toml("", Path::new("agent.toml")).unwrap();
        assert!(!c.fleet.enabled());
        assert_eq!(c.fleet.confirm_timeout.get().as_secs(), 60);
        assert_eq!(c.fleet.max_bundle_bytes.get(), 1 << 20);
    }

    #[test]
    fn impossible_fleet_values_name_their_key() {
        let e = err("[fleet]\nconfirm_timeout = \"1s\"\nmax_bundle_bytes = \"1 GiB\"\n");
        assert!(
            e.contains("agent.toml: fleet.confirm_timeout: must be between"),
            "{e}"
        );
        assert!(
            e.contains("agent.toml: fleet.max_bundle_bytes: must be between"),
            "{e}"
        );
        let e = err("[fleet]\ntrusted_keys = [\"keys/*/ops.pub\"]\n");
        assert!(
            e.contains("fleet.trusted_keys[0]") && e.contains("directories"),
            "{e}"
        );
    }

    #[test]
    fn key_globs_expand_in_name_order_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        for n in ["b.pub", "a.pub", ".hidden.pub", "c.txt"] {
            std::fs::write(dir.path().join("keys").join(n), "x").unwrap();
        }
        let c = AgentConfig::from_toml(
            "[fleet]\ntrusted_keys = [\"keys/*.pub\", \"keys/none-*.pub\", \"/etc/ops.pub\"]\n",
            &dir.path().join("agent.toml"),
        )
        .unwrap();
        let (files, problems) = c.fleet.key_files();
        let names: Vec<_> = files.iter().map(|f| f.display().to_string()).collect();
        let k = dir.path().join("keys");
        assert_eq!(
            names,
            [
                k.join("a.pub").display().to_string(),
                k.join("b.pub").display().to_string(),
                "/etc/ops.pub".to_string()
            ]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "fleet.trusted_keys[1]");
    }

    #[test]
    fn the_shipped_example_documents_the_fleet_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let c = AgentConfig::load(&path).unwrap().config;
        assert_eq!(c.fleet, super::FleetConfig::default());
    }
}
