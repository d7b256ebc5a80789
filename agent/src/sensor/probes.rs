//! The probe table: every hook the sensor can attach, whether it is
//! required, the oldest kernel that has it, and the architectures that have
//! its syscall.
//!
//! Owns only the table (data). `loader.rs` walks it: a required probe that
//! does not attach stops the sensor with a clear error; an optional one is
//! reported missing in status and the sensor runs degraded; a row whose
//! syscall this architecture does not have is skipped (not missing).

use super::abi::Kind;

/// How a probe attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// `raw_tracepoint/<tp>` running program `prog`.
    RawTracepoint {
        prog: &'static str,
        tp: &'static str,
    },
    /// `syscalls/sys_enter_<name>` runs `ea_sys_enter`; `syscalls/sys_exit_<name>`
    /// runs `exit` (none for syscalls whose record the sched hooks send).
    /// `nr` is this architecture's syscall number, `None` where it has none.
    Syscall {
        name: &'static str,
        nr: Option<i64>,
        kind: Kind,
        exit: Option<&'static str>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    pub(crate) hook: Hook,
    pub(crate) required: bool,
    /// Oldest kernel (major, minor) with the hook; shown when it is missing.
    pub(crate) min_kernel: (u32, u32),
    /// A condition without which the probe does not apply to this node
    /// (skipped, not missing).
    pub(crate) only_if: Option<fn() -> bool>,
}

impl Probe {
    /// The name status and errors use (`sched_process_exec`, `openat`).
    pub(crate) fn name(&self) -> &'static str {
        match self.hook {
            Hook::RawTracepoint { tp, .. } => tp,
            Hook::Syscall { name, .. } => name,
        }
    }
}

/// The program every hooked syscall's entry runs.
pub(crate) const ENTER_PROG: &str = "ea_sys_enter";
const FILE: Option<&str> = Some("ea_sys_exit_file");
const NET: Option<&str> = Some("ea_sys_exit_net");
const MISC: Option<&str> = Some("ea_sys_exit_misc");
const PROC: Option<&str> = Some("ea_sys_exit_proc");

/// The oldest kernel the sensor runs on: BPF ring buffers and
/// `bpf_ktime_get_boot_ns` arrived in 5.8.
pub(crate) const MIN_KERNEL: (u32, u32) = (5, 8);

const fn raw(prog: &'static str, tp: &'static str) -> Probe {
    Probe {
        hook: Hook::RawTracepoint { prog, tp },
        required: true,
        min_kernel: MIN_KERNEL,
        only_if: None,
    }
}

const fn sys(
    name: &'static str,
    nr: Option<i64>,
    kind: Kind,
    exit: Option<&'static str>,
    required: bool,
    min_kernel: (u32, u32),
) -> Probe {
    Probe {
        hook: Hook::Syscall {
            name,
            nr,
            kind,
            exit,
        },
        required,
        min_kernel,
        only_if: None,
    }
}

/// Module loading exists only on kernels built with CONFIG_MODULES (which
/// is what creates /proc/modules); without it there is nothing to watch.
fn kernel_has_modules() -> bool {
    std::path::Path::new("/proc/modules").exists()
}

const fn modules(p: Probe) -> Probe {
    Probe {
        only_if: Some(kernel_has_modules),
        ..p
    }
}

/// A syscall number on x86_64 only (the legacy calls arm64 never had).
#[cfg(target_arch = "x86_64")]
macro_rules! x86 {
    ($c:ident) => {
        Some(libc::$c as i64)
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! x86 {
    ($c:ident) => {
        None
    };
}

/// fchmodat2 (Linux 6.6) has the same number on every architecture; the
/// libc crate may not name it yet.
const SYS_FCHMODAT2: i64 = 452;

macro_rules! nr {
    ($c:ident) => {
        Some(libc::$c as i64)
    };
}

/// Every probe. The order is the attach order: syscall entries and exits
/// first, then the sched hooks (exec last, so that the first exec record
/// already finds its execveat entry hooked).
pub(crate) fn table() -> Vec<Probe> {
    const OLD: (u32, u32) = MIN_KERNEL;
    vec![
        sys("openat", nr!(SYS_openat), Kind::Openat, FILE, true, OLD),
        sys("open", x86!(SYS_open), Kind::Open, FILE, false, OLD),
        sys(
            "openat2",
            nr!(SYS_openat2),
            Kind::Openat2,
            FILE,
            false,
            (5, 6),
        ),
        sys("creat", x86!(SYS_creat), Kind::Creat, FILE, false, OLD),
        sys("connect", nr!(SYS_connect), Kind::Connect, NET, true, OLD),
        sys("accept", nr!(SYS_accept), Kind::Accept, NET, false, OLD),
        sys("accept4", nr!(SYS_accept4), Kind::Accept4, NET, true, OLD),
        sys("ptrace", nr!(SYS_ptrace), Kind::Ptrace, MISC, true, OLD),
        sys("setuid", nr!(SYS_setuid), Kind::Setuid, MISC, true, OLD),
        sys("setgid", nr!(SYS_setgid), Kind::Setgid, MISC, true, OLD),
        sys(
            "setreuid",
            nr!(SYS_setreuid),
            Kind::Setreuid,
            MISC,
            true,
            OLD,
        ),
        sys(
            "setregid",
            nr!(SYS_setregid),
            Kind::Setregid,
            MISC,
            true,
            OLD,
        ),
        sys(
            "setresuid",
            nr!(SYS_setresuid),
            Kind::Setresuid,
            MISC,
            true,
            OLD,
        ),
        sys(
            "setresgid",
            nr!(SYS_setresgid),
            Kind::Setresgid,
            MISC,
            true,
            OLD,
        ),
        // Required where the kernel loads modules at all.
        modules(sys(
            "init_module",
            nr!(SYS_init_module),
            Kind::InitModule,
            FILE,
            true,
            OLD,
        )),
        modules(sys(
            "finit_module",
            nr!(SYS_finit_module),
            Kind::FinitModule,
            FILE,
            true,
            OLD,
        )),
        sys(
            "memfd_create",
            nr!(SYS_memfd_create),
            Kind::MemfdCreate,
            FILE,
            true,
            OLD,
        ),
        sys("mount", nr!(SYS_mount), Kind::Mount, FILE, true, OLD),
        sys("unlink", x86!(SYS_unlink), Kind::Unlink, FILE, false, OLD),
        sys(
            "unlinkat",
            nr!(SYS_unlinkat),
            Kind::Unlinkat,
            FILE,
            true,
            OLD,
        ),
        sys("rename", x86!(SYS_rename), Kind::Rename, FILE, false, OLD),
        sys(
            "renameat",
            nr!(SYS_renameat),
            Kind::Renameat,
            FILE,
            false,
            OLD,
        ),
        sys(
            "renameat2",
            nr!(SYS_renameat2),
            Kind::Renameat2,
            FILE,
            true,
            OLD,
        ),
        sys(
            "symlink",
            x86!(SYS_symlink),
            Kind::Symlink,
            FILE,
            false,
            OLD,
        ),
        sys(
            "symlinkat",
            nr!(SYS_symlinkat),
            Kind::Symlinkat,
            FILE,
            true,
            OLD,
        ),
        sys("link", x86!(SYS_link), Kind::Link, FILE, false, OLD),
        sys("linkat", nr!(SYS_linkat), Kind::Linkat, FILE, true, OLD),
        sys("dup", nr!(SYS_dup), Kind::Dup, NET, true, OLD),
        sys("dup2", x86!(SYS_dup2), Kind::Dup2, NET, false, OLD),
        sys("dup3", nr!(SYS_dup3), Kind::Dup3, NET, true, OLD),
        sys("socket", nr!(SYS_socket), Kind::Socket, NET, true, OLD),
        sys("listen", nr!(SYS_listen), Kind::Listen, NET, true, OLD),
        // The data calls: the kernel sends only a new peer of a socket that
        // is not connected; the data path stays in the kernel.
        sys("sendto", nr!(SYS_sendto), Kind::Sendto, NET, true, OLD),
        sys("sendmsg", nr!(SYS_sendmsg), Kind::Sendmsg, NET, true, OLD),
        sys(
            "recvfrom",
            nr!(SYS_recvfrom),
            Kind::Recvfrom,
            NET,
            true,
            OLD,
        ),
        sys("recvmsg", nr!(SYS_recvmsg), Kind::Recvmsg, NET, true, OLD),
        sys("chmod", x86!(SYS_chmod), Kind::Chmod, FILE, false, OLD),
        sys("fchmod", nr!(SYS_fchmod), Kind::Fchmod, FILE, true, OLD),
        sys(
            "fchmodat",
            nr!(SYS_fchmodat),
            Kind::Fchmodat,
            FILE,
            true,
            OLD,
        ),
        sys(
            "fchmodat2",
            Some(SYS_FCHMODAT2),
            Kind::Fchmodat2,
            FILE,
            false,
            (6, 6),
        ),
        sys("mkdir", x86!(SYS_mkdir), Kind::Mkdir, FILE, false, OLD),
        sys("mkdirat", nr!(SYS_mkdirat), Kind::Mkdirat, FILE, true, OLD),
        sys("rmdir", x86!(SYS_rmdir), Kind::Rmdir, FILE, false, OLD),
        sys("setns", nr!(SYS_setns), Kind::Setns, PROC, true, OLD),
        sys("unshare", nr!(SYS_unshare), Kind::Unshare, PROC, true, OLD),
        // Optional: kernels without CONFIG_BPF_SYSCALL have no bpf() (nor
        // this sensor), and some builds leave out userfaultfd.
        sys("bpf", nr!(SYS_bpf), Kind::Bpf, PROC, false, OLD),
        sys(
            "userfaultfd",
            nr!(SYS_userfaultfd),
            Kind::Userfaultfd,
            PROC,
            false,
            OLD,
        ),
        sys("prctl", nr!(SYS_prctl), Kind::Prctl, PROC, true, OLD),
        sys("setsid", nr!(SYS_setsid), Kind::Setsid, PROC, true, OLD),
        sys("setpgid", nr!(SYS_setpgid), Kind::Setpgid, PROC, true, OLD),
        // A successful exec is reported by sched_process_exec; the exits
        // report the failed ones.
        sys("execve", nr!(SYS_execve), Kind::Execve, PROC, true, OLD),
        sys(
            "execveat",
            nr!(SYS_execveat),
            Kind::Execveat,
            PROC,
            true,
            OLD,
        ),
        // Entries only: sched_process_fork sends the record with the flags.
        sys("clone", nr!(SYS_clone), Kind::Clone, None, true, OLD),
        sys("clone3", nr!(SYS_clone3), Kind::Clone3, None, false, (5, 3)),
        sys("fork", x86!(SYS_fork), Kind::Fork, None, false, OLD),
        sys("vfork", x86!(SYS_vfork), Kind::Vfork, None, false, OLD),
        raw("ea_fork", "sched_process_fork"),
        raw("ea_exit", "sched_process_exit"),
        raw("ea_exec", "sched_process_exec"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syscall_kind_appears_once_and_numbers_fit_the_map() {
        let t = table();
        let mut kinds: Vec<Kind> = t
            .iter()
            .filter_map(|p| match p.hook {
                Hook::Syscall { kind, nr, .. } => {
                    if let Some(nr) = nr {
                        assert!((0..i64::from(super::super::abi::SYSCALL_MAX)).contains(&nr));
                    }
                    Some(kind)
                }
                _ => None,
            })
            .collect();
        let n = kinds.len();
        kinds.sort_by_key(|k| *k as u16);
        kinds.dedup();
        assert_eq!(kinds.len(), n);
        // Every record kind except LOSS, PROCEXIT (sched_process_exit), DNS
        // (sent from the data calls' exits) and REFUSED (the BPF-LSM hooks)
        // is tied to a syscall row.
        assert_eq!(n, Kind::ALL.len() - 4);
    }

    #[test]
    fn the_sched_hooks_are_required_and_exec_attaches_last() {
        let t = table();
        assert_eq!(t.last().unwrap().name(), "sched_process_exec");
        assert!(
            t.iter()
                .filter(|p| matches!(p.hook, Hook::RawTracepoint { .. }))
                .all(|p| p.required)
        );
    }
}
