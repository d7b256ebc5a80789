//! `[outbox]`: the durable queue of everything the node must report.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{ByteSize, HumanDuration, Problem};
use crate::report::Class;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OutboxConfig {
    /// Hard cap on the size of the outbox file. Records may fill about half
    /// of it (the rest is B-tree slack and the file's growth step, see the
    /// outbox module). When full, metrics go first (older batches thinned,
    /// then the oldest dropped), then node events, then alerts; critical
    /// alerts last. Sized for a small eMMC.
    pub(crate) max_bytes: ByteSize,
    /// Optional time-to-live per class: a record older than this is given up
    /// (counted as expired) instead of sent. Absent: kept until sent or
    /// given up to `max_bytes`.
    pub(crate) max_age: MaxAge,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(256),
            max_age: MaxAge::default(),
        }
    }
}

/// `[outbox.max_age]`: one optional duration per record class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MaxAge {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) critical_alert: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) alert: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_event: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metrics: Option<HumanDuration>,
}

impl MaxAge {
    pub(crate) fn get(&self, class: Class) -> Option<Duration> {
        match class {
            Class::CriticalAlert => self.critical_alert,
            Class::Alert => self.alert,
            Class::NodeEvent => self.node_event,
            Class::Metrics => self.metrics,
        }
        .map(HumanDuration::get)
    }
}

impl OutboxConfig {
    pub(super) fn resolve(&mut self, _base: &Path) {}

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        // Below this the file cannot hold its own metadata plus a few metrics
        // batches and alerts.
        const MIN_BYTES: ByteSize = ByteSize::mib(1);
        if self.max_bytes < MIN_BYTES {
            problems.push(Problem::new(
                "outbox.max_bytes",
                format!("must be at least {MIN_BYTES}, got {}", self.max_bytes),
            ));
        }
        // Expiry is checked about once a minute; a shorter age would be a
        // promise the outbox does not keep.
        const MIN_AGE: Duration = Duration::from_secs(60);
        for class in Class::ALL {
            if let Some(age) = self.max_age.get(class)
                && age < MIN_AGE
            {
                problems.push(Problem::new(
                    format!("outbox.max_age.{}", class.as_str()),
                    format!(
                        "must be at least \"1m\", got \"{}\"",
                        humantime::format_duration(age)
                    ),
                ));
            }
        }
    }
}

impl Section for OutboxConfig {
    const ID: SectionId = SectionId::Outbox;
    /// The budget and the ages apply at the next commit.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;
    use std::path::Path;

    #[test]
    fn max_age_is_optional_per_class_and_checked() {
        let c = AgentConfig::from_toml(
            "[outbox.max_age]\nmetrics = \"24h\"\n",
            Path::new("agent.toml"),
        )
        .unwrap();
        assert_eq!(
            c.outbox.max_age.get(crate::report::Class::Metrics),
            Some(std::time::Duration::from_secs(86400))
        );
        assert_eq!(c.outbox.max_age.get(crate::report::Class::Alert), None);
        let e = AgentConfig::from_toml(
            "[outbox.max_age]\nalert = \"5s\"\n",
            Path::new("agent.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("outbox.max_age.alert: must be at least \"1m\""),
            "{e}"
        );
    }
}
