//! `attack-act ACTION TOKEN`: one system call an attacker makes that no
//! ordinary tool makes alone, for the shipped rules' attack-matrix test
//! (`tests/tests/attack_matrix.rs`). The token is only carried in the
//! command line, so that the alert the action causes names it. Copies of
//! this binary under other names play programs that rules single out by
//! name (a debugger, a DHCP client). Exit 0 when the call was attempted (a
//! refused call is still the behaviour), 64 on bad usage.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(action), Some(_token)) = (args.first(), args.get(1)) else {
        eprintln!("usage: attack-act ACTION TOKEN");
        return ExitCode::from(64);
    };
    match action.as_str() {
        "traceme" => traceme(),
        "peek" => peek(),
        "userfaultfd" => userfaultfd(),
        "packet" => packet_socket(),
        "udp" => udp_socket(),
        _ => {
            eprintln!("attack-act: unknown action {action}");
            return ExitCode::from(64);
        }
    }
    ExitCode::SUCCESS
}

/// Anti-debugging: ask to be traced by the parent, so no debugger can attach.
fn traceme() {
    // SAFETY: PTRACE_TRACEME takes no pointers.
    unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
}

/// A ptrace request that is neither an attach nor TRACEME (it fails: pid 1
/// is not traced by us).
fn peek() {
    // SAFETY: PEEKDATA on a process we do not trace fails with ESRCH; the
    // address is never dereferenced by us.
    unsafe { libc::ptrace(libc::PTRACE_PEEKDATA, 1, 0, 0) };
}

/// Ask for a userfaultfd: page faults handled in user space, the basis of
/// many kernel race exploits. Refused to unprivileged users when
/// `vm.unprivileged_userfaultfd = 0`; the attempt is the behaviour.
fn userfaultfd() {
    // SAFETY: userfaultfd takes flags only; the fd (if any) is closed.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd as i32) };
    }
}

/// A raw link-layer socket: sniffing or spoofing the node's traffic.
fn packet_socket() {
    // SAFETY: socket takes integers only; the fd (if any) is closed.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    if fd >= 0 {
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
    }
}

/// An ordinary UDP socket, the look-alike of a packet socket.
fn udp_socket() {
    let _ = std::net::UdpSocket::bind("127.0.0.1:0");
}
