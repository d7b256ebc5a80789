//! A control-socket client for tests that run it as an unprivileged user,
//! to see exactly what the daemon answers (error codes included), which
//! `edge-agent status` turns into prose.
//!
//! - `control-probe SOCKET METHOD [PARAMS_JSON]`: send one request and print
//!   the raw answer line. Exit 0 when an answer came, 1 when the connection
//!   failed (the error is printed on stderr).
//! - `control-probe --hold N SOCKET`: open N connections and send nothing
//!   (an idle-connection flood), then say on stdout how many the daemon
//!   kept open, closed, or closed with a `busy` answer:
//!   `held N open O closed C busy B`. Keeps them open until stdin closes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, n, socket] if flag == "--hold" => match n.parse() {
            Ok(n) => hold(socket, n),
            Err(_) => usage(),
        },
        [socket, method] => call(socket, method, "null"),
        [socket, method, params] => call(socket, method, params),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: control-probe SOCKET METHOD [PARAMS_JSON] | control-probe --hold N SOCKET");
    ExitCode::from(64)
}

fn call(socket: &str, method: &str, params: &str) -> ExitCode {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // A refused peer may see its write fail; the answer is what matters.
    let _ = writeln!(
        stream,
        "{{\"v\":1,\"method\":\"{method}\",\"params\":{params}}}"
    );
    let mut line = String::new();
    match BufReader::new(stream).read_line(&mut line) {
        Ok(n) if n > 0 => {
            print!("{line}");
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("the daemon closed the connection without an answer");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("read: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long the flood waits for the daemon to answer or close each
/// connection before counting it as held open.
const SETTLE: Duration = Duration::from_secs(3);

fn hold(socket: &str, n: usize) -> ExitCode {
    raise_nofile(n as u64 + 64);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        match UnixStream::connect(socket) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("connect #{i} {socket}: {e}");
                break;
            }
        }
    }
    std::thread::sleep(SETTLE);
    let (mut open, mut closed, mut busy) = (0, 0, 0);
    for s in &held {
        let _ = s.set_nonblocking(true);
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        let state = loop {
            match (&*s).read(&mut buf) {
                Ok(0) => break "closed",
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break "open",
                Err(_) => break "closed",
            }
        };
        if String::from_utf8_lossy(&got).contains("\"code\":\"busy\"") {
            busy += 1;
        }
        match state {
            "open" => open += 1,
            _ => closed += 1,
        }
    }
    println!(
        "held {} open {open} closed {closed} busy {busy}",
        held.len()
    );
    let _ = std::io::stdout().flush();
    // Keep every connection until the test is done with us.
    let mut sink = String::new();
    let _ = std::io::stdin().read_to_string(&mut sink);
    ExitCode::SUCCESS
}

/// Let this process hold `want` descriptors (up to its hard limit).
fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource id and a pointer to
    // a live rlimit struct; no other memory is involved.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
