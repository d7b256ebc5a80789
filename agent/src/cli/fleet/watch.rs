//! `fleet results` and `fleet nodes`: what the nodes say, read from their
//! retained state messages (`edge/<fleet>/<node>/state`, which carry the
//! last config result per layer) and, with `--watch`, live.
//!
//! MQTT does not say when the retained messages have all arrived: they
//! come right after the SUBACK, so the commands read until the broker has
//! been quiet for [`QUIET`] (at most [`COLLECT_MAX`]).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rumqttc::{Event, Packet, Publish};
use serde_json::{Value, json};

use super::{exit_for, load_ops, print_ops_error};
use crate::cli::Exit;
use crate::fleet::ops::{self, ConnectOptions, OpsConnection, OpsError};
use crate::fleet::summary::{ConfigResult, Outcome, Summary};

/// Retained messages arrive in a burst after the SUBACK; this much silence
/// ends it (a broker on another continent answers well within it).
const QUIET: Duration = Duration::from_millis(500);

/// The burst is read for at most this long (a fleet of 10,000 nodes is
/// 10,000 retained messages, a second or two).
const COLLECT_MAX: Duration = Duration::from_secs(20);

/// What was collected: each node's latest state document.
type States = BTreeMap<String, Value>;

pub(crate) async fn results(
    config: &Path,
    watch: bool,
    node: Option<&str>,
    as_json: bool,
) -> anyhow::Result<Exit> {
    let ops = match load_ops(config) {
        Ok(o) => o,
        Err(exit) => return Ok(exit),
    };
    let fleet = ops.fleet().to_string();
    let level = node.unwrap_or("+");
    let mut filters = vec![ops::topic(&fleet, level, "state")];
    if watch {
        filters.push(ops::topic(&fleet, level, "config/result"));
    }
    let (mut conn, states, mut live) = match collect(&ops, &filters).await {
        Ok(c) => c,
        Err(e) => {
            print_ops_error(&e);
            return Ok(exit_for(&e));
        }
    };
    let mut seen = HashSet::new();
    let mut attention = false;
    let mut any = false;
    for (node, doc) in &states {
        for r in last_results(doc) {
            attention |= r.outcome != Outcome::Applied;
            any = true;
            seen.insert(result_key(node, &r));
            print_result(node, &r, as_json);
        }
    }
    if !any && !as_json {
        println!(
            "no node of fleet {fleet}{} has reported a config result yet",
            node.map(|n| format!(" named {n}")).unwrap_or_default()
        );
    }
    if !watch {
        conn.disconnect().await;
        return Ok(if attention { Exit::Pending } else { Exit::Ok });
    }
    // Results that came during the burst, then live ones: each result
    // record, and the state messages' last results (which bring back a
    // result sent while this command was reconnecting), each printed once.
    let mut on_publish = |p: &Publish| {
        let Some((node, suffix)) = ops::parse_topic(&fleet, &p.topic) else {
            return;
        };
        let results = match suffix {
            "config/result" => match serde_json::from_slice::<ConfigResult>(&p.payload) {
                Ok(r) => vec![r],
                Err(e) => {
                    eprintln!(
                        "edge-agent fleet results: {}: not a config result ({e})",
                        p.topic
                    );
                    return;
                }
            },
            "state" => serde_json::from_slice::<Value>(&p.payload)
                .map(|doc| last_results(&doc))
                .unwrap_or_default(),
            _ => return,
        };
        for r in results {
            if seen.insert(result_key(node, &r)) {
                print_result(node, &r, as_json);
            }
        }
    };
    for p in live.drain(..) {
        on_publish(&p);
    }
    follow(&mut conn, &filters, |p| on_publish(p)).await
}

pub(crate) async fn nodes(config: &Path, as_json: bool, watch: bool) -> anyhow::Result<Exit> {
    let ops = match load_ops(config) {
        Ok(o) => o,
        Err(exit) => return Ok(exit),
    };
    let fleet = ops.fleet().to_string();
    let filters = vec![ops::topic(&fleet, "+", "state")];
    let (mut conn, states, _) = match collect(&ops, &filters).await {
        Ok(c) => c,
        Err(e) => {
            print_ops_error(&e);
            return Ok(exit_for(&e));
        }
    };
    let attention = states.iter().any(|(_, d)| needs_attention(d));
    if as_json && watch {
        // A stream: one line per node state, now and as they change.
        for (n, d) in &states {
            println!("{}", with_node(n, d));
        }
    } else if as_json {
        let nodes: Vec<Value> = states.iter().map(|(n, d)| with_node(n, d)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"schema": 1, "fleet": fleet, "nodes": nodes}))?
        );
    } else if states.is_empty() {
        println!("no node of fleet {fleet} has a retained state message on the broker");
    } else {
        println!("{}", header());
        for (n, d) in &states {
            println!("{}", node_line(n, d));
        }
    }
    if !watch {
        conn.disconnect().await;
        return Ok(if attention { Exit::Pending } else { Exit::Ok });
    }
    let mut last = states;
    follow(&mut conn, &filters, |p| {
        let Some((node, "state")) = ops::parse_topic(&fleet, &p.topic) else {
            return;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) else {
            return;
        };
        if last.get(node) == Some(&doc) {
            return;
        }
        if as_json {
            println!("{}", with_node(node, &doc));
        } else {
            println!("{}", node_line(node, &doc));
        }
        last.insert(node.to_string(), doc);
    })
    .await
}

/// Connect, subscribe, and read the retained burst: each node's latest
/// state document, and any other publishes that came meanwhile.
async fn collect(
    ops: &ops::Ops,
    filters: &[String],
) -> Result<(OpsConnection, States, Vec<Publish>), OpsError> {
    let mut conn = OpsConnection::connect(ops, ConnectOptions::one_shot("watch")).await?;
    let fleet = ops.fleet().to_string();
    let mut states = States::new();
    let mut other = Vec::new();
    let take = |ev: Event, states: &mut States, other: &mut Vec<Publish>| {
        if let Event::Incoming(Packet::Publish(p)) = ev {
            match ops::parse_topic(&fleet, &p.topic) {
                Some((node, "state")) => {
                    if let Ok(doc) = serde_json::from_slice::<Value>(&p.payload) {
                        states.insert(node.to_string(), doc);
                    }
                }
                _ => other.push(p),
            }
        }
    };
    conn.subscribe_and_wait(filters, |ev| take(ev, &mut states, &mut other))
        .await?;
    let end = tokio::time::Instant::now() + COLLECT_MAX;
    loop {
        let quiet = (tokio::time::Instant::now() + QUIET).min(end);
        match tokio::time::timeout_at(quiet, conn.poll()).await {
            Err(_) => break,
            Ok(ev) => take(ev?, &mut states, &mut other),
        }
    }
    Ok((conn, states, other))
}

/// Hand every publish to `f` until Ctrl-C or the process is killed;
/// reconnect (and subscribe again) when the connection drops.
async fn follow(
    conn: &mut OpsConnection,
    filters: &[String],
    mut f: impl FnMut(&Publish),
) -> anyhow::Result<Exit> {
    loop {
        let ev = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Exit::Ok),
            ev = conn.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => f(&p),
            Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                let subs = filters
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtLeastOnce));
                conn.client().subscribe_many(subs).await?;
            }
            Ok(_) => {}
            Err(e) => eprintln!("edge-agent fleet: {e}; reconnecting"),
        }
    }
}

/// A node's state document with its `node` id added.
fn with_node(node: &str, doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.insert("node".into(), Value::from(node));
    }
    d
}

fn last_results(doc: &Value) -> Vec<ConfigResult> {
    doc.get("fleet")
        .and_then(|f| serde_json::from_value::<Summary>(f.clone()).ok())
        .map(|s| {
            s.last_results
                .values()
                .filter_map(|v| serde_json::from_value(v.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn result_key(node: &str, r: &ConfigResult) -> (String, String, String, String, Outcome) {
    (
        node.to_string(),
        r.layer.clone(),
        r.time.clone(),
        r.bundle_sha256.clone(),
        r.outcome,
    )
}

fn print_result(node: &str, r: &ConfigResult, as_json: bool) {
    if as_json {
        let mut m = r.to_map();
        m.insert("node".into(), Value::from(node));
        println!("{}", Value::Object(m));
        return;
    }
    let version = r.version.map_or("-".to_string(), |v| format!("v{v}"));
    println!(
        "{}  {node}  {} {version}  {}  effective {}  bundle {}",
        r.time,
        r.layer,
        r.outcome.as_str().to_uppercase(),
        short(&r.effective_sha256),
        short(&r.bundle_sha256)
    );
    for reason in &r.reasons {
        println!("    {reason}");
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn needs_attention(doc: &Value) -> bool {
    doc.get("state").and_then(Value::as_str) != Some("online")
        || last_results(doc)
            .iter()
            .any(|r| r.outcome != Outcome::Applied)
}

fn header() -> String {
    format!(
        "{:<24} {:<8} {:<22} {:<9} {:>8} {:>8}  {:<32} {}",
        "NODE", "STATE", "LAST SEEN", "VERSION", "BACKLOG", "GIVEN UP", "CONFIG", "LAST RESULT"
    )
}

fn node_line(node: &str, doc: &Value) -> String {
    let state = doc.get("state").and_then(Value::as_str).unwrap_or("?");
    let seen = match state {
        "online" => "now".to_string(),
        _ => match (
            doc.get("at").and_then(Value::as_u64),
            doc.get("reason").and_then(Value::as_str),
        ) {
            (Some(at), _) => {
                crate::fleet::bundle::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(at))
            }
            (None, Some(reason)) => reason.to_string(),
            _ => "-".into(),
        },
    };
    let version = doc.get("version").and_then(Value::as_str).unwrap_or("-");
    let sum = |v: Option<&Value>| -> String {
        v.and_then(Value::as_object).map_or("-".into(), |m| {
            m.values()
                .filter_map(Value::as_u64)
                .sum::<u64>()
                .to_string()
        })
    };
    let backlog = sum(doc.get("outbox").and_then(|o| o.get("records")));
    let given_up = sum(doc.get("given_up"));
    let summary = doc
        .get("fleet")
        .and_then(|f| serde_json::from_value::<Summary>(f.clone()).ok());
    let config = summary.as_ref().map_or("-".into(), |s| {
        let mut line = s.layers_line();
        if let Some(t) = &s.trial {
            line.push_str(&format!(" (trying {} v{})", t.layer, t.version));
        }
        line
    });
    let last = summary
        .and_then(|s| s.last_result())
        .map_or("-".into(), |r| {
            format!(
                "{} {} v{}",
                r.outcome,
                r.layer,
                r.version.map_or("-".into(), |v| v.to_string())
            )
        });
    // Offline stands out; so does a result that is not `applied`.
    let state = if state == "online" {
        state.to_string()
    } else {
        state.to_uppercase()
    };
    format!(
        "{node:<24} {state:<8} {seen:<22} {version:<9} {backlog:>8} {given_up:>8}  {config:<32} {last}"
    )
}
