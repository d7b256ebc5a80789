//! Node bootstrap: a reconciler for the K3s, containerd/nydus and
//! kube-proxy host files. Owns the files it manages and their undo log.
//! Never touches a file it does not own: a file it never wrote is left
//! alone, and one edited by hand since it wrote it is reported, not
//! overwritten, unless the operator says `--force`.
//!
//! The flow, each step its own module:
//! - [`render`]: `[bootstrap]` (+ the K3s version) -> the bytes of every file,
//!   the modules and the sysctls. Pure.
//! - [`preflight`]: can this node run it? Findings with what to do.
//! - [`plan`]: rendered vs. on disk vs. undo log -> what apply would do, with
//!   a unified diff per file (`diff`). Pure.
//! - [`apply`]: render everything first, then write each file atomically
//!   (temp + fsync + rename, explicit mode and owner) after recording the new
//!   generation in the undo log ([`ledger`]); load modules and set sysctls
//!   (real root, as root); restart K3s / nydus-snapshotter through systemd
//!   only when a file they read changed. `rollback` restores the previous
//!   generation.
//! - [`stage`]: the daemon's drift checks on a timer.
//!
//! Every node path lives under a root (`/` on a node, a scratch directory
//! in tests and trials); kernel state is only read and changed for `/`.
//! Test hook: `EDGE_AGENT_TEST_APPLY_PAUSE_MS` (see [`fsio`]) pauses between
//! file writes so a test can kill apply half-way; it is for tests only.

pub(crate) mod apply;
mod diff;
pub(crate) mod fsio;
pub(crate) mod k3s;
pub(crate) mod kernel;
pub(crate) mod ledger;
pub(crate) mod plan;
pub(crate) mod preflight;
pub(crate) mod render;
pub(crate) mod stage;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub use self::apply::{ApplyOptions, Force, apply};
pub(crate) use self::apply::{ApplyReport, rollback};
pub(crate) use self::k3s::{K3sInfo, K3sVersion};
pub(crate) use self::stage::start;

use crate::config::{AgentConfig, BootstrapConfig};

use self::fsio::Observed;
use self::ledger::{Generation, LastApply, Ledger, LedgerError};
use self::plan::{KernelObs, Plan, PlanInput};
use self::preflight::{Finding, HostFacts};
use self::render::{Blocker, Rendered};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "bootstrap.role is not set in {config}: there is no desired state to reconcile; set role = \"agent\" or \"server\" in [bootstrap]"
    )]
    NoDesiredState { config: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("apply refused; nothing was written:\n{}", list(.0))]
    Refused(Vec<Blocker>),
    #[error("apply refused by preflight (the node would not work this way); nothing was written:\n{}\nfix these, or pass --force to apply anyway", .0.iter().map(|f| format!("  - {}", f.message)).collect::<Vec<_>>().join("\n"))]
    Preflight(Vec<Finding>),
    #[error("writing {} failed: {source}. Files before it have their new content, the rest their old; the undo log has the new generation pending: run apply again, or rollback", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nothing to roll back: edge-agent has not applied anything under {}", .0.display())]
    NothingToRollBack(PathBuf),
    #[error("rollback refused; nothing was changed:\n{}", list(.0))]
    RollbackRefused(Vec<Blocker>),
    #[error("bootstrap.root {}: refused, nothing read or written: {why}", root.display())]
    UnsafeRoot { root: PathBuf, why: String },
}

fn list(b: &[Blocker]) -> String {
    b.iter()
        .map(|b| format!("  - {b}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a root other than `/` is not safe for root to write under, if it is
/// not: it, or a directory above it, is not owned by root or can be written
/// by group or others (a directory with the sticky bit, like `/tmp`, only
/// above it), or it is a symbolic link. Anyone who can write there could
/// swap a managed file's parent for a symlink and have root write
/// elsewhere.
pub(crate) fn unsafe_root(root: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let shown = root.display();
    match std::fs::symlink_metadata(root) {
        Err(e) => return Some(format!("{shown}: {e}")),
        Ok(md) if md.file_type().is_symlink() => {
            return Some(format!(
                "{shown} is a symbolic link: give the directory it points to, after checking who owns it"
            ));
        }
        Ok(_) => {}
    }
    let real = match std::fs::canonicalize(root) {
        Ok(p) => p,
        Err(e) => return Some(format!("{shown}: {e}")),
    };
    for dir in real.ancestors() {
        let md = match std::fs::metadata(dir) {
            Ok(md) => md,
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        };
        let mode = md.mode();
        let sticky = mode & 0o1000 != 0;
        let what = if dir == real {
            "the root"
        } else {
            "a directory above the root"
        };
        if md.uid() != 0 {
            return Some(format!(
                "{what} {} is owned by uid {}, not root: `chown root {}` or choose a root-owned directory",
                dir.display(),
                md.uid(),
                dir.display()
            ));
        }
        if mode & 0o022 != 0 && (dir == real || !sticky) {
            return Some(format!(
                "{what} {} can be written by group or others (mode {:o}): `chmod go-w {}` or choose another directory",
                dir.display(),
                mode & 0o7777,
                dir.display()
            ));
        }
    }
    None
}

/// `path` (absolute on the node) below `root`. Paths are validated to have
/// no `..`; the filter here keeps that true for paths from the undo log.
pub(crate) fn under_root(root: &Path, path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

/// Where a reconciler works: the config, the root, the undo log.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) cfg: BootstrapConfig,
    pub(crate) root: PathBuf,
    pub(crate) ledger_dir: PathBuf,
    /// For messages: which agent.toml this came from.
    pub(crate) config_path: String,
}

impl Target {
    /// From a loaded config, with `--root` overriding `bootstrap.root`.
    pub fn new(config: &AgentConfig, config_path: &Path, root: Option<&Path>) -> Target {
        let root = root
            .map(Path::to_path_buf)
            .unwrap_or_else(|| config.bootstrap.root.clone());
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        Target {
            cfg: config.bootstrap.clone(),
            ledger_dir: ledger::dir_for(&config.paths.state_dir, &root),
            root,
            config_path: config_path.display().to_string(),
        }
    }

    pub(crate) fn real_root(&self) -> bool {
        self.root == Path::new("/")
    }

    pub(crate) fn k3s_unit(&self) -> String {
        self.cfg.k3s_service()
    }
}

/// Everything known about the node at one moment: the input of `plan`,
/// `apply` and the daemon's checks.
pub struct Assessment {
    pub(crate) k3s: K3sInfo,
    pub(crate) rendered: Rendered,
    pub plan: Plan,
    pub(crate) findings: Vec<Finding>,
    pub(crate) generation: u64,
    pub(crate) interrupted: Option<u64>,
    pub(crate) last_apply: Option<LastApply>,
    pub(crate) observed: BTreeMap<PathBuf, Observed>,
    pub(crate) current: Generation,
}

impl Assessment {
    pub(crate) fn text(&self, root: &Path) -> String {
        plan::render_text(
            &self.plan,
            &plan::Header {
                root,
                k3s: self.k3s.describe(),
                generation: self.generation,
                interrupted: self.interrupted,
            },
            &self.findings,
        )
    }
}

/// Look at the node and decide (no change is made).
pub fn assess(target: &Target, force: Force) -> Result<Assessment, BootstrapError> {
    let ledger = Ledger::open(&target.ledger_dir, &target.root)?;
    assess_with(target, &ledger, force)
}

pub(crate) fn assess_with(
    target: &Target,
    ledger: &Ledger,
    force: Force,
) -> Result<Assessment, BootstrapError> {
    let cfg = &target.cfg;
    if cfg.role.is_none() {
        return Err(BootstrapError::NoDesiredState {
            config: target.config_path.clone(),
        });
    }
    let k3s = k3s::detect(&target.root, &cfg.k3s_bin, &cfg.k3s_version);
    let (secrets, secret_blockers) = render::gather_secrets(cfg, &target.root);
    let mut rendered = render::render(cfg, &k3s, &secrets);
    rendered.blockers.extend(secret_blockers);

    let current = ledger.generation(ledger.current())?;
    let pending = match ledger.pending() {
        Some(p) => Some(ledger.generation(p)?),
        None => None,
    };
    let mut observed = BTreeMap::new();
    let paths = rendered
        .files
        .iter()
        .map(|f| &f.path)
        .chain(current.files.keys())
        .chain(pending.iter().flat_map(|g| g.files.keys()));
    for p in paths {
        observed
            .entry(p.clone())
            .or_insert_with(|| fsio::observe(&under_root(&target.root, p)));
    }

    let facts = HostFacts::gather(cfg, &target.root, &rendered.modules);
    let findings = preflight::findings(cfg, &k3s, &facts);
    let kernel = target.real_root().then(|| KernelObs {
        modules: facts.modules.clone(),
        sysctls: kernel::read_sysctls(rendered.sysctls.keys()),
    });
    let k3s_unit = target.k3s_unit();
    let plan = plan::plan(&PlanInput {
        rendered: &rendered,
        observed: &observed,
        current: &current.files,
        pending: pending.as_ref().map(|g| &g.files),
        kernel: kernel.as_ref(),
        owed_restarts: ledger.owed_restarts(),
        k3s_unit: &k3s_unit,
        nydus_unit: render::NYDUS_UNIT,
        force,
        owner: fsio::wanted_owner(),
    });
    Ok(Assessment {
        k3s,
        rendered,
        plan,
        findings,
        generation: ledger.current(),
        interrupted: ledger.pending(),
        last_apply: ledger.last_apply().cloned(),
        observed,
        current,
    })
}

/// Preflight alone (for `bootstrap preflight`).
pub(crate) fn preflight(target: &Target) -> (K3sInfo, Vec<Finding>) {
    let cfg = &target.cfg;
    let k3s = k3s::detect(&target.root, &cfg.k3s_bin, &cfg.k3s_version);
    let modules = render::modules(cfg);
    let facts = HostFacts::gather(cfg, &target.root, &modules);
    let findings = preflight::findings(cfg, &k3s, &facts);
    (k3s, findings)
}

/// What `status` shows without the daemon: the undo log's last apply.
pub(crate) fn offline_status(config: &AgentConfig) -> Option<crate::status::StageStatus> {
    let b = &config.bootstrap;
    b.role?;
    let root = std::fs::canonicalize(&b.root).unwrap_or_else(|_| b.root.clone());
    let dir = ledger::dir_for(&config.paths.state_dir, &root);
    let ledger = Ledger::open(&dir, &root).ok()?;
    let details = OfflineDetails {
        root: root.display().to_string(),
        generation: ledger.current(),
        interrupted_apply: ledger.pending(),
        last_apply: ledger.last_apply().cloned(),
        owed_restarts: ledger.owed_restarts().to_vec(),
    };
    let summary = match ledger.last_apply() {
        Some(l) => format!(
            "last {} {}: generation {} ({})",
            l.action, l.outcome, l.generation, l.summary
        ),
        None => "never applied (run `edge-agent bootstrap plan`)".into(),
    };
    let state = if b.enabled {
        crate::status::StageState::Stopped
    } else {
        crate::status::StageState::Disabled
    };
    Some(crate::status::StageStatus::offline(
        state, summary, &details,
    ))
}

crate::status::details! {
    /// What `status` shows of bootstrap while the daemon is down: what the
    /// undo log says.
    pub(crate) struct OfflineDetails {
        /// The root the managed paths are under (`/` on a node).
        pub(crate) root: String,
        /// The undo log's current generation.
        pub(crate) generation: u64,
        /// The generation an interrupted apply left pending.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(crate) interrupted_apply: Option<u64>,
        pub(crate) last_apply: Option<LastApply>,
        /// Service restarts an apply still owes.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub(crate) owed_restarts: Vec<String>,
    }
}

#[cfg(test)]
mod tests;
