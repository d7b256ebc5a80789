//! The fleet stage: takes the bundles the uplink hands over, decides on
//! each (`receiver.rs`), applies a new one through the reload contract
//! (`sources.rs`, the same path as a SIGHUP), tries it, and keeps it or
//! reverts it. Reports every outcome through the outbox and keeps the
//! state directory's record (`state.rs`) current.
//!
//! Owns `<state_dir>/fleet/` and the fleet layers in force. Never rewrites
//! the local agent.toml; never talks to the broker itself.
//!
//! # The trial
//! Before applying, the bundle and its rule files are written and the trial
//! is recorded in `state.json`; then the merged config is submitted. Within
//! `fleet.confirm_timeout` it must prove healthy:
//! - every stage the new config woke answered "applied" (the rules stage
//!   answers so only when every rule of the new set loaded; the bootstrap
//!   stage only when a changed bootstrap applied with success);
//! - no stage is FAILED that was not failed before the apply (a stage that
//!   was already failed, and that the new config did not touch, is not the
//!   bundle's doing);
//! - the uplink is connected and the broker acknowledged a publish made
//!   after the apply (the state message announcing the trial is one).
//!
//! Then the bundle becomes the layer's good one. Otherwise the previous
//! layers are submitted again and the result says `reverted` with the
//! reasons. An agent that stops during a trial (killed, rebooted, stopped)
//! finds the trial in `state.json` at its next start: it started with the
//! last good layers, and reports `reverted`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::bundle::{self, Target};
use super::held;
use super::keys::PublicKey;
use super::link::{FleetSide, Incoming, LinkHealth};
use super::overlay::{EffectiveError, Layer};
use super::receiver::{self, Candidate, Decision, RefusalLimiter, Refused};
use super::sources::Sources;
use super::state::{Dir, FleetState, Held, LayerState, Trial, file_stem};
use super::summary::{ConfigResult, Outcome, Summary, TrialSummary};
use crate::config::{AgentConfig, SectionId};
use crate::reload::{ApplyTicket, ConfigWatch, Submitted};
use crate::report::{Report, ReportSender};
use crate::stage::{self, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StatusBoard, StatusReporter, details, unix_now};

pub(crate) const STAGE: StageSpec = StageSpec {
    name: "fleet",
    sections: &[SectionId::Fleet],
    key_details: FleetDetails::KEY,
};

details! {
    /// What the fleet stage shows in `status`.
    pub(crate) struct FleetDetails {
        /// The version in force per layer.
        pub(crate) layers: serde_json::Map<String, Value>,
        pub(crate) effective_sha256: Option<String>,
        /// The trial in progress.
        pub(crate) [key] trial: Option<TrialSummary>,
        pub(crate) [key] last_result: Option<ConfigResult>,
        pub(crate) trusted_keys: u64,
        pub(crate) applied_total: u64,
        pub(crate) [key] reverted_total: u64,
        pub(crate) refused_total: u64,
        pub(crate) stale_total: u64,
        pub(crate) ignored_total: u64,
        pub(crate) unchanged_total: u64,
        pub(crate) [key] refusals_suppressed_total: u64,
        /// What was wrong with the fleet config at start (unusable keys, ...).
        pub(crate) [key] notes: Vec<String>,
    }
}

/// After a refusal, the next message waits this long: a flood of junk then
/// costs at most 20 checks a second (each a signature at most), whatever
/// the broker sends; what does not fit in the inbox meanwhile is dropped
/// by the uplink and read again at its next subscription.
const REFUSAL_PACE: Duration = Duration::from_millis(50);

/// How long a revert may take to be applied before the stage says so.
const REVERT_WAIT: Duration = Duration::from_secs(30);

/// A flood of refusals is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    #[error(transparent)]
    State(#[from] super::state::StateError),
}

/// What the daemon hands the fleet stage.
pub(crate) struct Inputs {
    pub(crate) side: FleetSide,
    pub(crate) sources: Sources,
    /// `state.json` as the daemon read it at start.
    pub(crate) state: FleetState,
    /// Why held layers were left out at start (shown in status).
    pub(crate) notes: Vec<String>,
}

pub(crate) fn start(ctx: &StageContext, inputs: Inputs, shutdown: CancellationToken) -> Stage {
    let board = ctx.board.clone();
    let reports = ctx.reports.clone();
    stage::start(ctx, &STAGE, |own| async move {
        let config = own.config.current();
        let (keys, mut notes) = held::trusted_keys(&config);
        notes.extend(inputs.notes);
        let task = Task {
            dir: Dir::new(&config.paths.state_dir),
            config,
            watch: own.config,
            status: own.status,
            board,
            reports,
            side: inputs.side,
            sources: inputs.sources,
            state: inputs.state,
            keys,
            notes,
            limiter: RefusalLimiter::new(Instant::now()),
            last_refused: BTreeMap::new(),
            counts: Counts::default(),
            last_flood_log: None,
        };
        task.run(shutdown).await
    })
}

#[derive(Debug, Default)]
struct Counts {
    applied: u64,
    reverted: u64,
    refused: u64,
    stale: u64,
    ignored: u64,
    quiet: u64,
}

struct Task {
    config: Arc<AgentConfig>,
    watch: ConfigWatch,
    status: StatusReporter,
    board: StatusBoard,
    reports: ReportSender,
    side: FleetSide,
    sources: Sources,
    dir: Dir,
    state: FleetState,
    keys: Vec<PublicKey>,
    notes: Vec<String>,
    limiter: RefusalLimiter,
    /// The last refused bundle per layer: the same bytes again (a retained
    /// message at every reconnect) are not reported again.
    last_refused: BTreeMap<String, String>,
    counts: Counts,
    last_flood_log: Option<Instant>,
}

/// How a trial ended.
enum Verdict {
    Healthy,
    Unhealthy(Vec<String>),
    /// Shutdown came first: the trial stays recorded, and the next start
    /// reports it reverted.
    Interrupted,
}

impl Task {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), FleetError> {
        self.finish_interrupted_trial().await?;
        self.refresh_status();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                update = self.watch.changed() => {
                    self.config = update.config;
                    self.reload_keys(update.ticket);
                }
                msg = self.side.inbox.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    if !self.config.fleet.enabled() {
                        continue;
                    }
                    let refused = self.handle(msg, &shutdown).await?;
                    if refused {
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(REFUSAL_PACE) => {}
                        }
                    }
                }
            }
        }
    }

    /// `[fleet]` changed: read the keys again.
    fn reload_keys(&mut self, ticket: ApplyTicket) {
        let (keys, notes) = held::trusted_keys(&self.config);
        self.keys = keys;
        self.notes = notes;
        self.refresh_status();
        ticket.ok();
    }

    /// A trial recorded at start means the agent stopped during it.
    async fn finish_interrupted_trial(&mut self) -> Result<(), FleetError> {
        let Some(trial) = self.state.trial.take() else {
            return Ok(());
        };
        let layer = self.state.layers.entry(trial.target.clone()).or_default();
        layer.decided = layer.decided.max(trial.version);
        let reasons = vec![format!(
            "the agent stopped during the trial of {} v{} (killed, rebooted or stopped before it had proved healthy); it started with the last config that passed its trial",
            trial.target, trial.version
        )];
        warn!(layer = %trial.target, version = trial.version, "{}", reasons[0]);
        self.prune();
        let result = self.result(
            &trial.target,
            Some(trial.target.clone()),
            Some(trial.version),
            &trial.bundle_sha256,
            Outcome::Reverted,
            reasons,
        );
        self.counts.reverted += 1;
        self.record(result).await
    }

    /// One message from the uplink. Returns whether it was refused (the
    /// caller paces the next one).
    async fn handle(
        &mut self,
        msg: Incoming,
        shutdown: &CancellationToken,
    ) -> Result<bool, FleetError> {
        let current = self.sources.reloader().current();
        let decision = receiver::inspect(
            &msg.topic,
            &msg.payload,
            &current,
            &self.state,
            &self.keys,
            SystemTime::now(),
        );
        match decision {
            Decision::Ignore(why) => {
                self.counts.ignored += 1;
                debug!(topic = %msg.topic, why, "fleet: message ignored");
                self.refresh_status();
                Ok(false)
            }
            Decision::Quiet => {
                self.counts.quiet += 1;
                self.refresh_status();
                Ok(false)
            }
            Decision::Refuse(r) => {
                self.refuse(r).await?;
                Ok(true)
            }
            Decision::Try(c) => {
                self.try_bundle(*c, shutdown).await?;
                Ok(false)
            }
        }
    }

    async fn refuse(&mut self, r: Refused) -> Result<(), FleetError> {
        let layer = r.layer.to_string();
        let repeat = self.last_refused.get(&layer) == Some(&r.bundle_sha256);
        self.last_refused
            .insert(layer.clone(), r.bundle_sha256.clone());
        match r.outcome {
            Outcome::Stale => self.counts.stale += 1,
            _ => self.counts.refused += 1,
        }
        if let Some(v) = r.decides {
            let l = self.state.layers.entry(layer.clone()).or_default();
            l.decided = l.decided.max(v);
            self.dir.save(&self.state)?;
        }
        if repeat {
            self.refresh_status();
            return Ok(());
        }
        if r.limited() && !self.limiter.allow(Instant::now()) {
            if self.last_flood_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                warn!(
                    suppressed_total = self.limiter.suppressed,
                    "fleet: refusing bundles faster than results may be sent; the rest are counted, not reported"
                );
                self.last_flood_log = Some(Instant::now());
            }
            self.refresh_status();
            return Ok(());
        }
        warn!(
            layer = %layer,
            version = ?r.version,
            code = r.code,
            reasons = %r.reasons.join("; "),
            "fleet: bundle {}",
            r.outcome
        );
        let result = self.result(
            &layer,
            r.target,
            r.version,
            &r.bundle_sha256,
            r.outcome,
            r.reasons,
        );
        self.record(result).await
    }

    /// Merge, write, apply, try; keep or revert.
    async fn try_bundle(
        &mut self,
        c: Candidate,
        shutdown: &CancellationToken,
    ) -> Result<(), FleetError> {
        let layer_name = c.layer.to_string();
        let version = c.verified.payload.version;
        let sha = c.verified.sha256.clone();
        let rule_files =
            self.dir
                .rule_files(&c.layer, version, c.verified.payload.rules.keys().cloned());
        let candidate = Layer {
            target: c.layer.clone(),
            version,
            overlay: c.overlay.clone(),
            rule_files,
        };
        let previous = self.sources.layers();
        let layers = with_layer(&previous, candidate, &held::node_layers(&self.config));
        if let Err(e) = self.sources.merge(&layers) {
            let reasons = match e {
                EffectiveError::Layers(problems) => {
                    problems.iter().map(ToString::to_string).collect()
                }
                EffectiveError::Local(e) => vec![format!(
                    "the local agent.toml cannot be read as it was: {e}"
                )],
            };
            return self
                .refuse(Refused {
                    layer: c.layer.clone(),
                    outcome: Outcome::Refused,
                    target: Some(layer_name.clone()),
                    version: Some(version),
                    bundle_sha256: sha,
                    code: "invalid",
                    reasons,
                    decides: Some(version),
                })
                .await;
        }
        // Everything on disk before anything changes: the bundle, its rule
        // files, the trial.
        let bundle_rel = self.dir.save_bundle(&c.layer, version, &c.raw)?;
        self.dir
            .write_rules(&c.layer, version, &c.verified.payload.rules)?;
        let started_at = unix_now();
        self.state.trial = Some(Trial {
            target: layer_name.clone(),
            version,
            bundle_sha256: sha.clone(),
            bundle: bundle_rel.clone(),
            started_at: bundle::rfc3339(SystemTime::now()),
        });
        self.dir.save(&self.state)?;
        let timeout = self.config.fleet.confirm_timeout.get();
        let deadline = tokio::time::Instant::now() + timeout;
        info!(layer = %layer_name, version, timeout_secs = timeout.as_secs(), "fleet: applying a bundle on trial");

        let health_before = *self.side.health.borrow();
        let failed_before = self.failed_stages();
        // The state message announcing the trial is the publish the trial
        // waits to see acknowledged (unless the apply reconnects anyway).
        self.refresh_status_in_trial(
            &layer_name,
            version,
            started_at,
            started_at + timeout.as_secs(),
        );
        let composed = match self.sources.set_layers(layers) {
            Ok(c) => c,
            Err(e) => {
                // Merged fine a moment ago; only a concurrent SIGHUP could
                // make it fail now. Nothing was submitted.
                self.state.trial = None;
                self.dir.save(&self.state)?;
                return self
                    .refuse(Refused {
                        layer: c.layer.clone(),
                        outcome: Outcome::Refused,
                        target: Some(layer_name.clone()),
                        version: Some(version),
                        bundle_sha256: sha,
                        code: "invalid",
                        reasons: vec![e.to_string()],
                        decides: Some(version),
                    })
                    .await;
            }
        };
        // Status and the state message now show the candidate's config.
        self.refresh_status_in_trial(
            &layer_name,
            version,
            started_at,
            started_at + timeout.as_secs(),
        );
        if let Some(pause) = test_trial_pause() {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let verdict = self
            .trial(
                &composed.submitted,
                health_before,
                &failed_before,
                deadline,
                shutdown,
            )
            .await;
        match verdict {
            Verdict::Interrupted => Ok(()),
            Verdict::Healthy => {
                let pending = composed.submitted.diff.pending_restart.clone();
                self.keep(
                    &c.layer,
                    version,
                    &sha,
                    bundle_rel,
                    &composed.effective.config,
                    pending,
                )
                .await
            }
            Verdict::Unhealthy(reasons) => {
                self.revert(&c.layer, version, &sha, previous, reasons)
                    .await
            }
        }
    }

    /// Wait until the new config proves healthy, or the deadline passes.
    async fn trial(
        &self,
        submitted: &Submitted,
        health_before: LinkHealth,
        failed_before: &[String],
        deadline: tokio::time::Instant,
        shutdown: &CancellationToken,
    ) -> Verdict {
        let reloader = self.sources.reloader().clone();
        let outcomes = tokio::select! {
            _ = shutdown.cancelled() => return Verdict::Interrupted,
            o = tokio::time::timeout_at(deadline, reloader.outcomes(submitted)) => o,
        };
        let mut reasons = Vec::new();
        match outcomes {
            Err(_) => {
                let applied = reloader.applied();
                let late: Vec<&str> = submitted
                    .woken
                    .iter()
                    .filter(|s| {
                        applied
                            .get(*s)
                            .is_none_or(|a| a.generation < submitted.generation)
                    })
                    .copied()
                    .collect();
                reasons.push(format!(
                    "{} did not apply the new config within fleet.confirm_timeout",
                    late.join(", ")
                ));
            }
            Ok(outcomes) => {
                for o in outcomes {
                    if let Err(e) = o.result {
                        reasons.push(format!("{}: {e}", o.stage));
                    }
                }
            }
        }
        if !reasons.is_empty() {
            return Verdict::Unhealthy(reasons);
        }
        let mut health = self.side.health.clone();
        loop {
            let changed = self.board.state_changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let failed: Vec<String> = self
                .failed_stages()
                .into_iter()
                .filter(|s| !failed_before.contains(s) || submitted.woken.contains(&s.as_str()))
                .collect();
            let h = *health.borrow_and_update();
            let acked = h.connected
                && if h.connects == health_before.connects {
                    h.acks > health_before.acks
                } else {
                    h.acks_this_connection > 0
                };
            if failed.is_empty() && acked {
                return Verdict::Healthy;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Verdict::Interrupted,
                _ = &mut changed => {}
                r = health.changed() => {
                    if r.is_err() {
                        // The uplink has stopped: it will never ack.
                        tokio::time::sleep_until(deadline).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let mut reasons: Vec<String> = failed
                        .iter()
                        .map(|s| format!("stage {s} failed: {}", self.stage_error(s)))
                        .collect();
                    if !acked {
                        reasons.push(if h.connected {
                            "the uplink did not get a publish acknowledged by the broker within fleet.confirm_timeout".into()
                        } else {
                            format!(
                                "the uplink did not connect to the broker again within fleet.confirm_timeout ({})",
                                self.stage_error("uplink")
                            )
                        });
                    }
                    return Verdict::Unhealthy(reasons);
                }
            }
        }
    }

    /// The trial passed: the bundle becomes its layer's good one.
    async fn keep(
        &mut self,
        target: &Target,
        version: u64,
        sha: &str,
        bundle_rel: String,
        config: &AgentConfig,
        pending_restart: Vec<String>,
    ) -> Result<(), FleetError> {
        let name = target.to_string();
        self.state.layers.insert(
            name.clone(),
            LayerState {
                decided: version,
                good: Some(Held {
                    version,
                    bundle_sha256: sha.to_string(),
                    bundle: bundle_rel,
                    applied_at: bundle::rfc3339(SystemTime::now()),
                }),
            },
        );
        self.state.trial = None;
        let effective_sha = super::overlay::config_sha256(config);
        self.state.effective_sha256 = Some(effective_sha);
        self.dir.save(&self.state)?;
        if let Err(e) = self
            .dir
            .save_effective(&toml::to_string(config).expect("a config serializes"))
        {
            warn!(error = %e, "fleet: cannot write the effective config for people to read");
        }
        self.prune();
        self.last_refused.remove(&name);
        self.counts.applied += 1;
        let reasons: Vec<String> = pending_restart
            .iter()
            .map(|k| format!("{k} changed, and takes effect at the next restart"))
            .collect();
        info!(layer = %name, version, "fleet: bundle applied (healthy within its trial)");
        let result = self.result(
            &name,
            Some(name.clone()),
            Some(version),
            sha,
            Outcome::Applied,
            reasons,
        );
        self.record(result).await
    }

    /// The trial failed: the previous layers again.
    async fn revert(
        &mut self,
        target: &Target,
        version: u64,
        sha: &str,
        previous: Vec<Layer>,
        reasons: Vec<String>,
    ) -> Result<(), FleetError> {
        let name = target.to_string();
        warn!(layer = %name, version, reasons = %reasons.join("; "), "fleet: bundle reverted");
        match self.sources.set_layers(previous) {
            Ok(composed) => {
                let reloader = self.sources.reloader().clone();
                let waited =
                    tokio::time::timeout(REVERT_WAIT, reloader.outcomes(&composed.submitted)).await;
                match waited {
                    Ok(outcomes) => {
                        for o in outcomes.into_iter().filter(|o| o.result.is_err()) {
                            error!(stage = o.stage, error = ?o.result, "fleet: a stage did not apply the restored config");
                        }
                    }
                    Err(_) => error!(
                        "fleet: the restored config was not applied by every stage within {}s",
                        REVERT_WAIT.as_secs()
                    ),
                }
            }
            Err(e) => {
                // The previous layers merged with this local file before; a
                // SIGHUP in between may have changed that.
                error!(error = %e, "fleet: the previous config cannot be restored; the new one stays in force until the next change");
            }
        }
        let l = self.state.layers.entry(name.clone()).or_default();
        l.decided = l.decided.max(version);
        self.state.trial = None;
        self.dir.save(&self.state)?;
        self.prune();
        self.counts.reverted += 1;
        let result = self.result(
            &name,
            Some(name.clone()),
            Some(version),
            sha,
            Outcome::Reverted,
            reasons,
        );
        self.record(result).await
    }

    /// Remove bundles and rule files no layer holds any more.
    fn prune(&self) {
        let mut keep: Vec<(String, u64)> = Vec::new();
        for (name, l) in &self.state.layers {
            if let (Some(good), Ok(t)) = (&l.good, name.parse::<Target>()) {
                keep.push((file_stem(&t), good.version));
            }
        }
        if let Some(t) = &self.state.trial
            && let Ok(target) = t.target.parse::<Target>()
        {
            keep.push((file_stem(&target), t.version));
        }
        self.dir.prune(&keep);
    }

    fn result(
        &self,
        layer: &str,
        target: Option<String>,
        version: Option<u64>,
        sha: &str,
        outcome: Outcome,
        reasons: Vec<String>,
    ) -> ConfigResult {
        ConfigResult {
            layer: layer.to_string(),
            target,
            version,
            bundle_sha256: sha.to_string(),
            outcome,
            reasons,
            effective_sha256: super::overlay::config_sha256(&self.sources.reloader().current()),
            time: bundle::rfc3339(SystemTime::now()),
        }
    }

    /// Keep `result` as the layer's last one, send it through the outbox,
    /// and say so in status and the state message.
    async fn record(&mut self, result: ConfigResult) -> Result<(), FleetError> {
        let value = serde_json::to_value(&result).expect("a result serializes");
        self.state.last_results.insert(result.layer.clone(), value);
        self.dir.save(&self.state)?;
        if !self
            .reports
            .send(Report::config_result(result.to_map()))
            .await
        {
            warn!("fleet: the outbox is gone; this result is counted as dropped");
        }
        self.refresh_status();
        Ok(())
    }

    fn failed_stages(&self) -> Vec<String> {
        self.board
            .snapshot()
            .into_iter()
            .filter(|(_, s)| s.state == StageState::Failed)
            .map(|(n, _)| n)
            .collect()
    }

    fn stage_error(&self, name: &str) -> String {
        self.board
            .snapshot()
            .into_iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, s)| s.last_error.map(|e| e.message).or(Some(s.summary)))
            .unwrap_or_else(|| "no status".into())
    }

    fn summary(&self, trial: Option<TrialSummary>) -> Summary {
        let mut layers = serde_json::Map::new();
        for target in held::node_layers(&self.config) {
            let name = target.to_string();
            if let Some(good) = self.state.layers.get(&name).and_then(|l| l.good.as_ref()) {
                layers.insert(name, Value::from(good.version));
            }
        }
        Summary {
            enabled: self.config.fleet.enabled(),
            layers,
            effective_sha256: Some(super::overlay::config_sha256(
                &self.sources.reloader().current(),
            )),
            trial,
            last_results: self.state.last_results.clone().into_iter().collect(),
        }
    }

    fn refresh_status_in_trial(&self, layer: &str, version: u64, started_at: u64, deadline: u64) {
        let trial = TrialSummary {
            layer: layer.to_string(),
            version,
            started_at,
            deadline,
        };
        self.status.set_state(
            StageState::Running,
            format!(
                "trying {layer} v{version} until {}; in force: {}",
                bundle::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(deadline)),
                self.summary(None).layers_line()
            ),
        );
        let summary = self.summary(Some(trial));
        self.status.details(&self.details(&summary));
        self.side.summary.send_replace(summary);
    }

    fn details(&self, summary: &Summary) -> FleetDetails {
        let c = &self.counts;
        FleetDetails {
            layers: summary.layers.clone(),
            effective_sha256: summary.effective_sha256.clone(),
            trial: summary.trial.clone(),
            last_result: summary.last_result(),
            trusted_keys: self.keys.len() as u64,
            applied_total: c.applied,
            reverted_total: c.reverted,
            refused_total: c.refused,
            stale_total: c.stale,
            ignored_total: c.ignored,
            unchanged_total: c.quiet,
            refusals_suppressed_total: self.limiter.suppressed,
            notes: self.notes.clone(),
        }
    }

    /// Status and the state message, when no trial runs.
    fn refresh_status(&self) {
        let summary = self.summary(None);
        let last = summary.last_result();
        if !self.config.fleet.enabled() {
            self.status.set_state(
                StageState::Disabled,
                "off (fleet.trusted_keys is empty): no config is taken from the fleet",
            );
        } else if self.keys.is_empty() {
            self.status.set_state(
                StageState::Degraded,
                format!(
                    "no usable key in fleet.trusted_keys: every bundle is refused ({})",
                    self.notes.join("; ")
                ),
            );
        } else {
            let last_line = last.as_ref().map_or(String::new(), |r| {
                format!(
                    "; last: {} {} v{} at {}",
                    r.outcome,
                    r.layer,
                    r.version.map_or("-".into(), |v| v.to_string()),
                    r.time
                )
            });
            self.status.set_state(
                StageState::Running,
                format!("{}{last_line}", summary.layers_line()),
            );
        }
        self.status.details(&self.details(&summary));
        // Only a change makes the uplink publish the state message again
        // (a refusal that is not reported changes nothing there).
        self.side.summary.send_if_modified(|old| {
            let changed = *old != summary;
            *old = summary;
            changed
        });
    }
}

/// Test-only: milliseconds the trial waits after the apply before it looks
/// at the stages, so the crash test can kill the agent during a trial.
/// Never set it on a node.
pub(crate) const TEST_TRIAL_PAUSE_ENV: &str = "EDGE_AGENT_TEST_TRIAL_PAUSE_MS";

fn test_trial_pause() -> Option<Duration> {
    std::env::var(TEST_TRIAL_PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// `layers` with `candidate` in its layer's place, in `order` (the node's
/// layers, lowest precedence first).
fn with_layer(layers: &[Layer], candidate: Layer, order: &[Target]) -> Vec<Layer> {
    let mut out: Vec<Layer> = layers
        .iter()
        .filter(|l| l.target != candidate.target)
        .cloned()
        .collect();
    out.push(candidate);
    out.sort_by_key(|l| {
        order
            .iter()
            .position(|t| *t == l.target)
            .unwrap_or(usize::MAX)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(target: Target) -> Layer {
        Layer {
            target,
            version: 1,
            overlay: toml::Table::new(),
            rule_files: Vec::new(),
        }
    }

    #[test]
    fn a_candidate_takes_its_layers_place_in_precedence_order() {
        let order = [
            Target::Fleet,
            Target::Group("eu".into()),
            Target::Group("edge".into()),
            Target::Node("n1".into()),
        ];
        let held = vec![layer(Target::Fleet), layer(Target::Node("n1".into()))];
        let mut c = layer(Target::Group("edge".into()));
        c.version = 2;
        let out = with_layer(&held, c, &order);
        let targets: Vec<String> = out.iter().map(|l| l.target.to_string()).collect();
        assert_eq!(targets, ["fleet", "group:edge", "node:n1"]);
        let mut f = layer(Target::Fleet);
        f.version = 9;
        let out = with_layer(&out, f, &order);
        assert_eq!(out[0].version, 9);
        assert_eq!(out.len(), 3);
    }
}
