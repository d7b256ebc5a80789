//! The behaviour-test harness: real attacks and their look-alikes, done on
//! this machine and in real runc containers (containerd) while one daemon
//! with its real sensor watches, and the alerts read back from the
//! daemon's `rules.json_file`. Used by the shipped rule set's attack
//! matrix (`tests/attack_matrix.rs`).
//!
//! Every action carries a token (in its command line, its executable's path
//! or the file it touches, all of which the rules' outputs print), so an
//! alert is traced to the action that caused it even on a busy machine
//! where other tests attack it at the same time. Tokens are not
//! hexadecimal, so no container id or digest contains one.
//!
//! Needs root, containerd, runc, busybox-static, iproute2 and util-linux's
//! `unshare`/`setpriv`/`script`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::sensor::{Containerd, copy_binary};

/// Where an action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// On the node, as root, from the test's scratch directory.
    Host,
    /// In the node's own network namespace copy: `unshare --net`, with
    /// 192.0.2.1 (TEST-NET-1) on its loopback, so connections to a
    /// non-loopback address never leave the namespace.
    HostNetns,
    /// On the node, in a mount namespace of its own where `/etc`, `/root`,
    /// `/home`, `/usr` and `/var` are overlays whose writes land in the
    /// scratch directory: the real paths, the real kernel and the real
    /// programs, without changing the machine (persistence, log clearing,
    /// a package manager's upgrade).
    HostSandbox,
    /// In an ordinary runc container (busybox).
    Container,
    /// In a privileged runc container.
    Privileged,
    /// As the entry process of a container of its own (`sh -c SCRIPT`), as
    /// the runtime starts it; `TtyEntry` with a terminal (`ctr run -t`
    /// under `script`), as `kubectl exec -it` gives one.
    Entry,
    TtyEntry,
}

impl At {
    pub fn is_host(self) -> bool {
        matches!(self, At::Host | At::HostNetns | At::HostSandbox)
    }
}

/// One action: a script run at a place, carrying `token`.
#[derive(Debug, Clone)]
pub struct Action {
    pub token: String,
    pub at: At,
    /// With every `@` already replaced by the token.
    pub script: String,
}

impl Action {
    /// `script` with `@` replaced by `token`.
    pub fn new(token: &str, at: At, script: &str) -> Action {
        Action {
            token: token.to_string(),
            at,
            script: script.replace('@', token),
        }
    }
}

/// The directories an `At::HostSandbox` action sees through overlays.
const SANDBOXED: [&str; 5] = ["/etc", "/root", "/home", "/usr", "/var"];

/// The scratch directory (mode 0755) and the tools in it: copies of real
/// binaries under the names rules single out.
pub struct Stage {
    work: tempfile::TempDir,
}

impl Stage {
    /// A stage in a new directory below `base` whose `tools/` holds, for
    /// each `(source, names)`, a copy of `source` under every name. `base`
    /// must lie outside the directories `At::HostSandbox` overlays.
    pub fn new(base: &str, prefix: &str, tools: &[(&str, &[&str])]) -> Stage {
        assert!(
            !SANDBOXED.iter().any(|d| Path::new(base).starts_with(d)),
            "{base} is below a sandboxed directory"
        );
        let work = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .unwrap();
        // Readable by everyone: some actions run as nobody.
        set_mode(work.path(), 0o755);
        let dir = work.path().join("tools");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o755);
        for (source, names) in tools {
            for name in *names {
                copy_binary(source, &dir, name);
            }
        }
        for e in std::fs::read_dir(&dir).unwrap() {
            set_mode(&e.unwrap().path(), 0o755);
        }
        Stage { work }
    }

    pub fn path(&self) -> &Path {
        self.work.path()
    }

    pub fn tools(&self) -> PathBuf {
        self.work.path().join("tools")
    }

    /// Start a host action under `dash -c` with `$T` (the tools), `$W` (the
    /// scratch directory) and `$TOKEN` set. A failure of the action itself
    /// is part of some behaviours; only a script that cannot start is fatal.
    pub fn host(&self, a: &Action) -> Child {
        let mut cmd = match a.at {
            At::HostNetns => {
                let setup = "ip link set lo up && ip addr add 192.0.2.1/32 dev lo && \
                             (busybox nc -l -p 9999 >/dev/null 2>&1 &) && sleep 0.3; ";
                let mut c = Command::new("unshare");
                c.args(["--net", "/bin/dash", "-c"])
                    .arg(format!("{setup}{}", a.script));
                c
            }
            At::HostSandbox => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "/bin/dash", "-c"])
                    .arg(format!("{}{}", sandbox_setup(&a.token), a.script));
                c
            }
            _ => {
                let mut c = Command::new("/bin/dash");
                c.arg("-c").arg(&a.script);
                c
            }
        };
        cmd.env("T", self.tools())
            .env("W", self.work.path())
            .env("TOKEN", &a.token)
            .current_dir(self.work.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dash runs")
    }
}

/// Mount the sandbox's overlays (upper layers in `$W/sandbox/<token>`);
/// the action does not run if that fails.
fn sandbox_setup(token: &str) -> String {
    let mut s = String::new();
    for d in SANDBOXED {
        let top = format!("$W/sandbox/{token}{d}");
        s.push_str(&format!(
            "mkdir -p {top}/upper {top}/work && \
             mount -t overlay overlay -o lowerdir={d},upperdir={top}/upper,workdir={top}/work {d} && "
        ));
    }
    s.push_str("cd / && ");
    s
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `falco-act`, built next to the test binaries.
pub fn falco_act_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("falco-act");
    assert!(bin.exists(), "{} is built with the tests", bin.display());
    bin
}

/// A containerd of the test's own and two busybox root filesystems, one
/// for the plain container and one for the privileged one.
pub struct Containers {
    pub ctrd: Containerd,
    plain: PathBuf,
    privileged: PathBuf,
    /// Where `x NAME` links busybox: a directory whose path holds `$TOKEN`
    /// (`/opt/$TOKEN`).
    tool_dir: &'static str,
}

/// Where the container script is written in the rootfs: run from a file,
/// the shell's command line (printed as every child's `pcmdline`) names no
/// case's token.
const SCRIPT: &str = "/actions.sh";

impl Containers {
    /// Start containerd and make the root filesystems: busybox with the
    /// `applets` linked in `/bin`, the directories in `dirs`, and `files`
    /// (path, content) written. `x NAME` in a container script hard-links
    /// busybox to `<tool_dir>/NAME` (a hard link, so the token is in the
    /// real path of the executable that outputs print).
    pub fn start(
        tool_dir: &'static str,
        applets: &[&str],
        dirs: &[&str],
        files: &[(&str, &str)],
    ) -> Containers {
        let ctrd = Containerd::start();
        let make = |name: &str| {
            let base = ctrd.busybox_rootfs_at(name);
            for d in dirs {
                std::fs::create_dir_all(base.join(d.trim_start_matches('/'))).unwrap();
            }
            for applet in applets {
                let link = base.join("bin").join(applet);
                if !link.exists() {
                    std::os::unix::fs::symlink("busybox", link).unwrap();
                }
            }
            for (path, content) in files {
                std::fs::write(base.join(path.trim_start_matches('/')), content).unwrap();
            }
            base
        };
        let plain = make("plain");
        let privileged = make("privileged");
        Containers {
            ctrd,
            plain,
            privileged,
            tool_dir,
        }
    }

    /// The script of one container: every action in a subshell of its own,
    /// its output discarded.
    fn script(&self, actions: &[&Action]) -> String {
        let mut s = format!(
            "x() {{ mkdir -p {d}; ln -f /bin/busybox {d}/$1; }}\n",
            d = self.tool_dir
        );
        for a in actions {
            s.push_str(&format!(
                "TOKEN={tok}; mkdir -p /tmp/{tok}; ( {} ) >/dev/null 2>&1\n",
                a.script,
                tok = a.token
            ));
        }
        // Actions fail on purpose (no network, no such file); the run does not.
        s.push_str("true\n");
        s
    }

    /// Run the plain and privileged containers' actions (each container
    /// runs its actions one after the other) and every entry action in a
    /// container of its own. Containers are named after `nonce` and carry
    /// the CRI annotations of pod `pod` in namespace `namespace`.
    pub fn run(&mut self, nonce: u128, pod: &str, namespace: &str, actions: &[Action]) {
        let pick = |at: At| actions.iter().filter(|a| a.at == at).collect::<Vec<_>>();
        for (name, at, extra) in [
            ("plain", At::Container, &[][..]),
            ("privileged", At::Privileged, &["--privileged"][..]),
        ] {
            let mine = pick(at);
            if mine.is_empty() {
                continue;
            }
            let root = if at == At::Privileged {
                self.privileged.clone()
            } else {
                self.plain.clone()
            };
            let id = container_id(nonce, name.len() as u64, 0x9e37_79b9_7f4a_7c15);
            let cgroup = format!("/kubepods/besteffort/pod{}/{id}", &id[24..32]);
            std::fs::write(
                root.join(SCRIPT.trim_start_matches('/')),
                self.script(&mine),
            )
            .unwrap();
            let out = self.ctrd.run_with(
                &root,
                &id,
                &cgroup,
                &[
                    ("io.kubernetes.cri.sandbox-name", pod),
                    ("io.kubernetes.cri.sandbox-namespace", namespace),
                    ("io.kubernetes.cri.container-name", name),
                    (
                        "io.kubernetes.cri.image-name",
                        "docker.io/library/busybox:1.36",
                    ),
                ],
                extra,
                &format!(". {SCRIPT}"),
            );
            assert!(
                out.status.success(),
                "ctr run ({name}) failed: {}\n{}\ncontainerd log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.ctrd.log()
            );
        }
        let entries = actions
            .iter()
            .filter(|a| matches!(a.at, At::Entry | At::TtyEntry));
        for (n, a) in entries.enumerate() {
            let id = container_id(nonce, n as u64, 0x2545_f491_4f6c_dd1d);
            let cgroup = format!("/kubepods/besteffort/pod{}/{id}", &id[..8]);
            let out = self.ctrd.run_entry(
                &self.plain,
                &id,
                &cgroup,
                a.at == At::TtyEntry,
                &[],
                &a.script,
            );
            assert!(
                out.status.success(),
                "ctr run ({}) failed: {}\n{}",
                a.script,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A container id distinct from every other of this run in its first 12
/// digits (the short id the sensor keys on).
fn container_id(nonce: u128, n: u64, mix: u64) -> String {
    let short = (nonce as u64).wrapping_mul(mix) ^ n;
    format!("{:012x}{:052x}", short & 0xffff_ffff_ffff, nonce)
}

/// Now, in nanoseconds since the epoch: distinguishes this run's containers.
pub fn nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// How many host actions run at once. All of them at once (70 and more
/// processes forking and exec'ing together on a loaded 2-core machine)
/// overflow the sensor's default ring buffer, and lost events are lost
/// alerts.
const HOST_PARALLEL: usize = 4;

/// Run every action: the host ones `HOST_PARALLEL` at a time, then the
/// container ones through `containers`. Containers are in pod `pod` of
/// namespace `namespace` (CRI annotations).
pub fn run_all(
    stage: &Stage,
    containers: Option<&mut Containers>,
    (pod, namespace): (&str, &str),
    actions: &[Action],
) {
    let host: Vec<&Action> = actions.iter().filter(|a| a.at.is_host()).collect();
    for batch in host.chunks(HOST_PARALLEL) {
        let mut children: Vec<Child> = batch.iter().map(|a| stage.host(a)).collect();
        for c in &mut children {
            let _ = c.wait();
        }
    }
    if let Some(c) = containers {
        c.run(nonce(), pod, namespace, actions);
    } else {
        assert!(
            actions.iter().all(|a| a.at.is_host()),
            "container actions need containers"
        );
    }
}

/// Every alert in the daemon's `rules.json_file` so far.
pub fn read_alerts(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Alerts whose text names `token`.
pub fn alerts_for<'a>(alerts: &'a [Value], token: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a.to_string().contains(token))
        .collect()
}

/// Rules whose alerts name `token`.
pub fn fired_for(alerts: &[Value], token: &str) -> BTreeSet<String> {
    alerts_for(alerts, token)
        .into_iter()
        .filter_map(|a| a["rule"].as_str().map(str::to_string))
        .collect()
}
