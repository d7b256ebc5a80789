//! The sensor as a daemon stage: start the [`Sensor`], pass its events to
//! the rules engine, report kills and losses, refresh status, serve
//! `sensor.watch` on the control socket, apply config reloads.
//!
//! If the sensor cannot start (not root, no BTF, no tracefs, a required
//! probe missing), the stage shows as failed with the reason, sends a
//! `sensor_unavailable` node event, and keeps the events channel open until
//! shutdown, so the rules stage and everything else keep running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::SensorError;
use super::abi::Counter;
use super::alert;
use super::decode::{Decoded, DenyList, Refusal};
use super::enforce::Mode;
use super::proctable::BootClock;
use super::reader::{BATCH, Sensor};
use crate::config::SectionId;
use crate::control::{ControlError, Reply};
use crate::event::{Event, EventType};
use crate::reload::ConfigWatch;
use crate::stage::{self, Own, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StatusReporter, details};

/// How often status, counters and losses are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// Losses are reported at most this often (one node event sums them), so a
/// sustained overload cannot flood the outbox with loss reports.
const LOSS_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Housekeeping that need not run every tick: containers that stopped, the
/// boot-to-wall clock offset (NTP), the node's passwd.
const SLOW_TICKS: u32 = 30;

/// Decoded events waiting for `sensor watch` clients. A client that falls
/// further behind than this is told how many it missed.
const WATCH_CAPACITY: usize = 4096;

/// Items between a watcher's forwarding task and the control socket.
const WATCH_STREAM_CAPACITY: usize = 256;

/// The sensor stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "sensor",
    sections: &[SectionId::Sensor],
    key_details: SensorDetails::KEY,
};

// Names follow the status -> metrics mapping (metrics/agent.rs): counters
// end in `_total`, labelled families in `_by_<label>`.
details! {
    /// What the sensor shows in `status`.
    pub(crate) struct SensorDetails {
        pub(crate) probes_attached: u64,
        /// Optional probes this kernel lacks.
        pub(crate) [key] probes_missing: Vec<&'static str>,
        /// One counter family, `edge_agent_sensor_events_total{type}`; a
        /// scalar `events_total` beside it would take that name.
        pub(crate) events_total_by_type: Map<String, Value>,
        pub(crate) [key] lost_total: u64,
        pub(crate) kernel_events_total_by_outcome: Map<String, Value>,
        pub(crate) filtered_user_total: u64,
        pub(crate) cgroups_excluded: u64,
        pub(crate) [key] decode_errors_total: u64,
        pub(crate) process_table: u64,
        pub(crate) processes_evicted_total: u64,
        pub(crate) containers_known: u64,
        /// Addresses the DNS name cache holds (`fd.sip.name`).
        pub(crate) dns_addresses: u64,
        /// DNS answers the cache learned from.
        pub(crate) dns_answers_total: u64,
        pub(crate) [key] kills_total: u64,
        /// A line for people (numbers here would become metrics).
        pub(crate) [key] last_kill: Option<String>,
        /// How each deny list is enforced on this kernel: `off`, `lsm`,
        /// `kill` (exec only) or `unavailable: <why>`.
        pub(crate) deny_exec_mode: String,
        pub(crate) deny_open_mode: String,
        /// deny_open paths that do not exist (nothing to protect yet).
        pub(crate) deny_open_missing: Vec<String>,
        /// Refusals by the BPF-LSM hooks, by list (`exec`, `open`).
        pub(crate) [key] refused_total_by_list: Map<String, Value>,
        /// A line for people, like `last_kill`.
        pub(crate) [key] last_refusal: Option<String>,
        /// Seconds, to the millisecond (Prometheus wants base units).
        pub(crate) startup_seconds: f64,
    }
}

/// Start the sensor stage: its events go to `events` (the rules stage).
pub(crate) fn start(
    ctx: &StageContext,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> Stage {
    stage::start(ctx, &STAGE, |own| run(ctx.clone(), own, events, shutdown))
}

/// Run the sensor stage until `shutdown`.
async fn run(
    ctx: StageContext,
    Own {
        status,
        config: config_watch,
    }: Own,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> Result<(), SensorError> {
    let config = config_watch.current();
    if !config.sensor.enabled {
        // `enabled` is read only at start: nothing to follow until a restart.
        drop(config_watch);
        status.set_state(
            StageState::Disabled,
            "switched off ([sensor] enabled = false)",
        );
        shutdown.cancelled().await;
        return Ok(());
    }
    status.set_state(StageState::Starting, "loading eBPF programs");
    let sensor_config = config.sensor.clone();
    let started = tokio::task::spawn_blocking(move || Sensor::start(&sensor_config)).await;
    let sensor = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            drop(config_watch);
            return unavailable(&ctx, &status, events, shutdown, e).await;
        }
        Err(join) => {
            drop(config_watch);
            let e = SensorError::StartPanicked(join);
            return unavailable(&ctx, &status, events, shutdown, e).await;
        }
    };
    info!(
        probes = sensor.probes.attached.len(),
        missing = sensor.probes.missing.len(),
        startup_ms = sensor.startup.as_millis() as u64,
        processes = sensor.seeded,
        "sensor running"
    );
    if !sensor.probes.missing.is_empty() {
        ctx.reports
            .try_send(alert::degraded_event(&sensor.probes.missing));
    }
    let (watch_tx, _) = broadcast::channel::<Arc<Event>>(WATCH_CAPACITY);
    register_watch(&ctx, watch_tx.clone());
    let mut stage = Running {
        sensor,
        status,
        ctx: ctx.clone(),
        config: config_watch,
        events,
        watch: watch_tx,
        hostname: config.node.id.clone(),
        per_type: [0; EventType::ALL.len()],
        per_type_at_tick: [0; EventType::ALL.len()],
        last_tick: Instant::now(),
        ticks: 0,
        lost_seen: 0,
        lost_reported: 0,
        lost_report_at: Instant::now(),
        kills: 0,
        last_kill: None,
        refused: [0; 2],
        last_refusal: None,
        sensor_config: config.sensor.clone(),
        rules_gone: false,
    };
    stage.log_modes();
    stage.refresh_status();
    let result = stage.run(shutdown).await;
    ctx.router.unregister("sensor.watch");
    // Dropping the sensor detaches its probes, which takes seconds (an RCU
    // grace period per probe, see `loader`). Not on the runtime's workers,
    // which have the outbox to flush, and not waited for here: the daemon
    // finishes its shutdown meanwhile and the process waits for this task
    // before it exits (`cli::run`).
    let sensor = stage.sensor;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        drop(sensor);
        debug!(
            ms = started.elapsed().as_millis() as u64,
            "sensor probes detached"
        );
    });
    result
}

/// Start-up failed: say so everywhere, keep the channel open, wait.
async fn unavailable(
    ctx: &StageContext,
    status: &StatusReporter,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    e: SensorError,
) -> Result<(), SensorError> {
    let reason = e.to_string();
    error!(code = e.code(), error = %reason, "the eBPF sensor could not start; the other stages keep running");
    status.fail(reason.clone());
    status.set("error_code", e.code());
    ctx.reports
        .send(alert::unavailable_event(e.code(), &reason))
        .await;
    // The rules stage reads this channel; closing it early would look like
    // the end of the event stream.
    shutdown.cancelled().await;
    drop(events);
    Err(e)
}

/// `sensor.watch`: a live stream of decoded events for `edge-agent sensor watch`.
fn register_watch(ctx: &StageContext, watch: broadcast::Sender<Arc<Event>>) {
    ctx.router.register("sensor.watch", move |_params| {
        let mut rx = watch.subscribe();
        async move {
            let (tx, out) = mpsc::channel(WATCH_STREAM_CAPACITY);
            tokio::spawn(async move {
                loop {
                    let item = tokio::select! {
                        _ = tx.closed() => break,
                        r = rx.recv() => r,
                    };
                    let v = match item {
                        Ok(ev) => match serde_json::to_value(&*ev) {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                        Err(broadcast::error::RecvError::Lagged(n)) => json!({ "lagged": n }),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if tx.send(v).await.is_err() {
                        break;
                    }
                }
            });
            Ok::<_, ControlError>(Reply::Stream(out))
        }
    });
}

struct Running {
    sensor: Sensor,
    status: StatusReporter,
    ctx: StageContext,
    config: ConfigWatch,
    events: mpsc::Sender<Event>,
    watch: broadcast::Sender<Arc<Event>>,
    hostname: String,
    per_type: [u64; EventType::ALL.len()],
    per_type_at_tick: [u64; EventType::ALL.len()],
    last_tick: Instant,
    ticks: u32,
    /// Records lost, as the kernel's loss records reported them.
    lost_seen: u64,
    lost_reported: u64,
    lost_report_at: Instant,
    kills: u64,
    last_kill: Option<String>,
    /// Refusals by the BPF-LSM hooks: deny_exec, deny_open.
    refused: [u64; 2],
    last_refusal: Option<String>,
    /// The config the kernel runs with (its deny lists name the modes).
    sensor_config: crate::config::SensorConfig,
    /// The rules stage's receiver is gone (disabled): events are not sent.
    rules_gone: bool,
}

impl Running {
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), SensorError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = self.sensor.read(&mut batch) => {
                    r?;
                    for d in batch.drain(..) {
                        if !self.handle(d, &shutdown).await {
                            return Ok(());
                        }
                    }
                }
                _ = tick.tick() => self.on_tick(),
                update = self.config.changed() => {
                    // Only the filters and the deny lists can have changed
                    // live: the rest of [sensor] is read at start.
                    let result = self.sensor.apply(&update.config.sensor);
                    match &result {
                        Ok(()) => {
                            self.sensor_config = update.config.sensor.clone();
                            self.log_modes();
                            info!(generation = update.generation, "sensor filters and deny lists updated from the new config");
                        }
                        Err(e) => {
                            warn!(error = %e, "could not apply the new sensor config; the previous filters stay");
                            self.status.error(format!("reload: {e}"));
                        }
                    }
                    update.ticket.finish(result);
                }
            }
        }
    }

    /// Returns false when shutdown arrived while waiting on the rules stage.
    async fn handle(&mut self, d: Decoded, shutdown: &CancellationToken) -> bool {
        match d {
            Decoded::Loss(n) => self.lost_seen += n,
            Decoded::Filtered | Decoded::Learned => {}
            Decoded::Refused { event, refusal } => self.refuse(&event, &refusal),
            Decoded::Event { event, killed } => {
                self.per_type[event.evt.ty.index()] += 1;
                if killed {
                    self.kill(&event);
                }
                if self.watch.receiver_count() > 0 {
                    let _ = self.watch.send(Arc::new(event.clone()));
                }
                if !self.rules_gone {
                    // Waiting here lets the ring buffer absorb a burst; if the
                    // rules stage stays behind, the kernel counts the loss.
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        r = self.events.send(event) => {
                            if r.is_err() {
                                self.rules_gone = true;
                                info!("the rules stage does not read events; the sensor keeps running for status, kills and `sensor watch`");
                            }
                        }
                    }
                }
            }
        }
        true
    }

    fn kill(&mut self, event: &Event) {
        self.kills += 1;
        warn!(
            pid = event.proc.pid,
            exe = %event.proc.exepath,
            cmdline = %event.proc.cmdline,
            container = %event.container.id,
            "killed a denied executable at exec"
        );
        self.last_kill = Some(format!(
            "{} pid {} {} ({}) in {}",
            alert::falco_time(event.evt.time),
            event.proc.pid,
            event.proc.exepath,
            event.proc.cmdline,
            event.container.id
        ));
        if !self
            .ctx
            .reports
            .try_send(alert::kill_alert(event, &self.hostname))
        {
            warn!(
                "the kill alert could not be queued (the outbox is behind); it is counted as dropped"
            );
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let e = &mut self.sensor.enricher;
        e.procs.sweep(BootClock::boot_now_ns());
        if self.ticks.is_multiple_of(SLOW_TICKS) {
            for id in e.containers.sweep() {
                e.users.forget_container(&id);
            }
            e.users.refresh();
            e.set_clock(BootClock::now());
        }
        if let Err(e) = self.sensor.refresh_cgroups() {
            debug!(error = %e, "could not update the excluded cgroups");
            self.status.error(format!("exclude_cgroups: {e}"));
        }
        self.report_losses();
        self.refresh_status();
    }

    fn report_losses(&mut self) {
        let kernel_lost = self.sensor.counter(Counter::Lost);
        let lost = kernel_lost.max(self.lost_seen);
        if lost > self.lost_reported && self.lost_report_at.elapsed() >= LOSS_REPORT_EVERY {
            let over = self.lost_report_at.elapsed();
            warn!(
                lost = lost - self.lost_reported,
                total = lost,
                "kernel events were lost: the ring buffer was full"
            );
            self.ctx
                .reports
                .try_send(alert::loss_event(lost - self.lost_reported, lost, over));
            self.lost_reported = lost;
            self.lost_report_at = Instant::now();
        }
    }

    /// A BPF-LSM hook refused an exec or an open: count it, say it, alert.
    fn refuse(&mut self, event: &Event, refusal: &Refusal) {
        self.refused[refusal.list as usize] += 1;
        warn!(
            list = refusal.list.as_str(),
            pid = event.proc.pid,
            process = %event.proc.exepath,
            refused = %refusal.path,
            container = %event.container.id,
            "refused in the kernel (BPF-LSM)"
        );
        self.last_refusal = Some(format!(
            "{} {} {} by pid {} {} in {}",
            alert::falco_time(event.evt.time),
            refusal.list.as_str(),
            refusal.path,
            event.proc.pid,
            event.proc.exepath,
            event.container.id
        ));
        let rule = refusal
            .rule
            .and_then(|i| self.sensor_config.deny_open.get(i))
            .map(|d| d.path.display().to_string());
        if !self.ctx.reports.try_send(alert::refusal_alert(
            event,
            refusal,
            rule.as_deref(),
            &self.hostname,
        )) {
            warn!(
                "the refusal alert could not be queued (the outbox is behind); it is counted as dropped"
            );
        }
    }

    /// Say once how each deny list is enforced on this kernel.
    fn log_modes(&self) {
        let (exec, open) = self.sensor.kernel().modes(&self.sensor_config);
        if exec == Mode::Kill {
            warn!(
                "deny_exec: BPF-LSM is not available, so denied executables are killed with SIGKILL right after exec instead of being refused"
            );
        }
        if let Mode::Unavailable(why) = &open {
            warn!(reason = %why, "deny_open is NOT enforced on this kernel");
        }
        info!(
            deny_exec = %exec.as_status(),
            deny_open = %open.as_status(),
            "enforcement modes"
        );
    }

    fn refresh_status(&mut self) {
        let secs = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        // The rate is for the status line; metrics get counters (Prometheus
        // derives rates itself, and a gauge of a rate loses what happened
        // between two scrapes).
        let mut by_type = Map::new();
        let mut total_rate = 0.0;
        for ty in EventType::ALL {
            let i = ty.index();
            let d = self.per_type[i] - self.per_type_at_tick[i];
            total_rate += d as f64 / secs;
            if self.per_type[i] > 0 {
                by_type.insert(ty.as_str().into(), self.per_type[i].into());
            }
        }
        self.per_type_at_tick = self.per_type;
        let counters = self.sensor.kernel().counters();
        let kernel: Map<String, Value> = Counter::SHOWN
            .iter()
            .map(|(c, name)| ((*name).to_string(), Value::from(counters[*c as usize])))
            .collect();
        let lost = counters[Counter::Lost as usize].max(self.lost_seen);
        let probes = &self.sensor.probes;
        let e = &self.sensor.enricher;
        let (exec_mode, open_mode) = self.sensor.kernel().modes(&self.sensor_config);
        let refused_by_list = [DenyList::Exec, DenyList::Open]
            .into_iter()
            .map(|l| {
                (
                    l.as_str().to_string(),
                    Value::from(self.refused[l as usize]),
                )
            })
            .collect();
        self.status.details(&SensorDetails {
            probes_attached: probes.attached.len() as u64,
            probes_missing: probes.missing.iter().map(|(n, _)| *n).collect(),
            events_total_by_type: by_type,
            lost_total: lost,
            kernel_events_total_by_outcome: kernel,
            filtered_user_total: e.filtered_user,
            cgroups_excluded: self.sensor.excluded_cgroups() as u64,
            decode_errors_total: self.sensor.decode_errors,
            process_table: e.procs.len() as u64,
            processes_evicted_total: e.procs.evicted(),
            containers_known: e.containers.known() as u64,
            dns_addresses: e.dns.len() as u64,
            dns_answers_total: e.dns.answers,
            kills_total: self.kills,
            last_kill: self.last_kill.clone(),
            deny_exec_mode: exec_mode.as_status(),
            deny_open_mode: open_mode.as_status(),
            deny_open_missing: self.sensor.kernel().deny_open_missing().to_vec(),
            refused_total_by_list: refused_by_list,
            last_refusal: self.last_refusal.clone(),
            startup_seconds: self.sensor.startup.as_millis() as f64 / 1000.0,
        });
        let mut enforcing = Vec::new();
        for (list, mode) in [("deny_exec", &exec_mode), ("deny_open", &open_mode)] {
            match mode {
                Mode::Off => {}
                Mode::Unavailable(_) => enforcing.push(format!("{list} NOT ENFORCED")),
                m => enforcing.push(format!("{list} {}", m.as_status())),
            }
        }
        let enforcing = if enforcing.is_empty() {
            String::new()
        } else {
            format!("; {}", enforcing.join(", "))
        };
        let summary = format!(
            "{} probes attached, {:.0} events/s, {} lost{enforcing}{}",
            probes.attached.len(),
            total_rate,
            lost,
            if probes.missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; missing optional probes: {}",
                    probes
                        .missing
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let state = if probes.missing.is_empty() && !matches!(open_mode, Mode::Unavailable(_)) {
            StageState::Running
        } else {
            StageState::Degraded
        };
        self.status.set_state(state, summary);
    }
}
