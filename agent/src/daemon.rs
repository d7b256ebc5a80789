//! The daemon: wires the stages together and owns the process's life cycle.
//!
//! Owns signals (only here), sd_notify (READY, STATUS, WATCHDOG, STOPPING),
//! config reloads and the order of shutdown. Stages are tasks joined by
//! bounded channels, each started through the contract in [`crate::stage`];
//! the daemon decides only their order and wiring ([`start_sinks`],
//! [`start_producers`]): which channel goes to whom, and which cancellation
//! token stops which group.
//!
//! Shutdown happens in two phases so nothing in flight is lost: first the
//! producers (sensor, rules, metrics, bootstrap, control socket) are
//! cancelled and joined; then the sinks (outbox, uplink), which by then have
//! every report the producers made, are cancelled and flush. The whole of it
//! is bounded by [`SHUTDOWN_GRACE`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{AgentConfig, ConfigError, LoadedConfig};
use crate::control::{self, ControlError, Reply, Router};
use crate::logging::LogHandle;
use crate::outbox::Outbox;
use crate::reload::{Reloader, Submitted};
use crate::report::{self, DropCounters};
use crate::stage::{Stage, StageContext};
use crate::status::{
    AppliedNote, ConfigStatus, DaemonStatus, NodeStatus, PathsStatus, ReloadNote, STATUS_SCHEMA,
    StageState, StatusBoard, StatusDocument, dir_bytes, unix_now,
};
use crate::systemd::{Notifier, NotifyState};

/// How long SIGTERM may take end to end. systemd's `TimeoutStopSec=` in the
/// shipped unit is larger, so the agent always exits on its own terms.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Share of the grace period the producers get before the sinks are told to
/// flush; the sinks need the rest to commit and publish what they were given.
const PRODUCER_GRACE: Duration = Duration::from_secs(4);

/// glibc's allocator raises its mmap threshold (128 KiB at start) up to
/// 32 MiB each time a large mapped block is freed, after which blocks of
/// that size come from the arenas and stay there once freed. Start-up frees
/// many (aya's parsed BTF, the rule loader's documents), so fix the
/// threshold: large blocks are then mapped and unmapped every time. The
/// glibc build with Falco's three rule files loaded idled at 24.0-24.8 MiB
/// of RSS without this and 23.2-23.4 MiB with it (musl's allocator maps
/// large blocks anyway). Call before the runtime starts its threads.
pub(crate) fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator, under
    // its lock; the value is glibc's own default threshold.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Give the allocator's free memory back to the kernel once start-up is
/// done. Start-up peaks (aya parsing the kernel's BTF, rule compilation)
/// run on threads of their own, and glibc keeps what they freed in its
/// per-thread arenas: 0.6 MiB of RSS measured on the glibc build with
/// the shipped config. musl's allocator returns such memory itself, so
/// the static build has nothing to do here.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks
    // and madvises free pages away; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long READY=1 waits for the producers to leave `Starting`. Loading the
/// sensor and the rules takes well under a second; past this the agent
/// reports READY anyway (the stragglers show in STATUS= and the log) rather
/// than let systemd's `TimeoutStartSec=` (60 s in the unit) kill it. The
/// watchdog is fed meanwhile.
const READY_WAIT: Duration = Duration::from_secs(20);

/// How often systemd's one-line STATUS= is refreshed, so `systemctl status`
/// is at most this old. Each refresh is one datagram.
const STATUS_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// The state directory holds the outbox (alerts about this node) and undo
/// logs: readable by the agent's user and group only.
const STATE_DIR_MODE: u32 = 0o750;

/// What the process hands the daemon from outside the config file.
pub(crate) struct Supervision {
    /// The service manager's notify socket and watchdog (or none).
    pub(crate) notifier: Notifier,
    /// Changes the log level when a reload changes `log.level`.
    pub(crate) log: LogHandle,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error(transparent)]
    Control(#[from] control::ServerError),
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("stage {stage} failed, and the agent does not run without it: {message}")]
    StageFailed {
        stage: &'static str,
        message: String,
    },
    #[error("stages did not stop in the time their shutdown phase allows (producers {}s, all {}s) and were aborted: {}", PRODUCER_GRACE.as_secs(), SHUTDOWN_GRACE.as_secs(), .0.join(", "))]
    ShutdownTimeout(Vec<&'static str>),
}

/// What the daemon knows about itself, for `status`.
struct DaemonInfo {
    started: SystemTime,
    started_instant: Instant,
    config_path: PathBuf,
    last_reload: Option<(u64, Result<(), String>)>,
    /// The config in force, its generation, what waits for a restart, and
    /// what each stage made of the last config it was handed.
    reloader: Reloader,
    /// The fleet stage's summary (`fleet` in `status --json`).
    fleet: watch::Receiver<crate::fleet::summary::Summary>,
}

/// Run until SIGTERM/SIGINT. Returns an error only for failures that should
/// make systemd restart the agent.
pub(crate) async fn run(loaded: LoadedConfig, supervision: Supervision) -> Result<(), DaemonError> {
    let started_instant = Instant::now();
    let Supervision { notifier, log } = supervision;
    let LoadedConfig {
        config: local,
        path: config_path,
        text: local_text,
    } = loaded;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(STATE_DIR_MODE)
            .create(&local.paths.state_dir)
            .map_err(|source| DaemonError::StateDir {
                path: local.paths.state_dir.clone(),
                source,
            })?;
    }

    // The config in force: the local file with the fleet layers that
    // passed their trial laid over it.
    let fleet = start_fleet_config(&local, &local_text, &config_path)?;
    let config = fleet.start.effective.config.clone();

    // Signals first: a SIGTERM during start-up must not kill us half-way.
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let shutdown = CancellationToken::new();
    let producers_shutdown = shutdown.child_token();
    let board = StatusBoard::new();
    let router = Router::starting();
    let reloader = Reloader::new(config.clone());
    let sources = crate::fleet::sources::Sources::new(
        reloader.clone(),
        local_text,
        &config_path,
        fleet.start.layers.clone(),
        Some(log.clone()),
    );
    let (uplink_side, fleet_side) = crate::fleet::link::pair();
    let (reports, reports_rx) = report::channel(report::REPORT_CHANNEL_CAPACITY);

    let info = Arc::new(Mutex::new(DaemonInfo {
        started: SystemTime::now(),
        started_instant,
        config_path: config_path.clone(),
        last_reload: None,
        reloader: reloader.clone(),
        fleet: uplink_side.summary.clone(),
    }));
    register_daemon_methods(&router, &board, info.clone(), reports.dropped().clone());

    // Descriptors first: the local servers' caps leave a reserve for the
    // agent's own work whatever the service manager's limit.
    let nofile = crate::fds::raise_soft_limit();
    let budget = crate::fds::connection_budget(nofile)
        .saturating_sub(crate::metrics::MAX_ENDPOINT_CONNECTIONS);
    let control_limits = control::Limits::within(budget);
    if control_limits != control::Limits::default() {
        warn!(
            nofile,
            max_connections = control_limits.max_connections,
            "few open files allowed (LimitNOFILE); the control socket takes fewer connections"
        );
    }

    // Consumers before producers: the control socket and the sinks are up
    // before anything starts producing.
    let control_task = control::serve_with(
        &config.paths.control_socket(),
        &config.control.group,
        router.clone(),
        producers_shutdown.clone(),
        control_limits,
    )
    .await?;

    let ctx = StageContext {
        config: reloader.feed(),
        board: board.clone(),
        router: router.clone(),
        reports: reports.clone(),
    };
    let sinks = start_sinks(&ctx, reports_rx, shutdown.clone(), uplink_side).into_stages();
    let mut producers = start_producers(&ctx, producers_shutdown.clone());
    producers.push(crate::fleet::stage::start(
        &ctx,
        crate::fleet::stage::Inputs {
            side: fleet_side,
            sources: sources.clone(),
            state: fleet.state,
            notes: fleet.start.notes,
        },
        producers_shutdown.clone(),
    ));
    // The daemon's own sender must not keep the outbox input open at shutdown.
    drop(reports);
    drop(ctx);

    // The watchdog is fed from the loops below, which also handle signals: if
    // the runtime stops making progress, the pings stop and systemd restarts us.
    let watchdog = notifier.watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));

    // READY=1 means the producers have started (probes attached, rules
    // loaded), not merely that their tasks exist. The sinks do not gate it:
    // the outbox's input buffers, and the uplink connects whenever it can.
    let gating: Vec<&'static str> = producers.iter().map(|s| s.name).collect();
    let ready_by = Instant::now() + READY_WAIT;
    let stopped_early = loop {
        let changed = board.state_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let waiting = board.starting(&gating);
        if waiting.is_empty() {
            break None;
        }
        if Instant::now() >= ready_by {
            warn!(stages = %waiting.join(", "), "still starting after {}s; reporting READY anyway", READY_WAIT.as_secs());
            break None;
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(ready_by.into()) => {}
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&notifier, &[NotifyState::Watchdog]),
            _ = sigterm.recv() => break Some("SIGTERM"),
            _ = sigint.recv() => break Some("SIGINT"),
        }
    };

    // Every stage that serves control methods has registered them by now (or
    // is stuck past READY_WAIT): calls held for them get their answer.
    router.started();

    if let Some(signal) = stopped_early {
        info!("{signal} during start-up: shutting down");
    } else {
        info!(
            node = %config.node.id,
            fleet = %config.node.fleet,
            config = %config_path.display(),
            startup_ms = started_instant.elapsed().as_millis() as u64,
            "edge-agent started"
        );
        notify(
            &notifier,
            &[
                NotifyState::Ready,
                NotifyState::Status(&status_line(&board)),
            ],
        );
        release_free_heap();
    }

    let mut status_tick = tokio::time::interval(STATUS_LINE_INTERVAL);
    status_tick.reset(); // READY=1 just carried the first STATUS=.

    let mut essential_failed = None;
    while stopped_early.is_none() {
        let changed = board.state_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some((stage, message)) = failed_essential(&board) {
            error!(stage, error = %message, "a stage the agent cannot run without has failed: shutting down so that the service manager restarts the agent");
            essential_failed = Some(DaemonError::StageFailed { stage, message });
            break;
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = sigterm.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { info!("SIGINT: shutting down"); break; }
            _ = sighup.recv() => {
                reload(&config_path, &sources, &info, &notifier).await;
                notify(&notifier, &[NotifyState::Ready, NotifyState::Status(&status_line(&board))]);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&notifier, &[NotifyState::Watchdog]),
            _ = status_tick.tick() => notify(&notifier, &[NotifyState::Status(&status_line(&board))]),
        }
    }

    notify(
        &notifier,
        &[NotifyState::Stopping, NotifyState::Status("stopping")],
    );
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    producers_shutdown.cancel();
    let mut unfinished = join_all(producers, Instant::now() + PRODUCER_GRACE).await;
    let _ = tokio::time::timeout_at(deadline.into(), control_task).await;
    shutdown.cancel();
    unfinished.extend(join_all(sinks, deadline).await);
    if let Some(e) = essential_failed {
        return Err(e);
    }
    if unfinished.is_empty() {
        info!("edge-agent stopped");
        Ok(())
    } else {
        Err(DaemonError::ShutdownTimeout(unfinished))
    }
}

/// Stages the agent must not run on without: with the outbox gone nothing
/// is recorded durably, so a process that goes on only looks alive. When
/// one fails, the daemon stops and exits with an error, and the service
/// manager (`Restart=on-failure`) starts it again.
const ESSENTIAL_STAGES: [&str; 1] = [crate::outbox::STAGE.name];

/// The first essential stage that has failed, with what it said.
fn failed_essential(board: &StatusBoard) -> Option<(&'static str, String)> {
    ESSENTIAL_STAGES.into_iter().find_map(|name| {
        board
            .snapshot()
            .into_iter()
            .find(|(n, s)| n == name && s.state == StageState::Failed)
            .map(|(_, s)| (name, s.summary))
    })
}

/// The stages that consume reports: the outbox and, draining it, the
/// uplink. The outbox closes its file only after the uplink has handed back
/// its last acknowledgements.
///
/// When their shutdown token fires, the producers have already stopped; the
/// outbox then drains what is queued (`try_recv` until empty) and commits.
/// It must not wait for the channel to close: stages that report themselves
/// (the uplink's config results) hold senders until they end too.
///
/// The daemon starts both at once ([`start_sinks`]); the outbox bench fills
/// the outbox first and starts the uplink later, through the same calls.
pub struct Sinks {
    /// The outbox, for whoever reads or drains it.
    pub outbox: Outbox,
    stages: Vec<Stage>,
    /// Dropped by the uplink when it has stopped; held here until it starts.
    uplink_done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sinks {
    /// Start the outbox on `reports` (the receiving end of `ctx.reports`).
    pub fn start_outbox(
        ctx: &StageContext,
        reports: tokio::sync::mpsc::Receiver<report::Report>,
        shutdown: CancellationToken,
    ) -> Sinks {
        let (uplink_done, uplink_stopped) = tokio::sync::oneshot::channel();
        let (outbox, stage) = crate::outbox::start(ctx, reports, shutdown, uplink_stopped);
        Sinks {
            outbox,
            stages: vec![stage],
            uplink_done: Some(uplink_done),
        }
    }

    /// Start the uplink, draining the outbox, with `fleet` its joint with
    /// the fleet stage ([`crate::fleet::link::UplinkSide::detached`] when
    /// there is none). Once only.
    pub fn start_uplink(
        &mut self,
        ctx: &StageContext,
        shutdown: CancellationToken,
        fleet: crate::fleet::link::UplinkSide,
    ) {
        let done = self.uplink_done.take().expect("the uplink is started once");
        let uplink = crate::uplink::start(ctx, self.outbox.clone(), shutdown, done, fleet);
        // The uplink stops first: the outbox waits for its acknowledgements.
        self.stages.insert(0, uplink);
    }

    /// The running stages, in the order to join them. Without an uplink,
    /// the outbox closes its file at shutdown without waiting for one.
    pub fn into_stages(self) -> Vec<Stage> {
        self.stages
    }
}

/// The outbox and the uplink, as the daemon runs them.
pub(crate) fn start_sinks(
    ctx: &StageContext,
    reports: tokio::sync::mpsc::Receiver<report::Report>,
    shutdown: CancellationToken,
    fleet: crate::fleet::link::UplinkSide,
) -> Sinks {
    let mut sinks = Sinks::start_outbox(ctx, reports, shutdown.clone());
    sinks.start_uplink(ctx, shutdown, fleet);
    sinks
}

/// The fleet side of the config at start: the state directory's record and
/// the layers the agent starts with.
struct FleetStart {
    state: crate::fleet::state::FleetState,
    start: crate::fleet::held::Start,
}

fn start_fleet_config(
    local: &AgentConfig,
    text: &str,
    path: &std::path::Path,
) -> Result<FleetStart, DaemonError> {
    let (state, note) = if local.fleet.enabled() {
        crate::fleet::state::Dir::new(&local.paths.state_dir).load()
    } else {
        (crate::fleet::state::FleetState::default(), None)
    };
    let mut start = crate::fleet::held::start(text, path, local, &state)?;
    start.notes.extend(note);
    for note in &start.notes {
        warn!("fleet: {note}");
    }
    if !start.layers.is_empty() {
        let layers: Vec<String> = start.layers.iter().map(|l| l.label()).collect();
        info!(layers = %layers.join(", "), "fleet layers in force");
    }
    Ok(FleetStart { state, start })
}

/// Decoded events between the sensor and the rules engine. At a burst of
/// 100,000 events/s this is about 80 ms of slack; the rules engine evaluates
/// an event in about a microsecond, so a full channel means a real overload,
/// which the sensor counts as dropped events.
pub(crate) const EVENT_CHANNEL_CAPACITY: usize = 8192;

/// The stages that produce reports: sensor, rules, metrics, bootstrap. The
/// sensor's events go to the rules engine.
pub(crate) fn start_producers(ctx: &StageContext, shutdown: CancellationToken) -> Vec<Stage> {
    let (events_tx, events_rx) =
        tokio::sync::mpsc::channel::<crate::event::Event>(EVENT_CHANNEL_CAPACITY);
    vec![
        crate::sensor::start(ctx, events_tx, shutdown.clone()),
        crate::bootstrap::start(ctx, shutdown.clone()),
        crate::metrics::start(ctx, shutdown.clone()),
        crate::rules::start(ctx, events_rx, shutdown),
    ]
}

/// Wait for stages until `deadline`; return the names of those still running.
async fn join_all(stages: Vec<Stage>, deadline: Instant) -> Vec<&'static str> {
    let mut unfinished = Vec::new();
    for stage in stages {
        let abort = stage.task.abort_handle();
        if tokio::time::timeout_at(deadline.into(), stage.task)
            .await
            .is_err()
        {
            warn!(stage = stage.name, "stage did not stop in time");
            abort.abort();
            unfinished.push(stage.name);
        }
    }
    unfinished
}

/// SIGHUP: read the file again; if it is valid and the fleet layers in
/// force still merge with it, submit the merged config; otherwise keep the
/// running config and say why.
async fn reload(
    path: &std::path::Path,
    sources: &crate::fleet::sources::Sources,
    info: &Mutex<DaemonInfo>,
    notifier: &Notifier,
) {
    info!(config = %path.display(), "SIGHUP: reloading config");
    let mut reloading = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        reloading.push(now);
    }
    notify(notifier, &reloading);
    let result = AgentConfig::load(path)
        .map_err(|e| render_config_error(&e))
        .and_then(|loaded| {
            sources.set_local(loaded.text).map_err(|e| match e {
                crate::fleet::overlay::EffectiveError::Local(e) => render_config_error(&e),
                crate::fleet::overlay::EffectiveError::Layers(problems) => format!(
                    "{}: the fleet layers in force no longer make a valid config with this file: {}",
                    path.display(),
                    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                ),
            })
        });
    let mut info = info.lock().await;
    match result {
        Ok(composed) => {
            let submitted = composed.submitted;
            let diff = &submitted.diff;
            for key in &diff.pending_restart {
                warn!(key, "changed, but takes effect only after a restart");
            }
            info.last_reload = Some((unix_now(), Ok(())));
            info!(
                generation = submitted.generation,
                changed = %diff.changed.join(", "),
                stages = %submitted.woken.join(", "),
                "config reloaded"
            );
            tokio::spawn(log_outcomes(sources.reloader().clone(), submitted));
        }
        Err(reason) => {
            error!(error = %reason, "the new config was refused; the running config stays in force");
            info.last_reload = Some((unix_now(), Err(reason)));
        }
    }
}

/// How long the journal waits for the stages' answers to a reload; past it
/// the stages that have not answered are named in a warning.
const RELOAD_ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Log what each woken stage made of a reloaded config.
async fn log_outcomes(reloader: Reloader, submitted: Submitted) {
    let g = submitted.generation;
    match tokio::time::timeout(RELOAD_ANSWER_WAIT, reloader.outcomes(&submitted)).await {
        Ok(outcomes) => {
            for o in outcomes {
                match o.result {
                    Ok(()) => info!(stage = o.stage, generation = g, "applied the new config"),
                    Err(e) => {
                        warn!(stage = o.stage, generation = g, error = %e, "did not apply the new config");
                    }
                }
            }
        }
        Err(_) => {
            let applied = reloader.applied();
            let late: Vec<&str> = submitted
                .woken
                .iter()
                .filter(|s| applied.get(*s).is_none_or(|a| a.generation < g))
                .copied()
                .collect();
            warn!(
                generation = g,
                stages = %late.join(", "),
                "these stages did not apply the new config within {}s",
                RELOAD_ANSWER_WAIT.as_secs()
            );
        }
    }
}

/// Config errors can span several lines; logs want one.
fn render_config_error(e: &ConfigError) -> String {
    e.to_string().replace('\n', "; ")
}

fn notify(notifier: &Notifier, states: &[NotifyState]) {
    if let Err(e) = notifier.notify(states) {
        warn!(error = %e, "sd_notify failed");
    }
}

/// systemd's one-line STATUS=: each stage and its state.
fn status_line(board: &StatusBoard) -> String {
    let parts: Vec<String> = board
        .snapshot()
        .iter()
        .map(|(n, s)| format!("{n} {}", s.state.as_str()))
        .collect();
    if parts.is_empty() {
        "running".into()
    } else {
        parts.join(", ")
    }
}

fn register_daemon_methods(
    router: &Router,
    board: &StatusBoard,
    info: Arc<Mutex<DaemonInfo>>,
    dropped: Arc<DropCounters>,
) {
    router.register("ping", |_| async { Ok(Reply::Value(json!("pong"))) });
    let board = board.clone();
    router.register("status", move |_| {
        let board = board.clone();
        let info = info.clone();
        let dropped = dropped.clone();
        async move {
            let info = info.lock().await;
            let doc = status_document(&info, &board, &dropped);
            let doc = serde_json::to_value(doc)
                .map_err(|e| ControlError::new("internal", e.to_string()))?;
            Ok::<_, ControlError>(Reply::Value(doc))
        }
    });
}

/// The `status --json` document of a running daemon (see
/// [`StatusDocument`] for what each key means). The daemon knows the
/// config file was valid when it last read it; `status` re-checks the file
/// on disk and overwrites `config.valid` and `config.error`.
fn status_document(
    info: &DaemonInfo,
    board: &StatusBoard,
    dropped: &DropCounters,
) -> StatusDocument {
    let c = info.reloader.current();
    let applied = info
        .reloader
        .applied()
        .into_iter()
        .map(|(stage, a)| {
            let note = AppliedNote {
                generation: a.generation,
                at: a.at,
                ok: a.result.is_ok(),
                error: a.result.as_ref().err().map(ToString::to_string),
            };
            (stage.to_string(), note)
        })
        .collect();
    let last_reload = info.last_reload.as_ref().map(|(at, r)| ReloadNote {
        at: *at,
        ok: r.is_ok(),
        error: r.as_ref().err().cloned(),
    });
    StatusDocument {
        schema: STATUS_SCHEMA,
        daemon: DaemonStatus {
            running: true,
            pid: Some(std::process::id()),
            version: crate::VERSION.to_string(),
            started_at: Some(
                info.started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            uptime_secs: Some(info.started_instant.elapsed().as_secs()),
            reason: None,
        },
        node: Some(NodeStatus {
            id: c.node.id.clone(),
            fleet: c.node.fleet.clone(),
            groups: c.node.groups.clone(),
        }),
        config: ConfigStatus {
            path: info.config_path.clone(),
            valid: true,
            error: None,
            last_reload,
            pending_restart: info.reloader.pending_restart(),
            generation: Some(info.reloader.generation()),
            applied: Some(applied),
        },
        paths: PathsStatus {
            state_dir: c.paths.state_dir.clone(),
            state_dir_exists: c.paths.state_dir.is_dir(),
            state_dir_bytes: dir_bytes(&c.paths.state_dir),
            runtime_dir: c.paths.runtime_dir.clone(),
            control_socket: c.paths.control_socket(),
        },
        reports_dropped_before_outbox: Some(
            crate::report::Class::ALL
                .into_iter()
                .map(|cl| (cl, dropped.get(cl)))
                .collect(),
        ),
        stages: board.stages(),
        fleet: Some(info.fleet.borrow().clone()),
        more: serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_outbox_is_an_essential_stage_failure_and_a_failed_producer_is_not() {
        let board = StatusBoard::new();
        let outbox = board.register("outbox");
        let sensor = board.register("sensor");
        outbox.set_state(StageState::Running, "open");
        sensor.fail("no BTF");
        assert_eq!(failed_essential(&board), None);
        outbox.fail("the outbox thread panicked too often: boom");
        let (stage, message) = failed_essential(&board).expect("the outbox failed");
        assert_eq!(stage, "outbox");
        assert!(message.contains("panicked too often"), "{message}");
    }

    /// CPU time (ns) used so far by this process's threads named `name`.
    fn cpu_ns_of_threads(name: &str) -> u64 {
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                let sched =
                    std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                total += sched
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }

    /// The stages' threads, so the CPU they use can be told apart from the
    /// other tests running in this process.
    const THREADS: &str = "ea-idle-stages";

    /// A stage that treated a closed config channel as a change would loop
    /// on it: that is CPU burnt with nothing to do.
    const IDLE_CPU_BOUND: Duration = Duration::from_millis(150);
    const IDLE_WINDOW: Duration = Duration::from_secs(3);

    #[test]
    fn every_stage_keeps_running_idle_once_the_config_channel_closes_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yaml"),
            "- rule: Shell\n  desc: x\n  condition: evt.type = execve and proc.name = sh\n  output: shell\n  priority: WARNING\n",
        )
        .unwrap();
        let text = format!(
            "[node]\nid = \"idle\"\n[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n[sensor]\nenabled = false\n[metrics]\nlisten = \"\"\ninterval = \"1h\"\n[rules]\nfiles = [\"r.yaml\"]\n",
            dir.path().join("state").display(),
            dir.path().join("run").display()
        );
        let config = AgentConfig::from_toml(&text, &dir.path().join("agent.toml")).unwrap();
        std::fs::create_dir_all(&config.paths.state_dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREADS)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let reloader = Reloader::new(config);
            let board = StatusBoard::new();
            let (reports, reports_rx) = report::channel(64);
            let ctx = StageContext {
                config: reloader.feed(),
                board: board.clone(),
                router: Router::new(),
                reports,
            };
            let shutdown = CancellationToken::new();
            let mut stages = start_sinks(
                &ctx,
                reports_rx,
                shutdown.clone(),
                crate::fleet::link::UplinkSide::detached(),
            )
            .into_stages();
            stages.extend(start_producers(&ctx, shutdown.clone()));
            drop(ctx);
            let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !board.starting(&names).is_empty() {
                assert!(Instant::now() < deadline, "{:?}", board.snapshot());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            drop(reloader);
            let before = cpu_ns_of_threads(THREADS);
            tokio::time::sleep(IDLE_WINDOW).await;
            let used = Duration::from_nanos(cpu_ns_of_threads(THREADS) - before);
            assert!(
                used < IDLE_CPU_BOUND,
                "the stages used {used:?} of CPU in {IDLE_WINDOW:?} with nothing to do: {:?}",
                board.snapshot()
            );

            shutdown.cancel();
            let unfinished = join_all(stages, Instant::now() + SHUTDOWN_GRACE).await;
            assert!(unfinished.is_empty(), "still running: {unfinished:?}");
            for (name, st) in board.snapshot() {
                assert!(
                    matches!(st.state, StageState::Stopped | StageState::Disabled),
                    "{name}: {st:?}"
                );
            }
        });
    }
}
