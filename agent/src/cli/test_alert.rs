//! `edge-agent test-alert [--priority P] [--count N] [--wait D]`: put
//! synthetic Falco-shaped alerts through the whole pipeline of the running
//! daemon (outbox, uplink, broker) and say whether the broker has them.
//! What an operator runs to check a new node end to end.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::Exit;
use crate::config::AgentConfig;
use crate::control::{Client, ClientError};

pub(crate) async fn test_alert(
    config_path: &Path,
    priority: &str,
    count: u64,
    wait: Duration,
    as_json: bool,
) -> anyhow::Result<Exit> {
    let loaded = match AgentConfig::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let socket = loaded.config.paths.control_socket();
    let params = json!({
        "priority": priority.to_ascii_lowercase(),
        "count": count,
        "wait_ms": wait.as_millis() as u64,
    });
    let answer = match Client::connect(&socket).await {
        Ok(mut c) => c.call("outbox.test_alert", params).await,
        Err(e) => Err(e),
    };
    let doc = match answer {
        Ok(doc) => doc,
        Err(e @ ClientError::NotRunning { .. }) => {
            eprintln!("edge-agent: {e}; start it first (systemctl start edge-agent)");
            return Ok(Exit::NotRunning);
        }
        Err(e @ ClientError::PermissionDenied { .. }) => {
            eprintln!("edge-agent: {e}");
            return Ok(Exit::PermissionDenied);
        }
        Err(ClientError::Refused(e)) if e.code == "bad_params" => {
            eprintln!("edge-agent test-alert: {}", e.message);
            return Ok(Exit::Usage);
        }
        Err(e) => return Err(e.into()),
    };
    let delivered = doc["delivered"].as_u64().unwrap_or(0);
    let durable = doc["durable"].as_u64().unwrap_or(0);
    let all_delivered = durable == count && delivered == durable;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc, count));
    }
    Ok(if all_delivered {
        Exit::Ok
    } else {
        Exit::Pending
    })
}

fn render(doc: &Value, count: u64) -> String {
    let seqs: Vec<u64> = doc["seqs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let range = match (seqs.first(), seqs.last()) {
        (Some(a), Some(b)) if a != b => format!("seq {a}-{b}"),
        (Some(a), _) => format!("seq {a}"),
        _ => "no seq".into(),
    };
    let mut out = format!(
        "{} test alert(s), priority {} (class {}), test_id {}: {} of {count} stored durably in {} ms ({range})\n",
        count,
        doc["priority"].as_str().unwrap_or("?"),
        doc["class"].as_str().unwrap_or("?"),
        doc["test_id"].as_str().unwrap_or("?"),
        doc["durable"],
        doc["durable_ms"],
    );
    let delivered = doc["delivered"].as_u64().unwrap_or(0);
    let durable = doc["durable"].as_u64().unwrap_or(0);
    if durable > 0 && delivered == durable {
        out.push_str(&format!(
            "OK: the broker acknowledged all of them in {} ms; subscribers see them on {}\n",
            doc["elapsed_ms"],
            doc["topic"].as_str().unwrap_or("?")
        ));
    } else {
        out.push_str(&format!(
            "NOT DELIVERED yet: {} of {durable} still wait in the outbox after {} ms (they will be sent when the uplink can)\n",
            doc["waiting"], doc["elapsed_ms"]
        ));
        match doc.get("uplink").filter(|u| !u.is_null()) {
            Some(u) => {
                out.push_str(&format!(
                    "uplink {}: {}\n",
                    u["state"].as_str().unwrap_or("?").to_uppercase(),
                    u["summary"].as_str().unwrap_or("")
                ));
                if let Some(e) = u["last_error"].as_str() {
                    out.push_str(&format!("  last error: {e}\n"));
                }
            }
            None => out.push_str("uplink: not running\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undelivered_alert_shows_why_the_uplink_cannot_send() {
        let doc = json!({"priority": "Critical", "class": "critical_alert", "test_id": "ab",
            "durable": 1, "durable_ms": 2, "seqs": [7], "delivered": 0, "waiting": 1, "elapsed_ms": 10000,
            "topic": "edge/f/n/alerts",
            "uplink": {"state": "degraded", "summary": "NOT CONNECTED", "last_error": "refused [refused]"}});
        let text = render(&doc, 1);
        assert!(text.contains("NOT DELIVERED"), "{text}");
        assert!(text.contains("last error: refused"), "{text}");
        assert!(text.contains("seq 7"), "{text}");
    }
}
