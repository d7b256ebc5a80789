//! `control-probe SOCKET METHOD`: send one control-protocol request and print
//! the raw answer line. The tests run it as an unprivileged user to see
//! exactly what the daemon answers (error codes included), which
//! `edge-agent status` turns into prose. Exit 0 when an answer came, 1 when
//! the connection failed (the error is printed on stderr).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, method] = args.as_slice() else {
        eprintln!("usage: control-probe SOCKET METHOD");
        return ExitCode::from(64);
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connect {socket}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // A refused peer may see its write fail; the answer is what matters.
    let _ = writeln!(stream, "{{\"v\":1,\"method\":\"{method}\"}}");
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
