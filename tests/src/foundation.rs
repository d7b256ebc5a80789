//! Helpers for the foundation's tests: running commands as an unprivileged
//! user, listening on a notify socket like systemd does, and finding the
//! repository's scripts and unit.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{Scratch, agent_bin};

/// The repository's top directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// The `control-probe` helper binary (sends one raw control request). Cargo
/// builds it next to the test executables before running them.
pub fn control_probe_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .join("control-probe");
    assert!(
        bin.exists(),
        "{} does not exist: run the tests with cargo test",
        bin.display()
    );
    bin
}

/// Who an unprivileged command runs as: `nobody`, with a primary group and
/// supplementary groups (numeric ids or names `setpriv` understands).
pub struct Unprivileged<'a> {
    pub group: &'a str,
    pub supplementary: &'a [&'a str],
}

impl Unprivileged<'_> {
    /// `nobody:nogroup` with no other group: a stranger to the agent.
    pub const STRANGER: Unprivileged<'static> = Unprivileged {
        group: "nogroup",
        supplementary: &[],
    };

    /// Run `program args` as this user through `setpriv` (util-linux). The
    /// program must be reachable by `nobody`: see [`share_with_nobody`].
    pub fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--reuid=nobody")
            .arg(format!("--regid={}", self.group));
        if self.supplementary.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.arg(format!("--groups={}", self.supplementary.join(",")));
        }
        cmd.arg("--").arg(program).args(args);
        cmd.output().expect("run setpriv (util-linux)")
    }
}

/// Make the scratch directory and copies of the test binaries usable by
/// `nobody`, wherever the repository lives (it may be under a 0700 /root).
/// Returns the copies of `edge-agent` and `control-probe`.
pub fn share_with_nobody(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(scratch.path(), open.clone()).expect("chmod scratch dir");
    let bin_dir = scratch.path().join("bin");
    std::fs::create_dir_all(&bin_dir).expect("scratch bin dir");
    std::fs::set_permissions(&bin_dir, open.clone()).expect("chmod bin dir");
    let copy = |from: PathBuf| {
        let to = bin_dir.join(from.file_name().expect("binary name"));
        std::fs::copy(&from, &to).expect("copy binary for nobody");
        std::fs::set_permissions(&to, open.clone()).expect("chmod binary copy");
        to
    };
    (copy(agent_bin()), copy(control_probe_bin()))
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
pub struct NotifyListener {
    pub path: PathBuf,
    socket: UnixDatagram,
    /// Every message received so far, in order.
    pub received: Vec<String>,
}

impl NotifyListener {
    pub fn bind(scratch: &Scratch) -> NotifyListener {
        let path = scratch.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("notify socket timeout");
        NotifyListener {
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// Receive until a message at index `from` or later contains `needle`,
    /// or `timeout` passes. Returns that message's index.
    pub fn wait_for_from(&mut self, from: usize, needle: &str, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            if let Some(i) = self
                .received
                .iter()
                .skip(from)
                .position(|m| m.contains(needle))
            {
                return Some(from + i);
            }
            if Instant::now() >= deadline {
                return None;
            }
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.received
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// [`Self::wait_for_from`] the first message.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<usize> {
        self.wait_for_from(0, needle, timeout)
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn both(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
