//! Shared helpers for the integration tests: they run the real `edge-agent`
//! binary against the real kernel, broker and files.
//!
//! The binary is the one `cargo build` put next to the test executables
//! (`target/<profile>/edge-agent`); `scripts/test.sh` builds it before the
//! tests run. `EDGE_AGENT_BIN` overrides the path.
//!
//! Each area keeps its own helpers in a module here (`pub mod broker;` ...),
//! so that test files stay about behaviour.

pub mod behaviour;
pub mod bootstrap;
pub mod bridge;
pub mod broker;
pub mod fleet;
pub mod foundation;
pub mod rules;
pub mod sensor;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod metrics;

/// Path of the `edge-agent` binary under test.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>/edge-agent
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("edge-agent");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build -p edge-agent` (scripts/test.sh does), or set EDGE_AGENT_BIN",
        bin.display()
    );
    bin
}

/// Panic with a clear message unless running as root (eBPF, chown, brokers on
/// privileged set-ups). CI runs as root; a developer runs `sudo ./scripts/test.sh`.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "this test needs root (it loads eBPF programs or changes file ownership): run it with sudo ./scripts/test.sh"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch directory holding an `agent.toml` and the agent's state and
/// runtime directories. Removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A scratch dir whose config is `extra` (TOML) plus `[paths]` pointing
    /// into the scratch dir, and sensor/metrics switched off unless `extra`
    /// mentions them.
    pub fn new(extra: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("ea-test-")
            .tempdir()
            .expect("tempdir");
        let s = Scratch { dir };
        s.write_config(extra);
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("agent.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("control.sock")
    }

    /// Rewrite the config: `extra` plus the scratch `[paths]` and defaults
    /// that keep a test hermetic (no sensor, no metrics endpoint, node id
    /// fixed) unless `extra` sets those sections itself.
    pub fn write_config(&self, extra: &str) {
        let mut text = String::new();
        if !extra.contains("[node]") {
            text.push_str("[node]\nid = \"test-node\"\nfleet = \"test-fleet\"\n\n");
        }
        if !extra.contains("[paths]") {
            text.push_str(&format!(
                "[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\n",
                self.state_dir().display(),
                self.runtime_dir().display()
            ));
        }
        if !extra.contains("[sensor]") {
            text.push_str("[sensor]\nenabled = false\n\n");
        }
        if !extra.contains("[metrics]") {
            text.push_str("[metrics]\nenabled = false\nlisten = \"\"\n\n");
        }
        text.push_str(extra);
        std::fs::write(self.config_path(), text).expect("write agent.toml");
    }

    /// Run `edge-agent ARGS --config <scratch config>` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("run edge-agent")
    }

    /// Start `edge-agent run` and wait until its control socket answers.
    pub fn start(&self) -> Daemon {
        Daemon::start(self, &[])
    }
}

/// A running `edge-agent run`. Killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub child: Child,
    socket: PathBuf,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Start with extra environment variables; waits for the socket.
    pub fn start(scratch: &Scratch, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(scratch, env, None)
    }

    /// Start with at most `nofile` open descriptors (soft and hard limit),
    /// as a service manager's `LimitNOFILE=` would set it.
    pub fn start_with_nofile(scratch: &Scratch, nofile: u64) -> Daemon {
        Self::spawn(scratch, &[], Some(nofile))
    }

    fn spawn(scratch: &Scratch, env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        use std::os::unix::process::CommandExt;
        let stderr_path = scratch.path().join(format!("daemon-{}.log", now_nanos()));
        let stderr = std::fs::File::create(&stderr_path).expect("daemon log file");
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(scratch.config_path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(n) = nofile {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // child's own limits; `lim` is a plain struct copied in.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().expect("spawn edge-agent run");
        let mut d = Daemon {
            child,
            socket: scratch.socket(),
            stderr_path,
        };
        d.wait_ready(Duration::from_secs(20));
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "edge-agent exited during start-up with {status}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "edge-agent did not open its control socket in {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() with a pid we spawned and still own; no memory is involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Wait for exit up to `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub use libc::{SIGHUP, SIGINT, SIGKILL, SIGTERM};

pub(crate) fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `edge-agent status --json` as a JSON value.
pub fn status_json(scratch: &Scratch) -> serde_json::Value {
    let out = scratch.cli(&["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
