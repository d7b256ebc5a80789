//! Rendering raw values the way Falco prints them.
//!
//! Events hold raw numbers (flags, errno results, ptrace requests, socket
//! families, capability masks); these functions turn them into Falco's text
//! (`O_WRONLY|O_TRUNC`, `ENOENT`, `PTRACE_ATTACH`, `AF_PACKET`,
//! `CAP_SYS_ADMIN`) when a field is read, so the sensor never formats
//! strings for events no rule reads. Pure functions; never reads anything
//! but its arguments.

use std::borrow::Cow;

use super::model::{EventType, exe_flags};

/// `evt.res`: `SUCCESS` for results >= 0, the errno name otherwise.
pub(crate) fn render_res(res: i64) -> Cow<'static, str> {
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

/// Open flags after the access mode, in the order Falco prints them.
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

/// How `evt.arg.flags` prints on an event type (a column of the event-type
/// table in [`super::model`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagNames {
    /// No names: the number, in decimal.
    Numeric,
    /// Open flags: the access mode (`O_RDONLY`, ...) then the other bits.
    Open,
    /// `NAME|NAME|0x..` from this table of bits; bits without a name print
    /// as one hex number.
    Named(&'static [(u64, &'static str)]),
}

/// `evt.arg.flags` on execve/execveat.
pub(crate) const EXEC_FLAGS: &[(u64, &str)] = &[
    (exe_flags::EXE_WRITABLE, "EXE_WRITABLE"),
    (exe_flags::EXE_UPPER_LAYER, "EXE_UPPER_LAYER"),
    (exe_flags::EXE_FROM_MEMFD, "EXE_FROM_MEMFD"),
    (exe_flags::EXE_LOWER_LAYER, "EXE_LOWER_LAYER"),
];

pub(crate) const MEMFD_FLAGS: &[(u64, &str)] = &[
    (1, "MFD_CLOEXEC"),
    (2, "MFD_ALLOW_SEALING"),
    (4, "MFD_HUGETLB"),
    (8, "MFD_NOEXEC_SEAL"),
    (0x10, "MFD_EXEC"),
];

pub(crate) const RENAMEAT2_FLAGS: &[(u64, &str)] = &[
    (1, "RENAME_NOREPLACE"),
    (2, "RENAME_EXCHANGE"),
    (4, "RENAME_WHITEOUT"),
];

pub(crate) const UNLINKAT_FLAGS: &[(u64, &str)] = &[(libc::AT_REMOVEDIR as u64, "AT_REMOVEDIR")];

pub(crate) const DUP3_FLAGS: &[(u64, &str)] = &[(libc::O_CLOEXEC as u64, "O_CLOEXEC")];

// `as u64`: the MS_* constants are `c_ulong`, 32 bits on 32-bit ARM.
#[allow(clippy::unnecessary_cast)]
pub(crate) const MOUNT_FLAGS: &[(u64, &str)] = &[
    (libc::MS_RDONLY as u64, "MS_RDONLY"),
    (libc::MS_NOSUID as u64, "MS_NOSUID"),
    (libc::MS_NODEV as u64, "MS_NODEV"),
    (libc::MS_NOEXEC as u64, "MS_NOEXEC"),
    (libc::MS_REMOUNT as u64, "MS_REMOUNT"),
    (libc::MS_BIND as u64, "MS_BIND"),
    (libc::MS_MOVE as u64, "MS_MOVE"),
    (libc::MS_REC as u64, "MS_REC"),
    (libc::MS_PRIVATE as u64, "MS_PRIVATE"),
    (libc::MS_SHARED as u64, "MS_SHARED"),
];

pub(crate) const FCHMODAT_FLAGS: &[(u64, &str)] = &[
    (libc::AT_SYMLINK_NOFOLLOW as u64, "AT_SYMLINK_NOFOLLOW"),
    (libc::AT_EMPTY_PATH as u64, "AT_EMPTY_PATH"),
];

pub(crate) const USERFAULTFD_FLAGS: &[(u64, &str)] = &[
    (1, "UFFD_USER_MODE_ONLY"),
    (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
    (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
];

/// chmod modes as Falco names their bits, in Falco's order.
const CHMOD_MODE: &[(u64, &str)] = &[
    (0o1, "S_IXOTH"),
    (0o2, "S_IWOTH"),
    (0o4, "S_IROTH"),
    (0o10, "S_IXGRP"),
    (0o20, "S_IWGRP"),
    (0o40, "S_IRGRP"),
    (0o100, "S_IXUSR"),
    (0o200, "S_IWUSR"),
    (0o400, "S_IRUSR"),
    (0o1000, "S_ISVTX"),
    (0o2000, "S_ISGID"),
    (0o4000, "S_ISUID"),
];

/// `evt.arg.mode`: chmod's mode by Falco's bit names (`S_ISUID|...`),
/// open's and mkdir's in octal.
pub(crate) fn render_mode(ty: EventType, mode: u32) -> String {
    match ty {
        EventType::Chmod | EventType::Fchmod | EventType::Fchmodat => {
            render_bits(u64::from(mode), CHMOD_MODE)
        }
        _ => format!("0{mode:o}"),
    }
}

/// bpf() commands by name, the number for the rest.
pub(crate) fn bpf_cmd_name(cmd: u32) -> Cow<'static, str> {
    const NAMES: [&str; 37] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    match NAMES.get(cmd as usize) {
        Some(n) => Cow::Borrowed(n),
        None => Cow::Owned(cmd.to_string()),
    }
}

/// prctl() options by name (those the sensor reports), the number for the rest.
pub(crate) fn prctl_option_name(option: u32) -> Cow<'static, str> {
    Cow::Borrowed(match option {
        4 => "PR_SET_DUMPABLE",
        8 => "PR_SET_KEEPCAPS",
        15 => "PR_SET_NAME",
        22 => "PR_SET_SECCOMP",
        24 => "PR_CAPBSET_DROP",
        28 => "PR_SET_SECUREBITS",
        35 => "PR_SET_MM",
        36 => "PR_SET_CHILD_SUBREAPER",
        38 => "PR_SET_NO_NEW_PRIVS",
        47 => "PR_CAP_AMBIENT",
        0x5961_6d61 => "PR_SET_PTRACER",
        other => return Cow::Owned(other.to_string()),
    })
}

/// setns's namespace type (`CLONE_NEW*`).
pub(crate) fn render_nstype(nstype: u64) -> String {
    render_bits(nstype, CLONE_FLAGS)
}

/// clone/clone3/fork/vfork.
pub(crate) const CLONE_FLAGS: &[(u64, &str)] = &[
    (libc::CLONE_VM as u64, "CLONE_VM"),
    (libc::CLONE_FS as u64, "CLONE_FS"),
    (libc::CLONE_FILES as u64, "CLONE_FILES"),
    (libc::CLONE_SIGHAND as u64, "CLONE_SIGHAND"),
    (libc::CLONE_PTRACE as u64, "CLONE_PTRACE"),
    (libc::CLONE_VFORK as u64, "CLONE_VFORK"),
    (libc::CLONE_PARENT as u64, "CLONE_PARENT"),
    (libc::CLONE_THREAD as u64, "CLONE_THREAD"),
    (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
    (libc::CLONE_SYSVSEM as u64, "CLONE_SYSVSEM"),
    (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
    (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
    (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
    (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
];

/// `evt.arg.flags` as Falco prints it on an event of type `ty`.
pub(crate) fn render_flags(ty: EventType, flags: u64) -> Cow<'static, str> {
    let s = match ty.flag_names() {
        FlagNames::Numeric => format!("{flags}"),
        FlagNames::Open => {
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
        FlagNames::Named(table) => render_bits(flags, table),
    };
    Cow::Owned(s)
}

/// Falco's names for ptrace requests.
pub(crate) fn ptrace_request_name(r: u64) -> &'static str {
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
pub(crate) fn af_name(family: u32) -> &'static str {
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

/// Falco's names for socket types.
pub(crate) fn sock_type_name(t: u32) -> &'static str {
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

/// A capability mask as Falco prints it: names, space separated.
pub(crate) fn render_caps(mask: u64) -> String {
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

    #[test]
    fn capabilities_render_by_name() {
        assert_eq!(
            render_caps((1 << 21) | (1 << 16)),
            "CAP_SYS_MODULE CAP_SYS_ADMIN"
        );
    }

    #[test]
    fn flags_render_by_the_event_types_table() {
        assert_eq!(
            render_flags(EventType::Openat, (libc::O_WRONLY | libc::O_TRUNC) as u64),
            "O_WRONLY|O_TRUNC"
        );
        assert_eq!(render_flags(EventType::Openat, 0), "O_RDONLY");
        assert_eq!(
            render_flags(EventType::Execve, exe_flags::EXE_UPPER_LAYER | 0x100),
            "EXE_UPPER_LAYER|0x100"
        );
        assert_eq!(
            render_flags(EventType::Clone, libc::CLONE_NEWUSER as u64),
            "CLONE_NEWUSER"
        );
        assert_eq!(render_flags(EventType::Dup2, 5), "5");
    }
}
