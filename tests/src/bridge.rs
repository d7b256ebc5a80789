//! Helpers for the fleet bridge tests: Debian's real `prometheus` with its
//! remote-write receiver on a scratch port and storage directory, a
//! running `edge-agent fleet bridge` with its own ops.toml and state, and
//! a small HTTP receiver standing in for falcosidekick (it records each
//! POST it answered with 200, and can hold requests without answering).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::broker::{Certs, free_port};
use crate::metrics::http_get;
use crate::{agent_bin, wait_for};

/// A `prometheus` process. Killed on drop.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    /// Start with the remote-write receiver on, storage under `dir`, and an
    /// out-of-order window (batches of one node may reach it out of order
    /// through two bridges).
    pub fn start(dir: &Path) -> Prometheus {
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        std::fs::write(
            dir.join("prometheus.yml"),
            "global:\n  scrape_interval: 1h\nstorage:\n  tsdb:\n    out_of_order_time_window: 2h\n",
        )
        .expect("prometheus.yml");
        let mut p = Prometheus {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        p.launch();
        p
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        self.child = Some(child);
        let ready = wait_for(Duration::from_secs(60), || {
            http_get(&self.addr(), "/-/ready")
                .ok()
                .filter(|(c, _)| *c == 200)
        });
        assert!(
            ready.is_some(),
            "prometheus did not become ready; log:\n{}",
            self.log()
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// SIGTERM and wait: an outage that keeps the stored data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill() on the pid of a child we still own.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// Start again on the same port and storage.
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// An instant PromQL query; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (code, body) = http_get(
            &self.addr(),
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .unwrap_or((0, String::new()));
        if code != 200 {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The timestamps (ms) of every sample of `selector` in the last `range`.
    pub fn sample_times(&self, selector: &str, range: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for series in self.query(&format!("{selector}[{range}]")) {
            for v in series["values"].as_array().into_iter().flatten() {
                if let Some(t) = v[0].as_f64() {
                    out.push((t * 1000.0).round() as u64);
                }
            }
        }
        out.sort_unstable();
        out
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Percent-encoding for a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The ops.toml of a bridge: the test fleet, mTLS with the test client
/// certificate, its own state directory and client id.
pub fn ops_toml(
    dir: &Path,
    certs: &Certs,
    broker_url: &str,
    client_id: &str,
    bridge: &str,
) -> (PathBuf, u16) {
    std::fs::create_dir_all(dir).expect("bridge dir");
    let port = free_port();
    let text = format!(
        "[node]\nfleet = \"test-fleet\"\n[paths]\nstate_dir = \"{state}\"\nruntime_dir = \"{state}\"\n{uplink}[bridge]\nclient_id = \"{client_id}\"\nlisten = \"127.0.0.1:{port}\"\n{bridge}\n",
        state = dir.join("state").display(),
        uplink = certs.uplink_toml(broker_url),
    );
    let path = dir.join("ops.toml");
    std::fs::write(&path, text).expect("ops.toml");
    (path, port)
}

/// A running `edge-agent fleet bridge`. Killed on drop.
pub struct Bridge {
    pub ops: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Bridge {
    pub fn start(ops: &Path, port: u16) -> Bridge {
        let mut b = Bridge {
            ops: ops.to_path_buf(),
            port,
            child: None,
            log: ops.with_file_name("bridge.log"),
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("bridge log");
        let child = Command::new(agent_bin())
            .args(["fleet", "bridge", "--config"])
            .arg(&self.ops)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edge-agent fleet bridge");
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(20), || {
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("the bridge exited with {s}; log:\n{}", self.log());
            }
            self.status().filter(|s| s["connected"] == true)
        });
        assert!(
            up.is_some(),
            "the bridge did not connect; log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its `/status` document, if it answers.
    pub fn status(&self) -> Option<Value> {
        let (code, body) = http_get(&format!("127.0.0.1:{}", self.port), "/status").ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill() on the pid of a child we still own.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGKILL: nothing acknowledged after this.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200, and the body is recorded.
    Take = 0,
    /// Reads the request and never answers (nothing recorded).
    Hold = 1,
    /// 503 (nothing recorded).
    Fail = 2,
}

/// A webhook receiver on 127.0.0.1 (HTTP/1.1, keep-alive).
pub struct Receiver {
    pub port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    mode: Arc<AtomicU8>,
    held: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let r = Receiver {
            port,
            bodies: Arc::default(),
            mode: Arc::new(AtomicU8::new(Mode::Take as u8)),
            held: Arc::default(),
        };
        let (bodies, mode, held) = (r.bodies.clone(), r.mode.clone(), r.held.clone());
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (bodies, mode, held) = (bodies.clone(), mode.clone(), held.clone());
                std::thread::spawn(move || serve(s, &bodies, &mode, &held));
            }
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/falco", self.port)
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    /// Requests read and not answered so far (in [`Mode::Hold`]).
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// Every body answered with 200, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("bodies").clone()
    }
}

fn serve(s: TcpStream, bodies: &Mutex<Vec<Value>>, mode: &AtomicU8, held: &AtomicU64) {
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        match mode.load(Ordering::SeqCst) {
            1 => {
                held.fetch_add(1, Ordering::SeqCst);
                // Never answer; the peer gives up or dies.
                let mut sink = [0u8; 1];
                let _ = reader.read(&mut sink);
                return;
            }
            2 => {
                if w.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
                    .is_err()
                {
                    return;
                }
            }
            _ => {
                if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                bodies.lock().expect("bodies").push(v);
            }
        }
    }
}
