//! Start-up and idle cost of `edge-agent run` with the shipped default config
//! (`configs/agent.toml`), measured the way systemd sees it.
//!
//!   cargo build --release -p edge-agent
//!   sudo cargo bench -p edge-agent-tests --bench startup
//!   EDGE_AGENT_BIN=dist/edge-agent-x86_64-linux-musl cargo bench ...   (the static build)
//!
//! For each of `RUNS` starts: the time from spawning the process to the
//! READY=1 datagram on a NOTIFY_SOCKET this bench binds, then SIGTERM and the
//! time to exit. Once: resident memory after a minute of idling, and the CPU
//! it used meanwhile; then the same with Falco's three official rule files
//! loaded as well (tests/data/falco). The state and runtime directories come from
//! STATE_DIRECTORY/RUNTIME_DIRECTORY, as under systemd, so the config file is
//! used unmodified. Budgets (docs/ARCHITECTURE.md): READY <= 300 ms, RSS <= 24 MiB, idle
//! CPU <= 0.5 % of a core.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_agent_tests::foundation::{NotifyListener, repo_root};
use edge_agent_tests::{SIGTERM, Scratch, agent_bin};

const RUNS: usize = 21;
/// Long enough to include two collections at the default `metrics.interval`
/// (30 s), so that "idle" includes the periodic work. Override with
/// EDGE_AGENT_BENCH_IDLE_SECS.
const IDLE_DEFAULT_SECS: u64 = 65;

fn spawn(s: &Scratch, notify: &NotifyListener) -> Child {
    spawn_with(s, notify, &repo_root().join("configs/agent.toml"))
}

fn spawn_with(s: &Scratch, notify: &NotifyListener, config: &std::path::Path) -> Child {
    Command::new(agent_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("STATE_DIRECTORY", s.state_dir())
        .env("RUNTIME_DIRECTORY", s.runtime_dir())
        .env("EDGE_AGENT_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn edge-agent run")
}

fn stop(child: &mut Child) -> Duration {
    let t = Instant::now();
    // SAFETY: kill() on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, SIGTERM) };
    child.wait().expect("wait for edge-agent");
    t.elapsed()
}

fn proc_field(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit(") ").next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes --bench; nothing to filter here.
    let bin = agent_bin();
    println!("binary: {}", bin.display());
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "size: {size} bytes ({:.2} MiB)",
        size as f64 / (1024.0 * 1024.0)
    );

    let mut ready = Vec::new();
    let mut stopping = Vec::new();
    for _ in 0..RUNS {
        let s = Scratch::new("");
        let mut notify = NotifyListener::bind(&s);
        let t = Instant::now();
        let mut child = spawn(&s, &notify);
        notify
            .wait_for("READY=1", Duration::from_secs(30))
            .expect("READY=1 within 30 s");
        ready.push(t.elapsed());
        stopping.push(stop(&mut child));
    }
    let min = *ready.iter().min().unwrap();
    let max = *ready.iter().max().unwrap();
    println!(
        "start to READY=1 over {RUNS} runs: median {}, min {}, max {} (budget 300 ms)",
        ms(median(ready)),
        ms(min),
        ms(max)
    );
    println!(
        "SIGTERM to exit: median {} (grace 10 s)",
        ms(median(stopping))
    );

    let s = Scratch::new("");
    idle_figures(
        &s,
        &repo_root().join("configs/agent.toml"),
        "shipped config",
    );

    // The same config with Falco's three official rule files loaded after
    // the shipped rules: what a user who brings Falco's corpus pays.
    let s = Scratch::new("");
    let falco = repo_root().join("tests/data/falco");
    let files = format!(
        "files = [\"{}\", \"{}\", \"{}\", \"{}\"]",
        repo_root().join("configs/rules/*.yaml").display(),
        falco.join("falco_rules.yaml").display(),
        falco.join("falco-incubating_rules.yaml").display(),
        falco.join("falco-sandbox_rules.yaml").display()
    );
    let shipped = std::fs::read_to_string(repo_root().join("configs/agent.toml")).unwrap();
    let config = s.path().join("agent-falco.toml");
    assert!(
        shipped.contains("files = [\"rules/*.yaml\"]"),
        "configs/agent.toml changed its rules.files line"
    );
    std::fs::write(
        &config,
        shipped.replace("files = [\"rules/*.yaml\"]", &files),
    )
    .unwrap();
    idle_figures(&s, &config, "with Falco's whole corpus");
}

/// Resident memory and CPU after idling with `config`.
fn idle_figures(s: &Scratch, config: &std::path::Path, label: &str) {
    let mut notify = NotifyListener::bind(s);
    let mut child = spawn_with(s, &notify, config);
    notify
        .wait_for("READY=1", Duration::from_secs(30))
        .expect("READY=1");
    let pid = child.id();
    let idle = Duration::from_secs(
        std::env::var("EDGE_AGENT_BENCH_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(IDLE_DEFAULT_SECS),
    );
    let ticks0 = cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(idle);
    let ticks = cpu_ticks(pid) - ticks0;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = ticks as f64 / hz / t0.elapsed().as_secs_f64() * 100.0;
    let rss = proc_field(pid, "status", "VmRSS:").unwrap_or(0);
    let hwm = proc_field(pid, "status", "VmHWM:").unwrap_or(0);
    let threads = proc_field(pid, "status", "Threads:").unwrap_or(0);
    println!(
        "{label}: idle after {}s: RSS {:.1} MiB (peak {:.1} MiB, budget 24 MiB), {threads} threads, CPU {cpu:.2} % of one core (budget 0.5 %)",
        idle.as_secs(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    stop(&mut child);
}
