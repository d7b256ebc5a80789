//! `edge-agent rules check|list|test`: the rules engine from the command line.
//!
//! `check` loads rule files exactly as the daemon would and lists every
//! problem with file, line and column; `list` shows the daemon's rules with
//! their hit counts (or, with the daemon down, what the config would load);
//! `test` replays recorded events (`edge-agent sensor watch --json` output)
//! through the rules and prints the alerts as Falco JSON lines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Exit;
use crate::config::{AgentConfig, Priority};
use crate::control::{Client, ClientError};
use crate::event::Event;
use crate::rules::engine::{Engine, Limits};
use crate::rules::{Loaded, Severity, load_paths};

/// The rule files to use: those given, else the config's `[rules] files`.
fn rule_files(config_path: &Path, files: &[PathBuf]) -> anyhow::Result<Result<Vec<PathBuf>, Exit>> {
    if !files.is_empty() {
        return Ok(Ok(files.to_vec()));
    }
    match AgentConfig::load(config_path) {
        Ok(l) => Ok(Ok(l.config.rules.files)),
        Err(e) => {
            eprintln!("{e}");
            eprintln!("(name rule files on the command line to check them without a config)");
            Ok(Err(Exit::Config))
        }
    }
}

fn summary(l: &Loaded) -> String {
    let s = &l.set;
    let warnings = l
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .count();
    format!(
        "{} of {} rules loaded, {} failed, {} skipped, {} disabled; {} warnings",
        s.rules.len(),
        s.catalog.len(),
        s.count("failed"),
        s.count("skipped"),
        s.count("disabled"),
        warnings
    )
}

/// `rules check [FILE...]`.
pub(crate) fn check(config_path: &Path, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let files = match rule_files(config_path, files)? {
        Ok(f) => f,
        Err(exit) => return Ok(exit),
    };
    let loaded = load_paths(&files);
    for f in &loaded.set.files {
        let version = f
            .required_engine_version
            .as_deref()
            .map(|v| format!(", engine {v}"))
            .unwrap_or_default();
        match &f.error {
            None => println!(
                "{}: {} rules, sha256 {}{version}",
                f.path.display(),
                f.rules,
                f.sha256.get(..16).unwrap_or("")
            ),
            Some(e) => println!("{}: NOT LOADED: {e}", f.path.display()),
        }
    }
    for p in &loaded.problems {
        println!("{p}");
    }
    println!("{}", summary(&loaded));
    Ok(if loaded.has_errors() {
        Exit::Pending
    } else {
        Exit::Ok
    })
}

/// `rules list [--json]`.
pub(crate) async fn list(config_path: &Path, as_json: bool) -> anyhow::Result<Exit> {
    let loaded_cfg = AgentConfig::load(config_path);
    let socket = match &loaded_cfg {
        Ok(l) => l.config.paths.control_socket(),
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let answer = match Client::connect(&socket).await {
        Ok(mut c) => c.call("rules.list", Value::Null).await,
        Err(e) => Err(e),
    };
    let (doc, exit) = match answer {
        Ok(doc) => (doc, Exit::Ok),
        Err(e) => {
            let exit = match e {
                ClientError::NotRunning { .. } => Exit::NotRunning,
                ClientError::PermissionDenied { .. } => Exit::PermissionDenied,
                _ => Exit::Failure,
            };
            eprintln!("{e}; showing the rules the config would load (no hit counts)");
            let files = loaded_cfg
                .as_ref()
                .map(|l| l.config.rules.files.clone())
                .unwrap_or_default();
            let loaded = load_paths(&files);
            let eng = Engine::new(loaded, unlimited(), String::new(), 0);
            (eng.rules_list(), exit)
        }
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(exit);
    }
    let mut out = String::new();
    let rules = doc["rules"].as_array().cloned().unwrap_or_default();
    let width = rules
        .iter()
        .filter_map(|r| r["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    out.push_str(&format!(
        "{:<width$}  {:<9} {:<9} {:>8} {:>8} {:>10}\n",
        "RULE", "PRIORITY", "STATE", "HITS", "ALERTS", "SUPPRESSED"
    ));
    let num = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    for r in &rules {
        out.push_str(&format!(
            "{:<width$}  {:<9} {:<9} {:>8} {:>8} {:>10}\n",
            r["name"].as_str().unwrap_or(""),
            r["priority"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            num(&r["hits"]),
            num(&r["alerts"]),
            num(&r["suppressed"]),
        ));
    }
    for p in doc["problems"].as_array().into_iter().flatten() {
        if p["severity"] == "error" {
            out.push_str(&format!("{}\n", p["text"].as_str().unwrap_or("")));
        }
    }
    print!("{out}");
    Ok(exit)
}

/// No rate limit: a replay shows every match.
fn unlimited() -> Limits {
    Limits {
        rate: 1e12,
        max_burst: u32::MAX,
        alert_threshold: Priority::Critical,
    }
}

/// `rules test --events FILE [--rules FILE...]`.
pub(crate) fn test(config_path: &Path, events: &Path, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let files = match rule_files(config_path, files)? {
        Ok(f) => f,
        Err(exit) => return Ok(exit),
    };
    let loaded = load_paths(&files);
    let rule_errors = loaded.has_errors();
    for p in loaded
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
    {
        eprintln!("{p}");
    }
    eprintln!("{}", summary(&loaded));
    let threshold = AgentConfig::load(config_path)
        .map(|l| l.config.rules.alert_threshold)
        .unwrap_or(Priority::Critical);
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut engine = Engine::new(
        loaded,
        Limits {
            alert_threshold: threshold,
            ..unlimited()
        },
        hostname,
        0,
    );
    let reader: Box<dyn BufRead> = if events == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(events) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("{}: cannot read the events file: {e}", events.display());
                return Ok(Exit::Failure);
            }
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut n_events, mut n_alerts, mut bad) = (0u64, 0u64, 0u64);
    let mut alerts = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}:{}: cannot read: {e}", events.display(), i + 1);
                bad += 1;
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = match serde_json::from_str(&line) {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("{}:{}: not an event: {e}", events.display(), i + 1);
                bad += 1;
                continue;
            }
        };
        n_events += 1;
        engine.process(&ev, ev.evt.time, &mut alerts);
        for a in alerts.drain(..) {
            n_alerts += 1;
            serde_json::to_writer(&mut out, &a.payload)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    eprintln!("{n_events} events, {n_alerts} alerts, {bad} bad lines");
    Ok(if bad > 0 {
        Exit::Failure
    } else if rule_errors {
        Exit::Pending
    } else {
        Exit::Ok
    })
}
