//! `edge-agent status [--json]`: one screen for the field technician.
//!
//! Asks the daemon over the control socket. When the daemon is not running it
//! says so first, exits with [`Exit::NotRunning`], and still shows what it can
//! read without the daemon: the config and the state directory.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::Exit;
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::control::{Client, ClientError};

pub async fn status(config_path: &Path, as_json: bool) -> anyhow::Result<Exit> {
    let loaded = AgentConfig::load(config_path);
    let socket = match &loaded {
        Ok(l) => l.config.paths.control_socket(),
        // Without a readable config, try where a default install puts it.
        Err(_) => crate::config::PathsConfig::default().control_socket_or_default(),
    };

    let answer = match Client::connect(&socket).await {
        Ok(mut client) => client.call("status", Value::Null).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(doc) => {
            if as_json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_running(&doc));
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            let (exit, reason) = match &e {
                ClientError::NotRunning { .. } => (Exit::NotRunning, e.to_string()),
                ClientError::PermissionDenied { .. } => (Exit::PermissionDenied, e.to_string()),
                _ => (Exit::Failure, e.to_string()),
            };
            let doc = offline_document(config_path, &loaded, &reason);
            if as_json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_offline(&doc));
            }
            Ok(exit)
        }
    }
}

/// What `status` can say without the daemon (schema 1, `daemon.running = false`).
fn offline_document(
    config_path: &Path,
    loaded: &Result<crate::config::LoadedConfig, crate::config::ConfigError>,
    reason: &str,
) -> Value {
    let mut doc = json!({
        "schema": 1,
        "daemon": { "running": false, "reason": reason, "version": crate::VERSION },
    });
    match loaded {
        Ok(l) => {
            let c = &l.config;
            doc["node"] =
                json!({ "id": c.node.id, "fleet": c.node.fleet, "groups": c.node.groups });
            doc["config"] = json!({ "path": config_path, "valid": true });
            doc["paths"] = json!({
                "state_dir": c.paths.state_dir,
                "state_dir_exists": c.paths.state_dir.is_dir(),
                "state_dir_bytes": dir_bytes(&c.paths.state_dir),
                "runtime_dir": c.paths.runtime_dir,
            });
            let offline = offline_sections(c);
            if !offline.is_empty() {
                doc["stages"] = Value::Object(offline);
            }
        }
        Err(e) => {
            doc["config"] = json!({ "path": config_path, "valid": false, "error": e.to_string() });
        }
    }
    doc
}

/// Per-stage facts readable from disk without the daemon (e.g. what waits in
/// the outbox). Each stage that can contributes a section here.
fn offline_sections(config: &AgentConfig) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(b) = crate::bootstrap::offline_status(config) {
        m.insert("bootstrap".into(), b);
    }
    m.insert("rules".into(), crate::rules::stage::offline_status(config));
    if let Some(outbox) = crate::outbox::offline_status(config) {
        m.insert("outbox".into(), outbox);
    }
    m
}

/// Bytes in the regular files directly below `dir` (the state directory is flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn render_running(doc: &Value) -> String {
    let mut out = String::new();
    let d = &doc["daemon"];
    let _ = writeln!(
        out,
        "edge-agent {} is RUNNING (pid {}, up {})",
        str_of(&d["version"]),
        d["pid"],
        human_secs(d["uptime_secs"].as_u64().unwrap_or(0))
    );
    render_node_and_config(&mut out, doc);
    let dropped = &doc["reports_dropped_before_outbox"];
    if dropped
        .as_object()
        .is_some_and(|m| m.values().any(|v| v.as_u64().unwrap_or(0) > 0))
    {
        let _ = writeln!(
            out,
            "WARNING  reports dropped before reaching the outbox: {}",
            inline(dropped)
        );
    }
    render_stages(&mut out, &doc["stages"]);
    out
}

fn render_offline(doc: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "edge-agent is NOT RUNNING: {}",
        str_of(&doc["daemon"]["reason"])
    );
    let _ = writeln!(
        out,
        "  start it with: systemctl start edge-agent    (logs: journalctl -u edge-agent)"
    );
    render_node_and_config(&mut out, doc);
    if let Some(p) = doc.get("paths") {
        let _ = writeln!(
            out,
            "state    {} ({})",
            str_of(&p["state_dir"]),
            if p["state_dir_exists"].as_bool() == Some(true) {
                format!(
                    "{} on disk",
                    human_bytes(p["state_dir_bytes"].as_u64().unwrap_or(0))
                )
            } else {
                "missing".into()
            }
        );
    }
    if let Some(stages) = doc.get("stages") {
        render_stages(&mut out, stages);
    }
    out
}

fn render_node_and_config(out: &mut String, doc: &Value) {
    if let Some(n) = doc.get("node") {
        let groups = n["groups"]
            .as_array()
            .map(|g| g.iter().map(str_of).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "node     {}  fleet {}{}",
            str_of(&n["id"]),
            str_of(&n["fleet"]),
            if groups.is_empty() {
                String::new()
            } else {
                format!("  groups {groups}")
            }
        );
    }
    let c = &doc["config"];
    let mut line = format!("config   {}", str_of(&c["path"]));
    if c["valid"].as_bool() == Some(false) {
        let _ = write!(
            line,
            "  INVALID:\n  {}",
            str_of(&c["error"]).replace('\n', "\n  ")
        );
    }
    if let Some(r) = c.get("last_reload").filter(|r| !r.is_null()) {
        if r["ok"].as_bool() == Some(true) {
            let _ = write!(line, "  (reloaded {})", when(r["at"].as_u64()));
        } else {
            let _ = write!(
                line,
                "\n  last reload REFUSED {}: {}",
                when(r["at"].as_u64()),
                str_of(&r["error"])
            );
        }
    }
    let _ = writeln!(out, "{line}");
}

fn render_stages(out: &mut String, stages: &Value) {
    let Some(stages) = stages.as_object() else {
        return;
    };
    if stages.is_empty() {
        return;
    }
    let _ = writeln!(out);
    for (name, s) in stages {
        let state = str_of(&s["state"]);
        let marker = match state.as_str() {
            "failed" => "!! ",
            "degraded" => "!  ",
            _ => "   ",
        };
        let _ = writeln!(
            out,
            "{marker}{name:<10} {:<9} {}",
            state.to_uppercase(),
            str_of(&s["summary"])
        );
        if let Some(details) = s["details"].as_object() {
            for (k, v) in details {
                let _ = writeln!(out, "      {k}: {}", inline(v));
            }
        }
        if let Some(e) = s.get("last_error").filter(|e| !e.is_null()) {
            let _ = writeln!(
                out,
                "      last error {}: {}",
                when(e["at"].as_u64()),
                str_of(&e["message"])
            );
        }
    }
}

/// A JSON value on one line: objects as `k=v k=v`, arrays comma separated.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", inline(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Value::Array(a) => a.iter().map(inline).collect::<Vec<_>>().join(", "),
        Value::Null => "-".into(),
        other => str_of(other),
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn when(unix: Option<u64>) -> String {
    match unix {
        Some(t) if t > 0 => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t))
            .to_string()
            .replace('T', " "),
        _ => "-".into(),
    }
}

fn human_secs(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn human_bytes(b: u64) -> String {
    crate::config::ByteSize(b).to_string()
}

impl crate::config::PathsConfig {
    /// The socket of a default root install, for when no config is readable.
    fn control_socket_or_default(&self) -> std::path::PathBuf {
        let _ = DEFAULT_CONFIG_PATH;
        std::path::PathBuf::from("/run/edge-agent/control.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_render_on_one_line_each() {
        assert_eq!(
            inline(&json!({"alert": 3, "metrics": 10})),
            "alert=3 metrics=10"
        );
        assert_eq!(inline(&json!(["a", "b"])), "a, b");
        assert_eq!(inline(&Value::Null), "-");
    }

    #[test]
    fn a_failed_stage_is_marked_and_shows_its_error() {
        let stages = json!({"sensor": {"state": "failed", "summary": "no BTF", "details": {}, "last_error": {"at": 0, "message": "no BTF"}}});
        let mut out = String::new();
        render_stages(&mut out, &stages);
        assert!(out.contains("!! sensor"), "{out}");
        assert!(out.contains("FAILED"), "{out}");
        assert!(
            out.contains("last error - : no BTF") || out.contains("no BTF"),
            "{out}"
        );
    }
}
