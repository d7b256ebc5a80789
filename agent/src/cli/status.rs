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

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::Exit;
use crate::config::{AgentConfig, ConfigError, LoadedConfig, PathsConfig};
use crate::control::{Client, ClientError};
use crate::status::{
    ConfigStatus, DaemonStatus, NodeStatus, PathsStatus, STATUS_SCHEMA, StageState, StageStatus,
    StatusDocument, dir_bytes,
};

/// How long `status` waits for the daemon's answer. The answer is built from
/// in-memory snapshots in microseconds; a daemon that takes this long is
/// overloaded or stuck, and the technician should hear that, not wait.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of each stage the text view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// State, summary and last error: fits one screen.
    Summary,
    /// Every detail too.
    All,
}

pub(crate) async fn status(
    config_path: &Path,
    as_json: bool,
    detail: Detail,
) -> anyhow::Result<Exit> {
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
            doc.config.valid = loaded.is_ok();
            doc.config.error = loaded.as_ref().err().map(ToString::to_string);
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
async fn ask(candidates: &[PathBuf]) -> (Result<StatusDocument, ClientError>, PathBuf) {
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
            let doc = answer.and_then(|v| {
                serde_json::from_value(v).map_err(|e| ClientError::Io {
                    path: socket.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the daemon's status answer is not a status document: {e}"),
                    ),
                })
            });
            return (doc, socket.clone());
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

/// What `status` can say without the daemon: the running daemon's
/// document, with `daemon.running = false` and `null` where only the daemon
/// knows.
fn offline_document(
    config_path: &Path,
    loaded: &Result<LoadedConfig, ConfigError>,
    paths: &PathsConfig,
    socket: &Path,
    reason: &str,
) -> StatusDocument {
    let state_dir = paths.state_dir_for_client();
    let (node, stages, fleet) = match loaded {
        Ok(l) => {
            let c = &l.config;
            let node = NodeStatus {
                id: c.node.id.clone(),
                fleet: c.node.fleet.clone(),
                groups: c.node.groups.clone(),
            };
            (
                Some(node),
                offline_sections(c),
                Some(crate::fleet::held::summary_from_disk(c)),
            )
        }
        Err(_) => (None, IndexMap::new(), None),
    };
    StatusDocument {
        schema: STATUS_SCHEMA,
        daemon: DaemonStatus {
            running: false,
            pid: None,
            version: crate::VERSION.to_string(),
            started_at: None,
            uptime_secs: None,
            reason: Some(reason.to_string()),
        },
        node,
        config: ConfigStatus {
            path: config_path.to_path_buf(),
            valid: loaded.is_ok(),
            error: loaded.as_ref().err().map(ToString::to_string),
            last_reload: None,
            pending_restart: Vec::new(),
            generation: None,
            applied: None,
        },
        paths: PathsStatus {
            state_dir_exists: state_dir.is_dir(),
            state_dir_bytes: dir_bytes(&state_dir),
            state_dir,
            runtime_dir: socket.parent().unwrap_or(&paths.runtime_dir).to_path_buf(),
            control_socket: socket.to_path_buf(),
        },
        reports_dropped_before_outbox: None,
        stages,
        fleet,
        more: Map::new(),
    }
}

/// Per-stage facts readable from disk without the daemon (e.g. what waits in
/// the outbox). Each stage that can contributes a section here.
fn offline_sections(config: &AgentConfig) -> IndexMap<String, StageStatus> {
    let mut m = IndexMap::new();
    if let Some(b) = crate::bootstrap::offline_status(config) {
        m.insert("bootstrap".into(), b);
    }
    m.insert("rules".into(), crate::rules::stage::offline_status(config));
    if let Some(outbox) = crate::outbox::offline_status(config) {
        m.insert("outbox".into(), outbox);
    }
    m
}

fn render_running(doc: &StatusDocument, detail: Detail) -> String {
    let mut out = String::new();
    let d = &doc.daemon;
    let _ = writeln!(
        out,
        "edge-agent {} is RUNNING (pid {}, up {})",
        d.version,
        d.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
        human_secs(d.uptime_secs.unwrap_or(0))
    );
    render_node_config_paths(&mut out, doc, true);
    if let Some(dropped) = &doc.reports_dropped_before_outbox
        && dropped.values().any(|n| *n > 0)
    {
        let by_class: Vec<String> = dropped
            .iter()
            .map(|(class, n)| format!("{}={n}", class.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "WARNING  reports dropped before reaching the outbox: {}",
            by_class.join(" ")
        );
    }
    render_stages(&mut out, &doc.stages, detail);
    out
}

fn render_offline(doc: &StatusDocument, exit: Exit, detail: Detail) -> String {
    let mut out = String::new();
    let reason = doc.daemon.reason.as_deref().unwrap_or("-");
    let socket = doc.paths.control_socket.display();
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
    render_stages(&mut out, &doc.stages, detail);
    out
}

/// The node, config, state and socket lines. `running`: whether a daemon
/// answered (an invalid file then means "the next reload or restart fails").
fn render_node_config_paths(out: &mut String, doc: &StatusDocument, running: bool) {
    if let Some(n) = &doc.node {
        let _ = writeln!(
            out,
            "node     {}  fleet {}{}",
            n.id,
            n.fleet,
            if n.groups.is_empty() {
                String::new()
            } else {
                format!("  groups {}", n.groups.join(", "))
            }
        );
    }
    let c = &doc.config;
    let path = c.path.display();
    let mut line = format!("config   {path}");
    if let Some(r) = &c.last_reload {
        if r.ok {
            let _ = write!(line, "  (reloaded {})", when(Some(r.at)));
        } else {
            let _ = write!(
                line,
                "\n         last reload REFUSED {}: {}",
                when(Some(r.at)),
                r.error.as_deref().unwrap_or("-")
            );
        }
    }
    if !c.valid {
        let consequence = if running {
            "the file on disk is INVALID: a reload will be refused and a restart will fail"
        } else {
            "INVALID: the agent cannot start with it"
        };
        let _ = write!(
            line,
            "\n         {consequence}\n           {}\n         check it with: edge-agent config check {path}",
            c.error
                .as_deref()
                .unwrap_or("-")
                .replace('\n', "\n           ")
        );
    }
    if !c.pending_restart.is_empty() {
        let _ = write!(
            line,
            "\n         changed on disk, applied at the next restart: {}",
            c.pending_restart.join(", ")
        );
    }
    let _ = writeln!(out, "{line}");
    let p = &doc.paths;
    let _ = writeln!(
        out,
        "state    {} ({})",
        p.state_dir.display(),
        if p.state_dir_exists {
            format!("{} on disk", human_bytes(p.state_dir_bytes))
        } else {
            "missing".into()
        }
    );
    let _ = writeln!(out, "socket   {}", p.control_socket.display());
    if let Some(fleet) = &doc.fleet {
        render_fleet(out, fleet, running);
    }
}

/// The `fleet` line: the version in force per layer, a trial, the last
/// result.
fn render_fleet(out: &mut String, s: &crate::fleet::summary::Summary, running: bool) {
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

fn render_stages(out: &mut String, stages: &IndexMap<String, StageStatus>, detail: Detail) {
    if stages.is_empty() {
        return;
    }
    let _ = writeln!(out);
    for (name, s) in stages {
        let state = s.state.as_str();
        let marker = match s.state {
            StageState::Failed => "!! ",
            StageState::Degraded => "!  ",
            _ => "   ",
        };
        let _ = writeln!(
            out,
            "{marker}{name:<10} {:<9} {}",
            state.to_uppercase(),
            s.summary
        );
        for (k, v) in &s.details {
            let shown = match detail {
                Detail::All => Some(v.clone()),
                Detail::Summary if s.key_details.contains(k) => notable(v),
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
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "      last error {}: {}", when(Some(e.at)), e.message);
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
    use serde_json::json;

    fn stages(v: Value) -> IndexMap<String, StageStatus> {
        serde_json::from_value(v).unwrap()
    }

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
        let stages = stages(json!({
            "outbox": {"state": "running", "since": 0, "summary": "3 records waiting", "details": {
                "records_waiting_by_class": {"alert": 3}, "file_bytes": 73728,
                "given_up_total_by_class": {"critical_alert": 0, "metrics": 12}},
                "key_details": ["given_up_total_by_class"]},
            "sensor": {"state": "running", "since": 0, "summary": "37 probes attached", "details": {"lost_total": 0, "probes_missing": []},
                "key_details": ["lost_total", "probes_missing"]},
            "uplink": {"state": "running", "since": 0, "summary": "connected", "details": {"last_publish_at": 1_700_000_000, "reconnects_total": 2, "connects_total": 3},
                "key_details": ["last_publish_at", "reconnects_total"]},
        }));
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
        let stages = stages(
            json!({"sensor": {"state": "failed", "since": 0, "summary": "no BTF", "details": {}, "last_error": {"at": 0, "message": "no BTF"}}}),
        );
        let mut out = String::new();
        render_stages(&mut out, &stages, Detail::Summary);
        assert!(out.contains("!! sensor"), "{out}");
        assert!(out.contains("FAILED"), "{out}");
        assert!(out.contains("last error -: no BTF"), "{out}");
    }

    fn offline(loaded: Result<LoadedConfig, ConfigError>) -> StatusDocument {
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
    fn the_status_document_has_the_documented_keys_in_order() {
        let loaded = AgentConfig::from_toml("", Path::new("/nonexistent/agent.toml")).map(|c| {
            LoadedConfig {
                config: c,
                path: "/nonexistent/agent.toml".into(),
                text: String::new(),
            }
        });
        let doc = serde_json::to_value(offline(loaded)).unwrap();
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
        assert!(!doc.config.valid);
        assert!(doc.node.is_none());
        let text = render_offline(&doc, Exit::NotRunning, Detail::Summary);
        assert!(text.starts_with("edge-agent is NOT RUNNING"), "{text}");
        assert!(text.contains("INVALID"), "{text}");
        assert!(text.contains("log.level"), "{text}");
        assert!(text.contains("edge-agent config check"), "{text}");
    }
}
