//! Host metrics figures, side by side with node_exporter on the same
//! machine in the same run (`cargo bench -p edge-agent --bench metrics`):
//! - CPU time and wall time of one full collection cycle (in process);
//! - bytes per outbox batch, raw JSON and deflate+base64;
//! - the agent daemon's RSS with metrics on, and CPU and wall time per
//!   scrape of its endpoint, next to `prometheus-node-exporter` serving the
//!   same scrapes (its RSS, CPU and wall time).
//!
//! Prints figures; asserts nothing. Needs `prometheus-node-exporter`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_agent::metrics::{Collector, Encoding, HealthTargets, Roots, payload, render, select};
use edge_agent::status::StatusBoard;

const CYCLES: u32 = 200;
/// Scrapes per exporter; spaced over a second apart so the agent collects
/// afresh for each (it reuses a snapshot younger than a second).
const SCRAPES: u32 = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(in_process());
    side_by_side();
}

fn process_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers and timevals; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_SELF is valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

async fn in_process() {
    let (reports, _rx) = edge_agent::report::channel(4);
    // The K3s probes point at the default local ports: on this machine
    // nothing listens there, so each probe is one refused connection, as on
    // an agent node where K3s is down.
    let targets = HealthTargets {
        kubelet_url: "http://127.0.0.1:10248/healthz".into(),
        apiserver_url: "https://127.0.0.1:6443/readyz".into(),
        ca_file: "/var/lib/rancher/k3s/server/tls/server-ca.crt".into(),
        ..Default::default()
    };
    let mut c = Collector::new(
        Roots::default(),
        targets,
        select(&[]),
        StatusBoard::new(),
        reports.dropped().clone(),
    );
    let first = c.collect().await.unwrap();
    let cpu0 = process_cpu_seconds();
    let t0 = Instant::now();
    let mut walls = Vec::with_capacity(CYCLES as usize);
    for _ in 0..CYCLES {
        let t = Instant::now();
        c.collect().await.unwrap();
        walls.push(t.elapsed().as_secs_f64());
    }
    let wall = t0.elapsed().as_secs_f64() / f64::from(CYCLES);
    let cpu = (process_cpu_seconds() - cpu0) / f64::from(CYCLES);
    walls.sort_by(f64::total_cmp);
    println!(
        "== one full collection cycle (all collectors, {} series), {CYCLES} cycles",
        first.series()
    );
    println!(
        "wall: mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms; CPU (all threads): {:.2} ms per cycle",
        wall * 1e3,
        walls[walls.len() / 2] * 1e3,
        walls[walls.len() * 99 / 100] * 1e3,
        cpu * 1e3
    );

    let snap = c.collect().await.unwrap();
    let raw = serde_json::to_vec(&payload(&snap, 0, 30_000, Encoding::Json)).unwrap();
    let packed = serde_json::to_vec(&payload(&snap, 0, 30_000, Encoding::DeflateBase64)).unwrap();
    let text = render(&snap);
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(payload(&snap, 0, 30_000, Encoding::DeflateBase64));
    }
    let encode_ms = t.elapsed().as_secs_f64() * 10.0;
    println!("== bytes per batch ({} series)", snap.series());
    println!(
        "raw JSON: {} B; deflate+base64: {} B ({:.1}x smaller; encoding {:.2} ms); Prometheus text of the same snapshot: {} B",
        raw.len(),
        packed.len(),
        raw.len() as f64 / packed.len() as f64,
        encode_ms,
        text.len()
    );
    println!(
        "per day at 30 s: raw {:.1} MiB, compressed {:.1} MiB",
        raw.len() as f64 * 2880.0 / 1048576.0,
        packed.len() as f64 * 2880.0 / 1048576.0
    );
}

fn get(addr: &str) -> (Duration, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    (t.elapsed(), body.len())
}

fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tck
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_up(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn measure(name: &str, pid: u32, addr: &str) {
    get(addr); // warm
    std::thread::sleep(Duration::from_millis(1100));
    let cpu0 = proc_cpu(pid);
    let mut walls = Vec::new();
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        let (w, b) = get(addr);
        walls.push(w.as_secs_f64() * 1e3);
        bytes = b;
        std::thread::sleep(Duration::from_millis(1100));
    }
    let cpu_ms = (proc_cpu(pid) - cpu0) * 1e3 / f64::from(SCRAPES);
    walls.sort_by(f64::total_cmp);
    println!(
        "{name:<24} RSS {:>5.1} MiB | scrape wall p50 {:>6.2} ms, max {:>6.2} ms | CPU {:>5.1} ms/scrape (incl. idle between, 10 ms ticks) | {} B",
        rss_mib(pid),
        walls[walls.len() / 2],
        walls[walls.len() - 1],
        cpu_ms,
        bytes
    );
}

fn side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let agent_addr = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"bench\"\n[paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\n\
             [sensor]\nenabled = false\n[metrics]\nlisten = \"{agent_addr}\"\ninterval = \"30s\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let agent = Killed(
        Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ne_addr = format!("127.0.0.1:{}", free_port());
    let ne = Killed(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={ne_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter"),
    );
    wait_up(&agent_addr);
    wait_up(&ne_addr);
    println!(
        "== side by side, {SCRAPES} scrapes each, 1.1 s apart (every scrape a fresh collection)"
    );
    measure("edge-agent (metrics on)", agent.0.id(), &agent_addr);
    measure("node_exporter", ne.0.id(), &ne_addr);
}
