//! Loading the kernel programs with aya: the checks before (privileges, BTF,
//! kernel version, tracefs), the maps the agent fills (syscall table,
//! filters, deny list, its own pid), attaching the probe table, and reading
//! the per-CPU counters.
//!
//! Owns the `Ebpf` object and with it every program, link and map: dropping
//! a [`Kernel`] detaches and unloads everything. Detaching is slow: closing
//! a tracepoint's perf event waits for an RCU grace period (~75 ms each here
//! when closed one after another, 5.1 s for the 67 links); closed from
//! parallel threads the waits partly overlap (2.9 s). The owner drops a
//! `Kernel` off the async runtime. Never reads the ring
//! buffer (it hands it out before anything is attached, so the consumer
//! exists first) and never decodes records.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use aya::programs::{Lsm, RawTracePoint, TracePoint};
use aya::util::KernelVersion;
use aya::{Btf, Ebpf, EbpfLoader};
use tracing::{debug, warn};

use super::SensorError;
use super::abi::{self, COUNTER_MAX, Counter, DenyOpenRule, InodeKey};
use super::enforce::{self, DenyOpenEntries, Mode};
use super::filters::KernelFilters;
use super::probes::{self, ENTER_PROG, Hook, MIN_KERNEL, Probe};
use crate::config::SensorConfig;

/// The object `agent/build.rs` compiled from `ebpf/sensor.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor.bpf.o"));

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const BTF: &str = "/sys/kernel/btf/vmlinux";

/// Which probes attached.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProbeReport {
    pub(crate) attached: Vec<&'static str>,
    /// Optional probes that did not attach, with the reason.
    pub(crate) missing: Vec<(&'static str, String)>,
    /// Rows this architecture has no syscall for.
    pub(crate) not_applicable: Vec<&'static str>,
}

/// The loaded kernel side.
pub(crate) struct Kernel {
    bpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    /// Owned here rather than by the programs, so that [`Drop`] can close
    /// them in parallel.
    links: Vec<Link>,
    /// `sensor.exclude_cgroups` as last applied, and the cgroup ids in the
    /// kernel's `ea_exclude_cgroups` for it.
    exclude_cgroups: Vec<String>,
    cgroup_ids: BTreeSet<u64>,
    /// Where those paths are looked up (found once, at load).
    cgroup_root: Option<PathBuf>,
    lsm: LsmState,
    /// `ea_config` as last applied, less the deny_open part.
    config_flags: u32,
    wakeup_bytes: u32,
}

/// The optional BPF-LSM programs: whether the kernel runs the BPF LSM
/// (checked once, at load), and which hooks are attached. Attached when a
/// deny list first needs them; never detached (an empty list turns them
/// into a map lookup and a return).
struct LsmState {
    available: Result<(), String>,
    btf: Option<Btf>,
    exec: Hooked,
    open: Hooked,
    /// `deny_open` as last applied: the config entries and their inodes.
    deny_open: Vec<crate::config::DenyOpen>,
    entries: DenyOpenEntries,
    /// `deny_exec` as last applied, and the inodes of its full paths.
    deny_exec: Vec<String>,
    exec_inodes: Vec<InodeKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hooked {
    No,
    Yes,
    Failed(String),
}

impl Hooked {
    fn why_not(&self) -> Option<&str> {
        match self {
            Hooked::Failed(why) => Some(why),
            _ => None,
        }
    }
}

/// One optional LSM hook: (program in sensor.bpf.c, LSM hook name).
const LSM_EXEC: [(&str, &str); 1] = [("ea_lsm_exec", "bprm_check_security")];
const LSM_OPEN: [(&str, &str); 2] = [
    ("ea_lsm_open", "file_open"),
    ("ea_lsm_create", "inode_create"),
];

/// `ea_exclude_cgroups` holds at most this many ids.
const MAX_EXCLUDED_CGROUPS: usize = 4096;

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones (whose v2 ids are the ones
/// `bpf_get_current_cgroup_id()` returns).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The ids of the cgroups at `paths` (below `root`) and of every cgroup
/// below them. On cgroup v2 a cgroup's id is its directory's inode number.
/// Paths that do not exist (yet) are skipped; the walk stops at `max`.
pub(crate) fn cgroup_ids(root: &Path, paths: &[String], max: usize) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| root.join(p.trim_matches('/')))
        .collect();
    while let Some(dir) = dirs.pop() {
        if ids.len() >= max {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        ids.insert(meta.ino());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    ids
}

/// Make the hash map `name` (keys `K`, values 1) hold exactly `want`.
fn sync_set<K: aya::Pod + PartialEq>(
    bpf: &mut Ebpf,
    name: &'static str,
    want: &[K],
) -> Result<(), SensorError> {
    let map = bpf.map_mut(name).ok_or(SensorError::MissingMap(name))?;
    let mut m: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(map_err(name))?;
    let stale: Vec<K> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !want.contains(k))
        .collect();
    for k in stale {
        m.remove(&k).map_err(map_err(name))?;
    }
    for k in want {
        m.insert(k, 1, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// An attached probe (aya's `RawTracePointLink` or `TracePointLink`), held
/// for its `Drop`, which detaches it.
type Link = Box<dyn Send>;

impl Drop for Kernel {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                // If no thread can be made, the link moved into the closure
                // is dropped with it right here, one after another.
                let _ = std::thread::Builder::new()
                    .name("edge-agent-detach".into())
                    .spawn_scoped(scope, move || drop(link));
            }
        });
    }
}

/// Everything that must hold before loading; mounts tracefs when it can.
pub(crate) fn preflight() -> Result<(), SensorError> {
    let caps = effective_caps();
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        return Err(SensorError::NotPrivileged);
    }
    let machine = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_default();
    arch_supported(std::env::consts::ARCH, &machine)?;
    if !Path::new(BTF).exists() {
        return Err(SensorError::NoBtf);
    }
    if let Ok(v) = KernelVersion::current() {
        let (maj, min) = MIN_KERNEL;
        if v < KernelVersion::new(maj as u8, min as u8, 0) {
            return Err(SensorError::KernelTooOld {
                found: v.to_string(),
            });
        }
    }
    ensure_tracefs()?;
    raise_memlock();
    Ok(())
}

/// Whether the sensor built for `binary` (Rust's `target_arch`) can run on a
/// kernel whose `uname -m` (as this process sees it) is `machine`.
///
/// eBPF is a 64-bit machine: the programs read every kernel pointer and
/// every syscall tracepoint argument as 8 bytes, which is what 64-bit
/// kernels store. A 32-bit kernel stores 4, so the sensor refuses to load
/// there rather than read garbage. The 32-bit ARM build on a 64-bit ARM
/// kernel (uname says `armv8l` to a 32-bit process) fails differently: its
/// syscall numbers are not the kernel's, and its own calls are compat calls,
/// which the syscall tracepoints do not report.
pub(crate) fn arch_supported(binary: &'static str, machine: &str) -> Result<(), SensorError> {
    if binary != "arm" {
        return Ok(());
    }
    let reason = if machine == "armv8l" || machine == "aarch64" {
        "this 32-bit ARM build cannot watch a 64-bit kernel (its syscall numbers are not the kernel's, and the kernel does not trace 32-bit calls); install the aarch64 build (edge-agent-aarch64-linux-musl) to get the sensor. Metrics, outbox, uplink, rules and bootstrap run."
    } else {
        "the eBPF programs read kernel pointers and syscall arguments as 64-bit values, and a 32-bit kernel stores them in 32 bits, so runtime detection needs a 64-bit kernel (arm64). Metrics, outbox, uplink, rules and bootstrap run."
    };
    Err(SensorError::UnsupportedArch {
        machine: machine.to_string(),
        binary,
        reason,
    })
}

/// This process's effective capabilities (`CapEff` in /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn tracefs_ready(dir: &str) -> bool {
    Path::new(dir).join("events").is_dir()
}

/// Syscall tracepoints need tracefs; mount it at /sys/kernel/tracing when
/// neither it nor debugfs's copy is there.
fn ensure_tracefs() -> Result<(), SensorError> {
    if tracefs_ready(TRACEFS) || tracefs_ready(DEBUGFS_TRACING) {
        return Ok(());
    }
    match nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) if tracefs_ready(TRACEFS) => {
            tracing::info!(
                path = TRACEFS,
                "mounted tracefs for the syscall tracepoints"
            );
            Ok(())
        }
        Ok(()) => Err(SensorError::NoTracefs {
            reason: format!("mounted tracefs at {TRACEFS} but it has no events/ directory"),
        }),
        Err(e) => Err(SensorError::NoTracefs {
            reason: format!("mounting it at {TRACEFS} failed: {e}"),
        }),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones to
/// the cgroup. Raising it may be refused (no CAP_SYS_RESOURCE): a warning.
fn raise_memlock() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(
        Resource::RLIMIT_MEMLOCK,
        libc::RLIM_INFINITY,
        libc::RLIM_INFINITY,
    ) {
        debug!(error = %e, "could not raise RLIMIT_MEMLOCK (fine on kernels >= 5.11, which charge BPF memory to the cgroup)");
    }
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> SensorError {
    move |source| SensorError::Map { map, source }
}

impl Kernel {
    /// Load the object and every program, fill the maps; attach nothing yet.
    /// Returns the ring buffer for the consumer, which must exist before
    /// [`Kernel::attach`] is called.
    pub(crate) fn load(
        config: &SensorConfig,
        own_tgid: u32,
    ) -> Result<(Kernel, RingBuf<MapData>), SensorError> {
        let ring_bytes = u32::try_from(config.ring_buffer_bytes.get()).unwrap_or(1 << 30);
        let mut bpf = EbpfLoader::new()
            .map_max_entries("ea_events", ring_bytes)
            .load(OBJECT)
            .map_err(|e| SensorError::Load {
                what: "the eBPF object".into(),
                message: error_chain(&e),
            })?;
        load_programs(&mut bpf)?;
        let ring = RingBuf::try_from(
            bpf.take_map("ea_events")
                .ok_or(SensorError::MissingMap("ea_events"))?,
        )
        .map_err(map_err("ea_events"))?;
        let counters = PerCpuArray::try_from(
            bpf.take_map("ea_counters")
                .ok_or(SensorError::MissingMap("ea_counters"))?,
        )
        .map_err(map_err("ea_counters"))?;
        let mut k = Kernel {
            bpf,
            counters,
            links: Vec::new(),
            exclude_cgroups: Vec::new(),
            cgroup_ids: BTreeSet::new(),
            cgroup_root: cgroup2_root(),
            lsm: LsmState {
                available: enforce::bpf_lsm_here(),
                btf: None,
                exec: Hooked::No,
                open: Hooked::No,
                deny_open: Vec::new(),
                entries: DenyOpenEntries::default(),
                deny_exec: Vec::new(),
                exec_inodes: Vec::new(),
            },
            config_flags: 0,
            wakeup_bytes: 0,
        };
        {
            let mut own: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                k.bpf
                    .map_mut("ea_own_tgids")
                    .ok_or(SensorError::MissingMap("ea_own_tgids"))?,
            )
            .map_err(map_err("ea_own_tgids"))?;
            own.insert(own_tgid, 1, 0)
                .map_err(map_err("ea_own_tgids"))?;
        }
        k.apply_filters(config)?;
        Ok((k, ring))
    }

    /// Attach the probe table. A required probe that fails stops here with
    /// an error naming it; an optional one is reported missing.
    pub(crate) fn attach(&mut self) -> Result<ProbeReport, SensorError> {
        let mut report = ProbeReport::default();
        for probe in probes::table() {
            match self.attach_one(&probe) {
                Ok(true) => report.attached.push(probe.name()),
                Ok(false) => report.not_applicable.push(probe.name()),
                Err(reason) if probe.required => {
                    return Err(SensorError::Attach {
                        probe: probe.name(),
                        reason,
                    });
                }
                Err(reason) => {
                    let (maj, min) = probe.min_kernel;
                    warn!(probe = probe.name(), %reason, min_kernel = %format!("{maj}.{min}"), "optional probe not attached; its events will be missing");
                    report.missing.push((probe.name(), reason));
                }
            }
        }
        Ok(report)
    }

    /// Ok(false): not applicable on this architecture or node.
    fn attach_one(&mut self, probe: &Probe) -> Result<bool, String> {
        if probe.only_if.is_some_and(|applies| !applies()) {
            return Ok(false);
        }
        match probe.hook {
            Hook::RawTracepoint { prog, tp } => {
                let p: &mut RawTracePoint =
                    program(&mut self.bpf, prog).map_err(|e| e.to_string())?;
                let id = p.attach(tp).map_err(|e| error_chain(&e))?;
                let link = p.take_link(id).map_err(|e| error_chain(&e))?;
                self.links.push(Box::new(link));
                Ok(true)
            }
            Hook::Syscall {
                name,
                nr,
                kind,
                exit,
            } => {
                let Some(nr) = nr else {
                    return Ok(false);
                };
                let enter = format!("sys_enter_{name}");
                if !tracepoint_exists(&enter) {
                    return Err(format!(
                        "tracepoint syscalls/{enter} does not exist on this kernel"
                    ));
                }
                // The kernel must know the syscall before its entry fires.
                {
                    let map = self
                        .bpf
                        .map_mut("ea_syscalls")
                        .ok_or("map ea_syscalls missing")?;
                    let mut table: Array<_, u32> =
                        Array::try_from(map).map_err(|e| e.to_string())?;
                    table
                        .set(nr as u32, kind as u32, 0)
                        .map_err(|e| format!("ea_syscalls[{nr}]: {e}"))?;
                }
                let p: &mut TracePoint =
                    program(&mut self.bpf, ENTER_PROG).map_err(|e| e.to_string())?;
                let id = p
                    .attach("syscalls", &enter)
                    .map_err(|e| format!("{enter}: {}", error_chain(&e)))?;
                let link = p.take_link(id).map_err(|e| error_chain(&e))?;
                self.links.push(Box::new(link));
                if let Some(exit_prog) = exit {
                    let ex = format!("sys_exit_{name}");
                    let p: &mut TracePoint =
                        program(&mut self.bpf, exit_prog).map_err(|e| e.to_string())?;
                    let id = p
                        .attach("syscalls", &ex)
                        .map_err(|e| format!("{ex}: {}", error_chain(&e)))?;
                    let link = p.take_link(id).map_err(|e| error_chain(&e))?;
                    self.links.push(Box::new(link));
                }
                Ok(true)
            }
        }
    }

    /// Make the kernel's filter maps and deny list match `config` (at start
    /// and on reload): entries not wanted are removed, missing ones added.
    pub(crate) fn apply_filters(&mut self, config: &SensorConfig) -> Result<(), SensorError> {
        let f = KernelFilters::from_config(config);
        sync_set(&mut self.bpf, "ea_exclude_comms", &f.comms)?;
        self.exclude_cgroups = config.exclude_cgroups.clone();
        if !self.exclude_cgroups.is_empty() && self.cgroup_root.is_none() {
            warn!(
                "sensor.exclude_cgroups is set but this host has no cgroup v2 hierarchy mounted; nothing is excluded by cgroup"
            );
        }
        self.refresh_cgroups()?;
        for (name, keys) in [
            ("ea_open_prefixes", &f.open_prefixes),
            ("ea_exclude_paths", &f.exclude_paths),
        ] {
            let map = self
                .bpf
                .map_mut(name)
                .ok_or(SensorError::MissingMap(name))?;
            let mut m: LpmTrie<_, [u8; abi::LPM_DATA], u8> =
                LpmTrie::try_from(map).map_err(map_err(name))?;
            let want: Vec<Key<[u8; abi::LPM_DATA]>> =
                keys.iter().map(|k| Key::new(k.bits, k.data)).collect();
            let stale: Vec<_> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| {
                    !want
                        .iter()
                        .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())
                })
                .collect();
            for k in stale {
                m.remove(&k).map_err(map_err(name))?;
            }
            for k in &want {
                m.insert(k, 1, 0).map_err(map_err(name))?;
            }
        }
        sync_set(&mut self.bpf, "ea_deny_exec", &f.deny)?;
        self.lsm.deny_exec = config.deny_exec.clone();
        self.lsm.exec_inodes.clear();
        self.refresh_deny_exec()?;
        if f.deny_enabled() && self.lsm.exec == Hooked::No {
            self.lsm.exec = self.attach_lsm(&LSM_EXEC);
        }
        self.lsm.deny_open = config.deny_open.clone();
        if !config.deny_open.is_empty() && self.lsm.open == Hooked::No {
            self.lsm.open = self.attach_lsm(&LSM_OPEN);
        }
        self.lsm.entries = DenyOpenEntries::default();
        self.refresh_deny_open()?;
        let mut flags = 0;
        if f.deny_enabled() {
            flags |= abi::CFG_DENY_EXEC;
        }
        if !self.exclude_cgroups.is_empty() {
            flags |= abi::CFG_EXCLUDE_CGROUPS;
        }
        self.config_flags = flags;
        self.wakeup_bytes = wakeup_bytes(config);
        self.write_config()
    }

    /// The `ea_config` entry from what was last applied.
    fn write_config(&mut self) -> Result<(), SensorError> {
        let mut flags = self.config_flags;
        let mut access = 0;
        if self.lsm.open == Hooked::Yes && !self.lsm.deny_open.is_empty() {
            flags |= abi::CFG_DENY_OPEN;
            access = self.lsm.entries.access;
        }
        let map = self
            .bpf
            .map_mut("ea_config")
            .ok_or(SensorError::MissingMap("ea_config"))?;
        let mut m: Array<_, [u32; 4]> = Array::try_from(map).map_err(map_err("ea_config"))?;
        m.set(0, [flags, self.wakeup_bytes, access, 0], 0)
            .map_err(map_err("ea_config"))
    }

    /// Load and attach LSM `hooks` (all or nothing is reported). Only where
    /// the kernel runs the BPF LSM; elsewhere the reason is kept for status.
    fn attach_lsm(&mut self, hooks: &[(&'static str, &'static str)]) -> Hooked {
        if let Err(why) = &self.lsm.available {
            return Hooked::Failed(why.clone());
        }
        if self.lsm.btf.is_none() {
            match Btf::from_sys_fs() {
                Ok(b) => self.lsm.btf = Some(b),
                Err(e) => return Hooked::Failed(format!("reading the kernel's BTF: {e}")),
            }
        }
        for (prog, hook) in hooks {
            let btf = self.lsm.btf.as_ref().expect("set above");
            let r = program::<Lsm>(&mut self.bpf, prog)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    p.load(hook, btf).map_err(|e| error_chain(&e))?;
                    let id = p.attach().map_err(|e| error_chain(&e))?;
                    p.take_link(id).map_err(|e| error_chain(&e))
                });
            match r {
                Ok(link) => self.links.push(Box::new(link)),
                Err(e) => {
                    warn!(hook, error = %e, "could not attach the BPF-LSM hook");
                    return Hooked::Failed(format!(
                        "the kernel did not take the BPF-LSM program lsm/{hook}: {e}{}",
                        lsm_attach_hint(&e)
                    ));
                }
            }
        }
        Hooked::Yes
    }

    /// Resolve `deny_exec`'s full paths to inodes again (files created
    /// later, binaries replaced) and bring `ea_deny_exec_inodes` up to date.
    pub(crate) fn refresh_deny_exec(&mut self) -> Result<(), SensorError> {
        let want = enforce::deny_exec_inodes(&self.lsm.deny_exec);
        if want == self.lsm.exec_inodes {
            return Ok(());
        }
        sync_set(&mut self.bpf, "ea_deny_exec_inodes", &want)?;
        self.lsm.exec_inodes = want;
        Ok(())
    }

    /// Resolve `deny_open` again (paths created later, binaries replaced)
    /// and bring the kernel's maps up to date. Cheap when nothing changed.
    pub(crate) fn refresh_deny_open(&mut self) -> Result<(), SensorError> {
        if self.lsm.open != Hooked::Yes {
            return Ok(());
        }
        let cfg = crate::config::SensorConfig {
            deny_open: self.lsm.deny_open.clone(),
            ..Default::default()
        };
        let e = DenyOpenEntries::resolve(&cfg);
        if e == self.lsm.entries {
            return Ok(());
        }
        {
            let name = "ea_deny_open_rules";
            let map = self
                .bpf
                .map_mut(name)
                .ok_or(SensorError::MissingMap(name))?;
            let mut rules: Array<_, DenyOpenRule> = Array::try_from(map).map_err(map_err(name))?;
            for (i, r) in e.rules.iter().enumerate() {
                rules.set(i as u32, *r, 0).map_err(map_err(name))?;
            }
        }
        {
            let name = "ea_deny_open_inodes";
            let map = self
                .bpf
                .map_mut(name)
                .ok_or(SensorError::MissingMap(name))?;
            let mut m: BpfHashMap<_, InodeKey, u32> =
                BpfHashMap::try_from(map).map_err(map_err(name))?;
            let stale: Vec<InodeKey> = m
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, v)| e.inodes.get(k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            for k in stale {
                m.remove(&k).map_err(map_err(name))?;
            }
            for (k, v) in &e.inodes {
                m.insert(k, v, 0).map_err(map_err(name))?;
            }
        }
        sync_set(&mut self.bpf, "ea_deny_open_allow", &e.allow)?;
        if !e.missing.is_empty() {
            debug!(missing = ?e.missing, "deny_open paths that do not exist yet");
        }
        self.lsm.entries = e;
        self.write_config()
    }

    /// How `deny_exec` and `deny_open` are enforced here (for status).
    pub(crate) fn modes(&self, config: &SensorConfig) -> (Mode, Mode) {
        let exec = if config.deny_exec.is_empty() {
            Mode::Off
        } else if self.lsm.exec == Hooked::Yes {
            Mode::Lsm
        } else {
            Mode::Kill
        };
        let open = if config.deny_open.is_empty() {
            Mode::Off
        } else if self.lsm.open == Hooked::Yes {
            Mode::Lsm
        } else {
            Mode::Unavailable(
                self.lsm
                    .open
                    .why_not()
                    .unwrap_or("BPF-LSM is not attached")
                    .to_string(),
            )
        };
        (exec, open)
    }

    /// `deny_open` paths that do not exist (yet).
    pub(crate) fn deny_open_missing(&self) -> &[String] {
        &self.lsm.entries.missing
    }

    /// Bring `ea_exclude_cgroups` up to date with the cgroups that exist now
    /// below the `exclude_cgroups` entries (containers and services come and
    /// go). Cheap when nothing is excluded or nothing changed.
    pub(crate) fn refresh_cgroups(&mut self) -> Result<(), SensorError> {
        let ids = match &self.cgroup_root {
            Some(root) if !self.exclude_cgroups.is_empty() => {
                cgroup_ids(root, &self.exclude_cgroups, MAX_EXCLUDED_CGROUPS)
            }
            _ => BTreeSet::new(),
        };
        if ids != self.cgroup_ids {
            let want: Vec<u64> = ids.iter().copied().collect();
            sync_set(&mut self.bpf, "ea_exclude_cgroups", &want)?;
            self.cgroup_ids = ids;
        }
        Ok(())
    }

    /// cgroups whose processes the kernel does not watch.
    pub(crate) fn excluded_cgroups(&self) -> usize {
        self.cgroup_ids.len()
    }

    /// The kernel's counters, summed over CPUs, indexed by [`Counter`].
    pub(crate) fn counters(&self) -> [u64; COUNTER_MAX as usize] {
        let mut out = [0u64; COUNTER_MAX as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }

    pub(crate) fn counter(&self, c: Counter) -> u64 {
        self.counters()[c as usize]
    }
}

/// When the kernel wakes the reader: a sixteenth of the ring buffer
/// waiting. Below that the reader drains it every [`abi::POLL_MS`], so a
/// quiet node costs a few wakeups a second and a busy one reads in batches,
/// with the ring still fifteen sixteenths empty when it does.
fn wakeup_bytes(config: &SensorConfig) -> u32 {
    u32::try_from(config.ring_buffer_bytes.get() / 16).unwrap_or(u32::MAX)
}

/// Load (verify) every program, on up to [`LOAD_THREADS`] threads: the
/// kernel's verifier is most of the sensor's start-up time, and the
/// programs are independent.
fn load_programs(bpf: &mut Ebpf) -> Result<(), SensorError> {
    use aya::programs::Program;
    let mut progs: Vec<(&str, &mut Program)> = bpf.programs_mut().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, LOAD_THREADS);
    let per = progs.len().div_ceil(threads).max(1);
    let results: Vec<Result<(), SensorError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = progs
            .chunks_mut(per)
            .map(|chunk| {
                scope.spawn(move || {
                    for (name, p) in chunk.iter_mut() {
                        let r = match p {
                            Program::TracePoint(p) => p.load(),
                            Program::RawTracePoint(p) => p.load(),
                            _ => continue,
                        };
                        r.map_err(|e| SensorError::Load {
                            what: format!("program {name}"),
                            message: error_chain(&e),
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SensorError::Load {
                        what: "the programs".into(),
                        message: "a loader thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Threads verifying programs at once; more than the sensor has programs
/// of similar size would not help.
const LOAD_THREADS: usize = 4;

fn program<'a, T>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, SensorError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = bpf
        .program_mut(name)
        .ok_or(SensorError::MissingProgram(name))?;
    p.try_into()
        .map_err(|e: aya::programs::ProgramError| SensorError::Load {
            what: format!("program {name}"),
            message: e.to_string(),
        })
}

/// An error with its sources: aya's outer messages ("error relocating
/// section") say little without the inner ones.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn tracepoint_exists(event: &str) -> bool {
    [TRACEFS, DEBUGFS_TRACING]
        .iter()
        .any(|t| Path::new(t).join("events/syscalls").join(event).is_dir())
}

/// What an operator can make of a refused BPF-LSM attach. The kernel's
/// ENOTSUPP (524, no libc name) is what arm64 kernels before 6.4 answer:
/// without ftrace direct calls they have no BPF trampoline to hang an LSM
/// program on (Debian 12's 6.1 arm64 kernel lists bpf among its LSMs and
/// still answers this).
fn lsm_attach_hint(error: &str) -> &'static str {
    if error.contains("os error 524") {
        " (ENOTSUPP: this kernel has no BPF trampoline for its architecture, as on arm64 before Linux 6.4)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_lsm_attach_with_enotsupp_names_the_missing_trampoline() {
        let e = "`bpf_raw_tracepoint_open` failed: No error information (os error 524)";
        assert!(lsm_attach_hint(e).contains("no BPF trampoline"));
        assert_eq!(lsm_attach_hint("Operation not permitted (os error 1)"), "");
    }

    #[test]
    fn the_sensor_refuses_32_bit_arm_with_the_reason_and_runs_on_64_bit_kernels() {
        assert!(arch_supported("x86_64", "x86_64").is_ok());
        assert!(arch_supported("aarch64", "aarch64").is_ok());
        let e = arch_supported("arm", "armv7l").unwrap_err();
        assert_eq!(e.code(), "unsupported_arch");
        assert!(e.to_string().contains("32-bit kernel"), "{e}");
        let e = arch_supported("arm", "armv8l").unwrap_err();
        assert!(e.to_string().contains("aarch64 build"), "{e}");
    }

    #[test]
    fn cgroup_ids_cover_the_subtrees_skip_missing_paths_and_stop_at_the_limit() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["a/x/y", "a/z", "b", "ab"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("a/cgroup.procs"), "").unwrap();
        let ino = |p: &str| std::fs::metadata(r.join(p)).unwrap().ino();
        let ids = cgroup_ids(r, &["/a/".into(), "missing".into()], 100);
        let want: BTreeSet<u64> = ["a", "a/x", "a/x/y", "a/z"].map(ino).into();
        assert_eq!(ids, want, "a and below, not its sibling ab, not files");
        assert_eq!(cgroup_ids(r, &["a".into()], 2).len(), 2);
        assert!(cgroup_ids(r, &[], 100).is_empty());
    }
}
