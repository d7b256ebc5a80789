//! The undo log: what the reconciler wrote, generation by generation, and
//! what each path held before it was first taken over.
//!
//! # On-disk format (version 1), under `<state_dir>/bootstrap[/roots/<root>]/`
//! ```text
//! lock                          flock(2)ed by apply and rollback
//! state.json                    {"format":1,"root":"/","current":N,"pending":P|null,
//!                                "last_apply":{..}|null,"owed_restarts":[..]}
//! originals.json                {"format":1,"files":{"/etc/..":{"existed":bool,
//!                                "mode":420,"uid":0,"gid":0,"blob":"originals/3"}}}
//! originals/<i>                 bytes a path held before edge-agent first wrote it
//! generations/<N>/manifest.json {"format":1,"generation":N,"created_at":unix,
//!                                "k3s_version":"..","files":[{"path":"..","mode":384,
//!                                "sensitive":false,"blob":"0"}],"displaced":[..],
//!                                "sysctls_before":{"key":"value"}}
//! generations/<N>/<blob>        the managed file's bytes in generation N
//! ```
//! A generation is a full snapshot of the managed files. `current` is the
//! generation the node is meant to be in (0: none, i.e. the originals).
//! `pending` is set before any managed file is touched and cleared after
//! the last one; a crash in between leaves it set, and both generations'
//! bytes then count as "ours". Every file here is written atomically
//! (see `fsio`), directories and files are private (0700/0600) because
//! blobs may hold registry credentials. A `format` this build does not know
//! is refused, never guessed at.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fsio::{self, Observed};

/// The format this build reads and writes.
pub(crate) const FORMAT: u32 = 1;

/// Generations kept for rollback. Each is a few KiB; ten covers a long run
/// of fleet pushes while keeping the state directory small on flash.
pub(crate) const KEEP_GENERATIONS: u64 = 10;

/// How long apply/rollback wait for another one (the daemon's auto-correct
/// or a second shell) to finish before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("undo log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("undo log {}: not valid ({reason}); move the directory aside to start a new log", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("undo log {}: format {found} was written by a newer edge-agent (this one reads format {FORMAT}); upgrade edge-agent", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("undo log {}: belongs to root {recorded}, not {asked}", path.display())]
    RootMismatch {
        path: PathBuf,
        recorded: String,
        asked: String,
    },
    #[error("another bootstrap apply or rollback holds {} (waited {}s); try again when it has finished", path.display(), LOCK_WAIT.as_secs())]
    Busy { path: PathBuf },
    #[error("generation {0} is no longer in the undo log (it keeps the last {KEEP_GENERATIONS})")]
    Pruned(u64),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How the last apply (or rollback) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastApply {
    /// Unix seconds.
    pub(crate) at: u64,
    /// "apply", "rollback" or "auto-correct".
    pub(crate) action: String,
    pub(crate) generation: u64,
    /// "ok", "partial" (files written, some kernel step or restart did not
    /// happen) or "failed".
    pub(crate) outcome: String,
    pub(crate) summary: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    root: String,
    current: u64,
    pending: Option<u64>,
    last_apply: Option<LastApply>,
    /// Units whose restart an apply could not do (systemd not running).
    #[serde(default)]
    owed_restarts: Vec<String>,
}

/// What a path held before edge-agent first wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Original {
    pub(crate) existed: bool,
    #[serde(default)]
    pub(crate) mode: u32,
    #[serde(default)]
    pub(crate) uid: u32,
    #[serde(default)]
    pub(crate) gid: u32,
    #[serde(default)]
    blob: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OriginalsFile {
    format: u32,
    files: BTreeMap<PathBuf, Original>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFile {
    path: PathBuf,
    mode: u32,
    sensitive: bool,
    blob: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    generation: u64,
    created_at: u64,
    k3s_version: Option<String>,
    files: Vec<ManifestFile>,
    #[serde(default)]
    displaced: Vec<ManifestFile>,
    #[serde(default)]
    sysctls_before: BTreeMap<String, String>,
}

/// A managed file as one generation has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GenFile {
    pub(crate) content: Vec<u8>,
    pub(crate) mode: u32,
    pub(crate) sensitive: bool,
}

/// One generation, loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    pub(crate) number: u64,
    pub(crate) created_at: u64,
    pub(crate) k3s_version: Option<String>,
    pub(crate) files: BTreeMap<PathBuf, GenFile>,
    /// Hand-edited content `--force` replaced, kept for the operator.
    pub(crate) displaced: BTreeMap<PathBuf, Vec<u8>>,
    /// Live sysctl values before this generation applied its own.
    pub(crate) sysctls_before: BTreeMap<String, String>,
}

/// The undo log of one root.
pub(crate) struct Ledger {
    dir: PathBuf,
    state: StateFile,
    originals: OriginalsFile,
}

/// Holds the ledger's lock until dropped.
pub(crate) struct LockGuard {
    _lock: nix::fcntl::Flock<fs::File>,
}

/// The ledger directory for `root` below the agent's state dir: the host
/// root keeps the plain path; a scratch root gets its own, so trying
/// `--root /tmp/x` never mixes with the node's real undo log.
pub(crate) fn dir_for(state_dir: &Path, root: &Path) -> PathBuf {
    let base = state_dir.join("bootstrap");
    if root == Path::new("/") {
        base
    } else {
        let key: String = root
            .to_string_lossy()
            .trim_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        base.join("roots").join(key)
    }
}

fn mkdir_private(dir: &Path) -> Result<(), LedgerError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), LedgerError> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("ledger records serialize");
    bytes.push(b'\n');
    fsio::write_atomic(path, &bytes, 0o600, None).map_err(io_err(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, LedgerError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LedgerError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn check_format(path: &Path, found: u32) -> Result<(), LedgerError> {
    if found > FORMAT || found == 0 {
        return Err(LedgerError::Format {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(())
}

impl Ledger {
    /// Open (or start) the log in `dir` for `root`. Read-only callers
    /// (`plan`, the daemon's checks) may open a log that does not exist
    /// yet: nothing is created until [`Ledger::begin`].
    pub(crate) fn open(dir: &Path, root: &Path) -> Result<Ledger, LedgerError> {
        let root_s = root.to_string_lossy().into_owned();
        let state_path = dir.join("state.json");
        let state = match read_json::<StateFile>(&state_path)? {
            Some(s) => {
                check_format(&state_path, s.format)?;
                if s.root != root_s {
                    return Err(LedgerError::RootMismatch {
                        path: dir.to_path_buf(),
                        recorded: s.root,
                        asked: root_s,
                    });
                }
                s
            }
            None => StateFile {
                format: FORMAT,
                root: root_s,
                ..Default::default()
            },
        };
        let originals_path = dir.join("originals.json");
        let originals = match read_json::<OriginalsFile>(&originals_path)? {
            Some(o) => {
                check_format(&originals_path, o.format)?;
                o
            }
            None => OriginalsFile {
                format: FORMAT,
                files: BTreeMap::new(),
            },
        };
        Ok(Ledger {
            dir: dir.to_path_buf(),
            state,
            originals,
        })
    }

    /// Take the lock (waiting up to 30 s for another apply to finish).
    pub(crate) fn lock(dir: &Path) -> Result<LockGuard, LedgerError> {
        use nix::fcntl::{Flock, FlockArg};
        mkdir_private(dir)?;
        let path = dir.join("lock");
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let f = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(LockGuard { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(LedgerError::Busy { path });
                }
                Err((_, e)) => {
                    return Err(LedgerError::Io {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn current(&self) -> u64 {
        self.state.current
    }

    pub(crate) fn pending(&self) -> Option<u64> {
        self.state.pending
    }

    pub(crate) fn last_apply(&self) -> Option<&LastApply> {
        self.state.last_apply.as_ref()
    }

    pub(crate) fn owed_restarts(&self) -> &[String] {
        &self.state.owed_restarts
    }

    pub(crate) fn original(&self, path: &Path) -> Option<&Original> {
        self.originals.files.get(path)
    }

    fn gen_dir(&self, n: u64) -> PathBuf {
        self.dir.join("generations").join(format!("{n:06}"))
    }

    /// Load generation `n` (0 is the empty generation before any apply).
    pub(crate) fn generation(&self, n: u64) -> Result<Generation, LedgerError> {
        if n == 0 {
            return Ok(Generation::default());
        }
        let dir = self.gen_dir(n);
        let mpath = dir.join("manifest.json");
        let m: Manifest = read_json(&mpath)?.ok_or(LedgerError::Pruned(n))?;
        check_format(&mpath, m.format)?;
        let read_blob = |b: &str| -> Result<Vec<u8>, LedgerError> {
            if b.contains('/') || b.starts_with('.') {
                return Err(LedgerError::Corrupt {
                    path: mpath.clone(),
                    reason: format!("blob name {b:?}"),
                });
            }
            let p = dir.join(b);
            fs::read(&p).map_err(io_err(&p))
        };
        let mut g = Generation {
            number: m.generation,
            created_at: m.created_at,
            k3s_version: m.k3s_version,
            sysctls_before: m.sysctls_before,
            ..Default::default()
        };
        for f in &m.files {
            g.files.insert(
                f.path.clone(),
                GenFile {
                    content: read_blob(&f.blob)?,
                    mode: f.mode,
                    sensitive: f.sensitive,
                },
            );
        }
        for f in &m.displaced {
            g.displaced.insert(f.path.clone(), read_blob(&f.blob)?);
        }
        Ok(g)
    }

    /// The bytes `original` held, when it existed.
    pub(crate) fn original_content(
        &self,
        original: &Original,
    ) -> Result<Option<Vec<u8>>, LedgerError> {
        match &original.blob {
            Some(b) => {
                let p = self.dir.join(b);
                fs::read(&p).map(Some).map_err(io_err(&p))
            }
            None => Ok(None),
        }
    }

    /// Remember what `path` held before edge-agent first writes it. Only
    /// the first call for a path counts.
    pub(crate) fn record_original(
        &mut self,
        path: &Path,
        observed: &Observed,
    ) -> Result<(), LedgerError> {
        if self.originals.files.contains_key(path) {
            return Ok(());
        }
        mkdir_private(&self.dir)?;
        let original = match observed {
            Observed::File {
                content,
                mode,
                uid,
                gid,
            } => {
                let odir = self.dir.join("originals");
                mkdir_private(&odir)?;
                let blob = format!("originals/{}", self.originals.files.len());
                let bp = self.dir.join(&blob);
                fsio::write_atomic(&bp, content, 0o600, None).map_err(io_err(&bp))?;
                Original {
                    existed: true,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    blob: Some(blob),
                }
            }
            _ => Original {
                existed: false,
                mode: 0,
                uid: 0,
                gid: 0,
                blob: None,
            },
        };
        self.originals.files.insert(path.to_path_buf(), original);
        write_json(&self.dir.join("originals.json"), &self.originals)
    }

    /// Write generation `current + 1` completely and mark it pending. No
    /// managed file has been touched when this returns.
    pub(crate) fn begin(&mut self, mut g: Generation) -> Result<u64, LedgerError> {
        mkdir_private(&self.dir)?;
        let gens = self.dir.join("generations");
        mkdir_private(&gens)?;
        // Generations after `current` are undone ones (after a rollback)
        // or an interrupted apply's: a new apply replaces them.
        for n in self.generation_numbers()? {
            if n > self.state.current {
                let d = self.gen_dir(n);
                fs::remove_dir_all(&d).map_err(io_err(&d))?;
            }
        }
        let n = self.state.current + 1;
        g.number = n;
        let partial = gens.join(format!("{n:06}.partial"));
        let _ = fs::remove_dir_all(&partial);
        mkdir_private(&partial)?;
        let mut manifest = Manifest {
            format: FORMAT,
            generation: n,
            created_at: g.created_at,
            k3s_version: g.k3s_version.clone(),
            files: Vec::new(),
            displaced: Vec::new(),
            sysctls_before: g.sysctls_before.clone(),
        };
        for (i, (path, f)) in g.files.iter().enumerate() {
            let blob = format!("{i}");
            let bp = partial.join(&blob);
            fsio::write_atomic(&bp, &f.content, 0o600, None).map_err(io_err(&bp))?;
            manifest.files.push(ManifestFile {
                path: path.clone(),
                mode: f.mode,
                sensitive: f.sensitive,
                blob,
            });
        }
        for (i, (path, content)) in g.displaced.iter().enumerate() {
            let blob = format!("displaced-{i}");
            let bp = partial.join(&blob);
            fsio::write_atomic(&bp, content, 0o600, None).map_err(io_err(&bp))?;
            manifest.displaced.push(ManifestFile {
                path: path.clone(),
                mode: 0o600,
                sensitive: true,
                blob,
            });
        }
        write_json(&partial.join("manifest.json"), &manifest)?;
        let final_dir = self.gen_dir(n);
        fs::rename(&partial, &final_dir).map_err(io_err(&final_dir))?;
        fs::File::open(&gens)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&gens))?;
        self.state.pending = Some(n);
        self.save_state()?;
        Ok(n)
    }

    /// The pending generation's files are all in place.
    pub(crate) fn commit(&mut self, n: u64) -> Result<(), LedgerError> {
        self.state.current = n;
        self.state.pending = None;
        self.save_state()?;
        self.prune()
    }

    /// Make `n` current again (rollback). Generations after it stay until
    /// the next apply.
    pub(crate) fn set_current(&mut self, n: u64) -> Result<(), LedgerError> {
        self.state.current = n;
        self.state.pending = None;
        self.save_state()
    }

    pub(crate) fn record_outcome(
        &mut self,
        last: LastApply,
        owed_restarts: Vec<String>,
    ) -> Result<(), LedgerError> {
        self.state.last_apply = Some(last);
        self.state.owed_restarts = owed_restarts;
        self.save_state()
    }

    fn save_state(&self) -> Result<(), LedgerError> {
        mkdir_private(&self.dir)?;
        write_json(&self.dir.join("state.json"), &self.state)
    }

    fn generation_numbers(&self) -> Result<Vec<u64>, LedgerError> {
        let gens = self.dir.join("generations");
        let mut v = Vec::new();
        match fs::read_dir(&gens) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Some(n) = e
                        .file_name()
                        .to_str()
                        .filter(|s| !s.contains('.'))
                        .and_then(|s| s.parse().ok())
                    {
                        v.push(n);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&gens)(e)),
        }
        v.sort_unstable();
        Ok(v)
    }

    fn prune(&self) -> Result<(), LedgerError> {
        let keep_from = self.state.current.saturating_sub(KEEP_GENERATIONS - 1);
        for n in self.generation_numbers()? {
            if n < keep_from {
                let d = self.gen_dir(n);
                fs::remove_dir_all(&d).map_err(io_err(&d))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_with(path: &str, content: &str) -> Generation {
        let mut g = Generation {
            created_at: 1,
            ..Default::default()
        };
        g.files.insert(
            PathBuf::from(path),
            GenFile {
                content: content.as_bytes().to_vec(),
                mode: 0o644,
                sensitive: false,
            },
        );
        g
    }

    #[test]
    fn a_generation_round_trips_and_pending_clears_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new("/scratch");
        let mut l = Ledger::open(dir.path(), root).unwrap();
        let n = l.begin(gen_with("/etc/a", "one")).unwrap();
        assert_eq!((n, l.pending(), l.current()), (1, Some(1), 0));
        // A reader that opens now sees the interrupted apply.
        let again = Ledger::open(dir.path(), root).unwrap();
        assert_eq!(again.pending(), Some(1));
        l.commit(n).unwrap();
        let l = Ledger::open(dir.path(), root).unwrap();
        assert_eq!((l.current(), l.pending()), (1, None));
        let g = l.generation(1).unwrap();
        assert_eq!(g.files[Path::new("/etc/a")].content, b"one");
    }

    #[test]
    fn originals_are_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), Path::new("/r")).unwrap();
        let before = Observed::File {
            content: b"operator's".to_vec(),
            mode: 0o640,
            uid: 0,
            gid: 0,
        };
        l.record_original(Path::new("/etc/x"), &before).unwrap();
        l.record_original(Path::new("/etc/x"), &Observed::Absent)
            .unwrap();
        let l = Ledger::open(dir.path(), Path::new("/r")).unwrap();
        let o = l.original(Path::new("/etc/x")).unwrap().clone();
        assert!(o.existed);
        assert_eq!(l.original_content(&o).unwrap().unwrap(), b"operator's");
    }

    #[test]
    fn a_newer_format_or_another_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("state.json"),
            r#"{"format":9,"root":"/","current":0,"pending":null,"last_apply":null}"#,
        )
        .unwrap();
        let e = Ledger::open(dir.path(), Path::new("/")).err().unwrap();
        assert!(e.to_string().contains("format 9"), "{e}");
        fs::write(
            dir.path().join("state.json"),
            r#"{"format":1,"root":"/a","current":0,"pending":null,"last_apply":null}"#,
        )
        .unwrap();
        let e = Ledger::open(dir.path(), Path::new("/b")).err().unwrap();
        assert!(e.to_string().contains("belongs to root /a"), "{e}");
    }

    #[test]
    fn old_generations_are_pruned_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path(), Path::new("/r")).unwrap();
        for i in 0..(KEEP_GENERATIONS + 3) {
            let n = l.begin(gen_with("/etc/a", &i.to_string())).unwrap();
            l.commit(n).unwrap();
        }
        assert!(matches!(l.generation(1), Err(LedgerError::Pruned(1))));
        assert!(l.generation(l.current()).is_ok());
        assert!(l.generation(l.current() - (KEEP_GENERATIONS - 1)).is_ok());
    }

    #[test]
    fn scratch_roots_get_their_own_log() {
        let s = Path::new("/var/lib/edge-agent");
        assert_eq!(dir_for(s, Path::new("/")), s.join("bootstrap"));
        assert_eq!(
            dir_for(s, Path::new("/tmp/x y")),
            s.join("bootstrap/roots/tmp_x_y")
        );
    }
}
