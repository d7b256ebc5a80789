//! Sensor benchmark (prints figures; run as root):
//!
//!     cargo bench -p edge-agent --bench sensor
//!
//! 1. Kernel-side cost: an exec-heavy loop (fork+exec of /bin/true, waited
//!    for) and an open-heavy loop (openat+close of a watched and of an
//!    unwatched file), with nothing attached, with the real `edge-agent run`
//!    sensor attached, and with `bpftrace` hooking the same tracepoints and
//!    printing every event (a peer), rounds interleaved in the same run; the
//!    median of the rounds is reported. The slowdown is measured on the CPU
//!    time the workload itself spends (user + system, its children
//!    included: the eBPF programs run in the workload's own syscalls), which
//!    a loaded machine does not distort the way it distorts wall time (also
//!    shown). The agent's own CPU (its reader decoding the records) and
//!    resident memory are reported separately.
//! 2. User-side cost: records built the way the kernel writes them, decoded
//!    and enriched (process table, ancestors, users, containers) on one
//!    core, in events/s.
//!
//! `EA_BENCH_SCALE` (default 1.0) scales the loop sizes; `EA_BENCH_ROUNDS`
//! (default 3) the rounds. Skips the kernel part when not root or when
//! bpftrace is missing (the peer column then says so).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_agent::config::SensorConfig;
use edge_agent::sensor::abi::{Kind, RecordBuilder, Sock};
use edge_agent::sensor::proctable::BootClock;
use edge_agent::sensor::{Decoded, Enricher};

const EXECS: f64 = 20_000.0;
const OPENS: f64 = 1_000_000.0;

fn scale() -> f64 {
    std::env::var("EA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn rounds() -> usize {
    std::env::var("EA_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is ignored.
    user_side();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("\nkernel-side benchmark skipped: run as root");
        return;
    }
    kernel_side();
}

// ---- kernel side -----------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Bare,
    Sensor,
    /// The sensor attached but its reader stopped (SIGSTOP): the cost of the
    /// kernel programs alone, without the reader competing for the CPUs.
    SensorPaused,
    Bpftrace,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "nothing attached",
            Setup::Sensor => "edge-agent sensor",
            Setup::SensorPaused => "sensor, reader paused",
            Setup::Bpftrace => "bpftrace (peer)",
        }
    }
}

struct Running {
    child: Child,
    /// Holds the config and state until the process is gone.
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to a child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sensor() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"bench\"\n[paths]\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\n[metrics]\nenabled = false\nlisten = \"\"\n[sensor]\nenabled = true\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start edge-agent");
    let r = Running { child, _dir: dir };
    // Ready when status shows the sensor running.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["status", "--json", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let state = v["stages"]["sensor"]["state"].as_str().unwrap_or("");
        if state == "running" || state == "degraded" {
            break;
        }
        assert!(state != "failed", "the sensor failed: {v}");
        assert!(Instant::now() < deadline, "the sensor did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sched:sched_process_exec { printf("exec %d %s\n", pid, str(args->filename)); }
tracepoint:sched:sched_process_fork { printf("fork %d %d\n", args->parent_pid, args->child_pid); }
tracepoint:sched:sched_process_exit { printf("exit %d %s\n", pid, comm); }
tracepoint:syscalls:sys_enter_openat { @f[tid] = args->filename; @fl[tid] = args->flags; }
tracepoint:syscalls:sys_exit_openat /@f[tid]/ { printf("open %d %s %d %d\n", pid, str(@f[tid]), @fl[tid], args->ret); delete(@f[tid]); delete(@fl[tid]); }
"#;

fn start_bpftrace() -> Option<Running> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bpftrace.out");
    let child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_SCRIPT])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Running { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("Attaching")
    {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Attaching is printed before the probes are live.
    std::thread::sleep(Duration::from_millis(500));
    Some(r)
}

/// Run time (ns) and runs of each loaded program named `ea_*`, from
/// `bpftool` (kernel.bpf_stats_enabled must be 1). None without bpftool.
fn bpf_stats() -> Option<std::collections::BTreeMap<String, (u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut t = std::collections::BTreeMap::new();
    for p in v.as_array()? {
        if let Some(n) = p["name"].as_str().filter(|n| n.starts_with("ea_")) {
            let e = t.entry(n.to_string()).or_insert((0, 0));
            e.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            e.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Some(t)
}

/// Per-program average ns per run between two snapshots.
fn per_run(
    a: &std::collections::BTreeMap<String, (u64, u64)>,
    b: &std::collections::BTreeMap<String, (u64, u64)>,
) -> Vec<(String, f64, u64)> {
    b.iter()
        .filter_map(|(n, (t1, c1))| {
            let (t0, c0) = a.get(n).copied().unwrap_or((0, 0));
            let runs = c1.checked_sub(c0)?;
            (runs > 0).then(|| (n.clone(), (t1 - t0) as f64 / runs as f64, runs))
        })
        .collect()
}

fn set_bpf_stats(on: bool) -> bool {
    std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    )
    .is_ok()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime: fields 14 and 15 (11 and 12 after the comm).
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// System and user CPU time of this process and its waited-for children.
fn workload_cpu() -> (Duration, Duration) {
    let get = |who| {
        // SAFETY: getrusage fills the struct we pass; zeroed is a valid start.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid `who` and a valid out pointer.
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        (tv(ru.ru_stime), tv(ru.ru_utime))
    };
    let (a, b) = (get(libc::RUSAGE_SELF), get(libc::RUSAGE_CHILDREN));
    (a.0 + b.0, a.1 + b.1)
}

/// One loop's wall time and the workload's CPU time (the eBPF programs
/// run in its system time).
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    sys: Duration,
}

fn measure(f: impl FnOnce()) -> Cost {
    let (t, (s0, u0)) = (Instant::now(), workload_cpu());
    f();
    let (s1, u1) = workload_cpu();
    Cost {
        wall: t.elapsed(),
        cpu: (s1 - s0) + (u1 - u0),
        sys: s1 - s0,
    }
}

fn exec_loop(n: usize) -> Cost {
    measure(|| {
        for _ in 0..n {
            // Without cargo's LD_LIBRARY_PATH: under it the dynamic loader
            // tries ~76 library paths that do not exist on every exec, and
            // the loop would measure failed opens, not execs.
            let st = Command::new("/bin/true")
                .env_remove("LD_LIBRARY_PATH")
                .status()
                .unwrap();
            assert!(st.success());
        }
    })
}

fn open_loop(path: &Path, n: usize) -> Cost {
    let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    measure(|| {
        for _ in 0..n {
            // SAFETY: a valid C string; the fd is closed at once.
            let fd = unsafe {
                libc::openat(libc::AT_FDCWD, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
            };
            assert!(fd >= 0);
            // SAFETY: closing the fd just opened.
            unsafe { libc::close(fd) };
        }
    })
}

struct Row {
    setup: Setup,
    exec: Vec<Cost>,
    open_watched: Vec<Cost>,
    open_unwatched: Vec<Cost>,
    /// The agent's (or bpftrace's) CPU per loop, as a share of the loop's wall time.
    agent_cpu: Vec<[f64; 3]>,
    /// Time inside the sensor's eBPF programs per loop iteration, ns.
    bpf_ns: Vec<[f64; 3]>,
    /// Per program during the exec loop: average ns per run, runs.
    bpf_exec_runs: Vec<Vec<(String, f64, u64)>>,
    rss_kib: u64,
}

fn median(v: &[Cost], f: impl Fn(&Cost) -> Duration) -> Duration {
    let mut d: Vec<Duration> = v.iter().map(f).collect();
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

fn kernel_side() {
    let execs = (EXECS * scale()) as usize;
    let opens = (OPENS * scale()) as usize;
    // /etc is watched by default (read-only opens there are reported); the
    // file under /tmp is not (the kernel drops those opens).
    let watched = PathBuf::from("/etc/hostname");
    let scratch = tempfile::tempdir().unwrap();
    let unwatched = scratch.path().join("unwatched");
    std::fs::write(&unwatched, b"x").unwrap();
    let bpftrace_ok = Command::new("bpftrace").arg("--version").output().is_ok();
    let mut rows: Vec<Row> = [
        Setup::Bare,
        Setup::Sensor,
        Setup::SensorPaused,
        Setup::Bpftrace,
    ]
    .into_iter()
    .filter(|s| *s != Setup::Bpftrace || bpftrace_ok)
    .map(|setup| Row {
        setup,
        exec: vec![],
        open_watched: vec![],
        open_unwatched: vec![],
        agent_cpu: vec![],
        bpf_ns: vec![],
        bpf_exec_runs: vec![],
        rss_kib: 0,
    })
    .collect();
    println!(
        "\nkernel side: {execs} fork+exec of /bin/true, {opens} openat+close (watched {}, unwatched {}), {} rounds",
        watched.display(),
        unwatched.display(),
        rounds()
    );
    for round in 0..rounds() {
        for row in rows.iter_mut() {
            let running = match row.setup {
                Setup::Bare => None,
                Setup::Sensor | Setup::SensorPaused => Some(start_sensor()),
                Setup::Bpftrace => match start_bpftrace() {
                    Some(r) => Some(r),
                    None => continue,
                },
            };
            let pid = running.as_ref().map(|r| r.child.id());
            let paused = row.setup == Setup::SensorPaused;
            if let (true, Some(pid)) = (paused, pid) {
                // SAFETY: stopping our own child; continued below.
                unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
            }
            let mut agent = [0.0; 3];
            let mut bpf = [0.0; 3];
            let mut exec_runs = Vec::new();
            let sensor = row.setup == Setup::Sensor;
            let stats = sensor && set_bpf_stats(true);
            let mut run = |i: usize, n: usize, f: &mut dyn FnMut() -> Cost| -> Cost {
                let ticks0 = pid.map(cpu_ticks).unwrap_or(0);
                let b0 = if stats { bpf_stats() } else { None };
                let c = f();
                if let Some(pid) = pid {
                    let ticks = cpu_ticks(pid) - ticks0;
                    agent[i] = ticks as f64 / 100.0 / c.wall.as_secs_f64() * 100.0;
                }
                if let (Some(b0), Some(b1)) = (b0, if stats { bpf_stats() } else { None }) {
                    let total = |m: &std::collections::BTreeMap<String, (u64, u64)>| {
                        m.values().map(|v| v.0).sum::<u64>()
                    };
                    bpf[i] = (total(&b1) - total(&b0)) as f64 / n as f64;
                    if i == 0 {
                        exec_runs = per_run(&b0, &b1);
                    }
                }
                c
            };
            row.exec.push(run(0, execs, &mut || exec_loop(execs)));
            row.open_watched
                .push(run(1, opens, &mut || open_loop(&watched, opens)));
            row.open_unwatched
                .push(run(2, opens, &mut || open_loop(&unwatched, opens)));
            if let (true, Some(pid)) = (paused, pid) {
                // SAFETY: continuing the child stopped above, so it can exit.
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
            if stats {
                set_bpf_stats(false);
                row.bpf_ns.push(bpf);
                row.bpf_exec_runs.push(exec_runs);
            }
            if let Some(pid) = pid {
                row.agent_cpu.push(agent);
                row.rss_kib = row.rss_kib.max(rss_kib(pid));
            }
            drop(running);
            eprintln!("  round {} {}: done", round + 1, row.setup.name());
        }
    }
    let base = &rows[0];
    let cpu = |c: &Cost| c.cpu;
    let wall = |c: &Cost| c.wall;
    let (be, bw, bu) = (
        median(&base.exec, cpu),
        median(&base.open_watched, cpu),
        median(&base.open_unwatched, cpu),
    );
    let bs = (
        median(&base.exec, |c| c.sys),
        median(&base.open_watched, |c| c.sys),
        median(&base.open_unwatched, |c| c.sys),
    );
    println!(
        "each cell: workload CPU (user+sys, children included) and its change; the system part alone (where the eBPF programs run) and its change; [wall]; agent CPU as % of a core"
    );
    println!(
        "{:<22} {:>40} {:>40} {:>40} {:>8}",
        "", "exec loop", "open (watched)", "open (unwatched)", "RSS"
    );
    for row in &rows {
        let pct = |x: Duration, b: Duration| (x.as_secs_f64() / b.as_secs_f64() - 1.0) * 100.0;
        let agent = |i: usize| {
            if row.agent_cpu.is_empty() {
                String::new()
            } else {
                let mut c: Vec<f64> = row.agent_cpu.iter().map(|a| a[i]).collect();
                c.sort_by(f64::total_cmp);
                format!(" a{:.0}%", c[c.len() / 2])
            }
        };
        let cell = |v: &[Cost], b: Duration, bsys: Duration, i: usize| {
            let c = median(v, cpu);
            let sy = median(v, |c| c.sys);
            format!(
                "{:.2}s {:+.1}% sys {:.2}s {:+.0}% [{:.1}s]{}",
                c.as_secs_f64(),
                pct(c, b),
                sy.as_secs_f64(),
                pct(sy, bsys),
                median(v, wall).as_secs_f64(),
                agent(i)
            )
        };
        let rss = if row.rss_kib == 0 {
            "-".to_string()
        } else {
            format!("{:.1}MiB", row.rss_kib as f64 / 1024.0)
        };
        println!(
            "{:<22} {:>40} {:>40} {:>40} {:>8}",
            row.setup.name(),
            cell(&row.exec, be, bs.0, 0),
            cell(&row.open_watched, bw, bs.1, 1),
            cell(&row.open_unwatched, bu, bs.2, 2),
            rss
        );
    }
    if let Some(row) = rows.iter().find(|r| !r.bpf_ns.is_empty()) {
        let m = |i: usize| {
            let mut v: Vec<f64> = row.bpf_ns.iter().map(|b| b[i]).collect();
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() / 2])
        };
        let (e, w, u) = (m(0), m(1), m(2));
        println!(
            "time inside the sensor's eBPF programs per loop iteration, system-wide (kernel.bpf_stats_enabled: includes every other process's hooked syscalls meanwhile), min/median: exec {:.1}/{:.1} µs, open watched {:.2}/{:.2} µs, open unwatched {:.2}/{:.2} µs",
            e.0 / 1000.0,
            e.1 / 1000.0,
            w.0 / 1000.0,
            w.1 / 1000.0,
            u.0 / 1000.0,
            u.1 / 1000.0
        );
        if let Some(last) = row.bpf_exec_runs.last() {
            let list: Vec<String> = last
                .iter()
                .map(|(n, ns, runs)| format!("{n} {:.2} µs x{runs}", ns / 1000.0))
                .collect();
            println!(
                "per run during the exec loop (last round; averages over every process's runs): {}",
                list.join(", ")
            );
        }
    }
    println!(
        "bare CPU per exec: {:.0} µs; per open+close: {:.2} µs (watched), {:.2} µs (unwatched)",
        be.as_secs_f64() / execs as f64 * 1e6,
        bw.as_secs_f64() / opens as f64 * 1e6,
        bu.as_secs_f64() / opens as f64 * 1e6
    );
    if !bpftrace_ok {
        println!("bpftrace is not installed: the peer row is missing");
    }
}

// ---- user side -------------------------------------------------------------

/// A workload's records: processes exec'd, then a mix of opens, connects,
/// forks and exits from them, in the proportions of a busy node (mostly
/// opens).
fn records(procs: u32, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n + procs as usize);
    // A binary tree of processes: ancestor chains about nine deep.
    let parent = |pid: u32| {
        if pid == 1000 {
            1
        } else {
            1000 + (pid - 1000) / 2
        }
    };
    for i in 0..procs {
        let pid = 1000 + i;
        out.push(
            RecordBuilder::new(Kind::Execve)
                .task(pid, pid, parent(pid), "worker")
                .creds(0, 0, u32::MAX)
                .time(u64::from(i))
                .string(0, b"/usr/local/bin/worker")
                .string(
                    1,
                    format!("worker\0--id\0{i}\0--config\0/etc/worker.toml\0").as_bytes(),
                )
                .string(2, b"/var/lib/worker")
                .string(3, b"/usr/local/bin/worker")
                .string(4, b"session-1.scope")
                .build(),
        );
    }
    let mut sock = Sock {
        family: libc::AF_INET as u16,
        ty: libc::SOCK_STREAM as u16,
        proto: libc::IPPROTO_TCP as u16,
        lport: 40000,
        rport: 443,
        ..Default::default()
    };
    sock.laddr[..4].copy_from_slice(&[10, 0, 0, 2]);
    sock.raddr[..4].copy_from_slice(&[10, 43, 0, 1]);
    for j in 0..n {
        let pid = 1000 + (j as u32 * 7919) % procs;
        let r = match j % 10 {
            0..=6 => RecordBuilder::new(Kind::Openat)
                .task(pid, pid, parent(pid), "worker")
                .res(5)
                .arg(0, (libc::O_WRONLY | libc::O_CREAT) as i64)
                .arg(2, libc::AT_FDCWD as i64)
                .string(
                    0,
                    format!("/var/lib/worker/data/{}.log", j % 100).as_bytes(),
                )
                .build(),
            7 | 8 => RecordBuilder::new(Kind::Connect)
                .task(pid, pid, parent(pid), "worker")
                .arg(0, 7)
                .sock(&sock)
                .build(),
            _ => RecordBuilder::new(Kind::Dup3)
                .task(pid, pid, parent(pid), "worker")
                .res(1)
                .arg(0, 5)
                .arg(1, 1)
                .build(),
        };
        out.push(r);
    }
    out
}

fn user_side() {
    let n = (2_000_000.0 * scale()) as usize;
    let procs = 500;
    let recs = records(procs, n);
    let config = SensorConfig {
        runtime_state_dirs: vec![],
        ..Default::default()
    };
    let none = Path::new("/nonexistent-proc");
    let mut e = Enricher::new(&config, none, Path::new("/"), BootClock::with_offset(0));
    // Warm up: install the processes.
    for r in &recs[..procs as usize] {
        e.decode(r).unwrap();
    }
    let body = &recs[procs as usize..];
    let t = Instant::now();
    let mut events = 0u64;
    let mut bytes = 0usize;
    for r in body {
        bytes += r.len();
        if let Decoded::Event { event, .. } = e.decode(r).unwrap() {
            events += 1;
            std::hint::black_box(&event);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "user side: decoded and enriched {events} records ({:.0} MiB) in {secs:.2}s on one core: {:.0} events/s ({:.2} µs/event), {} processes in the table",
        bytes as f64 / 1048576.0,
        events as f64 / secs,
        secs / events as f64 * 1e6,
        e.procs.len()
    );
}
