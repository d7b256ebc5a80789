//! THE event model: one Rust type for everything the sensor sees, addressed
//! by the rules engine with Falco's field names.
//!
//! Owns [`Event`], its JSON form (what `edge-agent sensor watch --json`
//! prints and `edge-agent rules test --events` reads), and the field table:
//! [`Field::parse`] turns a Falco field name into a [`Field`], and
//! [`Event::field`] reads it. The sensor fills events; the rules engine only
//! reads them. Neither side keeps its own idea of what a field means.
//!
//! A field the event cannot know is *absent* ([`FieldValue::Absent`]), and
//! Falco's rules for absent fields apply (every comparison with an absent
//! value is false; `exists` is false; outputs print `<NA>`).
//!
//! Values that Falco renders as text (`evt.arg.flags` as `O_WRONLY|O_TRUNC`,
//! `evt.arg.request` as `PTRACE_ATTACH`, `evt.res` as `ENOENT`) are stored
//! raw and rendered on access, so the sensor never formats strings for
//! events no rule reads.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Falco's `evt.type` values that this agent produces. Serialized by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Execve,
    Execveat,
    Clone,
    Clone3,
    Fork,
    Vfork,
    Procexit,
    Open,
    Openat,
    Openat2,
    Creat,
    Connect,
    Accept,
    Accept4,
    Ptrace,
    Setuid,
    Setgid,
    Setreuid,
    Setregid,
    Setresuid,
    Setresgid,
    InitModule,
    FinitModule,
    MemfdCreate,
    Mount,
    Unlink,
    Unlinkat,
    Rename,
    Renameat,
    Renameat2,
    Symlink,
    Symlinkat,
    Link,
    Linkat,
    Dup,
    Dup2,
    Dup3,
    Socket,
}

impl EventType {
    pub const ALL: [EventType; 38] = [
        EventType::Execve,
        EventType::Execveat,
        EventType::Clone,
        EventType::Clone3,
        EventType::Fork,
        EventType::Vfork,
        EventType::Procexit,
        EventType::Open,
        EventType::Openat,
        EventType::Openat2,
        EventType::Creat,
        EventType::Connect,
        EventType::Accept,
        EventType::Accept4,
        EventType::Ptrace,
        EventType::Setuid,
        EventType::Setgid,
        EventType::Setreuid,
        EventType::Setregid,
        EventType::Setresuid,
        EventType::Setresgid,
        EventType::InitModule,
        EventType::FinitModule,
        EventType::MemfdCreate,
        EventType::Mount,
        EventType::Unlink,
        EventType::Unlinkat,
        EventType::Rename,
        EventType::Renameat,
        EventType::Renameat2,
        EventType::Symlink,
        EventType::Symlinkat,
        EventType::Link,
        EventType::Linkat,
        EventType::Dup,
        EventType::Dup2,
        EventType::Dup3,
        EventType::Socket,
    ];

    /// Falco's name for it (`openat`, `init_module`, ...).
    pub fn as_str(self) -> &'static str {
        use EventType::*;
        match self {
            Execve => "execve",
            Execveat => "execveat",
            Clone => "clone",
            Clone3 => "clone3",
            Fork => "fork",
            Vfork => "vfork",
            Procexit => "procexit",
            Open => "open",
            Openat => "openat",
            Openat2 => "openat2",
            Creat => "creat",
            Connect => "connect",
            Accept => "accept",
            Accept4 => "accept4",
            Ptrace => "ptrace",
            Setuid => "setuid",
            Setgid => "setgid",
            Setreuid => "setreuid",
            Setregid => "setregid",
            Setresuid => "setresuid",
            Setresgid => "setresgid",
            InitModule => "init_module",
            FinitModule => "finit_module",
            MemfdCreate => "memfd_create",
            Mount => "mount",
            Unlink => "unlink",
            Unlinkat => "unlinkat",
            Rename => "rename",
            Renameat => "renameat",
            Renameat2 => "renameat2",
            Symlink => "symlink",
            Symlinkat => "symlinkat",
            Link => "link",
            Linkat => "linkat",
            Dup => "dup",
            Dup2 => "dup2",
            Dup3 => "dup3",
            Socket => "socket",
        }
    }

    /// Dense index, for per-type tables (rule indexes, counters).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_open(self) -> bool {
        matches!(
            self,
            EventType::Open | EventType::Openat | EventType::Openat2 | EventType::Creat
        )
    }

    pub fn is_exec(self) -> bool {
        matches!(self, EventType::Execve | EventType::Execveat)
    }

    /// The names of this type's arguments, in Falco's order (for `evt.arg[N]`
    /// and `evt.args`).
    pub fn arg_order(self) -> &'static [Arg] {
        use Arg::*;
        use EventType::*;
        match self {
            Execve | Execveat => &[Filename, Flags],
            Clone | Clone3 | Fork | Vfork => &[Flags],
            Procexit => &[Status],
            Open | Openat | Openat2 | Creat => &[Name, Flags, Mode],
            Connect | Accept | Accept4 => &[Tuple],
            Ptrace => &[Request, Pid],
            Setuid => &[Uid],
            Setgid => &[Gid],
            Setreuid | Setresuid => &[Ruid, Euid, Suid],
            Setregid | Setresgid => &[Rgid, Egid, Sgid],
            InitModule | FinitModule => &[Name, Fd],
            MemfdCreate => &[Name, Flags],
            Mount => &[Dev, Dir, Fstype, Flags],
            Unlink | Unlinkat => &[Path, Flags],
            Rename | Renameat | Renameat2 | Link | Linkat => &[Oldpath, Newpath, Flags],
            Symlink | Symlinkat => &[Target, Linkpath],
            Dup | Dup2 | Dup3 => &[Oldfd, Newfd, Flags],
            Socket => &[Domain, Type, Proto],
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        EventType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

/// Per-event data (`evt.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evt {
    #[serde(rename = "type")]
    pub ty: EventType,
    /// Nanoseconds since the Unix epoch.
    pub time: u64,
    /// The sensor's running event number (`evt.num`).
    #[serde(default)]
    pub num: u64,
    /// Raw syscall result: >= 0 success (an fd, a pid, 0), < 0 is `-errno`.
    #[serde(default)]
    pub res: i64,
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub args: Args,
}

/// Syscall arguments rules read, under Falco's argument names. Each is
/// present only for the event types that have it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Args {
    /// Open flags (`O_*`), memfd flags (`MFD_*`), exec flags (`EXE_*`, see
    /// [`exe_flags`]), renameat2 (`RENAME_*`), unlinkat (`AT_REMOVEDIR`),
    /// mount (`MS_*`), clone (`CLONE_*`), dup3 (`O_CLOEXEC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// execve's path argument as the caller gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// open: the path as given; memfd_create: the memfd's name; modules: the module name when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// unlink/unlinkat target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldpath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newpath: Option<String>,
    /// symlink: what the link points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// symlink: where the link is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linkpath: Option<String>,
    /// ptrace request number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// ptrace target pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub euid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sgid: Option<u32>,
    /// finit_module's fd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldfd: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newfd: Option<i64>,
    /// socket: address family (`AF_*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<u32>,
    /// socket: type (`SOCK_*`), without the NONBLOCK/CLOEXEC bits.
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub sock_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<u32>,
    /// mount: source device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// mount: mount point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fstype: Option<String>,
    /// procexit: exit code (or 128 + signal when killed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
}

impl Args {
    pub fn is_empty(&self) -> bool {
        *self == Args::default()
    }
}

/// `evt.arg.flags` bits on execve/execveat, as Falco defines them.
pub mod exe_flags {
    pub const EXE_WRITABLE: u64 = 1;
    pub const EXE_UPPER_LAYER: u64 = 2;
    pub const EXE_FROM_MEMFD: u64 = 4;
    pub const EXE_LOWER_LAYER: u64 = 8;
}

/// A process as the sensor's process table knows it. Shared (`Arc`) between
/// the events of one process and its children's ancestor lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Session id (`proc.sid`); 0 when unknown.
    pub sid: u32,
    /// `proc.name`: the command name (comm, at most 15 bytes in the kernel).
    pub name: String,
    /// `proc.exe`: argv[0] as the process was started.
    pub exe: String,
    /// `proc.exepath`: full path of the executable.
    pub exepath: String,
    /// `proc.args`: argv[1..].
    pub args: Vec<String>,
    /// `proc.cmdline`: `name` then the args, space separated. Filled by
    /// [`Process::finish`] when empty.
    pub cmdline: String,
    pub cwd: Option<String>,
    /// Controlling terminal device number; 0 = none.
    pub tty: u32,
    /// Start time, nanoseconds since the Unix epoch (0 when unknown).
    pub start_time: u64,
    pub exe_upper_layer: Option<bool>,
    pub exe_from_memfd: Option<bool>,
    /// Effective capability mask, when the sensor reads it.
    pub cap_effective: Option<u64>,
}

impl Process {
    /// A process from its exe path and full argv (argv[0] included).
    pub fn new(pid: u32, ppid: u32, exepath: &str, argv: &[&str]) -> Self {
        let name = exepath.rsplit('/').next().unwrap_or(exepath);
        let mut p = Process {
            pid,
            ppid,
            name: name.chars().take(15).collect(),
            exe: argv
                .first()
                .map_or_else(|| exepath.to_string(), |a| a.to_string()),
            exepath: exepath.to_string(),
            args: argv.iter().skip(1).map(|a| a.to_string()).collect(),
            ..Default::default()
        };
        p.finish();
        p
    }

    /// Derive `cmdline` from `name` and `args` if it is empty.
    pub fn finish(&mut self) {
        if self.cmdline.is_empty() {
            self.cmdline = std::iter::once(self.name.as_str())
                .chain(self.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
        }
    }

    /// `proc.args`: the arguments joined with spaces.
    pub fn args_str(&self) -> Cow<'_, str> {
        match self.cmdline.strip_prefix(self.name.as_str()) {
            Some(rest) if !self.cmdline.is_empty() => {
                Cow::Borrowed(rest.strip_prefix(' ').unwrap_or(rest))
            }
            _ => Cow::Owned(self.args.join(" ")),
        }
    }
}

/// Who did it (`user.*`, `group.*`): the credentials at the time of the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Audit login uid; `None` when unset (the kernel's `(uid_t)-1`).
    pub loginuid: Option<u32>,
    pub name: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    pub loginname: Option<Arc<str>>,
}

/// `fd.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdType {
    File,
    Directory,
    Ipv4,
    Ipv6,
    Unix,
    Memfd,
    Netlink,
    Packet,
    Other,
}

impl FdType {
    pub fn as_str(self) -> &'static str {
        match self {
            FdType::File => "file",
            FdType::Directory => "directory",
            FdType::Ipv4 => "ipv4",
            FdType::Ipv6 => "ipv6",
            FdType::Unix => "unix",
            FdType::Memfd => "memfd",
            FdType::Netlink => "netlink",
            FdType::Packet => "packet",
            FdType::Other => "other",
        }
    }

    /// `fd.typechar`, as Falco spells it.
    pub fn typechar(self) -> &'static str {
        match self {
            FdType::File => "f",
            FdType::Directory => "d",
            FdType::Ipv4 => "4",
            FdType::Ipv6 => "6",
            FdType::Unix => "u",
            FdType::Memfd => "m",
            FdType::Netlink => "n",
            FdType::Packet => "p",
            FdType::Other => "o",
        }
    }

    pub fn is_ip(self) -> bool {
        matches!(self, FdType::Ipv4 | FdType::Ipv6)
    }
}

/// Which end of a connection this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// connect(): local = client, remote = server.
    Client,
    /// accept(): local = server, remote = client.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
    Icmp,
    Raw,
}

impl L4Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Icmp => "icmp",
            L4Proto::Raw => "raw",
        }
    }
}

/// The file descriptor an event is about (`fd.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fd {
    /// `fd.num`: the fd number; -1 when the call failed.
    pub num: i64,
    #[serde(rename = "type")]
    pub ty: FdType,
    /// `fd.name`: the path for files; `cip:cport->sip:sport` for IP sockets;
    /// the path for unix sockets.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4proto: Option<L4Proto>,
}

impl Fd {
    pub fn file(num: i64, path: &str) -> Self {
        Fd {
            num,
            ty: FdType::File,
            name: path.to_string(),
            local: None,
            remote: None,
            role: None,
            l4proto: None,
        }
    }

    /// An IP socket fd; `fd.name` is built the way Falco builds it.
    pub fn socket(
        num: i64,
        local: SocketAddr,
        remote: SocketAddr,
        role: Role,
        l4proto: L4Proto,
    ) -> Self {
        let ty = if remote.is_ipv4() {
            FdType::Ipv4
        } else {
            FdType::Ipv6
        };
        let (c, s) = match role {
            Role::Client => (local, remote),
            Role::Server => (remote, local),
        };
        Fd {
            num,
            ty,
            name: format!("{c}->{s}"),
            local: Some(local),
            remote: Some(remote),
            role: Some(role),
            l4proto: Some(l4proto),
        }
    }

    fn client(&self) -> Option<SocketAddr> {
        match self.role? {
            Role::Client => self.local,
            Role::Server => self.remote,
        }
    }

    fn server(&self) -> Option<SocketAddr> {
        match self.role? {
            Role::Client => self.remote,
            Role::Server => self.local,
        }
    }

    fn is_path(&self) -> bool {
        matches!(self.ty, FdType::File | FdType::Directory)
    }
}

/// A bind mount of a container (from its runtime bundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub source: String,
    pub dest: String,
}

/// The container a process runs in (`container.*`, `k8s.*`). Host processes
/// share [`Container::host`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    /// `host` for host processes; otherwise the 12-character short id.
    pub id: String,
    pub full_id: Option<String>,
    pub name: Option<String>,
    /// `repository:tag` or `repository@digest` as the runtime recorded it.
    pub image: Option<String>,
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    pub privileged: Option<bool>,
    pub mounts: Vec<Mount>,
    /// Container start, nanoseconds since the Unix epoch.
    pub start_ts: Option<u64>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
}

impl Container {
    pub const HOST_ID: &'static str = "host";

    pub fn host() -> Arc<Container> {
        Arc::new(Container {
            id: Self::HOST_ID.into(),
            ..Default::default()
        })
    }

    pub fn is_host(&self) -> bool {
        self.id == Self::HOST_ID
    }
}

/// One thing that happened on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub evt: Evt,
    pub proc: Arc<Process>,
    /// Parent first, then grandparent, ... as far as the process table knows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Arc<Process>>,
    #[serde(default)]
    pub user: User,
    /// Thread id of the caller (`thread.tid`); equals `proc.pid` for the main thread.
    #[serde(default)]
    pub tid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<Fd>,
    #[serde(default = "Container::host")]
    pub container: Arc<Container>,
}

impl Event {
    /// An event of `ty` by `proc` on the host, now, with no args.
    pub fn new(ty: EventType, proc: Arc<Process>) -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let tid = proc.pid;
        Event {
            evt: Evt {
                ty,
                time,
                num: 0,
                res: 0,
                args: Args::default(),
            },
            proc,
            ancestors: Vec::new(),
            user: User::default(),
            tid,
            fd: None,
            container: Container::host(),
        }
    }

    /// The `n`th ancestor: 0 is the process itself, 1 its parent, ...
    pub fn ancestor(&self, n: usize) -> Option<&Process> {
        if n == 0 {
            Some(&self.proc)
        } else {
            self.ancestors.get(n - 1).map(|a| &**a)
        }
    }

    /// Read a field. Never panics; what the event does not know is `Absent`.
    pub fn field(&self, f: &Field) -> FieldValue<'_> {
        use FieldValue::{Absent, Bool, Int};
        let s = fv_str;
        let os = fv_opt;
        let int = |v: Option<i64>| v.map_or(Absent, Int);
        let fd = self.fd.as_ref();
        match *f {
            Field::EvtType => s(self.evt.ty.as_str()),
            Field::EvtTime | Field::EvtRawtime => Int(self.evt.time as i64),
            Field::EvtNum => Int(self.evt.num as i64),
            Field::EvtRes => FieldValue::Str(render_res(self.evt.res)),
            Field::EvtRawres => Int(self.evt.res),
            Field::EvtDir => s("<"),
            Field::EvtIsOpenRead => self.open_flags().map_or(Absent, |fl| {
                Bool(fl & libc::O_ACCMODE as u64 != libc::O_WRONLY as u64)
            }),
            Field::EvtIsOpenWrite => self.open_flags().map_or(Absent, |fl| {
                Bool(fl & libc::O_ACCMODE as u64 != libc::O_RDONLY as u64)
            }),
            Field::EvtIsOpenExec => Absent,
            Field::EvtArgs => FieldValue::Str(Cow::Owned(self.render_args())),
            Field::EvtArg(arg) => self.arg(arg),
            Field::EvtArgIndex(i) => match self.evt.ty.arg_order().get(usize::from(i)) {
                Some(arg) => self.arg(*arg),
                None => Absent,
            },

            Field::ProcPid => Int(self.proc.pid.into()),
            Field::ProcPpid => Int(self.proc.ppid.into()),
            Field::ProcSid => Int(self.proc.sid.into()),
            Field::ProcName => s(&self.proc.name),
            Field::ProcExe => s(&self.proc.exe),
            Field::ProcExepath => s(&self.proc.exepath),
            Field::ProcCmdline if self.proc.cmdline.is_empty() => {
                let mut p = (*self.proc).clone();
                p.finish();
                FieldValue::Str(Cow::Owned(p.cmdline))
            }
            Field::ProcCmdline => s(&self.proc.cmdline),
            Field::ProcArgs => FieldValue::Str(self.proc.args_str()),
            Field::ProcCwd => os(&self.proc.cwd),
            Field::ProcTty => Int(self.proc.tty.into()),
            Field::ProcPname => self.ancestor(1).map_or(Absent, |p| s(&p.name)),
            Field::ProcPexe => self.ancestor(1).map_or(Absent, |p| s(&p.exe)),
            Field::ProcPexepath => self.ancestor(1).map_or(Absent, |p| s(&p.exepath)),
            Field::ProcPcmdline => self.ancestor(1).map_or(Absent, |p| s(&p.cmdline)),
            Field::ProcAname(n) => self.ancestor(n.into()).map_or(Absent, |p| s(&p.name)),
            Field::ProcApid(n) => self
                .ancestor(n.into())
                .map_or(Absent, |p| Int(p.pid.into())),
            Field::ProcAexe(n) => self.ancestor(n.into()).map_or(Absent, |p| s(&p.exe)),
            Field::ProcAexepath(n) => self.ancestor(n.into()).map_or(Absent, |p| s(&p.exepath)),
            Field::ProcAnameAny => FieldValue::List(
                self.ancestors
                    .iter()
                    .map(|p| Cow::Borrowed(p.name.as_str()))
                    .collect(),
            ),
            Field::ProcApidAny => FieldValue::List(
                self.ancestors
                    .iter()
                    .map(|p| Cow::Owned(p.pid.to_string()))
                    .collect(),
            ),
            Field::ProcIsExeUpperLayer => self.proc.exe_upper_layer.map_or(Absent, Bool),
            Field::ProcIsExeFromMemfd => self.proc.exe_from_memfd.map_or(Absent, Bool),
            Field::ProcStartTs => {
                if self.proc.start_time == 0 {
                    Absent
                } else {
                    Int(self.proc.start_time as i64)
                }
            }

            Field::ThreadTid => Int(self.tid.into()),
            Field::ThreadCapEffective => self
                .proc
                .cap_effective
                .map_or(Absent, |c| FieldValue::Str(Cow::Owned(render_caps(c)))),

            Field::UserUid => Int(self.user.uid.into()),
            Field::UserName => self.user.name.as_deref().map_or(Absent, s),
            Field::UserLoginuid => Int(self.user.loginuid.map_or(-1, i64::from)),
            Field::UserLoginname => self.user.loginname.as_deref().map_or(Absent, s),
            Field::GroupGid => Int(self.user.gid.into()),
            Field::GroupName => self.user.group.as_deref().map_or(Absent, s),

            Field::FdNum => fd.map_or(Absent, |f| Int(f.num)),
            Field::FdType => fd.map_or(Absent, |f| s(f.ty.as_str())),
            Field::FdTypechar => fd.map_or(Absent, |f| s(f.ty.typechar())),
            Field::FdName | Field::FdNameraw => fd.map_or(Absent, |f| s(&f.name)),
            Field::FdDirectory => match fd.filter(|f| f.is_path()) {
                Some(f) => s(dirname(&f.name)),
                None => Absent,
            },
            Field::FdFilename => match fd.filter(|f| f.is_path()) {
                Some(f) => s(f.name.rsplit('/').next().unwrap_or(&f.name)),
                None => Absent,
            },
            Field::FdSip => ip(fd.and_then(Fd::server)),
            Field::FdSport => port(fd.and_then(Fd::server)),
            Field::FdCip => ip(fd.and_then(Fd::client)),
            Field::FdCport => port(fd.and_then(Fd::client)),
            Field::FdLip => ip(fd.and_then(|f| f.local)),
            Field::FdLport => port(fd.and_then(|f| f.local)),
            Field::FdRip => ip(fd.and_then(|f| f.remote)),
            Field::FdRport => port(fd.and_then(|f| f.remote)),
            Field::FdL4proto => fd.and_then(|f| f.l4proto).map_or(Absent, |p| s(p.as_str())),
            Field::FdSockfamily => match fd.map(|f| f.ty) {
                Some(FdType::Ipv4 | FdType::Ipv6) => s("ip"),
                Some(FdType::Unix) => s("unix"),
                _ => Absent,
            },

            Field::ContainerId => s(&self.container.id),
            Field::ContainerName => {
                if self.container.is_host() {
                    s("host")
                } else {
                    os(&self.container.name)
                }
            }
            Field::ContainerImage => os(&self.container.image),
            Field::ContainerImageRepository => os(&self.container.image_repository),
            Field::ContainerImageTag => os(&self.container.image_tag),
            Field::ContainerPrivileged => self.container.privileged.map_or(Absent, Bool),
            Field::ContainerMountDest => FieldValue::List(
                self.container
                    .mounts
                    .iter()
                    .map(|m| Cow::Borrowed(m.dest.as_str()))
                    .collect(),
            ),
            Field::ContainerMountSource => FieldValue::List(
                self.container
                    .mounts
                    .iter()
                    .map(|m| Cow::Borrowed(m.source.as_str()))
                    .collect(),
            ),
            Field::ContainerStartTs => int(self.container.start_ts.map(|t| t as i64)),
            Field::K8sPodName => os(&self.container.pod_name),
            Field::K8sNsName => os(&self.container.pod_namespace),
            Field::K8sPodUid => os(&self.container.pod_uid),
        }
    }

    fn open_flags(&self) -> Option<u64> {
        if self.evt.ty.is_open() {
            self.evt.args.flags
        } else {
            None
        }
    }

    /// `evt.arg.<name>`, rendered the way Falco renders it.
    pub fn arg(&self, arg: Arg) -> FieldValue<'_> {
        use FieldValue::{Absent, Int};
        let a = &self.evt.args;
        let s = fv_opt;
        let n = |v: Option<u32>| v.map_or(Absent, |x| Int(x.into()));
        match arg {
            Arg::Flags => a
                .flags
                .map_or(Absent, |f| FieldValue::Str(render_flags(self.evt.ty, f))),
            Arg::Mode => a
                .mode
                .map_or(Absent, |m| FieldValue::Str(Cow::Owned(format!("0{m:o}")))),
            Arg::Filename => s(&a.filename),
            Arg::Name => s(&a.name),
            Arg::Path => s(&a.path),
            Arg::Oldpath => s(&a.oldpath),
            Arg::Newpath => s(&a.newpath),
            Arg::Target => s(&a.target),
            Arg::Linkpath => s(&a.linkpath),
            Arg::Request => a.request.map_or(Absent, |r| {
                FieldValue::Str(Cow::Borrowed(ptrace_request_name(r)))
            }),
            Arg::Pid => a.pid.map_or(Absent, Int),
            Arg::Uid => n(a.uid),
            Arg::Gid => n(a.gid),
            Arg::Ruid => n(a.ruid),
            Arg::Euid => n(a.euid),
            Arg::Suid => n(a.suid),
            Arg::Rgid => n(a.rgid),
            Arg::Egid => n(a.egid),
            Arg::Sgid => n(a.sgid),
            Arg::Fd => a.fd.map_or(Absent, Int),
            Arg::Oldfd => a.oldfd.map_or(Absent, Int),
            Arg::Newfd => a.newfd.map_or(Absent, Int),
            Arg::Domain => a
                .domain
                .map_or(Absent, |d| FieldValue::Str(Cow::Borrowed(af_name(d)))),
            Arg::Type => a.sock_type.map_or(Absent, |t| {
                FieldValue::Str(Cow::Borrowed(sock_type_name(t)))
            }),
            Arg::Proto => n(a.proto),
            Arg::Dev => s(&a.dev),
            Arg::Dir => s(&a.dir),
            Arg::Fstype => s(&a.fstype),
            Arg::Status => a.status.map_or(Absent, Int),
            Arg::Tuple => self
                .fd
                .as_ref()
                .filter(|f| f.ty.is_ip() || f.ty == FdType::Unix)
                .map_or(Absent, |f| FieldValue::Str(Cow::Borrowed(&f.name))),
            Arg::Res => FieldValue::Str(render_res(self.evt.res)),
        }
    }

    /// `evt.args`: every present argument as `name=value`, space separated.
    pub fn render_args(&self) -> String {
        let mut out = String::new();
        for arg in std::iter::once(&Arg::Res).chain(self.evt.ty.arg_order()) {
            let v = self.arg(*arg);
            if v.is_absent() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(arg.as_str());
            out.push('=');
            out.push_str(&v.to_string());
        }
        out
    }
}

fn fv_str(v: &str) -> FieldValue<'_> {
    FieldValue::Str(Cow::Borrowed(v))
}

fn fv_opt(v: &Option<String>) -> FieldValue<'_> {
    v.as_deref().map_or(FieldValue::Absent, fv_str)
}

fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => path,
    }
}

fn ip<'a>(a: Option<SocketAddr>) -> FieldValue<'a> {
    a.map_or(FieldValue::Absent, |a| FieldValue::Ip(a.ip()))
}

fn port<'a>(a: Option<SocketAddr>) -> FieldValue<'a> {
    a.map_or(FieldValue::Absent, |a| FieldValue::Int(a.port().into()))
}

/// A field's value on one event.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Absent,
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
    /// Several values (`proc.aname` without index, `container.mount.dest`).
    List(Vec<Cow<'a, str>>),
}

impl FieldValue<'_> {
    pub fn is_absent(&self) -> bool {
        matches!(self, FieldValue::Absent)
    }
}

impl fmt::Display for FieldValue<'_> {
    /// How an output (`%field`) prints the value: absent is `<NA>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Absent => f.write_str("<NA>"),
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            FieldValue::Ip(ip) => write!(f, "{ip}"),
            FieldValue::List(items) => {
                f.write_str("(")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(it)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What kind of value a field holds; decides how a rule's literal is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Str,
    Int,
    Bool,
    Ip,
    List,
}

/// `evt.arg.<name>` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arg {
    Flags,
    Mode,
    Filename,
    Name,
    Path,
    Oldpath,
    Newpath,
    Target,
    Linkpath,
    Request,
    Pid,
    Uid,
    Gid,
    Ruid,
    Euid,
    Suid,
    Rgid,
    Egid,
    Sgid,
    Fd,
    Oldfd,
    Newfd,
    Domain,
    Type,
    Proto,
    Dev,
    Dir,
    Fstype,
    Status,
    Tuple,
    Res,
}

impl Arg {
    const ALL: [Arg; 31] = [
        Arg::Flags,
        Arg::Mode,
        Arg::Filename,
        Arg::Name,
        Arg::Path,
        Arg::Oldpath,
        Arg::Newpath,
        Arg::Target,
        Arg::Linkpath,
        Arg::Request,
        Arg::Pid,
        Arg::Uid,
        Arg::Gid,
        Arg::Ruid,
        Arg::Euid,
        Arg::Suid,
        Arg::Rgid,
        Arg::Egid,
        Arg::Sgid,
        Arg::Fd,
        Arg::Oldfd,
        Arg::Newfd,
        Arg::Domain,
        Arg::Type,
        Arg::Proto,
        Arg::Dev,
        Arg::Dir,
        Arg::Fstype,
        Arg::Status,
        Arg::Tuple,
        Arg::Res,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Arg::Flags => "flags",
            Arg::Mode => "mode",
            Arg::Filename => "filename",
            Arg::Name => "name",
            Arg::Path => "path",
            Arg::Oldpath => "oldpath",
            Arg::Newpath => "newpath",
            Arg::Target => "target",
            Arg::Linkpath => "linkpath",
            Arg::Request => "request",
            Arg::Pid => "pid",
            Arg::Uid => "uid",
            Arg::Gid => "gid",
            Arg::Ruid => "ruid",
            Arg::Euid => "euid",
            Arg::Suid => "suid",
            Arg::Rgid => "rgid",
            Arg::Egid => "egid",
            Arg::Sgid => "sgid",
            Arg::Fd => "fd",
            Arg::Oldfd => "oldfd",
            Arg::Newfd => "newfd",
            Arg::Domain => "domain",
            Arg::Type => "type",
            Arg::Proto => "proto",
            Arg::Dev => "dev",
            Arg::Dir => "dir",
            Arg::Fstype => "fstype",
            Arg::Status => "status",
            Arg::Tuple => "tuple",
            Arg::Res => "res",
        }
    }

    pub fn parse(name: &str) -> Option<Arg> {
        Arg::ALL.iter().copied().find(|a| a.as_str() == name)
    }

    fn kind(self) -> FieldKind {
        match self {
            Arg::Pid
            | Arg::Uid
            | Arg::Gid
            | Arg::Ruid
            | Arg::Euid
            | Arg::Suid
            | Arg::Rgid
            | Arg::Egid
            | Arg::Sgid => FieldKind::Int,
            Arg::Fd | Arg::Oldfd | Arg::Newfd | Arg::Proto | Arg::Status => FieldKind::Int,
            _ => FieldKind::Str,
        }
    }
}

/// A Falco field this agent knows. Parsed once when a rule compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    EvtType,
    EvtTime,
    EvtRawtime,
    EvtNum,
    EvtRes,
    EvtRawres,
    EvtDir,
    EvtIsOpenRead,
    EvtIsOpenWrite,
    EvtIsOpenExec,
    EvtArgs,
    EvtArg(Arg),
    EvtArgIndex(u8),
    ProcPid,
    ProcPpid,
    ProcSid,
    ProcName,
    ProcExe,
    ProcExepath,
    ProcCmdline,
    ProcArgs,
    ProcCwd,
    ProcTty,
    ProcPname,
    ProcPexe,
    ProcPexepath,
    ProcPcmdline,
    ProcAname(u8),
    ProcApid(u8),
    ProcAexe(u8),
    ProcAexepath(u8),
    ProcAnameAny,
    ProcApidAny,
    ProcIsExeUpperLayer,
    ProcIsExeFromMemfd,
    ProcStartTs,
    ThreadTid,
    ThreadCapEffective,
    UserUid,
    UserName,
    UserLoginuid,
    UserLoginname,
    GroupGid,
    GroupName,
    FdNum,
    FdType,
    FdTypechar,
    FdName,
    FdNameraw,
    FdDirectory,
    FdFilename,
    FdSip,
    FdSport,
    FdCip,
    FdCport,
    FdLip,
    FdLport,
    FdRip,
    FdRport,
    FdL4proto,
    FdSockfamily,
    ContainerId,
    ContainerName,
    ContainerImage,
    ContainerImageRepository,
    ContainerImageTag,
    ContainerPrivileged,
    ContainerMountDest,
    ContainerMountSource,
    ContainerStartTs,
    K8sPodName,
    K8sNsName,
    K8sPodUid,
}

/// Why a field name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("unknown field {0}")]
    Unknown(String),
    #[error("field {field} needs an index such as {field}[1]")]
    IndexRequired { field: String },
    #[error("field {field} takes no index")]
    IndexNotAllowed { field: String },
    #[error("field {field}: bad index \"{index}\"")]
    BadIndex { field: String, index: String },
}

/// The deepest ancestor an index may name. The sensor's ancestor lists are
/// bounded to this depth too.
pub const MAX_ANCESTOR_DEPTH: u8 = 16;

impl Field {
    /// Parse `name` (without brackets) and its optional `[index]` content.
    /// `evt.arg.flags` and `evt.arg[flags]` are the same field.
    pub fn parse(name: &str, index: Option<&str>) -> Result<Field, FieldError> {
        let no_index = |f: Field| match index {
            None => Ok(f),
            Some(_) => Err(FieldError::IndexNotAllowed {
                field: name.to_string(),
            }),
        };
        let depth = |make: fn(u8) -> Field, any: Option<Field>| -> Result<Field, FieldError> {
            match index {
                None => any.ok_or_else(|| FieldError::IndexRequired {
                    field: name.to_string(),
                }),
                Some(i) => match i.trim().parse::<u8>() {
                    Ok(n) if n <= MAX_ANCESTOR_DEPTH => Ok(make(n)),
                    _ => Err(FieldError::BadIndex {
                        field: name.to_string(),
                        index: i.to_string(),
                    }),
                },
            }
        };
        if let Some(arg) = name
            .strip_prefix("evt.arg.")
            .or_else(|| name.strip_prefix("evt.rawarg."))
        {
            let arg = Arg::parse(arg).ok_or_else(|| FieldError::Unknown(name.to_string()))?;
            return no_index(Field::EvtArg(arg));
        }
        if name == "evt.arg" {
            let i = index.ok_or_else(|| FieldError::IndexRequired {
                field: name.to_string(),
            })?;
            return match i.trim().parse::<u8>() {
                Ok(n) => Ok(Field::EvtArgIndex(n)),
                Err(_) => {
                    Arg::parse(i.trim())
                        .map(Field::EvtArg)
                        .ok_or_else(|| FieldError::BadIndex {
                            field: name.to_string(),
                            index: i.to_string(),
                        })
                }
            };
        }
        let f = match name {
            "proc.aname" => return depth(Field::ProcAname, Some(Field::ProcAnameAny)),
            "proc.apid" => return depth(Field::ProcApid, Some(Field::ProcApidAny)),
            "proc.aexe" => return depth(Field::ProcAexe, None),
            "proc.aexepath" => return depth(Field::ProcAexepath, None),
            "evt.type" => Field::EvtType,
            "evt.time" => Field::EvtTime,
            "evt.rawtime" => Field::EvtRawtime,
            "evt.num" => Field::EvtNum,
            "evt.res" => Field::EvtRes,
            "evt.rawres" => Field::EvtRawres,
            "evt.dir" => Field::EvtDir,
            "evt.is_open_read" => Field::EvtIsOpenRead,
            "evt.is_open_write" => Field::EvtIsOpenWrite,
            "evt.is_open_exec" => Field::EvtIsOpenExec,
            "evt.args" => Field::EvtArgs,
            "proc.pid" | "thread.pid" => Field::ProcPid,
            "proc.ppid" => Field::ProcPpid,
            "proc.sid" => Field::ProcSid,
            "proc.name" => Field::ProcName,
            "proc.exe" => Field::ProcExe,
            "proc.exepath" => Field::ProcExepath,
            "proc.cmdline" => Field::ProcCmdline,
            "proc.args" => Field::ProcArgs,
            "proc.cwd" => Field::ProcCwd,
            "proc.tty" => Field::ProcTty,
            "proc.pname" => Field::ProcPname,
            "proc.pexe" => Field::ProcPexe,
            "proc.pexepath" => Field::ProcPexepath,
            "proc.pcmdline" => Field::ProcPcmdline,
            "proc.is_exe_upper_layer" => Field::ProcIsExeUpperLayer,
            "proc.is_exe_from_memfd" => Field::ProcIsExeFromMemfd,
            "proc.start_ts" => Field::ProcStartTs,
            "thread.tid" => Field::ThreadTid,
            "thread.cap_effective" => Field::ThreadCapEffective,
            "user.uid" => Field::UserUid,
            "user.name" => Field::UserName,
            "user.loginuid" => Field::UserLoginuid,
            "user.loginname" => Field::UserLoginname,
            "group.gid" => Field::GroupGid,
            "group.name" => Field::GroupName,
            "fd.num" => Field::FdNum,
            "fd.type" => Field::FdType,
            "fd.typechar" => Field::FdTypechar,
            "fd.name" => Field::FdName,
            "fd.nameraw" => Field::FdNameraw,
            "fd.directory" => Field::FdDirectory,
            "fd.filename" => Field::FdFilename,
            "fd.sip" => Field::FdSip,
            "fd.sport" => Field::FdSport,
            "fd.cip" => Field::FdCip,
            "fd.cport" => Field::FdCport,
            "fd.lip" => Field::FdLip,
            "fd.lport" => Field::FdLport,
            "fd.rip" | "fd.dip" => Field::FdRip,
            "fd.rport" | "fd.dport" => Field::FdRport,
            "fd.l4proto" => Field::FdL4proto,
            "fd.sockfamily" => Field::FdSockfamily,
            "container.id" => Field::ContainerId,
            "container.name" => Field::ContainerName,
            "container.image" => Field::ContainerImage,
            "container.image.repository" => Field::ContainerImageRepository,
            "container.image.tag" => Field::ContainerImageTag,
            "container.privileged" => Field::ContainerPrivileged,
            "container.mount.dest" => Field::ContainerMountDest,
            "container.mount.source" => Field::ContainerMountSource,
            "container.start_ts" => Field::ContainerStartTs,
            "k8s.pod.name" => Field::K8sPodName,
            "k8s.ns.name" => Field::K8sNsName,
            "k8s.pod.uid" => Field::K8sPodUid,
            _ => return Err(FieldError::Unknown(name.to_string())),
        };
        no_index(f)
    }

    /// The kind of value; a rule's literal is read as this kind.
    pub fn kind(&self) -> FieldKind {
        use Field::*;
        match self {
            EvtTime | EvtRawtime | EvtNum | EvtRawres | ProcPid | ProcPpid | ProcSid | ProcTty
            | ProcApid(_) | ProcStartTs => FieldKind::Int,
            ThreadTid | UserUid | UserLoginuid | GroupGid | FdNum | FdSport | FdCport | FdLport
            | FdRport | ContainerStartTs => FieldKind::Int,
            EvtIsOpenRead | EvtIsOpenWrite | EvtIsOpenExec | ProcIsExeUpperLayer
            | ProcIsExeFromMemfd | ContainerPrivileged => FieldKind::Bool,
            FdSip | FdCip | FdLip | FdRip => FieldKind::Ip,
            ProcAnameAny | ProcApidAny | ContainerMountDest | ContainerMountSource => {
                FieldKind::List
            }
            EvtArg(a) => a.kind(),
            _ => FieldKind::Str,
        }
    }

    /// Whether this agent's sensor ever fills the field. A rule whose
    /// *condition* reads a field that is never filled would silently never
    /// match, so the rules loader refuses it; outputs may still name it and
    /// print `<NA>`.
    pub fn is_collected(&self) -> bool {
        // proc.sid: the sensor does not follow setsid(), so it leaves the
        // session unknown rather than report a stale one.
        !matches!(self, Field::EvtIsOpenExec | Field::ProcSid)
    }
}

// ---- rendering raw values the way Falco prints them -------------------------

/// `evt.res`: `SUCCESS` for results >= 0, the errno name otherwise.
pub fn render_res(res: i64) -> Cow<'static, str> {
    if res >= 0 {
        return Cow::Borrowed("SUCCESS");
    }
    let errno = nix::errno::Errno::from_raw(i32::try_from(-res).unwrap_or(i32::MAX));
    if errno == nix::errno::Errno::UnknownErrno {
        Cow::Owned(format!("E{}", -res))
    } else {
        Cow::Owned(format!("{errno:?}"))
    }
}

fn render_bits(flags: u64, table: &[(u64, &str)]) -> String {
    let mut out = String::new();
    let mut rest = flags;
    for (bit, name) in table {
        if *bit != 0 && flags & bit == *bit {
            if !out.is_empty() {
                out.push('|');
            }
            out.push_str(name);
            rest &= !bit;
        }
    }
    if rest != 0 {
        if !out.is_empty() {
            out.push('|');
        }
        out.push_str(&format!("0x{rest:x}"));
    }
    out
}

const OPEN_FLAGS: &[(u64, &str)] = &[
    (libc::O_CREAT as u64, "O_CREAT"),
    (libc::O_EXCL as u64, "O_EXCL"),
    (libc::O_NOCTTY as u64, "O_NOCTTY"),
    (libc::O_TRUNC as u64, "O_TRUNC"),
    (libc::O_APPEND as u64, "O_APPEND"),
    (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
    (libc::O_DSYNC as u64, "O_DSYNC"),
    (libc::O_DIRECT as u64, "O_DIRECT"),
    (libc::O_LARGEFILE as u64, "O_LARGEFILE"),
    (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
    (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
    (libc::O_NOATIME as u64, "O_NOATIME"),
    (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
    // O_SYNC includes O_DSYNC's bit; listed after it so both print.
    (libc::O_SYNC as u64, "O_SYNC"),
    (libc::O_PATH as u64, "O_PATH"),
    // O_TMPFILE includes O_DIRECTORY's bit.
    (libc::O_TMPFILE as u64, "O_TMPFILE"),
];

fn render_flags(ty: EventType, flags: u64) -> Cow<'static, str> {
    use EventType::*;
    let s = match ty {
        Open | Openat | Openat2 | Creat => {
            let mode = match flags & libc::O_ACCMODE as u64 {
                m if m == libc::O_WRONLY as u64 => "O_WRONLY",
                m if m == libc::O_RDWR as u64 => "O_RDWR",
                _ => "O_RDONLY",
            };
            let rest = render_bits(flags & !(libc::O_ACCMODE as u64), OPEN_FLAGS);
            if rest.is_empty() {
                mode.to_string()
            } else {
                format!("{mode}|{rest}")
            }
        }
        Execve | Execveat => render_bits(
            flags,
            &[
                (exe_flags::EXE_WRITABLE, "EXE_WRITABLE"),
                (exe_flags::EXE_UPPER_LAYER, "EXE_UPPER_LAYER"),
                (exe_flags::EXE_FROM_MEMFD, "EXE_FROM_MEMFD"),
                (exe_flags::EXE_LOWER_LAYER, "EXE_LOWER_LAYER"),
            ],
        ),
        MemfdCreate => render_bits(
            flags,
            &[
                (1, "MFD_CLOEXEC"),
                (2, "MFD_ALLOW_SEALING"),
                (4, "MFD_HUGETLB"),
                (8, "MFD_NOEXEC_SEAL"),
                (0x10, "MFD_EXEC"),
            ],
        ),
        Renameat2 => render_bits(
            flags,
            &[
                (1, "RENAME_NOREPLACE"),
                (2, "RENAME_EXCHANGE"),
                (4, "RENAME_WHITEOUT"),
            ],
        ),
        Unlinkat => render_bits(flags, &[(libc::AT_REMOVEDIR as u64, "AT_REMOVEDIR")]),
        Dup3 => render_bits(flags, &[(libc::O_CLOEXEC as u64, "O_CLOEXEC")]),
        Mount => render_bits(
            flags,
            &[
                (libc::MS_RDONLY, "MS_RDONLY"),
                (libc::MS_NOSUID, "MS_NOSUID"),
                (libc::MS_NODEV, "MS_NODEV"),
                (libc::MS_NOEXEC, "MS_NOEXEC"),
                (libc::MS_REMOUNT, "MS_REMOUNT"),
                (libc::MS_BIND, "MS_BIND"),
                (libc::MS_MOVE, "MS_MOVE"),
                (libc::MS_REC, "MS_REC"),
                (libc::MS_PRIVATE, "MS_PRIVATE"),
                (libc::MS_SHARED, "MS_SHARED"),
            ],
        ),
        Clone | Clone3 | Fork | Vfork => render_bits(
            flags,
            &[
                (libc::CLONE_VM as u64, "CLONE_VM"),
                (libc::CLONE_FS as u64, "CLONE_FS"),
                (libc::CLONE_FILES as u64, "CLONE_FILES"),
                (libc::CLONE_SIGHAND as u64, "CLONE_SIGHAND"),
                (libc::CLONE_PTRACE as u64, "CLONE_PTRACE"),
                (libc::CLONE_VFORK as u64, "CLONE_VFORK"),
                (libc::CLONE_PARENT as u64, "CLONE_PARENT"),
                (libc::CLONE_THREAD as u64, "CLONE_THREAD"),
                (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
                (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
                (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
                (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
                (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
                (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
                (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
            ],
        ),
        _ => format!("{flags}"),
    };
    Cow::Owned(s)
}

/// Falco's names for ptrace requests.
pub fn ptrace_request_name(r: u64) -> &'static str {
    match r {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSR",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSR",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        14 => "PTRACE_GETFPREGS",
        15 => "PTRACE_SETFPREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        24 => "PTRACE_SYSCALL",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4201 => "PTRACE_GETEVENTMSG",
        0x4202 => "PTRACE_GETSIGINFO",
        0x4203 => "PTRACE_SETSIGINFO",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        0x4208 => "PTRACE_LISTEN",
        _ => "PTRACE_UNKNOWN",
    }
}

/// Falco's names for socket families.
pub fn af_name(family: u32) -> &'static str {
    match family as i32 {
        libc::AF_UNSPEC => "AF_UNSPEC",
        libc::AF_UNIX => "AF_UNIX",
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        libc::AF_NETLINK => "AF_NETLINK",
        libc::AF_PACKET => "AF_PACKET",
        libc::AF_BLUETOOTH => "AF_BLUETOOTH",
        libc::AF_VSOCK => "AF_VSOCK",
        libc::AF_XDP => "AF_XDP",
        _ => "AF_UNKNOWN",
    }
}

fn sock_type_name(t: u32) -> &'static str {
    match t as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM",
        libc::SOCK_DGRAM => "SOCK_DGRAM",
        libc::SOCK_RAW => "SOCK_RAW",
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        libc::SOCK_RDM => "SOCK_RDM",
        _ => "SOCK_UNKNOWN",
    }
}

/// Capability names in bit order, as `thread.cap_effective` prints them.
const CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn render_caps(mask: u64) -> String {
    CAPS.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_event(path: &str, flags: i32) -> Event {
        let mut e = Event::new(
            EventType::Openat,
            Arc::new(Process::new(10, 1, "/usr/bin/cat", &["cat", path])),
        );
        e.evt.args.flags = Some(flags as u64);
        e.evt.args.name = Some(path.into());
        e.evt.res = 3;
        e.fd = Some(Fd::file(3, path));
        e
    }

    fn get<'a>(e: &'a Event, name: &str, index: Option<&str>) -> FieldValue<'a> {
        e.field(&Field::parse(name, index).unwrap())
    }

    #[test]
    fn process_fields_follow_falco_names() {
        let mut e = open_event("/etc/shadow", libc::O_RDONLY);
        let parent = Arc::new(Process::new(
            1,
            0,
            "/bin/bash",
            &["bash", "-c", "cat /etc/shadow"],
        ));
        let grand = Arc::new(Process::new(0, 0, "/sbin/init", &["init"]));
        e.ancestors = vec![parent, grand];
        assert_eq!(get(&e, "proc.name", None).to_string(), "cat");
        assert_eq!(get(&e, "proc.cmdline", None).to_string(), "cat /etc/shadow");
        assert_eq!(get(&e, "proc.args", None).to_string(), "/etc/shadow");
        assert_eq!(get(&e, "proc.pname", None).to_string(), "bash");
        assert_eq!(
            get(&e, "proc.pcmdline", None).to_string(),
            "bash -c cat /etc/shadow"
        );
        assert_eq!(get(&e, "proc.aname", Some("2")).to_string(), "init");
        assert_eq!(get(&e, "proc.aname", Some("0")).to_string(), "cat");
        assert!(get(&e, "proc.aname", Some("3")).is_absent());
        assert_eq!(
            get(&e, "proc.aname", None),
            FieldValue::List(vec!["bash".into(), "init".into()])
        );
    }

    #[test]
    fn open_flags_render_like_falco_and_drive_is_open_write() {
        let e = open_event("/etc/x", libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        let flags = get(&e, "evt.arg.flags", None).to_string();
        assert!(flags.starts_with("O_WRONLY|"), "{flags}");
        assert!(
            flags.contains("O_TRUNC") && flags.contains("O_CREAT"),
            "{flags}"
        );
        assert_eq!(get(&e, "evt.is_open_write", None), FieldValue::Bool(true));
        assert_eq!(get(&e, "evt.is_open_read", None), FieldValue::Bool(false));
        assert_eq!(get(&e, "evt.arg", Some("flags")).to_string(), flags);
        assert_eq!(get(&e, "evt.arg", Some("0")).to_string(), "/etc/x");
        assert_eq!(get(&e, "fd.directory", None).to_string(), "/etc");
        assert_eq!(get(&e, "fd.filename", None).to_string(), "x");
        assert_eq!(get(&e, "fd.typechar", None).to_string(), "f");
        assert_eq!(get(&e, "evt.res", None).to_string(), "SUCCESS");
    }

    #[test]
    fn failed_calls_render_the_errno_name() {
        let mut e = open_event("/nope", libc::O_RDONLY);
        e.evt.res = -(libc::ENOENT as i64);
        assert_eq!(get(&e, "evt.res", None).to_string(), "ENOENT");
        assert_eq!(get(&e, "evt.rawres", None), FieldValue::Int(-2));
    }

    #[test]
    fn socket_fields_distinguish_client_server_local_remote() {
        let mut e = Event::new(
            EventType::Connect,
            Arc::new(Process::new(5, 1, "/usr/bin/curl", &["curl"])),
        );
        let local: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let remote: SocketAddr = "10.43.0.1:443".parse().unwrap();
        e.fd = Some(Fd::socket(4, local, remote, Role::Client, L4Proto::Tcp));
        assert_eq!(
            get(&e, "fd.name", None).to_string(),
            "10.0.0.2:40000->10.43.0.1:443"
        );
        assert_eq!(get(&e, "fd.sip", None).to_string(), "10.43.0.1");
        assert_eq!(get(&e, "fd.sport", None), FieldValue::Int(443));
        assert_eq!(get(&e, "fd.cport", None), FieldValue::Int(40000));
        assert_eq!(get(&e, "fd.lport", None), FieldValue::Int(40000));
        assert_eq!(get(&e, "fd.rport", None), FieldValue::Int(443));
        assert_eq!(get(&e, "fd.typechar", None).to_string(), "4");
        assert!(get(&e, "fd.directory", None).is_absent());
    }

    #[test]
    fn absent_fields_print_na_and_unknown_fields_are_errors() {
        let e = open_event("/x", 0);
        assert_eq!(get(&e, "k8s.pod.name", None).to_string(), "<NA>");
        assert_eq!(get(&e, "container.id", None).to_string(), "host");
        assert_eq!(
            Field::parse("k8s.pod.label", None),
            Err(FieldError::Unknown("k8s.pod.label".into()))
        );
        assert!(matches!(
            Field::parse("proc.aexepath", None),
            Err(FieldError::IndexRequired { .. })
        ));
        assert!(matches!(
            Field::parse("proc.name", Some("1")),
            Err(FieldError::IndexNotAllowed { .. })
        ));
    }

    #[test]
    fn args_render_by_type() {
        let mut e = Event::new(
            EventType::Ptrace,
            Arc::new(Process::new(5, 1, "/usr/bin/gdb", &["gdb"])),
        );
        e.evt.args.request = Some(16);
        e.evt.args.pid = Some(42);
        assert_eq!(
            get(&e, "evt.arg.request", None).to_string(),
            "PTRACE_ATTACH"
        );
        assert_eq!(
            get(&e, "evt.args", None).to_string(),
            "res=SUCCESS request=PTRACE_ATTACH pid=42"
        );
        let mut s = Event::new(
            EventType::Socket,
            Arc::new(Process::new(5, 1, "/x", &["x"])),
        );
        s.evt.args.domain = Some(libc::AF_PACKET as u32);
        assert_eq!(get(&s, "evt.arg.domain", None).to_string(), "AF_PACKET");
    }

    #[test]
    fn events_round_trip_through_json() {
        let mut e = open_event("/etc/passwd", libc::O_RDONLY);
        e.ancestors = vec![Arc::new(Process::new(1, 0, "/bin/sh", &["sh"]))];
        let json = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        // A hand-written event with only the essentials is enough.
        let min: Event = serde_json::from_str(
            r#"{"evt":{"type":"execve","time":1},"proc":{"pid":7,"name":"sh","exepath":"/bin/sh","args":["-c","id"]}}"#,
        )
        .unwrap();
        assert_eq!(min.container.id, "host");
        assert_eq!(min.proc.args_str(), "-c id");
    }

    #[test]
    fn capabilities_render_by_name() {
        assert_eq!(
            render_caps((1 << 21) | (1 << 16)),
            "CAP_SYS_MODULE CAP_SYS_ADMIN"
        );
    }
}
