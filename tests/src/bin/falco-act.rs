//! `falco-act ACTION TOKEN [ARGS..]`: one thing an attacker does with raw
//! system calls, for the Falco behaviour test (`tests/tests/falco_corpus.rs`).
//! The token is only carried in the command line, so that the alert the
//! action causes names it. Copies of this binary under other names play
//! programs that rules single out by name. Exit 0 when the action was
//! attempted (a refused call is still the behaviour), 64 on bad usage.

use std::ffi::CString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(action), Some(token)) = (args.first(), args.get(1)) else {
        eprintln!("usage: falco-act ACTION TOKEN [ARGS..]");
        return ExitCode::from(64);
    };
    let rest = &args[2..];
    match action.as_str() {
        "traceme" => traceme(),
        "attach" => attach(),
        "peek" => peek(),
        "memfd-exec" => memfd(true, token),
        "memfd-only" => memfd(false, token),
        "setuid-root" => setuid_as_nobody(0),
        "setuid-self" => setuid_as_nobody(65534),
        "connect" => return connect(rest),
        "setns" => setns_own_net(),
        "bpf-load" => bpf_prog_load(),
        "userfaultfd-nobody" => userfaultfd(Some(65534)),
        "userfaultfd-root" => userfaultfd(None),
        _ => {
            eprintln!("falco-act: unknown action {action}");
            return ExitCode::from(64);
        }
    }
    ExitCode::SUCCESS
}

/// An anti-debugging trick: ask to be traced by the parent.
fn traceme() {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
}

/// A harmless ptrace request that is neither an attach nor an injection
/// (it fails: pid 1 is not traced by us).
fn peek() {
    // SAFETY: PEEKDATA on a process we do not trace fails with ESRCH; the
    // address is never dereferenced by us.
    unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, 1, 0, 0) };
}

/// Attach to a process of our own (a forked child), as a debugger or an
/// injector would, then let it go.
fn attach() {
    // SAFETY: the child only pauses until killed; no memory is shared in use.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: pause and _exit are async-signal-safe.
        unsafe {
            libc::pause();
            libc::_exit(0)
        };
    }
    // SAFETY: ptrace and waitpid on our own child with a valid out pointer.
    unsafe {
        libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Copy `/bin/true` into an anonymous memory file and, if `exec`, run it
/// from there (with `token` as its argument): a program that never touches
/// the disk.
fn memfd(exec: bool, token: &str) {
    let name = CString::new("payload").unwrap();
    // SAFETY: a valid C string; the fd is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return;
    }
    let bytes = std::fs::read("/bin/true").unwrap_or_default();
    // SAFETY: writing our own buffer to our own fd.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if exec {
        let argv0 = CString::new("payload").unwrap();
        let argv1 = CString::new(token).unwrap_or_default();
        let argv = [
            argv0.as_ptr().cast_mut(),
            argv1.as_ptr().cast_mut(),
            std::ptr::null_mut(),
        ];
        let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
        let empty = CString::new("").unwrap();
        // SAFETY: null-terminated argv/envp of valid C strings; on success
        // this process is replaced.
        unsafe {
            libc::execveat(
                fd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
    }
}

/// Become `nobody`, then call setuid(`target`): from an unprivileged user
/// that is an attempt to change identity (it fails for root).
fn setuid_as_nobody(target: u32) {
    // SAFETY: plain id changes of this process.
    unsafe {
        libc::setgid(65534);
        libc::setuid(65534);
        libc::setuid(target);
    }
}

/// `connect ADDR PORT tcp|udp`: one connection attempt.
fn connect(rest: &[String]) -> ExitCode {
    let [addr, port, proto, ..] = rest else {
        eprintln!("usage: falco-act connect TOKEN ADDR PORT tcp|udp");
        return ExitCode::from(64);
    };
    let Ok(target) = format!("{addr}:{port}").parse::<std::net::SocketAddr>() else {
        return ExitCode::from(64);
    };
    let timeout = std::time::Duration::from_secs(2);
    match proto.as_str() {
        "udp" => {
            if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") {
                let _ = s.connect(target);
                let _ = s.send(b"x");
            }
        }
        _ => {
            let _ = std::net::TcpStream::connect_timeout(&target, timeout);
        }
    }
    ExitCode::SUCCESS
}

/// Join a network namespace (our own: the call is what rules watch, and
/// joining the namespace we are in changes nothing).
fn setns_own_net() {
    let Ok(ns) = std::fs::File::open("/proc/self/ns/net") else {
        return;
    };
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd we own; CLONE_NEWNET names its type.
    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
}

/// Load the smallest valid eBPF program (a socket filter returning 0) and
/// close it again: what a loader of a rootkit or a tracer does first.
fn bpf_prog_load() {
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = CString::new("GPL").unwrap();
    // The first fields of union bpf_attr for BPF_PROG_LOAD: prog_type,
    // insn_cnt, insns, license (then zeroes up to the size we pass).
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        rest: [u64; 13],
    }
    let attr = ProgLoad {
        prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        rest: [0; 13],
    };
    // SAFETY: attr points to a live, initialised buffer of the size passed;
    // the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, // BPF_PROG_LOAD
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>() as u32,
        )
    };
    if fd >= 0 {
        // SAFETY: the fd the kernel just gave us.
        unsafe { libc::close(fd as i32) };
    }
}

/// userfaultfd(UFFD_USER_MODE_ONLY), as `nobody` when `as_user` is given:
/// page-fault handling in user space, a building block of kernel exploits
/// (it succeeds unprivileged for user-mode faults).
fn userfaultfd(as_user: Option<u32>) {
    const UFFD_USER_MODE_ONLY: i32 = 1;
    if let Some(uid) = as_user {
        // SAFETY: plain id changes of this process.
        unsafe {
            libc::setgid(uid);
            libc::setuid(uid);
        }
    }
    // SAFETY: userfaultfd takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if fd >= 0 {
        // SAFETY: the fd the kernel just gave us.
        unsafe { libc::close(fd as i32) };
    }
}
