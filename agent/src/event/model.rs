//! The event model: what the sensor saw, as plain data.
//!
//! Owns [`Event`] and its parts, their JSON form (what `edge-agent sensor
//! watch --json` prints and `edge-agent rules test --events` reads), and
//! the table of event types ([`EventType`]). Holds raw values only: how a
//! value reads as a Falco field is [`super::fields`], how it prints is
//! [`super::render`].

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::fields::Arg;
use super::render::{
    CLONE_FLAGS, DUP3_FLAGS, EXEC_FLAGS, FCHMODAT_FLAGS, FlagNames, MEMFD_FLAGS, MOUNT_FLAGS,
    RENAMEAT2_FLAGS, UNLINKAT_FLAGS, USERFAULTFD_FLAGS,
};

/// The event-type table: one entry per `evt.type` this agent produces.
///
/// Each entry is `Variant = "falco_name", args(...), flags ...;`: the
/// variant, Falco's name for the type (also its JSON name), its arguments in
/// Falco's order (`evt.arg[N]`, `evt.args`), and how `evt.arg.flags` prints
/// on it. The enum, [`EventType::ALL`], the names and the argument lists
/// are all generated from the table, so a type is one entry; the sensor's
/// side of a new type is in `ebpf/abi.h` and `sensor/` (see the
/// [`super::fields`] module doc).
macro_rules! event_types {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, args($($arg:ident),*), flags $flags:expr;
    )*) => {
        /// Falco's `evt.type` values that this agent produces. Serialized by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum EventType {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl EventType {
            /// How many types there are.
            pub(crate) const COUNT: usize = [$($name),*].len();

            /// Every type, in [`EventType::index`] order.
            pub(crate) const ALL: [EventType; Self::COUNT] = [$(EventType::$variant),*];

            /// Falco's name for it (`openat`, `init_module`, ...).
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $( EventType::$variant => $name, )*
                }
            }

            /// The names of this type's arguments, in Falco's order (for
            /// `evt.arg[N]` and `evt.args`).
            pub(crate) fn arg_order(self) -> &'static [Arg] {
                match self {
                    $( EventType::$variant => &[$(Arg::$arg),*], )*
                }
            }

            /// How `evt.arg.flags` prints on this type.
            pub(crate) fn flag_names(self) -> FlagNames {
                use FlagNames::*;
                match self {
                    $( EventType::$variant => $flags, )*
                }
            }
        }
    };
}

event_types! {
    Execve      = "execve",       args(Filename, Flags),          flags Named(EXEC_FLAGS);
    Execveat    = "execveat",     args(Filename, Flags),          flags Named(EXEC_FLAGS);
    Clone       = "clone",        args(Flags),                    flags Named(CLONE_FLAGS);
    Clone3      = "clone3",       args(Flags),                    flags Named(CLONE_FLAGS);
    Fork        = "fork",         args(Flags),                    flags Named(CLONE_FLAGS);
    Vfork       = "vfork",        args(Flags),                    flags Named(CLONE_FLAGS);
    Procexit    = "procexit",     args(Status),                   flags Numeric;
    Open        = "open",         args(Name, Flags, Mode),        flags Open;
    Openat      = "openat",       args(Name, Flags, Mode),        flags Open;
    Openat2     = "openat2",      args(Name, Flags, Mode),        flags Open;
    Creat       = "creat",        args(Name, Flags, Mode),        flags Open;
    Connect     = "connect",      args(Tuple),                    flags Numeric;
    Accept      = "accept",       args(Tuple),                    flags Numeric;
    Accept4     = "accept4",      args(Tuple),                    flags Numeric;
    Ptrace      = "ptrace",       args(Request, Pid),             flags Numeric;
    Setuid      = "setuid",       args(Uid),                      flags Numeric;
    Setgid      = "setgid",       args(Gid),                      flags Numeric;
    Setreuid    = "setreuid",     args(Ruid, Euid, Suid),         flags Numeric;
    Setregid    = "setregid",     args(Rgid, Egid, Sgid),         flags Numeric;
    Setresuid   = "setresuid",    args(Ruid, Euid, Suid),         flags Numeric;
    Setresgid   = "setresgid",    args(Rgid, Egid, Sgid),         flags Numeric;
    InitModule  = "init_module",  args(Name, Fd),                 flags Numeric;
    FinitModule = "finit_module", args(Name, Fd),                 flags Numeric;
    MemfdCreate = "memfd_create", args(Name, Flags),              flags Named(MEMFD_FLAGS);
    Mount       = "mount",        args(Dev, Dir, Fstype, Flags),  flags Named(MOUNT_FLAGS);
    Unlink      = "unlink",       args(Path, Flags),              flags Numeric;
    Unlinkat    = "unlinkat",     args(Path, Flags),              flags Named(UNLINKAT_FLAGS);
    Rename      = "rename",       args(Oldpath, Newpath, Flags),  flags Numeric;
    Renameat    = "renameat",     args(Oldpath, Newpath, Flags),  flags Numeric;
    Renameat2   = "renameat2",    args(Oldpath, Newpath, Flags),  flags Named(RENAMEAT2_FLAGS);
    Symlink     = "symlink",      args(Target, Linkpath),         flags Numeric;
    Symlinkat   = "symlinkat",    args(Target, Linkpath),         flags Numeric;
    Link        = "link",         args(Oldpath, Newpath, Flags),  flags Numeric;
    Linkat      = "linkat",       args(Oldpath, Newpath, Flags),  flags Numeric;
    Dup         = "dup",          args(Oldfd, Newfd, Flags),      flags Numeric;
    Dup2        = "dup2",         args(Oldfd, Newfd, Flags),      flags Numeric;
    Dup3        = "dup3",         args(Oldfd, Newfd, Flags),      flags Named(DUP3_FLAGS);
    Socket      = "socket",       args(Domain, Type, Proto),      flags Numeric;
    Chmod       = "chmod",        args(Filename, Mode),           flags Numeric;
    Fchmod      = "fchmod",       args(Fd, Mode),                 flags Numeric;
    /// Also fchmodat2 (6.6), which does the same with flags: Falco's rules
    /// name chmod, fchmod and fchmodat, and fchmodat2 must not be a way
    /// around them.
    Fchmodat    = "fchmodat",     args(Dirfd, Filename, Mode, Flags), flags Named(FCHMODAT_FLAGS);
    Mkdir       = "mkdir",        args(Path, Mode),               flags Numeric;
    Mkdirat     = "mkdirat",      args(Dirfd, Path, Mode),        flags Numeric;
    Rmdir       = "rmdir",        args(Path),                     flags Numeric;
    Setns       = "setns",        args(Fd, Nstype),               flags Numeric;
    Unshare     = "unshare",      args(Flags),                    flags Named(CLONE_FLAGS);
    Bpf         = "bpf",          args(Cmd),                      flags Numeric;
    Userfaultfd = "userfaultfd",  args(Flags),                    flags Named(USERFAULTFD_FLAGS);
    Prctl       = "prctl",        args(Option, Arg2Str, Arg2Int), flags Numeric;
    Setsid      = "setsid",       args(),                         flags Numeric;
    Setpgid     = "setpgid",      args(Pid, Pgid),                flags Numeric;
    Listen      = "listen",       args(Fd, Backlog),              flags Numeric;
    Sendto      = "sendto",       args(Fd, Tuple),                flags Numeric;
    Sendmsg     = "sendmsg",      args(Fd, Tuple),                flags Numeric;
    Recvfrom    = "recvfrom",     args(Fd, Tuple),                flags Numeric;
    Recvmsg     = "recvmsg",      args(Fd, Tuple),                flags Numeric;
}

impl EventType {
    /// Dense index, for per-type tables (rule indexes, counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn is_open(self) -> bool {
        matches!(
            self,
            EventType::Open | EventType::Openat | EventType::Openat2 | EventType::Creat
        )
    }

    pub(crate) fn is_exec(self) -> bool {
        matches!(self, EventType::Execve | EventType::Execveat)
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
    pub(crate) ty: EventType,
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
    pub(crate) mode: Option<u32>,
    /// execve's path argument as the caller gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) filename: Option<String>,
    /// open: the path as given; memfd_create: the memfd's name; modules: the module name when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// unlink/unlinkat target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) oldpath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) newpath: Option<String>,
    /// symlink: what the link points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    /// symlink: where the link is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) linkpath: Option<String>,
    /// `evt.arg.path_truncated`: a resolved path argument (`filename` of
    /// chmod, `path`, `oldpath`, `newpath`, `linkpath`) is known only in
    /// part, as for `Fd::name_truncated`; rules treat them as partial.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) path_truncated: bool,
    /// ptrace request number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request: Option<u64>,
    /// ptrace target pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ruid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) euid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) suid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rgid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) egid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sgid: Option<u32>,
    /// finit_module's fd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fd: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) oldfd: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) newfd: Option<i64>,
    /// socket: address family (`AF_*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) domain: Option<u32>,
    /// socket: type (`SOCK_*`), without the NONBLOCK/CLOEXEC bits.
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub(crate) sock_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) proto: Option<u32>,
    /// mount: source device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dev: Option<String>,
    /// mount: mount point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fstype: Option<String>,
    /// procexit: exit code (or 128 + signal when killed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<i64>,
    /// fchmodat, mkdirat: the directory fd a relative path starts from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dirfd: Option<i64>,
    /// setns: the namespace type asked for (`CLONE_NEW*`, 0 = any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nstype: Option<u64>,
    /// bpf: the command (`BPF_PROG_LOAD`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cmd: Option<u32>,
    /// prctl: the option (`PR_SET_NAME`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) option: Option<u32>,
    /// prctl: the second argument as a string (the name for PR_SET_NAME).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arg2_str: Option<String>,
    /// prctl: the second argument as an integer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) arg2_int: Option<i64>,
    /// setpgid: the process group asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pgid: Option<i64>,
    /// listen: the backlog asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backlog: Option<i64>,
}

impl Args {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Args::default()
    }
}

/// `evt.arg.flags` bits on execve/execveat, as Falco defines them.
pub(crate) mod exe_flags {
    pub(crate) const EXE_WRITABLE: u64 = 1;
    pub(crate) const EXE_UPPER_LAYER: u64 = 2;
    pub(crate) const EXE_FROM_MEMFD: u64 = 4;
    pub(crate) const EXE_LOWER_LAYER: u64 = 8;
}

/// A process as the sensor's process table knows it. Shared (`Arc`) between
/// the events of one process and its children's ancestor lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// Session id (`proc.sid`); 0 when unknown.
    pub(crate) sid: u32,
    /// `proc.name`: the command name (comm, at most 15 bytes in the kernel).
    pub(crate) name: String,
    /// `proc.exe`: argv[0] as the process was started.
    pub(crate) exe: String,
    /// `proc.exepath`: full path of the executable.
    pub(crate) exepath: String,
    /// `proc.exepath_truncated`: `exepath` is not the whole path, only
    /// its last components (the kernel walks at most 32 levels up) or
    /// nothing (it could not be read); rules treat it as partial.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) exepath_truncated: bool,
    /// `proc.args`: argv[1..].
    pub(crate) args: Vec<String>,
    /// `proc.cmdline`: `name` then the args, space separated. Filled by
    /// [`Process::finish`] when empty.
    pub(crate) cmdline: String,
    pub(crate) cwd: Option<String>,
    /// `proc.cwd_truncated`: `cwd` is not the whole path (as for
    /// `exepath_truncated`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) cwd_truncated: bool,
    /// Controlling terminal device number; 0 = none.
    pub tty: u32,
    /// Start time, nanoseconds since the Unix epoch (0 when unknown).
    pub start_time: u64,
    pub(crate) exe_upper_layer: Option<bool>,
    pub(crate) exe_from_memfd: Option<bool>,
    /// Effective capability mask, when the sensor reads it.
    pub(crate) cap_effective: Option<u64>,
    /// Permitted and inheritable capability masks, when known.
    pub(crate) cap_permitted: Option<u64>,
    pub(crate) cap_inheritable: Option<u64>,
    /// Pid and process group in the process's own pid namespace
    /// (`proc.vpid`, `proc.vpgid`); 0 when unknown (and vpgid 0 when the
    /// group's leader is outside that namespace).
    pub(crate) vpid: u32,
    pub(crate) vpgid: u32,
    /// Process group as the host sees it; 0 when unknown.
    pub(crate) pgid: u32,
    /// `proc.env`: the environment at exec, `NAME=value` entries joined
    /// by spaces (as Falco prints it), cut at 4 KiB. Shared by the
    /// processes that inherited it.
    pub(crate) env: Option<Arc<str>>,
    /// The executable's inode number, ctime and mtime (ns since the Unix epoch).
    pub(crate) exe_ino: Option<u64>,
    pub(crate) exe_ino_ctime: Option<u64>,
    pub(crate) exe_ino_mtime: Option<u64>,
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
    pub(crate) fn finish(&mut self) {
        if self.cmdline.is_empty() {
            self.cmdline = std::iter::once(self.name.as_str())
                .chain(self.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
        }
    }

    /// `proc.args`: the arguments joined with spaces.
    pub(crate) fn args_str(&self) -> Cow<'_, str> {
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
pub(crate) struct User {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Audit login uid; `None` when unset (the kernel's `(uid_t)-1`).
    pub(crate) loginuid: Option<u32>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) loginname: Option<Arc<str>>,
}

/// `fd.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FdType {
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn typechar(self) -> &'static str {
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

    pub(crate) fn is_ip(self) -> bool {
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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) num: i64,
    #[serde(rename = "type")]
    pub(crate) ty: FdType,
    /// `fd.name`: the path for files; `cip:cport->sip:sport` for IP sockets;
    /// the path for unix sockets.
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) remote: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) l4proto: Option<L4Proto>,
    /// `fd.connected`: the socket is connected (a connected UDP socket
    /// too), as the kernel said at the event; unknown for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connected: Option<bool>,
    /// `fd.name_changed`: this event gave the fd a new name (a datagram to
    /// or from a peer other than the last one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) name_changed: bool,
    /// `fd.name_truncated`: `name` is a path the sensor could not read in
    /// full: only its last components (a path deeper than the kernel's
    /// walk), its start (cut at PATH_MAX), or a relative path whose
    /// starting directory could not be read. Rules treat it as partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) name_truncated: bool,
    /// The host names the node resolved to the remote address (DNS answers
    /// the sensor saw; `fd.rip.name`, and `fd.sip.name` or `fd.cip.name` by
    /// role), most recent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) remote_names: Option<HostNames>,
    /// The same for the local address (`fd.lip.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local_names: Option<HostNames>,
}

/// Host names of one address, shared by every event that names it.
pub(crate) type HostNames = Arc<[Arc<str>]>;

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
            connected: None,
            name_changed: false,
            name_truncated: false,
            remote_names: None,
            local_names: None,
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
            connected: None,
            name_changed: false,
            name_truncated: false,
            remote_names: None,
            local_names: None,
        }
    }

    pub(super) fn client(&self) -> Option<SocketAddr> {
        match self.role? {
            Role::Client => self.local,
            Role::Server => self.remote,
        }
    }

    pub(super) fn server(&self) -> Option<SocketAddr> {
        match self.role? {
            Role::Client => self.remote,
            Role::Server => self.local,
        }
    }

    pub(super) fn client_names(&self) -> Option<&HostNames> {
        match self.role? {
            Role::Client => self.local_names.as_ref(),
            Role::Server => self.remote_names.as_ref(),
        }
    }

    pub(super) fn server_names(&self) -> Option<&HostNames> {
        match self.role? {
            Role::Client => self.remote_names.as_ref(),
            Role::Server => self.local_names.as_ref(),
        }
    }

    pub(super) fn is_path(&self) -> bool {
        matches!(self.ty, FdType::File | FdType::Directory)
    }
}

/// A bind mount of a container (from its runtime bundle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub(crate) source: String,
    pub(crate) dest: String,
    /// The runtime's mount options (`ro`, `rbind`, `rprivate`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
}

impl Mount {
    /// Falco's `source:dest:mode:rdrw:propagation` (mode is Docker's SELinux
    /// label option, which the OCI spec does not carry: empty).
    pub(crate) fn describe(&self) -> String {
        let has = |o: &str| self.options.iter().any(|x| x == o);
        let propagation = self
            .options
            .iter()
            .find(|o| {
                matches!(
                    o.as_str(),
                    "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                )
            })
            .map_or("", String::as_str);
        format!(
            "{}:{}::{}:{propagation}",
            self.source,
            self.dest,
            !has("ro")
        )
    }
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
    pub(crate) const HOST_ID: &'static str = "host";

    pub fn host() -> Arc<Container> {
        Arc::new(Container {
            id: Self::HOST_ID.into(),
            ..Default::default()
        })
    }

    pub(crate) fn is_host(&self) -> bool {
        self.id == Self::HOST_ID
    }
}

/// One thing that happened on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub evt: Evt,
    pub(crate) proc: Arc<Process>,
    /// Parent first, then grandparent, ... as far as the process table knows.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "serialize_ancestors"
    )]
    pub ancestors: Vec<Arc<Process>>,
    #[serde(default)]
    pub(crate) user: User,
    /// Thread id of the caller (`thread.tid`); equals `proc.pid` for the main thread.
    #[serde(default)]
    pub(crate) tid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<Fd>,
    #[serde(default = "Container::host")]
    pub container: Arc<Container>,
    /// The calling thread's capabilities at the time of the event, where
    /// the sensor reads them then (setns, unshare); otherwise the
    /// process's as of its exec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) caps: Option<Caps>,
}

/// Capability masks (`thread.cap_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Caps {
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
}

/// Ancestors in an event's JSON, without their environments: rules read
/// only the event's own `proc.env`, and an environment is kilobytes, which
/// each ancestor would repeat in every event `sensor watch` prints.
fn serialize_ancestors<S: serde::Serializer>(
    ancestors: &[Arc<Process>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(ancestors.iter().map(|p| Process {
        env: None,
        ..(**p).clone()
    }))
}

impl Event {
    /// An event of `ty` by `proc` on the host, now, with no args.
    pub fn new(ty: EventType, proc: Arc<Process>) -> Self {
        let time = crate::unix_time::now_nanos();
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
            caps: None,
        }
    }

    /// The `n`th ancestor: 0 is the process itself, 1 its parent, ...
    pub(crate) fn ancestor(&self, n: usize) -> Option<&Process> {
        if n == 0 {
            Some(&self.proc)
        } else {
            self.ancestors.get(n - 1).map(|a| &**a)
        }
    }
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
    fn event_types_serialize_as_falcos_names() {
        for ty in EventType::ALL {
            let json = serde_json::to_string(&ty).unwrap();
            assert_eq!(json, format!("\"{}\"", ty.as_str()));
            assert_eq!(serde_json::from_str::<EventType>(&json).unwrap(), ty);
            assert_eq!(ty.as_str().parse::<EventType>(), Ok(ty));
            assert_eq!(EventType::ALL[ty.index()], ty);
        }
    }
}
