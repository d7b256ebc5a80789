//! The uplink: the MQTT session (rumqttc + rustls, mTLS) that drains the
//! outbox to the broker. Owns the broker connection. Never deletes an
//! outbox record the broker has not acknowledged: a record is handed back
//! to the outbox for deletion only when its QoS 1 PUBACK arrives.
//!
//! Three parts: the [`session`] state machine (no I/O: what to fetch,
//! which packet id is which record, how long to back off), the [`driver`]
//! task that owns rumqttc's event loop and the socket, and the task here,
//! which joins them to the outbox: it fetches records in drain order,
//! publishes them, returns acknowledgements, publishes the node's retained
//! `/state`, and keeps `status` current.
//!
//! # Topics and payloads
//! Records go to `edge/<fleet>/<node>/<alerts|metrics|events|config/result>`
//! as the outbox stored them (JSON; `node`, `seq`, `schema` at the top
//! level). `edge/<fleet>/<node>/state` is retained: after every connect an
//! "online" document (version, outbox depth and bytes by class, records
//! given up by class, reconnects), refreshed while connected when those
//! change (at most once a minute); the last will, and a clean shutdown,
//! leave an "offline" document there. MQTT 3.1.1, QoS 1, `clean_session =
//! false`, client id `<fleet>/<node>`. The config topics are subscribed
//! at QoS 0, so the session never queues bundles (the retained ones are
//! read again on every connect).

mod backoff;
mod driver;
mod failure;
mod session;
pub(crate) mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub(crate) use self::backoff::Backoff;
pub(crate) use self::failure::{Failure, describe as describe_failure};
pub(crate) use self::session::{FetchRequest, Session, Slot};

use crate::config::{AgentConfig, BrokerAddress, SectionId};
use crate::fleet::link::{Incoming, LinkHealth, UplinkSide};
use crate::outbox::{Fetched, Outbox, OutboxError, RecordKey, Summary, TryAck};
use crate::reload::{ApplyTicket, ConfigUpdate, ConfigWatch};
use crate::report::Topic;
use crate::stage::{self, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StatusReporter, details, unix_now};

/// Reconnect delays: the first within 0.5-1 s (a restarted broker is back
/// soon), doubling up to 60 s (a link down for hours costs one attempt a
/// minute; a fleet of 10,000 nodes then reconnects at ~170/s, spread by
/// the jitter).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// TCP connect, TLS handshake and CONNACK together must finish within this
/// (slow cellular links take seconds for a handshake).
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// The largest packet either way: a record of the outbox's largest size
/// plus topic and header.
pub(crate) const MAX_PACKET_BYTES: usize = crate::outbox::store::MAX_RECORD_BYTES + 4096;

/// At shutdown: how long to wait for PUBACKs of what is in flight (so
/// those records are not sent twice), and for the offline state message.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(1500);
const SHUTDOWN_GOODBYE: Duration = Duration::from_millis(500);

/// A packet from the broker may be this large when the node takes fleet
/// config: the largest bundle any node may accept, its topic and header.
const MAX_BUNDLE_PACKET_BYTES: usize = crate::config::FleetConfig::MAX_BUNDLE.get() as usize + 4096;

/// After the fleet stage could not take a config message, the config
/// topics are subscribed again after this (their retained bundles come
/// again). Long enough that a flood cannot make it spin.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(30);

/// The online state message is refreshed at most this often.
const STATE_REFRESH: Duration = Duration::from_secs(60);

/// Acknowledgements the outbox thread was too busy to take are offered
/// again after this (or with the next PUBACKs, whichever is first).
const ACK_RETRY: Duration = Duration::from_millis(5);

/// After a failed fetch (the outbox file not open), try again after this.
const FETCH_RETRY: Duration = Duration::from_secs(1);

/// `status` details are refreshed at most this often under load.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);

/// A failure already logged is logged again only after this long.
const LOG_REPEAT: Duration = Duration::from_secs(600);

/// `schema` of the state documents.
const STATE_SCHEMA: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub(crate) enum UplinkError {
    #[error("uplink.url: {0}")]
    Url(String),
}

/// The uplink stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "uplink",
    // [fleet]: which config topics to read (none without trusted keys).
    sections: &[SectionId::Uplink, SectionId::Fleet],
    key_details: UplinkDetails::KEY,
};

details! {
    /// What the uplink shows in `status`.
    pub(crate) struct UplinkDetails {
        pub(crate) connected: bool,
        /// `uplink.url`.
        pub(crate) broker: String,
        /// Unix seconds (null while disconnected).
        pub(crate) connected_since: Option<u64>,
        /// Unix seconds (null while connected).
        pub(crate) disconnected_since: Option<u64>,
        /// Unix seconds of the last PUBACK.
        pub(crate) [key] last_publish_at: Option<u64>,
        pub(crate) published_total: u64,
        pub(crate) acked_total: u64,
        pub(crate) in_flight: u64,
        pub(crate) [key] reconnects_total: u64,
        pub(crate) connects_total: u64,
        pub(crate) next_retry_secs: Option<u64>,
        /// The last failure's stable code (`unreachable`, `tls_rejected_by_broker`, ...).
        pub(crate) [key] last_error_code: Option<&'static str>,
        pub(crate) config_dropped_total: u64,
    }
}

/// Start the uplink stage, draining `outbox`. `done` is dropped when it has
/// stopped (after handing its last acknowledgements to the outbox).
/// `fleet`: where bundles on the node's config topics go, and what the
/// state message says about fleet config.
pub(crate) fn start(
    ctx: &StageContext,
    outbox: Outbox,
    shutdown: CancellationToken,
    done: oneshot::Sender<()>,
    fleet: UplinkSide,
) -> Stage {
    stage::start(ctx, &STAGE, |own| async move {
        let _done = done;
        run(own.config, outbox, own.status, shutdown, fleet).await
    })
}

enum Ending {
    Shutdown,
    /// New settings: reconnect with them, then answer the ticket.
    Reconfigure(ConfigUpdate),
}

async fn run(
    mut config_watch: ConfigWatch,
    outbox: Outbox,
    status: StatusReporter,
    shutdown: CancellationToken,
    fleet: UplinkSide,
) -> Result<(), UplinkError> {
    let mut config = config_watch.current();
    let mut applying: Option<ApplyTicket> = None;
    loop {
        let ending = if !config.uplink.enabled() {
            status.set_state(
                StageState::Disabled,
                "no uplink.url configured: reports wait in the outbox",
            );
            if let Some(ticket) = applying.take() {
                ticket.ok();
            }
            tokio::select! {
                _ = shutdown.cancelled() => Ending::Shutdown,
                update = config_watch.changed() => Ending::Reconfigure(update),
            }
        } else {
            // Validated with the config; a bad URL cannot get here.
            let broker = BrokerAddress::parse(&config.uplink.url).map_err(UplinkError::Url)?;
            Link::new(
                config.clone(),
                broker,
                outbox.clone(),
                status.clone(),
                fleet.clone(),
            )
            .run(&mut config_watch, applying.take(), &shutdown)
            .await
        };
        match ending {
            Ending::Shutdown => return Ok(()),
            Ending::Reconfigure(update) => {
                info!(
                    generation = update.generation,
                    "uplink: settings changed, reconnecting"
                );
                config = update.config;
                applying = Some(update.ticket);
            }
        }
    }
}

/// The topics of this node.
struct Topics {
    prefix: String,
}

impl Topics {
    fn new(config: &AgentConfig) -> Topics {
        Topics {
            prefix: format!("edge/{}/{}/", config.node.fleet, config.node.id),
        }
    }
    fn record(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.suffix())
    }
    fn state(&self) -> String {
        format!("{}state", self.prefix)
    }
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Fetched, OutboxError>> + Send>>;

/// One configuration's connection, from first attempt to shutdown or
/// reconfiguration.
struct Link {
    config: Arc<AgentConfig>,
    broker: BrokerAddress,
    outbox: Outbox,
    status: StatusReporter,
    topics: Topics,
    session: Session,
    summary: watch::Receiver<Summary>,
    /// Acknowledged records not yet handed to the outbox.
    acks: Vec<RecordKey>,
    /// No CONNACK yet on the current attempt.
    connecting: bool,
    connected_at: Option<SystemTime>,
    down_since: SystemTime,
    last_failure: Option<Failure>,
    last_logged: Option<(&'static str, Instant)>,
    next_attempt: Option<Instant>,
    last_status: Instant,
    last_state: Option<(Instant, Value)>,
    /// TLS material as last loaded (for `mqtts://`).
    tls: Option<Transport>,
    /// The joint with the fleet stage.
    fleet: UplinkSide,
    /// The node's config topics (empty: fleet config off).
    config_topics: Vec<String>,
    /// Config messages the fleet stage had no room for.
    config_dropped: u64,
    /// After a drop: subscribe again then, so the retained bundles come again.
    resubscribe_at: Option<Instant>,
    health: LinkHealth,
}

impl Link {
    fn new(
        config: Arc<AgentConfig>,
        broker: BrokerAddress,
        outbox: Outbox,
        status: StatusReporter,
        fleet: UplinkSide,
    ) -> Link {
        let now = Instant::now();
        let health = *fleet.health.borrow();
        Link {
            config_topics: crate::fleet::link::config_topics(&config),
            config_dropped: 0,
            resubscribe_at: None,
            // The counts go on across reconnections with new settings (a
            // trial compares them with those before the apply).
            health: LinkHealth {
                connected: false,
                ..health
            },
            fleet,
            topics: Topics::new(&config),
            session: Session::new(
                config.uplink.inflight,
                Backoff::seeded(RETRY_FIRST, RETRY_MAX),
                now,
            ),
            summary: outbox.summary(),
            config,
            broker,
            outbox,
            status,
            acks: Vec::new(),
            connecting: true,
            connected_at: None,
            down_since: SystemTime::now(),
            last_failure: None,
            last_logged: None,
            next_attempt: None,
            last_status: now - STATUS_INTERVAL,
            last_state: None,
            tls: None,
        }
    }

    /// The transport, reading the TLS files afresh (a renewed certificate
    /// is picked up at the next reconnect).
    fn load_transport(&mut self) -> Result<Transport, Failure> {
        if !self.broker.tls {
            return Ok(Transport::Tcp);
        }
        match tls::client_config(&self.config.uplink) {
            Ok(c) => {
                let t = Transport::tls_with_config(TlsConfiguration::Rustls(c));
                self.tls = Some(t.clone());
                Ok(t)
            }
            Err(e) => Err(Failure {
                code: "tls_config",
                message: e.to_string(),
            }),
        }
    }

    fn options(&self, transport: Transport) -> MqttOptions {
        let node = &self.config.node;
        let mut o = MqttOptions::new(
            format!("{}/{}", node.fleet, node.id),
            self.broker.host.clone(),
            self.broker.port,
        );
        o.set_transport(transport)
            .set_keep_alive(self.config.uplink.keep_alive.get())
            .set_clean_session(false)
            .set_inflight(self.config.uplink.inflight)
            .set_max_packet_size(self.max_incoming(), MAX_PACKET_BYTES)
            .set_last_will(LastWill::new(
                self.topics.state(),
                self.offline_state("connection lost"),
                QoS::AtLeastOnce,
                true,
            ));
        o
    }

    /// The largest packet the broker may send: bundles up to the largest
    /// `fleet.max_bundle_bytes` and their topic when the node takes fleet
    /// config. A larger packet makes rumqttc drop the connection, so the
    /// limit is the largest any node may be configured for, not this node's
    /// (which the fleet stage enforces with a refusal and a result).
    fn max_incoming(&self) -> usize {
        if self.config_topics.is_empty() {
            MAX_PACKET_BYTES
        } else {
            MAX_PACKET_BYTES.max(MAX_BUNDLE_PACKET_BYTES)
        }
    }

    /// Connect and drain until shutdown or new settings. `applying` is
    /// answered once the settings are taken in: ok when the TLS material
    /// loads (connecting is the link's own business, shown in status), or
    /// the reason it does not.
    async fn run(
        mut self,
        config_watch: &mut ConfigWatch,
        mut applying: Option<ApplyTicket>,
        shutdown: &CancellationToken,
    ) -> Ending {
        // The TLS material must load before anything can connect; until it
        // does, say why and retry (it may be provisioned after the agent).
        let transport = loop {
            match self.load_transport() {
                Ok(t) => break t,
                Err(f) => {
                    if let Some(ticket) = applying.take() {
                        ticket.failed(f.clone());
                    }
                    let delay = self.session.lost(Instant::now());
                    self.failed(f, delay);
                    self.refresh_status(true);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ending::Shutdown,
                        update = config_watch.changed() => return Ending::Reconfigure(update),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        if let Some(ticket) = applying.take() {
            ticket.ok();
        }
        // Not connected with these settings yet.
        self.share_health();
        let window = usize::from(self.config.uplink.inflight);
        // The window plus the state message and a disconnect: the session
        // never queues more, so publishing never finds this full.
        let (client, mut eventloop) = AsyncClient::new(self.options(transport), window + 8);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let (events_tx, mut events) = mpsc::channel(driver::EVENT_CHANNEL_CAPACITY);
        // The driver waits for one resume after each loss; a few of room
        // means sending one never fails.
        let (resume_tx, resume_rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let driver = tokio::spawn(driver::drive(eventloop, events_tx, resume_rx, stop.clone()));
        self.status.set_state(
            StageState::Starting,
            format!("connecting to {}", self.config.uplink.url),
        );

        let mut fetch: Option<(FetchRequest, FetchFuture)> = None;
        let mut fetch_retry_at: Option<Instant> = None;
        let mut state_tick = tokio::time::interval(STATE_REFRESH);
        state_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let mut summary_alive = true;
        let mut fleet_alive = true;
        let ending = loop {
            if fetch.is_none() && fetch_retry_at.is_none_or(|t| Instant::now() >= t) {
                fetch_retry_at = None;
                let appended = self.summary.borrow().appended_total;
                if let Some(req) = self.session.want_fetch(appended) {
                    let ob = self.outbox.clone();
                    fetch = Some((
                        req,
                        Box::pin(
                            async move { ob.fetch(req.after, req.limit, req.max_bytes).await },
                        ),
                    ));
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ending::Shutdown,
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        error!("uplink: the MQTT driver stopped");
                        break Ending::Shutdown;
                    };
                    self.event(ev, &client, &resume_tx);
                    while let Ok(ev) = events.try_recv() {
                        self.event(ev, &client, &resume_tx);
                    }
                    self.offer_acks();
                }
                _ = tokio::time::sleep(ACK_RETRY), if !self.acks.is_empty() => self.offer_acks(),
                r = async { (&mut fetch.as_mut().expect("guarded").1).await }, if fetch.is_some() => {
                    let (req, _) = fetch.take().expect("guarded");
                    if !self.fetched(req, r) {
                        fetch_retry_at = Some(Instant::now() + FETCH_RETRY);
                    }
                }
                _ = tokio::time::sleep_until(fetch_retry_at.unwrap_or_else(Instant::now).into()), if fetch_retry_at.is_some() => {}
                r = self.summary.changed(), if summary_alive => summary_alive = r.is_ok(),
                r = self.fleet.summary.changed(), if fleet_alive => {
                    fleet_alive = r.is_ok();
                    self.refresh_state(&client, true);
                }
                _ = tokio::time::sleep_until(self.resubscribe_at.unwrap_or_else(Instant::now).into()), if self.resubscribe_at.is_some() => {
                    self.resubscribe_at = None;
                    self.subscribe_config(&client);
                }
                _ = state_tick.tick() => self.refresh_state(&client, false),
                _ = status_tick.tick() => self.refresh_status(true),
                // Every key of [uplink] is a connection setting; [fleet] says
                // which config topics to read.
                update = config_watch.changed() => {
                    let topics = crate::fleet::link::config_topics(&update.config);
                    if update.config.uplink == self.config.uplink && topics == self.config_topics {
                        // Fleet settings the link does not use (the trial
                        // time, the size limit) changed.
                        self.config = update.config;
                        update.ticket.ok();
                    } else {
                        break Ending::Reconfigure(update);
                    }
                }
            }
            self.publish_ready(&client);
            self.refresh_status(false);
            self.share_health();
        };
        if matches!(ending, Ending::Shutdown) {
            self.goodbye(&client, &mut events).await;
        }
        self.flush_acks().await;
        stop.cancel();
        let _ = driver.await;
        self.status.set_state(StageState::Stopped, "stopped");
        ending
    }

    /// One event from the driver.
    fn event(
        &mut self,
        ev: Result<Event, ConnectionError>,
        client: &AsyncClient,
        resume: &mpsc::Sender<Duration>,
    ) {
        let now = Instant::now();
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                self.session.connected(now);
                self.connecting = false;
                self.connected_at = Some(SystemTime::now());
                self.next_attempt = None;
                if self.last_failure.take().is_some() || self.session.stats.connects > 1 {
                    info!(broker = %self.config.uplink.url, session_present = ack.session_present, "uplink connected again");
                } else {
                    info!(broker = %self.config.uplink.url, "uplink connected");
                }
                self.last_logged = None;
                self.health.connected = true;
                self.health.connects += 1;
                self.health.acks_this_connection = 0;
                self.subscribe_config(client);
                self.refresh_state(client, true);
                self.refresh_status(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => self.config_message(p),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Err(e) = self.session.outgoing_publish(pkid) {
                    self.broken(&e, client);
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                if let Err(e) = self.session.await_ack(pkid) {
                    self.broken(&e, client);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let slot = self.session.puback(ack.pkid, now);
                if slot.is_some() {
                    self.health.acks += 1;
                    self.health.acks_this_connection += 1;
                }
                if let Some(Slot::Record(key)) = slot {
                    self.acks.push(key);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let f = failure::describe(&e, &self.config.uplink, &self.broker, self.connecting);
                debug!(error = ?e, code = f.code, "uplink connection error");
                if !self.connecting {
                    self.down_since = SystemTime::now();
                }
                self.connecting = true;
                self.connected_at = None;
                self.health.connected = false;
                self.share_health();
                let delay = self.session.lost(now);
                self.failed(f, delay);
                // Re-read the TLS files for the next attempt; a file that
                // became unreadable is reported, and the last good
                // material is used meanwhile.
                if self.broker.tls
                    && let Err(f) = self.load_transport()
                {
                    self.status.error(format!("{} [{}]", f.message, f.code));
                    warn!(error = %f.message, "uplink: cannot reload the TLS files; using the ones loaded before");
                }
                // The driver waits for this before reconnecting; the
                // channel holds one, and the driver reads it at once.
                let _ = resume.try_send(delay);
                self.refresh_status(true);
            }
        }
    }

    /// The packet-id pairing broke (or rumqttc refused a publish): drop the
    /// connection so that everything unacknowledged is sent again. Nothing
    /// is deleted.
    fn broken(&mut self, why: &dyn std::fmt::Display, client: &AsyncClient) {
        error!(error = %why, "uplink: reconnecting to send everything unacknowledged again");
        self.status.error(why.to_string());
        let _ = client.try_disconnect();
    }

    fn failed(&mut self, f: Failure, delay: Duration) {
        let now = Instant::now();
        let repeat = matches!(self.last_logged, Some((code, at)) if code == f.code && at.elapsed() < LOG_REPEAT);
        if !repeat {
            warn!(
                code = f.code,
                retry_in_ms = delay.as_millis() as u64,
                "uplink: {}",
                f.message
            );
            self.last_logged = Some((f.code, now));
        }
        self.status.error(format!("{} [{}]", f.message, f.code));
        self.next_attempt = Some(now + delay);
        self.last_failure = Some(f);
    }

    /// A fetch came back: its records join the ready queue. False if it
    /// failed.
    fn fetched(&mut self, req: FetchRequest, r: Result<Fetched, OutboxError>) -> bool {
        match r {
            Ok(f) => {
                self.session.fetched(&req, f);
                true
            }
            Err(e) => {
                debug!(error = %e, "uplink: fetch from the outbox failed; retrying");
                self.session.fetch_failed(&req);
                false
            }
        }
    }

    /// Hand rumqttc every ready record the window has room for.
    fn publish_ready(&mut self, client: &AsyncClient) {
        while let Some(rec) = self.session.next_publish() {
            let topic = self.topics.record(rec.topic);
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, rec.payload) {
                // Cannot happen while the session respects the window; if
                // it does, reconnect rather than lose the pairing.
                self.broken(&format!("rumqttc refused a publish: {e}"), client);
                return;
            }
        }
    }

    /// Hand acknowledgements to the outbox without waiting: while its
    /// thread is committing (milliseconds on flash), they gather here and
    /// go in one larger batch, and the link keeps flowing meanwhile.
    fn offer_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        match self.outbox.try_ack(std::mem::take(&mut self.acks)) {
            Ok(()) => {}
            Err(TryAck::Busy(keys)) => self.acks = keys,
            Err(TryAck::Stopped) => {
                warn!("uplink: the outbox has stopped; acknowledged records will be sent again");
            }
        }
    }

    /// Hand over every acknowledgement, waiting if need be (at the end).
    async fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut self.acks);
        if self.outbox.ack(acks).await.is_err() {
            warn!("uplink: the outbox has stopped; acknowledged records will be sent again");
        }
    }

    /// Subscribe to the node's config topics (after every CONNACK: the
    /// broker then sends each layer's retained bundle, the latest only).
    ///
    /// At QoS 0, on purpose: the session is persistent, and at QoS 1 the
    /// broker would queue every bundle published while the node was away
    /// and deliver them all, in order, before the retained copies, so a
    /// node back after a week would apply and try each version in between.
    /// At QoS 0 nothing is queued; the retained bundle of each layer is
    /// the truth, and it comes again with every subscription.
    fn subscribe_config(&mut self, client: &AsyncClient) {
        if self.config_topics.is_empty() || !self.session.is_up() {
            return;
        }
        let filters = self
            .config_topics
            .iter()
            .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtMostOnce));
        if let Err(e) = client.try_subscribe_many(filters) {
            warn!(error = %e, "uplink: cannot subscribe to the config topics; trying again in {}s", RESUBSCRIBE_AFTER.as_secs());
            self.resubscribe_at = Some(Instant::now() + RESUBSCRIBE_AFTER);
        }
    }

    /// A message on a subscribed topic: hand it to the fleet stage without
    /// waiting. When it has no room (a flood), count the message, drop it,
    /// and subscribe again later: the retained bundles come again then.
    fn config_message(&mut self, p: rumqttc::Publish) {
        if !self.config_topics.contains(&p.topic) {
            debug!(topic = %p.topic, "uplink: a message on a topic this node no longer reads");
            return;
        }
        let Some(inbox) = &self.fleet.inbox else {
            return;
        };
        let msg = Incoming {
            topic: p.topic,
            payload: p.payload,
        };
        if inbox.try_send(msg).is_err() {
            self.config_dropped += 1;
            if self.resubscribe_at.is_none() {
                warn!(
                    dropped_total = self.config_dropped,
                    "uplink: config messages arrive faster than they are checked; dropped, the retained bundles are read again in {}s",
                    RESUBSCRIBE_AFTER.as_secs()
                );
                self.resubscribe_at = Some(Instant::now() + RESUBSCRIBE_AFTER);
            }
        }
    }

    /// Tell the fleet stage how the link is doing (only when it changed).
    fn share_health(&self) {
        let h = self.health;
        self.fleet.health.send_if_modified(|old| {
            let changed = *old != h;
            *old = h;
            changed
        });
    }

    fn online_state(&self) -> Value {
        let s = self.summary.borrow();
        json!({
            "node": self.config.node.id,
            "schema": STATE_SCHEMA,
            "state": "online",
            "version": crate::VERSION,
            "since": self.connected_at.map(crate::unix_time::secs),
            "outbox": {
                "records": s.records,
                "bytes": s.bytes,
                "oldest_age_secs": s.oldest_age_secs(),
                "disk_full": s.disk_full,
            },
            "given_up": s.given_up,
            "reconnects": self.session.stats.reconnects,
            "fleet": self.fleet_summary(),
        })
    }

    /// `fleet` in the state messages: null when fleet config is off.
    fn fleet_summary(&self) -> Value {
        if self.config_topics.is_empty() {
            return Value::Null;
        }
        serde_json::to_value(&*self.fleet.summary.borrow()).unwrap_or(Value::Null)
    }

    fn offline_state(&self, reason: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "node": self.config.node.id,
            "schema": STATE_SCHEMA,
            "state": "offline",
            "reason": reason,
            "version": crate::VERSION,
            "at": unix_now(),
            "fleet": self.fleet_summary(),
        }))
        .expect("a JSON value serializes")
    }

    /// Publish the retained online state: always after a connect,
    /// otherwise when what it says has changed (ignoring ages).
    fn refresh_state(&mut self, client: &AsyncClient, force: bool) {
        if !self.session.is_up() {
            return;
        }
        let doc = self.online_state();
        let mut comparable = doc.clone();
        comparable["outbox"]["oldest_age_secs"] = Value::Null;
        if !force
            && self
                .last_state
                .as_ref()
                .is_some_and(|(at, last)| *last == comparable || at.elapsed() < STATE_REFRESH)
        {
            return;
        }
        self.session.queue(Slot::State);
        let payload = serde_json::to_vec(&doc).expect("a JSON value serializes");
        if let Err(e) = client.try_publish(self.topics.state(), QoS::AtLeastOnce, true, payload) {
            self.broken(&format!("rumqttc refused a publish: {e}"), client);
        }
        self.last_state = Some((Instant::now(), comparable));
    }

    /// Clean shutdown: let in-flight PUBACKs arrive, leave an offline
    /// state, disconnect (which also tells the broker not to send the
    /// will).
    async fn goodbye(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
    ) {
        if !self.session.is_up() {
            return;
        }
        let (tx, _keep) = mpsc::channel(1);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
        while self.session.in_flight() > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.event(ev, client, &tx),
                _ => break,
            }
        }
        if !self.session.is_up() {
            return;
        }
        self.session.queue(Slot::State);
        let _ = client.try_publish(
            self.topics.state(),
            QoS::AtLeastOnce,
            true,
            self.offline_state("shutdown"),
        );
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GOODBYE;
        while self.session.in_flight() > 0 && self.session.is_up() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.event(ev, client, &tx),
                _ => break,
            }
        }
        let _ = client.try_disconnect();
        // Let the driver write the DISCONNECT.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GOODBYE;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if matches!(ev, Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)) {
                break;
            }
            self.event(ev, client, &tx);
        }
        info!("uplink disconnected");
    }

    /// Refresh the status snapshot (at most every 250 ms unless `force`).
    fn refresh_status(&mut self, force: bool) {
        if !force && self.last_status.elapsed() < STATUS_INTERVAL {
            return;
        }
        self.last_status = Instant::now();
        let url = &self.config.uplink.url;
        let stats = &self.session.stats;
        let last_ack = stats
            .last_ack
            .map(|t| unix_now().saturating_sub(t.elapsed().as_secs()));
        let next_retry = self
            .next_attempt
            .map(|t| t.saturating_duration_since(Instant::now()).as_secs());
        let (state, line) = if let Some(since) = self.connected_at {
            (
                StageState::Running,
                format!(
                    "connected to {url} since {}",
                    humantime::format_rfc3339_seconds(since)
                ),
            )
        } else {
            let why = self
                .last_failure
                .as_ref()
                .map_or_else(|| "connecting".to_string(), |f| f.message.clone());
            (
                StageState::Degraded,
                format!(
                    "NOT CONNECTED to {url} since {}: {why}{}",
                    humantime::format_rfc3339_seconds(self.down_since),
                    next_retry.map_or(String::new(), |s| format!("; next try in {s}s"))
                ),
            )
        };
        self.status.set_state(state, line);
        let connected = self.connected_at.is_some();
        self.status.details(&UplinkDetails {
            connected,
            broker: url.clone(),
            connected_since: self.connected_at.map(crate::unix_time::secs),
            disconnected_since: (!connected).then(|| crate::unix_time::secs(self.down_since)),
            last_publish_at: last_ack,
            published_total: stats.published,
            acked_total: stats.acked,
            in_flight: self.session.in_flight() as u64,
            reconnects_total: stats.reconnects,
            connects_total: stats.connects,
            next_retry_secs: next_retry,
            last_error_code: self.last_failure.as_ref().map(|f| f.code),
            config_dropped_total: self.config_dropped,
        });
    }
}
