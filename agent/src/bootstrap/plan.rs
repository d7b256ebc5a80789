//! The plan: what `apply` would change, decided from what should be
//! (rendered), what is (observed) and what edge-agent last wrote (the undo
//! log). Pure: no I/O, so every case (hand edit, foreign file, interrupted
//! apply, ...) is a unit test.
//!
//! Ownership rules, the heart of "never touch a file it does not own":
//! - a path is ours when the current generation lists it;
//! - on disk, "ours" means the bytes of the current generation, or of an
//!   interrupted (pending) one;
//! - different bytes in one of our files are a hand edit: reported, kept,
//!   replaced only with `force` (the edited copy goes into the undo log);
//! - an existing file we never wrote is foreign: left alone unless `force`
//!   (its bytes become the original that rollback restores). A foreign file
//!   that already holds exactly the desired bytes is simply adopted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::fsio::Observed;
use super::kernel::ModuleState;
use super::ledger::GenFile;
use super::preflight::{Finding, Severity};
use super::render::{Blocker, Reader, Rendered, RenderedFile};

/// What is true of one managed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileStatus {
    InSync,
    /// Not there yet.
    New,
    /// Ours, unchanged since we wrote it, but the desired bytes changed.
    Changed,
    /// Ours, no longer wanted.
    Unwanted,
    /// Ours, deleted by hand.
    Missing,
    /// Ours with the right bytes, but mode or owner changed by hand.
    ModeChanged {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Ours, edited by hand since the last apply.
    Edited,
    /// There, but edge-agent never wrote it.
    Foreign,
    /// Not a regular file, or unreadable: nothing is done to it.
    Blocked(String),
}

impl FileStatus {
    /// A change someone made on the node (not a change of desired state).
    pub(crate) fn is_drift(&self) -> bool {
        matches!(
            self,
            FileStatus::Missing | FileStatus::ModeChanged { .. } | FileStatus::Edited
        )
    }

    pub(crate) fn word(&self) -> &'static str {
        match self {
            FileStatus::InSync => "in sync",
            FileStatus::New => "new",
            FileStatus::Changed => "changed",
            FileStatus::Unwanted => "no longer wanted",
            FileStatus::Missing => "deleted by hand",
            FileStatus::ModeChanged { .. } => "mode/owner changed by hand",
            FileStatus::Edited => "edited by hand",
            FileStatus::Foreign => "not edge-agent's",
            FileStatus::Blocked(_) => "blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileAction {
    None,
    Write,
    FixMode,
    Remove,
    /// Would need `--force` (or cannot be done at all).
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileItem {
    pub(crate) path: PathBuf,
    pub(crate) status: FileStatus,
    pub(crate) action: FileAction,
    /// What to write (for Write/FixMode).
    pub(crate) desired: Option<RenderedFile>,
    /// Who reads it (restart mapping); from the generation when unwanted.
    pub(crate) reader: Option<Reader>,
    pub(crate) sensitive: bool,
    /// Unified diff of on-disk -> desired, unless sensitive.
    pub(crate) diff: Option<String>,
    /// The bytes on disk when `force` replaces a hand edit or foreign file.
    pub(crate) displaced: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleItem {
    pub(crate) name: String,
    pub(crate) state: ModuleState,
    /// `modprobe` it now.
    pub(crate) load: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SysctlItem {
    pub(crate) name: String,
    pub(crate) want: String,
    /// None: the kernel has no such setting.
    pub(crate) live: Option<String>,
}

impl SysctlItem {
    pub(crate) fn in_sync(&self) -> bool {
        self.live.as_deref() == Some(self.want.as_str())
    }
}

/// Kernel state, observed only for the real root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KernelObs {
    pub(crate) modules: BTreeMap<String, ModuleState>,
    pub(crate) sysctls: BTreeMap<String, Option<String>>,
}

/// Everything the planner needs.
pub(crate) struct PlanInput<'a> {
    pub(crate) rendered: &'a Rendered,
    /// On-disk state of every path in `rendered` and in the generations.
    pub(crate) observed: &'a BTreeMap<PathBuf, Observed>,
    pub(crate) current: &'a BTreeMap<PathBuf, GenFile>,
    /// An interrupted apply's generation, whose bytes also count as ours.
    pub(crate) pending: Option<&'a BTreeMap<PathBuf, GenFile>>,
    pub(crate) kernel: Option<&'a KernelObs>,
    /// Units whose restart the last apply could not do.
    pub(crate) owed_restarts: &'a [String],
    /// systemd unit names for K3s and nydus-snapshotter.
    pub(crate) k3s_unit: &'a str,
    pub(crate) nydus_unit: &'a str,
    pub(crate) force: super::apply::Force,
    /// The owner new files get, when the reconciler can set it.
    pub(crate) owner: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub(crate) files: Vec<FileItem>,
    pub(crate) modules: Vec<ModuleItem>,
    pub(crate) sysctls: Vec<SysctlItem>,
    /// Units to restart, in order (nydus before K3s).
    pub(crate) restarts: Vec<String>,
    /// `systemctl daemon-reload` first (a unit file changes).
    pub(crate) daemon_reload: bool,
    pub(crate) blockers: Vec<Blocker>,
    pub(crate) notes: Vec<String>,
    pub(crate) kernel_checked: bool,
}

impl Plan {
    pub(crate) fn file_changes(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.action != FileAction::None)
            .count()
    }

    pub(crate) fn kernel_changes(&self) -> usize {
        self.modules.iter().filter(|m| m.load).count()
            + self
                .sysctls
                .iter()
                .filter(|s| !s.in_sync() && s.live.is_some())
                .count()
    }

    /// Nothing to do and nothing in the way.
    pub fn in_sync(&self) -> bool {
        self.file_changes() == 0
            && self.kernel_changes() == 0
            && self.restarts.is_empty()
            && self.blockers.is_empty()
    }

    /// Changes made on the node by hand: files, and sysctls whose live
    /// value differs although our sysctl file is in place.
    pub(crate) fn drift(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .files
            .iter()
            .filter(|f| f.status.is_drift())
            .map(|f| format!("{} ({})", f.path.display(), f.status.word()))
            .collect();
        let sysctl_file_ok = self
            .files
            .iter()
            .find(|f| f.path == Path::new(super::render::SYSCTL_PATH))
            .is_some_and(|f| f.status == FileStatus::InSync);
        if sysctl_file_ok {
            for s in &self.sysctls {
                if let Some(live) = s.live.as_deref().filter(|_| !s.in_sync()) {
                    d.push(format!("sysctl {} = {live} (want {})", s.name, s.want));
                }
            }
        }
        d
    }

    /// Paths with something to do, for status lines.
    pub(crate) fn pending_paths(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| f.action != FileAction::None && !f.status.is_drift())
            .map(|f| format!("{} ({})", f.path.display(), f.status.word()))
            .collect()
    }
}

fn unified_diff(path: &Path, old: &[u8], new: &[u8]) -> String {
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    let shown = path.display().to_string();
    super::diff::unified(
        &old,
        &new,
        &format!("{shown} (on disk)"),
        &format!("{shown} (desired)"),
    )
}

/// Decide. Blockers from rendering are carried over; refused files add
/// their own.
pub(crate) fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan {
        blockers: input.rendered.blockers.clone(),
        notes: input.rendered.notes.clone(),
        ..Default::default()
    };
    let desired: BTreeMap<&Path, &RenderedFile> = input
        .rendered
        .files
        .iter()
        .map(|f| (f.path.as_path(), f))
        .collect();
    let mut paths: BTreeSet<&Path> = desired.keys().copied().collect();
    paths.extend(input.current.keys().map(PathBuf::as_path));
    if let Some(p) = input.pending {
        paths.extend(p.keys().map(PathBuf::as_path));
    }

    // Keep the rendered order first (it reads like the config), then the
    // files only the undo log knows.
    let mut ordered: Vec<&Path> = input
        .rendered
        .files
        .iter()
        .map(|f| f.path.as_path())
        .collect();
    ordered.extend(paths.iter().copied().filter(|p| !desired.contains_key(p)));

    for path in ordered {
        let want = desired.get(path).copied();
        let ours = input.current.get(path);
        let pend = input.pending.and_then(|p| p.get(path));
        let observed = input
            .observed
            .get(path)
            .cloned()
            .unwrap_or(Observed::Absent);
        let item = decide(path, want, ours, pend, &observed, input);
        if item.action == FileAction::Refuse {
            let why = match &item.status {
                FileStatus::Edited => "was edited by hand since the last apply; it is kept: look at the diff, then `edge-agent bootstrap apply --force` to replace it (the edited copy stays in the undo log), or put the change into agent.toml".to_string(),
                FileStatus::Foreign => "exists and was not written by edge-agent; it is left alone: move it aside, or `edge-agent bootstrap apply --force` to take it over (rollback restores it)".to_string(),
                FileStatus::Blocked(why) => format!("{why}; edge-agent will not replace it: fix it by hand"),
                _ => "cannot be changed".to_string(),
            };
            plan.blockers.push(Blocker {
                key: None,
                message: format!("{} {why}", path.display()),
            });
        }
        plan.files.push(item);
    }

    // Restarts: who reads a file that will change.
    let mut readers: BTreeSet<Reader> = BTreeSet::new();
    for f in &plan.files {
        if matches!(f.action, FileAction::Write | FileAction::Remove) {
            if let Some(r) = f.reader {
                readers.insert(r);
            }
            if f.path == Path::new(super::render::NYDUS_UNIT_PATH) {
                plan.daemon_reload = true;
            }
        }
    }
    // An interrupted apply may have written files its readers have not
    // seen yet: restart them when that apply is finished.
    if let Some(pending) = input.pending {
        let changed = |p: &PathBuf| {
            pending.get(p).map(|g| &g.content) != input.current.get(p).map(|g| &g.content)
        };
        for path in pending.keys().chain(input.current.keys()) {
            if changed(path)
                && let Some(r) = reader_of(path)
            {
                readers.insert(r);
            }
        }
    }
    let mut restarts: Vec<String> = Vec::new();
    if readers.contains(&Reader::Nydus) {
        restarts.push(input.nydus_unit.to_string());
    }
    if readers.contains(&Reader::K3s) {
        restarts.push(input.k3s_unit.to_string());
    }
    for owed in input.owed_restarts {
        if !restarts.contains(owed) {
            restarts.push(owed.clone());
        }
    }
    // nydus-snapshotter first: K3s's containerd connects to it at start.
    restarts.sort_by_key(|u| u != input.nydus_unit);
    plan.restarts = restarts;

    if let Some(k) = input.kernel {
        plan.kernel_checked = true;
        for name in &input.rendered.modules {
            let state = k
                .modules
                .get(name)
                .cloned()
                .unwrap_or(ModuleState::Unknown("not checked".into()));
            let load = state == ModuleState::Loadable;
            plan.modules.push(ModuleItem {
                name: name.clone(),
                state,
                load,
            });
        }
        for (name, want) in &input.rendered.sysctls {
            plan.sysctls.push(SysctlItem {
                name: name.clone(),
                want: want.clone(),
                live: k.sysctls.get(name).cloned().flatten(),
            });
        }
    }
    plan
}

fn decide(
    path: &Path,
    want: Option<&RenderedFile>,
    ours: Option<&GenFile>,
    pend: Option<&GenFile>,
    observed: &Observed,
    input: &PlanInput<'_>,
) -> FileItem {
    let reader = want.map(|w| w.reader).or_else(|| reader_of(path));
    let sensitive = want.is_some_and(|w| w.sensitive)
        || ours.is_some_and(|g| g.sensitive)
        || pend.is_some_and(|g| g.sensitive);
    let mut item = FileItem {
        path: path.to_path_buf(),
        status: FileStatus::InSync,
        action: FileAction::None,
        desired: want.cloned(),
        reader,
        sensitive,
        diff: None,
        displaced: None,
    };
    let diff_to = |old: &[u8], item: &mut FileItem| {
        if !item.sensitive {
            let new = item.desired.as_ref().map_or(&[][..], |d| &d.content[..]);
            item.diff = Some(unified_diff(path, old, new));
        }
    };

    let (content, mode, uid, gid) = match observed {
        Observed::File {
            content,
            mode,
            uid,
            gid,
        } => (content, *mode, *uid, *gid),
        Observed::Absent => {
            match (want, ours.or(pend)) {
                (Some(_), None) => {
                    item.status = FileStatus::New;
                    item.action = FileAction::Write;
                    diff_to(b"", &mut item);
                }
                (Some(_), Some(_)) => {
                    item.status = FileStatus::Missing;
                    item.action = FileAction::Write;
                    diff_to(b"", &mut item);
                }
                // Ours, unwanted, already gone: only the log forgets it.
                (None, _) => {}
            }
            return item;
        }
        Observed::NotAFile(why) | Observed::Unreadable(why) => {
            if want.is_some() || ours.is_some() {
                item.status = FileStatus::Blocked(format!("is {why}"));
                item.action = FileAction::Refuse;
            }
            return item;
        }
    };

    let is_ours = ours.is_some() || pend.is_some();
    let unchanged_since_apply =
        ours.is_some_and(|g| g.content == *content) || pend.is_some_and(|g| g.content == *content);
    match want {
        Some(w) if w.content == *content => {
            let owner_ok = input.owner.is_none_or(|o| o == (uid, gid));
            if is_ours && (mode != w.mode || !owner_ok) {
                item.status = FileStatus::ModeChanged { mode, uid, gid };
                item.action = FileAction::FixMode;
            } else if !is_ours {
                // Same bytes, someone else's file: adopt it (the original
                // is recorded, so rollback gives it back unchanged).
                item.status = FileStatus::InSync;
                item.action = FileAction::Write;
            }
        }
        Some(_) if is_ours && unchanged_since_apply => {
            item.status = FileStatus::Changed;
            item.action = FileAction::Write;
            diff_to(content, &mut item);
        }
        Some(_) => {
            item.status = if is_ours {
                FileStatus::Edited
            } else {
                FileStatus::Foreign
            };
            diff_to(content, &mut item);
            let forced = if is_ours {
                input.force.edits
            } else {
                input.force.foreign
            };
            if forced {
                item.action = FileAction::Write;
                item.displaced = Some(content.clone());
            } else {
                item.action = FileAction::Refuse;
            }
        }
        None if !is_ours => {}
        None if unchanged_since_apply => {
            item.status = FileStatus::Unwanted;
            item.action = FileAction::Remove;
            diff_to(content, &mut item);
        }
        None => {
            item.status = FileStatus::Edited;
            diff_to(content, &mut item);
            if input.force.edits {
                item.action = FileAction::Remove;
                item.displaced = Some(content.clone());
            } else {
                item.action = FileAction::Refuse;
            }
        }
    }
    item
}

/// Who reads a path the undo log knows but the desired state no longer
/// renders (e.g. the containerd template of an older K3s generation).
pub(crate) fn reader_of(path: &Path) -> Option<Reader> {
    let s = path.to_string_lossy();
    if s.starts_with("/etc/rancher/k3s/") || s.ends_with(".toml.tmpl") {
        Some(Reader::K3s)
    } else if s.starts_with("/etc/nydus/") || s.ends_with(super::render::NYDUS_UNIT) {
        Some(Reader::Nydus)
    } else {
        Some(Reader::Boot)
    }
}

/// The context a plan is printed with.
pub(crate) struct Header<'a> {
    pub(crate) root: &'a Path,
    pub(crate) k3s: String,
    pub(crate) generation: u64,
    pub(crate) interrupted: Option<u64>,
}

/// The human-readable plan (what `bootstrap plan` prints).
pub(crate) fn render_text(plan: &Plan, header: &Header<'_>, findings: &[Finding]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bootstrap plan for root {}  (K3s {}; undo log at generation {})",
        header.root.display(),
        header.k3s,
        header.generation
    );
    if let Some(p) = header.interrupted {
        let _ = writeln!(
            out,
            "!! an apply was interrupted while writing generation {p}: every file is either its old or its new version; apply again to finish, or rollback"
        );
    }

    let _ = writeln!(out, "\nfiles");
    for f in &plan.files {
        let mark = match (&f.action, &f.status) {
            (FileAction::Refuse, _) => "!",
            (_, FileStatus::New) => "+",
            (FileAction::Remove, _) => "-",
            (FileAction::None, _) => "=",
            _ => "~",
        };
        let what = match (&f.status, &f.action) {
            (FileStatus::InSync, FileAction::Write) => "in sync; adopted on apply".to_string(),
            (FileStatus::ModeChanged { mode, uid, gid }, _) => format!(
                "mode/owner changed by hand to {mode:04o} {uid}:{gid}; apply restores {:04o}",
                f.desired.as_ref().map_or(0, |d| d.mode)
            ),
            (s, FileAction::Write) if f.displaced.is_some() => {
                format!(
                    "{}; --force replaces it (the edited copy goes to the undo log)",
                    s.word()
                )
            }
            (FileStatus::Missing, _) => "deleted by hand; apply writes it again".into(),
            (s, FileAction::Remove) => format!("{}; apply removes it", s.word()),
            (FileStatus::Blocked(why), _) => why.clone(),
            (s, FileAction::Refuse) => format!("{}; kept (needs --force)", s.word()),
            (s, _) => s.word().to_string(),
        };
        let mode = f
            .desired
            .as_ref()
            .map(|d| format!("  [{:04o}]", d.mode))
            .unwrap_or_default();
        let _ = writeln!(out, "  {mark} {}{mode}  {what}", f.path.display());
        if f.status != FileStatus::InSync {
            if f.sensitive {
                if f.action != FileAction::None {
                    let _ = writeln!(
                        out,
                        "      (contents not shown: the file holds registry credentials)"
                    );
                }
            } else if let Some(d) = &f.diff {
                for line in d.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
    }

    let _ = writeln!(out, "\nkernel");
    if plan.kernel_checked {
        for m in &plan.modules {
            let mark = if m.load {
                "~"
            } else if m.state.available() {
                "="
            } else {
                "!"
            };
            let act = if m.load { "; apply loads it" } else { "" };
            let _ = writeln!(
                out,
                "  {mark} module {}: {}{act}",
                m.name,
                m.state.describe()
            );
        }
        for s in &plan.sysctls {
            match &s.live {
                Some(l) if s.in_sync() => {
                    let _ = writeln!(out, "  = sysctl {} = {l}", s.name);
                }
                Some(l) => {
                    let _ = writeln!(out, "  ~ sysctl {}: {l} -> {}", s.name, s.want);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  ! sysctl {}: not in this kernel (its module is not loaded or not built); left to boot",
                        s.name
                    );
                }
            }
        }
    } else {
        let _ = writeln!(
            out,
            "  not checked: the root is not \"/\", so modules and sysctls belong to another machine (they are in the files above)"
        );
    }

    let _ = writeln!(out, "\nrestarts");
    if plan.restarts.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        if header.root != Path::new("/") {
            let _ = writeln!(
                out,
                "  (on a node; apply into a scratch root restarts nothing)"
            );
        }
        if plan.daemon_reload {
            let _ = writeln!(out, "  systemctl daemon-reload");
        }
        for u in &plan.restarts {
            let _ = writeln!(out, "  restart {u}");
        }
    }

    let shown: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity >= Severity::Info)
        .collect();
    if !shown.is_empty() {
        let _ = writeln!(out, "\npreflight");
        for f in shown {
            let _ = writeln!(out, "  {:<4} {}", f.severity.as_str(), f.message);
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\nnotes");
        for n in &plan.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    if !plan.blockers.is_empty() {
        let _ = writeln!(out, "\napply will refuse until these are fixed");
        for b in &plan.blockers {
            let _ = writeln!(out, "  ! {b}");
        }
    }
    let _ = writeln!(out);
    if plan.in_sync() {
        let _ = writeln!(out, "in sync: nothing to do");
    } else {
        let files = plan.file_changes();
        let kernel = plan.kernel_changes();
        let _ = writeln!(
            out,
            "pending: {files} file change{}, {kernel} kernel change{}, {} restart{}{}",
            if files == 1 { "" } else { "s" },
            if kernel == 1 { "" } else { "s" },
            plan.restarts.len(),
            if plan.restarts.len() == 1 { "" } else { "s" },
            if plan.blockers.is_empty() {
                " -- run `edge-agent bootstrap apply`"
            } else {
                ""
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/etc/sysctl.d/90-edge-agent.conf";

    fn rendered(content: &str) -> Rendered {
        Rendered {
            files: vec![RenderedFile {
                path: PathBuf::from(P),
                content: content.as_bytes().to_vec(),
                mode: 0o644,
                reader: Reader::Boot,
                sensitive: false,
            }],
            ..Default::default()
        }
    }

    fn on_disk(content: &str, mode: u32) -> BTreeMap<PathBuf, Observed> {
        BTreeMap::from([(
            PathBuf::from(P),
            Observed::File {
                content: content.as_bytes().to_vec(),
                mode,
                uid: 0,
                gid: 0,
            },
        )])
    }

    fn gen_of(content: &str) -> BTreeMap<PathBuf, GenFile> {
        BTreeMap::from([(
            PathBuf::from(P),
            GenFile {
                content: content.as_bytes().to_vec(),
                mode: 0o644,
                sensitive: false,
            },
        )])
    }

    fn run(
        r: &Rendered,
        obs: &BTreeMap<PathBuf, Observed>,
        current: &BTreeMap<PathBuf, GenFile>,
        pending: Option<&BTreeMap<PathBuf, GenFile>>,
        force: bool,
    ) -> Plan {
        let force = if force {
            crate::bootstrap::apply::Force::all()
        } else {
            crate::bootstrap::apply::Force::none()
        };
        plan(&PlanInput {
            rendered: r,
            observed: obs,
            current,
            pending,
            kernel: None,
            owed_restarts: &[],
            k3s_unit: "k3s-agent.service",
            nydus_unit: "nydus-snapshotter.service",
            force,
            owner: Some((0, 0)),
        })
    }

    #[test]
    fn a_new_file_is_written_and_shown_as_a_diff() {
        let p = run(
            &rendered("a = 1\n"),
            &BTreeMap::new(),
            &BTreeMap::new(),
            None,
            false,
        );
        assert_eq!(p.files[0].status, FileStatus::New);
        assert_eq!(p.files[0].action, FileAction::Write);
        assert!(p.files[0].diff.as_ref().unwrap().contains("+a = 1"));
        assert!(!p.in_sync());
    }

    #[test]
    fn our_unchanged_file_with_the_desired_bytes_is_in_sync() {
        let p = run(
            &rendered("a = 1\n"),
            &on_disk("a = 1\n", 0o644),
            &gen_of("a = 1\n"),
            None,
            false,
        );
        assert!(p.in_sync(), "{p:#?}");
        assert!(p.drift().is_empty());
    }

    #[test]
    fn a_hand_edit_is_drift_kept_without_force_and_replaced_with_it() {
        let r = rendered("a = 1\n");
        let obs = on_disk("a = 2\n", 0o644);
        let g = gen_of("a = 1\n");
        let p = run(&r, &obs, &g, None, false);
        assert_eq!(p.files[0].status, FileStatus::Edited);
        assert_eq!(p.files[0].action, FileAction::Refuse);
        assert_eq!(p.drift().len(), 1);
        assert!(p.blockers[0].message.contains("edited by hand"));
        let p = run(&r, &obs, &g, None, true);
        assert_eq!(p.files[0].action, FileAction::Write);
        assert_eq!(p.files[0].displaced.as_deref(), Some(&b"a = 2\n"[..]));
        assert!(p.blockers.is_empty());
    }

    #[test]
    fn a_desired_change_to_our_untouched_file_is_pending_not_drift() {
        let p = run(
            &rendered("a = 3\n"),
            &on_disk("a = 1\n", 0o644),
            &gen_of("a = 1\n"),
            None,
            false,
        );
        assert_eq!(p.files[0].status, FileStatus::Changed);
        assert!(p.drift().is_empty());
        assert_eq!(p.pending_paths().len(), 1);
    }

    #[test]
    fn a_foreign_file_is_left_alone_unless_forced_and_identical_bytes_are_adopted() {
        let r = rendered("a = 1\n");
        let p = run(
            &r,
            &on_disk("operator\n", 0o644),
            &BTreeMap::new(),
            None,
            false,
        );
        assert_eq!(p.files[0].status, FileStatus::Foreign);
        assert_eq!(p.files[0].action, FileAction::Refuse);
        let p = run(
            &r,
            &on_disk("a = 1\n", 0o644),
            &BTreeMap::new(),
            None,
            false,
        );
        assert_eq!(p.files[0].status, FileStatus::InSync);
        assert_eq!(p.files[0].action, FileAction::Write);
        assert!(p.blockers.is_empty());
    }

    #[test]
    fn bytes_of_an_interrupted_apply_count_as_ours() {
        let pend = gen_of("a = 9\n");
        let p = run(
            &rendered("a = 9\n"),
            &on_disk("a = 9\n", 0o644),
            &gen_of("a = 1\n"),
            Some(&pend),
            false,
        );
        assert!(p.in_sync(), "{p:#?}");
        let p = run(
            &rendered("a = 5\n"),
            &on_disk("a = 9\n", 0o644),
            &gen_of("a = 1\n"),
            Some(&pend),
            false,
        );
        assert_eq!(p.files[0].status, FileStatus::Changed);
    }

    #[test]
    fn finishing_an_interrupted_apply_restarts_the_readers_of_what_it_wrote() {
        let path = "/etc/rancher/k3s/config.yaml.d/50-edge-agent.yaml";
        let file = |c: &str| GenFile {
            content: c.as_bytes().to_vec(),
            mode: 0o600,
            sensitive: false,
        };
        let current = BTreeMap::from([(PathBuf::from(path), file("old\n"))]);
        let pending = BTreeMap::from([(PathBuf::from(path), file("new\n"))]);
        let r = Rendered {
            files: vec![RenderedFile {
                path: PathBuf::from(path),
                content: b"new\n".to_vec(),
                mode: 0o600,
                reader: Reader::K3s,
                sensitive: false,
            }],
            ..Default::default()
        };
        // The crash came after the write: the file is already new.
        let obs = BTreeMap::from([(
            PathBuf::from(path),
            Observed::File {
                content: b"new\n".to_vec(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        )]);
        let p = run(&r, &obs, &current, Some(&pending), false);
        assert_eq!(p.file_changes(), 0);
        assert_eq!(p.restarts, ["k3s-agent.service"]);
    }

    #[test]
    fn a_chmod_by_hand_is_drift_that_apply_fixes_without_force() {
        let p = run(
            &rendered("a = 1\n"),
            &on_disk("a = 1\n", 0o666),
            &gen_of("a = 1\n"),
            None,
            false,
        );
        assert!(matches!(
            p.files[0].status,
            FileStatus::ModeChanged { mode: 0o666, .. }
        ));
        assert_eq!(p.files[0].action, FileAction::FixMode);
        assert_eq!(p.drift().len(), 1);
        assert!(p.restarts.is_empty(), "a mode fix restarts nothing");
    }

    #[test]
    fn our_unwanted_file_is_removed_and_its_reader_restarted() {
        let path = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl";
        let current = BTreeMap::from([(
            PathBuf::from(path),
            GenFile {
                content: b"old".to_vec(),
                mode: 0o600,
                sensitive: false,
            },
        )]);
        let obs = BTreeMap::from([(
            PathBuf::from(path),
            Observed::File {
                content: b"old".to_vec(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        )]);
        let p = run(&Rendered::default(), &obs, &current, None, false);
        assert_eq!(p.files[0].status, FileStatus::Unwanted);
        assert_eq!(p.files[0].action, FileAction::Remove);
        assert_eq!(p.restarts, ["k3s-agent.service"]);
    }

    #[test]
    fn a_sensitive_file_never_shows_its_bytes() {
        let mut r = rendered("password: hunter2\n");
        r.files[0].sensitive = true;
        let p = run(&r, &BTreeMap::new(), &BTreeMap::new(), None, false);
        assert!(p.files[0].diff.is_none());
        let text = render_text(
            &p,
            &Header {
                root: Path::new("/"),
                k3s: "unknown".into(),
                generation: 0,
                interrupted: None,
            },
            &[],
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("contents not shown"), "{text}");
    }

    #[test]
    fn live_sysctls_differing_from_our_installed_file_are_drift() {
        let r = Rendered {
            sysctls: BTreeMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]),
            ..rendered("x\n")
        };
        let kernel = KernelObs {
            modules: BTreeMap::new(),
            sysctls: BTreeMap::from([("net.ipv4.ip_forward".to_string(), Some("0".to_string()))]),
        };
        let obs = on_disk("x\n", 0o644);
        let g = gen_of("x\n");
        let p = plan(&PlanInput {
            rendered: &r,
            observed: &obs,
            current: &g,
            pending: None,
            kernel: Some(&kernel),
            owed_restarts: &[],
            k3s_unit: "k3s.service",
            nydus_unit: "nydus-snapshotter.service",
            force: crate::bootstrap::apply::Force::none(),
            owner: None,
        });
        assert_eq!(p.drift(), ["sysctl net.ipv4.ip_forward = 0 (want 1)"]);
        assert_eq!(p.kernel_changes(), 1);
    }
}
