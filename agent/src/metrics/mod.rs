//! Host metrics: node_exporter-compatible collectors, the local Prometheus
//! endpoint, and metrics batches for the outbox.
//!
//! Owns reading /proc and /sys for metrics, the `/metrics` socket, and the
//! `metrics` status snapshot. Every `metrics.interval` it collects once and
//! hands one self-contained batch to the outbox with `try_send`: a full or
//! gone outbox costs that batch (counted by the report channel and in
//! `batches_refused_total`), never a wait, so collection and the local
//! endpoint go on whatever the outbox and the uplink are doing, and nothing
//! here grows with an outage (the stage keeps exactly one snapshot).
//! Never blocks on the uplink; never writes outside its own socket.
//!
//! The pieces: `collectors` (file readers, run on a blocking thread),
//! `health` (K3s probes, async), `agent` (the agent's own `edge_agent_*`
//! metrics from the status board), `exposition` (text format), `batch`
//! (outbox JSON), `server` (hyper).

mod agent;
pub mod batch;
mod collectors;
pub(crate) mod exposition;
pub mod family;
mod health;
mod server;
mod source;

#[cfg(test)]
mod fixture_tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{MetricsConfig, SectionId};
use crate::reload::ApplyTicket;
use crate::report::Report;
use crate::stage::{self, Own, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StatusReporter, details};

pub use batch::{Encoding, payload};
pub use collectors::select;
pub(crate) use collectors::{CollectorId, Host, Outcome, collector_names};
pub use exposition::render;
pub(crate) use family::Snapshot;
pub use health::HealthTargets;
pub(crate) use health::K3sHealth;
pub use server::MAX_CONNECTIONS as MAX_ENDPOINT_CONNECTIONS;
pub use source::Roots;

/// Scrapes waiting for the stage. Prometheus sends one at a time; anything
/// beyond a handful is a client misbehaving and gets a 503.
const SCRAPE_QUEUE: usize = 8;

/// A snapshot younger than this answers a scrape (or a batch) instead of a
/// new collection, so scrape storms and a scrape right before a batch cost
/// one collection. node_exporter has no such floor; a second is well below
/// any sane scrape interval.
const MIN_REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("the metrics collector thread failed: {0}")]
    Collector(#[from] tokio::task::JoinError),
    #[error(
        "cannot listen on {addr} (metrics.listen): {source}; collecting without the local endpoint"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The metrics stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "metrics",
    sections: &[SectionId::Metrics],
    key_details: MetricsDetails::KEY,
};

details! {
    /// What the metrics stage shows in `status`.
    pub(crate) struct MetricsDetails {
        pub(crate) series: u64,
        pub(crate) collections_total: u64,
        pub(crate) collection_seconds: f64,
        pub(crate) batches_queued_total: u64,
        /// Batches the outbox's input refused (full, or not running).
        pub(crate) [key] batches_refused_total: u64,
        pub(crate) last_batch_bytes: u64,
        pub(crate) scrapes_total: u64,
        pub(crate) [key] failing_collectors: u64,
        /// Mount points whose statfs did not return (skipped since).
        pub(crate) [key] stuck_mounts: u64,
        /// The endpoint's address, `unavailable` or `off`.
        pub(crate) listen: String,
        /// `k3s_<endpoint>`: the last K3s health probe of each endpoint.
        #[serde(flatten)]
        pub(crate) k3s: serde_json::Map<String, serde_json::Value>,
    }
}

/// Start the metrics stage.
pub(crate) fn start(ctx: &StageContext, shutdown: CancellationToken) -> Stage {
    stage::start(ctx, &STAGE, |own| run(ctx.clone(), own, shutdown))
}

/// `[metrics]` turned into what the stage runs with.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    enabled: bool,
    interval: Duration,
    listen: Option<SocketAddr>,
    collectors: Vec<CollectorId>,
    encoding: Encoding,
    roots: Roots,
    health: HealthTargets,
}

impl Settings {
    fn from_config(c: &MetricsConfig) -> Self {
        Self {
            enabled: c.enabled,
            interval: c.interval.get(),
            // Validated with the config; an unparsable value cannot get here.
            listen: c.listen.parse().ok(),
            collectors: select(&c.collectors),
            encoding: if c.compress {
                Encoding::DeflateBase64
            } else {
                Encoding::Json
            },
            roots: Roots {
                procfs: c.procfs.clone(),
                sysfs: c.sysfs.clone(),
                rootfs: c.rootfs.clone(),
            },
            health: HealthTargets {
                kubelet_url: c.kubelet_healthz_url.clone(),
                apiserver_url: c.apiserver_readyz_url.clone(),
                ca_file: c.apiserver_ca_file.clone(),
                cert_file: c.apiserver_cert_file.clone(),
                key_file: c.apiserver_key_file.clone(),
            },
        }
    }
}

/// The running endpoint.
struct Endpoint {
    /// What `metrics.listen` said (port 0 means "any").
    configured: SocketAddr,
    /// Where it is actually bound.
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Everything one collection needs besides the host state, and the
/// bookkeeping between collections.
pub struct Collector {
    /// `None` only while a collection runs on the blocking pool.
    host: Option<Host>,
    health: K3sHealth,
    board: crate::status::StatusBoard,
    dropped: Arc<crate::report::DropCounters>,
    collectors: Vec<CollectorId>,
    roots: Roots,
    /// The last error of each failing collector, to log changes only.
    failing: HashMap<CollectorId, String>,
    last: Option<(Instant, Arc<Snapshot>)>,
    last_probes: Option<Vec<health::Probe>>,
    stuck: usize,
    pub(crate) collections: u64,
    pub(crate) last_seconds: f64,
}

impl Collector {
    pub fn new(
        roots: Roots,
        health: HealthTargets,
        collectors: Vec<CollectorId>,
        board: crate::status::StatusBoard,
        dropped: Arc<crate::report::DropCounters>,
    ) -> Self {
        Self {
            host: Some(Host::new(roots.clone())),
            health: K3sHealth::new(health),
            board,
            dropped,
            collectors,
            roots,
            failing: HashMap::new(),
            last: None,
            last_probes: None,
            stuck: 0,
            collections: 0,
            last_seconds: 0.0,
        }
    }

    /// The latest snapshot if younger than [`MIN_REFRESH`], else a new one.
    pub(crate) async fn snapshot(&mut self) -> Result<Arc<Snapshot>, MetricsError> {
        if let Some((at, snap)) = &self.last
            && at.elapsed() < MIN_REFRESH
        {
            return Ok(snap.clone());
        }
        self.collect().await
    }

    /// Run every enabled collector once.
    pub async fn collect(&mut self) -> Result<Arc<Snapshot>, MetricsError> {
        let started = Instant::now();
        let which = self.collectors.clone();
        let mut host = self
            .host
            .take()
            .unwrap_or_else(|| Host::new(self.roots.clone()));
        host.set_roots(self.roots.clone());
        let blocking = tokio::task::spawn_blocking(move || {
            let mut snap = Snapshot::new();
            let outcomes = host.collect(&which, &mut snap);
            (host, snap, outcomes)
        });
        let want_k3s = self.collectors.contains(&CollectorId::K3s);
        let probes = async {
            if want_k3s {
                Some(self.health.probe().await)
            } else {
                None
            }
        };
        let (joined, probes) = tokio::join!(blocking, probes);
        let (host, mut snap, mut outcomes) = joined?;
        let stuck = host.stuck_mounts();
        self.host = Some(host);

        if let Some(probes) = &probes {
            health::push(&mut snap, probes);
            outcomes.push(Outcome {
                collector: CollectorId::K3s,
                seconds: probes.iter().map(|p| p.seconds).fold(0.0, f64::max),
                // Unreachable is a value, not a failure of the collector.
                error: None,
            });
        }
        if self.collectors.contains(&CollectorId::Agent) {
            let t = Instant::now();
            agent::collect(&self.board.snapshot(), &self.dropped, &mut snap);
            outcomes.push(Outcome {
                collector: CollectorId::Agent,
                seconds: t.elapsed().as_secs_f64(),
                error: None,
            });
        }
        collectors::push_outcomes(&mut snap, &outcomes);
        self.log_failures(&outcomes);

        self.collections += 1;
        self.last_seconds = started.elapsed().as_secs_f64();
        let snap = Arc::new(snap);
        self.last = Some((Instant::now(), snap.clone()));
        self.last_probes = probes;
        self.stuck = stuck;
        Ok(snap)
    }

    fn log_failures(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            match (&o.error, self.failing.get(&o.collector)) {
                (Some(e), prev) if prev != Some(e) => {
                    warn!(collector = o.collector.name(), error = %e, "metrics collector failed");
                    self.failing.insert(o.collector, e.clone());
                }
                (None, Some(_)) => {
                    info!(
                        collector = o.collector.name(),
                        "metrics collector recovered"
                    );
                    self.failing.remove(&o.collector);
                }
                _ => {}
            }
        }
    }

    /// Collectors failing in the last collection, as "name: error".
    pub(crate) fn failing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .failing
            .iter()
            .map(|(c, e)| format!("{}: {e}", c.name()))
            .collect();
        v.sort();
        v
    }

    fn apply(&mut self, s: &Settings) {
        self.collectors = s.collectors.clone();
        self.roots = s.roots.clone();
        self.health.set_targets(s.health.clone());
        self.last = None;
    }
}

/// The stage: collect on a timer and on scrapes, queue batches, serve the
/// endpoint, follow config reloads, stop on `shutdown`.
async fn run(
    ctx: StageContext,
    Own { status, mut config }: Own,
    shutdown: CancellationToken,
) -> Result<(), MetricsError> {
    let settings = Settings::from_config(&config.current().metrics);
    // `[node]` changes only with a restart.
    let groups = ctx.config.current().node.groups.clone();
    let (scrape_tx, mut scrape_rx) = mpsc::channel::<server::ScrapeRequest>(SCRAPE_QUEUE);
    let mut stage = MetricsStage {
        collector: Collector::new(
            settings.roots.clone(),
            settings.health.clone(),
            settings.collectors.clone(),
            ctx.board.clone(),
            ctx.reports.dropped().clone(),
        ),
        settings,
        reports: ctx.reports.clone(),
        status,
        scrape_tx,
        served: Arc::new(AtomicU64::new(0)),
        endpoint: None,
        endpoint_error: None,
        counters: BatchCounters::default(),
        groups,
    };
    // The config being applied, answered once the endpoint follows it.
    let mut applying: Option<ApplyTicket> = None;

    loop {
        stage.reconfigure(&shutdown).await;
        if let Some(ticket) = applying.take() {
            match &stage.endpoint_error {
                None => ticket.ok(),
                Some(e) => ticket.failed(Arc::clone(e)),
            }
        }
        let mut ticker = tokio::time::interval(stage.settings.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Wait for the next event and handle it; a config change breaks
        // out to reconfigure at the top.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    stop_endpoint(stage.endpoint.take()).await;
                    return Ok(());
                }
                update = config.changed() => {
                    let new = Settings::from_config(&update.config.metrics);
                    if new == stage.settings {
                        // A key that changes nothing the stage runs with.
                        update.ticket.ok();
                        continue;
                    }
                    info!(generation = update.generation, "metrics: applying the new [metrics] config");
                    stage.collector.apply(&new);
                    stage.settings = new;
                    applying = Some(update.ticket);
                    break;
                }
                _ = ticker.tick(), if stage.settings.enabled => {
                    tokio::select! {
                        _ = stage.on_tick() => {}
                        _ = shutdown.cancelled() => continue,
                    }
                }
                Some(req) = scrape_rx.recv() => {
                    tokio::select! {
                        _ = stage.on_scrape(req) => {}
                        _ = shutdown.cancelled() => continue,
                    }
                }
            }
        }
    }
}

/// The stage's state between events.
struct MetricsStage {
    settings: Settings,
    collector: Collector,
    reports: crate::report::ReportSender,
    status: StatusReporter,
    scrape_tx: mpsc::Sender<server::ScrapeRequest>,
    /// Scrapes answered, shared with the endpoint's connections.
    served: Arc<AtomicU64>,
    endpoint: Option<Endpoint>,
    /// Why the endpoint is not up although `listen` asks for it.
    endpoint_error: Option<Arc<MetricsError>>,
    counters: BatchCounters,
    /// `node.groups`, added to every batch.
    groups: Vec<String>,
}

impl MetricsStage {
    /// The endpoint follows the settings. It is rebound only when the
    /// configured address changes (or the last bind failed), so a reload
    /// that keeps `listen` keeps the socket.
    async fn reconfigure(&mut self, shutdown: &CancellationToken) {
        let want = if self.settings.enabled {
            self.settings.listen
        } else {
            None
        };
        if self.endpoint.as_ref().map(|e| e.configured) != want
            || (want.is_some() && self.endpoint.is_none())
        {
            stop_endpoint(self.endpoint.take()).await;
            self.endpoint_error = None;
            if let Some(addr) = want {
                match server::bind(addr).await {
                    Ok((listener, local)) => {
                        let stop = shutdown.child_token();
                        let task = tokio::spawn(server::serve(
                            listener,
                            self.scrape_tx.clone(),
                            self.served.clone(),
                            stop.clone(),
                        ));
                        info!(listen = %local, "metrics endpoint listening");
                        self.endpoint = Some(Endpoint {
                            configured: addr,
                            addr: local,
                            stop,
                            task,
                        });
                    }
                    Err(source) => {
                        let e = MetricsError::Listen { addr, source };
                        warn!("{e}");
                        self.status.error(e.to_string());
                        self.endpoint_error = Some(Arc::new(e));
                    }
                }
            }
        }
        if !self.settings.enabled {
            self.status.set_state(
                StageState::Disabled,
                "switched off (metrics.enabled = false)",
            );
        }
    }

    async fn on_tick(&mut self) {
        let Some(snap) = self.snapshot().await else {
            return;
        };
        self.counters.queue(
            &self.reports,
            &snap,
            self.settings.interval,
            self.settings.encoding,
            &self.groups,
        );
        self.refresh_status(&snap);
    }

    async fn on_scrape(&mut self, req: server::ScrapeRequest) {
        // A failed collection drops `req`: the scrape gets a 503.
        if let Some(snap) = self.snapshot().await {
            let _ = req.reply.send(snap.clone());
            self.refresh_status(&snap);
        }
    }

    /// A snapshot, or `None` (logged, shown in status) if the collection
    /// itself failed; the next tick or scrape tries again.
    async fn snapshot(&mut self) -> Option<Arc<Snapshot>> {
        match self.collector.snapshot().await {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "metrics collection failed; retrying at the next tick");
                self.status.error(e.to_string());
                None
            }
        }
    }

    fn refresh_status(&self, snap: &Snapshot) {
        let failing = self.collector.failing();
        let listen = match (&self.endpoint, self.settings.listen) {
            (Some(e), _) => e.addr.to_string(),
            (None, Some(_)) => "unavailable".to_string(),
            (None, None) => "off".to_string(),
        };
        let c = &self.counters;
        let k3s = self
            .collector
            .last_probes
            .iter()
            .flatten()
            .map(|p| (format!("k3s_{}", p.endpoint), p.outcome.describe().into()))
            .collect();
        self.status.details(&MetricsDetails {
            series: snap.series() as u64,
            collections_total: self.collector.collections,
            collection_seconds: self.collector.last_seconds,
            batches_queued_total: c.queued,
            batches_refused_total: c.refused,
            last_batch_bytes: c.last_bytes,
            scrapes_total: self.served.load(Ordering::Relaxed),
            failing_collectors: failing.len() as u64,
            stuck_mounts: self.collector.stuck as u64,
            listen,
            k3s,
        });
        let every = humantime::format_duration(self.settings.interval);
        let mut summary = format!("{} series every {every}", snap.series());
        if let Some(e) = &self.endpoint {
            summary.push_str(&format!("; endpoint http://{}/metrics", e.addr));
        }
        if c.last_refused {
            summary.push_str(&format!(
                "; the outbox refused {} batches so far (full or not running)",
                c.refused
            ));
        }
        if let Some(e) = &self.endpoint_error {
            self.status
                .set_state(StageState::Degraded, format!("{summary}; {e}"));
        } else if !failing.is_empty() {
            self.status.set_state(
                StageState::Degraded,
                format!("{summary}; failing: {}", failing.join("; ")),
            );
        } else {
            self.status.set_state(StageState::Running, summary);
        }
    }
}

async fn stop_endpoint(endpoint: Option<Endpoint>) {
    if let Some(e) = endpoint {
        e.stop.cancel();
        let _ = e.task.await;
    }
}

/// Batches handed to the outbox, and their size.
#[derive(Debug, Default)]
struct BatchCounters {
    queued: u64,
    refused: u64,
    last_refused: bool,
    last_bytes: u64,
}

impl BatchCounters {
    /// Hand one batch to the outbox without waiting.
    fn queue(
        &mut self,
        reports: &crate::report::ReportSender,
        snap: &Snapshot,
        interval: Duration,
        encoding: Encoding,
        groups: &[String],
    ) {
        let now_ms = crate::unix_time::now_millis();
        let mut payload = batch::payload(snap, now_ms, interval.as_millis() as u64, encoding);
        // The node's groups, so a consumer can label the series (the fleet
        // bridge's `group` label) without a lookup.
        payload.insert("groups".into(), groups.into());
        self.last_bytes = serde_json::to_vec(&payload).map_or(0, |v| v.len() as u64);
        self.last_refused = !reports.try_send(Report::metrics(payload));
        if self.last_refused {
            self.refused += 1;
        } else {
            self.queued += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Class;
    use crate::status::StatusBoard;

    #[tokio::test]
    async fn a_full_outbox_input_refuses_batches_but_collection_goes_on() {
        // Capacity 1 and nobody draining: the outbox stage is stuck or gone.
        let (reports, _rx) = crate::report::channel(1);
        let mut collector = Collector::new(
            Roots::default(),
            HealthTargets::default(),
            select(&["-k3s".to_string()]),
            StatusBoard::new(),
            reports.dropped().clone(),
        );
        let mut counters = BatchCounters::default();
        for _ in 0..20 {
            let snap = collector.collect().await.unwrap();
            assert!(snap.series() > 100, "{} series", snap.series());
            counters.queue(
                &reports,
                &snap,
                Duration::from_secs(30),
                Encoding::DeflateBase64,
                &[],
            );
        }
        assert_eq!(collector.collections, 20);
        assert_eq!(counters.queued, 1);
        assert_eq!(counters.refused, 19);
        assert_eq!(reports.dropped().get(Class::Metrics), 19);
        assert!(counters.last_bytes > 0);
    }

    #[tokio::test]
    async fn a_snapshot_younger_than_a_second_answers_without_collecting() {
        let (reports, _rx) = crate::report::channel(1);
        let mut collector = Collector::new(
            Roots::default(),
            HealthTargets::default(),
            vec![CollectorId::Loadavg],
            StatusBoard::new(),
            reports.dropped().clone(),
        );
        let a = collector.snapshot().await.unwrap();
        let b = collector.snapshot().await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(collector.collections, 1);
    }
}
