//! `edge-agent alerts [--follow] [--since D] [--rule R] [--json]`: what
//! fired on this node, from the history the daemon keeps in the state
//! directory (`rules.history`), asked of the running daemon or, when it is
//! down, read from the files. One line per alert (the date and Falco's
//! output line, which starts with the time and the priority), or Falco's
//! JSON with `--json`.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::Exit;
use crate::config::AgentConfig;
use crate::control::{Client, ClientError};
use crate::rules::history::{self, Query};

pub(crate) struct Options {
    pub(crate) follow: bool,
    pub(crate) since: Option<Duration>,
    pub(crate) rule: Option<String>,
    pub(crate) json: bool,
}

pub(crate) async fn alerts(config_path: &Path, opts: Options) -> anyhow::Result<Exit> {
    let config = match AgentConfig::load(config_path) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let since_ms = opts.since.map(|d| {
        SystemTime::now()
            .checked_sub(d)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |t| t.as_millis() as u64)
    });
    let q = Query {
        since_ms,
        rule: opts.rule.clone(),
        limit: None,
    };
    let params = json!({"since_ms": q.since_ms, "rule": q.rule});
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>, a: &Value| -> bool {
        let text = if opts.json { a.to_string() } else { line(a) };
        writeln!(out, "{text}").is_ok()
    };
    let client = Client::connect(&config.paths.control_socket()).await;
    let mut client = match client {
        Ok(c) => c,
        Err(ClientError::NotRunning { .. }) => {
            let kept = history::read(&config.paths.state_dir, config.rules.history as usize, &q);
            for a in &kept {
                if !print(&mut out, a) {
                    return Ok(Exit::Ok);
                }
            }
            eprintln!(
                "edge-agent: the daemon is not running; these are the alerts kept in {}",
                config.paths.state_dir.join(history::CURRENT).display()
            );
            return Ok(if opts.follow {
                Exit::NotRunning
            } else {
                Exit::Ok
            });
        }
        Err(e @ ClientError::PermissionDenied { .. }) => {
            eprintln!("edge-agent: {e}");
            return Ok(Exit::PermissionDenied);
        }
        Err(e) => return Err(e.into()),
    };
    // Subscribe first, then list: nothing falls between the two.
    let mut follower = if opts.follow {
        let mut f = Client::connect(&config.paths.control_socket()).await?;
        f.start_stream("rules.follow_alerts", params.clone())
            .await?;
        Some(f)
    } else {
        None
    };
    let listed = match client.call("rules.history", params).await {
        Ok(v) => v,
        Err(ClientError::Refused(e)) if e.code == "unknown_method" => {
            eprintln!(
                "edge-agent: the daemon's rules stage is not running (see `edge-agent status`)"
            );
            return Ok(Exit::Failure);
        }
        Err(e) => return Err(e.into()),
    };
    for a in listed["alerts"].as_array().into_iter().flatten() {
        if !print(&mut out, a) {
            return Ok(Exit::Ok);
        }
    }
    let Some(f) = follower.as_mut() else {
        return Ok(Exit::Ok);
    };
    let _ = out.flush();
    loop {
        let item = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            item = f.next_item() => item?,
        };
        let Some(a) = item else {
            eprintln!("edge-agent: the daemon ended the stream (it is shutting down)");
            return Ok(Exit::Ok);
        };
        if let Some(n) = a.get("lagged") {
            eprintln!("edge-agent: this follower fell behind; {n} alerts were skipped");
            continue;
        }
        if !print(&mut out, &a) {
            return Ok(Exit::Ok);
        }
        let _ = out.flush();
    }
}

/// The date, then Falco's output line (`HH:MM:SS.nnnnnnnnn: Priority text`).
pub(crate) fn line(a: &Value) -> String {
    let date = a["time"]
        .as_str()
        .and_then(|t| t.get(..10))
        .unwrap_or("????-??-??");
    match a["output"].as_str() {
        Some(o) => format!("{date} {o}"),
        None => format!(
            "{date} {} {}",
            a["priority"].as_str().unwrap_or("?"),
            a["rule"].as_str().unwrap_or("?")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_date_and_falcos_output() {
        let a = json!({"time": "2026-11-26T07:25:27.123456789Z", "output": "07:25:27.123456789: Critical shell", "rule": "R"});
        assert_eq!(line(&a), "2026-11-26 07:25:27.123456789: Critical shell");
    }
}
