//! Helpers for the sensor's integration tests: a daemon with the sensor on,
//! a `sensor watch --json` reader, JSON field access, and small system
//! actions done in a forked child (setuid, dup2 onto stdin, execveat) so
//! they cannot disturb the test process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Daemon, Scratch, agent_bin, status_json, wait_for};

/// How long a test waits for an event. Generous: the machine is shared and
/// loaded; an event normally arrives within milliseconds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A scratch config with the sensor on and `extra` lines in `[sensor]`.
pub fn sensor_scratch(extra_sensor: &str) -> Scratch {
    Scratch::new(&format!("[sensor]\nenabled = true\n{extra_sensor}\n"))
}

/// Start the daemon and wait until its sensor runs (or fail with its status).
pub fn start_with_sensor(s: &Scratch) -> Daemon {
    let d = s.start();
    let state = wait_for(EVENT_TIMEOUT, || {
        let st = status_json(s);
        let state = st["stages"]["sensor"]["state"].as_str()?.to_string();
        (state != "starting").then_some((state, st))
    });
    let (state, st) = state.expect("the sensor stage left `starting`");
    assert!(
        state == "running" || state == "degraded",
        "the sensor did not start: {:#}\nlog:\n{}",
        st["stages"]["sensor"],
        d.log()
    );
    d
}

/// `edge-agent sensor watch --json` against the scratch daemon.
pub struct Watch {
    child: Child,
    rx: Receiver<Value>,
    /// The daemon's config, to ask its status when an event never comes.
    config: PathBuf,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Watch {
    /// Start watching, then make sure the stream is live: write a marker
    /// file until its open arrives.
    pub fn start(s: &Scratch) -> Watch {
        let mut child = Command::new(agent_bin())
            .args(["sensor", "watch", "--json", "--config"])
            .arg(s.config_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sensor watch");
        let stdout = child.stdout.take().expect("watch stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let mut w = Watch {
            child,
            rx,
            config: s.config_path(),
            seen: Vec::new(),
        };
        let marker = s.path().join("watch-ready");
        let live = Instant::now() + EVENT_TIMEOUT;
        loop {
            std::fs::write(&marker, b"x").expect("write marker");
            let m = marker.to_string_lossy().into_owned();
            if w.wait(Duration::from_millis(300), |e| {
                str_at(e, "fd.name") == Some(m.as_str())
            })
            .is_some()
            {
                break;
            }
            assert!(
                Instant::now() < live,
                "sensor watch never delivered an event"
            );
        }
        w
    }

    fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
    }

    /// The first event (already seen or arriving within `timeout`) matching `pred`.
    pub fn wait(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            self.drain();
            if let Some(v) = self.seen[checked..].iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            checked = self.seen.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(v) => self.seen.push(v),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("sensor watch ended early")
                }
            }
        }
    }

    /// Like [`Watch::wait`], panicking with `what` when nothing matches.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait(EVENT_TIMEOUT, pred).unwrap_or_else(|| {
            // The daemon skips events for a watcher that falls behind and
            // says how many; a loaded machine shows here.
            let lagged: u64 = self.seen.iter().filter_map(|v| v["lagged"].as_u64()).sum();
            // The kernel side: a ring buffer that was full drops events
            // before any watcher sees them.
            let kernel = &self.sensor_details()["kernel_events_total_by_outcome"];
            panic!(
                "no event {what} within {EVENT_TIMEOUT:?}; {} events seen, {lagged} skipped for this watcher; kernel outcomes: {kernel}",
                self.seen.len()
            )
        })
    }

    /// The watched daemon's sensor details from `status` (null when it
    /// does not answer).
    pub fn sensor_details(&self) -> Value {
        Command::new(agent_bin())
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .map(|st| st["stages"]["sensor"]["details"].clone())
            .unwrap_or_default()
    }

    /// Kernel events the watched daemon lost to a full ring buffer so far.
    pub fn kernel_lost(&self) -> u64 {
        self.sensor_details()["lost_total"].as_u64().unwrap_or(0)
    }

    /// Everything seen so far plus whatever arrives within `settle`.
    pub fn collect(&mut self, settle: Duration) -> &[Value] {
        let deadline = Instant::now() + settle;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(v) = self.rx.recv_timeout(left) {
                self.seen.push(v);
            }
        }
        &self.seen
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON value at a dotted path of an event as serde serializes it, with
/// Falco-ish shortcuts: `fd.name` is `fd.name`, `evt.type` is `evt.type`.
pub fn at<'a>(e: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(e, |v, k| &v[k])
}

pub fn str_at<'a>(e: &'a Value, path: &str) -> Option<&'a str> {
    at(e, path).as_str()
}

pub fn i64_at(e: &Value, path: &str) -> Option<i64> {
    at(e, path).as_i64()
}

pub fn is_type(e: &Value, types: &[&str]) -> bool {
    str_at(e, "evt.type").is_some_and(|t| types.contains(&t))
}

pub fn pid_of(e: &Value) -> Option<i64> {
    i64_at(e, "proc.pid")
}

/// The sensor stage's `details` from `status --json`.
pub fn sensor_details(s: &Scratch) -> Value {
    status_json(s)["stages"]["sensor"]["details"].clone()
}

/// Run `f` in a forked child, which then exits; returns the child's pid and
/// its wait status. `f` must only make async-signal-safe calls (raw
/// syscalls): the parent is multi-threaded.
pub fn in_child(f: impl FnOnce()) -> (i32, i32) {
    // SAFETY: the child only runs `f` (raw syscalls, no allocation or locks,
    // as the caller promises) and then `_exit`, so no state of the other
    // threads is touched.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: _exit is async-signal-safe and ends the child at once.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we just forked, with a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (pid, status)
}

/// A copy of a system binary under a new name in `dir`.
pub fn copy_binary(from: &str, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(from, &to).expect("copy binary");
    to
}

/// `path` with symlinks resolved (the sensor reports real paths).
pub fn real(path: &str) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("canonicalize {path}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// A containerd of the test's own (root, state and socket in a temp dir),
/// to run real runc containers from a busybox rootfs. Stopped, with the
/// cgroups its containers left behind, on drop.
pub struct Containerd {
    child: Child,
    pub dir: tempfile::TempDir,
    cgroups: Vec<String>,
}

impl Containerd {
    pub fn start() -> Containerd {
        // Short path: the socket must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("ea-ctr-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("c.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is installed (scripts/deps.sh)");
        let c = Containerd {
            child,
            dir,
            cgroups: Vec::new(),
        };
        let up = wait_for(EVENT_TIMEOUT, || {
            Command::new("ctr")
                .arg("--address")
                .arg(c.socket())
                .arg("version")
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        assert!(up.is_some(), "containerd did not start: {}", c.log());
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// Where containerd keeps the running tasks' bundles.
    pub fn task_state_dir(&self) -> PathBuf {
        self.dir.path().join("state/io.containerd.runtime.v2.task")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A busybox rootfs with `/etc/passwd` naming uid 1234 `appuser`.
    pub fn busybox_rootfs(&self) -> PathBuf {
        self.busybox_rootfs_at("rootfs")
    }

    /// The same, in a directory of that name (several rootfs per containerd).
    pub fn busybox_rootfs_at(&self, name: &str) -> PathBuf {
        let r = self.dir.path().join(name);
        for d in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).expect("busybox-static is installed");
        for applet in ["sh", "cat", "sleep", "touch", "su", "id"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
        }
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nappuser:x:1234:1234::/tmp:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nappgroup:x:1234:\n").unwrap();
        std::fs::set_permissions(
            r.join("tmp"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        r
    }

    /// Run container `id` (in namespace k8s.io) to completion in `cgroup`,
    /// with `annotations`, executing `sh -c script`.
    pub fn run(
        &mut self,
        rootfs: &Path,
        id: &str,
        cgroup: &str,
        annotations: &[(&str, &str)],
        script: &str,
    ) -> std::process::Output {
        self.run_with(rootfs, id, cgroup, annotations, &[], script)
    }

    /// [`Self::run`] with more `ctr run` options (`--privileged`, ...).
    pub fn run_with(
        &mut self,
        rootfs: &Path,
        id: &str,
        cgroup: &str,
        annotations: &[(&str, &str)],
        options: &[&str],
        script: &str,
    ) -> std::process::Output {
        self.cgroups.push(cgroup.to_string());
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.socket()).args([
            "-n", "k8s.io", "run", "--rm", "--rootfs", "--cgroup", cgroup,
        ]);
        cmd.args(options);
        for (k, v) in annotations {
            cmd.arg("--annotation").arg(format!("{k}={v}"));
        }
        cmd.args(options);
        cmd.arg(rootfs).arg(id).args(["/bin/sh", "-c", script]);
        cmd.output().expect("ctr run")
    }
}

impl Containerd {
    /// Run `sh -c script` as a container's entry process, as the runtime
    /// starts it; with `tty`, on a terminal (`ctr run -t` inside `script`,
    /// which provides the pseudo-terminal `kubectl exec -it` would);
    /// `options` are more `ctr run` flags (`--privileged`).
    pub fn run_entry(
        &mut self,
        rootfs: &Path,
        id: &str,
        cgroup: &str,
        tty: bool,
        options: &[&str],
        script: &str,
    ) -> std::process::Output {
        self.cgroups.push(cgroup.to_string());
        let ctr = format!(
            "ctr --address {} -n k8s.io run --rm {} {} --rootfs --cgroup {cgroup} {} {id} /bin/sh -c '{}'",
            self.socket().display(),
            if tty { "-t" } else { "" },
            options.join(" "),
            rootfs.display(),
            script.replace('\'', "'\\''"),
        );
        if tty {
            Command::new("script")
                .args(["-qec", &ctr, "/dev/null"])
                .stdin(Stdio::null())
                .output()
                .expect("script (util-linux)")
        } else {
            Command::new("sh")
                .args(["-c", &ctr])
                .stdin(Stdio::null())
                .output()
                .expect("sh")
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the containerd we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if wait_for(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // runc leaves the container's parent cgroups (kubepods/...) in every
        // hierarchy; remove what this test created, deepest first.
        for cg in &self.cgroups {
            let parts: Vec<&str> = cg.trim_start_matches('/').split('/').collect();
            let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
                continue;
            };
            for h in hierarchies.filter_map(Result::ok) {
                for n in (1..=parts.len()).rev() {
                    let p = h.path().join(parts[..n].join("/"));
                    // A parent still used by another test stays.
                    if std::fs::remove_dir(&p).is_err() && p.exists() {
                        break;
                    }
                }
            }
        }
    }
}

/// What waits in the daemon's outbox (`edge-agent outbox --json`): (class,
/// about) of each record, where `about` is `Priority: rule` for an alert and
/// the kind of a node event.
pub fn outbox_records(s: &Scratch) -> Vec<(String, String)> {
    let out = s.cli(&["outbox", "--json", "--limit", "1000"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut records = Vec::new();
    for c in v["classes"].as_array().into_iter().flatten() {
        let class = c["class"].as_str().unwrap_or_default().to_string();
        for r in c["oldest"].as_array().into_iter().flatten() {
            records.push((
                class.clone(),
                r["about"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    records
}

/// Wait until the outbox holds a record of `class` whose `about` contains `what`.
pub fn expect_in_outbox(s: &Scratch, class: &str, what: &str) {
    let found = wait_for(EVENT_TIMEOUT, || {
        outbox_records(s)
            .iter()
            .any(|(c, a)| c == class && a.contains(what))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no {class} record about \"{what}\" in the outbox: {:?}",
        outbox_records(s)
    );
}

/// A tiny DNS server on `ip`:53 (UDP) for a few names: answers each of
/// them with its address (type A), every other question with "no such
/// name". Stops on drop.
pub struct DnsServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DnsServer {
    pub fn start(ip: std::net::Ipv4Addr, names: &[(&str, std::net::Ipv4Addr)]) -> DnsServer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sock = std::net::UdpSocket::bind((ip, 53))
            .unwrap_or_else(|e| panic!("bind the test DNS server to {ip}:53: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let names: Vec<(String, std::net::Ipv4Addr)> =
            names.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(r) = dns_reply(&buf[..n], &names) {
                    let _ = sock.send_to(&r, from);
                }
            }
        });
        DnsServer { stop }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The reply to query `q`: its header and question, then an A record for
/// a known name asked as type A; NXDOMAIN for an unknown name.
fn dns_reply(q: &[u8], names: &[(String, std::net::Ipv4Addr)]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    while *q.get(at)? != 0 {
        let len = usize::from(q[at]);
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len)?).to_ascii_lowercase());
        at += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    let end = at + 5;
    let asked = labels.join(".");
    let known = names.iter().find(|(n, _)| *n == asked);
    let mut r = q.get(..end)?.to_vec();
    r[2] = 0x81; // a response; recursion desired
    r[3] = if known.is_some() { 0x80 } else { 0x83 }; // NOERROR / NXDOMAIN
    r[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    if let (Some((_, a)), 1) = (known, qtype) {
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}
