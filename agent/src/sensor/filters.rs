//! What `[sensor]` asks the kernel to filter, as the entries of the kernel's
//! filter maps, and the same rules applied in user space to the paths only
//! user space can resolve (relative opens).
//!
//! Owns the translation from config to map entries (comm keys, path-prefix
//! keys, deny-list hashes). Pure: no maps, no I/O; `loader.rs` writes the
//! entries.

use std::path::Path;

use super::abi;
use crate::config::SensorConfig;

/// An `ea_lpm_key`: a path prefix with its trailing '/', so that `/etc`
/// matches `/etc/passwd` and not `/etcd/x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PrefixKey {
    pub(crate) bits: u32,
    pub(crate) data: [u8; abi::LPM_DATA],
}

impl PrefixKey {
    pub(crate) fn new(prefix: &Path) -> PrefixKey {
        let s = dir_prefix(&prefix.to_string_lossy());
        let n = s.len().min(abi::LPM_DATA);
        let mut data = [0u8; abi::LPM_DATA];
        data[..n].copy_from_slice(&s.as_bytes()[..n]);
        PrefixKey {
            bits: (n * 8) as u32,
            data,
        }
    }
}

/// `/etc` -> `/etc/`; `/` stays `/`.
fn dir_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    format!("{trimmed}/")
}

/// The entries of every kernel filter map for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelFilters {
    /// `ea_exclude_comms` keys: the comm, NUL-padded to 16 bytes.
    pub(crate) comms: Vec<[u8; abi::COMM_LEN]>,
    pub(crate) open_prefixes: Vec<PrefixKey>,
    pub(crate) exclude_paths: Vec<PrefixKey>,
    /// `ea_deny_exec` keys.
    pub(crate) deny: Vec<u64>,
}

impl KernelFilters {
    pub(crate) fn from_config(c: &SensorConfig) -> KernelFilters {
        let comms = c
            .exclude_comms
            .iter()
            .map(|name| {
                let mut k = [0u8; abi::COMM_LEN];
                let n = name.len().min(abi::COMM_LEN - 1);
                k[..n].copy_from_slice(&name.as_bytes()[..n]);
                k
            })
            .collect();
        KernelFilters {
            comms,
            open_prefixes: c
                .watch_open_prefixes
                .iter()
                .map(|p| PrefixKey::new(p))
                .collect(),
            exclude_paths: c.exclude_paths.iter().map(|p| PrefixKey::new(p)).collect(),
            deny: c.deny_exec.iter().map(|d| deny_hash(d)).collect(),
        }
    }

    pub(crate) fn deny_enabled(&self) -> bool {
        !self.deny.is_empty()
    }
}

/// The kernel's hash for a deny-list entry: a full path hashes with the path
/// seed (matched against the executable's real path and the path given to
/// exec); a bare name with the name seed (matched against both base names).
pub(crate) fn deny_hash(entry: &str) -> u64 {
    if entry.starts_with('/') {
        abi::fnv1a(abi::DENY_SEED_PATH, entry.as_bytes())
    } else {
        abi::fnv1a(abi::DENY_SEED_NAME, entry.as_bytes())
    }
}

/// The open/path filters for paths resolved in user space. Mirrors the
/// kernel's rules exactly (prefix with trailing '/').
#[derive(Debug, Clone, Default)]
pub(crate) struct PathFilter {
    watch: Vec<String>,
    exclude: Vec<String>,
}

impl PathFilter {
    pub(crate) fn from_config(c: &SensorConfig) -> PathFilter {
        let norm =
            |v: &[std::path::PathBuf]| v.iter().map(|p| dir_prefix(&p.to_string_lossy())).collect();
        PathFilter {
            watch: norm(&c.watch_open_prefixes),
            exclude: norm(&c.exclude_paths),
        }
    }

    /// Is `path` (absolute) below an excluded prefix?
    pub(crate) fn excluded(&self, path: &str) -> bool {
        self.exclude.iter().any(|p| path.starts_with(p.as_str()))
    }

    /// Would the kernel have reported an open of `path` with `flags`?
    pub(crate) fn reports_open(&self, path: &str, flags: u64) -> bool {
        if self.excluded(path) {
            return false;
        }
        !is_read_only(flags)
            || self.watch.iter().any(|p| path.starts_with(p.as_str()))
            || is_proc_environ(path)
    }
}

/// `/proc/<...>/environ`: a process's environment, reported on every open
/// whatever `watch_open_prefixes` holds (the kernel's `proc_environ`), so
/// that rules see other processes' secrets read while the rest of /proc
/// stays filtered. The kernel compares at most `LPM_DATA - 1` bytes of a
/// path; a path that long or longer never matches there, nor here.
pub(crate) fn is_proc_environ(path: &str) -> bool {
    path.len() < abi::LPM_DATA - 1
        && path.len() > "/proc//environ".len()
        && path.starts_with("/proc/")
        && path.ends_with("/environ")
}

/// The kernel's notion of a read-only open: O_RDONLY without O_CREAT,
/// O_TRUNC or O_TMPFILE.
pub(crate) fn is_read_only(flags: u64) -> bool {
    let f = flags as i32;
    f & libc::O_ACCMODE == libc::O_RDONLY
        && f & (libc::O_CREAT | libc::O_TRUNC | libc::O_TMPFILE) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_carry_a_trailing_slash_so_siblings_do_not_match() {
        let k = PrefixKey::new(Path::new("/etc"));
        assert_eq!(&k.data[..5], b"/etc/");
        assert_eq!(k.bits, 40);
        assert_eq!(PrefixKey::new(Path::new("/")).bits, 8);
        assert_eq!(PrefixKey::new(Path::new("/var/run/")).bits, 9 * 8);
        let f = PathFilter::from_config(&SensorConfig::default());
        assert!(f.reports_open("/etc/shadow", 0));
        assert!(!f.reports_open("/etcd/data", 0));
        assert!(f.reports_open("/etcd/data", libc::O_WRONLY as u64));
        assert!(!f.reports_open("/usr/lib/libc.so", libc::O_RDONLY as u64));
        assert!(f.reports_open("/tmp/x", (libc::O_RDONLY | libc::O_CREAT) as u64));
    }

    #[test]
    fn any_processs_environ_is_reported_though_proc_is_not_watched() {
        let f = PathFilter::from_config(&SensorConfig::default());
        assert!(f.reports_open("/proc/1/environ", 0));
        assert!(f.reports_open("/proc/1/task/1/environ", 0));
        assert!(f.reports_open("/proc/self/environ", 0));
        assert!(!f.reports_open("/proc/1/status", 0));
        assert!(!f.reports_open("/proc/1/environment", 0));
        assert!(!f.reports_open("/proc//environ", 0));
        assert!(!f.reports_open("/tmp/proc/1/environ", 0));
        let long = format!("/proc/{}/environ", "1/".repeat(60));
        assert!(!f.reports_open(&long, 0), "cut in the kernel: not matched");
    }

    #[test]
    fn excluded_paths_win_over_writes() {
        let c = SensorConfig {
            exclude_paths: vec!["/var/log".into()],
            ..Default::default()
        };
        let f = PathFilter::from_config(&c);
        assert!(!f.reports_open("/var/log/syslog", libc::O_WRONLY as u64));
        assert!(f.reports_open("/var/logs/x", libc::O_WRONLY as u64));
    }

    #[test]
    fn deny_entries_hash_by_kind() {
        let c = SensorConfig {
            deny_exec: vec!["/usr/bin/nc".into(), "nc".into()],
            exclude_comms: vec!["chatty".into()],
            ..Default::default()
        };
        let k = KernelFilters::from_config(&c);
        assert_eq!(k.deny[0], abi::fnv1a(abi::DENY_SEED_PATH, b"/usr/bin/nc"));
        assert_eq!(k.deny[1], abi::fnv1a(abi::DENY_SEED_NAME, b"nc"));
        assert_ne!(k.deny[0], k.deny[1]);
        assert!(k.deny_enabled());
        assert_eq!(&k.comms[0][..7], b"chatty\0");
    }
}
