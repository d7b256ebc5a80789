//! The daemon's bootstrap stage: the same plan as `edge-agent bootstrap
//! plan`, on a timer. Drift (a managed file edited, deleted or chmod-ed by
//! hand, a sysctl changed) becomes a node event for the fleet and a status
//! line; changes are made only when `bootstrap.auto_correct = true`, and
//! then only to edge-agent's own files (a foreign file is never taken over,
//! a failing preflight is never overridden).
//!
//! With `bootstrap.enabled = false` (the shipped default) the stage only
//! reports "disabled" and waits for a config reload. Enabled without
//! auto-correct, it only reads: safe on a developer machine, where it will
//! simply report every file as pending.

use std::path::Path;
use std::sync::Arc;

use serde_json::Map;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, SectionId};
use crate::reload::ApplyTicket;
use crate::report::Report;
use crate::stage::{self, Own, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StatusReporter, details, unix_now};

use super::preflight::Severity;
use super::{ApplyOptions, Assessment, BootstrapError, Force, Target};

/// The bootstrap stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "bootstrap",
    sections: &[SectionId::Bootstrap],
    key_details: BootstrapDetails::KEY,
};

details! {
    /// What the bootstrap stage shows in `status`.
    pub(crate) struct BootstrapDetails {
        /// The root the managed paths are under (`/` on a node).
        pub(crate) root: String,
        /// The K3s version planned for, and where it came from.
        pub(crate) k3s: String,
        pub(crate) files: FileCounts,
        /// Changes by hand to managed files or settings (`[corrected]` when
        /// an auto-correct has just undone them).
        pub(crate) [key] drift: Vec<String>,
        /// Managed paths with a change waiting for `bootstrap apply`.
        pub(crate) [key] pending: Vec<String>,
        /// The undo log's current generation.
        pub(crate) generation: u64,
        /// The generation an interrupted apply left pending.
        pub(crate) interrupted_apply: Option<u64>,
        pub(crate) last_apply: Option<super::LastApply>,
        /// Preflight findings at warn or worse, as `severity: message`.
        pub(crate) preflight: Vec<String>,
        /// Unix seconds.
        pub(crate) last_check: u64,
    }
}

/// Managed files by what the last check found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct FileCounts {
    pub(crate) in_sync: usize,
    pub(crate) drifted: usize,
    pub(crate) pending: usize,
}

/// Start the bootstrap stage.
pub(crate) fn start(ctx: &StageContext, shutdown: CancellationToken) -> Stage {
    stage::start(ctx, &STAGE, |own| run(ctx.clone(), own, shutdown))
}

/// What the stage remembers between checks, so that news is sent once.
#[derive(Default)]
struct Memory {
    drift: Vec<String>,
    last_failure: Option<String>,
}

/// What one check found, reduced to what the stage reports.
struct Check {
    /// The node as it is now (after an auto-correct, if one ran).
    assessment: Assessment,
    applied: Option<Result<super::ApplyReport, Arc<BootstrapError>>>,
    /// The drift an auto-correct just undid (as [`super::plan::Plan::drift`]
    /// lists it): still news for the fleet.
    corrected: Vec<String>,
}

async fn run(
    ctx: StageContext,
    Own { status, mut config }: Own,
    shutdown: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut memory = Memory::default();
    let mut cfg: Arc<AgentConfig> = config.current();
    // A new config is answered by the first check made with it: ok when it
    // ran (and its auto-correct, if any, applied).
    let mut applying: Option<ApplyTicket> = None;
    loop {
        if !cfg.bootstrap.enabled || cfg.bootstrap.role.is_none() {
            status.set_state(
                StageState::Disabled,
                "off (bootstrap.enabled = false); `edge-agent bootstrap plan` works without it",
            );
            if let Some(ticket) = applying.take() {
                ticket.ok();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                update = config.changed() => {
                    cfg = update.config;
                    applying = Some(update.ticket);
                }
            }
            continue;
        }
        let interval = cfg.bootstrap.interval.get();
        let auto_correct = cfg.bootstrap.auto_correct;
        let target = Target::new(&cfg, Path::new("agent.toml"), None);
        let root = target.root.clone();
        let task = tokio::task::spawn_blocking(move || check_once(&target, auto_correct));
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = task => r,
        };
        match result {
            Ok(Ok(check)) => {
                report(&ctx, &status, &root, &check, &mut memory).await;
                if let Some(ticket) = applying.take() {
                    match &check.applied {
                        Some(Err(e)) => ticket.failed(Arc::clone(e)),
                        _ => ticket.ok(),
                    }
                }
            }
            Ok(Err(e)) => {
                status.set_state(StageState::Degraded, format!("check failed: {e}"));
                status.error(e.to_string());
                if let Some(ticket) = applying.take() {
                    ticket.failed(e);
                }
            }
            Err(join) => {
                status.set_state(StageState::Degraded, "check panicked");
                status.error(join.to_string());
                if let Some(ticket) = applying.take() {
                    ticket.failed(join);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
            update = config.changed() => {
                cfg = update.config;
                applying = Some(update.ticket);
            }
        }
    }
}

fn check_once(target: &Target, auto_correct: bool) -> Result<Check, BootstrapError> {
    // As `edge-agent bootstrap` does: the daemon runs as root, and someone
    // who can write under the root could point its writes elsewhere. Each
    // check asks again (ownership and modes can change under it).
    if target.root != Path::new("/")
        && nix::unistd::geteuid().is_root()
        && let Some(why) = super::unsafe_root(&target.root)
    {
        return Err(BootstrapError::UnsafeRoot {
            root: target.root.clone(),
            why,
        });
    }
    let assessment = super::assess(target, Force::none())?;
    let mut applied = None;
    if auto_correct && !assessment.plan.in_sync() {
        let r = super::apply(
            target,
            ApplyOptions {
                force: Force::drift(),
                action: "auto-correct",
            },
        );
        applied = Some(r.map_err(Arc::new));
        // Report what the node looks like after the correction, and the
        // drift seen before it: that is what the fleet must hear.
        return Ok(Check {
            corrected: assessment.plan.drift(),
            assessment: super::assess(target, Force::none())?,
            applied,
        });
    }
    Ok(Check {
        assessment,
        applied,
        corrected: Vec::new(),
    })
}

async fn report(
    ctx: &StageContext,
    status: &StatusReporter,
    root: &Path,
    check: &Check,
    memory: &mut Memory,
) {
    let a = &check.assessment;
    let plan = &a.plan;
    let mut drift = plan.drift();
    // Drift that an auto-correct just undid is still news.
    drift.extend(check.corrected.iter().map(|d| format!("{d} [corrected]")));
    let pending = plan.pending_paths();
    let in_sync = plan
        .files
        .iter()
        .filter(|f| {
            f.status == super::plan::FileStatus::InSync && f.action == super::plan::FileAction::None
        })
        .count();
    let failing: Vec<String> = a
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Warn)
        .map(|f| format!("{}: {}", f.severity.as_str(), f.message))
        .collect();

    let mut fields = Map::new();
    fields.insert("root".into(), root.display().to_string().into());
    fields.insert("drift".into(), drift.clone().into());

    if drift != memory.drift {
        if drift.is_empty() {
            ctx.reports
                .send(Report::node_event(
                    "bootstrap_drift_cleared",
                    "the managed K3s host files are as edge-agent wrote them again",
                    fields.clone(),
                ))
                .await;
        } else {
            ctx.reports
                .send(Report::node_event(
                    "bootstrap_drift",
                    format!(
                        "{} change{} by hand to files or settings edge-agent manages: {}",
                        drift.len(),
                        if drift.len() == 1 { "" } else { "s" },
                        drift.join("; ")
                    ),
                    fields.clone(),
                ))
                .await;
        }
        memory.drift = drift.clone();
    }
    if let Some(applied) = &check.applied {
        let (kind, message) = match applied {
            Ok(r) => (
                "bootstrap_applied",
                format!("auto-correct: {}", r.summary()),
            ),
            Err(e) => (
                "bootstrap_apply_failed",
                format!("auto-correct failed: {e}"),
            ),
        };
        let mut f = fields.clone();
        if let Ok(r) = applied {
            f.insert("generation".into(), r.generation.into());
            f.insert("outcome".into(), r.outcome().into());
        }
        // A correction that keeps failing the same way is one event, not
        // one per interval.
        let repeat = applied.is_err() && memory.last_failure.as_deref() == Some(message.as_str());
        memory.last_failure = applied.is_err().then(|| message.clone());
        if !repeat {
            ctx.reports.send(Report::node_event(kind, message, f)).await;
        }
        if let Err(e) = applied {
            status.error(e.to_string());
        }
    }

    let (state, summary) = if !drift.is_empty() {
        (StageState::Degraded, format!("DRIFT: {}", drift.join("; ")))
    } else if !plan.blockers.is_empty() {
        (
            StageState::Degraded,
            format!("blocked: {}", plan.blockers[0]),
        )
    } else if plan.in_sync() {
        (
            StageState::Running,
            format!("in sync ({in_sync} files, generation {})", a.generation),
        )
    } else {
        (
            StageState::Running,
            format!(
                "{} change{} pending (auto_correct is off): run `edge-agent bootstrap apply`",
                plan.file_changes() + plan.kernel_changes(),
                if plan.file_changes() + plan.kernel_changes() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        )
    };
    status.set_state(state, summary);
    status.details(&BootstrapDetails {
        root: root.display().to_string(),
        k3s: a.k3s.describe(),
        files: FileCounts {
            in_sync,
            drifted: plan.files.iter().filter(|f| f.status.is_drift()).count(),
            pending: pending.len(),
        },
        drift,
        pending,
        generation: a.generation,
        interrupted_apply: a.interrupted,
        last_apply: a.last_apply.clone(),
        preflight: failing,
        last_check: unix_now(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentConfig, Role};
    use crate::report::{self, Class};
    use crate::status::StatusBoard;
    use std::path::PathBuf;

    fn target(root: &Path, state: &Path) -> Target {
        let mut cfg = AgentConfig::default();
        cfg.paths.state_dir = state.to_path_buf();
        cfg.bootstrap.role = Some(Role::Server);
        cfg.bootstrap.root = root.to_path_buf();
        Target::new(&cfg, Path::new("agent.toml"), None)
    }

    fn context() -> (StageContext, tokio::sync::mpsc::Receiver<Report>) {
        let (reports, rx) = report::channel(16);
        (
            StageContext {
                config: crate::reload::Reloader::new(AgentConfig::default()).feed(),
                board: StatusBoard::new(),
                router: crate::control::Router::new(),
                reports,
            },
            rx,
        )
    }

    #[tokio::test]
    async fn drift_becomes_one_node_event_and_its_end_another() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let t = target(root.path(), state.path());
        super::super::apply(
            &t,
            ApplyOptions {
                force: Force::none(),
                action: "apply",
            },
        )
        .unwrap();
        let (ctx, mut rx) = context();
        let status = ctx.board.register("bootstrap");
        let mut last = Memory::default();

        let sysctl: PathBuf = root.path().join("etc/sysctl.d/90-edge-agent.conf");
        let good = std::fs::read_to_string(&sysctl).unwrap();
        std::fs::write(&sysctl, "kernel.panic = 0\n").unwrap();
        for _ in 0..2 {
            let check = check_once(&t, false).unwrap();
            report(&ctx, &status, &t.root, &check, &mut last).await;
        }
        let event = rx.try_recv().expect("a drift event");
        assert_eq!(event.class, Class::NodeEvent);
        assert_eq!(event.payload["kind"], "bootstrap_drift");
        assert!(
            event.payload["message"]
                .as_str()
                .unwrap()
                .contains("90-edge-agent.conf (edited by hand)")
        );
        assert!(
            rx.try_recv().is_err(),
            "the same drift is reported once, not every check"
        );
        let snap = status.current();
        assert_eq!(snap.state, StageState::Degraded);
        assert!(
            snap.summary
                .starts_with("DRIFT: /etc/sysctl.d/90-edge-agent.conf"),
            "{}",
            snap.summary
        );
        assert_eq!(
            std::fs::read_to_string(&sysctl).unwrap(),
            "kernel.panic = 0\n",
            "only reported"
        );

        std::fs::write(&sysctl, &good).unwrap();
        let check = check_once(&t, false).unwrap();
        report(&ctx, &status, &t.root, &check, &mut last).await;
        assert_eq!(
            rx.try_recv().unwrap().payload["kind"],
            "bootstrap_drift_cleared"
        );
        assert!(status.current().summary.starts_with("in sync"));
    }

    #[tokio::test]
    async fn auto_correct_undoes_a_hand_edit_and_says_so() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let t = target(root.path(), state.path());
        let (ctx, mut rx) = context();
        let status = ctx.board.register("bootstrap");
        let mut last = Memory::default();
        // Pending changes are applied too.
        let check = check_once(&t, true).unwrap();
        report(&ctx, &status, &t.root, &check, &mut last).await;
        assert_eq!(rx.try_recv().unwrap().payload["kind"], "bootstrap_applied");
        let modules = root.path().join("etc/modules-load.d/edge-agent.conf");
        let good = std::fs::read_to_string(&modules).unwrap();
        std::fs::write(&modules, "evil\n").unwrap();
        let check = check_once(&t, true).unwrap();
        assert_eq!(
            check.corrected,
            ["/etc/modules-load.d/edge-agent.conf (edited by hand)"],
            "the drift the correction undid is kept beside the plan"
        );
        assert!(check.assessment.plan.drift().is_empty(), "corrected");
        report(&ctx, &status, &t.root, &check, &mut last).await;
        assert_eq!(std::fs::read_to_string(&modules).unwrap(), good);
        let events: Vec<Report> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|r| r.payload["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["bootstrap_drift", "bootstrap_applied"]);
        assert_eq!(
            events[0].payload["drift"],
            serde_json::json!(["/etc/modules-load.d/edge-agent.conf (edited by hand) [corrected]"])
        );
    }
}
