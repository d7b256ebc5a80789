//! What the bridge has done, for its `/metrics`, `/status` and SIGUSR1:
//! counters per kind of message, bad input by reason, and per node the
//! delay between a record's creation and its write (the lag). Shared by
//! the bridge's tasks; cheap to update (atomics, one short lock per
//! message for the node table).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::metrics::family::{Kind as MetricKind, Snapshot};

/// The kinds of message the bridge consumes, by topic suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Alerts,
    Events,
    Metrics,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::Alerts, Kind::Events, Kind::Metrics];

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Kind::Alerts => "alerts",
            Kind::Events => "events",
            Kind::Metrics => "metrics",
        }
    }

    pub(crate) fn from_suffix(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.suffix() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a message was refused as bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Bad {
    /// Not `edge/<fleet>/<node>/<alerts|events|metrics>`.
    Topic,
    TooLarge,
    NotJson,
    /// JSON, but not a record of ours (no `node`/`seq`/`schema`, another
    /// node's id, not an alert).
    NotOurs,
    /// A metrics batch that does not decode.
    Undecodable,
}

impl Bad {
    const ALL: [Bad; 5] = [
        Bad::Topic,
        Bad::TooLarge,
        Bad::NotJson,
        Bad::NotOurs,
        Bad::Undecodable,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Bad::Topic => "topic",
            Bad::TooLarge => "too_large",
            Bad::NotJson => "not_json",
            Bad::NotOurs => "not_ours",
            Bad::Undecodable => "undecodable",
        }
    }
}

#[derive(Debug, Default)]
struct PerKind {
    received: AtomicU64,
    /// Metrics: batches written; alerts/events: delivered to every URL.
    written: AtomicU64,
    retried: AtomicU64,
    given_up: AtomicU64,
    duplicates: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct NodeStat {
    /// Seconds between creation and write of the newest record written.
    lag_secs: f64,
    written: u64,
    bad: u64,
}

/// Most nodes the table follows: a broker without ACLs could be fed
/// made-up node ids; beyond this new ones are not tracked (still written).
const MAX_NODES: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    kinds: [PerKind; 3],
    bad: [[AtomicU64; 5]; 3],
    pub(crate) samples_written: AtomicU64,
    pub(crate) connected: AtomicBool,
    pub(crate) connects: AtomicU64,
    pub(crate) unacked: AtomicU64,
    pub(crate) dedup_entries: AtomicU64,
    nodes: Mutex<HashMap<String, NodeStat>>,
    last_error: Mutex<Option<(u64, String)>>,
    connected_since: Mutex<Option<u64>>,
}

impl Stats {
    pub(crate) fn received(&self, k: Kind) {
        self.kinds[k.index()]
            .received
            .fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn retried(&self, k: Kind) {
        self.kinds[k.index()]
            .retried
            .fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn given_up(&self, k: Kind, n: u64) {
        self.kinds[k.index()]
            .given_up
            .fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn duplicate(&self, k: Kind) {
        self.kinds[k.index()]
            .duplicates
            .fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self, k: Kind) -> [u64; 5] {
        let p = &self.kinds[k.index()];
        [
            p.received.load(Ordering::Relaxed),
            p.written.load(Ordering::Relaxed),
            p.retried.load(Ordering::Relaxed),
            p.given_up.load(Ordering::Relaxed),
            p.duplicates.load(Ordering::Relaxed),
        ]
    }
    pub(crate) fn bad_total(&self, k: Kind) -> u64 {
        self.bad[k.index()]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// A record of `node` was written; it was made at `created_ms` (0: unknown).
    pub(crate) fn written(&self, k: Kind, node: &str, created_ms: u64, now_ms: u64) {
        self.kinds[k.index()]
            .written
            .fetch_add(1, Ordering::Relaxed);
        self.with_node(node, |n| {
            n.written += 1;
            if created_ms > 0 {
                n.lag_secs = now_ms.saturating_sub(created_ms) as f64 / 1000.0;
            }
        });
    }

    pub(crate) fn bad(&self, k: Kind, node: &str, why: Bad) {
        self.bad[k.index()][Bad::ALL.iter().position(|b| *b == why).unwrap_or(0)]
            .fetch_add(1, Ordering::Relaxed);
        if !node.is_empty() {
            self.with_node(node, |n| n.bad += 1);
        }
    }

    fn with_node(&self, node: &str, f: impl FnOnce(&mut NodeStat)) {
        let mut nodes = self.nodes.lock().expect("node stats");
        if let Some(n) = nodes.get_mut(node) {
            f(n);
        } else if nodes.len() < MAX_NODES {
            f(nodes.entry(node.to_string()).or_default());
        }
    }

    pub(crate) fn error(&self, now: u64, message: String) {
        *self.last_error.lock().expect("last error") = Some((now, message));
    }

    pub(crate) fn set_connected(&self, connected: bool, now: u64) {
        self.connected.store(connected, Ordering::Relaxed);
        let mut since = self.connected_since.lock().expect("since");
        if connected {
            self.connects.fetch_add(1, Ordering::Relaxed);
            *since = Some(now);
        } else {
            *since = None;
        }
    }

    /// The bridge's own metrics, in Prometheus names.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::new();
        let counters: [(&str, &str, usize); 5] = [
            (
                "edge_bridge_messages_received_total",
                "Messages taken from the broker.",
                0,
            ),
            (
                "edge_bridge_messages_written_total",
                "Metrics batches written; alerts and events delivered to every URL.",
                1,
            ),
            (
                "edge_bridge_retries_total",
                "Writes and deliveries tried again after a failure.",
                2,
            ),
            (
                "edge_bridge_given_up_total",
                "Messages given up (refused by the sink, or failing past bridge.give_up_after).",
                3,
            ),
            (
                "edge_bridge_duplicates_total",
                "Messages delivered before (same node and seq), not posted again.",
                4,
            ),
        ];
        for (name, help, i) in counters {
            let f = s.family(name, help, MetricKind::Counter, &["kind"]);
            for k in Kind::ALL {
                f.push(&[k.suffix()], self.get(k)[i] as f64);
            }
        }
        let f = s.family(
            "edge_bridge_messages_bad_total",
            "Messages refused as bad input, by reason.",
            MetricKind::Counter,
            &["kind", "reason"],
        );
        for k in Kind::ALL {
            for (i, b) in Bad::ALL.iter().enumerate() {
                f.push(
                    &[k.suffix(), b.as_str()],
                    self.bad[k.index()][i].load(Ordering::Relaxed) as f64,
                );
            }
        }
        s.single(
            "edge_bridge_samples_written_total",
            "Samples written with remote-write.",
            MetricKind::Counter,
            self.samples_written.load(Ordering::Relaxed) as f64,
        );
        s.single(
            "edge_bridge_connected",
            "1 while connected to the broker.",
            MetricKind::Gauge,
            f64::from(u8::from(self.connected.load(Ordering::Relaxed))),
        );
        s.single(
            "edge_bridge_connects_total",
            "Connections to the broker made.",
            MetricKind::Counter,
            self.connects.load(Ordering::Relaxed) as f64,
        );
        s.single(
            "edge_bridge_unacked_messages",
            "Messages taken from the broker and not acknowledged yet.",
            MetricKind::Gauge,
            self.unacked.load(Ordering::Relaxed) as f64,
        );
        s.single(
            "edge_bridge_dedup_entries",
            "(node, seq) remembered for de-duplication.",
            MetricKind::Gauge,
            self.dedup_entries.load(Ordering::Relaxed) as f64,
        );
        let nodes = self.nodes.lock().expect("node stats");
        let f = s.family(
            "edge_bridge_node_lag_seconds",
            "Seconds between the creation and the write of the newest record written for the node.",
            MetricKind::Gauge,
            &["node"],
        );
        let mut sorted: Vec<_> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (node, n) in &sorted {
            f.push(&[node.as_str()], n.lag_secs);
        }
        let f = s.family(
            "edge_bridge_node_messages_bad_total",
            "Bad messages by node.",
            MetricKind::Counter,
            &["node"],
        );
        for (node, n) in sorted.iter().filter(|(_, n)| n.bad > 0) {
            f.push(&[node.as_str()], n.bad as f64);
        }
        s
    }

    /// The `/status` document.
    pub(crate) fn status(&self, head: Value) -> Value {
        let kinds: serde_json::Map<String, Value> = Kind::ALL
            .iter()
            .map(|k| {
                let [received, written, retried, given_up, duplicates] = self.get(*k);
                (
                    k.suffix().to_string(),
                    json!({"received": received, "written": written, "retried": retried,
                           "given_up": given_up, "duplicates": duplicates, "bad": self.bad_total(*k)}),
                )
            })
            .collect();
        let nodes = self.nodes.lock().expect("node stats");
        let mut lagging: Vec<(&String, &NodeStat)> = nodes.iter().collect();
        lagging.sort_by(|a, b| b.1.lag_secs.total_cmp(&a.1.lag_secs));
        let lagging: Vec<Value> = lagging
            .iter()
            .take(5)
            .map(|(n, s)| json!({"node": n, "lag_secs": s.lag_secs, "written": s.written}))
            .collect();
        let mut doc = head;
        doc["connected"] = json!(self.connected.load(Ordering::Relaxed));
        doc["connected_since"] = json!(*self.connected_since.lock().expect("since"));
        doc["connects"] = json!(self.connects.load(Ordering::Relaxed));
        doc["unacked"] = json!(self.unacked.load(Ordering::Relaxed));
        doc["samples_written"] = json!(self.samples_written.load(Ordering::Relaxed));
        doc["dedup_entries"] = json!(self.dedup_entries.load(Ordering::Relaxed));
        doc["kinds"] = Value::Object(kinds);
        doc["nodes"] = json!(nodes.len());
        doc["most_behind"] = Value::Array(lagging);
        doc["last_error"] = match &*self.last_error.lock().expect("last error") {
            Some((at, m)) => json!({"at": at, "message": m}),
            None => Value::Null,
        };
        doc
    }
}

/// The status document as a few lines for a person (SIGUSR1, `--status`).
pub(crate) fn render_status(doc: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let since = doc["connected_since"].as_u64().map(|t| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            .to_string()
    });
    let _ = writeln!(
        out,
        "edge-agent fleet bridge {} (client {}, share group {}, fleet {}): {}",
        doc["version"].as_str().unwrap_or("?"),
        doc["client_id"].as_str().unwrap_or("?"),
        doc["share_group"].as_str().unwrap_or("?"),
        doc["fleet"].as_str().unwrap_or("?"),
        match since {
            Some(s) => format!(
                "CONNECTED to {} since {s}",
                doc["broker"].as_str().unwrap_or("?")
            ),
            None => format!("NOT CONNECTED to {}", doc["broker"].as_str().unwrap_or("?")),
        }
    );
    for k in Kind::ALL {
        let s = &doc["kinds"][k.suffix()];
        let sink = &doc["sinks"][k.suffix()];
        if sink.is_null() {
            let _ = writeln!(
                out,
                "   {:<8} not consumed (no sink configured)",
                k.suffix()
            );
            continue;
        }
        let _ = writeln!(
            out,
            "   {:<8} in {}  written {}  retried {}  given up {}  duplicates {}  bad {}  -> {}",
            k.suffix(),
            s["received"],
            s["written"],
            s["retried"],
            s["given_up"],
            s["duplicates"],
            s["bad"],
            sink.as_array().map_or_else(
                || sink.to_string(),
                |a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let behind: Vec<String> = doc["most_behind"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    format!(
                        "{} {:.1}s",
                        n["node"].as_str().unwrap_or("?"),
                        n["lag_secs"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "   nodes    {} seen; samples written {}; unacknowledged {}; most behind: {}",
        doc["nodes"],
        doc["samples_written"],
        doc["unacked"],
        if behind.is_empty() {
            "-".into()
        } else {
            behind.join(", ")
        }
    );
    if let Some(e) = doc["last_error"]["message"].as_str() {
        let _ = writeln!(out, "   last error: {e}");
    }
    out
}
