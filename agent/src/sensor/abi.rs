//! The Rust mirror of `ebpf/abi.h`, the only definition of what crosses the
//! kernel/user boundary.
//!
//! Owns the record layout, the stable event type ids, the counter indexes
//! and the length-checked decoding of raw ring-buffer bytes into a
//! [`Record`]. The layout structs below exist to pin sizes and offsets at
//! compile time (`const` assertions against the same numbers `abi.h`
//! asserts); decoding reads each field at its `offset_of!` position from a
//! byte slice it has checked first, so there is no `unsafe` here. A unit
//! test reads `abi.h` itself and checks every id and counter against this
//! file. Never interprets what a record means (that is `decode.rs`).

use std::mem::{offset_of, size_of};

use crate::event::EventType;

/// `EA_ABI_VERSION`.
#[cfg(test)]
pub(crate) const ABI_VERSION: u32 = 2;

/// `EA_COMM_LEN`.
pub(crate) const COMM_LEN: usize = 16;
/// `EA_NARG`: integer slots per record.
pub(crate) const NARG: usize = 16;
/// `EA_NSTR`: string slots per record.
pub(crate) const NSTR: usize = 8;
/// `EA_LPM_DATA`: bytes of a path the kernel's prefix maps compare.
pub(crate) const LPM_DATA: usize = 128;
/// `EA_SYSCALL_MAX`: syscall numbers the `ea_syscalls` map covers.
#[cfg(test)]
pub(crate) const SYSCALL_MAX: u32 = 512;
/// `EA_DNS_MAX`: bytes of a DNS message the kernel copies.
#[cfg(test)]
pub(crate) const DNS_MAX: usize = 1232;
/// Bytes of a path the kernel's deny-list hash covers (`EA_DENY_PATH_MAX`).
pub(crate) const DENY_PATH_MAX: usize = 256;
/// `EA_DENY_OPEN_RULES`: `sensor.deny_open` entries at most.
pub(crate) const DENY_OPEN_RULES: usize = 64;

/// `EA_F_*`: record header flags.
pub(crate) mod flags {
    #[cfg(test)]
    pub(crate) const TRUNCATED: u16 = 0x1;
    pub(crate) const KILLED: u16 = 0x2;
    #[cfg(test)]
    pub(crate) const REFUSED: u16 = 0x4;
    /// `EA_F_STR_CUT`: `STR_CUT << n` is set when string slot `n` is not
    /// complete (cut at its bound, or a path walk that stopped before the
    /// root); see [`super::Record::cut`].
    pub(crate) const STR_CUT: u16 = 0x100;
}

/// `EA_CFG_*`: `ea_config.flags`.
pub(crate) const CFG_DENY_EXEC: u32 = 0x1;
pub(crate) const CFG_EXCLUDE_CGROUPS: u32 = 0x2;
pub(crate) const CFG_DENY_OPEN: u32 = 0x4;

/// `EA_LIST_*`: which deny list a REFUSED record is about (its arg0).
pub(crate) const LIST_EXEC: i64 = 1;
pub(crate) const LIST_OPEN: i64 = 2;

/// `EA_ACCESS_*`: what a deny_open rule refuses (the kernel's f_mode bits).
pub(crate) const ACCESS_READ: u32 = 0x1;
pub(crate) const ACCESS_WRITE: u32 = 0x2;

/// `EA_POLL_MS`: the reader drains the ring buffer at least this often; the
/// kernel wakes it earlier only when `ea_config.wakeup_bytes` wait.
pub(crate) const POLL_MS: u64 = 50;

/// `EA_DENY_SEED_*` and `EA_FNV_PRIME`: the kernel hashes executable paths
/// and names with FNV-1a 64 from these seeds; the agent hashes the deny list
/// the same way.
pub(crate) const DENY_SEED_PATH: u64 = 0xcbf2_9ce4_8422_2325;
pub(crate) const DENY_SEED_NAME: u64 = 0x8422_2325_cbf2_9ce4;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a 64 of `bytes` from `seed`, as `denied()` in the kernel computes it.
pub(crate) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(seed, |h, &c| (h ^ u64::from(c)).wrapping_mul(FNV_PRIME))
}

/// Event type ids (`EA_EVT_*`). Stable: never renumbered, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    Loss = 1,
    Execve = 2,
    Execveat = 3,
    Clone = 4,
    Clone3 = 5,
    Fork = 6,
    Vfork = 7,
    Procexit = 8,
    Open = 9,
    Openat = 10,
    Openat2 = 11,
    Creat = 12,
    Connect = 13,
    Accept = 14,
    Accept4 = 15,
    Ptrace = 16,
    Setuid = 17,
    Setgid = 18,
    Setreuid = 19,
    Setregid = 20,
    Setresuid = 21,
    Setresgid = 22,
    InitModule = 23,
    FinitModule = 24,
    MemfdCreate = 25,
    Mount = 26,
    Unlink = 27,
    Unlinkat = 28,
    Rename = 29,
    Renameat = 30,
    Renameat2 = 31,
    Symlink = 32,
    Symlinkat = 33,
    Link = 34,
    Linkat = 35,
    Dup = 36,
    Dup2 = 37,
    Dup3 = 38,
    Socket = 39,
    Chmod = 40,
    Fchmod = 41,
    Fchmodat = 42,
    Fchmodat2 = 43,
    Mkdir = 44,
    Mkdirat = 45,
    Rmdir = 46,
    Setns = 47,
    Unshare = 48,
    Bpf = 49,
    Userfaultfd = 50,
    Prctl = 51,
    Setsid = 52,
    Setpgid = 53,
    Listen = 54,
    Sendto = 55,
    Sendmsg = 56,
    Recvfrom = 57,
    Recvmsg = 58,
    /// Internal: a DNS answer the node received or served, for the name
    /// cache (`fd.sip.name`); never an event.
    Dns = 59,
    /// A BPF-LSM hook refused an exec or an open. Not an `evt.type`: the
    /// sensor turns it into an enforcement alert.
    Refused = 60,
}

/// `EA_EVT_MAX`: one past the highest id.
#[cfg(test)]
pub(crate) const KIND_MAX: u16 = 61;

impl Kind {
    pub(crate) const ALL: [Kind; 60] = [
        Kind::Loss,
        Kind::Execve,
        Kind::Execveat,
        Kind::Clone,
        Kind::Clone3,
        Kind::Fork,
        Kind::Vfork,
        Kind::Procexit,
        Kind::Open,
        Kind::Openat,
        Kind::Openat2,
        Kind::Creat,
        Kind::Connect,
        Kind::Accept,
        Kind::Accept4,
        Kind::Ptrace,
        Kind::Setuid,
        Kind::Setgid,
        Kind::Setreuid,
        Kind::Setregid,
        Kind::Setresuid,
        Kind::Setresgid,
        Kind::InitModule,
        Kind::FinitModule,
        Kind::MemfdCreate,
        Kind::Mount,
        Kind::Unlink,
        Kind::Unlinkat,
        Kind::Rename,
        Kind::Renameat,
        Kind::Renameat2,
        Kind::Symlink,
        Kind::Symlinkat,
        Kind::Link,
        Kind::Linkat,
        Kind::Dup,
        Kind::Dup2,
        Kind::Dup3,
        Kind::Socket,
        Kind::Chmod,
        Kind::Fchmod,
        Kind::Fchmodat,
        Kind::Fchmodat2,
        Kind::Mkdir,
        Kind::Mkdirat,
        Kind::Rmdir,
        Kind::Setns,
        Kind::Unshare,
        Kind::Bpf,
        Kind::Userfaultfd,
        Kind::Prctl,
        Kind::Setsid,
        Kind::Setpgid,
        Kind::Listen,
        Kind::Sendto,
        Kind::Sendmsg,
        Kind::Recvfrom,
        Kind::Recvmsg,
        Kind::Dns,
        Kind::Refused,
    ];

    pub(crate) fn from_id(id: u16) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u16 == id)
    }

    /// The `evt.type` this record becomes; `None` for the records the
    /// sensor keeps for itself ([`Kind::Loss`], [`Kind::Dns`]) and for
    /// [`Kind::Refused`], a report about enforcement, not an event.
    pub(crate) fn event_type(self) -> Option<EventType> {
        use EventType as T;
        Some(match self {
            Kind::Loss | Kind::Dns | Kind::Refused => return None,
            Kind::Execve => T::Execve,
            Kind::Execveat => T::Execveat,
            Kind::Clone => T::Clone,
            Kind::Clone3 => T::Clone3,
            Kind::Fork => T::Fork,
            Kind::Vfork => T::Vfork,
            Kind::Procexit => T::Procexit,
            Kind::Open => T::Open,
            Kind::Openat => T::Openat,
            Kind::Openat2 => T::Openat2,
            Kind::Creat => T::Creat,
            Kind::Connect => T::Connect,
            Kind::Accept => T::Accept,
            Kind::Accept4 => T::Accept4,
            Kind::Ptrace => T::Ptrace,
            Kind::Setuid => T::Setuid,
            Kind::Setgid => T::Setgid,
            Kind::Setreuid => T::Setreuid,
            Kind::Setregid => T::Setregid,
            Kind::Setresuid => T::Setresuid,
            Kind::Setresgid => T::Setresgid,
            Kind::InitModule => T::InitModule,
            Kind::FinitModule => T::FinitModule,
            Kind::MemfdCreate => T::MemfdCreate,
            Kind::Mount => T::Mount,
            Kind::Unlink => T::Unlink,
            Kind::Unlinkat => T::Unlinkat,
            Kind::Rename => T::Rename,
            Kind::Renameat => T::Renameat,
            Kind::Renameat2 => T::Renameat2,
            Kind::Symlink => T::Symlink,
            Kind::Symlinkat => T::Symlinkat,
            Kind::Link => T::Link,
            Kind::Linkat => T::Linkat,
            Kind::Dup => T::Dup,
            Kind::Dup2 => T::Dup2,
            Kind::Dup3 => T::Dup3,
            Kind::Socket => T::Socket,
            Kind::Chmod => T::Chmod,
            Kind::Fchmod => T::Fchmod,
            // Falco's rules name chmod, fchmod and fchmodat; fchmodat2 (6.6)
            // does the same with flags, and must not be a way around them.
            Kind::Fchmodat | Kind::Fchmodat2 => T::Fchmodat,
            Kind::Mkdir => T::Mkdir,
            Kind::Mkdirat => T::Mkdirat,
            Kind::Rmdir => T::Rmdir,
            Kind::Setns => T::Setns,
            Kind::Unshare => T::Unshare,
            Kind::Bpf => T::Bpf,
            Kind::Userfaultfd => T::Userfaultfd,
            Kind::Prctl => T::Prctl,
            Kind::Setsid => T::Setsid,
            Kind::Setpgid => T::Setpgid,
            Kind::Listen => T::Listen,
            Kind::Sendto => T::Sendto,
            Kind::Sendmsg => T::Sendmsg,
            Kind::Recvfrom => T::Recvfrom,
            Kind::Recvmsg => T::Recvmsg,
        })
    }
}

/// Per-CPU counter indexes (`EA_CNT_*`) in the `ea_counters` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Counter {
    Seen = 0,
    Sent = 1,
    Lost = 2,
    FilteredOwn = 3,
    FilteredComm = 4,
    FilteredOpen = 5,
    FilteredPath = 6,
    Killed = 7,
    /// Internal to the kernel side (losses not yet sent as a loss record).
    #[cfg(test)]
    LostUnreported = 8,
    FilteredCgroup = 9,
    FilteredArgs = 10,
    RefusedExec = 11,
    RefusedOpen = 12,
}

/// `EA_CNT_MAX`.
pub(crate) const COUNTER_MAX: u32 = 13;

impl Counter {
    /// The counters status shows, with their status names.
    pub(crate) const SHOWN: [(Counter, &'static str); 12] = [
        (Counter::Seen, "seen"),
        (Counter::Sent, "sent"),
        (Counter::Lost, "lost"),
        (Counter::FilteredOwn, "filtered_own"),
        (Counter::FilteredComm, "filtered_comm"),
        (Counter::FilteredOpen, "filtered_open"),
        (Counter::FilteredPath, "filtered_path"),
        (Counter::FilteredCgroup, "filtered_cgroup"),
        (Counter::FilteredArgs, "filtered_args"),
        (Counter::Killed, "killed"),
        (Counter::RefusedExec, "refused_exec"),
        (Counter::RefusedOpen, "refused_open"),
    ];
}

// ---- layout mirrors (sizes and offsets asserted against abi.h) -------------

/// `struct ea_header`.
#[repr(C)]
#[allow(dead_code)]
struct RawHeader {
    ty: u16,
    flags: u16,
    size: u32,
    ts_boot_ns: u64,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    loginuid: u32,
    cgroup_id: u64,
    res: i64,
    comm: [u8; COMM_LEN],
}

/// `struct ea_str`.
#[repr(C)]
#[allow(dead_code)]
struct RawStr {
    off: u16,
    len: u16,
}

/// `struct ea_sock`.
#[repr(C)]
#[allow(dead_code)]
struct RawSock {
    family: u16,
    ty: u16,
    proto: u16,
    lport: u16,
    rport: u16,
    state: u8,
    _pad0: u8,
    _pad: [u16; 2],
    laddr: [u8; 16],
    raddr: [u8; 16],
}

/// `struct ea_record`.
#[repr(C)]
#[allow(dead_code)]
struct RawRecord {
    h: RawHeader,
    arg: [i64; NARG],
    str: [RawStr; NSTR],
    sock: RawSock,
}

/// `struct ea_lpm_key`.
#[repr(C)]
#[allow(dead_code)]
struct RawLpmKey {
    prefixlen: u32,
    data: [u8; LPM_DATA],
}

/// `struct ea_inode_key`: a key of `ea_deny_open_inodes` (rule 0) and
/// `ea_deny_open_allow`. `dev` is the kernel's internal device number
/// (`major << 20 | minor`), not `stat`'s encoding: see [`kernel_dev`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InodeKey {
    pub(crate) dev: u32,
    pub(crate) rule: u32,
    pub(crate) ino: u64,
}

// SAFETY: repr(C), integers only, no padding (16 bytes, asserted below).
unsafe impl aya::Pod for InodeKey {}

/// `struct ea_deny_open_rule`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DenyOpenRule {
    /// `ACCESS_*` bits the rule refuses.
    pub(crate) access: u32,
    /// 1 when the rule lets some executables through.
    pub(crate) has_allow: u32,
}

// SAFETY: repr(C), two u32, no padding (8 bytes, asserted below).
unsafe impl aya::Pod for DenyOpenRule {}

/// The kernel's `dev_t` (`MKDEV`: major in the top 12 bits, minor in the
/// low 20) for a device number as `stat` reports it.
pub(crate) fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

// The same numbers abi.h asserts with _Static_assert.
const _: () = {
    assert!(size_of::<RawHeader>() == 72);
    assert!(offset_of!(RawHeader, ts_boot_ns) == 8);
    assert!(offset_of!(RawHeader, cgroup_id) == 40);
    assert!(offset_of!(RawHeader, res) == 48);
    assert!(offset_of!(RawHeader, comm) == 56);
    assert!(size_of::<RawSock>() == 48);
    assert!(offset_of!(RawSock, state) == 10);
    assert!(offset_of!(RawSock, laddr) == 16);
    assert!(size_of::<RawRecord>() == 280);
    assert!(offset_of!(RawRecord, arg) == 72);
    assert!(offset_of!(RawRecord, str) == 200);
    assert!(offset_of!(RawRecord, sock) == 232);
    assert!(size_of::<RawLpmKey>() == 4 + LPM_DATA);
    assert!(size_of::<InodeKey>() == 16);
    assert!(offset_of!(InodeKey, ino) == 8);
    assert!(size_of::<DenyOpenRule>() == 8);
};

/// Bytes of a record's fixed part; its string data follows.
pub(crate) const RECORD_FIXED: usize = size_of::<RawRecord>();

// ---- decoding ---------------------------------------------------------------

/// Why raw bytes were not a record. The bytes come from our own kernel
/// program, so any of these means a bug or a mismatched object; the record is
/// skipped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {RECORD_FIXED}-byte fixed part")]
    Short { got: usize },
    #[error("record says it is {claimed} bytes but {got} arrived")]
    BadSize { claimed: usize, got: usize },
    #[error("unknown event type id {0}")]
    UnknownType(u16),
}

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: Kind,
    pub(crate) flags: u16,
    pub(crate) ts_boot_ns: u64,
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) ppid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `None` when the kernel reports it unset (`(uid_t)-1`).
    pub(crate) loginuid: Option<u32>,
    pub(crate) cgroup_id: u64,
    pub(crate) res: i64,
    pub(crate) comm: [u8; COMM_LEN],
}

impl Header {
    /// The command name, up to its first NUL.
    pub(crate) fn comm(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }
}

/// The socket behind an fd, as the kernel saw it. `family` 0 = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sock {
    pub family: u16,
    pub ty: u16,
    pub proto: u16,
    pub lport: u16,
    pub rport: u16,
    /// The kernel's `sk_state` (1 = established, also for a connected UDP socket).
    pub state: u8,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
}

/// One decoded record, borrowing its string data from the ring buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) h: Header,
    pub(crate) arg: [i64; NARG],
    strs: [(u16, u16); NSTR],
    pub(crate) sock: Sock,
    data: &'a [u8],
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

impl<'a> Record<'a> {
    /// Decode `buf` after checking its length against the fixed part and
    /// the size the record claims.
    pub(crate) fn parse(buf: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        if buf.len() < RECORD_FIXED {
            return Err(DecodeError::Short { got: buf.len() });
        }
        // From here every fixed offset below RECORD_FIXED is in bounds.
        let h = offset_of!(RawRecord, h);
        let size = u32_at(buf, h + offset_of!(RawHeader, size)) as usize;
        if size < RECORD_FIXED || size > buf.len() {
            return Err(DecodeError::BadSize {
                claimed: size,
                got: buf.len(),
            });
        }
        let id = u16_at(buf, h + offset_of!(RawHeader, ty));
        let kind = Kind::from_id(id).ok_or(DecodeError::UnknownType(id))?;
        let mut comm = [0u8; COMM_LEN];
        let c = h + offset_of!(RawHeader, comm);
        comm.copy_from_slice(&buf[c..c + COMM_LEN]);
        let loginuid = u32_at(buf, h + offset_of!(RawHeader, loginuid));
        let header = Header {
            kind,
            flags: u16_at(buf, h + offset_of!(RawHeader, flags)),
            ts_boot_ns: u64_at(buf, h + offset_of!(RawHeader, ts_boot_ns)),
            pid: u32_at(buf, h + offset_of!(RawHeader, pid)),
            tid: u32_at(buf, h + offset_of!(RawHeader, tid)),
            ppid: u32_at(buf, h + offset_of!(RawHeader, ppid)),
            uid: u32_at(buf, h + offset_of!(RawHeader, uid)),
            gid: u32_at(buf, h + offset_of!(RawHeader, gid)),
            loginuid: (loginuid != u32::MAX).then_some(loginuid),
            cgroup_id: u64_at(buf, h + offset_of!(RawHeader, cgroup_id)),
            res: u64_at(buf, h + offset_of!(RawHeader, res)) as i64,
            comm,
        };
        let a = offset_of!(RawRecord, arg);
        let arg = std::array::from_fn(|i| u64_at(buf, a + 8 * i) as i64);
        let st = offset_of!(RawRecord, str);
        let strs = std::array::from_fn(|i| {
            let o = st + i * size_of::<RawStr>();
            (
                u16_at(buf, o + offset_of!(RawStr, off)),
                u16_at(buf, o + offset_of!(RawStr, len)),
            )
        });
        let s = offset_of!(RawRecord, sock);
        let mut laddr = [0u8; 16];
        let mut raddr = [0u8; 16];
        let l = s + offset_of!(RawSock, laddr);
        let r = s + offset_of!(RawSock, raddr);
        laddr.copy_from_slice(&buf[l..l + 16]);
        raddr.copy_from_slice(&buf[r..r + 16]);
        let sock = Sock {
            family: u16_at(buf, s + offset_of!(RawSock, family)),
            ty: u16_at(buf, s + offset_of!(RawSock, ty)),
            proto: u16_at(buf, s + offset_of!(RawSock, proto)),
            lport: u16_at(buf, s + offset_of!(RawSock, lport)),
            rport: u16_at(buf, s + offset_of!(RawSock, rport)),
            state: buf[s + offset_of!(RawSock, state)],
            laddr,
            raddr,
        };
        Ok(Record {
            h: header,
            arg,
            strs,
            sock,
            data: &buf[RECORD_FIXED..size],
        })
    }

    /// String slot `i` as raw bytes; `None` when empty, absent, or (a kernel
    /// bug) outside the record's data.
    pub(crate) fn bytes(&self, i: usize) -> Option<&'a [u8]> {
        let (off, len) = *self.strs.get(i)?;
        let (off, len) = (usize::from(off), usize::from(len));
        if len == 0 {
            return None;
        }
        self.data.get(off..off.checked_add(len)?)
    }

    /// String slot `i` as text (invalid UTF-8 replaced).
    pub(crate) fn string(&self, i: usize) -> Option<String> {
        self.bytes(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// String slot `i` is not complete: the kernel cut it at its bound
    /// (it holds the string's start), or its path walk stopped after
    /// `EA_WALK_DEPTH` steps (it holds the path's last components), or
    /// there was no room left for it at all (it is empty).
    pub(crate) fn cut(&self, i: usize) -> bool {
        i < NSTR && self.h.flags & (flags::STR_CUT << i) != 0
    }

    pub(crate) fn killed(&self) -> bool {
        self.h.flags & flags::KILLED != 0
    }
}

/// Build raw record bytes the way the kernel does. For tests and the
/// decoding benchmark; the agent itself only reads records.
#[derive(Debug, Clone)]
pub struct RecordBuilder {
    fixed: Vec<u8>,
    data: Vec<u8>,
}

impl RecordBuilder {
    pub fn new(kind: Kind) -> Self {
        let mut fixed = vec![0u8; RECORD_FIXED];
        let h = offset_of!(RawRecord, h);
        fixed[h + offset_of!(RawHeader, ty)..][..2].copy_from_slice(&(kind as u16).to_ne_bytes());
        fixed[h + offset_of!(RawHeader, loginuid)..][..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        RecordBuilder {
            fixed,
            data: Vec::new(),
        }
    }

    fn put(&mut self, off: usize, bytes: &[u8]) -> &mut Self {
        self.fixed[off..off + bytes.len()].copy_from_slice(bytes);
        self
    }

    pub fn task(&mut self, pid: u32, tid: u32, ppid: u32, comm: &str) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        let mut c = [0u8; COMM_LEN];
        let n = comm.len().min(COMM_LEN - 1);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        self.put(h + offset_of!(RawHeader, pid), &pid.to_ne_bytes())
            .put(h + offset_of!(RawHeader, tid), &tid.to_ne_bytes())
            .put(h + offset_of!(RawHeader, ppid), &ppid.to_ne_bytes())
            .put(h + offset_of!(RawHeader, comm), &c)
    }

    pub fn creds(&mut self, uid: u32, gid: u32, loginuid: u32) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        self.put(h + offset_of!(RawHeader, uid), &uid.to_ne_bytes())
            .put(h + offset_of!(RawHeader, gid), &gid.to_ne_bytes())
            .put(h + offset_of!(RawHeader, loginuid), &loginuid.to_ne_bytes())
    }

    pub fn time(&mut self, ts_boot_ns: u64) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        self.put(
            h + offset_of!(RawHeader, ts_boot_ns),
            &ts_boot_ns.to_ne_bytes(),
        )
    }

    pub(crate) fn cgroup(&mut self, id: u64) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        self.put(h + offset_of!(RawHeader, cgroup_id), &id.to_ne_bytes())
    }

    #[cfg(test)]
    pub(crate) fn flags(&mut self, flags: u16) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        self.put(h + offset_of!(RawHeader, flags), &flags.to_ne_bytes())
    }

    pub fn res(&mut self, res: i64) -> &mut Self {
        let h = offset_of!(RawRecord, h);
        self.put(h + offset_of!(RawHeader, res), &res.to_ne_bytes())
    }

    pub fn arg(&mut self, i: usize, v: i64) -> &mut Self {
        self.put(offset_of!(RawRecord, arg) + 8 * i, &v.to_ne_bytes())
    }

    /// String slot `i` (the kernel writes a NUL after each string).
    pub fn string(&mut self, i: usize, bytes: &[u8]) -> &mut Self {
        let off = self.data.len() as u16;
        self.data.extend_from_slice(bytes);
        self.data.push(0);
        let o = offset_of!(RawRecord, str) + i * size_of::<RawStr>();
        self.put(o, &off.to_ne_bytes())
            .put(o + 2, &(bytes.len() as u16).to_ne_bytes())
    }

    pub fn sock(&mut self, sock: &Sock) -> &mut Self {
        let s = offset_of!(RawRecord, sock);
        self.put(s + offset_of!(RawSock, family), &sock.family.to_ne_bytes())
            .put(s + offset_of!(RawSock, ty), &sock.ty.to_ne_bytes())
            .put(s + offset_of!(RawSock, proto), &sock.proto.to_ne_bytes())
            .put(s + offset_of!(RawSock, lport), &sock.lport.to_ne_bytes())
            .put(s + offset_of!(RawSock, rport), &sock.rport.to_ne_bytes())
            .put(s + offset_of!(RawSock, state), &[sock.state])
            .put(s + offset_of!(RawSock, laddr), &sock.laddr)
            .put(s + offset_of!(RawSock, raddr), &sock.raddr)
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = self.fixed.clone();
        out.extend_from_slice(&self.data);
        let size = out.len() as u32;
        let h = offset_of!(RawRecord, h);
        out[h + offset_of!(RawHeader, size)..][..4].copy_from_slice(&size.to_ne_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABI_H: &str = include_str!("../../../ebpf/abi.h");

    /// `#define NAME VALUE` lines of abi.h whose name starts with `prefix`.
    fn defines(prefix: &str) -> Vec<(String, u64)> {
        ABI_H
            .lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let name = it.next()?;
                let value = it.next()?;
                let value = value.trim_end_matches("ULL");
                let v = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                    None => value.parse().ok()?,
                };
                name.starts_with(prefix).then(|| (name.to_string(), v))
            })
            .collect()
    }

    #[test]
    fn every_event_id_in_abi_h_matches_the_rust_kind() {
        let ids = defines("EA_EVT_");
        assert_eq!(ids.len(), Kind::ALL.len() + 1, "EA_EVT_* plus EA_EVT_MAX");
        for (name, v) in ids {
            if name == "EA_EVT_MAX" {
                assert_eq!(v, u64::from(KIND_MAX));
                continue;
            }
            let kind = Kind::from_id(v as u16).unwrap_or_else(|| panic!("{name}={v} has no Kind"));
            let rust = format!("{kind:?}").to_uppercase();
            let c = name.trim_start_matches("EA_EVT_").replace('_', "");
            assert_eq!(c, rust, "{name} = {v}");
        }
    }

    #[test]
    fn every_counter_and_constant_in_abi_h_matches() {
        let counters = defines("EA_CNT_");
        let rust = [
            ("SEEN", Counter::Seen),
            ("SENT", Counter::Sent),
            ("LOST", Counter::Lost),
            ("FILTERED_OWN", Counter::FilteredOwn),
            ("FILTERED_COMM", Counter::FilteredComm),
            ("FILTERED_OPEN", Counter::FilteredOpen),
            ("FILTERED_PATH", Counter::FilteredPath),
            ("KILLED", Counter::Killed),
            ("LOST_UNREPORTED", Counter::LostUnreported),
            ("FILTERED_CGROUP", Counter::FilteredCgroup),
            ("FILTERED_ARGS", Counter::FilteredArgs),
            ("REFUSED_EXEC", Counter::RefusedExec),
            ("REFUSED_OPEN", Counter::RefusedOpen),
        ];
        for (name, v) in counters {
            let short = name.trim_start_matches("EA_CNT_");
            if short == "MAX" {
                assert_eq!(v, u64::from(COUNTER_MAX));
                continue;
            }
            let c = rust
                .iter()
                .find(|(n, _)| *n == short)
                .unwrap_or_else(|| panic!("{name} has no Counter"));
            assert_eq!(c.1 as u64, v, "{name}");
        }
        let all = defines("EA_");
        let get = |n: &str| all.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("EA_ABI_VERSION"), Some(u64::from(ABI_VERSION)));
        assert_eq!(get("EA_COMM_LEN"), Some(COMM_LEN as u64));
        assert_eq!(get("EA_NSTR"), Some(NSTR as u64));
        assert_eq!(get("EA_NARG"), Some(NARG as u64));
        assert_eq!(get("EA_LPM_DATA"), Some(LPM_DATA as u64));
        assert_eq!(get("EA_SYSCALL_MAX"), Some(u64::from(SYSCALL_MAX)));
        assert_eq!(get("EA_DNS_MAX"), Some(DNS_MAX as u64));
        assert_eq!(get("EA_F_TRUNCATED"), Some(u64::from(flags::TRUNCATED)));
        assert_eq!(get("EA_F_KILLED"), Some(u64::from(flags::KILLED)));
        assert_eq!(get("EA_F_STR_CUT"), Some(u64::from(flags::STR_CUT)));
        assert_eq!(get("EA_F_REFUSED"), Some(u64::from(flags::REFUSED)));
        assert_eq!(get("EA_CFG_DENY_OPEN"), Some(u64::from(CFG_DENY_OPEN)));
        assert_eq!(get("EA_LIST_EXEC"), Some(LIST_EXEC as u64));
        assert_eq!(get("EA_LIST_OPEN"), Some(LIST_OPEN as u64));
        assert_eq!(get("EA_ACCESS_READ"), Some(u64::from(ACCESS_READ)));
        assert_eq!(get("EA_ACCESS_WRITE"), Some(u64::from(ACCESS_WRITE)));
        assert_eq!(get("EA_DENY_OPEN_RULES"), Some(DENY_OPEN_RULES as u64));
        assert_eq!(get("EA_CFG_DENY_EXEC"), Some(u64::from(CFG_DENY_EXEC)));
        assert_eq!(
            get("EA_CFG_EXCLUDE_CGROUPS"),
            Some(u64::from(CFG_EXCLUDE_CGROUPS))
        );
        assert_eq!(get("EA_POLL_MS"), Some(POLL_MS));
        assert_eq!(get("EA_DENY_SEED_PATH"), Some(DENY_SEED_PATH));
        assert_eq!(get("EA_DENY_SEED_NAME"), Some(DENY_SEED_NAME));
        assert_eq!(get("EA_FNV_PRIME"), Some(FNV_PRIME));
        assert_eq!(
            get("EA_EXE_UPPER_LAYER"),
            Some(crate::event::exe_flags::EXE_UPPER_LAYER)
        );
        assert_eq!(
            get("EA_EXE_FROM_MEMFD"),
            Some(crate::event::exe_flags::EXE_FROM_MEMFD)
        );
        assert_eq!(
            get("EA_EXE_LOWER_LAYER"),
            Some(crate::event::exe_flags::EXE_LOWER_LAYER)
        );
    }

    #[test]
    fn a_built_record_decodes_to_the_same_fields() {
        let raw = RecordBuilder::new(Kind::Openat)
            .task(42, 43, 1, "cat")
            .creds(1000, 100, 1000)
            .time(123)
            .cgroup(77)
            .res(3)
            .arg(0, libc::O_WRONLY as i64)
            .string(0, b"/etc/passwd")
            .build();
        let r = Record::parse(&raw).unwrap();
        assert_eq!(r.h.kind, Kind::Openat);
        assert_eq!((r.h.pid, r.h.tid, r.h.ppid), (42, 43, 1));
        assert_eq!(r.h.comm(), b"cat");
        assert_eq!(r.h.loginuid, Some(1000));
        assert_eq!(r.h.cgroup_id, 77);
        assert_eq!(r.h.res, 3);
        assert_eq!(r.arg[0], libc::O_WRONLY as i64);
        assert_eq!(r.string(0).as_deref(), Some("/etc/passwd"));
        assert_eq!(r.bytes(1), None);
    }

    #[test]
    fn short_oversized_and_unknown_records_are_refused() {
        let raw = RecordBuilder::new(Kind::Socket).build();
        assert!(matches!(
            Record::parse(&raw[..100]),
            Err(DecodeError::Short { got: 100 })
        ));
        let mut claims_more = raw.clone();
        claims_more[4..8].copy_from_slice(&500u32.to_ne_bytes());
        assert!(matches!(
            Record::parse(&claims_more),
            Err(DecodeError::BadSize { claimed: 500, .. })
        ));
        let mut unknown = raw.clone();
        unknown[0..2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(Record::parse(&unknown), Err(DecodeError::UnknownType(999)));
    }

    #[test]
    fn a_string_slot_pointing_outside_the_data_is_absent_not_a_panic() {
        let mut raw = RecordBuilder::new(Kind::Unlink)
            .string(0, b"/tmp/x")
            .build();
        let o = offset_of!(RawRecord, str);
        raw[o..o + 2].copy_from_slice(&60000u16.to_ne_bytes());
        let r = Record::parse(&raw).unwrap();
        assert_eq!(r.bytes(0), None);
    }

    #[test]
    fn kernel_device_numbers_put_the_major_above_20_bits_of_minor() {
        // stat's encoding of 8:1 (sda1) and of 259:65536 (a large minor).
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 65536)), (259 << 20) | 65536);
    }

    #[test]
    fn the_deny_hash_is_fnv1a() {
        // FNV-1a 64 of "a" from the standard offset basis.
        assert_eq!(fnv1a(DENY_SEED_PATH, b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
