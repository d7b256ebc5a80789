//! `[metrics]`: host metrics collection, the local endpoint, K3s health
//! probes and where collectors read from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{HumanDuration, Problem, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MetricsConfig {
    pub(crate) enabled: bool,
    /// How often a batch is collected and queued for the fleet.
    pub(crate) interval: HumanDuration,
    /// `address:port` of the local Prometheus endpoint; empty switches it off.
    pub(crate) listen: String,
    /// Collectors to run: empty means all; `["cpu", "meminfo"]` only those;
    /// `["-hwmon", "-ipvs"]` all but those.
    pub(crate) collectors: Vec<String>,
    /// Compress batches for the fleet (deflate + base64 inside the JSON).
    pub(crate) compress: bool,
    /// The kubelet's health endpoint; empty: not probed.
    pub(crate) kubelet_healthz_url: String,
    /// The API server's readiness endpoint (server nodes); empty: not probed.
    pub(crate) apiserver_readyz_url: String,
    /// The CA that signs the API server's certificate; its absence means
    /// "not a K3s server node" and the readiness probe is skipped.
    pub(crate) apiserver_ca_file: PathBuf,
    /// Client certificate and key for `/readyz` (K3s refuses anonymous
    /// checks); empty: none presented.
    pub(crate) apiserver_cert_file: PathBuf,
    pub(crate) apiserver_key_file: PathBuf,
    /// Where collectors read from (node_exporter's `--path.*`), for an agent
    /// in a container with the host mounted elsewhere.
    pub(crate) procfs: PathBuf,
    pub(crate) sysfs: PathBuf,
    pub(crate) rootfs: PathBuf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::from_secs(30),
            listen: "127.0.0.1:9101".into(),
            collectors: Vec::new(),
            compress: true,
            kubelet_healthz_url: "http://127.0.0.1:10248/healthz".into(),
            apiserver_readyz_url: "https://127.0.0.1:6443/readyz".into(),
            apiserver_ca_file: PathBuf::from("/var/lib/rancher/k3s/server/tls/server-ca.crt"),
            apiserver_cert_file: PathBuf::new(),
            apiserver_key_file: PathBuf::new(),
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl MetricsConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.apiserver_ca_file);
        resolve_path(base, &mut self.apiserver_cert_file);
        resolve_path(base, &mut self.apiserver_key_file);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.interval.get().as_secs() < 1 {
            problems.push(Problem::new(
                "metrics.interval",
                format!("must be at least \"1s\", got \"{}\"", self.interval),
            ));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(Problem::new(
                "metrics.listen",
                format!("expected address:port such as \"127.0.0.1:9101\" (or \"\" to switch the endpoint off), got \"{}\"", self.listen),
            ));
        }
        self.validate_collectors(problems);
        for (key, url) in [
            ("metrics.kubelet_healthz_url", &self.kubelet_healthz_url),
            ("metrics.apiserver_readyz_url", &self.apiserver_readyz_url),
        ] {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !url.is_empty()
                && (!scheme_ok
                    || url
                        .parse::<hyper::Uri>()
                        .map_or(true, |u| u.host().is_none()))
            {
                problems.push(Problem::new(
                    key,
                    format!("expected an http:// or https:// URL (or \"\" to skip the probe), got \"{url}\""),
                ));
            }
        }
        let cert = !self.apiserver_cert_file.as_os_str().is_empty();
        let key = !self.apiserver_key_file.as_os_str().is_empty();
        if cert != key {
            problems.push(Problem::new(
                if cert {
                    "metrics.apiserver_key_file"
                } else {
                    "metrics.apiserver_cert_file"
                },
                "apiserver_cert_file and apiserver_key_file go together: set both or neither",
            ));
        }
        for (key, path) in [
            ("metrics.procfs", &self.procfs),
            ("metrics.sysfs", &self.sysfs),
            ("metrics.rootfs", &self.rootfs),
        ] {
            if !path.is_absolute() {
                problems.push(Problem::new(
                    key,
                    format!("must be an absolute path, got \"{}\"", path.display()),
                ));
            }
        }
    }

    fn validate_collectors(&self, problems: &mut Vec<Problem>) {
        let known = crate::metrics::collector_names();
        for entry in &self.collectors {
            let name = entry.strip_prefix('-').unwrap_or(entry);
            if !known.contains(&name) {
                problems.push(Problem::new(
                    "metrics.collectors",
                    format!("unknown collector \"{name}\"; known: {}", known.join(", ")),
                ));
            }
        }
        let excluding = self
            .collectors
            .iter()
            .filter(|c| c.starts_with('-'))
            .count();
        if excluding > 0 && excluding < self.collectors.len() {
            problems.push(Problem::new(
                "metrics.collectors",
                "list either collectors to run ([\"cpu\", \"meminfo\"]) or collectors to switch off ([\"-hwmon\"]), not both",
            ));
        }
    }
}

impl Section for MetricsConfig {
    const ID: SectionId = SectionId::Metrics;
    /// A change rebinds the endpoint when `listen` changed, and collects
    /// with the new settings.
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
    fn unknown_collectors_are_named_with_the_known_ones() {
        let e = err("[metrics]\ncollectors = [\"cpu\", \"gpu\"]\n");
        assert!(
            e.contains("metrics.collectors: unknown collector \"gpu\""),
            "{e}"
        );
        assert!(e.contains("meminfo"), "{e}");
    }

    #[test]
    fn including_and_excluding_collectors_at_once_is_refused() {
        let e = err("[metrics]\ncollectors = [\"cpu\", \"-hwmon\"]\n");
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_client_cert_without_its_key_is_refused() {
        let e = err("[metrics]\napiserver_cert_file = \"c.pem\"\n");
        assert!(e.contains("metrics.apiserver_key_file"), "{e}");
    }

    #[test]
    fn a_health_url_must_be_http() {
        let e = err("[metrics]\nkubelet_healthz_url = \"localhost:10248\"\n");
        assert!(e.contains("metrics.kubelet_healthz_url"), "{e}");
    }

    #[test]
    fn the_shipped_example_documents_the_metrics_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let c = AgentConfig::load(&path).unwrap().config;
        assert_eq!(c.metrics, super::MetricsConfig::default());
    }
}
