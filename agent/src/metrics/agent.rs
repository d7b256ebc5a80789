//! The agent's own metrics (`edge_agent_*`), read from the status board and
//! the report drop counters, so every stage's numbers reach Prometheus and
//! the fleet without the stage knowing about metrics.
//!
//! The mapping from status details is generic, so a stage that publishes a
//! new detail key gets a metric without a change here:
//! - a number detail `key` of stage `stage` becomes the gauge
//!   `edge_agent_<stage>_<key>`, or a counter when `key` ends in `_total`;
//!   `true`/`false` become 1/0;
//! - an object of numbers becomes one family with a label per entry: the
//!   label is named after the key's `_by_<label>` suffix
//!   (`records_by_class: {"alert": 3}` gives
//!   `edge_agent_outbox_records{class="alert"} 3`), or `key` when there is
//!   no such suffix;
//! - strings, arrays and nulls are for people (`edge-agent status`) and are
//!   left out.
//!
//! Names are lower-cased and anything outside `[a-z0-9_]` becomes `_`. A
//! generated name that clashes with a fixed one below, or with an earlier
//! generated one, is skipped. Never writes to the board.

use std::borrow::Cow;
use std::collections::HashSet;

use serde_json::Value;

use crate::report::{Class, DropCounters};
use crate::status::{StageState, StageStatus};

use super::family::{Kind, Snapshot};

/// Names this module emits itself; generated names must not take them.
const FIXED: [&str; 4] = [
    "edge_agent_build_info",
    "edge_agent_stage_up",
    "edge_agent_stage_state",
    "edge_agent_reports_dropped_total",
];

pub(crate) fn collect(
    stages: &[(String, StageStatus)],
    dropped: &DropCounters,
    out: &mut Snapshot,
) {
    out.family(
        "edge_agent_build_info",
        "The agent's version and build target; always 1.",
        Kind::Gauge,
        &["version", "target"],
    )
    .push(&[crate::VERSION, crate::TARGET], 1.0);

    let up = out.family(
        "edge_agent_stage_up",
        "Whether the stage is doing its job (running or degraded).",
        Kind::Gauge,
        &["stage"],
    );
    for (name, st) in stages {
        let value = matches!(st.state, StageState::Running | StageState::Degraded);
        up.push(&[name], f64::from(u8::from(value)));
    }
    let state = out.family(
        "edge_agent_stage_state",
        "The stage's current state (starting, running, degraded, failed, disabled, stopped); always 1.",
        Kind::Gauge,
        &["stage", "state"],
    );
    for (name, st) in stages {
        state.push(&[name, st.state.as_str()], 1.0);
    }
    let drops = out.family(
        "edge_agent_reports_dropped_total",
        "Reports refused before the outbox because its input was full or gone, by class.",
        Kind::Counter,
        &["class"],
    );
    for class in Class::ALL {
        drops.push(&[class.as_str()], dropped.get(class) as f64);
    }

    let mut taken: HashSet<String> = FIXED.iter().map(|s| s.to_string()).collect();
    for (stage, st) in stages {
        for (key, value) in &st.details {
            push_detail(out, &mut taken, stage, key, value);
        }
    }
}

fn push_detail(
    out: &mut Snapshot,
    taken: &mut HashSet<String>,
    stage: &str,
    key: &str,
    value: &Value,
) {
    let stage_part = sanitize(stage);
    let help = format!("Status detail \"{key}\" of the {stage} stage (see `edge-agent status`).");
    if let Some(v) = scalar(value) {
        let name = format!("edge_agent_{stage_part}_{}", sanitize(key));
        if taken.insert(name.clone()) {
            out.single(name.clone(), help, kind_of(&name), v);
        }
        return;
    }
    let Value::Object(map) = value else { return };
    let entries: Vec<(&String, f64)> = map
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|v| (k, v)))
        .collect();
    if entries.is_empty() {
        return;
    }
    let (base, label) = match key.rsplit_once("_by_") {
        Some((base, label)) if !base.is_empty() && !label.is_empty() => (base, sanitize(label)),
        _ => (key, "key".to_string()),
    };
    if !super::exposition::is_valid_name(&label) {
        return;
    }
    // `records_by_class` becomes `..._records{class}`, unless `records` is
    // itself a detail: then it keeps its full name.
    let mut name = format!("edge_agent_{stage_part}_{}", sanitize(base));
    if taken.contains(&name) {
        name = format!("edge_agent_{stage_part}_{}", sanitize(key));
    }
    if !taken.insert(name.clone()) {
        return;
    }
    let kind = kind_of(&name);
    let family = out.family_with(name, help, kind, vec![Cow::Owned(label)]);
    for (k, v) in entries {
        family.push(&[k], v);
    }
}

fn scalar(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn kind_of(name: &str) -> Kind {
    if name.ends_with("_total") {
        Kind::Counter
    } else {
        Kind::Gauge
    }
}

/// Lower case; anything outside `[a-z0-9_]` becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::StatusBoard;
    use serde_json::json;

    #[test]
    fn details_map_to_metrics_without_code_per_key() {
        let board = StatusBoard::new();
        let outbox = board.register("outbox");
        outbox.set_state(StageState::Running, "ok");
        outbox.set("records", 12);
        outbox.set("given_up_total", 3);
        outbox.set("full", true);
        outbox.set("path", "/var/lib/edge-agent/outbox.redb");
        outbox.set("records_by_class", json!({"alert": 2, "metrics": 10}));
        outbox.set("odd map", json!({"a": 1}));
        let uplink = board.register("uplink");
        uplink.set_state(StageState::Degraded, "broker unreachable");
        let mut out = Snapshot::new();
        collect(&board.snapshot(), &DropCounters::default(), &mut out);

        assert_eq!(out.value("edge_agent_outbox_records", &[]), Some(12.0));
        assert_eq!(
            out.get("edge_agent_outbox_given_up_total").unwrap().kind,
            Kind::Counter
        );
        assert_eq!(
            out.get("edge_agent_outbox_records").unwrap().kind,
            Kind::Gauge
        );
        assert_eq!(out.value("edge_agent_outbox_full", &[]), Some(1.0));
        assert!(out.get("edge_agent_outbox_path").is_none());
        // `records` is taken by the scalar, so the map keeps its full name.
        assert_eq!(
            out.value("edge_agent_outbox_records_by_class", &["alert"]),
            Some(2.0)
        );
        assert_eq!(out.value("edge_agent_outbox_odd_map", &["a"]), Some(1.0));
        assert_eq!(out.value("edge_agent_stage_up", &["uplink"]), Some(1.0));
        assert_eq!(
            out.value("edge_agent_stage_state", &["uplink", "degraded"]),
            Some(1.0)
        );
        assert_eq!(
            out.value("edge_agent_reports_dropped_total", &["metrics"]),
            Some(0.0)
        );
    }

    #[test]
    fn a_by_suffix_names_the_label() {
        let board = StatusBoard::new();
        let s = board.register("rules");
        s.set("alerts_by_priority", json!({"critical": 4}));
        let mut out = Snapshot::new();
        collect(&board.snapshot(), &DropCounters::default(), &mut out);
        let f = out.get("edge_agent_rules_alerts").unwrap();
        assert_eq!(f.label_names, ["priority"]);
        assert_eq!(
            out.value("edge_agent_rules_alerts", &["critical"]),
            Some(4.0)
        );
    }

    #[test]
    fn generated_names_never_take_a_fixed_name() {
        let board = StatusBoard::new();
        board.register("stage").set("up", 5);
        let mut out = Snapshot::new();
        collect(&board.snapshot(), &DropCounters::default(), &mut out);
        let up = out.get("edge_agent_stage_up").unwrap();
        assert_eq!(up.label_names, ["stage"]);
        assert_eq!(up.samples.len(), 1);
    }
}
