//! The reload contract: how a new config reaches the stages, and how the one
//! who submitted it learns what each stage made of it.
//!
//! One [`Reloader`] per daemon holds the config in force. Whoever has a new
//! config (the daemon on SIGHUP; the fleet receiver with a bundle) calls
//! [`Reloader::submit`]: the config is diffed against the one in force,
//! section by section ([`ConfigDiff`]); restart-only keys keep their running
//! values; the result is published as the next *generation* (the config the
//! agent started with is generation 1). The returned [`Submitted`] says what
//! changed, what waits for a restart, and which stages it wakes;
//! [`Reloader::outcomes`] waits until each of those stages has said how
//! applying it went.
//!
//! A stage follows the sections it reads through a [`ConfigWatch`] (made for
//! it by `stage::start` from its `StageSpec`). [`ConfigWatch::changed`]
//! completes only when one of those sections really changed, or when the
//! submitter named the section although its values are the same (rule files
//! that changed on disk, say), and hands the stage the new config with an
//! [`ApplyTicket`]: the stage applies what it can and answers through the
//! ticket, ok or with the error. A ticket dropped unanswered answers "not
//! applied". Generations coalesce: a stage busy while two configs arrived
//! sees only the later one, and its answer counts for both.
//!
//! When the last `Reloader` is gone (the daemon is past its main loop),
//! `changed` never completes again: every stage keeps the config it has and
//! ends on its shutdown token, never on the config channel. See
//! `docs/ARCHITECTURE.md` ("The reload path").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::{AgentConfig, ConfigDiff, SectionId};
use crate::status::unix_now;

/// Why a stage did not apply a config.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApplyError {
    /// The stage tried and failed; the error is the stage's own.
    #[error(transparent)]
    Stage(Arc<dyn std::error::Error + Send + Sync>),
    /// The stage dropped the config without answering (it stopped first).
    #[error("the stage stopped before it applied this config")]
    NotApplied,
    /// The stage no longer follows the config (it has stopped).
    #[error("the stage has stopped")]
    Stopped,
}

/// What a stage made of the config of one generation.
#[derive(Debug, Clone)]
pub(crate) struct Applied {
    /// The generation it applied (or tried to).
    pub(crate) generation: u64,
    /// Unix seconds.
    pub(crate) at: u64,
    pub(crate) result: Result<(), ApplyError>,
}

/// One woken stage's answer, as [`Reloader::outcomes`] returns it.
#[derive(Debug, Clone)]
pub(crate) struct StageOutcome {
    pub(crate) stage: &'static str,
    /// The generation the answer is for: the one waited for, or a later one
    /// that includes it.
    #[cfg(test)]
    pub(crate) generation: u64,
    pub(crate) result: Result<(), ApplyError>,
}

/// What [`Reloader::submit`] did.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    /// The new generation (one more than the last).
    pub(crate) generation: u64,
    /// The config now in force.
    pub(crate) config: Arc<AgentConfig>,
    /// What changed, what waits for a restart.
    pub(crate) diff: ConfigDiff,
    /// The stages this generation wakes; each answers (see
    /// [`Reloader::outcomes`]).
    pub(crate) woken: Vec<&'static str>,
}

/// The value on the config channel.
#[derive(Debug)]
struct Published {
    generation: u64,
    config: Arc<AgentConfig>,
    /// Who submitted it, for logs and status ("start", "sighup", "fleet").
    origin: Arc<str>,
    /// Per section ([`SectionId::index`]), the generation in which it last
    /// changed or was named by a submitter.
    changed_at: [u64; SectionId::ALL.len()],
}

/// Who follows which sections, and what each made of its last config.
#[derive(Debug, Default)]
struct Ledger {
    followers: BTreeMap<&'static str, &'static [SectionId]>,
    applied: BTreeMap<&'static str, Applied>,
}

/// The submitting side: the daemon's, and whoever it hands a clone to (the
/// fleet receiver). Stages never get one.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
}

struct Shared {
    config: watch::Sender<Arc<Published>>,
    ledger: Arc<watch::Sender<Ledger>>,
    /// Held while a submit diffs and publishes, so two submitters do not
    /// diff against the same generation; keeps the keys pending a restart.
    submitting: Mutex<Vec<String>>,
}

impl Reloader {
    /// Generation 1: the config the agent starts with.
    pub fn new(config: AgentConfig) -> Reloader {
        let published = Published {
            generation: 1,
            config: Arc::new(config),
            origin: Arc::from("start"),
            changed_at: [1; SectionId::ALL.len()],
        };
        Reloader {
            shared: Arc::new(Shared {
                config: watch::Sender::new(Arc::new(published)),
                ledger: Arc::new(watch::Sender::new(Ledger::default())),
                submitting: Mutex::new(Vec::new()),
            }),
        }
    }

    /// What stages are handed: the config, and a way to follow it.
    pub fn feed(&self) -> ConfigFeed {
        ConfigFeed {
            config: self.shared.config.subscribe(),
            ledger: self.shared.ledger.clone(),
        }
    }

    /// The config in force.
    pub(crate) fn current(&self) -> Arc<AgentConfig> {
        self.shared.config.borrow().config.clone()
    }

    /// The generation in force.
    pub(crate) fn generation(&self) -> u64 {
        self.shared.config.borrow().generation
    }

    /// Keys changed by the last submitted config that wait for a restart.
    pub(crate) fn pending_restart(&self) -> Vec<String> {
        self.shared
            .submitting
            .lock()
            .expect("reloader lock")
            .clone()
    }

    /// Each following stage's last answer.
    pub(crate) fn applied(&self) -> BTreeMap<&'static str, Applied> {
        self.shared.ledger.borrow().applied.clone()
    }

    /// Put `new` in force (restart-only keys keep their running values) and
    /// wake the stages whose sections changed, and those following a section
    /// in `also` even if it did not change. `origin` names the submitter in
    /// logs and status. The config must be valid: validation is the
    /// submitter's (`AgentConfig::load`, or the fleet's own checks).
    pub(crate) fn submit(&self, new: AgentConfig, origin: &str, also: &[SectionId]) -> Submitted {
        let mut pending = self.shared.submitting.lock().expect("reloader lock");
        let last = self.shared.config.borrow().clone();
        let (effective, diff) = ConfigDiff::effective(&last.config, new);
        let generation = last.generation + 1;
        let mut changed_at = last.changed_at;
        for s in diff.changed_sections().iter().chain(also) {
            changed_at[s.index()] = generation;
        }
        let woken = self
            .shared
            .ledger
            .borrow()
            .followers
            .iter()
            .filter(|(_, sections)| sections.iter().any(|s| changed_at[s.index()] == generation))
            .map(|(stage, _)| *stage)
            .collect();
        let config = Arc::new(effective);
        self.shared.config.send_replace(Arc::new(Published {
            generation,
            config: config.clone(),
            origin: Arc::from(origin),
            changed_at,
        }));
        pending.clone_from(&diff.pending_restart);
        Submitted {
            generation,
            config,
            diff,
            woken,
        }
    }

    /// Wait until every stage `submitted` woke has answered for its
    /// generation (or a later one), or has stopped. Bound it with a timeout:
    /// a stage that hangs never answers.
    pub(crate) async fn outcomes(&self, submitted: &Submitted) -> Vec<StageOutcome> {
        let g = submitted.generation;
        let answered = |l: &Ledger, stage: &str| {
            !l.followers.contains_key(stage)
                || l.applied.get(stage).is_some_and(|a| a.generation >= g)
        };
        let mut rx = self.shared.ledger.subscribe();
        let ledger = rx
            .wait_for(|l| submitted.woken.iter().all(|s| answered(l, s)))
            .await
            .expect("the ledger lives as long as this reloader");
        submitted
            .woken
            .iter()
            .map(|&stage| match ledger.applied.get(stage) {
                Some(a) if a.generation >= g => StageOutcome {
                    stage,
                    #[cfg(test)]
                    generation: a.generation,
                    result: a.result.clone(),
                },
                _ => StageOutcome {
                    stage,
                    #[cfg(test)]
                    generation: g,
                    result: Err(ApplyError::Stopped),
                },
            })
            .collect()
    }
}

/// What every stage is handed (in its `StageContext`): the config in force,
/// and a way to follow it. Cannot submit.
#[derive(Clone)]
pub struct ConfigFeed {
    config: watch::Receiver<Arc<Published>>,
    ledger: Arc<watch::Sender<Ledger>>,
}

impl ConfigFeed {
    /// The config in force now (for a control method answering a call, say).
    pub(crate) fn current(&self) -> Arc<AgentConfig> {
        self.config.borrow().config.clone()
    }

    /// Follow `sections` as stage `stage`: the watch wakes it only when one
    /// of them changes, and its answers are recorded under its name.
    pub(crate) fn follow(
        &self,
        stage: &'static str,
        sections: &'static [SectionId],
    ) -> ConfigWatch {
        let mut rx = self.config.clone();
        let seen = rx.borrow_and_update().generation;
        self.ledger.send_modify(|l| {
            l.followers.insert(stage, sections);
        });
        ConfigWatch {
            rx,
            stage,
            sections,
            seen,
            ledger: self.ledger.clone(),
        }
    }
}

/// One stage's view of the config: wakes only for its own sections.
pub(crate) struct ConfigWatch {
    rx: watch::Receiver<Arc<Published>>,
    stage: &'static str,
    sections: &'static [SectionId],
    /// The last generation looked at.
    seen: u64,
    ledger: Arc<watch::Sender<Ledger>>,
}

/// A new config for a stage, and the ticket to answer with.
pub(crate) struct ConfigUpdate {
    pub(crate) config: Arc<AgentConfig>,
    pub(crate) generation: u64,
    /// Who submitted it ("sighup", "fleet", ...).
    pub(crate) origin: Arc<str>,
    pub(crate) ticket: ApplyTicket,
}

impl ConfigWatch {
    /// The config in force now: what a stage starts with.
    pub(crate) fn current(&self) -> Arc<AgentConfig> {
        self.rx.borrow().config.clone()
    }

    /// The next config in which one of this stage's sections changed.
    /// Cancel-safe (use it in `select!`). Never completes once the
    /// [`Reloader`] is gone: the config can no longer change, and the stage
    /// ends on its shutdown token like every other.
    pub(crate) async fn changed(&mut self) -> ConfigUpdate {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let p = self.rx.borrow_and_update().clone();
            let mine = self
                .sections
                .iter()
                .any(|s| p.changed_at[s.index()] > self.seen);
            self.seen = p.generation;
            if mine {
                return ConfigUpdate {
                    config: p.config.clone(),
                    generation: p.generation,
                    origin: p.origin.clone(),
                    ticket: ApplyTicket {
                        stage: self.stage,
                        generation: p.generation,
                        ledger: Some(self.ledger.clone()),
                    },
                };
            }
        }
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        let stage = self.stage;
        self.ledger.send_modify(|l| {
            l.followers.remove(stage);
        });
    }
}

/// The answer a stage owes for a [`ConfigUpdate`]: [`ApplyTicket::ok`],
/// [`ApplyTicket::failed`] or [`ApplyTicket::finish`]. Dropped unanswered,
/// it answers [`ApplyError::NotApplied`].
#[must_use = "a stage answers every config it is handed"]
pub(crate) struct ApplyTicket {
    stage: &'static str,
    generation: u64,
    ledger: Option<Arc<watch::Sender<Ledger>>>,
}

impl ApplyTicket {
    /// Applied.
    pub(crate) fn ok(mut self) {
        self.record(Ok(()));
    }

    /// Not applied, because of `error` (the stage keeps its previous config
    /// for what the error concerns).
    pub(crate) fn failed(mut self, error: impl std::error::Error + Send + Sync + 'static) {
        self.record(Err(ApplyError::Stage(Arc::new(error))));
    }

    /// [`ApplyTicket::ok`] or [`ApplyTicket::failed`], by `result`.
    pub(crate) fn finish<E: std::error::Error + Send + Sync + 'static>(
        self,
        result: Result<(), E>,
    ) {
        match result {
            Ok(()) => self.ok(),
            Err(e) => self.failed(e),
        }
    }

    fn record(&mut self, result: Result<(), ApplyError>) {
        let Some(ledger) = self.ledger.take() else {
            return;
        };
        let applied = Applied {
            generation: self.generation,
            at: unix_now(),
            result,
        };
        let stage = self.stage;
        ledger.send_modify(|l| {
            // Answers can arrive out of order (a slow apply finishing after
            // a later one): the latest generation stays.
            if l.applied
                .get(stage)
                .is_none_or(|a| a.generation <= applied.generation)
            {
                l.applied.insert(stage, applied);
            }
        });
    }
}

impl Drop for ApplyTicket {
    fn drop(&mut self) {
        self.record(Err(ApplyError::NotApplied));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const METRICS: &[SectionId] = &[SectionId::Metrics];
    const RULES: &[SectionId] = &[SectionId::Rules];

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:1")]
    struct BindFailed;

    fn with_interval(secs: u64) -> AgentConfig {
        let mut c = AgentConfig::default();
        c.metrics.interval = format!("{secs}s").parse().unwrap();
        c
    }

    async fn no_wake(w: &mut ConfigWatch) {
        let r = tokio::time::timeout(Duration::from_millis(100), w.changed()).await;
        assert!(r.is_err(), "woken, though none of its sections changed");
    }

    #[tokio::test]
    async fn a_stage_is_woken_only_when_its_own_section_changed() {
        let reloader = Reloader::new(AgentConfig::default());
        let feed = reloader.feed();
        let mut metrics = feed.follow("metrics", METRICS);
        let mut rules = feed.follow("rules", RULES);

        let s = reloader.submit(with_interval(45), "sighup", &[]);
        assert_eq!(s.generation, 2);
        assert_eq!(s.woken, ["metrics"]);
        assert_eq!(s.diff.changed, ["metrics.interval"]);
        let u = metrics.changed().await;
        assert_eq!(u.generation, 2);
        assert_eq!(u.config.metrics.interval.get(), Duration::from_secs(45));
        assert_eq!(&*u.origin, "sighup");
        u.ticket.ok();
        no_wake(&mut rules).await;

        // The same config again: nobody is woken.
        let s = reloader.submit(with_interval(45), "sighup", &[]);
        assert!(s.woken.is_empty() && s.diff.is_empty(), "{s:?}");
        no_wake(&mut metrics).await;
    }

    #[tokio::test]
    async fn a_section_named_by_the_submitter_wakes_its_stage_though_equal() {
        let reloader = Reloader::new(AgentConfig::default());
        let mut rules = reloader.feed().follow("rules", RULES);
        let s = reloader.submit(AgentConfig::default(), "fleet", &[SectionId::Rules]);
        assert_eq!(s.woken, ["rules"]);
        assert_eq!(rules.changed().await.generation, s.generation);
    }

    #[tokio::test]
    async fn the_submitter_learns_each_woken_stages_outcome_for_its_generation() {
        let reloader = Reloader::new(AgentConfig::default());
        let feed = reloader.feed();
        let mut metrics = feed.follow("metrics", METRICS);
        let mut rules = feed.follow("rules", &[SectionId::Rules, SectionId::Metrics]);
        let s = reloader.submit(with_interval(45), "fleet", &[]);
        assert_eq!(s.woken, ["metrics", "rules"]);
        let waiter = {
            let (reloader, s) = (reloader.clone(), s.clone());
            tokio::spawn(async move { reloader.outcomes(&s).await })
        };
        metrics.changed().await.ticket.failed(BindFailed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "rules has not answered yet");
        rules.changed().await.ticket.ok();
        let outcomes = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("every woken stage answered")
            .unwrap();
        let by_stage: Vec<_> = outcomes
            .iter()
            .map(|o| {
                (
                    o.stage,
                    o.generation,
                    o.result.clone().map_err(|e| e.to_string()),
                )
            })
            .collect();
        assert_eq!(
            by_stage,
            [
                (
                    "metrics",
                    2,
                    Err("cannot listen on 127.0.0.1:1".to_string())
                ),
                ("rules", 2, Ok(()))
            ]
        );
        let applied = reloader.applied();
        assert_eq!(applied["metrics"].generation, 2);
        assert!(applied["rules"].result.is_ok());
    }

    #[tokio::test]
    async fn a_busy_stage_sees_the_last_of_two_configs_and_answers_for_both() {
        let reloader = Reloader::new(AgentConfig::default());
        let mut metrics = reloader.feed().follow("metrics", METRICS);
        let first = reloader.submit(with_interval(45), "sighup", &[]);
        let second = reloader.submit(with_interval(50), "sighup", &[]);
        let u = metrics.changed().await;
        assert_eq!(u.generation, second.generation);
        u.ticket.ok();
        for s in [&first, &second] {
            let o = reloader.outcomes(s).await;
            assert_eq!(o[0].generation, second.generation);
            assert!(o[0].result.is_ok());
        }
        // A change and its undo while the stage was busy still wake it:
        // the section changed twice.
        reloader.submit(with_interval(60), "sighup", &[]);
        let undo = reloader.submit(with_interval(50), "sighup", &[]);
        assert_eq!(undo.woken, ["metrics"]);
        assert_eq!(metrics.changed().await.generation, undo.generation);
    }

    #[tokio::test]
    async fn a_ticket_dropped_unanswered_says_not_applied_and_a_stopped_stage_says_stopped() {
        let reloader = Reloader::new(AgentConfig::default());
        let feed = reloader.feed();
        let mut metrics = feed.follow("metrics", METRICS);
        let rules = feed.follow("rules", &[SectionId::Metrics]);
        let s = reloader.submit(with_interval(45), "fleet", &[]);
        drop(metrics.changed().await);
        drop(rules);
        let o = reloader.outcomes(&s).await;
        assert!(matches!(o[0].result, Err(ApplyError::NotApplied)), "{o:?}");
        assert!(matches!(o[1].result, Err(ApplyError::Stopped)), "{o:?}");
        let s = reloader.submit(with_interval(50), "fleet", &[]);
        assert_eq!(s.woken, ["metrics"], "a stopped stage is not waited for");
    }

    #[tokio::test]
    async fn once_the_reloader_is_gone_a_watch_never_wakes_again() {
        let reloader = Reloader::new(AgentConfig::default());
        let mut metrics = reloader.feed().follow("metrics", METRICS);
        drop(reloader);
        // A closed channel is not a change: `changed` must not complete
        // (a loop around it would spin).
        let r = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
        assert!(r.is_err());
        assert_eq!(
            metrics.current().metrics.interval.get(),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn restart_only_keys_are_held_and_listed_until_the_next_submit_drops_them() {
        let reloader = Reloader::new(AgentConfig::default());
        let mut c = AgentConfig::default();
        c.sensor.ring_buffer_bytes = crate::config::ByteSize::mib(16);
        let s = reloader.submit(c, "sighup", &[]);
        assert_eq!(s.diff.pending_restart, ["sensor.ring_buffer_bytes"]);
        assert_eq!(reloader.pending_restart(), ["sensor.ring_buffer_bytes"]);
        assert_eq!(
            reloader.current().sensor.ring_buffer_bytes,
            AgentConfig::default().sensor.ring_buffer_bytes
        );
        reloader.submit(AgentConfig::default(), "sighup", &[]);
        assert!(reloader.pending_restart().is_empty());
    }
}
