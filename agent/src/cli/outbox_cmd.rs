//! `edge-agent outbox [--json] [--limit N]`: what is waiting to be sent, by
//! class (in drain order), oldest first. Asks the daemon; when it is not
//! running, reads the outbox file directly (the daemon holds it
//! exclusively while it runs).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Exit;
use crate::config::{AgentConfig, ByteSize};
use crate::control::{Client, ClientError};

pub(crate) async fn outbox(
    config_path: &Path,
    as_json: bool,
    limit: usize,
) -> anyhow::Result<Exit> {
    let loaded = match AgentConfig::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let config = &loaded.config;
    let socket = config.paths.control_socket();
    let answer = match Client::connect(&socket).await {
        Ok(mut c) => c.call("outbox.list", json!({ "limit": limit })).await,
        Err(e) => Err(e),
    };
    let (doc, source) = match answer {
        Ok(doc) => (doc, "the running daemon".to_string()),
        Err(ClientError::NotRunning { .. }) => {
            let path = crate::outbox::file_path(config);
            if !path.exists() {
                println!(
                    "no outbox file at {} (the daemon has not run with this config yet)",
                    path.display()
                );
                return Ok(Exit::NotRunning);
            }
            match crate::outbox::read_offline(&path, limit) {
                Ok(l) => (
                    crate::outbox::listing_json(&l, None),
                    format!("{} (the daemon is not running)", path.display()),
                ),
                Err(e) => {
                    eprintln!(
                        "edge-agent: the daemon is not running and {e}; starting the daemon repairs the file"
                    );
                    return Ok(Exit::NotRunning);
                }
            }
        }
        Err(e @ ClientError::PermissionDenied { .. }) => {
            eprintln!("edge-agent: {e}");
            return Ok(Exit::PermissionDenied);
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc, &source));
    }
    Ok(Exit::Ok)
}

fn age(created_ms: Option<u64>) -> String {
    match created_ms {
        Some(ms) if ms > 0 => {
            let now = crate::unix_time::now_millis();
            let secs = now.saturating_sub(ms) / 1000;
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
        _ => "-".into(),
    }
}

fn render(doc: &Value, source: &str) -> String {
    let mut out = String::new();
    let classes = doc["classes"].as_array().cloned().unwrap_or_default();
    let total: u64 = classes.iter().filter_map(|c| c["records"].as_u64()).sum();
    let bytes: u64 = classes.iter().filter_map(|c| c["bytes"].as_u64()).sum();
    let _ = writeln!(
        out,
        "outbox ({source}): {total} records waiting, {}; next seq {}",
        ByteSize(bytes),
        doc["next_seq"]
    );
    if doc["disk_full"] == Value::Bool(true) {
        let _ = writeln!(
            out,
            "DISK FULL: {} new records wait in memory until the state filesystem has room",
            doc["held_in_memory"]
        );
    }
    let counts = |v: &Value| -> String {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let given_up = counts(&doc["given_up"]);
    if !given_up.is_empty() {
        let expired = counts(&doc["expired"]);
        let _ = writeln!(
            out,
            "given up so far: {given_up}{}",
            if expired.is_empty() {
                String::new()
            } else {
                format!(" (of which too old: {expired})")
            }
        );
    }
    for c in &classes {
        let n = c["records"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "\n{:<15} {n:>9} records {:>11}   oldest {}",
            c["class"].as_str().unwrap_or("?"),
            ByteSize(c["bytes"].as_u64().unwrap_or(0)).to_string(),
            age(c["oldest_created_ms"].as_u64())
        );
        let listed = c["oldest"].as_array().cloned().unwrap_or_default();
        for r in &listed {
            let _ = writeln!(
                out,
                "    seq {:<20} {:>14}  {:<14} {:>8} B  {}",
                r["seq"],
                age(r["created_ms"].as_u64()),
                r["topic"].as_str().unwrap_or("-"),
                r["bytes"],
                r["about"].as_str().unwrap_or("")
            );
        }
        if n > listed.len() as u64 && !listed.is_empty() {
            let _ = writeln!(out, "    ... and {} more", n - listed.len() as u64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_classes_in_drain_order_with_their_oldest_records() {
        let doc = json!({
            "next_seq": 42, "given_up": {"metrics": 3}, "expired": {},
            "classes": [
                {"class": "critical_alert", "records": 1, "bytes": 600, "oldest_created_ms": 1,
                 "oldest": [{"seq": 41, "created_ms": 1, "topic": "alerts", "bytes": 600, "about": "Critical: r"}]},
                {"class": "metrics", "records": 0, "bytes": 0, "oldest_created_ms": null, "oldest": []}
            ]
        });
        let text = render(&doc, "test");
        assert!(text.contains("1 records waiting"), "{text}");
        assert!(text.contains("given up so far: metrics=3"), "{text}");
        let crit = text.find("critical_alert").unwrap();
        let metrics = text.find("metrics ").unwrap();
        assert!(crit < metrics, "{text}");
        assert!(text.contains("Critical: r"), "{text}");
    }
}
