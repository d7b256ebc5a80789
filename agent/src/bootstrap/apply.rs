//! `apply` and `rollback`: the only code that changes the node.
//!
//! Order of operations (each step finishes before the next starts):
//! 1. take the undo log's lock; render and plan everything;
//! 2. refuse, writing nothing, if anything is in the way (a hand edit or a
//!    foreign file without `--force`, a missing token file, a template that
//!    cannot be rendered, or, on the real root, a failing preflight);
//! 3. record what each newly taken path held before, then write the whole
//!    new generation to the undo log and mark it pending;
//! 4. write, fix or remove each managed file atomically;
//! 5. mark the generation current;
//! 6. real root only: load modules, set sysctls (as root);
//! 7. restart, through systemd, the units that read a changed file; when
//!    systemd is not running, say so and remember the restarts as owed.
//!
//! A crash in step 4 leaves every file old or new (see `fsio`) and the
//! generation pending; the next plan says so and apply finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::fsio::{self, Observed};
use super::ledger::{GenFile, Generation, LastApply, Ledger};
use super::plan::FileAction;
use super::preflight::Severity;
use super::render::{self, Blocker, Reader};
use super::{BootstrapError, Target, assess_with, kernel, under_root};
use crate::status::unix_now;

/// How an apply was asked for.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    pub force: Force,
    /// "apply" (CLI) or "auto-correct" (daemon).
    pub action: &'static str,
}

/// What `--force` overrides. The CLI's `--force` is [`Force::all`]; the
/// daemon's auto-correct is [`Force::drift`]: it undoes hand edits of its
/// own files, but never takes over a file it does not own and never
/// ignores a failing preflight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Force {
    /// Replace managed files edited by hand.
    pub(crate) edits: bool,
    /// Take over existing files edge-agent never wrote.
    pub(crate) foreign: bool,
    /// Apply on the real root although preflight finds failures.
    pub(crate) preflight: bool,
}

impl Force {
    pub fn none() -> Force {
        Force::default()
    }
    pub(crate) fn all() -> Force {
        Force {
            edits: true,
            foreign: true,
            preflight: true,
        }
    }
    pub(crate) fn drift() -> Force {
        Force {
            edits: true,
            ..Force::default()
        }
    }
}

/// What an apply or rollback did. Partial success is a value: files can be
/// written while a sysctl or a restart could not be done.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub(crate) generation: u64,
    /// Nothing needed doing.
    pub(crate) already_in_sync: bool,
    pub(crate) written: Vec<PathBuf>,
    pub(crate) mode_fixed: Vec<PathBuf>,
    pub(crate) removed: Vec<PathBuf>,
    /// Hand-edited copies kept in the undo log.
    pub(crate) displaced: Vec<PathBuf>,
    pub(crate) kernel_done: Vec<String>,
    pub(crate) kernel_problems: Vec<String>,
    pub(crate) restarted: Vec<String>,
    /// Why restarts did not happen (and are owed), if they did not.
    pub(crate) restarts_skipped: Option<String>,
    pub(crate) owed_restarts: Vec<String>,
    pub(crate) notes: Vec<String>,
}

impl ApplyReport {
    pub(crate) fn outcome(&self) -> &'static str {
        if self.kernel_problems.is_empty() && self.owed_restarts.is_empty() {
            "ok"
        } else {
            "partial"
        }
    }

    pub(crate) fn summary(&self) -> String {
        if self.already_in_sync {
            return "already in sync".into();
        }
        let mut parts = vec![format!(
            "{} written, {} removed",
            self.written.len(),
            self.removed.len()
        )];
        if !self.mode_fixed.is_empty() {
            parts.push(format!("{} mode fixed", self.mode_fixed.len()));
        }
        if !self.kernel_done.is_empty() || !self.kernel_problems.is_empty() {
            parts.push(format!(
                "{} kernel settings applied, {} not",
                self.kernel_done.len(),
                self.kernel_problems.len()
            ));
        }
        if !self.restarted.is_empty() {
            parts.push(format!("restarted {}", self.restarted.join(", ")));
        }
        if !self.owed_restarts.is_empty() {
            parts.push(format!("restart owed: {}", self.owed_restarts.join(", ")));
        }
        parts.join("; ")
    }

    /// The text `bootstrap apply` prints.
    pub(crate) fn text(&self, root: &Path) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if self.already_in_sync {
            let _ = writeln!(
                out,
                "in sync: nothing to do (generation {})",
                self.generation
            );
            return out;
        }
        let _ = writeln!(
            out,
            "generation {} under {}",
            self.generation,
            root.display()
        );
        for p in &self.written {
            let _ = writeln!(out, "  wrote   {}", p.display());
        }
        for p in &self.mode_fixed {
            let _ = writeln!(out, "  chmod   {}", p.display());
        }
        for p in &self.removed {
            let _ = writeln!(out, "  removed {}", p.display());
        }
        for p in &self.displaced {
            let _ = writeln!(
                out,
                "  kept the hand-edited {} in the undo log (generation {})",
                p.display(),
                self.generation
            );
        }
        for k in &self.kernel_done {
            let _ = writeln!(out, "  kernel  {k}");
        }
        for k in &self.kernel_problems {
            let _ = writeln!(out, "  kernel  NOT APPLIED: {k}");
        }
        for u in &self.restarted {
            let _ = writeln!(out, "  restarted {u}");
        }
        if let Some(why) = &self.restarts_skipped {
            let _ = writeln!(out, "  not restarted: {why}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        let _ = writeln!(out, "{}: {}", self.outcome(), self.summary());
        out
    }
}

/// Bring the node to the desired state.
pub fn apply(target: &Target, opts: ApplyOptions) -> Result<ApplyReport, BootstrapError> {
    let _lock = Ledger::lock(&target.ledger_dir)?;
    let mut ledger = Ledger::open(&target.ledger_dir, &target.root)?;
    let a = assess_with(target, &ledger, opts.force)?;
    if !a.plan.blockers.is_empty() {
        return Err(BootstrapError::Refused(a.plan.blockers));
    }
    let mut report = ApplyReport {
        generation: ledger.current(),
        notes: a.plan.notes.clone(),
        ..Default::default()
    };
    if a.plan.in_sync() && ledger.pending().is_none() {
        report.already_in_sync = true;
        return Ok(report);
    }

    if target.real_root() && !opts.force.preflight {
        let failing: Vec<_> = a
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .cloned()
            .collect();
        if !failing.is_empty() {
            return Err(BootstrapError::Preflight(failing));
        }
    }

    let real = target.real_root();
    let systemd = kernel::systemd();
    // A unit about to disappear is stopped while systemd still knows it.
    let unit_removed =
        a.plan.files.iter().any(|f| {
            f.path == Path::new(render::NYDUS_UNIT_PATH) && f.action == FileAction::Remove
        });
    if real && unit_removed && systemd.0 {
        let _ = systemctl(&["disable", "--now", render::NYDUS_UNIT]);
    }

    if a.plan.file_changes() > 0 || ledger.pending().is_some() {
        // The new generation: every desired file, as rendered.
        let mut g = Generation {
            created_at: unix_now(),
            k3s_version: a.k3s.version.map(|v| v.to_string()),
            ..Default::default()
        };
        for f in &a.rendered.files {
            g.files.insert(
                f.path.clone(),
                GenFile {
                    content: f.content.clone(),
                    mode: f.mode,
                    sensitive: f.sensitive,
                },
            );
        }
        for f in &a.plan.files {
            if let Some(d) = &f.displaced {
                g.displaced.insert(f.path.clone(), d.clone());
                report.displaced.push(f.path.clone());
            }
        }
        if real {
            for s in &a.plan.sysctls {
                if let (false, Some(live)) = (s.in_sync(), &s.live) {
                    g.sysctls_before.insert(s.name.clone(), live.clone());
                }
            }
        }
        // Originals first: what each path held before we ever wrote it.
        for f in &a.plan.files {
            if f.action == FileAction::Write && !a.current.files.contains_key(&f.path) {
                let obs = a.observed.get(&f.path).cloned().unwrap_or(Observed::Absent);
                ledger.record_original(&f.path, &obs)?;
            }
        }
        let n = ledger.begin(g)?;
        report.generation = n;

        let owner = fsio::wanted_owner();
        for f in &a.plan.files {
            let full = under_root(&target.root, &f.path);
            fsio::remove_stale_temps(&full);
            let result = match (&f.action, &f.desired) {
                (FileAction::Write, Some(d)) => {
                    fsio::pause_between_writes();
                    let dir_mode = if f.path.starts_with(&target.cfg.data_dir) {
                        0o700
                    } else {
                        0o755
                    };
                    fsio::create_parents(&full, dir_mode)
                        .and_then(|()| fsio::write_atomic(&full, &d.content, d.mode, owner))
                        .map(|()| report.written.push(f.path.clone()))
                }
                (FileAction::FixMode, Some(d)) => fsio::fix_mode(&full, d.mode, owner)
                    .map(|()| report.mode_fixed.push(f.path.clone())),
                (FileAction::Remove, _) => {
                    fsio::pause_between_writes();
                    fsio::remove(&full).map(|()| report.removed.push(f.path.clone()))
                }
                _ => Ok(()),
            };
            if let Err(source) = result {
                let err = BootstrapError::Write {
                    path: f.path.clone(),
                    source,
                };
                let _ = ledger.record_outcome(
                    LastApply {
                        at: unix_now(),
                        action: opts.action.into(),
                        generation: n,
                        outcome: "failed".into(),
                        summary: err.to_string(),
                    },
                    ledger.owed_restarts().to_vec(),
                );
                return Err(err);
            }
        }
        ledger.commit(n)?;
    }

    if real {
        apply_kernel(&a, &mut report);
    }

    let restarts = a.plan.restarts.clone();
    restart(
        target,
        &restarts,
        a.plan.daemon_reload,
        unit_removed,
        systemd,
        &mut report,
    );
    ledger.record_outcome(
        LastApply {
            at: unix_now(),
            action: opts.action.into(),
            generation: report.generation,
            outcome: report.outcome().into(),
            summary: report.summary(),
        },
        report.owed_restarts.clone(),
    )?;
    Ok(report)
}

fn apply_kernel(a: &super::Assessment, report: &mut ApplyReport) {
    if !nix::unistd::geteuid().is_root() {
        report
            .kernel_problems
            .push("not running as root: modules and sysctls were left as they are".into());
        return;
    }
    let k = kernel::KernelInfo::read();
    for m in &a.plan.modules {
        if m.load {
            match kernel::load_module(&m.name, &k) {
                Ok(()) => report.kernel_done.push(format!("loaded module {}", m.name)),
                Err(e) => report.kernel_problems.push(e),
            }
        } else if !m.state.available() {
            report
                .kernel_problems
                .push(format!("module {}: {}", m.name, m.state.describe()));
        }
    }
    for s in &a.plan.sysctls {
        if s.in_sync() {
            continue;
        }
        match kernel::write_sysctl(&s.name, &s.want) {
            Ok(()) => report.kernel_done.push(format!("{} = {}", s.name, s.want)),
            Err(e) => report.kernel_problems.push(e),
        }
    }
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("systemctl {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Restart `units` through systemd (real root only). K3s is restarted with
/// `try-restart`: an installed-but-stopped K3s stays stopped. The nydus
/// unit is enabled and restarted.
fn restart(
    target: &Target,
    units: &[String],
    daemon_reload: bool,
    nydus_unit_removed: bool,
    (systemd_running, pid1): (bool, String),
    report: &mut ApplyReport,
) {
    if units.is_empty() {
        return;
    }
    if !target.real_root() {
        report.restarts_skipped = Some(format!(
            "the root is {}, not \"/\": {} would restart on a node",
            target.root.display(),
            units.join(", ")
        ));
        return;
    }
    if !systemd_running {
        report.restarts_skipped = Some(format!(
            "systemd is not running on this machine (PID 1 is {pid1}); restart {} yourself",
            units.join(", ")
        ));
        report.owed_restarts = units.to_vec();
        return;
    }
    if daemon_reload && let Err(e) = systemctl(&["daemon-reload"]) {
        report.kernel_problems.push(e);
    }
    for u in units {
        let result = if u == render::NYDUS_UNIT {
            if nydus_unit_removed {
                continue;
            }
            systemctl(&["enable", u]).and_then(|()| systemctl(&["restart", u]))
        } else {
            systemctl(&["try-restart", u])
        };
        match result {
            Ok(()) => report.restarted.push(u.clone()),
            Err(e) => {
                report.owed_restarts.push(u.clone());
                report.kernel_problems.push(e);
            }
        }
    }
}

/// What rollback puts at a path: bytes, mode, owner (None: remove it).
type Restore = (Vec<u8>, u32, Option<(u32, u32)>);

/// Restore the previous generation: the one before the current, or, after
/// an interrupted apply, the current one. Paths the restored generation
/// does not have get back what they held before edge-agent first wrote
/// them (or disappear, if nothing was there).
pub(crate) fn rollback(target: &Target, force: bool) -> Result<ApplyReport, BootstrapError> {
    let _lock = Ledger::lock(&target.ledger_dir)?;
    let mut ledger = Ledger::open(&target.ledger_dir, &target.root)?;
    let (from_n, to_n) = match (ledger.pending(), ledger.current()) {
        (Some(p), cur) => (p, cur),
        (None, 0) => return Err(BootstrapError::NothingToRollBack(target.root.clone())),
        (None, cur) => (cur, cur - 1),
    };
    let from = ledger.generation(from_n)?;
    let to = ledger.generation(to_n)?;
    let current = if ledger.pending().is_some() {
        Some(ledger.generation(ledger.current())?)
    } else {
        None
    };

    let paths: BTreeSet<&PathBuf> = from.files.keys().chain(to.files.keys()).collect();
    let mut blockers = Vec::new();
    let mut actions: Vec<(PathBuf, Option<Restore>)> = Vec::new();
    let mut displaced = BTreeMap::new();
    for path in paths {
        let observed = fsio::observe(&under_root(&target.root, path));
        let ours = |c: &[u8]| {
            from.files.get(path).is_some_and(|g| g.content == c)
                || to.files.get(path).is_some_and(|g| g.content == c)
                || current
                    .as_ref()
                    .and_then(|g| g.files.get(path))
                    .is_some_and(|g| g.content == c)
        };
        match &observed {
            Observed::File { content, .. } if !ours(content) => {
                if force {
                    displaced.insert(path.clone(), content.clone());
                } else {
                    blockers.push(Blocker {
                        key: None,
                        message: format!(
                            "{} was edited by hand since edge-agent wrote it; rollback keeps it: pass --force to roll back anyway (the edited copy stays in the undo log)",
                            path.display()
                        ),
                    });
                    continue;
                }
            }
            Observed::NotAFile(why) | Observed::Unreadable(why) => {
                blockers.push(Blocker {
                    key: None,
                    message: format!("{} is {why}; fix it by hand", path.display()),
                });
                continue;
            }
            _ => {}
        }
        let want = match to.files.get(path) {
            Some(g) => Some((g.content.clone(), g.mode, fsio::wanted_owner())),
            None => match ledger.original(path) {
                Some(o) if o.existed => {
                    let content = ledger.original_content(o)?.unwrap_or_default();
                    let owner = nix::unistd::geteuid().is_root().then_some((o.uid, o.gid));
                    Some((content, o.mode, owner))
                }
                _ => None,
            },
        };
        let same = match (&want, &observed) {
            (Some((c, m, _)), Observed::File { content, mode, .. }) => c == content && m == mode,
            (None, Observed::Absent) => true,
            _ => false,
        };
        if !same {
            actions.push((path.clone(), want));
        }
    }
    if !blockers.is_empty() {
        return Err(BootstrapError::RollbackRefused(blockers));
    }

    let mut report = ApplyReport {
        generation: to_n,
        ..Default::default()
    };
    if !displaced.is_empty() {
        // Keep hand edits the forced rollback replaces, as a generation-like
        // record next to the one being left.
        report.displaced = displaced.keys().cloned().collect();
        let keep = ledger.dir().join(format!("displaced-{}", unix_now()));
        for (i, (p, c)) in displaced.iter().enumerate() {
            let _ = std::fs::create_dir_all(&keep);
            let _ = fsio::write_atomic(&keep.join(i.to_string()), c, 0o600, None);
            let _ = std::fs::write(
                keep.join(format!("{i}.path")),
                p.to_string_lossy().as_bytes(),
            );
        }
    }

    let real = target.real_root();
    let systemd = kernel::systemd();
    let nydus_unit = PathBuf::from(render::NYDUS_UNIT_PATH);
    let unit_removed = actions.iter().any(|(p, w)| *p == nydus_unit && w.is_none());
    if real && unit_removed && systemd.0 {
        let _ = systemctl(&["disable", "--now", render::NYDUS_UNIT]);
    }
    let mut readers = BTreeSet::new();
    for (path, want) in &actions {
        let full = under_root(&target.root, path);
        fsio::remove_stale_temps(&full);
        let result = match want {
            Some((content, mode, owner)) => fsio::create_parents(&full, 0o755)
                .and_then(|()| fsio::write_atomic(&full, content, *mode, *owner))
                .map(|()| report.written.push(path.clone())),
            None => fsio::remove(&full).map(|()| report.removed.push(path.clone())),
        };
        result.map_err(|source| BootstrapError::Write {
            path: path.clone(),
            source,
        })?;
        if let Some(r) = super::plan::reader_of(path) {
            readers.insert(r);
        }
    }
    ledger.set_current(to_n)?;

    if real && nix::unistd::geteuid().is_root() {
        for (k, v) in &from.sysctls_before {
            match kernel::write_sysctl(k, v) {
                Ok(()) => report.kernel_done.push(format!("{k} = {v} (restored)")),
                Err(e) => report.kernel_problems.push(e),
            }
        }
        if !actions.is_empty() {
            report
                .notes
                .push("loaded kernel modules stay loaded (unloading one in use is unsafe)".into());
        }
    }
    let mut units = Vec::new();
    if readers.contains(&Reader::Nydus) && !unit_removed {
        units.push(render::NYDUS_UNIT.to_string());
    }
    if readers.contains(&Reader::K3s) {
        units.push(target.k3s_unit());
    }
    let reload = actions.iter().any(|(p, _)| *p == nydus_unit);
    restart(target, &units, reload, unit_removed, systemd, &mut report);
    ledger.record_outcome(
        LastApply {
            at: unix_now(),
            action: "rollback".into(),
            generation: to_n,
            outcome: report.outcome().into(),
            summary: report.summary(),
        },
        report.owed_restarts.clone(),
    )?;
    Ok(report)
}
