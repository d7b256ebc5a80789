//! What a new config changes: per section of `agent.toml`, the keys whose
//! value differs from the config in force, and which of them only a restart
//! can apply.
//!
//! Each section says which of its keys the running agent reads only at start
//! ([`Section::RESTART_ONLY`]). A new config keeps the running value of those
//! keys, so the config in force always says what really runs, and they are
//! listed as waiting for a restart; every other change applies live. Which
//! keys differ is found by comparing the two sections' serialized forms
//! (vector's `config/diff.rs` does the same), so a key added to a section is
//! diffed without anyone listing it here.
//!
//! Adding a section: a variant of [`SectionId`], `impl Section` for its
//! struct (beside it, in its own file), and one line in [`each_section`].

use serde::Serialize;
use serde_json::Value;

use super::AgentConfig;

/// A top-level table of `agent.toml`: what a stage follows, and what a
/// reload reports as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum SectionId {
    Node,
    Paths,
    Log,
    Control,
    Uplink,
    Outbox,
    Sensor,
    Rules,
    Metrics,
    Bootstrap,
    Fleet,
    /// Operator side only (`edge-agent fleet bridge`); a node never reads it.
    Bridge,
}

impl SectionId {
    /// Every section, in file order.
    pub(crate) const ALL: [SectionId; 12] = [
        SectionId::Node,
        SectionId::Paths,
        SectionId::Log,
        SectionId::Control,
        SectionId::Uplink,
        SectionId::Outbox,
        SectionId::Sensor,
        SectionId::Rules,
        SectionId::Metrics,
        SectionId::Bootstrap,
        SectionId::Fleet,
        SectionId::Bridge,
    ];

    /// Its name in `agent.toml`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SectionId::Node => "node",
            SectionId::Paths => "paths",
            SectionId::Log => "log",
            SectionId::Control => "control",
            SectionId::Uplink => "uplink",
            SectionId::Outbox => "outbox",
            SectionId::Sensor => "sensor",
            SectionId::Rules => "rules",
            SectionId::Metrics => "metrics",
            SectionId::Bootstrap => "bootstrap",
            SectionId::Fleet => "fleet",
            SectionId::Bridge => "bridge",
        }
    }

    /// Position in [`SectionId::ALL`], for per-section tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for SectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keeps one restart-only key's running value in a new section.
pub(crate) type Keep<S> = fn(new: &mut S, running: &S);

/// How much of a section the running agent reads only at start.
pub(crate) enum RestartOnly<S: 'static> {
    /// Nothing: every key applies live.
    Nothing,
    /// Every key (the node's identity, where the state lives).
    Everything,
    /// These keys (as written in the section), each with how to keep its
    /// running value.
    Keys(&'static [(&'static str, Keep<S>)]),
}

/// A section of `agent.toml`, as a reload sees it.
pub(crate) trait Section: Serialize + Clone + PartialEq + Sized + 'static {
    const ID: SectionId;
    /// What a reload cannot apply until the next restart.
    const RESTART_ONLY: RestartOnly<Self>;
}

/// What a new config changes against the one in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConfigDiff {
    /// Keys that changed and apply now, e.g. `metrics.interval`.
    pub(crate) changed: Vec<String>,
    /// Keys that changed but keep their running value until the next
    /// restart, e.g. `sensor.ring_buffer_bytes`.
    pub(crate) pending_restart: Vec<String>,
    /// Sections with at least one live change.
    sections: Vec<SectionId>,
}

impl ConfigDiff {
    /// The config to run instead of `running`: `new`, but with every
    /// restart-only key keeping its running value; and what differs.
    pub(crate) fn effective(
        running: &AgentConfig,
        mut new: AgentConfig,
    ) -> (AgentConfig, ConfigDiff) {
        let mut diff = ConfigDiff::default();
        each_section(running, &mut new, &mut diff);
        (new, diff)
    }

    /// Whether `section` has a live change.
    pub(crate) fn changed_section(&self, section: SectionId) -> bool {
        self.sections.contains(&section)
    }

    /// The sections with a live change, in file order.
    pub(crate) fn changed_sections(&self) -> &[SectionId] {
        &self.sections
    }

    /// Nothing applies now (restart-only keys may still be pending).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }
}

/// Something done to every section of a pair of configs.
pub(crate) trait Visit {
    fn section<S: Section>(&mut self, running: &S, new: &mut S);
}

/// Visit every section of `agent.toml`, in file order. The one list of the
/// sections a reload knows.
pub(crate) fn each_section(running: &AgentConfig, new: &mut AgentConfig, v: &mut impl Visit) {
    v.section(&running.node, &mut new.node);
    v.section(&running.paths, &mut new.paths);
    v.section(&running.log, &mut new.log);
    v.section(&running.control, &mut new.control);
    v.section(&running.uplink, &mut new.uplink);
    v.section(&running.outbox, &mut new.outbox);
    v.section(&running.sensor, &mut new.sensor);
    v.section(&running.rules, &mut new.rules);
    v.section(&running.metrics, &mut new.metrics);
    v.section(&running.bootstrap, &mut new.bootstrap);
    v.section(&running.fleet, &mut new.fleet);
    v.section(&running.bridge, &mut new.bridge);
}

impl Visit for ConfigDiff {
    fn section<S: Section>(&mut self, running: &S, new: &mut S) {
        let name = S::ID.name();
        let mut keys = Vec::new();
        changed_keys(name, &to_value(running), &to_value(new), &mut keys);
        let (held, live): (Vec<String>, Vec<String>) = keys
            .into_iter()
            .partition(|k| is_restart_only::<S>(&k[name.len() + 1..]));
        match S::RESTART_ONLY {
            RestartOnly::Nothing => {}
            RestartOnly::Everything => *new = running.clone(),
            RestartOnly::Keys(keys) => {
                for (key, keep) in keys {
                    if held.iter().any(|k| within(&k[name.len() + 1..], key)) {
                        keep(new, running);
                    }
                }
            }
        }
        // A difference serde does not show (a skipped field) still counts.
        if !live.is_empty() || running != new {
            self.sections.push(S::ID);
        }
        self.changed.extend(live);
        self.pending_restart.extend(held);
    }
}

/// Whether `key` (below the section) is read only at start.
fn is_restart_only<S: Section>(key: &str) -> bool {
    match S::RESTART_ONLY {
        RestartOnly::Nothing => false,
        RestartOnly::Everything => true,
        RestartOnly::Keys(keys) => keys.iter().any(|(k, _)| within(key, k)),
    }
}

/// `key` is `table` or a key inside it (`max_age.alert` is within `max_age`).
fn within(key: &str, table: &str) -> bool {
    key == table || key.strip_prefix(table).is_some_and(|r| r.starts_with('.'))
}

fn to_value<S: Serialize>(s: &S) -> Value {
    // Config sections are plain data; serializing one cannot fail.
    serde_json::to_value(s).unwrap_or(Value::Null)
}

/// The dotted keys below `prefix` whose values differ. Tables are compared
/// key by key; anything else (lists too) as a whole.
fn changed_keys(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                changed_keys(&format!("{prefix}.{k}"), x, y, out);
            }
        }
        _ if old != new => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{ByteSize, LogFormat, LogLevel};

    #[test]
    fn a_reload_applies_live_keys_and_holds_back_restart_only_ones() {
        let running = AgentConfig::default();
        let mut new = AgentConfig::default();
        new.node.fleet = "other-fleet".into();
        new.log.level = LogLevel::Debug;
        new.log.format = LogFormat::Json;
        new.metrics.enabled = !running.metrics.enabled;
        let (effective, diff) = ConfigDiff::effective(&running, new);
        assert_eq!(diff.pending_restart, ["node.fleet", "log.format"]);
        assert_eq!(diff.changed, ["log.level", "metrics.enabled"]);
        assert_eq!(
            diff.changed_sections(),
            [SectionId::Log, SectionId::Metrics]
        );
        assert_eq!(effective.node, running.node);
        assert_eq!(effective.log.format, running.log.format);
        assert_eq!(effective.log.level, LogLevel::Debug);
        assert_eq!(effective.metrics.enabled, !running.metrics.enabled);
    }

    #[test]
    fn an_unchanged_reload_changes_nothing_and_has_nothing_pending() {
        let c = AgentConfig::default();
        let (effective, diff) = ConfigDiff::effective(&c, c.clone());
        assert!(diff.is_empty());
        assert_eq!(diff, ConfigDiff::default());
        assert_eq!(effective, c);
    }

    #[test]
    fn the_sensor_keys_read_only_at_start_wait_for_a_restart_and_its_filters_apply() {
        let running = AgentConfig::default();
        let mut new = running.clone();
        new.sensor.enabled = false;
        new.sensor.ring_buffer_bytes = ByteSize::mib(16);
        new.sensor.runtime_state_dirs = vec![PathBuf::from("/run/other")];
        new.sensor.max_processes = 100;
        let (effective, diff) = ConfigDiff::effective(&running, new.clone());
        assert_eq!(
            diff.pending_restart,
            [
                "sensor.enabled",
                "sensor.ring_buffer_bytes",
                "sensor.runtime_state_dirs",
                "sensor.max_processes"
            ]
        );
        assert!(diff.is_empty(), "the sensor is not woken: {diff:?}");
        assert_eq!(effective, running, "the running values stay in force");

        new.sensor.exclude_comms = vec!["noisy".into()];
        let (effective, diff) = ConfigDiff::effective(&running, new);
        assert_eq!(diff.changed, ["sensor.exclude_comms"]);
        assert_eq!(diff.changed_sections(), [SectionId::Sensor]);
        assert_eq!(effective.sensor.exclude_comms, ["noisy"]);
        assert_eq!(effective.sensor.max_processes, running.sensor.max_processes);
    }

    #[test]
    fn keys_inside_a_table_are_named_down_to_the_leaf() {
        let running = AgentConfig::default();
        let mut new = running.clone();
        new.outbox.max_age.alert = Some("1h".parse().unwrap());
        let (_, diff) = ConfigDiff::effective(&running, new);
        assert_eq!(diff.changed, ["outbox.max_age.alert"]);
    }

    /// Every section has a variant, and every variant is visited.
    #[test]
    fn every_section_of_the_file_is_diffed() {
        struct Names(Vec<SectionId>);
        impl Visit for Names {
            fn section<S: Section>(&mut self, _: &S, _: &mut S) {
                self.0.push(S::ID);
            }
        }
        let c = AgentConfig::default();
        let mut visited = Names(Vec::new());
        each_section(&c, &mut c.clone(), &mut visited);
        assert_eq!(visited.0, SectionId::ALL);
        let file = to_value(&c);
        let tables: Vec<&str> = file
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let names: Vec<&str> = SectionId::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(tables, names, "AgentConfig's tables and SectionId agree");
    }

    /// A restart-only key that names no key of its section would hold
    /// nothing back.
    #[test]
    fn every_restart_only_key_names_a_key_of_its_section() {
        struct Check(Vec<String>);
        impl Visit for Check {
            fn section<S: Section>(&mut self, running: &S, _: &mut S) {
                if let RestartOnly::Keys(keys) = S::RESTART_ONLY {
                    let v = to_value(running);
                    for (k, _) in keys {
                        if v.get(k).is_none() {
                            self.0.push(format!("{}.{k}", S::ID));
                        }
                    }
                }
            }
        }
        let c = AgentConfig::default();
        let mut check = Check(Vec::new());
        each_section(&c, &mut c.clone(), &mut check);
        assert!(check.0.is_empty(), "not keys: {:?}", check.0);
    }
}
