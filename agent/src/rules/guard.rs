//! The crash guard for rule sets: a rule set that was being loaded, or had
//! just been put in force, when the daemon died of a fatal signal (SIGABRT,
//! SIGSEGV, SIGBUS, SIGILL, SIGFPE: systemd's exit 134/139) is not loaded
//! again at the next start. It is held back until its files change (the
//! operator's say), and the last set that ran through its trial runs
//! instead, so one bad rule file cannot make systemd restart the daemon in
//! a loop.
//!
//! Owns `<state_dir>/rules-guard/`:
//! - `trial`: the set on trial, written (and synced) before the set is
//!   compiled and removed once it has run [`TRIAL`] or the daemon stops
//!   cleanly. Its first line is JSON ([`TrialNote`]); the fatal-signal
//!   handler appends one line `fatal SIGxxx` per signal. A `trial` left
//!   behind with such a line is the evidence; one without (SIGKILL, power
//!   loss) proves nothing, and the set is loaded again.
//! - `held-back.json`: the set held back ([`HeldBack`]), until a different
//!   set is configured or the file is removed.
//! - `last-good.json`: the text of every file of the last set that ran
//!   through its trial ([`LastGood`]), written atomically.
//!
//! Never decides what a rule means, and never holds back a set on anything
//! but the evidence of a fatal signal during its trial.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bootstrap::fsio;
use crate::status::unix_now;

use super::loader::Source;

/// How long a new set runs before it counts as good. A set that kills the
/// daemon while compiling does so within the load; one that kills it on
/// the events it meets does so within seconds on a node that runs anything.
pub(crate) const TRIAL: Duration = Duration::from_secs(20);

/// The guard's files under the state directory.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    dir: PathBuf,
}

/// A rule set's identity: the SHA-256 of its files' paths and texts, in
/// load order (a file that could not be read counts by its error).
pub(crate) fn set_id(sources: &[Source]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for s in sources {
        let path = s.path.to_string_lossy();
        let (tag, text) = match &s.text {
            Ok(t) => ("ok", t.as_str()),
            Err(e) => ("err", e.as_str()),
        };
        for part in [path.as_ref(), tag, text] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first line of `trial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TrialNote {
    pub(crate) set: String,
    pub(crate) files: Vec<PathBuf>,
    /// Unix seconds.
    pub(crate) started: u64,
}

/// A set held back after the daemon died of a fatal signal on trial of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HeldBack {
    /// [`set_id`] of the set.
    pub(crate) set: String,
    pub(crate) files: Vec<PathBuf>,
    /// The signals the daemon died of (`SIGABRT`, ...).
    pub(crate) signals: Vec<String>,
    /// When its trial began (unix seconds).
    pub(crate) tried: u64,
}

/// The last set that ran through its trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastGood {
    pub(crate) set: String,
    /// Unix seconds.
    pub(crate) proven: u64,
    pub(crate) files: Vec<GoodFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GoodFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

impl LastGood {
    /// The set's files as sources to load, under their original paths.
    pub(crate) fn sources(&self) -> Vec<Source> {
        self.files
            .iter()
            .map(|f| Source {
                path: f.path.clone(),
                text: Ok(f.text.clone()),
            })
            .collect()
    }
}

/// A trial in progress: the fatal-signal handler writes to its file while
/// it lives. Dropping it ends the trial without a verdict (the file stays
/// for the next start to read): use [`Guard::end_trial`] for a clean end.
#[derive(Debug)]
pub(crate) struct Trial {
    file: File,
    pub(crate) note: TrialNote,
}

impl Drop for Trial {
    fn drop(&mut self) {
        // The handler must stop writing to the descriptor before it closes.
        let _ = TRIAL_FD.compare_exchange(
            self.file.as_raw_fd(),
            -1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

impl Guard {
    pub(crate) fn new(state_dir: &Path) -> Guard {
        Guard {
            dir: state_dir.join("rules-guard"),
        }
    }

    fn trial_path(&self) -> PathBuf {
        self.dir.join("trial")
    }

    fn held_path(&self) -> PathBuf {
        self.dir.join("held-back.json")
    }

    fn last_good_path(&self) -> PathBuf {
        self.dir.join("last-good.json")
    }

    /// At start: read what the last run left. A trial that ended in a fatal
    /// signal becomes the held-back set; the held-back set (new or kept
    /// from before) is returned. A trial without one is only logged by the
    /// caller (returned as the second value) and forgotten.
    pub(crate) fn recover(&self) -> io::Result<(Option<HeldBack>, Option<TrialNote>)> {
        let mut unproven = None;
        if let Some(text) = read_optional(&self.trial_path())? {
            let mut lines = text.lines();
            let note: Option<TrialNote> = lines.next().and_then(|l| serde_json::from_str(l).ok());
            let signals: Vec<String> = lines
                .filter_map(|l| l.strip_prefix("fatal "))
                .map(|s| s.trim().to_string())
                .collect();
            match note {
                Some(note) if !signals.is_empty() => {
                    let held = HeldBack {
                        set: note.set,
                        files: note.files,
                        signals,
                        tried: note.started,
                    };
                    let json = serde_json::to_vec_pretty(&held).map_err(io::Error::other)?;
                    fsio::write_atomic(&self.held_path(), &json, 0o600, None)?;
                }
                note => unproven = note,
            }
            fsio::remove(&self.trial_path())?;
        }
        Ok((self.held_back()?, unproven))
    }

    /// The set held back, if any.
    pub(crate) fn held_back(&self) -> io::Result<Option<HeldBack>> {
        read_json(&self.held_path())
    }

    /// Forget the held-back set (a different set is configured now).
    pub(crate) fn release(&self) -> io::Result<()> {
        fsio::remove(&self.held_path())
    }

    pub(crate) fn last_good(&self) -> io::Result<Option<LastGood>> {
        read_json(&self.last_good_path())
    }

    /// Put `set` on trial: its note is on disk (synced) before this returns,
    /// and a fatal signal from now on is written beside it.
    pub(crate) fn begin_trial(&self, set: &str, files: Vec<PathBuf>) -> io::Result<Trial> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let note = TrialNote {
            set: set.to_string(),
            files,
            started: unix_now(),
        };
        let mut line = serde_json::to_vec(&note).map_err(io::Error::other)?;
        line.push(b'\n');
        fsio::write_atomic(&self.trial_path(), &line, 0o600, None)?;
        let file = OpenOptions::new().append(true).open(self.trial_path())?;
        TRIAL_FD.store(file.as_raw_fd(), Ordering::SeqCst);
        Ok(Trial { file, note })
    }

    /// The trial ended without a fatal signal: the set was refused before
    /// it ran, or the daemon stops cleanly. Nothing is learned.
    pub(crate) fn end_trial(&self, trial: Trial) -> io::Result<()> {
        drop(trial);
        fsio::remove(&self.trial_path())
    }

    /// The set ran through its trial: it becomes the last good set.
    pub(crate) fn proven(&self, trial: Trial, sources: &[Source]) -> io::Result<()> {
        let good = LastGood {
            set: trial.note.set.clone(),
            proven: unix_now(),
            files: sources
                .iter()
                .filter_map(|s| {
                    Some(GoodFile {
                        path: s.path.clone(),
                        text: s.text.as_ref().ok()?.clone(),
                    })
                })
                .collect(),
        };
        let json = serde_json::to_vec(&good).map_err(io::Error::other)?;
        fsio::write_atomic(&self.last_good_path(), &json, 0o600, None)?;
        self.end_trial(trial)
    }
}

fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The open `trial` file while a trial runs, for the signal handler.
static TRIAL_FD: AtomicI32 = AtomicI32::new(-1);

/// The signals that end the process with a core (exit 134, 139, ...).
const FATAL: [(libc::c_int, &[u8]); 5] = [
    (libc::SIGABRT, b"fatal SIGABRT\n"),
    (libc::SIGSEGV, b"fatal SIGSEGV\n"),
    (libc::SIGBUS, b"fatal SIGBUS\n"),
    (libc::SIGILL, b"fatal SIGILL\n"),
    (libc::SIGFPE, b"fatal SIGFPE\n"),
];

/// The dispositions the handler replaced (Rust's own stack-overflow
/// handler for SIGSEGV and SIGBUS), restored before a signal goes on.
static PREVIOUS: OnceLock<[libc::sigaction; FATAL.len()]> = OnceLock::new();

/// Note fatal signals in the `trial` file, then let each end the process
/// as it would have. Installed once, by the daemon only.
pub(crate) fn install_fatal_signal_note() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: all-zero is a valid `sigaction` (no handler, no flags, an
        // empty mask); each is filled by the kernel below.
        let mut previous: [libc::sigaction; FATAL.len()] = unsafe { std::mem::zeroed() };
        for (i, (sig, _)) in FATAL.iter().enumerate() {
            // SAFETY: as above.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_fatal as *const () as usize;
            // SA_ONSTACK: a stack overflow leaves no stack but the
            // alternate one Rust sets up for its threads.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `action` is initialised, the handler only calls
            // async-signal-safe functions, and `previous[i]` is valid to
            // write.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(*sig, &action, &mut previous[i]);
            }
        }
        previous
    });
}

extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let Some(i) = FATAL.iter().position(|(s, _)| *s == sig) else {
        return;
    };
    let fd = TRIAL_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let line = FATAL[i].1;
        // SAFETY: write(2) is async-signal-safe and `line` is a static
        // buffer; a short or failed write only loses the note.
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
    if sent {
        // A signal that was sent (kill, raise, abort) is sent again with
        // the default action, to end the process as the handler returns
        // (Rust's own SIGSEGV handler would ignore one that was not a
        // fault).
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    } else if let Some(previous) = PREVIOUS.get() {
        // A fault from the kernel happens again when the handler returns,
        // and meets the previous disposition (Rust's stack-overflow report).
        // SAFETY: sigaction(2) is async-signal-safe; `previous[i]` is what
        // the kernel gave back when the handler was installed.
        unsafe { libc::sigaction(sig, &previous[i], std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn src(path: &str, text: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            text: Ok(text.to_string()),
        }
    }

    #[test]
    fn a_set_is_named_by_its_paths_and_texts() {
        let a = set_id(&[src("/r/a.yaml", "x"), src("/r/b.yaml", "y")]);
        assert_eq!(a, set_id(&[src("/r/a.yaml", "x"), src("/r/b.yaml", "y")]));
        assert_ne!(a, set_id(&[src("/r/a.yaml", "x"), src("/r/b.yaml", "y ")]));
        assert_ne!(a, set_id(&[src("/r/a.yaml", "xy"), src("/r/b.yaml", "")]));
        assert_ne!(a, set_id(&[src("/r/b.yaml", "y"), src("/r/a.yaml", "x")]));
    }

    #[test]
    fn a_trial_that_ended_in_a_fatal_signal_holds_its_set_back_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(dir.path());
        let trial = g.begin_trial("abc", vec!["/r/a.yaml".into()]).unwrap();
        // What the handler writes as the process dies.
        (&trial.file).write_all(b"fatal SIGSEGV\n").unwrap();
        std::mem::forget(trial); // the process died: no end of trial
        let (held, unproven) = g.recover().unwrap();
        let held = held.expect("held back");
        assert_eq!(held.set, "abc");
        assert_eq!(held.signals, ["SIGSEGV"]);
        assert_eq!(unproven, None);
        // Still held at the start after that, until released.
        assert_eq!(g.recover().unwrap().0, Some(held));
        g.release().unwrap();
        assert_eq!(g.recover().unwrap(), (None, None));
    }

    #[test]
    fn a_trial_cut_short_without_a_fatal_signal_holds_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(dir.path());
        let trial = g.begin_trial("abc", vec![]).unwrap();
        std::mem::forget(trial); // SIGKILL or power loss
        let (held, unproven) = g.recover().unwrap();
        assert_eq!(held, None);
        assert_eq!(unproven.map(|n| n.set), Some("abc".to_string()));
        assert_eq!(g.recover().unwrap(), (None, None), "forgotten once read");
    }

    #[test]
    fn a_proven_set_becomes_the_last_good_one_and_a_clean_end_leaves_no_trial() {
        let dir = tempfile::tempdir().unwrap();
        let g = Guard::new(dir.path());
        let sources = [src("/r/a.yaml", "- list: x\n  items: []\n")];
        let id = set_id(&sources);
        let trial = g.begin_trial(&id, vec!["/r/a.yaml".into()]).unwrap();
        g.proven(trial, &sources).unwrap();
        let good = g.last_good().unwrap().expect("last good");
        assert_eq!(good.set, id);
        assert_eq!(set_id(&good.sources()), id, "loads as the same set");
        let trial = g.begin_trial("next", vec![]).unwrap();
        g.end_trial(trial).unwrap();
        assert_eq!(g.recover().unwrap(), (None, None));
        assert_eq!(g.last_good().unwrap().map(|g| g.set), Some(id));
    }
}
