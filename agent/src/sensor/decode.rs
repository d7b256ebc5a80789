//! From kernel records to [`Event`]s: decode, then enrich with the process
//! table, the container and the user names.
//!
//! Owns the meaning of each record type's arguments (see `ebpf/abi.h`) and
//! the user-space half of the path filters (relative paths, which only
//! user space can resolve). Keeps the process table current from fork, exec
//! and exit records. Runs on one core without I/O on the hot path except
//! where a record leaves no choice (an unknown process's `/proc` entry, the
//! working directory of a relative open). Never talks to the kernel maps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::abi::{DecodeError, Kind, Record};
use super::container::Containers;
use super::dns::DnsCache;
use super::filters::PathFilter;
use super::proctable::{BootClock, EnvCache, ProcessTable, strip_root};
use super::users::Users;
use crate::config::SensorConfig;
use crate::event::{
    Args, Caps, Container, Event, EventType, Evt, Fd, FdType, L4Proto, Process, Role, User,
};

/// What one record became.
#[derive(Debug)]
// Nearly every value is an Event, which goes on by value to the rules
// engine's channel; boxing it would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Event {
        event: Event,
        /// The deny list matched and the kernel killed the process.
        killed: bool,
    },
    /// A BPF-LSM hook refused an exec or an open. `event` is what was
    /// attempted (an `execve` or `openat` failing with EPERM, by the caller);
    /// it is reported as an enforcement alert, not handed to the rules.
    Refused { event: Event, refusal: Refusal },
    /// The kernel lost this many records (the ring buffer was full).
    Loss(u64),
    /// Dropped by a user-space filter.
    Filtered,
    /// A record the sensor keeps for itself (a DNS answer for the name
    /// cache): nothing for the rules.
    Learned,
}

/// Which deny list refused, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub(crate) list: DenyList,
    /// The executable or file refused (as the caller's root sees it).
    pub(crate) path: String,
    /// `deny_open`: the entry's index in the config.
    pub(crate) rule: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenyList {
    Exec,
    Open,
}

impl DenyList {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DenyList::Exec => "exec",
            DenyList::Open => "open",
        }
    }
}

/// Decoder and enricher: one per sensor, owned by its reader task.
pub struct Enricher {
    pub procs: ProcessTable,
    pub(crate) containers: Containers,
    pub(crate) users: Users,
    filter: PathFilter,
    clock: BootClock,
    proc_root: std::path::PathBuf,
    envs: EnvCache,
    /// Host names from the DNS answers the node saw (`fd.sip.name`).
    pub(crate) dns: DnsCache,
    num: u64,
    /// Records dropped by the user-space half of the path filters.
    pub(crate) filtered_user: u64,
}

const AT_FDCWD: i64 = libc::AT_FDCWD as i64;
/// The kernel's `sk_state` of a connected socket (TCP, and UDP after connect()).
const TCP_ESTABLISHED: u8 = 1;

impl Enricher {
    pub fn new(
        config: &SensorConfig,
        proc_root: &Path,
        host_root: &Path,
        clock: BootClock,
    ) -> Self {
        Enricher {
            procs: ProcessTable::new(config.max_processes, proc_root, clock),
            containers: Containers::new(&config.runtime_state_dirs, proc_root),
            users: Users::new(host_root),
            filter: PathFilter::from_config(config),
            clock,
            proc_root: proc_root.to_path_buf(),
            envs: EnvCache::default(),
            dns: DnsCache::default(),
            num: 0,
            filtered_user: 0,
        }
    }

    /// Apply a reloaded config's filters.
    pub(crate) fn set_filters(&mut self, config: &SensorConfig) {
        self.filter = PathFilter::from_config(config);
    }

    pub(crate) fn set_clock(&mut self, clock: BootClock) {
        self.clock = clock;
        self.procs.set_clock(clock);
    }

    /// Decode and enrich one record: the process it is about, its
    /// arguments by kind ([`Enricher::arguments`]), then the names and
    /// ancestors around them ([`Enricher::assemble`]).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let r = Record::parse(bytes)?;
        let Some(ty) = r.h.kind.event_type() else {
            return Ok(match r.h.kind {
                Kind::Dns => {
                    if let Some(msg) = r.bytes(0) {
                        self.dns.learn(msg, r.h.ts_boot_ns);
                    }
                    Decoded::Learned
                }
                Kind::Refused => self.refused(&r),
                _ => Decoded::Loss(r.arg[0].max(0) as u64),
            });
        };
        let mut parts = Parts {
            proc: self.subject(&r),
            container: self.container(&r),
            args: Args::default(),
            fd: None,
            caps: None,
        };
        if let Err(Filtered) = self.arguments(&r, &mut parts) {
            self.filtered_user += 1;
            return Ok(Decoded::Filtered);
        }
        Ok(Decoded::Event {
            event: self.assemble(ty, &r, parts),
            killed: r.killed(),
        })
    }

    /// The process the event is about; exec installs the new image first
    /// (a failed exec leaves the caller as it was).
    fn subject(&mut self, r: &Record<'_>) -> Arc<Process> {
        match r.h.kind {
            Kind::Execve | Kind::Execveat if r.h.res >= 0 => self.exec(r),
            _ => self
                .procs
                .get_or_load(r.h.pid, r.h.ppid, || fallback_process(r)),
        }
    }

    /// The record's arguments, and the fd it is about, by kind (see
    /// `ebpf/abi.h` for what each kind carries where). `Err(Filtered)`:
    /// the user-space half of the path filters dropped it.
    fn arguments(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        match r.h.kind {
            Kind::Loss | Kind::Dns | Kind::Refused => {
                unreachable!("decode returns these before this")
            }
            Kind::Execve | Kind::Execveat => exec_args(r, p),
            Kind::Clone | Kind::Clone3 | Kind::Fork | Kind::Vfork => self.fork(r, p),
            Kind::Procexit => self.exit(r, p),
            Kind::Open | Kind::Openat | Kind::Openat2 | Kind::Creat => self.open(r, p),
            Kind::Connect => connect(r, p),
            Kind::Accept | Kind::Accept4 => accept(r, p),
            Kind::Listen => listen(r, p),
            Kind::Sendto | Kind::Sendmsg | Kind::Recvfrom | Kind::Recvmsg => datagram(r, p),
            Kind::Ptrace => ptrace(r, p),
            Kind::Setuid | Kind::Setreuid | Kind::Setresuid => set_uids(r, p),
            Kind::Setgid | Kind::Setregid | Kind::Setresgid => set_gids(r, p),
            Kind::InitModule | Kind::FinitModule => module(r, p),
            Kind::MemfdCreate => memfd(r, p),
            Kind::Mount => mount(r, p),
            Kind::Unlink | Kind::Unlinkat => self.unlink(r, p),
            Kind::Rename | Kind::Renameat | Kind::Renameat2 | Kind::Link | Kind::Linkat => {
                self.rename_or_link(r, p)
            }
            Kind::Symlink | Kind::Symlinkat => self.symlink(r, p),
            Kind::Dup | Kind::Dup2 | Kind::Dup3 => dup(r, p),
            Kind::Chmod | Kind::Fchmod | Kind::Fchmodat | Kind::Fchmodat2 => self.chmod(r, p),
            Kind::Mkdir | Kind::Mkdirat | Kind::Rmdir => self.mkdir_or_rmdir(r, p),
            Kind::Setns | Kind::Unshare => namespaces(r, p),
            Kind::Bpf => {
                p.args.cmd = Some(r.arg[0] as u32);
                Ok(())
            }
            Kind::Userfaultfd => {
                p.args.flags = Some(r.arg[0] as u64);
                Ok(())
            }
            Kind::Prctl => self.prctl(r, p),
            Kind::Setsid | Kind::Setpgid => self.session(r, p),
            Kind::Socket => socket(r, p),
        }
    }

    /// A REFUSED record: the caller's attempt, as an event for the alert.
    /// The caller's image is unchanged (a refused exec never happened).
    fn refused(&mut self, r: &Record<'_>) -> Decoded {
        let path = r.string(0).unwrap_or_default();
        let mut parts = Parts {
            proc: self.subject(r),
            container: self.container(r),
            args: Args::default(),
            fd: None,
            caps: None,
        };
        let (ty, list, rule) = if r.arg[0] == super::abi::LIST_OPEN {
            let access = r.arg[2] as u32;
            let flags = match (
                access & super::abi::ACCESS_READ != 0,
                access & super::abi::ACCESS_WRITE != 0,
            ) {
                (true, true) => libc::O_RDWR,
                (false, true) => libc::O_WRONLY,
                _ => libc::O_RDONLY,
            };
            parts.args.name = Some(path.clone());
            parts.args.flags = Some(flags as u64);
            parts.fd = Some(Fd::file(-1, &path));
            let rule = usize::try_from(r.arg[1]).ok();
            (EventType::Openat, DenyList::Open, rule)
        } else {
            parts.args.filename = r.string(3).or_else(|| Some(path.clone()));
            (EventType::Execve, DenyList::Exec, None)
        };
        Decoded::Refused {
            event: self.assemble(ty, r, parts),
            refusal: Refusal { list, path, rule },
        }
    }

    /// The event: the parts, the user and group names, the ancestors.
    fn assemble(&mut self, ty: EventType, r: &Record<'_>, mut p: Parts) -> Event {
        let h = &r.h;
        if let Some(f) = p.fd.as_mut()
            && f.ty.is_ip()
            && !self.dns.is_empty()
        {
            let now = h.ts_boot_ns;
            f.remote_names = f.remote.and_then(|a| self.dns.lookup(a.ip(), now));
            f.local_names = f.local.and_then(|a| self.dns.lookup(a.ip(), now));
        }
        let root = self.containers.root_of(&p.container, h.pid);
        let names = self.users.names(
            (!p.container.is_host()).then(|| (p.container.id.as_str(), root.as_deref())),
            h.uid,
            h.gid,
            h.loginuid,
        );
        self.num += 1;
        let ancestors = self.procs.ancestors(&p.proc);
        Event {
            evt: Evt {
                ty,
                time: self.clock.to_unix_ns(h.ts_boot_ns),
                num: self.num,
                res: h.res,
                args: p.args,
            },
            proc: p.proc,
            ancestors,
            user: User {
                uid: h.uid,
                gid: h.gid,
                loginuid: h.loginuid,
                name: names.user,
                group: names.group,
                loginname: names.login,
            },
            tid: h.tid,
            fd: p.fd,
            container: p.container,
            caps: p.caps,
        }
    }

    /// `Err(Filtered)` when the path filters exclude `path`. A path known
    /// only in part is kept: whether it lies below an excluded prefix
    /// cannot be told.
    fn keep(&self, path: &str, partial: bool) -> Kept {
        if !partial && self.filter.excluded(path) {
            Err(Filtered)
        } else {
            Ok(())
        }
    }

    // ---- arguments of kinds that change the process table or read paths

    fn fork(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let child = r.arg[0] as u32;
        let ids = ProcIds::from_record(r);
        let start = self.clock.to_unix_ns(r.h.ts_boot_ns);
        self.procs.fork(&p.proc, child, start, |c| ids.apply(c));
        if r.arg[1] != 0 {
            p.args.flags = Some(r.arg[1] as u64);
        }
        Ok(())
    }

    fn exit(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        p.args.status = Some(exit_status(r.arg[0]));
        self.procs.exit(r.h.pid, r.h.ts_boot_ns);
        Ok(())
    }

    /// Relative paths are filtered here: only user space can resolve them.
    /// A path known only in part is kept: whether it lies below a watched
    /// or an excluded prefix cannot be told.
    fn open(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let given = r.string(0).unwrap_or_default();
        let flags = r.arg[0] as u64;
        let (path, partial) = self.resolve_at(r, &p.container, r.arg[2], &given);
        let partial = partial || r.cut(0);
        if !given.starts_with('/') && !partial && !self.filter.reports_open(&path, flags) {
            return Err(Filtered);
        }
        p.args.name = Some(given);
        p.args.flags = Some(flags);
        if flags as i32 & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            p.args.mode = Some(r.arg[1] as u32);
        }
        let mut f = Fd::file(fd_num(r.h.res), &path);
        f.name_truncated = partial;
        if flags as i32 & libc::O_DIRECTORY != 0
            && flags as i32 & libc::O_TMPFILE != libc::O_TMPFILE
        {
            f.ty = FdType::Directory;
        }
        p.fd = Some(f);
        Ok(())
    }

    fn unlink(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let (path, partial) =
            self.resolve(r, &p.container, r.arg[0], &r.string(0).unwrap_or_default());
        self.keep(&path, partial)?;
        p.args.path = Some(path);
        p.args.path_truncated = partial;
        p.args.flags = Some(r.arg[1] as u64);
        Ok(())
    }

    fn rename_or_link(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let (old, old_partial) =
            self.resolve(r, &p.container, r.arg[0], &r.string(0).unwrap_or_default());
        let (new, new_partial) =
            self.resolve(r, &p.container, r.arg[1], &r.string(1).unwrap_or_default());
        self.keep(&old, old_partial)?;
        p.args.path_truncated = old_partial || new_partial;
        p.args.oldpath = Some(old);
        p.args.newpath = Some(new);
        p.args.flags = Some(r.arg[2] as u64);
        Ok(())
    }

    fn symlink(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let (link, partial) =
            self.resolve(r, &p.container, r.arg[0], &r.string(1).unwrap_or_default());
        self.keep(&link, partial)?;
        p.args.path_truncated = partial;
        p.args.target = r.string(0);
        p.args.linkpath = Some(link);
        Ok(())
    }

    fn chmod(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let kind = r.h.kind;
        let given = r.string(0).unwrap_or_default();
        let (path, partial) = if kind == Kind::Fchmod {
            (given, r.cut(0))
        } else {
            self.resolve_at(r, &p.container, r.arg[1], &given)
        };
        self.keep(&path, partial)?;
        p.args.path_truncated = partial;
        p.args.mode = Some(r.arg[0] as u32);
        if kind == Kind::Fchmod {
            p.args.fd = Some(r.arg[1]);
            if !path.is_empty() || partial {
                let mut f = Fd::file(r.arg[1], &path);
                f.name_truncated = partial;
                p.fd = Some(f);
            }
        }
        if matches!(kind, Kind::Fchmodat | Kind::Fchmodat2) {
            p.args.dirfd = Some(r.arg[1]);
        }
        if kind == Kind::Fchmodat2 {
            p.args.flags = Some(r.arg[2] as u64);
        }
        if !path.is_empty() {
            p.args.filename = Some(path);
        }
        Ok(())
    }

    fn mkdir_or_rmdir(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let (path, partial) =
            self.resolve_at(r, &p.container, r.arg[1], &r.string(0).unwrap_or_default());
        self.keep(&path, partial)?;
        p.args.path_truncated = partial;
        if r.h.kind != Kind::Rmdir {
            p.args.mode = Some(r.arg[0] as u32);
        }
        if r.h.kind == Kind::Mkdirat {
            p.args.dirfd = Some(r.arg[1]);
        }
        p.args.path = Some(path);
        Ok(())
    }

    fn prctl(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let option = r.arg[0] as u32;
        p.args.option = Some(option);
        p.args.arg2_int = Some(r.arg[1]);
        p.args.arg2_str = r.string(0);
        // A process renaming itself (its main thread) changes proc.name.
        if option == libc::PR_SET_NAME as u32
            && r.h.res == 0
            && r.h.tid == r.h.pid
            && let Some(name) = p.args.arg2_str.clone()
            && let Some(renamed) = self.procs.modify(r.h.pid, |q| q.name = name)
        {
            p.proc = renamed;
        }
        Ok(())
    }

    fn session(&mut self, r: &Record<'_>, p: &mut Parts) -> Kept {
        let setsid = r.h.kind == Kind::Setsid;
        if !setsid {
            p.args.pid = Some(r.arg[0]);
            p.args.pgid = Some(r.arg[1]);
        }
        let own = setsid || r.arg[0] == 0 || r.arg[0] == i64::from(p.proc.vpid);
        if r.h.res >= 0 && own {
            let ids = ProcIds::from_record(r);
            if let Some(changed) = self.procs.modify(r.h.pid, |q| ids.apply(q)) {
                p.proc = changed;
            }
        }
        Ok(())
    }

    /// The container of the record's process (exec records name the cgroup).
    fn container(&mut self, r: &Record<'_>) -> Arc<Container> {
        // The cgroup's last two levels (`pod<uid>/<id>`) name the container
        // and its pod even when the process is gone before we look.
        let leaf = match r.h.kind {
            Kind::Execve | Kind::Execveat => r.string(4).map(|leaf| match r.string(5) {
                Some(parent) => format!("{parent}/{leaf}"),
                None => leaf,
            }),
            _ => None,
        };
        self.containers
            .lookup(r.h.cgroup_id, r.h.pid, leaf.as_deref())
    }

    /// Install the image an exec record describes.
    fn exec(&mut self, r: &Record<'_>) -> Arc<Process> {
        let h = &r.h;
        let argv: Vec<String> = r
            .bytes(1)
            .map(|b| {
                b.split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let exepath = r.string(0).unwrap_or_default();
        let flags = r.arg[0] as u64;
        use crate::event::exe_flags::*;
        let layered = flags & (EXE_UPPER_LAYER | EXE_LOWER_LAYER) != 0;
        let env = r.bytes(6).map(|b| self.envs.intern(b));
        let known = |v: i64| (v > 0).then_some(v as u64);
        let mut p = Process {
            pid: h.pid,
            ppid: h.ppid,
            name: String::from_utf8_lossy(h.comm()).into_owned(),
            exe: argv.first().cloned().unwrap_or_else(|| exepath.clone()),
            exepath,
            exepath_truncated: r.cut(0),
            args: argv.into_iter().skip(1).collect(),
            cwd: r.string(2),
            cwd_truncated: r.cut(2),
            tty: r.arg[1] as u32,
            start_time: self.clock.to_unix_ns(r.arg[2] as u64),
            exe_upper_layer: layered.then_some(flags & EXE_UPPER_LAYER != 0),
            exe_from_memfd: Some(flags & EXE_FROM_MEMFD != 0),
            cap_effective: Some(r.arg[3] as u64),
            cap_permitted: Some(r.arg[6] as u64),
            cap_inheritable: Some(r.arg[7] as u64),
            env,
            exe_ino: known(r.arg[10]),
            exe_ino_ctime: known(r.arg[11]),
            exe_ino_mtime: known(r.arg[12]),
            ..Default::default()
        };
        ProcIds::from_record(r).apply(&mut p);
        self.procs.insert(p)
    }

    /// `path` (string 0) as an absolute, normalised path, from the base
    /// directory the kernel sent in string 1 for a relative one; from
    /// `/proc` (see [`Enricher::resolve`]) when it could not. The flag: the
    /// path is known only in part (the base was cut: see [`Record::cut`]).
    fn resolve_at(
        &mut self,
        r: &Record<'_>,
        container: &Container,
        dirfd: i64,
        path: &str,
    ) -> (String, bool) {
        if path.starts_with('/') {
            return (normalize(path), false);
        }
        match r.string(1) {
            Some(base) => (normalize(&format!("{base}/{path}")), r.cut(1)),
            // The kernel had no room left for the base: only `path` is known.
            None if r.cut(1) => (path.to_string(), true),
            None => self.resolve(r, container, dirfd, path),
        }
    }

    /// `path` as an absolute, normalised path: relative paths are taken
    /// from `dirfd` (or the thread's working directory), read from `/proc`
    /// while the process lives, else the working directory its exec had.
    /// The flag: the path is known only in part, because that directory is
    /// longer than PATH_MAX (`/proc` answers ENAMETOOLONG; only `path` is
    /// known) or the exec's was cut. A base that cannot be found at all
    /// leaves `path` relative and unflagged, as before: flagging it would
    /// flag every relative open of a process gone before it was read.
    fn resolve(
        &mut self,
        r: &Record<'_>,
        container: &Container,
        dirfd: i64,
        path: &str,
    ) -> (String, bool) {
        if path.starts_with('/') {
            return (normalize(path), false);
        }
        let link = if dirfd == AT_FDCWD {
            self.proc_root.join(r.h.tid.to_string()).join("cwd")
        } else {
            self.proc_root
                .join(r.h.pid.to_string())
                .join("fd")
                .join(dirfd.to_string())
        };
        let (base, partial) = match std::fs::read_link(link) {
            Ok(l) => (Some(l.to_string_lossy().into_owned()), false),
            Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                return (path.to_string(), true);
            }
            Err(_) if dirfd == AT_FDCWD => match self.procs.get(r.h.pid) {
                Some(p) => (p.cwd.clone(), p.cwd_truncated),
                None => (None, false),
            },
            Err(_) => (None, false),
        };
        let Some(mut base) = base else {
            return (path.to_string(), partial);
        };
        if let Some(root) = self.containers.root_of(container, r.h.pid) {
            base = strip_root(&root, &base);
        }
        (normalize(&format!("{base}/{path}")), partial)
    }
}

/// A record dropped by the user-space half of the path filters.
struct Filtered;

/// What an argument decoder says: keep the event, or it was filtered.
type Kept = Result<(), Filtered>;

/// What a record becomes before the names and ancestors are added.
struct Parts {
    proc: Arc<Process>,
    container: Arc<Container>,
    args: Args,
    fd: Option<Fd>,
    caps: Option<Caps>,
}

// ---- arguments of kinds that need nothing but the record -------------------

fn exec_args(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.filename = r.string(3);
    if r.h.res >= 0 {
        p.args.flags = Some(r.arg[0] as u64);
    }
    if r.h.kind == Kind::Execveat {
        p.args.fd = Some(r.arg[5]);
    }
    Ok(())
}

fn connect(r: &Record<'_>, p: &mut Parts) -> Kept {
    let res = r.h.res;
    let mut f = sock_fd(r, r.arg[0], Role::Client);
    f.connected = Some(res == 0 || r.sock.state == TCP_ESTABLISHED);
    f.name_changed = res == 0 || res == -i64::from(libc::EINPROGRESS);
    p.fd = Some(f);
    Ok(())
}

fn accept(r: &Record<'_>, p: &mut Parts) -> Kept {
    if r.arg[1] != 0 {
        p.args.flags = Some(r.arg[1] as u64);
    }
    let mut f = sock_fd(r, fd_num(r.h.res), Role::Server);
    f.connected = Some(r.h.res >= 0);
    p.fd = Some(f);
    Ok(())
}

fn listen(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.fd = Some(r.arg[0]);
    p.args.backlog = Some(r.arg[1]);
    let mut f = sock_fd(r, r.arg[0], Role::Server);
    f.connected = Some(false);
    p.fd = Some(f);
    Ok(())
}

/// sendto/sendmsg/recvfrom/recvmsg: the kernel sends these only for a new
/// peer of a socket that is not connected.
fn datagram(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.fd = Some(r.arg[0]);
    let role = match r.h.kind {
        Kind::Sendto | Kind::Sendmsg => Role::Client,
        _ => Role::Server,
    };
    let mut f = sock_fd(r, r.arg[0], role);
    f.connected = Some(r.sock.state == TCP_ESTABLISHED);
    f.name_changed = true;
    p.fd = Some(f);
    Ok(())
}

fn ptrace(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.request = Some(r.arg[0] as u64);
    p.args.pid = Some(r.arg[1]);
    Ok(())
}

fn set_uids(r: &Record<'_>, p: &mut Parts) -> Kept {
    let a = &mut p.args;
    match r.h.kind {
        Kind::Setuid => a.uid = Some(r.arg[0] as u32),
        kind => {
            a.ruid = Some(r.arg[0] as u32);
            a.euid = Some(r.arg[1] as u32);
            if kind == Kind::Setresuid {
                a.suid = Some(r.arg[2] as u32);
            }
        }
    }
    Ok(())
}

fn set_gids(r: &Record<'_>, p: &mut Parts) -> Kept {
    let a = &mut p.args;
    match r.h.kind {
        Kind::Setgid => a.gid = Some(r.arg[0] as u32),
        kind => {
            a.rgid = Some(r.arg[0] as u32);
            a.egid = Some(r.arg[1] as u32);
            if kind == Kind::Setresgid {
                a.sgid = Some(r.arg[2] as u32);
            }
        }
    }
    Ok(())
}

/// init_module carries nothing; finit_module its fd and file.
fn module(r: &Record<'_>, p: &mut Parts) -> Kept {
    if r.h.kind == Kind::FinitModule {
        p.args.fd = Some(r.arg[0]);
        if let Some(path) = r.string(1) {
            p.args.name = Some(module_name(&path));
            p.fd = Some(Fd::file(r.arg[0], &path));
        }
    }
    Ok(())
}

fn memfd(r: &Record<'_>, p: &mut Parts) -> Kept {
    let name = r.string(0).unwrap_or_default();
    p.args.flags = Some(r.arg[0] as u64);
    p.fd = Some(Fd {
        ty: FdType::Memfd,
        ..Fd::file(fd_num(r.h.res), &format!("memfd:{name}"))
    });
    p.args.name = Some(name);
    Ok(())
}

fn mount(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.dev = r.string(0);
    p.args.dir = r.string(1);
    p.args.fstype = r.string(2);
    p.args.flags = Some(r.arg[0] as u64);
    Ok(())
}

/// The new fd is the old one's file or socket.
fn dup(r: &Record<'_>, p: &mut Parts) -> Kept {
    p.args.oldfd = Some(r.arg[0]);
    p.args.newfd = Some(r.arg[1]);
    if r.h.kind == Kind::Dup3 {
        p.args.flags = Some(r.arg[2] as u64);
    }
    let num = fd_num(r.h.res);
    p.fd = if r.sock.family != 0 {
        let mut f = sock_fd(r, num, Role::Client);
        f.connected = Some(r.sock.state == TCP_ESTABLISHED);
        Some(f)
    } else {
        r.string(0).map(|path| Fd {
            name_truncated: r.cut(0),
            ..Fd::file(num, &path)
        })
    };
    Ok(())
}

/// setns/unshare: the caller's capabilities from before the call.
fn namespaces(r: &Record<'_>, p: &mut Parts) -> Kept {
    if r.h.kind == Kind::Setns {
        p.args.fd = Some(r.arg[0]);
        p.args.nstype = Some(r.arg[1] as u64);
    } else {
        p.args.flags = Some(r.arg[0] as u64);
    }
    p.caps = Some(Caps {
        effective: r.arg[2] as u64,
        permitted: r.arg[3] as u64,
        inheritable: r.arg[4] as u64,
    });
    Ok(())
}

fn socket(r: &Record<'_>, p: &mut Parts) -> Kept {
    let domain = r.arg[0] as u32;
    let ty = (r.arg[1] as u32) & 0xf;
    let proto = r.arg[2] as u32;
    p.args.domain = Some(domain);
    p.args.sock_type = Some(ty);
    p.args.proto = Some(proto);
    p.fd = Some(Fd {
        ty: family_fd_type(domain as u16),
        l4proto: l4proto(proto as u16, ty as u16),
        connected: Some(false),
        ..Fd::file(fd_num(r.h.res), "")
    });
    Ok(())
}

/// The process ids exec, fork, setsid and setpgid records carry in arg8
/// and arg9 (see `abi.h`).
#[derive(Debug, Clone, Copy)]
struct ProcIds {
    vpid: u32,
    vpgid: u32,
    sid: u32,
    pgid: u32,
}

impl ProcIds {
    fn from_record(r: &Record<'_>) -> ProcIds {
        let (a8, a9) = (r.arg[8] as u64, r.arg[9] as u64);
        ProcIds {
            vpid: a8 as u32,
            vpgid: (a8 >> 32) as u32,
            sid: a9 as u32,
            pgid: (a9 >> 32) as u32,
        }
    }

    /// Set what the record knew (a record without ids leaves them).
    fn apply(self, p: &mut Process) {
        if self.vpid != 0 {
            p.vpid = self.vpid;
            p.vpgid = self.vpgid;
        }
        if self.sid != 0 || self.pgid != 0 {
            p.sid = self.sid;
            p.pgid = self.pgid;
        }
    }
}

/// A process the table does not know and `/proc` no longer has: what the
/// record's header says.
fn fallback_process(r: &Record<'_>) -> Process {
    let name = String::from_utf8_lossy(r.h.comm()).into_owned();
    let mut p = Process {
        pid: r.h.pid,
        ppid: r.h.ppid,
        name,
        ..Default::default()
    };
    p.finish();
    p
}

fn fd_num(res: i64) -> i64 {
    if res >= 0 { res } else { -1 }
}

/// Falco's procexit status: the exit code, or 128 + the signal that killed it.
pub(crate) fn exit_status(raw: i64) -> i64 {
    let sig = raw & 0x7f;
    if sig != 0 {
        128 + sig
    } else {
        (raw >> 8) & 0xff
    }
}

/// `finit_module`'s file `/lib/modules/.../foo.ko.zst` -> `foo`.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split(".ko").next().unwrap_or(base).to_string()
}

fn family_fd_type(family: u16) -> FdType {
    match i32::from(family) {
        libc::AF_INET => FdType::Ipv4,
        libc::AF_INET6 => FdType::Ipv6,
        libc::AF_UNIX => FdType::Unix,
        libc::AF_NETLINK => FdType::Netlink,
        libc::AF_PACKET => FdType::Packet,
        _ => FdType::Other,
    }
}

fn l4proto(proto: u16, ty: u16) -> Option<L4Proto> {
    match i32::from(proto) {
        libc::IPPROTO_TCP => Some(L4Proto::Tcp),
        libc::IPPROTO_UDP => Some(L4Proto::Udp),
        libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6 => Some(L4Proto::Icmp),
        _ => match i32::from(ty) {
            libc::SOCK_STREAM => Some(L4Proto::Tcp),
            libc::SOCK_DGRAM => Some(L4Proto::Udp),
            libc::SOCK_RAW => Some(L4Proto::Raw),
            _ => None,
        },
    }
}

fn ip(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if i32::from(family) == libc::AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The fd of a socket record: IP tuple, unix path, or just its family.
fn sock_fd(r: &Record<'_>, num: i64, role: Role) -> Fd {
    let s = &r.sock;
    match i32::from(s.family) {
        libc::AF_INET | libc::AF_INET6 => {
            let local = SocketAddr::new(ip(s.family, &s.laddr), s.lport);
            let remote = SocketAddr::new(ip(s.family, &s.raddr), s.rport);
            let proto = l4proto(s.proto, s.ty).unwrap_or(L4Proto::Tcp);
            Fd::socket(num, local, remote, role, proto)
        }
        libc::AF_UNIX => {
            let name = r
                .bytes(0)
                .map(|b| match b.split_first() {
                    // An abstract socket's name starts with NUL; Falco shows '@'.
                    Some((0, rest)) => format!("@{}", String::from_utf8_lossy(trim_nul(rest))),
                    _ => String::from_utf8_lossy(trim_nul(b)).into_owned(),
                })
                .unwrap_or_default();
            Fd {
                ty: FdType::Unix,
                ..Fd::file(num, &name)
            }
        }
        family => Fd {
            ty: family_fd_type(family as u16),
            l4proto: l4proto(s.proto, s.ty),
            ..Fd::file(num, "")
        },
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Lexically normalise an absolute path: no `.`, `..` or empty components.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = String::with_capacity(path.len());
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Field, FieldValue};
    use crate::sensor::abi::{RecordBuilder, Sock};

    fn enricher() -> Enricher {
        let config = SensorConfig {
            runtime_state_dirs: vec![],
            ..Default::default()
        };
        let none = Path::new("/nonexistent-proc");
        Enricher::new(&config, none, none, BootClock::with_offset(1_000))
    }

    fn event(e: &mut Enricher, raw: &[u8]) -> Event {
        match e.decode(raw).unwrap() {
            Decoded::Event { event, .. } => event,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn field(e: &Event, name: &str, index: Option<&str>) -> String {
        e.field(&Field::parse(name, index).unwrap()).to_string()
    }

    #[test]
    fn exec_installs_the_image_and_later_events_see_it_and_its_parents() {
        let mut e = enricher();
        let shell = RecordBuilder::new(Kind::Execve)
            .task(10, 10, 1, "bash")
            .string(0, b"/usr/bin/bash")
            .string(1, b"bash\0-i\0")
            .build();
        event(&mut e, &shell);
        let fork = RecordBuilder::new(Kind::Clone)
            .task(10, 10, 1, "bash")
            .arg(0, 11)
            .arg(1, libc::SIGCHLD as i64)
            .res(11)
            .build();
        let f = event(&mut e, &fork);
        assert_eq!(f.evt.ty, EventType::Clone);
        assert_eq!(f.evt.res, 11);
        let exec = RecordBuilder::new(Kind::Execve)
            .task(11, 11, 10, "cat")
            .creds(0, 0, 1000)
            .time(5)
            .arg(0, crate::event::exe_flags::EXE_UPPER_LAYER as i64)
            .arg(1, 34816)
            .string(0, b"/usr/bin/cat")
            .string(1, b"cat\0/etc/hostname\0")
            .string(2, b"/root")
            .string(3, b"/bin/cat")
            .build();
        let x = event(&mut e, &exec);
        assert_eq!(x.evt.time, 1_005);
        assert_eq!(field(&x, "proc.name", None), "cat");
        assert_eq!(field(&x, "proc.exepath", None), "/usr/bin/cat");
        assert_eq!(field(&x, "proc.cmdline", None), "cat /etc/hostname");
        assert_eq!(field(&x, "proc.cwd", None), "/root");
        assert_eq!(field(&x, "proc.tty", None), "34816");
        assert_eq!(field(&x, "proc.pname", None), "bash");
        assert_eq!(field(&x, "proc.pcmdline", None), "bash -i");
        assert_eq!(field(&x, "evt.arg.filename", None), "/bin/cat");
        assert_eq!(field(&x, "evt.arg.flags", None), "EXE_UPPER_LAYER");
        assert_eq!(x.field(&Field::ProcIsExeUpperLayer), FieldValue::Bool(true));
        assert_eq!(field(&x, "user.loginuid", None), "1000");
        let open = RecordBuilder::new(Kind::Openat)
            .task(11, 11, 10, "cat")
            .res(3)
            .arg(0, libc::O_RDONLY as i64)
            .arg(2, AT_FDCWD)
            .string(0, b"/etc/../etc/hostname")
            .build();
        let o = event(&mut e, &open);
        assert_eq!(field(&o, "fd.name", None), "/etc/hostname");
        assert_eq!(field(&o, "evt.arg.name", None), "/etc/../etc/hostname");
        assert_eq!(
            field(&o, "fd.nameraw", None),
            "/etc/../etc/hostname",
            "the raw name keeps the traversal"
        );
        assert_eq!(field(&o, "proc.cmdline", None), "cat /etc/hostname");
        assert_eq!(field(&o, "proc.aname", Some("1")), "bash");
        assert_eq!(o.evt.num, 4);
    }

    #[test]
    fn exit_records_carry_the_status_and_retire_the_process() {
        let mut e = enricher();
        let exit = RecordBuilder::new(Kind::Procexit)
            .task(20, 20, 1, "sleep")
            .arg(0, 9)
            .build();
        let x = event(&mut e, &exit);
        assert_eq!(x.evt.args.status, Some(137));
        assert_eq!(exit_status(3 << 8), 3);
    }

    #[test]
    fn sockets_become_falco_tuples() {
        let mut e = enricher();
        let mut sock = Sock {
            family: libc::AF_INET as u16,
            ty: libc::SOCK_STREAM as u16,
            proto: libc::IPPROTO_TCP as u16,
            lport: 40000,
            rport: 443,
            ..Default::default()
        };
        sock.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        sock.raddr[..4].copy_from_slice(&[10, 43, 0, 1]);
        let c = RecordBuilder::new(Kind::Connect)
            .task(5, 5, 1, "curl")
            .arg(0, 4)
            .sock(&sock)
            .build();
        let ev = event(&mut e, &c);
        assert_eq!(field(&ev, "fd.name", None), "10.0.0.2:40000->10.43.0.1:443");
        assert_eq!(field(&ev, "fd.sport", None), "443");
        assert_eq!(field(&ev, "fd.l4proto", None), "tcp");
        assert_eq!(field(&ev, "fd.num", None), "4");
        let unix = Sock {
            family: libc::AF_UNIX as u16,
            ..Default::default()
        };
        let u = RecordBuilder::new(Kind::Connect)
            .task(5, 5, 1, "curl")
            .sock(&unix)
            .string(0, b"\0abstract")
            .build();
        let ev = event(&mut e, &u);
        assert_eq!(field(&ev, "fd.name", None), "@abstract");
        assert_eq!(field(&ev, "fd.typechar", None), "u");
    }

    #[test]
    fn relative_read_only_opens_outside_watched_prefixes_are_filtered_in_user_space() {
        let mut e = enricher();
        let open = RecordBuilder::new(Kind::Openat)
            .task(1, 1, 0, "x")
            .arg(0, libc::O_RDONLY as i64)
            .arg(2, 9999)
            .string(0, b"relative/file")
            .build();
        // No /proc here, so the path cannot be resolved: it stays relative,
        // is below no watched prefix, and is dropped.
        assert!(matches!(e.decode(&open).unwrap(), Decoded::Filtered));
        assert_eq!(e.filtered_user, 1);
        let loss = RecordBuilder::new(Kind::Loss).arg(0, 7).build();
        assert!(matches!(e.decode(&loss).unwrap(), Decoded::Loss(7)));
    }

    #[test]
    fn paths_the_kernel_cut_are_flagged_and_kept_past_the_user_space_filters() {
        use crate::sensor::abi::flags::{STR_CUT, TRUNCATED};
        let mut e = enricher();
        // The executable and the working directory lie deeper than the walk.
        let exec = RecordBuilder::new(Kind::Execve)
            .task(50, 50, 1, "payload")
            .flags(TRUNCATED | STR_CUT | STR_CUT << 2)
            .string(0, b"/a/a/payload")
            .string(1, b"payload\0")
            .string(2, b"/a/a")
            .build();
        let x = event(&mut e, &exec);
        assert!(x.proc.exepath_truncated && x.proc.cwd_truncated);
        assert_eq!(field(&x, "proc.exepath", None), ".../a/a/payload");
        assert_eq!(field(&x, "proc.exepath_truncated", None), "true");
        // A relative open from there: the kernel's base directory (string 1)
        // was cut, so the path is partial; a read-only one outside every
        // watched prefix is kept, since where it lies cannot be told.
        for (flags, cut) in [
            (libc::O_WRONLY | libc::O_CREAT, STR_CUT << 1),
            (libc::O_RDONLY, STR_CUT << 1),
        ] {
            let open = RecordBuilder::new(Kind::Openat)
                .task(50, 50, 1, "payload")
                .flags(TRUNCATED | cut)
                .arg(0, flags as i64)
                .arg(2, AT_FDCWD)
                .string(0, b"f")
                .string(1, b"/a/a")
                .res(3)
                .build();
            let o = event(&mut e, &open);
            assert_eq!(field(&o, "fd.name", None), ".../a/a/f");
            assert_eq!(field(&o, "fd.name_truncated", None), "true");
        }
        // A whole base directory from the kernel: whole, and filtered as before.
        let whole = RecordBuilder::new(Kind::Openat)
            .task(50, 50, 1, "payload")
            .arg(0, libc::O_WRONLY as i64)
            .arg(2, AT_FDCWD)
            .string(0, b"../f")
            .string(1, b"/srv/app")
            .res(3)
            .build();
        let o = event(&mut e, &whole);
        assert_eq!(field(&o, "fd.name", None), "/srv/f");
        assert_eq!(field(&o, "fd.name_truncated", None), "false");
        let read = RecordBuilder::new(Kind::Openat)
            .task(50, 50, 1, "payload")
            .arg(0, libc::O_RDONLY as i64)
            .arg(2, AT_FDCWD)
            .string(0, b"f")
            .string(1, b"/srv/app")
            .build();
        assert!(matches!(e.decode(&read).unwrap(), Decoded::Filtered));
        // No room left for the base at all: only the relative path is known.
        let roomless = RecordBuilder::new(Kind::Openat)
            .task(50, 50, 1, "payload")
            .flags(TRUNCATED | STR_CUT << 1)
            .arg(0, libc::O_WRONLY as i64)
            .arg(2, AT_FDCWD)
            .string(0, b"f")
            .res(3)
            .build();
        assert_eq!(field(&event(&mut e, &roomless), "fd.name", None), ".../f");
        // Without a base from the kernel, the path starts from /proc's working
        // directory (none here), then from the exec's, which was cut.
        let stale = RecordBuilder::new(Kind::Openat)
            .task(50, 50, 1, "payload")
            .arg(0, libc::O_WRONLY as i64)
            .arg(2, AT_FDCWD)
            .string(0, b"g")
            .res(4)
            .build();
        let g = event(&mut e, &stale);
        assert_eq!(field(&g, "fd.name", None), ".../a/a/g");
        assert_eq!(field(&g, "fd.name_truncated", None), "true");
        // The path arguments of mkdir and friends the same way, and a cut
        // path is never dropped by exclude_paths.
        let mut excluding = Enricher::new(
            &SensorConfig {
                runtime_state_dirs: vec![],
                exclude_paths: vec!["/var/cache".into()],
                ..Default::default()
            },
            Path::new("/nonexistent-proc"),
            Path::new("/nonexistent-proc"),
            BootClock::with_offset(1_000),
        );
        let mkdir = |base: &[u8], cut: u16| {
            RecordBuilder::new(Kind::Mkdirat)
                .task(51, 51, 1, "mkdir")
                .flags(cut)
                .arg(0, 0o700)
                .arg(1, AT_FDCWD)
                .string(0, b".hidden")
                .string(1, base)
                .build()
        };
        let m = event(
            &mut excluding,
            &mkdir(b"/var/cache/d", TRUNCATED | STR_CUT << 1),
        );
        assert_eq!(field(&m, "evt.arg.path", None), ".../var/cache/d/.hidden");
        assert_eq!(field(&m, "evt.arg.path_truncated", None), "true");
        assert!(matches!(
            excluding.decode(&mkdir(b"/var/cache/d", 0)).unwrap(),
            Decoded::Filtered
        ));
        let whole = event(&mut excluding, &mkdir(b"/srv/d", 0));
        assert_eq!(field(&whole, "evt.arg.path", None), "/srv/d/.hidden");
        assert_eq!(field(&whole, "evt.arg.path_truncated", None), "false");
    }

    #[test]
    fn chmods_mkdirs_and_rmdirs_carry_the_absolute_path_and_mode() {
        let mut e = enricher();
        let chmod = RecordBuilder::new(Kind::Fchmodat2)
            .task(30, 30, 1, "chmod")
            .arg(0, 0o4755)
            .arg(1, AT_FDCWD)
            .arg(2, libc::AT_SYMLINK_NOFOLLOW as i64)
            .string(0, b"/tmp/./x")
            .build();
        let c = event(&mut e, &chmod);
        assert_eq!(
            c.evt.ty,
            EventType::Fchmodat,
            "fchmodat2 is reported as fchmodat"
        );
        assert_eq!(field(&c, "evt.arg.filename", None), "/tmp/x");
        let mode = field(&c, "evt.arg.mode", None);
        assert!(
            mode.contains("S_ISUID") && mode.contains("S_IXUSR"),
            "{mode}"
        );
        assert!(!mode.contains("S_ISGID"), "{mode}");
        assert_eq!(field(&c, "evt.arg.flags", None), "AT_SYMLINK_NOFOLLOW");
        let fchmod = RecordBuilder::new(Kind::Fchmod)
            .task(30, 30, 1, "chmod")
            .arg(0, 0o644)
            .arg(1, 5)
            .string(0, b"/etc/shadow")
            .build();
        let f = event(&mut e, &fchmod);
        assert_eq!(field(&f, "fd.name", None), "/etc/shadow");
        assert_eq!(field(&f, "evt.arg.fd", None), "5");
        assert_eq!(
            field(&f, "evt.arg.mode", None),
            "S_IROTH|S_IRGRP|S_IWUSR|S_IRUSR"
        );
        let mkdir = RecordBuilder::new(Kind::Mkdirat)
            .task(30, 30, 1, "mkdir")
            .arg(0, 0o700)
            .arg(1, AT_FDCWD)
            .string(0, b"/usr/bin/.hidden")
            .build();
        let m = event(&mut e, &mkdir);
        assert_eq!(field(&m, "evt.arg.path", None), "/usr/bin/.hidden");
        assert_eq!(field(&m, "evt.arg.mode", None), "0700");
        let rmdir = RecordBuilder::new(Kind::Rmdir)
            .task(30, 30, 1, "rmdir")
            .arg(1, AT_FDCWD)
            .string(0, b"/var/tmp/d")
            .build();
        assert_eq!(
            field(&event(&mut e, &rmdir), "evt.arg.path", None),
            "/var/tmp/d"
        );
    }

    #[test]
    fn a_failed_exec_leaves_the_callers_image_and_says_what_it_tried() {
        let mut e = enricher();
        let shell = RecordBuilder::new(Kind::Execve)
            .task(40, 40, 1, "bash")
            .string(0, b"/usr/bin/bash")
            .string(1, b"bash\0")
            .build();
        event(&mut e, &shell);
        let failed = RecordBuilder::new(Kind::Execve)
            .task(40, 40, 1, "bash")
            .res(-(libc::ENOENT as i64))
            .string(3, b"/tmp/missing")
            .build();
        let f = event(&mut e, &failed);
        assert_eq!(f.evt.ty, EventType::Execve);
        assert_eq!(field(&f, "evt.res", None), "ENOENT");
        assert_eq!(field(&f, "evt.arg.filename", None), "/tmp/missing");
        assert_eq!(field(&f, "proc.exepath", None), "/usr/bin/bash");
        assert!(f.evt.args.flags.is_none());
        assert_eq!(e.procs.get(40).unwrap().exepath, "/usr/bin/bash");
    }

    #[test]
    fn exec_records_carry_namespace_ids_capabilities_environment_and_inode() {
        let mut e = enricher();
        let exec = RecordBuilder::new(Kind::Execve)
            .task(1000, 1000, 900, "sh")
            .arg(3, 1 << 21)
            .arg(6, (1 << 21) | (1 << 12))
            .arg(7, 0)
            .arg(8, 1 | (1 << 32))
            .arg(9, 950 | (1000 << 32))
            .arg(10, 4242)
            .arg(11, 1_700_000_000_000_000_000)
            .arg(12, 1_600_000_000_000_000_000)
            .string(0, b"/bin/sh")
            .string(1, b"sh\0")
            .string(6, b"PATH=/bin\0GLIBC_TUNABLES=glibc.malloc.x=1\0")
            .build();
        let x = event(&mut e, &exec);
        let p = &x.proc;
        assert_eq!((p.vpid, p.vpgid, p.sid, p.pgid), (1, 1, 950, 1000));
        assert_eq!(p.cap_permitted, Some((1 << 21) | (1 << 12)));
        assert_eq!(p.cap_inheritable, Some(0));
        assert_eq!(
            p.env.as_deref(),
            Some("PATH=/bin GLIBC_TUNABLES=glibc.malloc.x=1")
        );
        assert_eq!(p.exe_ino, Some(4242));
        assert_eq!(p.exe_ino_ctime, Some(1_700_000_000_000_000_000));
        // A child shares the environment and gets its own pid in the namespace.
        let fork = RecordBuilder::new(Kind::Clone)
            .task(1000, 1000, 900, "sh")
            .arg(0, 1001)
            .arg(8, 2 | (1 << 32))
            .arg(9, 950 | (1000 << 32))
            .res(1001)
            .build();
        event(&mut e, &fork);
        let child = e.procs.get(1001).unwrap();
        assert_eq!((child.vpid, child.vpgid), (2, 1));
        assert!(Arc::ptr_eq(
            child.env.as_ref().unwrap(),
            p.env.as_ref().unwrap()
        ));
        // The same environment seen again at another exec is shared, not copied.
        let again = RecordBuilder::new(Kind::Execve)
            .task(1001, 1001, 1000, "sh")
            .string(0, b"/bin/sh")
            .string(6, b"PATH=/bin\0GLIBC_TUNABLES=glibc.malloc.x=1\0")
            .build();
        let y = event(&mut e, &again);
        assert!(Arc::ptr_eq(
            y.proc.env.as_ref().unwrap(),
            p.env.as_ref().unwrap()
        ));
    }

    #[test]
    fn namespace_changes_carry_the_callers_capabilities_from_before_the_call() {
        let mut e = enricher();
        let unshare = RecordBuilder::new(Kind::Unshare)
            .task(50, 50, 1, "unshare")
            .arg(0, libc::CLONE_NEWUSER as i64)
            .arg(2, 0)
            .arg(3, 1 << 12)
            .arg(4, 0)
            .build();
        let u = event(&mut e, &unshare);
        assert_eq!(field(&u, "evt.arg.flags", None), "CLONE_NEWUSER");
        assert_eq!(u.caps.unwrap().permitted, 1 << 12);
        let setns = RecordBuilder::new(Kind::Setns)
            .task(50, 50, 1, "nsenter")
            .arg(0, 3)
            .arg(1, libc::CLONE_NEWNET as i64)
            .build();
        let n = event(&mut e, &setns);
        assert_eq!(field(&n, "evt.arg.nstype", None), "CLONE_NEWNET");
        assert_eq!(field(&n, "evt.arg.fd", None), "3");
    }

    #[test]
    fn bpf_prctl_and_session_records_update_what_they_change() {
        let mut e = enricher();
        let bpf = RecordBuilder::new(Kind::Bpf)
            .task(60, 60, 1, "loader")
            .arg(0, 5)
            .build();
        assert_eq!(
            field(&event(&mut e, &bpf), "evt.arg.cmd", None),
            "BPF_PROG_LOAD"
        );
        let rename = RecordBuilder::new(Kind::Prctl)
            .task(60, 60, 1, "loader")
            .arg(0, libc::PR_SET_NAME as i64)
            .string(0, b"kworker/0:1")
            .build();
        let r = event(&mut e, &rename);
        assert_eq!(field(&r, "evt.arg.option", None), "PR_SET_NAME");
        assert_eq!(
            field(&r, "proc.name", None),
            "kworker/0:1",
            "a masquerade shows at once"
        );
        assert_eq!(e.procs.get(60).unwrap().name, "kworker/0:1");
        let setsid = RecordBuilder::new(Kind::Setsid)
            .task(60, 60, 1, "kworker/0:1")
            .res(60)
            .arg(8, 60 | (60 << 32))
            .arg(9, 60 | (60 << 32))
            .build();
        let s = event(&mut e, &setsid);
        assert_eq!((s.proc.sid, s.proc.pgid, s.proc.vpgid), (60, 60, 60));
        // setpgid on another process changes nothing of the caller.
        let other = RecordBuilder::new(Kind::Setpgid)
            .task(60, 60, 1, "kworker/0:1")
            .arg(0, 61)
            .arg(1, 61)
            .arg(8, 60 | (60 << 32))
            .arg(9, 60 | (60 << 32))
            .build();
        let o = event(&mut e, &other);
        assert_eq!(field(&o, "evt.arg.pgid", None), "61");
        assert_eq!(o.proc.pgid, 60);
    }

    #[test]
    fn datagrams_to_a_new_peer_and_listens_carry_the_socket_state() {
        let mut e = enricher();
        let mut sock = Sock {
            family: libc::AF_INET as u16,
            ty: libc::SOCK_DGRAM as u16,
            proto: libc::IPPROTO_UDP as u16,
            lport: 50000,
            rport: 3333,
            ..Default::default()
        };
        sock.raddr[..4].copy_from_slice(&[198, 51, 100, 7]);
        let send = RecordBuilder::new(Kind::Sendto)
            .task(70, 70, 1, "xmrig")
            .arg(0, 7)
            .res(64)
            .sock(&sock)
            .build();
        let s = event(&mut e, &send);
        assert_eq!(
            field(&s, "fd.name", None),
            "0.0.0.0:50000->198.51.100.7:3333"
        );
        assert_eq!(field(&s, "fd.sip", None), "198.51.100.7");
        assert_eq!(field(&s, "fd.l4proto", None), "udp");
        let f = s.fd.as_ref().unwrap();
        assert_eq!((f.connected, f.name_changed), (Some(false), true));
        let recv = RecordBuilder::new(Kind::Recvmsg)
            .task(70, 70, 1, "xmrig")
            .arg(0, 7)
            .res(64)
            .sock(&sock)
            .build();
        let r = event(&mut e, &recv);
        assert_eq!(
            field(&r, "fd.cip", None),
            "198.51.100.7",
            "the peer sent it"
        );
        sock.ty = libc::SOCK_STREAM as u16;
        sock.proto = libc::IPPROTO_TCP as u16;
        sock.state = 10; // TCP_LISTEN
        let listen = RecordBuilder::new(Kind::Listen)
            .task(70, 70, 1, "nc")
            .arg(0, 3)
            .arg(1, 5)
            .sock(&sock)
            .build();
        let l = event(&mut e, &listen);
        assert_eq!(field(&l, "evt.arg.backlog", None), "5");
        assert_eq!(field(&l, "fd.sport", None), "50000");
        assert_eq!(l.fd.as_ref().unwrap().connected, Some(false));
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(normalize("/a/./b//../c/"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        assert_eq!(module_name("/lib/modules/6.1/kernel/foo.ko.zst"), "foo");
    }
}
