//! Where the config in force comes from: the local agent.toml (read again
//! on SIGHUP) and the fleet's layers (changed by the fleet stage). Whoever
//! changes one merges it with the other and submits the result through the
//! reload contract ([`crate::reload::Reloader`]) while holding one lock, so
//! a SIGHUP and a bundle never race: each merge sees the other's latest
//! part, and the submits happen in the order the merges did.
//!
//! Owns nothing on disk; never reads the network. The daemon (SIGHUP) and
//! the fleet stage (bundles) are its only callers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::overlay::{self, Effective, EffectiveError, Layer};
use crate::config::SectionId;
use crate::logging::LogHandle;
use crate::reload::{Reloader, Submitted};

struct Parts {
    local_text: String,
    local_path: PathBuf,
    layers: Vec<Layer>,
}

/// The two sources of the config in force, and the reloader they feed.
#[derive(Clone)]
pub(crate) struct Sources {
    parts: Arc<Mutex<Parts>>,
    reloader: Reloader,
    log: Option<LogHandle>,
}

/// What a submit did, with the merged config behind it.
pub(crate) struct Composed {
    pub(crate) submitted: Submitted,
    pub(crate) effective: Effective,
}

impl Sources {
    /// `local_text` (read from `local_path`) with `layers` is what
    /// `reloader` runs now. `log`: the daemon's log level switch, set when
    /// a submit changes `log.level` (whoever submitted it).
    pub(crate) fn new(
        reloader: Reloader,
        local_text: String,
        local_path: &Path,
        layers: Vec<Layer>,
        log: Option<LogHandle>,
    ) -> Sources {
        Sources {
            parts: Arc::new(Mutex::new(Parts {
                local_text,
                local_path: local_path.to_path_buf(),
                layers,
            })),
            reloader,
            log,
        }
    }

    pub(crate) fn reloader(&self) -> &Reloader {
        &self.reloader
    }

    /// The layers in force.
    pub(crate) fn layers(&self) -> Vec<Layer> {
        self.lock().layers.clone()
    }

    /// Merge the local file with `layers` without submitting anything: the
    /// effective config they would make, or why they cannot.
    pub(crate) fn merge(&self, layers: &[Layer]) -> Result<Effective, EffectiveError> {
        let parts = self.lock();
        overlay::effective(&parts.local_text, &parts.local_path, layers)
    }

    /// A new local file (SIGHUP), already checked on its own: merged with
    /// the layers in force and submitted. A file that the layers no longer
    /// merge with is refused like an invalid one (the running config stays).
    pub(crate) fn set_local(&self, text: String) -> Result<Composed, EffectiveError> {
        let mut parts = self.lock();
        let effective = overlay::effective(&text, &parts.local_path, &parts.layers)?;
        parts.local_text = text;
        Ok(self.submit(effective, "sighup"))
    }

    /// New layers (a bundle on trial, or the layers it replaced): merged with
    /// the local file and submitted.
    pub(crate) fn set_layers(&self, layers: Vec<Layer>) -> Result<Composed, EffectiveError> {
        let mut parts = self.lock();
        let effective = overlay::effective(&parts.local_text, &parts.local_path, &layers)?;
        parts.layers = layers;
        Ok(self.submit(effective, "fleet"))
    }

    fn submit(&self, effective: Effective, origin: &str) -> Composed {
        let submitted = self.reloader.submit(effective.config.clone(), origin, &[]);
        // The daemon's log subscriber is not a stage: its level is set here,
        // whoever changed it.
        if submitted.diff.changed_section(SectionId::Log)
            && let Some(log) = &self.log
            && !log.set_level(submitted.config.log.level)
        {
            tracing::warn!("log.level changed, but EDGE_AGENT_LOG sets the level and wins");
        }
        Composed {
            submitted,
            effective,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A panic while merging leaves the parts as they were before it.
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::fleet::bundle::Target;

    const LOCAL: &str = "[node]\nid = \"n1\"\nfleet = \"f1\"\n[metrics]\ninterval = \"30s\"\n";

    fn layer(version: u64, text: &str) -> Layer {
        Layer {
            target: Target::Fleet,
            version,
            overlay: text.parse().unwrap(),
            rule_files: Vec::new(),
        }
    }

    fn sources() -> Sources {
        let path = Path::new("/etc/ea/agent.toml");
        let c = AgentConfig::from_toml(LOCAL, path).unwrap();
        Sources::new(Reloader::new(c), LOCAL.into(), path, Vec::new(), None)
    }

    #[test]
    fn a_sighup_keeps_the_layers_and_a_bundle_keeps_the_local_file() {
        let s = sources();
        let c = s
            .set_layers(vec![layer(1, "[metrics]\ninterval = \"10s\"\n")])
            .unwrap();
        assert_eq!(c.submitted.diff.changed, ["metrics.interval"]);
        assert_eq!(s.reloader().current().metrics.interval.get().as_secs(), 10);

        let edited = format!("{LOCAL}[log]\nlevel = \"debug\"\n");
        s.set_local(edited).unwrap();
        let now = s.reloader().current();
        assert_eq!(now.metrics.interval.get().as_secs(), 10, "the layer stays");
        assert_eq!(now.log.level, crate::config::LogLevel::Debug);

        s.set_layers(Vec::new()).unwrap();
        let now = s.reloader().current();
        assert_eq!(now.metrics.interval.get().as_secs(), 30);
        assert_eq!(
            now.log.level,
            crate::config::LogLevel::Debug,
            "the local edit stays"
        );
    }

    #[test]
    fn a_local_file_the_layers_no_longer_merge_with_is_refused() {
        let s = sources();
        // Valid over this local file (neither certificate nor key set).
        s.set_layers(vec![layer(1, "[metrics]\napiserver_cert_file = \"\"\n")])
            .unwrap();
        let before = s.reloader().generation();
        // Valid alone (both set), but the layer empties the certificate.
        let edited = format!(
            "{LOCAL}apiserver_cert_file = \"/etc/k3s.pem\"\napiserver_key_file = \"/etc/k3s.key\"\n"
        );
        AgentConfig::from_toml(&edited, Path::new("/etc/ea/agent.toml")).unwrap();
        let Err(EffectiveError::Layers(problems)) = s.set_local(edited) else {
            panic!("accepted");
        };
        assert!(
            problems[0].key.contains("metrics.apiserver"),
            "{problems:?}"
        );
        assert_eq!(s.reloader().generation(), before, "nothing submitted");
    }
}
