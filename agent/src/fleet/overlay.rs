//! The effective config: the node's local agent.toml with the fleet's
//! layers laid over it, lowest precedence first (fleet, each group in
//! `node.groups` order, the node), and which file or layer set each key.
//!
//! Owns what an overlay may set and how layers merge. Never reads the
//! state directory or the network; never writes the local file.
//!
//! Merging: tables merge key by key, any other value (arrays included)
//! replaces what was below it. The result is checked exactly like a local
//! file (`config check`), as if it were the local file: relative paths in
//! an overlay resolve against the local file's directory. Rule files that
//! bundles bring are appended to `rules.files`, after the local ones, in
//! layer order and, within a layer, in name order.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::bundle::Target;
use crate::config::{AgentConfig, ConfigError, Problem};

/// Sections a bundle may set whole.
const ALLOWED_SECTIONS: [&str; 5] = ["rules", "sensor", "metrics", "outbox", "bootstrap"];

/// Single keys a bundle may set in sections that otherwise stay local.
const ALLOWED_KEYS: [(&str, &str); 3] = [
    ("log", "level"),
    ("uplink", "inflight"),
    ("uplink", "keep_alive"),
];

/// Why the rest stays local, for the refusal.
const STAYS_LOCAL: &str = "the node's identity, paths, control socket, fleet trust, log format and broker connection stay in its local agent.toml";

/// One layer of fleet config, as the node holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layer {
    pub(crate) target: Target,
    pub(crate) version: u64,
    pub(crate) overlay: toml::Table,
    /// The rule files it brought, as written under the state directory,
    /// in name order.
    pub(crate) rule_files: Vec<PathBuf>,
}

impl Layer {
    /// `fleet v3`, `group:eu v2`, `node:n1 v7`: how results and `config
    /// show --origin` name it.
    pub(crate) fn label(&self) -> String {
        format!("{} v{}", self.target, self.version)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Parse an overlay's TOML and check that it sets only what a bundle may.
pub(crate) fn parse_overlay(text: &str) -> Result<toml::Table, Vec<Problem>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![Problem::new(
            "overlay",
            format!("not valid TOML: {}", e.message().trim()),
        )]
    })?;
    let problems = check_keys(&table);
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(problems)
    }
}

/// Every key of `overlay` a bundle may not set, with the reason.
pub(crate) fn check_keys(overlay: &toml::Table) -> Vec<Problem> {
    let known = known_sections();
    let mut problems = Vec::new();
    for (section, value) in overlay {
        if ALLOWED_SECTIONS.contains(&section.as_str()) {
            if !value.is_table() {
                problems.push(Problem::new(
                    section.clone(),
                    format!("expected a table ([{section}])"),
                ));
            }
            continue;
        }
        let partly = ALLOWED_KEYS.iter().any(|(s, _)| s == section);
        if !known.contains(section) {
            problems.push(Problem::new(
                section.clone(),
                format!(
                    "unknown section; a bundle may set [{}], {}",
                    ALLOWED_SECTIONS.join("], ["),
                    allowed_keys_text()
                ),
            ));
            continue;
        }
        if !partly {
            problems.push(Problem::new(
                section.clone(),
                format!("a bundle may not set [{section}]: {STAYS_LOCAL}"),
            ));
            continue;
        }
        let Some(table) = value.as_table() else {
            problems.push(Problem::new(
                section.clone(),
                format!("expected a table ([{section}])"),
            ));
            continue;
        };
        let known_keys = known_keys(section);
        for key in table.keys() {
            let allowed = ALLOWED_KEYS.contains(&(section.as_str(), key.as_str()));
            if allowed {
                continue;
            }
            let reason = if known_keys.contains(key) {
                format!("a bundle may not set it: {STAYS_LOCAL}")
            } else {
                format!("unknown key; a bundle may set {}", allowed_keys_text())
            };
            problems.push(Problem::new(format!("{section}.{key}"), reason));
        }
    }
    problems
}

fn allowed_keys_text() -> String {
    ALLOWED_KEYS
        .iter()
        .map(|(s, k)| format!("{s}.{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sections agent.toml has (from the schema itself, so a section added
/// later is known, and forbidden unless listed above).
fn known_sections() -> Vec<String> {
    defaults().keys().cloned().collect()
}

fn known_keys(section: &str) -> Vec<String> {
    defaults()
        .get(section)
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

fn defaults() -> toml::Table {
    toml::Table::try_from(AgentConfig::default()).expect("the default config serializes")
}

/// Lay `overlay` over `base`: tables merge, other values replace.
pub(crate) fn merge(base: &mut toml::Table, overlay: &toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Nobody set it: the built-in default.
    Default,
    /// The local file.
    Local,
    /// A layer (its label, `fleet v3`).
    Layer(String),
}

/// The merged config and where each key came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effective {
    pub(crate) config: AgentConfig,
    /// Every leaf key (dotted) that the local file or a layer set, and
    /// who set it last.
    pub(crate) set_by: BTreeMap<String, Origin>,
    /// Layers with rule files, whose files were appended to `rules.files`.
    pub(crate) rule_layers: Vec<String>,
    /// SHA-256 of the effective config (its canonical TOML).
    pub(crate) sha256: String,
}

impl Effective {
    /// Who set `key` (a dotted leaf path).
    pub(crate) fn origin(&self, key: &str) -> Origin {
        self.set_by.get(key).cloned().unwrap_or(Origin::Default)
    }
}

/// Why the layers cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EffectiveError {
    /// The local file itself is broken: not the layers' fault.
    #[error(transparent)]
    Local(ConfigError),
    /// The layers make the config invalid; each problem names its key and
    /// the layer that set it.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Layers(Vec<Problem>),
}

/// Merge the local file (`local_text`, read from `local_path`) with
/// `layers` (lowest precedence first).
pub(crate) fn effective(
    local_text: &str,
    local_path: &Path,
    layers: &[Layer],
) -> Result<Effective, EffectiveError> {
    // The local file alone must be valid; then every problem of the merged
    // config comes from the layers.
    AgentConfig::from_toml(local_text, local_path).map_err(EffectiveError::Local)?;
    let local = AgentConfig::parse_table(local_text, local_path).map_err(EffectiveError::Local)?;
    let mut set_by = BTreeMap::new();
    record_leaves(&local, "", &Origin::Local, &mut set_by);
    let mut merged = local;
    for layer in layers {
        let problems = check_keys(&layer.overlay);
        if !problems.is_empty() {
            return Err(EffectiveError::Layers(attribute(problems, &layer.label())));
        }
        merge(&mut merged, &layer.overlay);
        record_leaves(
            &layer.overlay,
            "",
            &Origin::Layer(layer.label()),
            &mut set_by,
        );
    }
    let mut config = match AgentConfig::from_table(merged, local_path) {
        Ok(c) => c,
        Err(e) => return Err(EffectiveError::Layers(blame(e, &set_by, layers))),
    };
    let mut rule_layers = Vec::new();
    for layer in layers.iter().filter(|l| !l.rule_files.is_empty()) {
        config.rules.files.extend(layer.rule_files.iter().cloned());
        rule_layers.push(layer.label());
    }
    let sha256 = config_sha256(&config);
    Ok(Effective {
        config,
        set_by,
        rule_layers,
        sha256,
    })
}

/// SHA-256 of a config's canonical TOML (every key, defaults included).
pub(crate) fn config_sha256(config: &AgentConfig) -> String {
    let text = toml::to_string(config).expect("a config serializes");
    super::bundle::sha256_hex(text.as_bytes())
}

fn record_leaves(
    table: &toml::Table,
    prefix: &str,
    origin: &Origin,
    out: &mut BTreeMap<String, Origin>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => record_leaves(t, &key, origin, out),
            _ => {
                // A value replaces whatever was below it.
                out.retain(|existing, _| !existing.starts_with(&format!("{key}.")));
                out.insert(key, origin.clone());
            }
        }
    }
}

/// `problems` of one layer, each key prefixed with the layer's label
/// (`node:n1 v7: uplink.url`).
pub(crate) fn attribute(problems: Vec<Problem>, label: &str) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|p| Problem::new(format!("{label}: {}", p.key), p.reason))
        .collect()
}

/// Turn the merged config's errors into problems naming each key's layer.
fn blame(e: ConfigError, set_by: &BTreeMap<String, Origin>, layers: &[Layer]) -> Vec<Problem> {
    let problems = match e {
        ConfigError::Invalid { problems, .. } => problems,
        ConfigError::Parse { key, message, .. } => {
            vec![Problem::new(
                key.unwrap_or_else(|| "overlay".into()),
                message,
            )]
        }
        ConfigError::Read { source, .. } => vec![Problem::new("overlay", source.to_string())],
    };
    let all_layers = layers
        .iter()
        .map(Layer::label)
        .collect::<Vec<_>>()
        .join(" + ");
    problems
        .into_iter()
        .map(|p| {
            let who = layer_of(&p.key, set_by).unwrap_or_else(|| format!("with {all_layers}"));
            Problem::new(format!("{who}: {}", p.key), p.reason)
        })
        .collect()
}

/// The layer that set `key` (or the part of it that holds it, or, for a
/// table, any key below it), if a layer did.
fn layer_of(key: &str, set_by: &BTreeMap<String, Origin>) -> Option<String> {
    let plain = key.replace(['"', '\''], "");
    let mut best: Option<(&String, &Origin)> = None;
    for (k, origin) in set_by {
        let covers = plain == *k
            || plain.starts_with(&format!("{k}."))
            || plain.starts_with(&format!("{k}["));
        if covers && best.is_none_or(|(b, _)| k.len() > b.len()) {
            best = Some((k, origin));
        }
    }
    if let Some((_, Origin::Layer(l))) = best {
        return Some(l.clone());
    }
    if best.is_some() {
        return None;
    }
    set_by
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{plain}.")))
        .find_map(|(_, o)| match o {
            Origin::Layer(l) => Some(l.clone()),
            _ => None,
        })
}

/// Every leaf of `config` as `(dotted key, TOML value)`, in the schema's
/// order (for `config show --origin`).
pub(crate) fn leaves(config: &AgentConfig) -> Vec<(String, toml::Value)> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{}", quote_key(k))
            };
            match v {
                toml::Value::Table(inner) if !inner.is_empty() => walk(inner, &key, out),
                _ => out.push((key, v.clone())),
            }
        }
    }
    let table = toml::Table::try_from(config).expect("a config serializes");
    let mut out = Vec::new();
    walk(&table, "", &mut out);
    out
}

/// A key as TOML writes it in a dotted path: bare when it can be.
fn quote_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(target: Target, version: u64, text: &str) -> Layer {
        Layer {
            target,
            version,
            overlay: text.parse().unwrap(),
            rule_files: Vec::new(),
        }
    }

    const LOCAL: &str = "[node]\nid = \"n1\"\nfleet = \"f1\"\ngroups = [\"eu\", \"edge\"]\n[metrics]\ninterval = \"30s\"\n";

    #[test]
    fn group_and_node_layers_override_the_fleet_layer_in_order() {
        let layers = [
            layer(
                Target::Fleet,
                3,
                "[metrics]\ninterval = \"10s\"\ncompress = false\n[log]\nlevel = \"debug\"\n",
            ),
            layer(
                Target::Group("eu".into()),
                1,
                "[metrics]\ninterval = \"20s\"\n",
            ),
            layer(
                Target::Group("edge".into()),
                4,
                "[metrics]\ninterval = \"25s\"\n",
            ),
            layer(Target::Node("n1".into()), 7, "[log]\nlevel = \"warn\"\n"),
        ];
        let e = effective(LOCAL, Path::new("/etc/ea/agent.toml"), &layers).unwrap();
        assert_eq!(e.config.metrics.interval.get().as_secs(), 25);
        assert!(!e.config.metrics.compress);
        assert_eq!(e.config.log.level, crate::config::LogLevel::Warn);
        assert_eq!(
            e.origin("metrics.interval"),
            Origin::Layer("group:edge v4".into())
        );
        assert_eq!(
            e.origin("metrics.compress"),
            Origin::Layer("fleet v3".into())
        );
        assert_eq!(e.origin("log.level"), Origin::Layer("node:n1 v7".into()));
        assert_eq!(e.origin("node.id"), Origin::Local);
        assert_eq!(e.origin("outbox.max_bytes"), Origin::Default);
    }

    #[test]
    fn the_hash_changes_with_the_config_and_only_with_it() {
        let a = effective(LOCAL, Path::new("/etc/ea/agent.toml"), &[]).unwrap();
        let b = effective(
            LOCAL,
            Path::new("/etc/ea/agent.toml"),
            &[layer(Target::Fleet, 1, "")],
        )
        .unwrap();
        let c = effective(
            LOCAL,
            Path::new("/etc/ea/agent.toml"),
            &[layer(Target::Fleet, 2, "[metrics]\ninterval = \"10s\"\n")],
        )
        .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_ne!(a.sha256, c.sha256);
        assert_eq!(a.sha256.len(), 64);
    }

    #[test]
    fn forbidden_and_unknown_keys_are_refused_with_the_reason() {
        let t: toml::Table = "[node]\nid = \"x\"\n[paths]\nstate_dir = \"/\"\n[uplink]\nurl = \"mqtts://evil\"\ninflight = 10\n[log]\nformat = \"json\"\nlevel = \"debug\"\n[fleet]\ntrusted_keys = []\n[control]\ngroup = \"x\"\n[metrix]\n".parse().unwrap();
        let problems = check_keys(&t);
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "control",
                "fleet",
                "log.format",
                "metrix",
                "node",
                "paths",
                "uplink.url"
            ]
        );
        let node = problems.iter().find(|p| p.key == "node").unwrap();
        assert!(
            node.reason.contains("stay in its local agent.toml"),
            "{}",
            node.reason
        );
        let unknown = problems.iter().find(|p| p.key == "metrix").unwrap();
        assert!(
            unknown.reason.starts_with("unknown section"),
            "{}",
            unknown.reason
        );
    }

    #[test]
    fn an_overlay_that_makes_the_config_invalid_names_the_key_and_the_layer() {
        let layers = [
            layer(Target::Fleet, 3, "[metrics]\ninterval = \"10s\"\n"),
            layer(Target::Node("n1".into()), 2, "[rules]\nrate = -1.0\n"),
        ];
        let Err(EffectiveError::Layers(p)) = effective(LOCAL, Path::new("agent.toml"), &layers)
        else {
            panic!("accepted");
        };
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].key.starts_with("node:n1 v2: rules.rate"), "{:?}", p[0]);

        let bad_type = [layer(
            Target::Group("eu".into()),
            5,
            "[metrics]\ninterval = \"abc\"\n",
        )];
        let Err(EffectiveError::Layers(p)) = effective(LOCAL, Path::new("agent.toml"), &bad_type)
        else {
            panic!("accepted");
        };
        assert_eq!(p[0].key, "group:eu v5: metrics.interval", "{p:?}");

        let unknown_inner = [layer(Target::Fleet, 1, "[metrics]\nintervall = \"10s\"\n")];
        let Err(EffectiveError::Layers(p)) =
            effective(LOCAL, Path::new("agent.toml"), &unknown_inner)
        else {
            panic!("accepted");
        };
        assert!(p[0].key.starts_with("fleet v1"), "{p:?}");
        assert!(p[0].reason.contains("intervall"), "{p:?}");
    }

    #[test]
    fn a_broken_local_file_is_not_blamed_on_the_layers() {
        let e = effective("[metrics]\ninterval = 1\n", Path::new("agent.toml"), &[]).unwrap_err();
        assert!(matches!(e, EffectiveError::Local(_)), "{e}");
    }

    #[test]
    fn rule_files_of_layers_load_after_the_local_ones_in_layer_order() {
        let mut fleet = layer(Target::Fleet, 1, "");
        fleet.rule_files = vec!["/state/fleet/rules/fleet/v1/a.yaml".into()];
        let mut node = layer(Target::Node("n1".into()), 1, "");
        node.rule_files = vec!["/state/fleet/rules/node/v1/b.yaml".into()];
        let e = effective(LOCAL, Path::new("/etc/ea/agent.toml"), &[fleet, node]).unwrap();
        let files: Vec<_> = e
            .config
            .rules
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            files,
            [
                "/etc/ea/rules/*.yaml",
                "/state/fleet/rules/fleet/v1/a.yaml",
                "/state/fleet/rules/node/v1/b.yaml"
            ]
        );
        assert_eq!(e.rule_layers, ["fleet v1", "node:n1 v1"]);
    }

    #[test]
    fn leaves_list_every_key_of_the_schema_with_dotted_paths() {
        let c = AgentConfig::from_toml(LOCAL, Path::new("agent.toml")).unwrap();
        let l = leaves(&c);
        assert!(l.iter().any(|(k, _)| k == "metrics.interval"));
        assert!(l.iter().any(|(k, _)| k == "fleet.confirm_timeout"));
        assert!(l.iter().any(|(k, _)| k == "bootstrap.kube_proxy.mode"));
    }
}
