//! `edge-agent fleet alerts`: the operator's tail of the whole fleet's
//! alerts, one readable line each (the node, then Falco's own output
//! line) or JSON lines, de-duplicated on (node, seq).
//!
//! MQTT keeps no history, so the tail has a persistent session of its own
//! (client id `<fleet>-alerts-<hostname>-<uid>`, QoS 1, not shared): the
//! broker queues alerts for it while it is away. Without `--follow` it
//! prints what arrived since its last run and ends when the broker has
//! sent everything queued; with `--follow` it keeps printing. The first
//! run creates the session. Never publishes.

use std::collections::{HashSet, VecDeque};
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use rumqttc::{Event, Packet, QoS};
use serde_json::Value;

use super::bridge::parse_topic;
use super::ops::{ConnectOptions, Ops, OpsConnection};
use crate::config::{AgentConfig, Priority};

/// Without `--follow`: the broker has sent its queue when nothing came for this long.
const QUIET: Duration = Duration::from_secs(2);

/// (node, seq) remembered for de-duplication in one run.
const SEEN: usize = 100_000;

#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) node: Option<String>,
    /// At or above this priority.
    pub(crate) priority: Option<Priority>,
    /// Not older than this.
    pub(crate) since: Option<Duration>,
    pub(crate) json: bool,
}

impl Filter {
    /// Whether `alert` (a record from `node`) passes.
    pub(crate) fn matches(&self, node: &str, alert: &Value, now: SystemTime) -> bool {
        if self.node.as_deref().is_some_and(|n| n != node) {
            return false;
        }
        if let Some(min) = self.priority {
            let p = alert["priority"].as_str().and_then(Priority::parse_falco);
            if !p.is_some_and(|p| p.at_or_above(min)) {
                return false;
            }
        }
        if let Some(since) = self.since {
            let t = alert["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            if !t.is_some_and(|t| now.duration_since(t).map_or(true, |age| age <= since)) {
                return false;
            }
        }
        true
    }
}

/// One line for a person: the node, then Falco's output line.
pub(crate) fn line(node: &str, alert: &Value) -> String {
    let output = alert["output"].as_str().unwrap_or("(no output)");
    format!("{node}: {output}")
}

/// (node, seq) already printed, the oldest forgotten first.
#[derive(Default)]
pub(crate) struct Seen {
    set: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

impl Seen {
    /// True the first time.
    pub(crate) fn first(&mut self, node: &str, seq: u64) -> bool {
        let key = (node.to_string(), seq);
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

fn tail_client_id(config: &AgentConfig) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{}-alerts-{host}-{}",
        config.node.fleet,
        nix::unistd::getuid()
    )
}

/// Run the tail; returns how many alerts were printed.
pub(crate) async fn tail(ops: &Ops, filter: &Filter, follow: bool) -> anyhow::Result<u64> {
    let config = &ops.config;
    let options = ConnectOptions {
        client_id: tail_client_id(config),
        clean_session: false,
        manual_acks: false,
        max_packet_bytes: crate::uplink::MAX_PACKET_BYTES,
        request_capacity: 64,
    };
    let client_id = options.client_id.clone();
    let mut conn = OpsConnection::new(ops, options)?;
    let topic = format!("edge/{}/+/alerts", config.node.fleet);
    let mut seen = Seen::default();
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    let mut subscribed = false;
    loop {
        let wait = if follow || !subscribed {
            Duration::from_secs(3600)
        } else {
            QUIET
        };
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(printed),
            e = tokio::time::timeout(wait, conn.poll()) => match e {
                Err(_) => return Ok(printed),
                Ok(e) => e,
            },
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if !ack.session_present && !follow {
                    eprintln!(
                        "edge-agent: a new alert session for this user and host ({client_id}); the broker keeps alerts for it from now on"
                    );
                }
                conn.client()
                    .subscribe(topic.clone(), QoS::AtLeastOnce)
                    .await?;
                if ack.session_present {
                    subscribed = true;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => subscribed = true,
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some((node, _)) = parse_topic(&config.node.fleet, &p.topic) else {
                    continue;
                };
                let Ok(alert) = serde_json::from_slice::<Value>(&p.payload) else {
                    continue;
                };
                let Some(seq) = alert["seq"].as_u64() else {
                    continue;
                };
                if !seen.first(node, seq) || !filter.matches(node, &alert, SystemTime::now()) {
                    continue;
                }
                let text = if filter.json {
                    alert.to_string()
                } else {
                    line(node, &alert)
                };
                if writeln!(out, "{text}").is_err() {
                    return Ok(printed);
                }
                printed += 1;
            }
            Ok(_) => {}
            Err(e) => {
                if !follow {
                    anyhow::bail!("{e}");
                }
                eprintln!("edge-agent: {e}; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_take_node_priority_and_age() {
        let now = humantime::parse_rfc3339("2026-11-26T10:00:00Z").unwrap();
        let a = json!({"priority": "Warning", "time": "2026-11-26T09:30:00Z", "output": "x"});
        let f = |node: Option<&str>, p: Option<Priority>, since: Option<u64>| Filter {
            node: node.map(str::to_string),
            priority: p,
            since: since.map(Duration::from_secs),
            json: false,
        };
        assert!(f(None, None, None).matches("n1", &a, now));
        assert!(!f(Some("n2"), None, None).matches("n1", &a, now));
        assert!(f(None, Some(Priority::Notice), None).matches("n1", &a, now));
        assert!(!f(None, Some(Priority::Error), None).matches("n1", &a, now));
        assert!(f(None, None, Some(3600)).matches("n1", &a, now));
        assert!(!f(None, None, Some(600)).matches("n1", &a, now));
        assert_eq!(line("n1", &a), "n1: x");
    }

    #[test]
    fn a_copy_of_an_alert_is_printed_once() {
        let mut s = Seen::default();
        assert!(s.first("n1", 1));
        assert!(!s.first("n1", 1));
        assert!(s.first("n2", 1));
    }
}
