//! File I/O for the reconciler: reading what is on the node, and writing a
//! file so that a crash at any instant leaves either the old or the new
//! bytes under its name, never a mix.
//!
//! The write protocol: create `.<name>.edge-agent.<pid>.tmp` beside the
//! target with `O_EXCL` and mode 0600, write, `fchmod` to the wanted mode
//! (the umask never decides), `fchown` when running as root, `fsync`,
//! `rename` over the target, `fsync` the directory. Temp names start with
//! a dot and end in `.tmp`, so none of the readers' globs (`*.yaml`,
//! `*.conf`) ever picks one up; [`remove_stale_temps`] clears those a crash
//! left behind.
//!
//! Test hook: when `EDGE_AGENT_TEST_APPLY_PAUSE_MS` is set, [`pause_between_writes`]
//! sleeps that long before each file write, so a test can kill the process
//! between two writes. It exists for the crash test only; never set it on a node.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Test-only: milliseconds to sleep before each managed-file write.
pub(crate) const TEST_PAUSE_ENV: &str = "EDGE_AGENT_TEST_APPLY_PAUSE_MS";

/// What is at a path on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    Absent,
    File {
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A directory, socket, ... where a managed file should be.
    NotAFile(String),
    /// Exists but cannot be read (permissions, I/O error).
    Unreadable(String),
}

/// Read `path` (already joined to the root). Symlinks are not followed for
/// the kind check: a managed path that is a symlink is "not a file".
pub(crate) fn observe(path: &Path) -> Observed {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Observed::Absent,
        Err(e) => return Observed::Unreadable(e.to_string()),
    };
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_symlink() {
            "a symbolic link"
        } else {
            "not a regular file"
        };
        return Observed::NotAFile(kind.into());
    }
    match fs::read(path) {
        Ok(content) => Observed::File {
            content,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        },
        Err(e) => Observed::Unreadable(e.to_string()),
    }
}

/// Sleep before a managed-file write when the test hook asks for it.
pub(crate) fn pause_between_writes() {
    if let Some(ms) = std::env::var(TEST_PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.edge-agent.{}.tmp", std::process::id()))
}

fn is_our_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.contains(".edge-agent.")
}

/// Create the parent directories of `path` with `mode` (existing ones are
/// left as they are).
pub(crate) fn create_parents(path: &Path, mode: u32) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(parent)
}

/// Atomically replace `path` with `content`, mode `mode`, owned by
/// `owner` (uid, gid) when given.
pub(crate) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Change only mode and owner (the content is already right).
pub(crate) fn fix_mode(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Remove `path` (absent is fine) and make the removal durable.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Remove temp files an interrupted write left beside `path`.
pub(crate) fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.edge-agent.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && is_our_temp(&n) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The owner new files get: root:root when running as root, else nothing
/// is changed (an unprivileged apply into a scratch root keeps its own uid).
pub(crate) fn wanted_owner() -> Option<(u32, u32)> {
    nix::unistd::geteuid().is_root().then_some((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_sets_the_mode_exactly_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.conf");
        write_atomic(&p, b"one\n", 0o640, None).unwrap();
        write_atomic(&p, b"two\n", 0o600, None).unwrap();
        match observe(&p) {
            Observed::File { content, mode, .. } => {
                assert_eq!(content, b"two\n");
                assert_eq!(mode, 0o600);
            }
            o => panic!("{o:?}"),
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.conf"]);
    }

    #[test]
    fn stale_temps_of_this_file_are_cleared_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.yaml");
        fs::write(dir.path().join(".x.yaml.edge-agent.4242.tmp"), b"partial").unwrap();
        fs::write(dir.path().join(".y.yaml.edge-agent.4242.tmp"), b"other").unwrap();
        fs::write(dir.path().join("x.yaml.tmp"), b"not ours").unwrap();
        remove_stale_temps(&p);
        assert!(!dir.path().join(".x.yaml.edge-agent.4242.tmp").exists());
        assert!(dir.path().join(".y.yaml.edge-agent.4242.tmp").exists());
        assert!(dir.path().join("x.yaml.tmp").exists());
    }

    #[test]
    fn a_directory_where_a_file_belongs_is_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(observe(dir.path()), Observed::NotAFile(_)));
        assert_eq!(observe(&dir.path().join("nope")), Observed::Absent);
    }
}
