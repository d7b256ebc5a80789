//! `edge-agent fleet bridge [--status]` and `edge-agent fleet alerts`: the
//! fleet's alerts and metrics for operators (see [`crate::fleet::bridge`]
//! and [`crate::fleet::alerts`]).

use std::path::Path;
use std::time::Duration;

use super::Exit;
use super::fleet::load_ops;
use crate::config::{HumanDuration, Priority};
use crate::fleet::{alerts, bridge};

pub(crate) fn bridge(config: &Path, status: bool, json: bool) -> anyhow::Result<Exit> {
    let ops = match load_ops(config) {
        Ok(o) => o,
        Err(exit) => return Ok(exit),
    };
    if status {
        return super::block_on(bridge_status(&ops.config, json));
    }
    crate::logging::init(&ops.config.log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match rt.block_on(bridge::run(ops)) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) if e.is_config() => {
            eprintln!("{}: {e}", config.display());
            Ok(Exit::Config)
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn alerts(
    config: &Path,
    follow: bool,
    node: Option<String>,
    priority: Option<String>,
    since: Option<HumanDuration>,
    json: bool,
) -> anyhow::Result<Exit> {
    let priority = match priority.as_deref().map(|p| (p, Priority::parse_falco(p))) {
        None => None,
        Some((_, Some(p))) => Some(p),
        Some((p, None)) => {
            eprintln!(
                "edge-agent fleet alerts: --priority {p}: expected emergency, alert, critical, error, warning, notice, info or debug"
            );
            return Ok(Exit::Usage);
        }
    };
    let ops = match load_ops(config) {
        Ok(o) => o,
        Err(exit) => return Ok(exit),
    };
    let filter = alerts::Filter {
        node,
        priority,
        since: since.map(|d| d.get()),
        json,
    };
    super::block_on(alerts::tail(&ops, &filter, follow))?;
    Ok(Exit::Ok)
}

async fn bridge_status(config: &crate::config::AgentConfig, json: bool) -> anyhow::Result<Exit> {
    let listen = &config.bridge.listen;
    if listen.is_empty() {
        eprintln!(
            "edge-agent: bridge.listen is off, so the running bridge cannot be asked; send it SIGUSR1 to log its status"
        );
        return Ok(Exit::Failure);
    }
    let client = bridge::http::HttpClient::new(false, Path::new(""), Duration::from_secs(5))?;
    let uri: hyper::Uri = format!("http://{listen}/status").parse()?;
    match client.get(&uri).await {
        Ok(body) => {
            let doc: serde_json::Value = serde_json::from_slice(&body)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", bridge::render_status(&doc));
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!(
                "edge-agent: no bridge answers on {listen} ({e}): is `edge-agent fleet bridge` running with this config?"
            );
            Ok(Exit::NotRunning)
        }
    }
}
