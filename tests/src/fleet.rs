//! A fleet for the tests: a mosquitto started from the shipped
//! `configs/mosquitto/` files (mTLS, identities from certificates, the
//! shipped ACL; only paths, port and user changed), an operator with a
//! certificate, a signing key and an `ops.toml`, and nodes (real agents,
//! sensor off) each with its own certificate (CN = node id), state
//! directory and `[fleet]` trusting the operator's key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::broker::{Certs, free_port};
use crate::foundation::repo_root;
use crate::{Scratch, agent_bin, wait_for};

/// The fleet every test node belongs to.
pub const FLEET: &str = "test-fleet";
/// The operator's certificate CN, as the shipped ACL names it.
pub const OPERATOR_CN: &str = "fleet-operator";

/// mosquitto running the shipped fleet config. Killed on drop.
pub struct FleetBroker {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl FleetBroker {
    /// Install `configs/mosquitto/{mosquitto.conf,fleet.acl}` under `dir`
    /// (the files' `/etc/mosquitto/` and `/var/lib/mosquitto/` moved there,
    /// the listener on a free port of 127.0.0.1, the log to a file, run as
    /// root) with `certs`' CA and server certificate, and start it.
    pub fn start(dir: &Path, certs: &Certs) -> FleetBroker {
        let shipped = repo_root().join("configs/mosquitto");
        std::fs::create_dir_all(dir.join("certs")).expect("broker certs dir");
        std::fs::create_dir_all(dir.join("data")).expect("broker data dir");
        for (from, to) in [
            (certs.ca(), "certs/fleet-ca.pem"),
            (certs.server_cert(), "certs/broker.pem"),
            (certs.server_key(), "certs/broker.key"),
        ] {
            std::fs::copy(&from, dir.join(to)).expect("copy broker certificate");
        }
        std::fs::copy(shipped.join("fleet.acl"), dir.join("fleet.acl")).expect("copy fleet.acl");
        let mut b = FleetBroker {
            dir: dir.to_path_buf(),
            port: free_port(),
            child: None,
        };
        b.launch();
        b
    }

    fn config_text(&self) -> String {
        let shipped = std::fs::read_to_string(repo_root().join("configs/mosquitto/mosquitto.conf"))
            .expect("read configs/mosquitto/mosquitto.conf");
        let d = self.dir.display();
        let mut text = shipped
            .replace("/etc/mosquitto/", &format!("{d}/"))
            .replace("/var/lib/mosquitto/", &format!("{d}/data/"))
            .replace(
                "\nlistener 8883\n",
                &format!("\nlistener {} 127.0.0.1\n", self.port),
            )
            .replace(
                "\nlog_dest syslog\n",
                &format!("\nlog_dest file {d}/mosquitto.log\n"),
            );
        assert!(
            text.contains(&format!("listener {} 127.0.0.1", self.port)),
            "the shipped mosquitto.conf no longer has `listener 8883`"
        );
        // Debian's mosquitto drops root for its own user, which cannot read
        // the test's files.
        text.push_str("\nuser root\n");
        text
    }

    pub fn launch(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(&conf, self.config_text()).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(15), || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("mosquitto exited with {status}; log:\n{}", self.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .is_ok()
                .then_some(())
        });
        assert!(
            up.is_some(),
            "mosquitto did not listen; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resident memory of the broker process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.child
            .as_ref()
            .and_then(|c| crate::fleet::rss_kib(c.id()))
    }
}

impl Drop for FleetBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Certificates, broker, operator (key + ops.toml) for one test.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub broker: FleetBroker,
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("ea-fleet-")
            .tempdir()
            .expect("tempdir");
        let certs = Certs::generate(&dir.path().join("certs"));
        certs.make_leaf("operator", "ca", OPERATOR_CN, "extendedKeyUsage=clientAuth");
        let broker = FleetBroker::start(&dir.path().join("broker"), &certs);
        let f = Fleet { dir, certs, broker };
        let out = f.fleet(&["keygen", "--out", f.key().to_str().expect("utf-8")]);
        assert!(out.status.success(), "keygen: {}", both(&out));
        std::fs::write(f.ops_toml(), f.ops_text(&f.certs.dir.join("operator"))).expect("ops.toml");
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The operator's signing key (its public half is `ops.key.pub`).
    pub fn key(&self) -> PathBuf {
        self.path().join("ops.key")
    }

    pub fn public_key(&self) -> PathBuf {
        self.path().join("ops.key.pub")
    }

    pub fn ops_toml(&self) -> PathBuf {
        self.path().join("ops.toml")
    }

    /// An ops.toml presenting the certificate `<cert>.pem` / `<cert>.key`.
    pub fn ops_text(&self, cert: &Path) -> String {
        format!(
            "[node]\nfleet = \"{FLEET}\"\n\n[uplink]\nurl = \"{}\"\nca_file = \"{}\"\ncert_file = \"{}.pem\"\nkey_file = \"{}.key\"\nkeep_alive = \"5s\"\n",
            self.broker.url(),
            self.certs.ca().display(),
            cert.display(),
            cert.display()
        )
    }

    /// The certificate and key of node `id` (CN = id), made on first use.
    pub fn node_cert(&self, id: &str) -> (PathBuf, PathBuf) {
        let name = format!("node-{id}");
        let pem = self.certs.dir.join(format!("{name}.pem"));
        if !pem.exists() {
            self.certs
                .make_leaf(&name, "ca", id, "extendedKeyUsage=clientAuth");
        }
        (pem, self.certs.dir.join(format!("{name}.key")))
    }

    /// A node's agent.toml sections: identity, uplink with its own
    /// certificate, fleet config trusting the operator's key. `extra` is
    /// appended (it must not repeat these sections).
    pub fn node_toml(&self, id: &str, groups: &[&str], extra: &str) -> String {
        let (cert, key) = self.node_cert(id);
        // The shipped rule set, so the rules stage starts healthy.
        let rules = format!(
            "[rules]\nfiles = [\"{}\"]\n",
            crate::rules::shipped_rules_glob()
        );
        let extra = if extra.contains("[rules]\n") {
            extra.replace("[rules]\n", &rules)
        } else {
            format!("{rules}\n{extra}")
        };
        let groups = groups
            .iter()
            .map(|g| format!("\"{g}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[node]\nid = \"{id}\"\nfleet = \"{FLEET}\"\ngroups = [{groups}]\n\n\
             {}\n\
             [fleet]\ntrusted_keys = [\"{}\"]\nconfirm_timeout = \"20s\"\n\n{extra}",
            crate::broker::uplink_toml(&self.broker.url(), &self.certs.ca(), (&cert, &key)),
            self.public_key().display()
        )
    }

    /// A scratch directory for node `id` (not started).
    pub fn node(&self, id: &str, groups: &[&str], extra: &str) -> Scratch {
        Scratch::new(&self.node_toml(id, groups, extra))
    }

    /// `edge-agent fleet ARGS --config ops.toml`.
    pub fn fleet(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .arg("fleet")
            .args(args)
            .arg("--config")
            .arg(self.ops_toml())
            .output()
            .expect("run edge-agent fleet")
    }

    /// `edge-agent fleet ARGS --config ops.toml` left running (`--watch`),
    /// its output read as it comes.
    pub fn fleet_live(&self, args: &[&str]) -> Live {
        let out = self.path().join(format!("live-{}.txt", crate::now_nanos()));
        let child = Command::new(agent_bin())
            .arg("fleet")
            .args(args)
            .arg("--config")
            .arg(self.ops_toml())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("live output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run edge-agent fleet");
        Live { child, out }
    }

    /// `fleet bundle` for `target` with an overlay and rule files (name,
    /// text); panics unless it succeeds. Returns the bundle's path.
    pub fn bundle(
        &self,
        target: &str,
        version: u64,
        overlay: &str,
        rules: &[(&str, &str)],
    ) -> PathBuf {
        let name = format!("{}-v{version}", target.replace(':', "-"));
        let dir = self.path().join("bundles").join(&name);
        std::fs::create_dir_all(&dir).expect("bundle dir");
        let overlay_path = dir.join("overlay.toml");
        std::fs::write(&overlay_path, overlay).expect("overlay");
        let out_path = self.path().join("bundles").join(format!("{name}.json"));
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let mut args: Vec<String> = vec![
            "bundle".into(),
            "--target".into(),
            target.into(),
            "--version".into(),
            version.to_string(),
            "--overlay".into(),
            path(&overlay_path),
            "--key".into(),
            path(&self.key()),
            "--out".into(),
            path(&out_path),
        ];
        for (file, text) in rules {
            let p = dir.join(file);
            std::fs::write(&p, text).expect("rule file");
            args.push("--rules-file".into());
            args.push(path(&p));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.fleet(&args);
        assert!(out.status.success(), "fleet bundle: {}", both(&out));
        out_path
    }

    /// `fleet publish`; panics unless it succeeds.
    pub fn publish(&self, bundle: &Path) {
        let out = self.fleet(&["publish", bundle.to_str().expect("utf-8")]);
        assert!(out.status.success(), "fleet publish: {}", both(&out));
    }

    /// `mosquitto_pub` as the holder of certificate `<cert>.pem`: QoS 1,
    /// retained if asked. Returns whether the client exited 0 (MQTT 3.1.1
    /// brokers acknowledge a publish they drop for lack of rights).
    pub fn raw_publish(
        &self,
        cert: &Path,
        key: &Path,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> bool {
        let file = self.path().join(format!("raw-{}.bin", std::process::id()));
        std::fs::write(&file, payload).expect("payload file");
        let mut c = self.mosquitto("mosquitto_pub", cert, key);
        c.args(["-t", topic, "-q", "1", "-f"]).arg(&file);
        if retain {
            c.arg("-r");
        }
        c.status().expect("run mosquitto_pub").success()
    }

    /// The operator's certificate and key.
    pub fn operator_cert(&self) -> (PathBuf, PathBuf) {
        let op = self.certs.dir.join("operator");
        (op.with_extension("pem"), op.with_extension("key"))
    }

    /// `mosquitto_sub` as the holder of `cert` for `secs` seconds: every
    /// message (retained ones first) as (topic, payload).
    pub fn sees(&self, cert: &Path, key: &Path, filter: &str, secs: u32) -> Vec<(String, Vec<u8>)> {
        let out = self
            .mosquitto("mosquitto_sub", cert, key)
            .args([
                "-t",
                filter,
                "-q",
                "1",
                "-W",
                &secs.to_string(),
                "-F",
                "%t\t%x",
            ])
            .output()
            .expect("run mosquitto_sub");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(t, hex)| (t.to_string(), unhex(hex)))
            .collect()
    }

    /// [`Fleet::sees`] on a thread, so the caller can publish meanwhile.
    pub fn sees_later(
        &self,
        cert: &Path,
        key: &Path,
        filter: &str,
        secs: u32,
    ) -> std::thread::JoinHandle<Vec<(String, Vec<u8>)>> {
        let mut c = self.mosquitto("mosquitto_sub", cert, key);
        c.args([
            "-t",
            filter,
            "-q",
            "1",
            "-W",
            &secs.to_string(),
            "-F",
            "%t\t%x",
        ]);
        std::thread::spawn(move || {
            let out = c.output().expect("run mosquitto_sub");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(t, hex)| (t.to_string(), unhex(hex)))
                .collect()
        })
    }

    /// [`Fleet::sees`] as the operator.
    pub fn operator_sees(&self, filter: &str, secs: u32) -> Vec<(String, Vec<u8>)> {
        let (cert, key) = self.operator_cert();
        self.sees(&cert, &key, filter, secs)
    }

    /// The operator's live view of `filter` (mosquitto_sub running until
    /// dropped), so a test can wait for messages as they arrive.
    pub fn watch(&self, filter: &str) -> Watch {
        let (cert, key) = self.operator_cert();
        let file = self
            .path()
            .join(format!("watch-{}.txt", crate::now_nanos()));
        let out = std::fs::File::create(&file).expect("watch file");
        let child = self
            .mosquitto("mosquitto_sub", &cert, &key)
            .args(["-t", filter, "-q", "1", "-F", "%t\t%x"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        // Subscribed once a retained message could arrive; give it a moment.
        std::thread::sleep(Duration::from_millis(300));
        Watch { child, file }
    }

    /// Messages the operator receives on `filter` from now on, each with
    /// the instant it arrived here (for latencies): (instant, topic,
    /// payload) on the returned channel. The subscriber is killed on drop
    /// of the [`Stream`].
    pub fn stream(&self, filter: &str) -> Stream {
        let (cert, key) = self.operator_cert();
        let mut child = self
            .mosquitto("mosquitto_sub", &cert, &key)
            .args(["-t", filter, "-q", "1", "-F", "%t\t%x"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let now = std::time::Instant::now();
                if let Some((t, hex)) = line.split_once('\t')
                    && tx.send((now, t.to_string(), unhex(hex))).is_err()
                {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Stream { child, rx }
    }

    fn mosquitto(&self, tool: &str, cert: &Path, key: &Path) -> Command {
        let mut c = Command::new(tool);
        c.args(["-h", "127.0.0.1", "-p", &self.broker.port.to_string()])
            .arg("--cafile")
            .arg(self.certs.ca())
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdin(Stdio::null());
        c
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

/// Messages the operator received on a filter, as they come.
pub struct Watch {
    child: Child,
    file: PathBuf,
}

impl Watch {
    /// Every message so far as (topic, JSON payload); payloads that are
    /// not JSON are left out.
    pub fn json(&self) -> Vec<(String, serde_json::Value)> {
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(t, hex)| Some((t.to_string(), serde_json::from_slice(&unhex(hex)).ok()?)))
            .collect()
    }

    /// Wait until a message satisfies `f`; that message.
    pub fn wait(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&str, &serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        wait_for(timeout, || {
            self.json()
                .into_iter()
                .find(|(t, v)| f(t, v))
                .map(|(_, v)| v)
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// See [`Fleet::stream`].
pub struct Stream {
    child: Child,
    pub rx: std::sync::mpsc::Receiver<(std::time::Instant, String, Vec<u8>)>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A long-running `edge-agent fleet ... --watch`. Killed on drop.
pub struct Live {
    pub child: Child,
    out: PathBuf,
}

impl Live {
    /// Every line it printed so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Wait until a line satisfies `f`; that line.
    pub fn wait_line(&self, timeout: Duration, mut f: impl FnMut(&str) -> bool) -> Option<String> {
        wait_for(timeout, || self.lines().into_iter().find(|l| f(l)))
    }

    /// Stop it with SIGINT (Ctrl-C) and return its exit code.
    pub fn interrupt(mut self) -> Option<i32> {
        // SAFETY: kill() on a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_for(Duration::from_secs(20), || {
            self.child.try_wait().ok().flatten()
        });
        status.and_then(|s| s.code())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// stdout and stderr of a command, for assertion messages.
pub fn both(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from mosquitto_sub"))
        .collect()
}
