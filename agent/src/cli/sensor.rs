//! `edge-agent sensor watch [--json] [--local]`: a live stream of the
//! sensor's decoded events, for debugging on a node (Ctrl-C stops it).
//!
//! Streams from the running daemon (`sensor.watch` on the control socket).
//! When no daemon runs, or with `--local`, it runs a sensor of its own (as
//! root), with the config's filters but never its deny list: a debugging
//! tool does not kill processes. `--json` prints one serde_json [`Event`]
//! per line, the format `edge-agent rules test --events FILE` reads.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::Exit;
use crate::config::AgentConfig;
use crate::control::{Client, ClientError};
use crate::event::Event;
use crate::sensor::{Decoded, Sensor};

pub(crate) async fn watch(config_path: &Path, json: bool, local: bool) -> anyhow::Result<Exit> {
    let config = match AgentConfig::load(config_path) {
        Ok(l) => l.config,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    if !local {
        match from_daemon(&config, json).await {
            Err(ClientError::NotRunning { path }) => {
                eprintln!(
                    "edge-agent: the daemon is not running (no answer on {}); running a sensor here instead (no enforcement)",
                    path.display()
                );
            }
            Err(ClientError::Refused(e)) if e.code == "unknown_method" => {
                eprintln!(
                    "edge-agent: the daemon's sensor is not running (disabled or failed; see `edge-agent status`). Use --local to run one here."
                );
                return Ok(Exit::Failure);
            }
            Err(ClientError::PermissionDenied { path }) => {
                eprintln!(
                    "edge-agent: permission denied on {}: run as root or as a member of the control group",
                    path.display()
                );
                return Ok(Exit::PermissionDenied);
            }
            Err(e) => return Err(e.into()),
            Ok(exit) => return Ok(exit),
        }
    }
    locally(&config, json).await
}

async fn from_daemon(config: &AgentConfig, json: bool) -> Result<Exit, ClientError> {
    let mut client = Client::connect(&config.paths.control_socket()).await?;
    client.start_stream("sensor.watch", Value::Null).await?;
    let mut out = std::io::stdout().lock();
    loop {
        let item = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            item = client.next_item() => item?,
        };
        let Some(v) = item else {
            eprintln!("edge-agent: the daemon ended the stream (it is shutting down)");
            return Ok(Exit::Ok);
        };
        if let Some(n) = v.get("lagged") {
            eprintln!("edge-agent: this watch fell behind; {n} events were skipped");
            continue;
        }
        let line = if json {
            v.to_string()
        } else {
            match serde_json::from_value::<Event>(v) {
                Ok(e) => render(&e),
                Err(e) => format!("(undecodable event: {e})"),
            }
        };
        if writeln!(out, "{line}").is_err() {
            // stdout closed (a pipe into `head`): done.
            return Ok(Exit::Ok);
        }
    }
}

async fn locally(config: &AgentConfig, json: bool) -> anyhow::Result<Exit> {
    let mut sensor_config = config.sensor.clone();
    sensor_config.deny_exec.clear();
    sensor_config.deny_open.clear();
    let started = tokio::task::spawn_blocking(move || Sensor::start(&sensor_config)).await?;
    let mut sensor = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edge-agent: the sensor could not start: {e}");
            return Ok(Exit::Failure);
        }
    };
    for (name, reason) in &sensor.probes.missing {
        eprintln!("edge-agent: optional probe {name} is missing: {reason}");
    }
    let mut batch = Vec::new();
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            r = sensor.read(&mut batch) => r?,
        }
        for d in batch.drain(..) {
            let line = match d {
                Decoded::Event { event, .. } if json => serde_json::to_string(&event)?,
                Decoded::Event { event, .. } => render(&event),
                Decoded::Loss(n) => {
                    eprintln!("edge-agent: the kernel lost {n} events (ring buffer full)");
                    continue;
                }
                // Never produced here: this sensor enforces nothing.
                Decoded::Filtered | Decoded::Learned | Decoded::Refused { .. } => continue,
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(Exit::Ok);
            }
        }
    }
}

/// One line per event for a person: time, type, process, what it did.
pub(crate) fn render(e: &Event) -> String {
    let t = crate::sensor::falco_time(e.evt.time);
    let mut line = format!(
        "{t} {:<12} {}[{}] ppid={} uid={}",
        e.evt.ty.as_str(),
        e.proc.name,
        e.proc.pid,
        e.proc.ppid,
        e.user.uid
    );
    if e.evt.ty.is_exec() {
        line.push_str(&format!(
            " exe={} cmdline={:?}",
            e.proc.exepath, e.proc.cmdline
        ));
    }
    if let Some(fd) = e.fd.as_ref().filter(|fd| !fd.name.is_empty()) {
        line.push_str(&format!(" fd={}", fd.name));
    }
    let args = e.render_args();
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args);
    }
    if !e.container.is_host() {
        line.push_str(&format!(
            " container={}{}",
            e.container.id,
            e.container
                .pod_name
                .as_deref()
                .map(|p| format!(
                    " pod={}/{}",
                    e.container.pod_namespace.as_deref().unwrap_or("?"),
                    p
                ))
                .unwrap_or_default()
        ));
    }
    line
}
