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
//!
//! The broker hands each queued alert to the session once, so a run with
//! a filter (`--node`, `--priority`, `--since`) would consume the alerts it
//! does not print. Those go to a local spool instead (one JSON line each,
//! appended as they arrive, so a killed run loses nothing), and every run
//! reads the spool before the broker's queue: an alert is gone only once
//! some run has printed it.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
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

/// Alerts a filtered run kept for later runs; past this the oldest go.
const SPOOL_MAX: usize = 100_000;

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
    /// Whether every alert passes (no filter given).
    fn is_empty(&self) -> bool {
        self.node.is_none() && self.priority.is_none() && self.since.is_none()
    }

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

/// Alerts that arrived in a run whose filter left them out, kept for the
/// runs after it: `<state dir>/edge-agent/<client id>-<broker>.jsonl`, one
/// `{"node": ..., "alert": ...}` per line.
pub(crate) struct Spool {
    path: PathBuf,
}

impl Spool {
    /// The spool of the tail session `client_id` at broker `url`, below
    /// `$XDG_STATE_HOME` (or `~/.local/state`). None without either.
    fn for_session(client_id: &str, url: &str) -> Option<Spool> {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| Path::new(&h).join(".local/state"))
            })?;
        let d = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
        let broker: String = d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
        Some(Spool {
            path: base
                .join("edge-agent")
                .join(format!("{client_id}-{broker}.jsonl")),
        })
    }

    /// Everything kept so far, oldest first (unreadable lines skipped).
    fn read(&self) -> std::io::Result<Vec<(String, Value)>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut kept = Vec::new();
        for line in std::io::BufReader::new(file).lines() {
            let Ok(mut v) = serde_json::from_str::<Value>(&line?) else {
                continue;
            };
            if let (Some(node), alert) = (v["node"].as_str().map(str::to_string), v["alert"].take())
                && alert.is_object()
            {
                kept.push((node, alert));
            }
        }
        Ok(kept)
    }

    /// Replace the spool with `kept` (the newest `SPOOL_MAX`).
    fn rewrite(&self, kept: &[(String, Value)]) -> std::io::Result<()> {
        if kept.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let dir = self.path.parent().expect("the spool lives in a directory");
        std::fs::create_dir_all(dir)?;
        let mut text = Vec::new();
        for (node, alert) in &kept[kept.len().saturating_sub(SPOOL_MAX)..] {
            writeln!(
                text,
                "{}",
                serde_json::json!({"node": node, "alert": alert})
            )?;
        }
        crate::bootstrap::fsio::write_atomic(&self.path, &text, 0o600, None)
    }

    /// Keep one more alert (appended and flushed before the broker's queue
    /// moves on).
    fn append(&self, node: &str, alert: &Value) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::json!({"node": node, "alert": alert}))
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
        // Acknowledged once printed or spooled: a run killed before that
        // gets the alert again next time.
        manual_acks: true,
        max_packet_bytes: crate::uplink::MAX_PACKET_BYTES,
        request_capacity: 64,
    };
    let client_id = options.client_id.clone();
    let spool = Spool::for_session(&client_id, &config.uplink.url);
    let mut conn = OpsConnection::new(ops, options)?;
    let topic = format!("edge/{}/+/alerts", config.node.fleet);
    let mut seen = Seen::default();
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    let mut print = |node: &str, alert: &Value| {
        let text = if filter.json {
            alert.to_string()
        } else {
            line(node, alert)
        };
        writeln!(out, "{text}").is_ok()
    };

    // What earlier filtered runs kept comes first: it is older.
    if let Some(spool) = &spool {
        let kept = spool
            .read()
            .map_err(|e| anyhow::anyhow!("{}: {e}", spool.path.display()))?;
        let before = kept.len();
        let mut left = Vec::with_capacity(before);
        for (node, alert) in kept {
            let seq = alert["seq"].as_u64().unwrap_or(u64::MAX);
            if !seen.first(&node, seq) {
                continue;
            }
            if filter.matches(&node, &alert, SystemTime::now()) {
                if !print(&node, &alert) {
                    return Ok(printed);
                }
                printed += 1;
            } else {
                left.push((node, alert));
            }
        }
        if left.len() != before {
            spool
                .rewrite(&left)
                .map_err(|e| anyhow::anyhow!("{}: {e}", spool.path.display()))?;
        }
    }
    let keep_for_later = !filter.is_empty();
    if keep_for_later && spool.is_none() {
        eprintln!(
            "edge-agent: neither XDG_STATE_HOME nor HOME is set, so the alerts this filter leaves out are not kept for later runs"
        );
    }
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
                // Not one of ours (topic, JSON, seq): acknowledged and dropped.
                let alert = parse_topic(&config.node.fleet, &p.topic)
                    .map(|(node, _)| node)
                    .zip(serde_json::from_slice::<Value>(&p.payload).ok())
                    .and_then(|(node, a)| Some((node, a["seq"].as_u64()?, a)));
                if let Some((node, seq, alert)) = alert
                    && seen.first(node, seq)
                {
                    if filter.matches(node, &alert, SystemTime::now()) {
                        if !print(node, &alert) {
                            return Ok(printed);
                        }
                        printed += 1;
                    } else if keep_for_later && let Some(spool) = &spool {
                        spool
                            .append(node, &alert)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", spool.path.display()))?;
                    }
                }
                conn.client().ack(&p).await?;
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
    fn the_spool_keeps_alerts_in_order_across_runs_and_empties_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool {
            path: dir.path().join("edge-agent/tail.jsonl"),
        };
        assert!(
            spool.read().unwrap().is_empty(),
            "no spool yet: nothing kept"
        );
        spool.append("n1", &json!({"seq": 1})).unwrap();
        spool.append("n2", &json!({"seq": 7})).unwrap();
        // A torn last line (a run killed mid-write) is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&spool.path)
            .unwrap()
            .write_all(b"{\"node\": \"n3\", \"al")
            .unwrap();
        let kept = spool.read().unwrap();
        assert_eq!(
            kept,
            vec![
                ("n1".into(), json!({"seq": 1})),
                ("n2".into(), json!({"seq": 7}))
            ]
        );
        spool.rewrite(&kept[1..]).unwrap();
        assert_eq!(
            spool.read().unwrap(),
            vec![("n2".into(), json!({"seq": 7}))]
        );
        spool.rewrite(&[]).unwrap();
        assert!(!spool.path.exists());
    }

    #[test]
    fn each_session_and_broker_has_its_own_spool() {
        let a = Spool::for_session("f-alerts-h-0", "mqtts://a:8883").unwrap();
        let b = Spool::for_session("f-alerts-h-0", "mqtts://b:8883").unwrap();
        let c = Spool::for_session("g-alerts-h-0", "mqtts://a:8883").unwrap();
        assert_ne!(a.path, b.path);
        assert_ne!(a.path, c.path);
        assert!(
            a.path
                .to_string_lossy()
                .contains("edge-agent/f-alerts-h-0-"),
            "{:?}",
            a.path
        );
    }

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
