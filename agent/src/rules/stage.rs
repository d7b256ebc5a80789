//! The rules stage: events in, alerts out, reloads without a gap.
//!
//! Owns the task that reads the sensor's event channel and feeds the
//! [`Engine`], sends alerts to the outbox (never waiting: a full outbox
//! input is counted by the [`ReportSender`]) and to the node's own sinks
//! (history, `rules.json_file`, journald: [`AlertSinks`], never waiting
//! either), and reports suppressed counts as a node event. Serves
//! `rules.list`, `rules.history` and `rules.follow_alerts` on the control socket.
//! Rule files are re-read when a new config names `[rules]` and when they
//! change on disk; the new set is loaded and compiled on a blocking thread
//! while events keep flowing, then swapped in whole. A new set with errors
//! is refused and the running one kept, with the reasons in the log and in
//! status. SIGHUP reopens `rules.json_file` (logrotate's postrotate). Never
//! blocks the event loop on disk or on the outbox.
//!
//! Every set loaded is on trial for [`guard::TRIAL`]: a set the daemon died
//! of (a fatal signal while it was compiled or had just been put in force)
//! is held back at the next start, and the last good set runs instead until
//! the files change ([`guard`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{AgentConfig, SectionId};
use crate::control::{ControlError, Reply, Router};
use crate::event::Event;
use crate::reload::{ApplyTicket, ConfigWatch};
use crate::report::{Report, ReportSender};
use crate::stage::{self, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StageStatus, StatusReporter, details, unix_now};
use crate::unix_time;

use super::engine::{Alert, Engine, Limits};
use super::guard::{self, Guard, HeldBack, Trial};
use super::history::Query;
use super::loader::{self, Loaded, Severity, Source};
use super::sinks::{AlertSinks, Settings as SinkSettings, SinkDetails};

/// How often rule files are checked for changes (a few `stat` calls).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How often status details are refreshed; cheap, and a technician reading
/// `status` sees counts at most this old.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// How often suppressed-alert counts are reported to the fleet: often enough
/// to notice a storm, rarely enough not to become one.
const SUPPRESSION_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Events taken from the channel per wake-up before yielding to the other
/// branches of the loop (reloads, control requests, shutdown).
const EVENT_BATCH: usize = 256;

/// Control requests waiting for the stage; `rules list` is interactive and rare.
const CONTROL_CAPACITY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StageError {
    #[error("the rules loader thread failed: {0}")]
    Loader(#[from] tokio::task::JoinError),
    /// A new rule set with errors, refused: the running set stays.
    #[error("the new rule set has {total} errors and was refused; the running rules stay in force: {}", .errors.join("; "))]
    Refused {
        total: usize,
        /// The first [`MAX_ERRORS_SHOWN`].
        errors: Vec<String>,
    },
    #[error("cannot start the alert sink thread: {0}")]
    Sinks(#[source] std::io::Error),
}

/// Errors of a refused rule set kept for status and the reload's answer;
/// the log has them all.
const MAX_ERRORS_SHOWN: usize = 20;

enum ControlMsg {
    List(oneshot::Sender<Value>),
}

/// The stage's periodic work.
#[derive(Debug, Clone, Copy)]
struct Timers {
    file_check: Duration,
    status: Duration,
    suppression_report: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            file_check: FILE_CHECK_INTERVAL,
            status: STATUS_INTERVAL,
            suppression_report: SUPPRESSION_REPORT_INTERVAL,
        }
    }
}

/// The rules stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "rules",
    sections: &[SectionId::Rules],
    key_details: RulesDetails::KEY,
};

details! {
    /// What the rules stage shows in `status` (the engine fills all but
    /// `last_reload`: [`Engine::status_details`]).
    pub(crate) struct RulesDetails {
        /// Per file: `path`, `sha256` (first 16 hex digits),
        /// `engine_version`, `rules`.
        pub(crate) files: Vec<Value>,
        pub(crate) rules_loaded: u64,
        pub(crate) [key] rules_failed: u64,
        pub(crate) rules_skipped: u64,
        pub(crate) rules_disabled: u64,
        /// The first 20 errors of the set in force.
        pub(crate) [key] load_errors: Vec<String>,
        pub(crate) events_evaluated: u64,
        /// The rule set held back because the daemon died on trial of it
        /// (null when none is).
        pub(crate) [key] held_back: Option<HeldBackNote>,
        /// When the set in force ends its trial (unix seconds; null when
        /// it has ended).
        pub(crate) trial_ends: Option<u64>,
        /// Per priority with alerts.
        pub(crate) [key] alerts_last_hour: Map<String, Value>,
        pub(crate) alerts_total: u64,
        pub(crate) [key] alerts_suppressed: u64,
        /// The five rules with the most hits.
        pub(crate) top_hits: Map<String, Value>,
        pub(crate) last_reload: Option<ReloadNote>,
        /// The node's own alert sinks (history, json_file, journald).
        #[serde(flatten)]
        pub(crate) alert_sinks: SinkDetails,
    }
}

/// Start the rules stage on `events`.
pub(crate) fn start(
    ctx: &StageContext,
    events: mpsc::Receiver<Event>,
    shutdown: CancellationToken,
) -> Stage {
    start_with(ctx, events, shutdown, Timers::default())
}

fn start_with(
    ctx: &StageContext,
    events: mpsc::Receiver<Event>,
    shutdown: CancellationToken,
    timers: Timers,
) -> Stage {
    stage::start(ctx, &STAGE, |own| {
        let (ctl_tx, ctl_rx) = mpsc::channel(CONTROL_CAPACITY);
        register_list(ctx, ctl_tx);
        let sinks = AlertSinks::start(SinkSettings::from_config(&own.config.current()));
        if let Ok(sinks) = &sinks {
            register_alert_methods(&ctx.router, sinks);
        }
        Task {
            sinks: Some(sinks),
            config: own.config,
            reports: ctx.reports.clone(),
            status: own.status,
            events,
            control: ctl_rx,
            shutdown,
            timers,
        }
        .run()
    })
}

/// `rules.list`: asked of the running task, which owns the engine.
fn register_list(ctx: &StageContext, ctl_tx: mpsc::Sender<ControlMsg>) {
    ctx.router.register("rules.list", move |_| {
        let ctl_tx = ctl_tx.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            ctl_tx
                .send(ControlMsg::List(tx))
                .await
                .map_err(|_| ControlError::unavailable("the rules stage is not running"))?;
            let v = rx
                .await
                .map_err(|_| ControlError::unavailable("the rules stage stopped"))?;
            Ok(Reply::Value(v))
        }
    });
}

struct Task {
    /// Taken by [`Task::run`]; an error ends the stage there.
    sinks: Option<std::io::Result<AlertSinks>>,
    config: ConfigWatch,
    reports: ReportSender,
    status: StatusReporter,
    events: mpsc::Receiver<Event>,
    control: mpsc::Receiver<ControlMsg>,
    shutdown: CancellationToken,
    timers: Timers,
}

/// `held_back` in status: the set, why, and what runs instead.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct HeldBackNote {
    /// The set's SHA-256 (first 16 hex digits).
    pub(crate) sha256: String,
    pub(crate) files: Vec<PathBuf>,
    /// The fatal signals the daemon died of on its trial.
    pub(crate) signals: Vec<String>,
    /// When its trial began (unix seconds).
    pub(crate) tried: u64,
    /// What runs instead.
    pub(crate) running: String,
    pub(crate) what_to_do: String,
}

/// What the crash guard knows while the stage runs.
struct Guarded {
    guard: Guard,
    /// The held-back set and what runs instead of it.
    held: Option<(HeldBack, String)>,
    /// The set in force while it is on trial, with its files' texts (kept
    /// as the last good set once it ends) and when it ends.
    trial: Option<(Trial, Vec<Source>, tokio::time::Instant)>,
}

/// What one load read and made of it (on a blocking thread). Made once
/// per load and moved, never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Loaded {
        loaded: Loaded,
        sources: Vec<Source>,
        trial: Option<Trial>,
    },
    /// The files are the held-back set: not loaded.
    HeldBack,
}

/// Read the files; load them on trial unless they are the held-back set.
/// A held-back set that differs from the files is released.
fn attempt(guard: &Guard, files: &[PathBuf], held: Option<&HeldBack>) -> Attempt {
    let (sources, problems) = loader::read_paths(files);
    let set = guard::set_id(&sources);
    match held {
        Some(h) if h.set == set => return Attempt::HeldBack,
        Some(_) => match guard.release() {
            Ok(()) => info!("the rule files changed: the held-back rule set is released"),
            Err(e) => warn!(error = %e, "cannot forget the held-back rule set"),
        },
        None => {}
    }
    let paths = sources.iter().map(|s| s.path.clone()).collect();
    let trial = guard
        .begin_trial(&set, paths)
        .map_err(|e| warn!(error = %e, "cannot put the rule set on trial: a crash on it would not be noticed"))
        .ok();
    let loaded = loader::load_read(sources.clone(), problems);
    Attempt::Loaded {
        loaded,
        sources,
        trial,
    }
}

/// Cheap identity of the rule files: names, sizes and modification times.
fn fingerprint(patterns: &[PathBuf]) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let (files, _) = loader::expand_files(patterns);
    files
        .into_iter()
        .map(|p| {
            let md = std::fs::metadata(&p).ok();
            let len = md.as_ref().map_or(u64::MAX, |m| m.len());
            let mtime = md.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}

/// The result of the last reload, for status.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct ReloadNote {
    at: u64,
    /// What asked for it: the config's submitter ("sighup", "fleet") or
    /// "file change".
    trigger: String,
    ok: bool,
    errors: Vec<String>,
}

/// Rule loads: at most one runs (on a blocking thread) while events keep
/// flowing; one asked for meanwhile runs after it, so the last change is
/// always read. Each config that asked is answered with the outcome of the
/// load that read it.
#[derive(Default)]
struct Reloads {
    running: Option<(tokio::task::JoinHandle<Attempt>, Asked)>,
    next: Option<Asked>,
}

/// Who asked for a load.
#[derive(Default)]
struct Asked {
    /// The config's submitter ("sighup", "fleet") or "file change".
    trigger: String,
    tickets: Vec<ApplyTicket>,
}

impl Reloads {
    fn ask(
        &mut self,
        files: &[PathBuf],
        guarded: &Guarded,
        trigger: &str,
        ticket: Option<ApplyTicket>,
    ) {
        let asked = self.next.get_or_insert_with(Asked::default);
        asked.trigger = trigger.to_string();
        asked.tickets.extend(ticket);
        if self.running.is_none() {
            self.start(files, guarded);
        }
    }

    fn start(&mut self, files: &[PathBuf], guarded: &Guarded) {
        if let Some(asked) = self.next.take() {
            let files = files.to_vec();
            let guard = guarded.guard.clone();
            let held = guarded.held.as_ref().map(|(h, _)| h.clone());
            let task = tokio::task::spawn_blocking(move || attempt(&guard, &files, held.as_ref()));
            self.running = Some((task, asked));
        }
    }

    /// The running load's result, once it is done (pending when none runs).
    async fn done(&mut self) -> (Result<Attempt, tokio::task::JoinError>, Asked) {
        let Some((task, _)) = &mut self.running else {
            return std::future::pending().await;
        };
        let loaded = task.await;
        let (_, asked) = self.running.take().expect("a load was running");
        (loaded, asked)
    }
}

/// The first load: the files on trial, or, when they are the set held
/// back, the last good set (or none).
async fn first_load(files: Vec<PathBuf>, guard: Guard) -> Result<(Loaded, Guarded), StageError> {
    Ok(tokio::task::spawn_blocking(move || {
        let held = match guard.recover() {
            Ok((held, unproven)) => {
                if let Some(n) = unproven {
                    warn!(
                        set = n.set.get(..16).unwrap_or(""),
                        "the daemon stopped during the trial of the rule set without a fatal signal (killed or powered off): loading it again"
                    );
                }
                held
            }
            Err(e) => {
                error!(error = %e, "cannot read the rule crash guard's files: loading the configured rules");
                None
            }
        };
        let mut guarded = Guarded {
            guard: guard.clone(),
            held: None,
            trial: None,
        };
        match attempt(&guard, &files, held.as_ref()) {
            Attempt::Loaded {
                loaded,
                sources,
                trial,
            } => {
                guarded.trial = trial.map(|t| (t, sources, tokio::time::Instant::now() + guard::TRIAL));
                (loaded, guarded)
            }
            Attempt::HeldBack => {
                let held = held.expect("held back only when a set is");
                let (loaded, running) = match guard.last_good() {
                    Ok(Some(good)) if good.set != held.set => {
                        let n = good.files.len();
                        let at = good.proven;
                        (
                            loader::load_read(good.sources(), Vec::new()),
                            format!("the last good rule set ({n} files, proven at unix time {at}, kept in the state directory)"),
                        )
                    }
                    Ok(_) => (loader::load_read(Vec::new(), Vec::new()), "no rules (there is no earlier good set)".to_string()),
                    Err(e) => (loader::load_read(Vec::new(), Vec::new()), format!("no rules (the last good set cannot be read: {e})")),
                };
                error!(
                    set = held.set.get(..16).unwrap_or(""),
                    signals = held.signals.join(", "),
                    files = ?held.files,
                    running,
                    "rule set held back: the daemon died of a fatal signal on its trial; change the rule files to load them again"
                );
                guarded.held = Some((held, running));
                (loaded, guarded)
            }
        }
    })
    .await?)
}

impl Task {
    async fn run(mut self) -> Result<(), StageError> {
        let sinks = self
            .sinks
            .take()
            .expect("run once")
            .map_err(StageError::Sinks)?;
        let cfg = self.config.current();
        let mut files = cfg.rules.files.clone();
        let mut fp = fingerprint(&files);
        guard::install_fatal_signal_note();
        let (loaded, mut guarded) =
            first_load(files.clone(), Guard::new(&cfg.paths.state_dir)).await?;
        if let Some((held, running)) = &guarded.held {
            self.reports.try_send(held_back_event(held, running));
        }
        log_problems(&loaded, "loaded");
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| cfg.node.id.clone());
        let mut engine = Engine::new(
            loaded,
            Limits::from(&cfg.rules),
            hostname,
            unix_time::now_nanos(),
        );
        let mut last_reload: Option<ReloadNote> = None;
        self.refresh_status(&engine, &last_reload, &sinks, &guarded);
        // SIGHUP reopens rules.json_file even when the config did not change
        // (then the reload contract does not wake this stage). None where
        // signals cannot be watched: moves are still noticed by the sinks.
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();

        let mut reloads = Reloads::default();
        let mut events_open = true;
        let mut file_tick = tokio::time::interval(self.timers.file_check);
        let mut status_tick = tokio::time::interval(self.timers.status);
        let mut suppress_tick = tokio::time::interval(self.timers.suppression_report);
        file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alerts = Vec::new();

        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                (attempt, asked) = reloads.done() => {
                    let (note, outcome) = apply_attempt(&mut engine, &mut guarded, attempt?, asked.trigger);
                    last_reload = Some(note);
                    self.refresh_status(&engine, &last_reload, &sinks, &guarded);
                    let outcome = outcome.map_err(Arc::new);
                    for ticket in asked.tickets {
                        ticket.finish(outcome.clone());
                    }
                    reloads.start(&files, &guarded);
                }
                _ = tokio::time::sleep_until(guarded.trial.as_ref().map_or_else(tokio::time::Instant::now, |t| t.2)), if guarded.trial.is_some() => {
                    let (trial, sources, _) = guarded.trial.take().expect("on trial");
                    let set = trial.note.set.get(..16).unwrap_or("").to_string();
                    match guarded.guard.proven(trial, &sources) {
                        Ok(()) => info!(set, "the rule set ran through its trial: it is the last good set now"),
                        Err(e) => warn!(set, error = %e, "cannot keep the rule set as the last good one"),
                    }
                    self.refresh_status(&engine, &last_reload, &sinks, &guarded);
                }
                update = self.config.changed() => {
                    let cfg = update.config;
                    engine.set_limits(Limits::from(&cfg.rules));
                    sinks.reconfigure(SinkSettings::from_config(&cfg));
                    // Rule files are read again even when their names did not
                    // change: a submitter names [rules] when their content did.
                    files = cfg.rules.files.clone();
                    fp = fingerprint(&files);
                    reloads.ask(&files, &guarded, &update.origin, Some(update.ticket));
                }
                ev = self.events.recv(), if events_open => {
                    match ev {
                        Some(ev) => {
                            let now = unix_time::now_nanos();
                            engine.process(&ev, now, &mut alerts);
                            let mut n = 1;
                            while n < EVENT_BATCH {
                                match self.events.try_recv() {
                                    Ok(ev) => engine.process(&ev, now, &mut alerts),
                                    Err(_) => break,
                                }
                                n += 1;
                            }
                            self.emit(&mut alerts, &sinks);
                        }
                        None => events_open = false,
                    }
                }
                Some(msg) = self.control.recv() => match msg {
                    ControlMsg::List(tx) => { let _ = tx.send(engine.rules_list()); }
                },
                _ = file_tick.tick() => {
                    let now_fp = fingerprint(&files);
                    if now_fp != fp {
                        fp = now_fp;
                        reloads.ask(&files, &guarded, "file change", None);
                    }
                }
                Some(()) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                    sinks.reconfigure(SinkSettings::from_config(&self.config.current()));
                }
                _ = status_tick.tick() => self.refresh_status(&engine, &last_reload, &sinks, &guarded),
                _ = suppress_tick.tick() => {
                    let suppressed = engine.take_suppressed();
                    if !suppressed.is_empty() {
                        let total: u64 = suppressed.iter().map(|(_, n)| n).sum();
                        let mut rules = Map::new();
                        for (name, n) in suppressed {
                            rules.insert(name, n.into());
                        }
                        let mut fields = Map::new();
                        fields.insert("rules".into(), Value::Object(rules));
                        fields.insert("interval_secs".into(), self.timers.suppression_report.as_secs().into());
                        warn!(suppressed = total, "alerts suppressed by the per-rule rate limit");
                        self.reports.try_send(Report::node_event(
                            "alerts_suppressed",
                            format!("{total} alerts suppressed by the per-rule rate limit"),
                            fields,
                        ));
                    }
                }
            }
        }
        // Whatever the sensor queued before it stopped is still evaluated.
        let now = unix_time::now_nanos();
        while let Ok(ev) = self.events.try_recv() {
            engine.process(&ev, now, &mut alerts);
        }
        self.emit(&mut alerts, &sinks);
        sinks.flush().await;
        // A clean stop proves nothing about the set on trial, and blames
        // nothing on it either.
        if let Some((trial, _, _)) = guarded.trial.take()
            && let Err(e) = guarded.guard.end_trial(trial)
        {
            warn!(error = %e, "cannot end the rule set's trial");
        }
        self.refresh_status(&engine, &last_reload, &sinks, &guarded);
        Ok(())
    }

    fn emit(&self, alerts: &mut Vec<Alert>, sinks: &AlertSinks) {
        for a in alerts.drain(..) {
            sinks.send(a.payload.clone());
            let created = a
                .payload
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .unwrap_or_else(SystemTime::now);
            let mut report = Report::alert(a.critical, a.payload);
            report.created = created;
            self.reports.try_send(report);
        }
    }

    fn refresh_status(
        &self,
        engine: &Engine,
        last_reload: &Option<ReloadNote>,
        sinks: &AlertSinks,
        guarded: &Guarded,
    ) {
        let set = engine.set();
        let errors = engine
            .problems()
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let loaded = set.rules.len();
        let held_back = guarded
            .held
            .as_ref()
            .map(|(h, running)| held_back_note(h, running));
        let (state, summary) = if let Some(h) = &held_back {
            (
                StageState::Degraded,
                format!(
                    "rule set held back: the daemon died of {} on its trial; running {} instead; {}",
                    h.signals.join(", "),
                    h.running,
                    h.what_to_do
                ),
            )
        } else if loaded == 0 {
            (
                StageState::Degraded,
                format!("no rules loaded ({errors} errors): the node is not protected"),
            )
        } else if errors > 0 {
            (
                StageState::Degraded,
                format!("{loaded} rules loaded, {errors} errors"),
            )
        } else {
            (
                StageState::Running,
                format!("{loaded} rules loaded from {} files", set.files.len()),
            )
        };
        self.status.set_state(state, summary);
        self.status.details(&RulesDetails {
            last_reload: last_reload.clone(),
            held_back,
            trial_ends: guarded
                .trial
                .as_ref()
                .map(|(t, _, _)| t.note.started + guard::TRIAL.as_secs()),
            alert_sinks: sinks.stats.details(),
            ..engine.status_details(unix_time::now_nanos())
        });
    }
}

/// `rules.history` (params `since_ms`, `rule`, `limit`: the kept alerts,
/// oldest first) and `rules.follow_alerts` (a stream of new alerts; an item
/// `{"lagged": n}` when this follower fell behind and skipped n).
fn register_alert_methods(router: &Router, sinks: &AlertSinks) {
    let s = sinks.clone();
    router.register("rules.history", move |params| {
        let s = s.clone();
        async move {
            let q = query(&params)?;
            let alerts = s.read(q).await.ok_or_else(|| {
                ControlError::unavailable("the alert sink thread is busy or stopped")
            })?;
            Ok(Reply::Value(json!({"alerts": alerts})))
        }
    });
    let s = sinks.clone();
    router.register("rules.follow_alerts", move |params| {
        let mut rx = s.subscribe();
        async move {
            let matches = query(&params)?.matcher();
            let (tx, out) = mpsc::channel(64);
            tokio::spawn(async move {
                loop {
                    let item = match rx.recv().await {
                        Ok(a) => {
                            let v = Value::Object((*a).clone());
                            if !matches(&v) {
                                continue;
                            }
                            v
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            json!({"lagged": n})
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
            Ok(Reply::Stream(out))
        }
    });
}

pub(crate) fn query(params: &Value) -> Result<Query, ControlError> {
    let number = |k: &str| -> Result<Option<u64>, ControlError> {
        match params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| ControlError::bad_params(format!("{k} must be a number"))),
        }
    };
    Ok(Query {
        since_ms: number("since_ms")?,
        rule: params
            .get("rule")
            .and_then(Value::as_str)
            .map(str::to_string),
        limit: number("limit")?.map(|n| n as usize),
    })
}

/// What `status` shows for the rules while the daemon is down: what the
/// config would load.
pub(crate) fn offline_status(config: &AgentConfig) -> StageStatus {
    let loaded = loader::load_paths(&config.rules.files);
    let errors = loaded.errors().count();
    let rules = loaded.set.rules.len();
    let engine = Engine::new(loaded, Limits::from(&config.rules), String::new(), 0);
    let d = engine.status_details(0);
    // The set the daemon will not load at its next start.
    let held_back = Guard::new(&config.paths.state_dir)
        .held_back()
        .ok()
        .flatten()
        .map(|h| held_back_note(&h, "the last good rule set, or none"));
    StageStatus::offline(
        StageState::Stopped,
        format!("not running; the config would load {rules} rules ({errors} errors)"),
        &OfflineDetails {
            files: d.files,
            rules_loaded: d.rules_loaded,
            rules_failed: d.rules_failed,
            rules_skipped: d.rules_skipped,
            rules_disabled: d.rules_disabled,
            load_errors: d.load_errors,
            held_back,
        },
    )
}

details! {
    /// What `status` shows of the rules while the daemon is down: what the
    /// config's rule files would load (the running stage's [`RulesDetails`]
    /// less what only a running engine counts).
    pub(crate) struct OfflineDetails {
        pub(crate) files: Vec<Value>,
        pub(crate) rules_loaded: u64,
        pub(crate) [key] rules_failed: u64,
        pub(crate) rules_skipped: u64,
        pub(crate) rules_disabled: u64,
        pub(crate) [key] load_errors: Vec<String>,
        pub(crate) [key] held_back: Option<HeldBackNote>,
    }
}

fn held_back_note(h: &HeldBack, running: &str) -> HeldBackNote {
    HeldBackNote {
        sha256: h.set.get(..16).unwrap_or("").to_string(),
        files: h.files.clone(),
        signals: h.signals.clone(),
        tried: h.tried,
        running: running.to_string(),
        what_to_do: "change the rule files to load them again (or remove rules-guard/held-back.json in the state directory and restart)".to_string(),
    }
}

/// The node event that says a rule set was held back.
fn held_back_event(h: &HeldBack, running: &str) -> Report {
    let note = held_back_note(h, running);
    let Ok(Value::Object(fields)) = serde_json::to_value(&note) else {
        unreachable!("a note serializes as an object")
    };
    Report::node_event(
        "rules_held_back",
        format!(
            "rule set held back: the daemon died of {} on its trial; running {running} instead",
            h.signals.join(", ")
        ),
        fields,
    )
}

/// Put a finished load in force (on trial), or refuse it: for its errors,
/// or because its files are the held-back set.
fn apply_attempt(
    engine: &mut Engine,
    guarded: &mut Guarded,
    attempt: Attempt,
    trigger: String,
) -> (ReloadNote, Result<(), StageError>) {
    let Attempt::Loaded {
        loaded,
        sources,
        trial,
    } = attempt
    else {
        let (held, running) = guarded.held.as_ref().expect("held back only when a set is");
        let note = held_back_note(held, running);
        warn!(
            trigger,
            set = note.sha256,
            "the rule files are still the held-back set: not loaded"
        );
        let error = format!(
            "the rule files are the set held back since the daemon died of {} on its trial; {}",
            note.signals.join(", "),
            note.what_to_do
        );
        return (
            ReloadNote {
                at: unix_now(),
                trigger,
                ok: false,
                errors: vec![error.clone()],
            },
            Err(StageError::Refused {
                total: 1,
                errors: vec![error],
            }),
        );
    };
    guarded.held = None;
    let refused = loaded.has_errors();
    let result = apply_reload(engine, loaded, trigger);
    match trial {
        Some(trial) if refused => {
            if let Err(e) = guarded.guard.end_trial(trial) {
                warn!(error = %e, "cannot end the refused rule set's trial");
            }
            // The set in force may still be on trial: its note goes back.
            if let Some((t, _, _)) = &mut guarded.trial {
                match guarded.guard.begin_trial(&t.note.set, t.note.files.clone()) {
                    Ok(again) => *t = again,
                    Err(e) => warn!(error = %e, "cannot put the rule set back on trial"),
                }
            }
        }
        Some(trial) => {
            guarded.trial = Some((trial, sources, tokio::time::Instant::now() + guard::TRIAL));
        }
        None => {}
    }
    result
}

/// Swap in a reloaded set, or refuse it when it has errors.
fn apply_reload(
    engine: &mut Engine,
    loaded: Loaded,
    trigger: String,
) -> (ReloadNote, Result<(), StageError>) {
    let at = unix_now();
    if loaded.has_errors() {
        let errors: Vec<String> = loaded.errors().map(|p| p.to_string()).collect();
        for e in &errors {
            error!(trigger, problem = %e, "rule reload refused");
        }
        let total = errors.len();
        let shown: Vec<String> = errors.into_iter().take(MAX_ERRORS_SHOWN).collect();
        error!(
            trigger,
            errors = total,
            "the new rule set has errors and was refused; the running rules stay in force"
        );
        let note = ReloadNote {
            at,
            trigger,
            ok: false,
            errors: shown.clone(),
        };
        return (
            note,
            Err(StageError::Refused {
                total,
                errors: shown,
            }),
        );
    }
    log_problems(&loaded, "reloaded");
    engine.swap(loaded, unix_time::now_nanos());
    info!(trigger, rules = engine.set().rules.len(), "rules reloaded");
    let note = ReloadNote {
        at,
        trigger,
        ok: true,
        errors: Vec::new(),
    };
    (note, Ok(()))
}

fn log_problems(loaded: &Loaded, what: &str) {
    for p in &loaded.problems {
        match p.severity {
            Severity::Error => error!(problem = %p, "rules: not loaded"),
            Severity::Warning | Severity::Skipped => warn!(problem = %p, "rules"),
        }
    }
    info!(
        rules = loaded.set.rules.len(),
        files = loaded.set.files.len(),
        errors = loaded.errors().count(),
        "rules {what}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Request, Router};
    use crate::event::{EventType, Process};
    use crate::reload::Reloader;
    use crate::report::{self, Class};
    use crate::status::StatusBoard;

    const SHELL: &str = "- rule: Shell\n  desc: x\n  condition: evt.type = execve and proc.name = sh\n  output: shell %proc.cmdline\n  priority: CRITICAL\n";
    const EXEC: &str = "- rule: Exec\n  desc: x\n  condition: evt.type = execve\n  output: exec %proc.name\n  priority: NOTICE\n";

    fn sh() -> Event {
        let mut e = Event::new(
            EventType::Execve,
            Arc::new(Process::new(9, 1, "/bin/sh", &["sh", "-c", "id"])),
        );
        e.evt.num = 1;
        e
    }

    async fn wait_status(
        board: &StatusBoard,
        what: &str,
        f: impl Fn(&Map<String, Value>) -> bool,
    ) -> Map<String, Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let snap = board.snapshot();
            if let Some((_, s)) = snap.iter().find(|(n, _)| n == "rules")
                && f(&s.details)
            {
                return s.details.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_become_alerts_and_reloads_swap_or_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.yaml");
        let json_file = dir.path().join("alerts.jsonl");
        std::fs::write(&rules, SHELL).unwrap();
        let mut config = AgentConfig::default();
        config.rules.files = vec![rules.clone()];
        config.rules.json_file = json_file.clone();
        // Not this machine's journal.
        config.rules.syslog_output = false;
        let reloader = Reloader::new(config.clone());
        let board = StatusBoard::new();
        let router = Router::new();
        let (reports, mut reports_rx) = report::channel(64);
        let ctx = StageContext {
            config: reloader.feed(),
            board: board.clone(),
            router: router.clone(),
            reports,
        };
        let (tx, rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        let stage = start(&ctx, rx, token.clone());
        drop(ctx);

        tx.send(sh()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), reports_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.class, Class::CriticalAlert);
        assert_eq!(r.payload["rule"], "Shell");
        assert_eq!(r.payload["output_fields"]["proc.cmdline"], "sh -c id");

        let list = match router
            .dispatch(Request {
                v: 1,
                method: "rules.list".into(),
                params: Value::Null,
            })
            .await
        {
            Ok(Reply::Value(v)) => v,
            _ => panic!("rules.list answers a value"),
        };
        assert_eq!(list["rules"][0]["name"], "Shell");
        assert_eq!(list["rules"][0]["hits"], 1);

        // A broken file is refused when a new config names [rules] (the
        // fleet does when it wrote rule files); the running rules stay, and
        // the submitter hears why.
        std::fs::write(
            &rules,
            format!(
                "{SHELL}- rule: Broken\n  condition: proc.nme = x\n  output: x\n  priority: INFO\n"
            ),
        )
        .unwrap();
        let submitted = reloader.submit(config, "fleet", &[SectionId::Rules]);
        assert_eq!(submitted.woken, ["rules"]);
        let outcomes = tokio::time::timeout(Duration::from_secs(20), reloader.outcomes(&submitted))
            .await
            .expect("the rules stage answers");
        let refused = outcomes[0].result.as_ref().unwrap_err().to_string();
        assert!(
            refused.contains("refused") && refused.contains("unknown field proc.nme"),
            "{refused}"
        );
        let d = wait_status(&board, "a refused reload", |d| {
            d["last_reload"]["ok"] == false
        })
        .await;
        assert!(
            d["last_reload"]["errors"][0]
                .as_str()
                .unwrap()
                .contains("unknown field proc.nme"),
            "{d:?}"
        );
        tx.send(sh()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), reports_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.payload["rule"], "Shell", "the old rules still run");

        // A good change on disk is picked up without a signal.
        std::fs::write(&rules, format!("{SHELL}{EXEC}")).unwrap();
        wait_status(&board, "a reload from the file change", |d| {
            d["rules_loaded"] == 2 && d["last_reload"]["ok"] == true
        })
        .await;
        tx.send(sh()).await.unwrap();
        let mut names = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(Duration::from_secs(20), reports_rx.recv())
                .await
                .unwrap()
                .unwrap();
            names.push(r.payload["rule"].as_str().unwrap().to_string());
        }
        assert_eq!(names, ["Shell", "Exec"]);

        token.cancel();
        stage.task.await.unwrap();
        let lines = std::fs::read_to_string(&json_file).unwrap();
        assert_eq!(lines.lines().count(), 4, "{lines}");
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["source"], "syscall");
    }
}

#[cfg(test)]
mod suppression_tests {
    use super::*;
    use crate::control::Router;
    use crate::event::{EventType, Process};
    use crate::reload::Reloader;
    use crate::report::{self, Class};
    use crate::status::StatusBoard;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suppressed_alerts_are_counted_and_reported_as_a_node_event() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.yaml");
        std::fs::write(
            &rules,
            "- rule: Shell\n  desc: x\n  condition: evt.type = execve and proc.name = sh\n  output: shell\n  priority: WARNING\n",
        )
        .unwrap();
        let mut config = AgentConfig::default();
        config.rules.files = vec![rules];
        config.rules.rate = 0.001;
        config.rules.max_burst = 2;
        config.rules.syslog_output = false;
        let reloader = Reloader::new(config);
        let board = StatusBoard::new();
        let (reports, mut reports_rx) = report::channel(64);
        let ctx = StageContext {
            config: reloader.feed(),
            board: board.clone(),
            router: Router::new(),
            reports,
        };
        let (tx, rx) = mpsc::channel(16);
        let token = CancellationToken::new();
        let timers = Timers {
            suppression_report: Duration::from_millis(300),
            ..Timers::default()
        };
        let stage = start_with(&ctx, rx, token.clone(), timers);
        drop(ctx);
        for _ in 0..7 {
            let e = Event::new(
                EventType::Execve,
                Arc::new(Process::new(9, 1, "/bin/sh", &["sh"])),
            );
            tx.send(e).await.unwrap();
        }
        // Reports may be split over several intervals on a loaded machine.
        let (mut alerts, mut suppressed) = (0, 0);
        while alerts < 2 || suppressed < 5 {
            let r = tokio::time::timeout(Duration::from_secs(20), reports_rx.recv())
                .await
                .expect("a report in time")
                .expect("channel open");
            match r.class {
                Class::Alert => alerts += 1,
                Class::NodeEvent => {
                    assert_eq!(r.payload["kind"], "alerts_suppressed");
                    suppressed += r.payload["rules"]["Shell"].as_u64().unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            (alerts, suppressed),
            (2, 5),
            "the burst passes, the rest is counted"
        );
        token.cancel();
        stage.task.await.unwrap();
        let (_, st) = board
            .snapshot()
            .into_iter()
            .find(|(n, _)| n == "rules")
            .unwrap();
        assert_eq!(st.details["alerts_suppressed"], 5);
    }
}
