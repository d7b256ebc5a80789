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
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::error;

use crate::config::AgentConfig;
use crate::control::Router;
use crate::report::ReportSender;
use crate::status::{StageState, StatusBoard, StatusReporter};

/// Everything the daemon shares with every stage it starts.
#[derive(Clone)]
pub struct StageContext {
    /// The config in force; a reload sends a new value. A stage applies
    /// what it can live and logs what needs a restart.
    pub config: watch::Receiver<Arc<AgentConfig>>,
    pub board: StatusBoard,
    /// The control socket's methods; a stage registers its own.
    pub router: Router,
    /// Where reports for the fleet go (the outbox's input).
    pub reports: ReportSender,
}

/// What a stage says about itself, once, in its own module.
#[derive(Debug)]
pub struct StageSpec {
    /// Its name on the status board, in logs and in `status`.
    pub name: &'static str,
    /// The details `edge-agent status` shows without `--verbose` whenever
    /// they say something (see [`crate::status::StageStatus::key_details`]).
    pub key_details: &'static [&'static str],
}

/// What belongs to one stage alone.
pub struct Own {
    /// Its snapshot on the status board.
    pub status: StatusReporter,
}

/// A running stage, as the daemon holds it.
pub struct Stage {
    pub name: &'static str,
    pub task: JoinHandle<()>,
}

/// Start the stage `spec`: register it on the board, then spawn what `body`
/// returns. `body` runs at once, before the task is spawned, so a stage can
/// set up what must exist before anything else starts (its control methods,
/// its own thread). When the task ends, an error is logged and shown in
/// status (`failed`); a clean end shows as `stopped` unless the stage was
/// `disabled`.
pub fn start<F, Fut, E>(ctx: &StageContext, spec: &StageSpec, body: F) -> Stage
where
    F: FnOnce(Own) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let status = ctx.board.register(spec.name);
    status.key_details(spec.key_details);
    let fut = body(Own {
        status: status.clone(),
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
    use crate::report;

    fn context() -> StageContext {
        let (_tx, config) = watch::channel(Arc::new(AgentConfig::default()));
        let (reports, _rx) = report::channel(1);
        StageContext {
            config,
            board: StatusBoard::new(),
            router: Router::new(),
            reports,
        }
    }

    const SPEC: StageSpec = StageSpec {
        name: "probe",
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
