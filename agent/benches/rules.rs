//! Rules engine throughput and memory, on one core.
//!
//! `cargo bench -p edge-agent --bench rules` prints events/s through the
//! shipped rule set, Falco's stable rules and Falco's three official files
//! together (stable, incubating, sandbox) over a realistic mix
//! (mostly opens and execs that match nothing, about 2 % that match), and
//! the heap each loaded rule set holds. Budget: >= 1,000,000 events/s per
//! core, with the shipped rules and with Falco's whole corpus.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use edge_agent::config::Priority;
use edge_agent::event::{Container, Event, EventType, Fd, L4Proto, Process, Role};
use edge_agent::rules::engine::{Engine, Limits};
use edge_agent::rules::load_paths;

/// Counts live heap bytes, to measure what a loaded rule set holds.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only
// counts sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` above with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from this allocator with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn proc(pid: u32, path: &str, argv: &[&str]) -> Arc<Process> {
    let mut p = Process::new(pid, 1, path, argv);
    p.start_time = 1_700_000_000_000_000_000;
    Arc::new(p)
}

/// A day on an edge node, compressed: mostly library and config reads,
/// short-lived execs from shells and kubelet probes, a few connects, and a
/// trickle of things the rules are there for.
fn mix(len: u32) -> Vec<Event> {
    let host = Container::host();
    let ct = Arc::new(Container {
        id: "0123456789ab".into(),
        name: Some("web".into()),
        image_repository: Some("docker.io/library/nginx".into()),
        pod_name: Some("web-1".into()),
        pod_namespace: Some("default".into()),
        ..Default::default()
    });
    let bash = proc(100, "/bin/bash", &["bash"]);
    let containerd = proc(50, "/usr/bin/containerd", &["containerd"]);
    let init = proc(1, "/sbin/init", &["init"]);
    let opens = [
        (
            "nginx",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            libc::O_RDONLY,
        ),
        (
            "k3s",
            "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            libc::O_RDONLY,
        ),
        (
            "python3",
            "/usr/lib/python3.11/json/__init__.py",
            libc::O_RDONLY,
        ),
        ("cat", "/etc/hostname", libc::O_RDONLY),
        (
            "containerd",
            "/var/lib/containerd/io.containerd.content.v1.content/blobs/sha256/ab",
            libc::O_RDONLY,
        ),
        ("bash", "/etc/ld.so.cache", libc::O_RDONLY | libc::O_CLOEXEC),
        (
            "rsyslogd",
            "/var/log/syslog",
            libc::O_WRONLY | libc::O_APPEND,
        ),
        ("node", "/app/node_modules/express/index.js", libc::O_RDONLY),
        (
            "k3s",
            "/tmp/k3s-cache.tmp",
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        ),
        ("systemd", "/proc/self/mountinfo", libc::O_RDONLY),
    ];
    let execs: [(&str, &[&str]); 6] = [
        ("/bin/ls", &["ls", "-l"]),
        ("/usr/bin/grep", &["grep", "-q", "x", "/etc/os-release"]),
        ("/usr/bin/cat", &["cat", "/proc/loadavg"]),
        ("/bin/sh", &["sh", "-c", "test -f /tmp/healthy"]),
        ("/usr/bin/date", &["date"]),
        (
            "/usr/bin/curl",
            &["curl", "-s", "http://localhost:8080/healthz"],
        ),
    ];
    let mut v = Vec::new();
    for i in 0..len {
        let n = i as usize;
        let in_ct = i % 3 == 0;
        let (e, _) = match i % 100 {
            // 2 % that match: a terminal shell in a container, a shadow read.
            0 => {
                let mut p = Process::new(7, 6, "/bin/bash", &["bash"]);
                p.tty = 34816;
                let mut e = Event::new(EventType::Execve, Arc::new(p));
                e.ancestors = vec![containerd.clone()];
                e.container = ct.clone();
                (e, true)
            }
            1 => {
                let mut e = Event::new(
                    EventType::Openat,
                    proc(8, "/usr/bin/cat", &["cat", "/etc/shadow"]),
                );
                e.evt.args.flags = Some(libc::O_RDONLY as u64);
                e.evt.res = 3;
                e.fd = Some(Fd::file(3, "/etc/shadow"));
                (e, true)
            }
            // 30 % execs that match nothing.
            2..=31 => {
                let (path, argv) = execs[n % execs.len()];
                let mut e = Event::new(EventType::Execve, proc(200 + i, path, argv));
                e.ancestors = vec![bash.clone(), init.clone()];
                e.container = if in_ct { ct.clone() } else { host.clone() };
                (e, false)
            }
            // 5 % connects.
            32..=36 => {
                let mut e = Event::new(EventType::Connect, proc(300, "/usr/bin/curl", &["curl"]));
                let l: SocketAddr = "10.42.0.7:40000".parse().unwrap();
                let r: SocketAddr = "10.43.12.9:8080".parse().unwrap();
                e.fd = Some(Fd::socket(4, l, r, Role::Client, L4Proto::Tcp));
                e.container = if in_ct { ct.clone() } else { host.clone() };
                (e, false)
            }
            // 3 %: process exits, clones, dup2 onto files.
            37..=39 => {
                let ty = [EventType::Procexit, EventType::Clone, EventType::Dup2][n % 3];
                let mut e = Event::new(ty, bash.clone());
                if ty == EventType::Dup2 {
                    e.evt.res = 1;
                    e.fd = Some(Fd::file(3, "/tmp/out"));
                }
                (e, false)
            }
            // 60 % opens that match nothing.
            _ => {
                let (name, path, flags) = opens[n % opens.len()];
                let mut e = Event::new(
                    EventType::Openat,
                    proc(400, &format!("/usr/bin/{name}"), &[name]),
                );
                e.evt.args.flags = Some(flags as u64);
                e.evt.args.name = Some(path.into());
                e.evt.res = 5;
                e.fd = Some(Fd::file(5, path));
                e.container = if in_ct { ct.clone() } else { host.clone() };
                (e, false)
            }
        };
        let mut e = e;
        e.evt.num = u64::from(i) + 1;
        e.evt.time = 1_700_000_100_000_000_000 + u64::from(i) * 1000;
        v.push(e);
    }
    v
}

/// CPU time of this thread: the machine is shared, so events per CPU-second
/// is the per-core figure; wall-clock rates are printed beside it.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Events/CPU-s of the median and of the fastest pass over the mix: on a
/// shared machine the rate over 3 s moves by a third from run to run; the
/// fastest pass is what the code costs when nothing else takes the caches.
fn passes(v: &mut [Duration], events: usize) -> (f64, f64) {
    v.sort();
    let rate = |d: Duration| events as f64 / d.as_secs_f64().max(1e-9);
    (rate(v[v.len() / 2]), rate(v[0]))
}

fn run(label: &str, files: &[PathBuf], events: &[Event]) {
    // RULES_BENCH_ONLY=falco: only the sets whose label contains it.
    if std::env::var("RULES_BENCH_ONLY").is_ok_and(|only| !label.contains(&only)) {
        return;
    }
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let loaded = load_paths(files);
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let rules = loaded.set.rules.len();
    let errors = loaded.errors().count();
    let held = LIVE.load(Ordering::Relaxed) - before;
    let mut engine = Engine::new(
        loaded,
        Limits {
            rate: 1.0,
            max_burst: 20,
            alert_threshold: Priority::Critical,
        },
        "bench".into(),
        0,
    );
    let set = engine.set().clone();

    // Evaluation only: which rules match (no alert rendering).
    let mut matches = 0u64;
    let mut eval_passes = Vec::new();
    let (mut n, t, cpu) = (0u64, Instant::now(), thread_cpu());
    while t.elapsed() < Duration::from_secs(3) {
        let pass = thread_cpu();
        for e in events {
            set.for_each_match(black_box(e), |_, _| matches += 1);
        }
        eval_passes.push(thread_cpu() - pass);
        n += events.len() as u64;
    }
    let eval_wall = n as f64 / t.elapsed().as_secs_f64();
    let eval_rate = n as f64 / (thread_cpu() - cpu).as_secs_f64();

    // The stage's path: counters, token buckets, alert rendering.
    let mut out = Vec::new();
    let mut engine_passes = Vec::new();
    let (mut m, t, cpu) = (0u64, Instant::now(), thread_cpu());
    while t.elapsed() < Duration::from_secs(3) {
        let pass = thread_cpu();
        for e in events {
            engine.process(black_box(e), e.evt.time, &mut out);
            out.clear();
        }
        engine_passes.push(thread_cpu() - pass);
        m += events.len() as u64;
    }
    let engine_wall = m as f64 / t.elapsed().as_secs_f64();
    let engine_rate = m as f64 / (thread_cpu() - cpu).as_secs_f64();
    println!(
        "{label}: {rules} rules ({errors} failed), load+compile {load_ms:.1} ms, heap held {:.1} KiB ({:.1} KiB/rule)",
        held as f64 / 1024.0,
        held as f64 / 1024.0 / rules.max(1) as f64
    );
    let (eval_median, eval_best) = passes(&mut eval_passes, events.len());
    let (engine_median, engine_best) = passes(&mut engine_passes, events.len());
    println!(
        "  evaluate only:           {:>9.0} events/CPU-s ({:.0} ns/event; wall {:.0}/s; passes over the mix: median {eval_median:.0}/s, best {eval_best:.0}/s), {:.2} % of events matched",
        eval_rate,
        1e9 / eval_rate,
        eval_wall,
        100.0 * matches as f64 / n as f64
    );
    println!(
        "  engine (limits, alerts): {:>9.0} events/CPU-s ({:.0} ns/event; wall {:.0}/s; passes over the mix: median {engine_median:.0}/s, best {engine_best:.0}/s)",
        engine_rate,
        1e9 / engine_rate,
        engine_wall
    );
}

fn main() {
    // `cargo bench` passes --bench; a plain run of the binary works too.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // RULES_BENCH_EVENTS=n: the first n events of the mix (its pattern
    // repeats every 300 events) instead of 10,000, to see what the mix's
    // size costs in cache misses.
    let len = std::env::var("RULES_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let events = mix(len);
    println!(
        "event mix: {} events (60 % opens, 30 % execs, 5 % connects, 3 % other, 2 % matching)",
        events.len()
    );
    run(
        "shipped rules",
        &[root.join("configs/rules/*.yaml")],
        &events,
    );
    let falco = root.join("tests/data/falco");
    run(
        "falco stable rules",
        &[falco.join("falco_rules.yaml")],
        &events,
    );
    // Falco's whole official corpus, loaded in Falco's order.
    run(
        "falco stable + incubating + sandbox rules",
        &[
            falco.join("falco_rules.yaml"),
            falco.join("falco-incubating_rules.yaml"),
            falco.join("falco-sandbox_rules.yaml"),
        ],
        &events,
    );
}
