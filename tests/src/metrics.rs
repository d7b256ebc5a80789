//! Helpers for the host metrics tests: a minimal HTTP GET, a Prometheus
//! text parser, the real `prometheus-node-exporter` and `promtool`, and
//! stand-ins for the K3s endpoints (a kubelet-like plain HTTP server and
//! an `openssl s_server` with a test CA), since K3s itself cannot be
//! installed here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{Scratch, status_json, wait_for};

pub use crate::broker::free_port;

/// `GET path` over HTTP/1.0; the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// One parsed series: name and labels (sorted by label name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl SeriesKey {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse the Prometheus text format (the subset exporters emit: no
/// timestamps needed, escapes in label values handled).
pub fn parse_exposition(text: &str) -> BTreeMap<SeriesKey, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample line has a name");
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            rest = &rest[1..];
            loop {
                rest = rest.trim_start_matches(',');
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find("=\"").expect("label=\"value\"");
                let key = rest[..eq].to_string();
                rest = &rest[eq + 2..];
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect("closing quote");
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => panic!("dangling escape"),
                        },
                        '"' => break i,
                        c => value.push(c),
                    }
                };
                rest = &rest[end + 1..];
                labels.push((key, value));
            }
        }
        let value_text = rest.split_whitespace().next().expect("value");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        labels.sort();
        out.insert(SeriesKey { name, labels }, value);
    }
    out
}

/// The metrics endpoint's address once the metrics stage has bound it
/// (`listen = "127.0.0.1:0"` picks a free port; status says which).
pub fn metrics_addr(scratch: &Scratch) -> String {
    wait_for(Duration::from_secs(20), || {
        let st = status_json(scratch);
        st["stages"]["metrics"]["details"]["listen"]
            .as_str()
            .filter(|l| l.contains(':'))
            .map(str::to_string)
    })
    .expect("the metrics stage never reported its listen address")
}

/// The metrics stage's status detail `key` as a number.
pub fn metrics_detail(scratch: &Scratch, key: &str) -> Option<f64> {
    status_json(scratch)["stages"]["metrics"]["details"][key].as_f64()
}

/// Wait until the metrics stage has collected at least `n` times.
pub fn wait_collections(scratch: &Scratch, n: u64, timeout: Duration) -> u64 {
    wait_for(timeout, || {
        metrics_detail(scratch, "collections_total")
            .map(|c| c as u64)
            .filter(|c| *c >= n)
    })
    .unwrap_or_else(|| panic!("fewer than {n} collections in {timeout:?}"))
}

/// Resident set of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// `promtool check metrics` on `text`: exit code and everything it printed.
pub fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

/// The real node_exporter on a free local port. Killed on drop.
pub struct NodeExporter {
    child: Child,
    pub addr: String,
}

impl NodeExporter {
    pub fn start(extra_args: &[&str]) -> NodeExporter {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={addr}"))
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (scripts/deps.sh installs it)");
        let ne = NodeExporter { child, addr };
        wait_for(Duration::from_secs(20), || {
            http_get(&ne.addr, "/metrics")
                .ok()
                .filter(|(c, _)| *c == 200)
        })
        .expect("node_exporter did not answer in 20s");
        ne
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stands in for the kubelet's health port (K3s is not installable here):
/// plain HTTP, `GET /healthz` answers `200 ok` like the kubelet does.
pub struct KubeletLookalike {
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeletLookalike {
    pub fn start() -> KubeletLookalike {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let reply = if req.starts_with("GET /healthz ") {
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = s.write_all(reply.as_bytes());
            }
        });
        KubeletLookalike {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KubeletLookalike {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A test PKI made with the openssl CLI: a CA standing in for K3s's
/// server CA, a server certificate for 127.0.0.1 and a client certificate.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn create(dir: &Path, ca_name: &str) -> TestPki {
        std::fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let subj = format!("/CN={ca_name}");
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subj,
        ]);
        run(&ca);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, cn) in [
            ("server", "/CN=kube-apiserver"),
            ("client", "/CN=edge-agent"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let ext = format!("{name}.ext");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
            run(&req);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        TestPki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Stands in for the K3s API server's `/readyz`: `openssl s_server -WWW`
/// with the test PKI, requiring a client certificate as K3s does for
/// authenticated checks. Answers `200 ok`. Killed on drop.
pub struct ReadyzLookalike {
    child: Child,
    pub addr: String,
}

impl ReadyzLookalike {
    pub fn start(pki: &TestPki) -> ReadyzLookalike {
        let www = pki.dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("readyz"), "ok").unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept", &addr])
            .arg("-cert")
            .arg(pki.path("server.pem"))
            .arg("-key")
            .arg(pki.path("server.key"))
            .arg("-CAfile")
            .arg(pki.path("ca.pem"))
            .args(["-Verify", "1"])
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let r = ReadyzLookalike { child, addr };
        wait_for(Duration::from_secs(20), || TcpStream::connect(&r.addr).ok())
            .expect("openssl s_server did not listen in 20s");
        r
    }
}

impl Drop for ReadyzLookalike {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
