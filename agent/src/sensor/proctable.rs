//! The process table: what the sensor knows about every live process, so an
//! event can carry its process, parent and ancestors (`proc.pname`,
//! `proc.aname[N]`, `proc.pcmdline`, ...).
//!
//! Owns the table: seeded from `/proc` at start, kept by fork, exec and exit
//! records, bounded in size. A process that exits stays for
//! [`EXIT_GRACE_NS`] so records still in the ring buffer find it; when the
//! table is full it gives up exited processes first, then the least
//! recently used eighth. A process it does not know is read from
//! `/proc/<pid>` on first sight. Never sees the kernel maps.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::event::{MAX_ANCESTOR_DEPTH, Process};

/// How long an exited process stays: records of it and of its children that
/// are still in the ring buffer (8 MiB holds a few hundred milliseconds of a
/// burst) must still find it.
pub(crate) const EXIT_GRACE_NS: u64 = 5_000_000_000;

/// Converts the kernel's boot-time clock to Unix time.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    offset_ns: i128,
}

impl BootClock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, now. Refresh it now and then: NTP
    /// steps move the wall clock.
    pub(crate) fn now() -> BootClock {
        let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
        let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
        BootClock {
            offset_ns: real - boot,
        }
    }

    /// A fixed offset (tests, benchmarks).
    pub fn with_offset(offset_ns: i128) -> BootClock {
        BootClock { offset_ns }
    }

    pub(crate) fn to_unix_ns(self, boot_ns: u64) -> u64 {
        (i128::from(boot_ns) + self.offset_ns).max(0) as u64
    }

    pub(crate) fn boot_now_ns() -> u64 {
        clock_ns(nix::time::ClockId::CLOCK_BOOTTIME).max(0) as u64
    }
}

fn clock_ns(id: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(id)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

struct Entry {
    proc: Arc<Process>,
    last_used: u64,
    /// Boot-clock time of its exit, if it exited.
    exited_at: Option<u64>,
}

pub struct ProcessTable {
    procs: HashMap<u32, Entry>,
    max: usize,
    tick: u64,
    proc_root: PathBuf,
    clock: BootClock,
    evicted: u64,
}

impl ProcessTable {
    /// An empty table of at most `max` processes reading `proc_root` (`/proc`).
    pub(crate) fn new(max: usize, proc_root: &Path, clock: BootClock) -> ProcessTable {
        ProcessTable {
            // Grown as processes appear: a node runs a few hundred, and
            // 4,096 entries up front were 336 KiB of resident memory.
            procs: HashMap::with_capacity(max.min(256)),
            max: max.max(2),
            tick: 0,
            proc_root: proc_root.to_path_buf(),
            clock,
            evicted: 0,
        }
    }

    pub(crate) fn set_clock(&mut self, clock: BootClock) {
        self.clock = clock;
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Processes given up because the table was full.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Read every process in `/proc`. Returns how many it added.
    pub(crate) fn seed(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.proc_root) else {
            return 0;
        };
        let pids: Vec<u32> = dir
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        let mut n = 0;
        for pid in pids {
            if self.procs.len() >= self.max {
                break;
            }
            if let Some(p) = read_proc(&self.proc_root, pid, &self.clock) {
                self.insert(p);
                n += 1;
            }
        }
        n
    }

    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The process, if known.
    pub(crate) fn get(&mut self, pid: u32) -> Option<Arc<Process>> {
        let t = self.touch();
        self.procs.get_mut(&pid).map(|e| {
            e.last_used = t;
            e.proc.clone()
        })
    }

    /// The process; read from `/proc` if unknown, else built by `fallback`.
    /// `ppid` is the parent the kernel reports now: a reparented process is
    /// updated.
    pub(crate) fn get_or_load(
        &mut self,
        pid: u32,
        ppid: u32,
        fallback: impl FnOnce() -> Process,
    ) -> Arc<Process> {
        if let Some(p) = self.get(pid) {
            if p.ppid == ppid || ppid == 0 {
                return p;
            }
            let mut moved = (*p).clone();
            moved.ppid = ppid;
            return self.insert(moved);
        }
        let p = read_proc(&self.proc_root, pid, &self.clock).unwrap_or_else(fallback);
        self.insert(p)
    }

    /// Add or replace a process (exec replaces the image of the same pid).
    pub(crate) fn insert(&mut self, mut p: Process) -> Arc<Process> {
        p.finish();
        if self.procs.len() >= self.max && !self.procs.contains_key(&p.pid) {
            self.evict();
        }
        let t = self.touch();
        let pid = p.pid;
        let proc = Arc::new(p);
        self.procs.insert(
            pid,
            Entry {
                proc: proc.clone(),
                last_used: t,
                exited_at: None,
            },
        );
        proc
    }

    /// A new process `child` forked by `parent`: a copy of the parent's
    /// image with its own pid and parent, then `own` for what the child
    /// does not share (its ids in its pid namespace).
    pub(crate) fn fork(
        &mut self,
        parent: &Process,
        child: u32,
        start_time: u64,
        own: impl FnOnce(&mut Process),
    ) -> Arc<Process> {
        let mut p = parent.clone();
        p.pid = child;
        p.ppid = parent.pid;
        p.start_time = start_time;
        own(&mut p);
        self.insert(p)
    }

    /// Change a known process (a rename, a new session); `None` if unknown.
    pub(crate) fn modify(
        &mut self,
        pid: u32,
        f: impl FnOnce(&mut Process),
    ) -> Option<Arc<Process>> {
        let mut p = (*self.get(pid)?).clone();
        f(&mut p);
        Some(self.insert(p))
    }

    /// The process exited at boot time `at_ns`; it is removed after the grace period.
    pub(crate) fn exit(&mut self, pid: u32, at_ns: u64) {
        if let Some(e) = self.procs.get_mut(&pid) {
            e.exited_at = Some(at_ns);
        }
    }

    /// Remove processes that exited more than [`EXIT_GRACE_NS`] before `now_ns`.
    pub(crate) fn sweep(&mut self, now_ns: u64) {
        self.procs.retain(|_, e| {
            e.exited_at
                .is_none_or(|at| now_ns.saturating_sub(at) < EXIT_GRACE_NS)
        });
    }

    /// Parent first, as deep as the table knows, at most [`MAX_ANCESTOR_DEPTH`].
    pub(crate) fn ancestors(&self, p: &Process) -> Vec<Arc<Process>> {
        let mut out = Vec::new();
        let mut ppid = p.ppid;
        let mut pid = p.pid;
        while out.len() < usize::from(MAX_ANCESTOR_DEPTH) && ppid != 0 && ppid != pid {
            let Some(e) = self.procs.get(&ppid) else {
                break;
            };
            out.push(e.proc.clone());
            pid = e.proc.pid;
            ppid = e.proc.ppid;
        }
        out
    }

    /// Make room: exited processes first, then the least recently used eighth.
    fn evict(&mut self) {
        let before = self.procs.len();
        self.procs.retain(|_, e| e.exited_at.is_none());
        if self.procs.len() >= self.max {
            let mut ages: Vec<(u64, u32)> = self
                .procs
                .iter()
                .map(|(pid, e)| (e.last_used, *pid))
                .collect();
            let k = (self.max / 8).max(1).min(ages.len() - 1);
            ages.select_nth_unstable(k);
            let cutoff = ages[k].0;
            self.procs.retain(|_, e| e.last_used > cutoff);
        }
        self.evicted += (before - self.procs.len()) as u64;
    }
}

/// Environments seen at exec, shared: most processes inherit their
/// parent's unchanged, so a node with hundreds of processes holds a few
/// dozen distinct ones. Bounded; when full it starts over (processes keep
/// theirs).
#[derive(Default)]
pub(crate) struct EnvCache {
    by_hash: HashMap<u64, Arc<str>>,
}

/// Distinct environments the cache keeps at most.
const ENV_CACHE_MAX: usize = 512;

impl EnvCache {
    /// The shared `proc.env` form of a NUL-separated environment block.
    pub(crate) fn intern(&mut self, block: &[u8]) -> Arc<str> {
        let hash = crate::sensor::abi::fnv1a(crate::sensor::abi::DENY_SEED_PATH, block);
        if let Some(e) = self.by_hash.get(&hash)
            && env_matches(e, block)
        {
            return e.clone();
        }
        if self.by_hash.len() >= ENV_CACHE_MAX {
            self.by_hash.clear();
        }
        let e: Arc<str> = Arc::from(env_string(block));
        self.by_hash.insert(hash, e.clone());
        e
    }
}

/// `NAME=value` entries of a NUL-separated block, joined by spaces.
pub(crate) fn env_string(block: &[u8]) -> String {
    block
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Is `env` the `proc.env` form of `block`? (Without building it.)
fn env_matches(env: &str, block: &[u8]) -> bool {
    let mut rest = env.as_bytes();
    for (i, entry) in block
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .enumerate()
    {
        if i > 0 {
            match rest.split_first() {
                Some((b' ', r)) => rest = r,
                _ => return false,
            }
        }
        match rest.strip_prefix(entry) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Read `/proc/<pid>` into a [`Process`]. `None` if it is gone or unreadable.
pub(crate) fn read_proc(proc_root: &Path, pid: u32, clock: &BootClock) -> Option<Process> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let stat = parse_stat(&stat)?;
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let argv: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let root = link(&dir.join("root")).unwrap_or_else(|| "/".into());
    let exe_link = link(&dir.join("exe"));
    let exepath_truncated = exe_link.is_none() && too_long(&dir.join("exe"));
    let exepath = exe_link.map(|e| strip_root(&root, &e)).unwrap_or_default();
    let cwd = link(&dir.join("cwd")).map(|c| strip_root(&root, &c));
    let cwd_truncated = cwd.is_none() && too_long(&dir.join("cwd"));
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let caps = |name: &str| field(name).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    // NSpid/NSpgid list the ids from the host's namespace down to the
    // process's own: the last is the one it sees.
    let innermost = |name: &str| {
        field(name)
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let env = read_bounded(&dir.join("environ"), ENV_MAX)
        .filter(|b| !b.is_empty())
        .map(|b| Arc::from(env_string(&b)));
    let exe_meta = std::fs::metadata(dir.join("exe")).ok();
    let exe = argv.first().cloned().unwrap_or_else(|| exepath.clone());
    let mut p = Process {
        pid,
        ppid: stat.ppid,
        name: stat.comm,
        exe,
        exepath,
        exepath_truncated,
        args: argv.into_iter().skip(1).collect(),
        cwd,
        cwd_truncated,
        tty: stat.tty,
        start_time: clock.to_unix_ns(stat.start_ticks.saturating_mul(1_000_000_000) / clk_tck()),
        cap_effective: caps("CapEff:"),
        cap_permitted: caps("CapPrm:"),
        cap_inheritable: caps("CapInh:"),
        vpid: innermost("NSpid:"),
        vpgid: innermost("NSpgid:"),
        sid: stat.session,
        pgid: stat.pgrp,
        env,
        exe_ino: exe_meta.as_ref().map(|m| m.ino()),
        exe_ino_ctime: exe_meta
            .as_ref()
            .and_then(|m| unix_ns(m.ctime(), m.ctime_nsec())),
        exe_ino_mtime: exe_meta
            .as_ref()
            .and_then(|m| unix_ns(m.mtime(), m.mtime_nsec())),
        ..Default::default()
    };
    p.finish();
    Some(p)
}

/// Bytes of an environment the sensor keeps, as the kernel side cuts it
/// (`EA_STR_MAX`).
pub(crate) const ENV_MAX: usize = 4096;

/// The first `max` bytes of a file.
fn read_bounded(path: &Path, max: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(max as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

fn unix_ns(secs: i64, nsecs: i64) -> Option<u64> {
    (secs > 0).then(|| secs as u64 * 1_000_000_000 + nsecs as u64)
}

fn link(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// The link's target is longer than PATH_MAX: the kernel cannot name it.
fn too_long(p: &Path) -> bool {
    matches!(std::fs::read_link(p), Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG))
}

/// `/proc/<pid>/exe` shows paths from the reader's root; the kernel reports
/// them from the process's root. Strip the process's root to match.
pub(crate) fn strip_root(root: &str, path: &str) -> String {
    if root == "/" || root.is_empty() {
        return path.to_string();
    }
    match path.strip_prefix(root) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|v| *v > 0)
            .map_or(100, |v| v as u64)
    })
}

/// The parts of `/proc/<pid>/stat` the table uses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) ppid: u32,
    pub(crate) pgrp: u32,
    pub(crate) session: u32,
    pub(crate) tty: u32,
    pub(crate) start_ticks: u64,
}

/// Parse `/proc/<pid>/stat`; the comm may hold spaces and parentheses, so
/// the fields are counted from its last ')'.
pub(crate) fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, pgrp 5, session 6,
    // tty_nr 7, starttime 22.
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
        session: rest.get(3)?.parse().ok()?,
        tty: rest.get(4)?.parse::<i64>().ok()? as u32,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> ProcessTable {
        ProcessTable::new(
            max,
            Path::new("/nonexistent-proc"),
            BootClock::with_offset(0),
        )
    }

    #[test]
    fn stat_lines_with_odd_comms_parse() {
        let s =
            "1234 (my (odd) name) S 1 1234 1234 34816 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.comm, "my (odd) name");
        assert_eq!(st.ppid, 1);
        assert_eq!((st.pgrp, st.session), (1234, 1234));
        assert_eq!(st.tty, 34816);
        assert_eq!(st.start_ticks, 4242);
    }

    #[test]
    fn ancestors_follow_parents_and_stop_at_cycles_and_depth() {
        let mut t = table(100);
        t.insert(Process::new(1, 0, "/sbin/init", &["init"]));
        t.insert(Process::new(10, 1, "/bin/bash", &["bash"]));
        let sh = t.insert(Process::new(20, 10, "/bin/sh", &["sh", "-c", "x"]));
        let names: Vec<_> = t.ancestors(&sh).iter().map(|p| p.name.clone()).collect();
        assert_eq!(names, ["bash", "init"]);
        // A cycle (a corrupt table) ends at the depth bound instead of looping.
        t.insert(Process::new(30, 31, "/a", &["a"]));
        let b = t.insert(Process::new(31, 30, "/b", &["b"]));
        assert_eq!(t.ancestors(&b).len(), usize::from(MAX_ANCESTOR_DEPTH));
    }

    #[test]
    fn forks_copy_the_parent_and_exits_leave_after_the_grace_period() {
        let mut t = table(100);
        let bash = t.insert(Process::new(10, 1, "/bin/bash", &["bash", "-i"]));
        let child = t.fork(&bash, 11, 5, |p| p.vpid = 11);
        assert_eq!(
            (child.pid, child.ppid, child.cmdline.as_str()),
            (11, 10, "bash -i")
        );
        t.exit(11, 1_000);
        t.sweep(1_000 + EXIT_GRACE_NS - 1);
        assert!(t.get(11).is_some(), "still there within the grace period");
        t.sweep(1_000 + EXIT_GRACE_NS);
        assert!(t.get(11).is_none());
    }

    #[test]
    fn a_full_table_gives_up_exited_then_least_recently_used_processes() {
        let mut t = table(16);
        for pid in 1..=16 {
            t.insert(Process::new(pid, 0, "/x", &["x"]));
        }
        t.exit(5, 0);
        t.insert(Process::new(100, 0, "/y", &["y"]));
        assert!(t.get(5).is_none(), "the exited process went first");
        assert_eq!(t.len(), 16);
        // Keep 16 in use; the next insert must drop the least recently used.
        t.get(1);
        t.insert(Process::new(101, 0, "/z", &["z"]));
        assert!(t.len() <= 16);
        assert!(t.get(1).is_some(), "recently used processes stay");
        assert!(t.get(2).is_none(), "the least recently used went");
        assert!(t.evicted() >= 2);
    }

    #[test]
    fn reparented_processes_take_the_parent_the_kernel_reports() {
        let mut t = table(10);
        t.insert(Process::new(20, 10, "/bin/sh", &["sh"]));
        let p = t.get_or_load(20, 1, || unreachable!());
        assert_eq!(p.ppid, 1);
        assert_eq!(t.get(20).unwrap().ppid, 1);
    }

    #[test]
    fn container_roots_are_stripped_from_proc_links() {
        assert_eq!(strip_root("/", "/usr/bin/x"), "/usr/bin/x");
        assert_eq!(
            strip_root("/run/c/rootfs", "/run/c/rootfs/bin/sh"),
            "/bin/sh"
        );
        assert_eq!(strip_root("/run/c/rootfs", "/run/c/rootfs"), "/");
        assert_eq!(
            strip_root("/run/c/rootfs", "/run/c/rootfsx/a"),
            "/run/c/rootfsx/a"
        );
    }

    #[test]
    fn the_real_proc_seeds_this_process_with_its_parent() {
        let mut t = ProcessTable::new(100_000, Path::new("/proc"), BootClock::now());
        assert!(t.seed() > 0);
        let me = t.get(std::process::id()).expect("this test's own process");
        assert!(!me.exepath.is_empty());
        assert!(
            me.start_time > 1_600_000_000_000_000_000,
            "{}",
            me.start_time
        );
    }
}
