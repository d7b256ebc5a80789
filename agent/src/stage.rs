//! The stage contract: what a stage is handed, how it is started, and what
//! the daemon gets back.
//!
//! A stage is one task (sensor, rules, metrics, bootstrap, outbox, uplink)
//! joined to the others by bounded channels. Each area declares itself once
//! as a [`StageSpec`] (its name and the status details a technician acts
//! on) and exports `start(ctx, ..) -> Stage`, which calls [`start`] here:
//! register on the status board, hand the stage what is its own
//! ([`Own`]), spawn it, and turn its ending into a status (`stopped`, or
//! `failed` with the error). The daemon (`daemon.rs`) decides only the order
//! and the wiring: which channel goes to whom and which shutdown token
//! stops which group. See `docs/ARCHITECTURE.md`.
//!
//! This module is a leaf: it never imports a stage or the daemon, so a
//! stage never imports what starts it.

use std::future::Future;

use tokio::task::JoinHandle;
use tracing::error;

use crate::config::SectionId;
use crate::control::Router;
use crate::reload::{ConfigFeed, ConfigWatch};
use crate::report::ReportSender;
use crate::status::{StageState, StatusBoard, StatusReporter};

/// Everything the daemon shares with every stage it starts.
#[derive(Clone)]
pub struct StageContext {
    /// The config in force. A stage follows its own sections through the
    /// [`ConfigWatch`] in [`Own`]; this is for reading the config as it is
    /// now (a control method answering a call).
    pub config: ConfigFeed,
    pub board: StatusBoard,
    /// The control socket's methods; a stage registers its own.
    pub router: Router,
    /// Where reports for the fleet go (the outbox's input).
    pub reports: ReportSender,
}

/// What a stage says about itself, once, in its own module.
#[derive(Debug)]
pub(crate) struct StageSpec {
    /// Its name on the status board, in logs and in `status`.
    pub(crate) name: &'static str,
    /// The config sections it reads and applies live: a reload wakes it
    /// only when one of them changed (see [`crate::reload`]).
    pub(crate) sections: &'static [SectionId],
    /// The details `edge-agent status` shows without `--verbose` whenever
    /// they say something (see [`crate::status::StageStatus::key_details`]).
    pub(crate) key_details: &'static [&'static str],
}

/// What belongs to one stage alone.
pub(crate) struct Own {
    /// Its snapshot on the status board.
    pub(crate) status: StatusReporter,
    /// Its sections of the config: what to start with, and each change.
    /// A stage that stops following (disabled for good, or failed at
    /// start) drops it, so no reload waits for its answer.
    pub(crate) config: ConfigWatch,
}

/// A running stage, as the daemon holds it.
pub struct Stage {
    pub(crate) name: &'static str,
    pub task: JoinHandle<()>,
}

/// Start the stage `spec`: register it on the board, then spawn what `body`
/// returns. `body` runs at once, before the task is spawned, so a stage can
/// set up what must exist before anything else starts (its control methods,
/// its own thread). When the task ends, an error is logged and shown in
/// status (`failed`); a clean end shows as `stopped` unless the stage was
/// `disabled`.
pub(crate) fn start<F, Fut, E>(ctx: &StageContext, spec: &StageSpec, body: F) -> Stage
where
    F: FnOnce(Own) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let status = ctx.board.register(spec.name);
    status.key_details(spec.key_details);
    let fut = body(Own {
        status: status.clone(),
        config: ctx.config.follow(spec.name, spec.sections),
    });
    let name = spec.name;
    let task = tokio::spawn(async move {
        match fut.await {
            Ok(()) => {
                if status.current().state != StageState::Disabled {
                    status.set_state(StageState::Stopped, "stopped");
                }
            }
            Err(e) => {
                error!(stage = name, error = %e, "stage stopped with an error");
                status.fail(e.to_string());
            }
        }
    });
    Stage { name, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::reload::Reloader;
    use crate::report;

    fn context() -> StageContext {
        let (reports, _rx) = report::channel(1);
        StageContext {
            config: Reloader::new(AgentConfig::default()).feed(),
            board: StatusBoard::new(),
            router: Router::new(),
            reports,
        }
    }

    const SPEC: StageSpec = StageSpec {
        name: "probe",
        sections: &[],
        key_details: &["lost_total"],
    };

    #[derive(Debug, thiserror::Error)]
    #[error("the probe broke")]
    struct Broke;

    #[tokio::test]
    async fn a_stage_is_registered_under_its_name_with_its_key_details_before_it_runs() {
        let ctx = context();
        let board = ctx.board.clone();
        let stage = start(&ctx, &SPEC, move |own| {
            let seen = board.snapshot();
            assert_eq!(seen.len(), 1, "registered before the body runs");
            assert_eq!(seen[0].0, "probe");
            assert_eq!(seen[0].1.key_details, ["lost_total"]);
            async move {
                own.status.set_state(StageState::Running, "up");
                Ok::<(), Broke>(())
            }
        });
        assert_eq!(stage.name, "probe");
        stage.task.await.unwrap();
        let (_, st) = &ctx.board.snapshot()[0];
        assert_eq!(st.state, StageState::Stopped);
    }

    #[tokio::test]
    async fn a_stage_that_ends_with_an_error_shows_as_failed_with_it() {
        let ctx = context();
        let stage = start(&ctx, &SPEC, |_own| async { Err::<(), _>(Broke) });
        stage.task.await.unwrap();
        let (_, st) = &ctx.board.snapshot()[0];
        assert_eq!(st.state, StageState::Failed);
        assert_eq!(st.last_error.as_ref().unwrap().message, "the probe broke");
    }

    #[tokio::test]
    async fn a_disabled_stage_stays_disabled_when_it_ends() {
        let ctx = context();
        let stage = start(&ctx, &SPEC, |own| async move {
            own.status.set_state(StageState::Disabled, "off");
            Ok::<(), Broke>(())
        });
        stage.task.await.unwrap();
        assert_eq!(ctx.board.snapshot()[0].1.state, StageState::Disabled);
    }
}
