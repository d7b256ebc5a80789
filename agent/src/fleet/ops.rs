//! The operator's side: `ops.toml` and the operator's MQTT connection, for
//! the `edge-agent fleet ...` commands that run on an operator's
//! workstation (never on a node).
//!
//! `ops.toml` is a file in agent.toml's format, read by the same loader
//! (same checks, same error messages): `[node] fleet` names the fleet and
//! `[uplink]` the broker URL, the CA, and the operator's own client
//! certificate and key. Other sections may be present (`[bridge]` for the
//! bridge) and keep their defaults when absent.
//!
//! The connection uses the uplink's TLS set-up ([`crate::uplink::tls`]:
//! rustls with ring, the fleet CA as the only trust anchor) and its error
//! classification ([`crate::uplink::Failure`], with the same stable codes),
//! so an operator reads the same messages a node's `status` shows. It owns
//! one rumqttc event loop; it never reads or writes a node's state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};

use crate::config::{AgentConfig, BrokerAddress, ConfigError};
use crate::uplink::{Backoff, Failure};

/// CONNECT to CONNACK, TLS handshake included, for an operator's command.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a one-shot command waits for the broker's PUBACK or SUBACK.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Requests queued towards rumqttc's event loop by default: an operator's
/// command publishes or subscribes a handful at a time.
const REQUEST_CAPACITY: usize = 64;

/// Reconnect delays of long-running operator commands (`--watch`, the
/// bridge): as the node's uplink, 0.5-1 s first, doubling to a minute.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error(
        "{}: uplink.url is empty: fleet commands need the broker (set [uplink] url, ca_file, and the operator's cert_file and key_file)",
        path.display()
    )]
    NoBroker { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Tls {
        path: PathBuf,
        source: crate::uplink::tls::TlsError,
    },
    /// The connection failed or was lost; `failure.code` is the stable
    /// code the node's uplink uses for the same cause.
    #[error("{} [{}]", .0.message, .0.code)]
    Connection(Failure),
    #[error("no answer from the broker at {broker} within {}s ({what})", .after.as_secs())]
    Timeout {
        broker: String,
        what: &'static str,
        after: Duration,
    },
    #[error("rumqttc refused the request: {0}")]
    Client(#[from] rumqttc::ClientError),
}

impl OpsError {
    /// Whether the command should report a bad config (exit 78) rather
    /// than a runtime failure.
    pub(crate) fn is_config(&self) -> bool {
        matches!(
            self,
            OpsError::Config(_) | OpsError::NoBroker { .. } | OpsError::Tls { .. }
        )
    }
}

/// A loaded `ops.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Ops {
    pub(crate) config: AgentConfig,
    pub(crate) path: PathBuf,
    pub(crate) broker: BrokerAddress,
}

impl Ops {
    /// Load and validate `ops.toml` (agent.toml's loader and rules) and
    /// check that it names a broker.
    pub(crate) fn load(path: &Path) -> Result<Ops, OpsError> {
        let loaded = AgentConfig::load(path)?;
        let broker = loaded
            .config
            .uplink
            .broker()
            .filter(|_| loaded.config.uplink.enabled())
            .ok_or_else(|| OpsError::NoBroker {
                path: path.to_path_buf(),
            })?;
        Ok(Ops {
            config: loaded.config,
            path: loaded.path,
            broker,
        })
    }

    /// The fleet this file is about (`[node] fleet`).
    pub(crate) fn fleet(&self) -> &str {
        &self.config.node.fleet
    }
}

/// How an operator connection presents itself.
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    /// Unique per connection unless a persistent session is wanted (a
    /// second connection with the same id pushes the first one off).
    pub(crate) client_id: String,
    /// `false`: the broker keeps subscriptions and queues QoS 1 messages
    /// while the client is away (for the bridge).
    pub(crate) clean_session: bool,
    /// Acknowledge incoming QoS 1 messages only when the caller says so
    /// (`AsyncClient::ack`), e.g. after they were written elsewhere.
    pub(crate) manual_acks: bool,
    /// The largest packet either way.
    pub(crate) max_packet_bytes: usize,
    /// Requests (publishes, subscribes, acks) queued towards the event
    /// loop before `publish` waits.
    pub(crate) request_capacity: usize,
}

impl ConnectOptions {
    /// A throw-away session for one command: a client id unique to this
    /// process and moment, clean session, automatic acknowledgements.
    pub(crate) fn one_shot(purpose: &str) -> ConnectOptions {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        ConnectOptions {
            client_id: format!("ops-{purpose}-{}-{nanos:08x}", std::process::id()),
            clean_session: true,
            manual_acks: false,
            max_packet_bytes: crate::uplink::MAX_PACKET_BYTES,
            request_capacity: REQUEST_CAPACITY,
        }
    }
}

/// An operator's connection to the fleet's broker. Poll it for events;
/// publish and subscribe through [`OpsConnection::client`].
pub(crate) struct OpsConnection {
    client: AsyncClient,
    eventloop: EventLoop,
    ops: Ops,
    backoff: Backoff,
    /// Set after a lost connection: wait this long before the next poll
    /// reconnects (rumqttc alone would retry in a tight loop).
    retry_in: Option<Duration>,
    connected: bool,
}

impl OpsConnection {
    /// Set up the client (reads the TLS files) without connecting yet.
    pub(crate) fn new(ops: &Ops, options: ConnectOptions) -> Result<OpsConnection, OpsError> {
        let transport = if ops.broker.tls {
            let tls = crate::uplink::tls::client_config(&ops.config.uplink).map_err(|source| {
                OpsError::Tls {
                    path: ops.path.clone(),
                    source,
                }
            })?;
            Transport::tls_with_config(TlsConfiguration::Rustls(tls))
        } else {
            Transport::Tcp
        };
        let mut o = MqttOptions::new(options.client_id, ops.broker.host.clone(), ops.broker.port);
        o.set_transport(transport)
            .set_keep_alive(ops.config.uplink.keep_alive.get())
            .set_clean_session(options.clean_session)
            .set_manual_acks(options.manual_acks)
            .set_inflight(ops.config.uplink.inflight)
            .set_max_packet_size(options.max_packet_bytes, options.max_packet_bytes);
        let (client, mut eventloop) = AsyncClient::new(o, options.request_capacity);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        Ok(OpsConnection {
            client,
            eventloop,
            ops: ops.clone(),
            backoff: Backoff::seeded(RETRY_FIRST, RETRY_MAX),
            retry_in: None,
            connected: false,
        })
    }

    /// [`OpsConnection::new`], then wait for the broker's CONNACK. The first
    /// failure is returned (one-shot commands stop on it).
    pub(crate) async fn connect(
        ops: &Ops,
        options: ConnectOptions,
    ) -> Result<OpsConnection, OpsError> {
        let mut c = OpsConnection::new(ops, options)?;
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT + Duration::from_secs(1);
        loop {
            let ev = tokio::time::timeout_at(deadline, c.poll())
                .await
                .map_err(|_| c.timeout("CONNACK", CONNECT_TIMEOUT))??;
            if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                return Ok(c);
            }
        }
    }

    /// Publish, subscribe, acknowledge.
    pub(crate) fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// The next event. A failed or lost connection comes back as
    /// [`OpsError::Connection`]; the next call then waits the backoff
    /// delay and reconnects, so long-running commands just keep polling
    /// (and subscribe again on a CONNACK without `session_present`).
    pub(crate) async fn poll(&mut self) -> Result<Event, OpsError> {
        if let Some(delay) = self.retry_in.take() {
            tokio::time::sleep(delay).await;
        }
        match self.eventloop.poll().await {
            Ok(ev) => {
                if matches!(ev, Event::Incoming(Packet::ConnAck(_))) {
                    self.connected = true;
                    self.backoff.reset();
                }
                Ok(ev)
            }
            Err(e) => {
                let failure = self.describe(&e);
                self.connected = false;
                self.retry_in = Some(self.backoff.next_delay());
                Err(OpsError::Connection(failure))
            }
        }
    }

    /// Publish one message (QoS 1) and wait for the broker's PUBACK,
    /// handing every other event to `other` meanwhile.
    pub(crate) async fn publish_and_wait(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        mut other: impl FnMut(Event),
    ) -> Result<(), OpsError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        let mut pkid = None;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.poll())
                .await
                .map_err(|_| self.timeout("PUBACK", ACK_TIMEOUT))??;
            match ev {
                // One publish at a time from here: the first outgoing
                // publish after ours was queued is ours.
                Event::Outgoing(Outgoing::Publish(id)) if pkid.is_none() => pkid = Some(id),
                Event::Incoming(Packet::PubAck(ack)) if Some(ack.pkid) == pkid => return Ok(()),
                ev => other(ev),
            }
        }
    }

    /// Subscribe to `filters` (QoS 1) and wait for the SUBACK, handing
    /// every other event (retained messages may come first) to `other`.
    pub(crate) async fn subscribe_and_wait(
        &mut self,
        filters: &[String],
        mut other: impl FnMut(Event),
    ) -> Result<(), OpsError> {
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.poll())
                .await
                .map_err(|_| self.timeout("SUBACK", ACK_TIMEOUT))??;
            match ev {
                Event::Incoming(Packet::SubAck(ack)) => {
                    if let Some(i) = ack
                        .return_codes
                        .iter()
                        .position(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(OpsError::Connection(Failure {
                            code: "refused",
                            message: format!(
                                "the broker at {}:{} refused the subscription to {}: its access rules do not let this certificate read it",
                                self.ops.broker.host,
                                self.ops.broker.port,
                                filters.get(i).map_or("?", String::as_str)
                            ),
                        }));
                    }
                    return Ok(());
                }
                ev => other(ev),
            }
        }
    }

    /// Say goodbye (DISCONNECT) and let the event loop write it.
    pub(crate) async fn disconnect(mut self) {
        if !self.connected {
            return;
        }
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    fn describe(&self, e: &ConnectionError) -> Failure {
        crate::uplink::describe_failure(
            e,
            &self.ops.config.uplink,
            &self.ops.broker,
            !self.connected,
        )
    }

    fn timeout(&self, what: &'static str, after: Duration) -> OpsError {
        OpsError::Timeout {
            broker: format!("{}:{}", self.ops.broker.host, self.ops.broker.port),
            what,
            after,
        }
    }
}

/// The fleet's topic for `node` and `suffix` (`alerts`, `state`,
/// `config/result`, ...).
pub(crate) fn topic(fleet: &str, node: &str, suffix: &str) -> String {
    format!("edge/{fleet}/{node}/{suffix}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_split_into_node_and_suffix_only_for_their_fleet() {
        assert_eq!(topic("f", "n1", "state"), "edge/f/n1/state");
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
    fn an_ops_file_without_a_broker_says_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ops.toml");
        std::fs::write(&p, "[node]\nfleet = \"f1\"\n").unwrap();
        let e = Ops::load(&p).unwrap_err();
        assert!(e.is_config());
        let e = e.to_string();
        assert!(e.contains("ops.toml") && e.contains("uplink.url"), "{e}");
    }

    #[test]
    fn an_ops_file_with_a_bad_key_fails_like_agent_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ops.toml");
        std::fs::write(&p, "[node]\nfleet = \"a/b\"\n").unwrap();
        let e = Ops::load(&p).unwrap_err().to_string();
        assert!(e.contains("ops.toml: node.fleet:"), "{e}");
    }

    #[test]
    fn one_shot_client_ids_differ_between_connections() {
        let a = ConnectOptions::one_shot("publish");
        std::thread::sleep(Duration::from_millis(1));
        let b = ConnectOptions::one_shot("publish");
        assert_ne!(a.client_id, b.client_id);
        assert!(a.clean_session && !a.manual_acks);
    }
}
