//! Fleet bridge figures, printed (budget: one bridge keeps up with 1,000
//! nodes sending a 300-series batch every 30 s, 10,000 series/s; two
//! bridges share the work evenly):
//!
//! - series/s from the broker to a real Prometheus (remote-write) with one
//!   and two bridges: a backlog of real metrics batches (the node's own
//!   format, 300 series each, made by the agent's batch code) from many
//!   node ids is published to mosquitto, and the time until the bridges
//!   have written every sample is measured;
//! - alerts/s from the broker to a local webhook receiver, one and two bridges;
//! - each bridge's share of the messages, and its peak RSS.
//!
//! Run: `./scripts/build-static.sh x86_64 && EDGE_AGENT_BIN=dist/edge-agent-x86_64-linux-musl cargo bench -p edge-agent-tests --bench bridge`
//! (or `cargo build --release -p edge-agent` first and no EDGE_AGENT_BIN).
//! `EDGE_AGENT_BENCH_NODES` / `_BATCHES` / `_ALERTS` change the sizes.

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent::metrics::batch::{Encoding, payload};
use edge_agent::metrics::family::{Kind, Snapshot};
use edge_agent_tests::bridge::{Bridge, Prometheus, Receiver, ops_toml};
use edge_agent_tests::broker::{Broker, certs_and_broker};
use edge_agent_tests::wait_for;
use serde_json::{Value, json};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A node_exporter-like batch of 300 series.
fn snapshot(seed: f64) -> Snapshot {
    let mut s = Snapshot::new();
    let f = s.family(
        "node_cpu_seconds_total",
        "x",
        Kind::Counter,
        &["cpu", "mode"],
    );
    for cpu in 0..4 {
        for mode in [
            "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
        ] {
            f.push(&[&cpu.to_string(), mode], seed * 1.5 + f64::from(cpu));
        }
    }
    let f = s.family(
        "node_network_receive_bytes_total",
        "x",
        Kind::Counter,
        &["device"],
    );
    for d in 0..20 {
        f.push(&[&format!("eth{d}")], seed * 1000.0 + f64::from(d));
    }
    let f = s.family(
        "node_filesystem_avail_bytes",
        "x",
        Kind::Gauge,
        &["device", "mountpoint", "fstype"],
    );
    for d in 0..247 {
        f.push(
            &[&format!("/dev/sd{d}"), &format!("/mnt/{d}"), "ext4"],
            1e9 + seed + f64::from(d),
        );
    }
    s.single("node_load1", "x", Kind::Gauge, seed / 10.0);
    s
}

fn publish_all(broker: &Broker, messages: Vec<(String, Vec<u8>)>) {
    let mut o = rumqttc::MqttOptions::new(
        format!("bench-pub-{}", std::process::id()),
        "127.0.0.1",
        broker.plain_port,
    );
    o.set_inflight(1000)
        .set_max_packet_size(4 << 20, 4 << 20)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = rumqttc::Client::new(o, 1000);
    let total = messages.len();
    let t = std::thread::spawn(move || {
        for (topic, payload) in messages {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    for ev in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev {
            acked += 1;
            if acked == total {
                break;
            }
        }
    }
    drop(t.join());
}

fn rss_peak_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn written(b: &Bridge, kind: &str) -> u64 {
    b.status()
        .map_or(0, |s| s["kinds"][kind]["written"].as_u64().unwrap_or(0))
}

fn run(dir: &Path, bridges: usize, nodes: u64, batches: u64, alerts: u64) {
    let (certs, broker) = certs_and_broker(dir);
    let prom = Prometheus::start(&dir.join("prometheus"));
    let receiver = Receiver::start();
    let sinks = format!(
        "remote_write_url = \"{}\"\nalert_webhooks = [\"{}\"]\n",
        prom.write_url(),
        receiver.url()
    );
    let bs: Vec<Bridge> = (0..bridges)
        .map(|i| {
            let id = format!("bench-bridge-{i}");
            let (ops, port) = ops_toml(&dir.join(&id), &certs, &broker.agent_url(), &id, &sinks);
            Bridge::start(&ops, port)
        })
        .collect();

    // Metrics: `batches` per node, 30 s apart, ending now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut msgs = Vec::new();
    let mut seq = 0;
    for b in 0..batches {
        for n in 0..nodes {
            seq += 1;
            let snap = snapshot((b * nodes + n) as f64);
            let mut p = payload(
                &snap,
                now_ms - (batches - b) * 30_000,
                30_000,
                Encoding::DeflateBase64,
            );
            let mut m = serde_json::Map::new();
            m.insert("node".into(), json!(format!("node-{n}")));
            m.insert("seq".into(), json!(seq));
            m.insert("schema".into(), json!(1));
            m.append(&mut p);
            m.insert("groups".into(), json!(["bench"]));
            msgs.push((
                format!("edge/test-fleet/node-{n}/metrics"),
                serde_json::to_vec(&Value::Object(m)).unwrap(),
            ));
        }
    }
    let bytes: usize = msgs.iter().map(|(_, p)| p.len()).sum();
    let series = batches * nodes * 300;
    let started = Instant::now();
    publish_all(&broker, msgs);
    let done = wait_for(Duration::from_secs(600), || {
        let w: u64 = bs.iter().map(|b| written(b, "metrics")).sum();
        (w >= batches * nodes).then_some(())
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(done.is_some(), "the bridges did not write every batch");
    let shares: Vec<u64> = bs.iter().map(|b| written(b, "metrics")).collect();
    println!(
        "metrics, {bridges} bridge(s): {} batches x 300 series from {nodes} nodes ({:.1} MiB published): {:.1} s, {:.0} series/s (budget 10,000), {:.0} batches/s; share {:?}",
        batches * nodes,
        bytes as f64 / 1048576.0,
        secs,
        series as f64 / secs,
        (batches * nodes) as f64 / secs,
        shares
    );

    // Alerts: Falco-shaped, each a distinct (node, seq).
    let mut msgs = Vec::new();
    for i in 0..alerts {
        seq += 1;
        let node = format!("node-{}", i % nodes);
        let a = json!({"node": node, "seq": seq, "schema": 1,
            "time": "2026-11-26T10:00:00.000000000Z",
            "rule": "Bench rule", "priority": "Warning",
            "output": format!("10:00:00.000000000: Warning bench alert {i} (proc.name=sh proc.pid=42 fd.name=/etc/shadow)"),
            "output_fields": {"proc.name": "sh", "proc.pid": 42, "fd.name": "/etc/shadow"},
            "tags": ["bench"], "hostname": node, "source": "syscall"});
        msgs.push((
            format!("edge/test-fleet/{node}/alerts"),
            serde_json::to_vec(&a).unwrap(),
        ));
    }
    let started = Instant::now();
    publish_all(&broker, msgs);
    let done = wait_for(Duration::from_secs(600), || {
        (receiver.bodies().len() as u64 >= alerts).then_some(())
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(done.is_some(), "the webhook did not get every alert");
    let shares: Vec<u64> = bs.iter().map(|b| written(b, "alerts")).collect();
    println!(
        "alerts, {bridges} bridge(s): {alerts} to one webhook: {:.1} s, {:.0} alerts/s; share {:?}; duplicates at the receiver {}",
        secs,
        alerts as f64 / secs,
        shares,
        receiver.bodies().len() as u64 - alerts
    );
    for b in &bs {
        println!(
            "   bridge pid {}: peak RSS {:.1} MiB",
            b.pid(),
            rss_peak_kib(b.pid()) as f64 / 1024.0
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes = env("EDGE_AGENT_BENCH_NODES", 200);
    let batches = env("EDGE_AGENT_BENCH_BATCHES", 10);
    let alerts = env("EDGE_AGENT_BENCH_ALERTS", 5000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet bridge bench; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for bridges in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), bridges, nodes, batches, alerts);
    }
}
