//! Where collectors read from: the procfs, sysfs and root prefixes (so tests
//! and containerised agents point them elsewhere, like node_exporter's
//! `--path.procfs`, `--path.sysfs`, `--path.rootfs`), a reusable read buffer,
//! and the errors a read can end in.
//!
//! Owns file access for collectors. Never writes.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The three prefixes collectors read below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Usually `/proc`.
    pub(crate) procfs: PathBuf,
    /// Usually `/sys`.
    pub(crate) sysfs: PathBuf,
    /// Usually `/`: mount points from the mount table are looked up below it.
    pub(crate) rootfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
        }
    }
}

impl Roots {
    pub(crate) fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }
    pub(crate) fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join(rel)
    }
    /// `mountpoint` (absolute, from the mount table) below the root prefix.
    /// `..` and `.` are dropped, so no mount table entry can name a path
    /// outside the prefix.
    pub(crate) fn under_root(&self, mountpoint: &str) -> PathBuf {
        let mut p = self.rootfs.clone();
        for c in Path::new(mountpoint).components() {
            if let std::path::Component::Normal(part) = c {
                p.push(part);
            }
        }
        p
    }
}

/// Why a collector could not produce its series.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
}

impl CollectError {
    pub(crate) fn parse(path: &Path, reason: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// The largest file a collector reads whole. /proc/self/mountinfo on a busy
/// K3s node and /proc/net/dev with hundreds of veth interfaces stay well
/// below it; a file larger than this is truncated rather than read without
/// bound.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A read buffer reused across files and cycles, so a collection does not
/// allocate a fresh string per file.
#[derive(Debug, Default)]
pub(crate) struct FileReader {
    buf: String,
}

impl FileReader {
    /// Read `path` into the buffer and return it.
    pub(crate) fn read(&mut self, path: &Path) -> Result<&str, CollectError> {
        self.buf.clear();
        let res = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut self.buf));
        match res {
            Ok(_) => Ok(&self.buf),
            Err(source) => Err(CollectError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Like [`read`](Self::read), but a file that does not exist (or that
    /// the kernel refuses as unsupported, as /proc/pressure does with
    /// `psi=0`) is `None`: the feature is absent, which is not an error.
    pub(crate) fn read_optional(&mut self, path: &Path) -> Result<Option<&str>, CollectError> {
        self.buf.clear();
        let res = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut self.buf));
        match res {
            Ok(_) => Ok(Some(&self.buf)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(source) => Err(CollectError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// Errors that mean "this thing is not there (any more)": the file never
/// existed, a process or interface went away between listing and reading,
/// or the kernel does not support it.
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOENT
                | libc::ESRCH
                | libc::ENODEV
                | libc::ENXIO
                | libc::EOPNOTSUPP
                | libc::ENOTDIR
        )
    ) || e.kind() == io::ErrorKind::NotFound
}

/// Read a small sysfs attribute as a trimmed string; `None` if absent or
/// unreadable (sysfs attributes of a device that is going away fail in
/// several ways, none of which should fail a collection).
pub(crate) fn read_attr(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Read a small sysfs attribute as an integer.
pub(crate) fn read_attr_i64(path: &Path) -> Option<i64> {
    read_attr(path)?.parse().ok()
}

/// Names in a directory, sorted (so output order is stable across scrapes);
/// empty if the directory does not exist.
pub(crate) fn list_dir(path: &Path) -> Result<Vec<String>, CollectError> {
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(source) => {
            return Err(CollectError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Parse a whitespace-separated field as u64, naming the file on failure.
pub(crate) fn parse_u64(path: &Path, field: &str, what: &str) -> Result<u64, CollectError> {
    field.parse().map_err(|_| {
        CollectError::parse(path, format!("{what}: expected an integer, got {field:?}"))
    })
}

/// Parse a field as f64, naming the file on failure.
pub(crate) fn parse_f64(path: &Path, field: &str, what: &str) -> Result<f64, CollectError> {
    field
        .parse()
        .map_err(|_| CollectError::parse(path, format!("{what}: expected a number, got {field:?}")))
}

/// `sysconf` values the collectors convert with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SysConf {
    /// Clock ticks per second (USER_HZ) of /proc/stat and /proc/PID/stat.
    pub(crate) clk_tck: f64,
    pub(crate) page_size: f64,
}

impl SysConf {
    pub(crate) fn get() -> Self {
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown
        // name, which the fallbacks below cover.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self {
            // USER_HZ is 100 on every Linux architecture the agent ships for.
            clk_tck: if tck > 0 { tck as f64 } else { 100.0 },
            page_size: if page > 0 { page as f64 } else { 4096.0 },
        }
    }
}
