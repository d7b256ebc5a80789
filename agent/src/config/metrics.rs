//! `[metrics]`: host metrics collection and the local endpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{HumanDuration, Problem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// How often a batch is collected and queued for the fleet.
    pub interval: HumanDuration,
    /// `address:port` of the local Prometheus endpoint; empty switches it off.
    pub listen: String,
    /// Collectors to run; empty means all.
    pub collectors: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::from_secs(30),
            listen: "127.0.0.1:9101".into(),
            collectors: Vec::new(),
        }
    }
}

impl MetricsConfig {
    pub(super) fn resolve(&mut self, _base: &Path) {}

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
    }
}
