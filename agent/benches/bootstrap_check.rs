//! How much one bootstrap drift check costs: render every file, read them
//! back, read the sysctls, run preflight, plan. The daemon runs one every
//! `bootstrap.interval` (5 min by default), so the idle-CPU share is
//! (time per check) / interval; the idle-CPU budget for the whole agent is
//! 0.5 % of one core (docs/ARCHITECTURE.md, "Budgets").
//!
//! `cargo bench -p edge-agent --bench bootstrap_check` (prints figures).

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent::bootstrap::{self, ApplyOptions, Force, Target};
use edge_agent::config::{AgentConfig, KubeProxyMode, Role, Snapshotter};

const CHECKS: u32 = 200;

fn main() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut cfg = AgentConfig::default();
    cfg.paths.state_dir = state.path().to_path_buf();
    let b = &mut cfg.bootstrap;
    b.role = Some(Role::Agent);
    b.root = root.path().to_path_buf();
    b.server = "https://10.0.0.1:6443".into();
    b.token_file = "/etc/rancher/k3s/token".into();
    b.k3s_version = "v1.31.6+k3s1".into();
    b.snapshotter = Snapshotter::Nydus;
    b.kube_proxy.mode = KubeProxyMode::Ipvs;
    let token = root.path().join("etc/rancher/k3s/token");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, "K10bench\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let target = Target::new(&cfg, Path::new("agent.toml"), None);

    let t = Instant::now();
    bootstrap::apply(
        &target,
        ApplyOptions {
            force: Force::none(),
            action: "apply",
        },
    )
    .unwrap();
    let first_apply = t.elapsed();

    let mut times = Vec::with_capacity(CHECKS as usize);
    for _ in 0..CHECKS {
        let t = Instant::now();
        let a = bootstrap::assess(&target, Force::none()).unwrap();
        assert!(a.plan.in_sync());
        times.push(t.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    let interval = Duration::from_secs(300);
    println!(
        "bootstrap: first apply (7 files, undo log): {:.2} ms",
        ms(first_apply)
    );
    println!(
        "bootstrap: drift check (render + read back + preflight + plan), {CHECKS} runs: median {:.2} ms, p99 {:.2} ms",
        ms(median),
        ms(p99)
    );
    println!(
        "bootstrap: idle CPU share at the default 5 min interval: {:.5} % of one core",
        median.as_secs_f64() / interval.as_secs_f64() * 100.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
