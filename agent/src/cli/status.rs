//! `edge-agent status [--json] [--verbose]`: one screen for the field
//! technician (a line per stage, with its key numbers and last error);
//! `--verbose` adds every detail each stage reports, `--json` is everything.
//!
//! Asks the daemon over the control socket. When the daemon is not running it
//! says so first, exits with [`Exit::NotRunning`], and still shows what it can
//! read without the daemon: the config and the state directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::Exit;
use crate::config::{AgentConfig, ConfigError, LoadedConfig, PathsConfig};
use crate::control::{Client, ClientError};
use crate::status::dir_bytes;

/// How long `status` waits for the daemon's answer. The answer is built from
/// in-memory snapshots in microseconds; a daemon that takes this long is
/// overloaded or stuck, and the technician should hear that, not wait.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of each stage the text view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// State, summary and last error: fits one screen.
    Summary,
    /// Every detail too.
    All,
}

pub async fn status(config_path: &Path, as_json: bool, detail: Detail) -> anyhow::Result<Exit> {
    let loaded = AgentConfig::load(config_path);
    // The paths come from the config; from as much of it as can be read when
    // it is broken, so a running daemon is still found.
    let paths = match &loaded {
        Ok(l) => l.config.paths.clone(),
        Err(_) => PathsConfig::lenient(
            &std::fs::read_to_string(config_path).unwrap_or_default(),
            config_path,
        ),
    };

    let candidates = paths.control_socket_candidates();
    let (answer, socket) = ask(&candidates).await;
    match answer {
        Ok(mut doc) => {
            // The daemon knows the file it loaded; we know the file on disk now.
            doc["config"]["valid"] = json!(loaded.is_ok());
            doc["config"]["error"] = match &loaded {
                Ok(_) => Value::Null,
                Err(e) => json!(e.to_string()),
            };
            if as_json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_running(&doc, detail));
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            let exit = match &e {
                ClientError::NotRunning { .. } => Exit::NotRunning,
                ClientError::PermissionDenied { .. } => Exit::PermissionDenied,
                _ => Exit::Failure,
            };
            let doc = offline_document(
                config_path,
                &loaded,
                &paths,
                &socket,
                &reason(&e, &candidates),
            );
            if as_json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", render_offline(&doc, exit, detail));
            }
            Ok(exit)
        }
    }
}

/// Ask each candidate socket for `status` until one answers; a refusal
/// (permission, protocol) ends the search, since a daemon is there. Returns
/// the answer and the socket it concerns.
async fn ask(candidates: &[PathBuf]) -> (Result<Value, ClientError>, PathBuf) {
    for socket in candidates {
        let answer = match Client::connect(socket).await {
            Ok(mut client) => {
                match tokio::time::timeout(ANSWER_TIMEOUT, client.call("status", Value::Null)).await
                {
                    Ok(answer) => answer,
                    Err(_) => Err(ClientError::Io {
                        path: socket.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the daemon did not answer within {}s; it may be overloaded or stuck (journalctl -u edge-agent)",
                                ANSWER_TIMEOUT.as_secs()
                            ),
                        ),
                    }),
                }
            }
            Err(e) => Err(e),
        };
        if !matches!(answer, Err(ClientError::NotRunning { .. })) {
            return (answer, socket.clone());
        }
    }
    let first = candidates.first().cloned().unwrap_or_default();
    (
        Err(ClientError::NotRunning {
            path: first.clone(),
        }),
        first,
    )
}

/// Why there is no answer, in words; every socket tried is named.
fn reason(e: &ClientError, candidates: &[PathBuf]) -> String {
    match e {
        ClientError::NotRunning { .. } => format!(
            "nothing answers on {}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        other => other.to_string(),
    }
}

/// What `status` can say without the daemon: the keys of the running
/// daemon's document (see `daemon::status_document`), with `daemon.running =
/// false` and `null` where only the daemon knows.
fn offline_document(
    config_path: &Path,
    loaded: &Result<LoadedConfig, ConfigError>,
    paths: &PathsConfig,
    socket: &Path,
    reason: &str,
) -> Value {
    let state_dir = paths.state_dir_for_client();
    let (node, stages, fleet) = match loaded {
        Ok(l) => {
            let c = &l.config;
            (
                json!({ "id": c.node.id, "fleet": c.node.fleet, "groups": c.node.groups }),
                Value::Object(offline_sections(c)),
                serde_json::to_value(crate::fleet::held::summary_from_disk(c))
                    .unwrap_or(Value::Null),
            )
        }
        Err(_) => (Value::Null, Value::Object(Map::new()), Value::Null),
    };
    json!({
        "schema": 1,
        "daemon": {
            "running": false,
            "pid": null,
            "version": crate::VERSION,
            "started_at": null,
            "uptime_secs": null,
            "reason": reason,
        },
        "node": node,
        "config": {
            "path": config_path,
            "valid": loaded.is_ok(),
            "error": loaded.as_ref().err().map(ToString::to_string),
            "last_reload": null,
            "pending_restart": [],
            "generation": null,
            "applied": null,
        },
        "paths": {
            "state_dir": state_dir,
            "state_dir_exists": state_dir.is_dir(),
            "state_dir_bytes": dir_bytes(&state_dir),
            "runtime_dir": socket.parent().unwrap_or(&paths.runtime_dir),
            "control_socket": socket,
        },
        "reports_dropped_before_outbox": null,
        "stages": stages,
        "fleet": fleet,
    })
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

fn render_running(doc: &Value, detail: Detail) -> String {
    let mut out = String::new();
    let d = &doc["daemon"];
    let _ = writeln!(
        out,
        "edge-agent {} is RUNNING (pid {}, up {})",
        str_of(&d["version"]),
        d["pid"],
        human_secs(d["uptime_secs"].as_u64().unwrap_or(0))
    );
    render_node_config_paths(&mut out, doc, true);
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
    render_stages(&mut out, &doc["stages"], detail);
    out
}

fn render_offline(doc: &Value, exit: Exit, detail: Detail) -> String {
    let mut out = String::new();
    let reason = str_of(&doc["daemon"]["reason"]);
    let socket = str_of(&doc["paths"]["control_socket"]);
    match exit {
        Exit::PermissionDenied => {
            let _ = writeln!(out, "edge-agent status: PERMISSION DENIED on {socket}");
            let _ = writeln!(
                out,
                "  run it as root (sudo edge-agent status), or join the control group\n  \
                 (control.group in the config; e.g. sudo usermod -aG edge-agent $USER, then log in again)"
            );
        }
        Exit::NotRunning => {
            let _ = writeln!(out, "edge-agent is NOT RUNNING: {reason}");
            let _ = writeln!(
                out,
                "  start it with: sudo systemctl start edge-agent    (why it stopped: journalctl -u edge-agent)"
            );
        }
        _ => {
            let _ = writeln!(out, "edge-agent is NOT ANSWERING: {reason}");
            let _ = writeln!(
                out,
                "  see: journalctl -u edge-agent;  restart it with: sudo systemctl restart edge-agent"
            );
        }
    }
    render_node_config_paths(&mut out, doc, false);
    render_stages(&mut out, &doc["stages"], detail);
    out
}

/// The node, config, state and socket lines. `running`: whether a daemon
/// answered (an invalid file then means "the next reload or restart fails").
fn render_node_config_paths(out: &mut String, doc: &Value, running: bool) {
    let n = &doc["node"];
    if !n.is_null() {
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
    let path = str_of(&c["path"]);
    let mut line = format!("config   {path}");
    if let Some(r) = c.get("last_reload").filter(|r| !r.is_null()) {
        if r["ok"].as_bool() == Some(true) {
            let _ = write!(line, "  (reloaded {})", when(r["at"].as_u64()));
        } else {
            let _ = write!(
                line,
                "\n         last reload REFUSED {}: {}",
                when(r["at"].as_u64()),
                str_of(&r["error"])
            );
        }
    }
    if c["valid"].as_bool() == Some(false) {
        let consequence = if running {
            "the file on disk is INVALID: a reload will be refused and a restart will fail"
        } else {
            "INVALID: the agent cannot start with it"
        };
        let _ = write!(
            line,
            "\n         {consequence}\n           {}\n         check it with: edge-agent config check {path}",
            str_of(&c["error"]).replace('\n', "\n           ")
        );
    }
    if let Some(p) = c["pending_restart"].as_array().filter(|p| !p.is_empty()) {
        let _ = write!(
            line,
            "\n         changed on disk, applied at the next restart: {}",
            inline(&Value::Array(p.clone()))
        );
    }
    let _ = writeln!(out, "{line}");
    let p = &doc["paths"];
    if !p.is_null() {
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
        let _ = writeln!(out, "socket   {}", str_of(&p["control_socket"]));
    }
    render_fleet(out, &doc["fleet"], running);
}

/// The `fleet` line: the version in force per layer, a trial, the last
/// result.
fn render_fleet(out: &mut String, fleet: &Value, running: bool) {
    let Ok(s) = serde_json::from_value::<crate::fleet::summary::Summary>(fleet.clone()) else {
        return;
    };
    if !s.enabled {
        let _ = writeln!(out, "fleet    off (fleet.trusted_keys is empty)");
        return;
    }
    let mut line = format!("fleet    {}", s.layers_line());
    if let Some(sha) = &s.effective_sha256 {
        let _ = write!(line, "  (effective {})", &sha[..sha.len().min(12)]);
    }
    if let Some(t) = &s.trial {
        if running {
            let _ = write!(
                line,
                "\n         TRIAL of {} v{} in progress, reverted unless healthy by {}",
                t.layer,
                t.version,
                when(Some(t.deadline))
            );
        } else {
            let _ = write!(
                line,
                "\n         the agent stopped during the trial of {} v{}: it will start with the last good config and report it reverted",
                t.layer, t.version
            );
        }
    }
    if let Some(r) = s.last_result() {
        let _ = write!(
            line,
            "\n         last result: {} {} v{} at {}{}",
            r.outcome.as_str().to_uppercase(),
            r.layer,
            r.version.map_or("-".into(), |v| v.to_string()),
            r.time,
            r.reasons
                .first()
                .map_or(String::new(), |reason| format!(": {reason}"))
        );
    }
    let _ = writeln!(out, "{line}");
}

fn render_stages(out: &mut String, stages: &Value, detail: Detail) {
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
        let key = |k: &str| {
            s["key_details"]
                .as_array()
                .is_some_and(|keys| keys.iter().any(|n| n == k))
        };
        if let Some(details) = s["details"].as_object() {
            for (k, v) in details {
                let shown = match detail {
                    Detail::All => Some(v.clone()),
                    Detail::Summary if key(k) => notable(v),
                    Detail::Summary => None,
                };
                match shown {
                    Some(Value::Number(n)) if k.ends_with("_at") => {
                        let _ = writeln!(out, "      {k}: {}", when(n.as_u64()));
                    }
                    Some(v) => {
                        let _ = writeln!(out, "      {k}: {}", inline(&v));
                    }
                    None => {}
                }
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
    if detail == Detail::Summary {
        let _ = writeln!(
            out,
            "\n(each stage's numbers: edge-agent status --verbose; all of it as JSON: --json)"
        );
    }
}

/// `v` if it says something: a non-zero number, `true`, a non-empty string
/// or list; an object keeps its notable entries. None otherwise.
fn notable(v: &Value) -> Option<Value> {
    match v {
        Value::Number(n) if n.as_f64() != Some(0.0) => Some(v.clone()),
        Value::Bool(true) => Some(v.clone()),
        Value::String(s) if !s.is_empty() && s != "-" => Some(v.clone()),
        Value::Array(a) if !a.is_empty() => Some(v.clone()),
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), notable(v)?)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        _ => None,
    }
}

/// A JSON value on one line: objects as `k=v k=v`, arrays comma separated,
/// nothing (null, empty) as `-`.
fn inline(v: &Value) -> String {
    match v {
        Value::Object(m) if m.is_empty() => "-".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
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
        assert_eq!(inline(&json!([])), "-");
        assert_eq!(inline(&json!({})), "-");
    }

    #[test]
    fn the_summary_fits_a_screen_and_verbose_adds_every_detail() {
        let stages = json!({
            "outbox": {"state": "running", "summary": "3 records waiting", "details": {
                "records_waiting_by_class": {"alert": 3}, "file_bytes": 73728,
                "given_up_total_by_class": {"critical_alert": 0, "metrics": 12}},
                "key_details": ["given_up_total_by_class"]},
            "sensor": {"state": "running", "summary": "37 probes attached", "details": {"lost_total": 0, "probes_missing": []},
                "key_details": ["lost_total", "probes_missing"]},
            "uplink": {"state": "running", "summary": "connected", "details": {"last_publish_at": 1_700_000_000, "reconnects_total": 2, "connects_total": 3},
                "key_details": ["last_publish_at", "reconnects_total"]},
        });
        let mut short = String::new();
        render_stages(&mut short, &stages, Detail::Summary);
        assert!(
            short.contains("outbox     RUNNING   3 records waiting"),
            "{short}"
        );
        assert!(!short.contains("file_bytes"), "{short}");
        // Key details when they say something; zeros and empty lists are quiet.
        assert!(
            short.contains("      given_up_total_by_class: metrics=12\n"),
            "{short}"
        );
        assert!(
            !short.contains("lost_total") && !short.contains("probes_missing"),
            "{short}"
        );
        assert!(
            short.contains("      last_publish_at: 2023-11-14 22:13:20Z"),
            "{short}"
        );
        assert!(short.contains("      reconnects_total: 2"), "{short}");
        assert!(
            !short.contains("connects_total: 3"),
            "not a key detail: {short}"
        );
        assert!(
            short.contains("--verbose"),
            "says where the rest is: {short}"
        );
        let mut long = String::new();
        render_stages(&mut long, &stages, Detail::All);
        assert!(
            long.contains("      records_waiting_by_class: alert=3"),
            "{long}"
        );
        assert!(long.contains("      lost_total: 0"), "{long}");
        assert!(!long.contains("--verbose"), "{long}");
    }

    #[test]
    fn a_failed_stage_is_marked_and_shows_its_error() {
        let stages = json!({"sensor": {"state": "failed", "summary": "no BTF", "details": {}, "last_error": {"at": 0, "message": "no BTF"}}});
        let mut out = String::new();
        render_stages(&mut out, &stages, Detail::Summary);
        assert!(out.contains("!! sensor"), "{out}");
        assert!(out.contains("FAILED"), "{out}");
        assert!(out.contains("last error -: no BTF"), "{out}");
    }

    fn offline(loaded: Result<LoadedConfig, ConfigError>) -> Value {
        let paths = PathsConfig::lenient("", Path::new("/nonexistent/agent.toml"));
        offline_document(
            Path::new("/nonexistent/agent.toml"),
            &loaded,
            &paths,
            &paths.control_socket(),
            "nothing answers",
        )
    }

    fn keys(v: &Value) -> Vec<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn offline_and_running_documents_have_the_same_keys() {
        let loaded = AgentConfig::from_toml("", Path::new("/nonexistent/agent.toml")).map(|c| {
            LoadedConfig {
                config: c,
                path: "/nonexistent/agent.toml".into(),
                text: String::new(),
            }
        });
        let doc = offline(loaded);
        assert_eq!(
            keys(&doc),
            [
                "schema",
                "daemon",
                "node",
                "config",
                "paths",
                "reports_dropped_before_outbox",
                "stages",
                "fleet"
            ]
        );
        assert_eq!(
            keys(&doc["daemon"]),
            [
                "running",
                "pid",
                "version",
                "started_at",
                "uptime_secs",
                "reason"
            ]
        );
        assert_eq!(
            keys(&doc["config"]),
            [
                "path",
                "valid",
                "error",
                "last_reload",
                "pending_restart",
                "generation",
                "applied"
            ]
        );
        assert_eq!(
            keys(&doc["paths"]),
            [
                "state_dir",
                "state_dir_exists",
                "state_dir_bytes",
                "runtime_dir",
                "control_socket"
            ]
        );
    }

    #[test]
    fn an_invalid_config_is_shown_with_its_error_and_how_to_check_it() {
        let e = AgentConfig::from_toml("[log]\nlevel = 3\n", Path::new("/etc/ea/agent.toml"))
            .unwrap_err();
        let doc = offline(Err(e));
        assert_eq!(doc["config"]["valid"], false);
        assert!(doc["node"].is_null());
        let text = render_offline(&doc, Exit::NotRunning, Detail::Summary);
        assert!(text.starts_with("edge-agent is NOT RUNNING"), "{text}");
        assert!(text.contains("INVALID"), "{text}");
        assert!(text.contains("log.level"), "{text}");
        assert!(text.contains("edge-agent config check"), "{text}");
    }
}
