//! `edge-agent fleet bridge`: the fleet's alerts, events and metrics off
//! the broker and into the tools operators already run: metrics to
//! Prometheus remote-write, alerts (Falco's JSON) and events to webhooks
//! such as falcosidekick.
//!
//! Owns one MQTT session (MQTT 3.1.1, persistent, QoS 1, manual
//! acknowledgements) subscribed with shared subscriptions
//! (`$share/<bridge.share_group>/edge/<fleet>/+/<alerts|events|metrics>`),
//! so bridges in one group split the messages. A message is acknowledged
//! to the broker only after its write succeeded or was given up (counted),
//! so a bridge that dies leaves its messages at the broker for its next
//! start. Acknowledgements are sent only on the connection the message
//! came on: after a reconnect the broker sends unacknowledged messages
//! again, and the de-duplication file turns those copies into no-ops.
//! Bad input (another topic, not JSON, not our records, undecodable,
//! oversized) is counted, logged once per node a minute, acknowledged
//! and dropped; it never stops the bridge.
//!
//! Never runs on a node and never publishes.

pub(crate) mod dedup;
mod endpoint;
pub(crate) mod http;
mod metrics_sink;
pub(crate) mod remote_write;
pub(crate) mod stats;
mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::fleet::ops::{ConnectOptions, Ops, OpsConnection, OpsError};
use crate::uplink::Backoff;

pub(crate) use stats::{Kind, Stats, render_status};

/// Messages waiting for each sink. The broker sends at most its
/// `max_inflight_messages` unacknowledged messages per client (mosquitto:
/// 20 by default), so this is never reached with a sane broker; with an
/// unlimited one it bounds the bridge's memory (the intake stops reading
/// the socket until the sink catches up).
const SINK_QUEUE: usize = 10_000;

/// Retrying a write: first within 0.25-0.5 s, doubling up to 30 s, with jitter.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Bad input is logged at most this often per node.
const BAD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How often the de-duplication file forgets entries past the window.
const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// rumqttc drops the connection on a packet larger than its limit, and the
/// broker would send the same message again after every reconnect, so the
/// limit is far above `bridge.max_message_bytes` (which refuses, counts and
/// acknowledges); the broker's `message_size_limit` should be below it.
const MAX_PACKET_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BridgeError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Dedup(#[from] dedup::DedupError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("bridge.listen {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// One message taken from the broker.
pub(crate) struct Msg {
    pub(crate) node: String,
    pub(crate) publish: Publish,
    /// The connection it came on (see [`Acker`]).
    pub(crate) generation: u64,
}

/// Acknowledges messages on the connection they came on. rumqttc drops
/// queued acknowledgements when a connection ends, and a PUBACK for an
/// earlier connection's packet id could acknowledge a different message
/// that reused the id, so those are not sent: the broker sends the
/// message again and the copy is acknowledged.
#[derive(Clone)]
pub(crate) struct Acker {
    client: AsyncClient,
    generation: Arc<AtomicU64>,
    stats: Arc<Stats>,
}

impl Acker {
    pub(crate) async fn ack(&self, m: &Msg) {
        self.stats.unacked.fetch_sub(1, Ordering::Relaxed);
        if m.generation == self.generation.load(Ordering::Acquire) {
            let _ = self.client.ack(&m.publish).await;
        }
    }
}

/// Counts bad input and logs it once per node a minute.
#[derive(Clone)]
pub(crate) struct BadInput {
    stats: Arc<Stats>,
    last_logged: Arc<Mutex<HashMap<String, Instant>>>,
}

impl BadInput {
    pub(crate) fn count(&self, kind: Kind, node: &str, why: stats::Bad, detail: &str) {
        self.stats.bad(kind, node, why);
        let mut last = self.last_logged.lock().expect("bad input log");
        let now = Instant::now();
        if last
            .get(node)
            .is_some_and(|t| now.duration_since(*t) < BAD_LOG_INTERVAL)
        {
            return;
        }
        if last.len() > 100_000 {
            last.retain(|_, t| now.duration_since(*t) < BAD_LOG_INTERVAL);
        }
        last.insert(node.to_string(), now);
        warn!(
            node,
            kind = kind.suffix(),
            reason = why.as_str(),
            detail,
            "bad input from the broker, dropped (counted; logged once a minute per node)"
        );
    }
}

impl BridgeError {
    /// Whether it is the file's fault (exit 78): fix ops.toml, then start.
    pub(crate) fn is_config(&self) -> bool {
        match self {
            BridgeError::Config(_) => true,
            BridgeError::Ops(e) => e.is_config(),
            _ => false,
        }
    }
}

/// `(node, suffix)` of a topic `edge/<fleet>/<node>/<suffix>` of `fleet`.
pub(crate) fn parse_topic<'a>(fleet: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic
        .strip_prefix("edge/")?
        .strip_prefix(fleet)?
        .strip_prefix('/')?;
    let (node, suffix) = rest.split_once('/')?;
    (!node.is_empty() && !suffix.is_empty()).then_some((node, suffix))
}

/// `seq` of a record of ours from `node`: a JSON object with `schema` 1,
/// `node` equal to the topic's node, and a `seq`.
pub(crate) fn check_record(payload: &Map<String, Value>, node: &str) -> Result<u64, String> {
    if payload.get("schema").and_then(Value::as_u64) != Some(1) {
        return Err(format!("schema {:?}, expected 1", payload.get("schema")));
    }
    match payload.get("node").and_then(Value::as_str) {
        Some(n) if n == node => {}
        other => {
            return Err(format!(
                "node {other:?} does not match the topic's node \"{node}\""
            ));
        }
    }
    payload
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or_else(|| "no seq".to_string())
}

fn retry_backoff() -> Backoff {
    Backoff::seeded(RETRY_FIRST, RETRY_MAX)
}

/// The MQTT client id: `bridge.client_id`, else `<fleet>-bridge-<hostname>`.
fn client_id(config: &AgentConfig) -> String {
    if !config.bridge.client_id.is_empty() {
        return config.bridge.client_id.clone();
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{}-bridge-{host}", config.node.fleet)
}

/// The subscriptions for the kinds that have a sink.
fn filters(config: &AgentConfig) -> Vec<(Kind, String)> {
    let b = &config.bridge;
    Kind::ALL
        .into_iter()
        .filter(|k| match k {
            Kind::Metrics => !b.remote_write_url.is_empty(),
            Kind::Alerts => !b.alert_webhooks.is_empty(),
            Kind::Events => !b.event_webhooks.is_empty(),
        })
        .map(|k| {
            (
                k,
                format!(
                    "$share/{}/edge/{}/+/{}",
                    b.share_group,
                    config.node.fleet,
                    k.suffix()
                ),
            )
        })
        .collect()
}

/// The `/status` head: who this bridge is and where it writes.
fn status_head(config: &AgentConfig, client_id: &str) -> Value {
    let b = &config.bridge;
    let sink = |on: bool, v: Value| if on { v } else { Value::Null };
    json!({
        "version": crate::VERSION,
        "pid": std::process::id(),
        "client_id": client_id,
        "share_group": b.share_group,
        "fleet": config.node.fleet,
        "broker": config.uplink.url,
        "sinks": {
            "metrics": sink(!b.remote_write_url.is_empty(), json!([b.remote_write_url])),
            "alerts": sink(!b.alert_webhooks.is_empty(), json!(b.alert_webhooks)),
            "events": sink(!b.event_webhooks.is_empty(), json!(b.event_webhooks)),
        },
    })
}

/// Run until SIGTERM/SIGINT.
pub(crate) async fn run(ops: Ops) -> Result<(), BridgeError> {
    let config = ops.config.clone();
    let subs = filters(&config);
    if subs.is_empty() {
        return Err(BridgeError::Config(
            "[bridge] has nowhere to write: set bridge.remote_write_url, bridge.alert_webhooks or bridge.event_webhooks".into(),
        ));
    }
    let b = &config.bridge;
    std::fs::create_dir_all(&config.paths.state_dir).map_err(|source| BridgeError::StateDir {
        path: config.paths.state_dir.clone(),
        source,
    })?;
    let dedup = Arc::new(dedup::Dedup::open(
        &config.paths.state_dir.join("bridge.redb"),
    )?);
    let https = std::iter::once(&b.remote_write_url)
        .chain(&b.alert_webhooks)
        .chain(&b.event_webhooks)
        .any(|u| u.starts_with("https://"));
    let client = Arc::new(http::HttpClient::new(
        https,
        &b.ca_file,
        b.request_timeout.get(),
    )?);
    let client_id = client_id(&config);
    let stats = Arc::new(Stats::default());
    stats
        .dedup_entries
        .store(dedup.entries().unwrap_or(0), Ordering::Relaxed);
    let head = status_head(&config, &client_id);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(BridgeError::Signals)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(BridgeError::Signals)?;
    let mut sigusr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .map_err(BridgeError::Signals)?;
    let shutdown = CancellationToken::new();

    if !b.listen.is_empty() {
        let addr: std::net::SocketAddr = b.listen.parse().map_err(|_| {
            BridgeError::Config(format!(
                "bridge.listen: \"{}\" is not address:port",
                b.listen
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BridgeError::Listen {
                addr: b.listen.clone(),
                source,
            })?;
        tokio::spawn(endpoint::serve(
            listener,
            stats.clone(),
            head.clone(),
            shutdown.clone(),
        ));
    }

    let conn = OpsConnection::new(
        &ops,
        ConnectOptions {
            client_id: client_id.clone(),
            clean_session: false,
            manual_acks: true,
            max_packet_bytes: MAX_PACKET_BYTES,
            // Every message is acknowledged through this queue.
            request_capacity: SINK_QUEUE,
        },
    )?;
    let mqtt = conn.client().clone();
    let generation = Arc::new(AtomicU64::new(0));
    let acker = Acker {
        client: mqtt.clone(),
        generation: generation.clone(),
        stats: stats.clone(),
    };
    let bad = BadInput {
        stats: stats.clone(),
        last_logged: Arc::default(),
    };

    let mut sinks: HashMap<Kind, mpsc::Sender<Msg>> = HashMap::new();
    let mut tasks = Vec::new();
    for (kind, _) in &subs {
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        sinks.insert(*kind, tx);
        let task = match kind {
            Kind::Metrics => {
                let sink = metrics_sink::MetricsSink {
                    url: b.remote_write_url.parse().map_err(|_| {
                        BridgeError::Config("bridge.remote_write_url is not a URL".into())
                    })?,
                    headers: metrics_sink::MetricsSink::headers(&b.remote_write_headers),
                    client: client.clone(),
                    fleet: config.node.fleet.clone(),
                    give_up_after: b.give_up_after.get(),
                    stats: stats.clone(),
                    acker: acker.clone(),
                    bad: bad.clone(),
                };
                tokio::spawn(sink.run(rx, shutdown.clone()))
            }
            Kind::Alerts | Kind::Events => {
                let urls = if *kind == Kind::Alerts {
                    &b.alert_webhooks
                } else {
                    &b.event_webhooks
                };
                let d = webhook::Deliverer {
                    kind: *kind,
                    targets: urls
                        .iter()
                        .filter_map(|u| webhook::Target::new(u))
                        .collect(),
                    client: client.clone(),
                    dedup: dedup.clone(),
                    give_up_after: b.give_up_after.get(),
                    stats: stats.clone(),
                    acker: acker.clone(),
                    bad: bad.clone(),
                };
                tokio::spawn(d.run(rx, shutdown.clone()))
            }
        };
        tasks.push(task);
    }

    info!(
        client_id,
        broker = %config.uplink.url,
        subscriptions = %subs.iter().map(|(_, f)| f.as_str()).collect::<Vec<_>>().join(" "),
        "fleet bridge started"
    );
    let intake = Intake {
        fleet: config.node.fleet.clone(),
        max_message_bytes: b.max_message_bytes.0 as usize,
        subs,
        sinks,
        mqtt: mqtt.clone(),
        generation,
        stats: stats.clone(),
        bad,
        acker,
    };
    let intake_task = tokio::spawn(intake.run(conn, shutdown.clone()));

    let mut prune = tokio::time::interval(PRUNE_INTERVAL);
    let window_ms = b.dedup_window.get().as_millis() as u64;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping; unacknowledged messages stay at the broker"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sigusr1.recv() => {
                let doc = stats.status(head.clone());
                eprint!("{}", render_status(&doc));
            }
            _ = prune.tick() => {
                let d = dedup.clone();
                let cutoff = crate::unix_time::now_millis().saturating_sub(window_ms);
                match tokio::task::spawn_blocking(move || d.prune(cutoff).and_then(|n| Ok((n, d.entries()?)))).await {
                    Ok(Ok((n, left))) => {
                        stats.dedup_entries.store(left, Ordering::Relaxed);
                        if n > 0 { info!(forgotten = n, remembered = left, "de-duplication window moved on"); }
                    }
                    Ok(Err(e)) => error!(error = %e, "cannot prune the de-duplication file"),
                    Err(e) => error!(error = %e, "the pruning thread failed"),
                }
            }
        }
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), mqtt.disconnect()).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), intake_task).await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    info!("fleet bridge stopped");
    Ok(())
}

/// The MQTT side: owns the event loop, subscribes after every connect
/// without a session, and hands each message to its sink.
struct Intake {
    fleet: String,
    max_message_bytes: usize,
    subs: Vec<(Kind, String)>,
    sinks: HashMap<Kind, mpsc::Sender<Msg>>,
    mqtt: AsyncClient,
    generation: Arc<AtomicU64>,
    stats: Arc<Stats>,
    bad: BadInput,
    acker: Acker,
}

impl Intake {
    async fn run(self, mut conn: OpsConnection, shutdown: CancellationToken) {
        let mut last_error: Option<String> = None;
        loop {
            // `poll` waits its own backoff after a lost connection.
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = conn.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    last_error = None;
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    self.stats.set_connected(true, crate::unix_time::now_secs());
                    info!(
                        session_present = ack.session_present,
                        "connected to the broker"
                    );
                    // Also with a session: mosquitto 2.0 does not restore
                    // shared subscriptions from its persistence file after a
                    // restart (measured), and subscribing again to the same
                    // filter only replaces it.
                    for (_, f) in &self.subs {
                        if let Err(e) = self.mqtt.subscribe(f.clone(), QoS::AtLeastOnce).await {
                            error!(filter = %f, error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.take(p, &shutdown).await,
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    if s.return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        let msg = "the broker refused a subscription: its access rules must let the operator certificate read edge/<fleet>/+/alerts, /events and /metrics".to_string();
                        error!("{msg}");
                        self.stats.error(crate::unix_time::now_secs(), msg);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.stats.set_connected(false, 0);
                    let why = e.to_string();
                    if last_error.as_deref() != Some(why.as_str()) {
                        warn!(error = %why, "broker connection failed; retrying");
                        self.stats
                            .error(crate::unix_time::now_secs(), format!("broker: {why}"));
                        last_error = Some(why);
                    }
                }
            }
        }
    }

    async fn take(&self, p: Publish, shutdown: &CancellationToken) {
        self.stats.unacked.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Acquire);
        let parsed = parse_topic(&self.fleet, &p.topic)
            .and_then(|(node, suffix)| Some((node.to_string(), Kind::from_suffix(suffix)?)));
        let Some((node, kind)) = parsed else {
            let m = Msg {
                node: String::new(),
                publish: p,
                generation,
            };
            self.bad
                .count(Kind::Alerts, "", stats::Bad::Topic, &m.publish.topic);
            self.acker.ack(&m).await;
            return;
        };
        self.stats.received(kind);
        let m = Msg {
            node,
            publish: p,
            generation,
        };
        if m.publish.payload.len() > self.max_message_bytes {
            self.bad.count(
                kind,
                &m.node,
                stats::Bad::TooLarge,
                &format!("{} bytes", m.publish.payload.len()),
            );
            self.acker.ack(&m).await;
            return;
        }
        let Some(tx) = self.sinks.get(&kind) else {
            // Subscribed only to kinds with a sink; a stray one is not ours.
            self.bad
                .count(kind, &m.node, stats::Bad::Topic, &m.publish.topic);
            self.acker.ack(&m).await;
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tx.send(m) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_split_into_node_and_suffix_only_for_their_fleet() {
        assert_eq!(parse_topic("f", "edge/f/n1/alerts"), Some(("n1", "alerts")));
        assert_eq!(
            parse_topic("f", "edge/f/n1/config/result"),
            Some(("n1", "config/result"))
        );
        assert_eq!(parse_topic("f", "edge/g/n1/alerts"), None);
        assert_eq!(parse_topic("f", "edge/ff/n1/alerts"), None);
        assert_eq!(parse_topic("f", "edge/f//alerts"), None);
        assert_eq!(parse_topic("f", "edge/f/n1"), None);
    }

    #[test]
    fn a_record_must_be_ours_and_from_its_topics_node() {
        let rec = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            check_record(&rec(json!({"schema": 1, "node": "n1", "seq": 7})), "n1"),
            Ok(7)
        );
        assert!(
            check_record(&rec(json!({"schema": 1, "node": "n2", "seq": 7})), "n1")
                .unwrap_err()
                .contains("n2")
        );
        assert!(check_record(&rec(json!({"schema": 2, "node": "n1", "seq": 7})), "n1").is_err());
        assert!(check_record(&rec(json!({"schema": 1, "node": "n1"})), "n1").is_err());
    }
}
