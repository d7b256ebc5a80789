//! A fleet on this machine: N real agents (sensor and metrics off, each its
//! own state directory, node id and certificate) against one mosquitto
//! running the shipped `configs/mosquitto/` files (mTLS, ACL). One fleet
//! bundle is published with `edge-agent fleet publish`; the figure is the
//! time from starting the publish to each node's `applied` result reaching
//! the operator (so it holds the broker fan-out, verification, merge, apply,
//! the whole trial and the result's trip through the outbox). Then the same
//! for a bundle whose rules do not load, to `reverted`. Also the broker's and
//! the agents' resident memory.
//!
//!   cargo build --release -p edge-agent
//!   EDGE_AGENT_BIN=target/release/edge-agent cargo bench -p edge-agent-tests --bench fleet
//!   EDGE_AGENT_BENCH_NODES=50,200 (the default)
//!
//! Budget: p99 publish-to-`applied` under 5 s for 200 nodes on this 2-core
//! machine. The load average is printed next to the figures: the machine
//! is shared, and the agents share its two cores with everything else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edge_agent_tests::fleet::{FLEET, Fleet, Stream, rss_kib};
use edge_agent_tests::{Daemon, Scratch};
use serde_json::Value;

/// How long every node gets to report, per bundle.
const REPORT_WITHIN: Duration = Duration::from_secs(180);

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Nearest-rank percentile of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Wait until `n` nodes published an online state message; how long that took.
fn wait_online(stream: &Stream, n: usize) -> Duration {
    let t = Instant::now();
    let mut online = std::collections::BTreeSet::new();
    while online.len() < n {
        let left = (t + REPORT_WITHIN).saturating_duration_since(Instant::now());
        let Ok((_, topic, payload)) = stream.rx.recv_timeout(left) else {
            panic!("only {} of {n} nodes came online", online.len());
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&payload) else {
            continue;
        };
        if doc["state"] == "online" {
            online.insert(topic);
        }
    }
    t.elapsed()
}

/// Publish `bundle`, then collect each node's result for `version` of the
/// fleet layer: (latencies sorted, outcomes counted, nodes that did not
/// report).
fn round(
    f: &Fleet,
    results: &Stream,
    bundle: &std::path::Path,
    version: u64,
    n: usize,
) -> (Vec<Duration>, BTreeMap<String, usize>, usize) {
    // Drop anything still queued from before.
    while results.rx.try_recv().is_ok() {}
    let t0 = Instant::now();
    f.publish(bundle);
    let mut by_node: BTreeMap<String, (Duration, String)> = BTreeMap::new();
    while by_node.len() < n {
        let left = (t0 + REPORT_WITHIN).saturating_duration_since(Instant::now());
        let Ok((at, topic, payload)) = results.rx.recv_timeout(left) else {
            break;
        };
        let Ok(r) = serde_json::from_slice::<Value>(&payload) else {
            continue;
        };
        if r["layer"] != "fleet" || r["version"] != version {
            continue;
        }
        let outcome = r["outcome"].as_str().unwrap_or("?").to_string();
        by_node.entry(topic).or_insert((at - t0, outcome));
    }
    let mut lat: Vec<Duration> = by_node.values().map(|(d, _)| *d).collect();
    lat.sort();
    let mut outcomes = BTreeMap::new();
    for (_, o) in by_node.values() {
        *outcomes.entry(o.clone()).or_insert(0) += 1;
    }
    (lat, outcomes, n - by_node.len())
}

fn report(what: &str, lat: &[Duration], outcomes: &BTreeMap<String, usize>, missing: usize) {
    if lat.is_empty() {
        println!("  {what}: no node reported; missing {missing}");
        return;
    }
    println!(
        "  {what}: p50 {}  p99 {}  max {}  outcomes {outcomes:?}  missing {missing}  (load {})",
        ms(pct(lat, 50.0)),
        ms(pct(lat, 99.0)),
        ms(*lat.last().expect("not empty")),
        loadavg()
    );
}

fn fleet_of(n: usize) {
    println!("N = {n} nodes (load before: {})", loadavg());
    let f = Fleet::new();
    let t = Instant::now();
    let nodes: Vec<Scratch> = (0..n)
        .map(|i| f.node(&format!("n{i:03}"), &["bench"], ""))
        .collect();
    println!(
        "  certificates and state dirs: {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let states = f.stream(&format!("edge/{FLEET}/+/state"));
    let results = f.stream(&format!("edge/{FLEET}/+/config/result"));
    let t = Instant::now();
    let daemons: Vec<Daemon> = nodes
        .iter()
        .map(|s| Daemon::start(s, &[("EDGE_AGENT_LOG", "warn")]))
        .collect();
    let started = t.elapsed();
    let online = wait_online(&states, n);
    println!(
        "  started in {:.1} s, all online {:.1} s later (load {})",
        started.as_secs_f64(),
        online.as_secs_f64(),
        loadavg()
    );
    drop(states);
    // Let the start-up settle before measuring.
    std::thread::sleep(Duration::from_secs(5));

    let good = f.bundle("fleet", 1, "[rules]\nmax_burst = 12\n", &[]);
    let (lat, outcomes, missing) = round(&f, &results, &good, 1, n);
    report("publish -> applied ", &lat, &outcomes, missing);

    let rss: Vec<u64> = daemons
        .iter()
        .filter_map(|d| rss_kib(d.pid() as u32))
        .collect();
    let mut sorted = rss.clone();
    sorted.sort_unstable();
    if !sorted.is_empty() {
        println!(
            "  agent RSS: median {:.1} MiB, max {:.1} MiB, all {n} together {:.0} MiB",
            sorted[sorted.len() / 2] as f64 / 1024.0,
            *sorted.last().expect("not empty") as f64 / 1024.0,
            sorted.iter().sum::<u64>() as f64 / 1024.0
        );
    }
    if let Some(kib) = f.broker.rss_kib() {
        println!("  broker RSS: {:.1} MiB", kib as f64 / 1024.0);
    }

    std::thread::sleep(Duration::from_secs(3));
    let broken = "- rule: Broken\n  desc: does not compile\n  condition: evt.type = openat and no.such.field = 1\n  output: never\n  priority: WARNING\n";
    let bad = f.bundle("fleet", 2, "", &[("50-broken.yaml", broken)]);
    let (lat, outcomes, missing) = round(&f, &results, &bad, 2, n);
    report("publish -> reverted", &lat, &outcomes, missing);

    // What the operator sees now (a sample; every node reverted v2).
    std::thread::sleep(Duration::from_secs(2));
    for args in [&["nodes"][..], &["results", "--node", "n000"][..]] {
        let out = f.fleet(args);
        println!(
            "  $ edge-agent fleet {} (exit {:?})",
            args.join(" "),
            out.status.code()
        );
        for line in String::from_utf8_lossy(&out.stdout).lines().take(4) {
            println!("  | {line}");
        }
    }

    drop(results);
    drop(daemons);
    println!();
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let sizes: Vec<usize> = std::env::var("EDGE_AGENT_BENCH_NODES")
        .unwrap_or_else(|_| "50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "fleet bench: {} ({})",
        edge_agent_tests::agent_bin().display(),
        std::env::var("EDGE_AGENT_BIN").map_or("debug build", |_| "EDGE_AGENT_BIN")
    );
    for n in sizes {
        fleet_of(n);
    }
}
