//! `edge-agent fleet alerts` (the operator's tail of the fleet's alerts)
//! and the bridge's status on SIGUSR1 and `--status`, with real
//! components: real agents (sensor off) publish `test-alert`s to a real
//! mosquitto over mTLS.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use edge_agent_tests::bridge::{Bridge, Receiver, ops_toml};
use edge_agent_tests::broker::{Broker, Certs, Subscriber, certs_and_broker};
use edge_agent_tests::{Scratch, agent_bin, wait_for};
use serde_json::{Value, json};

fn agent(certs: &Certs, url: &str, node: &str) -> Scratch {
    Scratch::new(&format!(
        "[node]\nid = \"{node}\"\nfleet = \"test-fleet\"\ngroups = []\n{}",
        certs.uplink_toml(url)
    ))
}

fn test_alerts(s: &Scratch, count: u64, priority: &str) {
    let out = s.cli(&[
        "test-alert",
        "--count",
        &count.to_string(),
        "--priority",
        priority,
        "--wait",
        "30s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The operator's state dir (the tail's spool) beside ops.toml, not the
/// machine's own `~/.local/state`.
fn state_home(ops: &Path) -> PathBuf {
    ops.with_file_name("state")
}

/// `edge-agent fleet <args> --config ops`, to its end.
fn fleet(ops: &Path, args: &[&str]) -> Output {
    Command::new(agent_bin())
        .arg("fleet")
        .args(args)
        .arg("--config")
        .arg(ops)
        .env("XDG_STATE_HOME", state_home(ops))
        .stdin(Stdio::null())
        .output()
        .expect("run edge-agent fleet")
}

/// `fleet alerts <args>` without --follow: succeeds; its stdout lines.
fn alerts(ops: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["alerts"];
    all.extend_from_slice(args);
    let out = fleet(ops, &all);
    assert_eq!(out.status.code(), Some(0), "fleet {all:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// (node, seq) of each alert, with how often it was printed.
fn keys(alerts: &[Value]) -> HashMap<(String, u64), usize> {
    let mut m = HashMap::new();
    for a in alerts {
        let key = (
            a["node"].as_str().expect("node").to_string(),
            a["seq"].as_u64().expect("seq"),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

/// Publish `payload` on `node`'s alerts topic through the broker's plain
/// listener (QoS 1): a copy the way a node resends one, or a crafted one.
fn publish(broker: &Broker, node: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.plain_port.to_string()])
        .args(["-q", "1", "-t", &format!("edge/test-fleet/{node}/alerts")])
        .args(["-m", payload])
        .status()
        .expect("mosquitto_pub");
    assert!(ok.success());
}

/// The alerts the broker carried so far, as JSON.
fn carried(sub: &Subscriber) -> Vec<Value> {
    sub.on("alerts").iter().map(|m| m.json()).collect()
}

fn wait_carried(sub: &Subscriber, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(30), || {
        let c = carried(sub);
        (c.len() >= n).then_some(c)
    })
    .unwrap_or_else(|| panic!("{n} alerts at the broker, saw {}", carried(sub).len()))
}

/// A running `fleet alerts --follow ...`, its stdout in a file. Killed on drop.
struct Follow {
    child: Child,
    out: PathBuf,
}

impl Follow {
    fn start(ops: &Path, args: &[&str]) -> Follow {
        let out = ops.with_file_name("follow.txt");
        let child = Command::new(agent_bin())
            .args(["fleet", "alerts", "--follow"])
            .args(args)
            .arg("--config")
            .arg(ops)
            .env("XDG_STATE_HOME", state_home(ops))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("follow output"))
            .stderr(Stdio::null())
            .spawn()
            .expect("run edge-agent fleet alerts --follow");
        Follow { child, out }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fleet_alerts_lists_each_alert_of_the_fleet_once_and_filters_by_node_priority_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let sub = Subscriber::start(&broker);
    let (ops, _) = ops_toml(
        &dir.path().join("operator"),
        &certs,
        &broker.agent_url(),
        "operator",
        "",
    );
    // The first run makes the tail's session at the broker: nothing yet.
    let first = fleet(&ops, &["alerts", "--json"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert!(first.stdout.is_empty(), "{}", text(&first));

    let a = agent(&certs, &broker.agent_url(), "node-a");
    let b = agent(&certs, &broker.agent_url(), "node-b");
    let (_da, _db) = (a.start(), b.start());
    test_alerts(&a, 3, "warning");
    test_alerts(&b, 2, "critical");
    let sent = wait_carried(&sub, 5);
    // Copies of delivered alerts, as a node sends them again when its link
    // drops before the broker's acknowledgement.
    for alert in sent.iter().take(3) {
        let node = alert["node"].as_str().unwrap();
        publish(&broker, node, &alert.to_string());
    }
    wait_carried(&sub, 8);

    let listed = json_lines(&alerts(&ops, &["--json"]));
    let got = keys(&listed);
    let want: HashMap<(String, u64), usize> = keys(&sent).into_keys().map(|k| (k, 1)).collect();
    assert_eq!(got, want, "each (node, seq) once: {listed:?}");
    let nodes: BTreeSet<&str> = listed.iter().filter_map(|a| a["node"].as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-a", "node-b"]));
    for a in &listed {
        assert_eq!(a["rule"], "edge-agent test alert", "{a}");
        assert!(a["output"].is_string(), "Falco's output in {a}");
    }
    // What was printed is not printed again.
    assert!(alerts(&ops, &["--json"]).is_empty());

    // --node: only that node; the other node's alerts are kept for the
    // next run, not consumed.
    test_alerts(&a, 2, "warning");
    test_alerts(&b, 2, "critical");
    let carried = wait_carried(&sub, 12);
    let only_b = json_lines(&alerts(&ops, &["--json", "--node", "node-b"]));
    assert_eq!(only_b.len(), 2, "{only_b:?}");
    assert!(only_b.iter().all(|a| a["node"] == "node-b"), "{only_b:?}");
    let rest = json_lines(&alerts(&ops, &["--json"]));
    let held_a: Vec<&Value> = carried[8..]
        .iter()
        .filter(|a| a["node"] == "node-a")
        .collect();
    assert_eq!(
        keys(&rest),
        keys(&held_a.into_iter().cloned().collect::<Vec<_>>()),
        "the run after --node node-b shows node-a's alerts it left: {rest:?}"
    );

    // --priority: at or above it (critical passes error, warning does not).
    test_alerts(&a, 2, "warning");
    test_alerts(&b, 1, "critical");
    wait_carried(&sub, 15);
    let severe = json_lines(&alerts(&ops, &["--json", "--priority", "error"]));
    assert_eq!(severe.len(), 1, "{severe:?}");
    assert_eq!(severe[0]["node"], "node-b");
    assert_eq!(severe[0]["priority"], "Critical");
    let bad = fleet(&ops, &["alerts", "--priority", "loud"]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad));
    // The warnings it left out come with the next run, once.
    let warnings = json_lines(&alerts(&ops, &["--json"]));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().all(|a| a["priority"] == "Warning"),
        "{warnings:?}"
    );
    assert!(alerts(&ops, &["--json"]).is_empty());

    // --since: an alert older than that is left out.
    test_alerts(&a, 1, "notice");
    let fresh = wait_carried(&sub, 16).pop().unwrap();
    let mut old = fresh.clone();
    old["seq"] = json!(fresh["seq"].as_u64().unwrap() + 1000);
    old["time"] = json!("2020-01-01T00:00:00.000000000Z");
    publish(&broker, "node-a", &old.to_string());
    wait_carried(&sub, 17);
    let recent = json_lines(&alerts(&ops, &["--json", "--since", "1h"]));
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0]["seq"], fresh["seq"]);

    // Without --json: one line each, the node then Falco's output line;
    // the old alert --since left out comes first.
    test_alerts(&a, 1, "warning");
    test_alerts(&b, 1, "warning");
    let last: Vec<Value> = wait_carried(&sub, 19).split_off(16);
    let lines = alerts(&ops, &[]);
    let want: BTreeSet<String> = last
        .iter()
        .map(|a| {
            format!(
                "{}: {}",
                a["node"].as_str().unwrap(),
                a["output"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(lines.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[0],
        format!("node-a: {}", old["output"].as_str().unwrap()),
        "{lines:?}"
    );
    for l in &lines {
        assert!(l.contains("edge-agent test alert"), "{l}");
    }
}

#[test]
fn fleet_alerts_follow_prints_an_alert_sent_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let sub = Subscriber::start(&broker);
    let (ops, _) = ops_toml(
        &dir.path().join("operator"),
        &certs,
        &broker.agent_url(),
        "operator",
        "",
    );
    let a = agent(&certs, &broker.agent_url(), "node-a");
    let _d = a.start();
    let follow = Follow::start(&ops, &["--json"]);
    // Give it time to make its session and subscribe.
    std::thread::sleep(Duration::from_secs(3));
    test_alerts(&a, 2, "warning");
    let sent = wait_carried(&sub, 2);
    let got = wait_for(Duration::from_secs(20), || {
        let l = follow.lines();
        (l.len() >= 2).then_some(l)
    })
    .unwrap_or_else(|| panic!("two lines from --follow, got {:?}", follow.lines()));
    let printed = json_lines(&got);
    assert_eq!(keys(&printed), keys(&sent));
    assert!(printed.iter().all(|a| a["node"] == "node-a"));
    // A copy is not printed again; the next alert is.
    publish(&broker, "node-a", &sent[0].to_string());
    test_alerts(&a, 1, "warning");
    let next = wait_carried(&sub, 4);
    let got = wait_for(Duration::from_secs(20), || {
        let l = follow.lines();
        (l.len() >= 3).then_some(l)
    })
    .unwrap_or_else(|| panic!("a third line from --follow, got {:?}", follow.lines()));
    std::thread::sleep(Duration::from_secs(1));
    let printed = json_lines(&follow.lines());
    assert_eq!(printed.len(), 3, "{got:?}");
    let newest = next.iter().filter_map(|a| a["seq"].as_u64()).max();
    assert_eq!(printed[2]["seq"].as_u64(), newest);
    assert_eq!(keys(&printed).len(), 3);
}

#[test]
fn the_bridge_logs_its_status_on_sigusr1_and_prints_it_with_status() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let receiver = Receiver::start();
    let sinks = format!("alert_webhooks = [\"{}\"]\n", receiver.url());
    let (ops, port) = ops_toml(
        &dir.path().join("bridge"),
        &certs,
        &broker.agent_url(),
        "bridge-1",
        &sinks,
    );
    let bridge = Bridge::start(&ops, port);
    let a = agent(&certs, &broker.agent_url(), "node-a");
    let _d = a.start();
    test_alerts(&a, 3, "warning");
    assert!(
        wait_for(Duration::from_secs(30), || (receiver.bodies().len() >= 3)
            .then_some(()))
        .is_some(),
        "three alerts at the webhook; log:\n{}",
        bridge.log()
    );
    let url = receiver.url();
    let want = "   alerts   in 3  written 3  retried 0  given up 0  duplicates 0  bad 0  -> ";
    bridge.signal(libc::SIGUSR1);
    let logged = wait_for(Duration::from_secs(10), || {
        let log = bridge.log();
        log.contains(want).then_some(log)
    })
    .unwrap_or_else(|| panic!("the status in the log after SIGUSR1:\n{}", bridge.log()));
    assert!(
        logged.contains("edge-agent fleet bridge ") && logged.contains("client bridge-1"),
        "{logged}"
    );
    assert!(logged.contains("CONNECTED to "), "{logged}");
    assert!(logged.contains(&format!("{want}{url}")), "{logged}");
    assert!(
        logged.contains("metrics  not consumed (no sink configured)"),
        "{logged}"
    );
    assert!(bridge.status().is_some(), "still running after SIGUSR1");

    // --status asks the running bridge and prints the same.
    let out = fleet(&ops, &["bridge", "--status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&format!("{want}{url}")), "{printed}");
    assert!(printed.contains("client bridge-1"), "{printed}");
    let out = fleet(&ops, &["bridge", "--status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("--status --json is JSON");
    assert_eq!(doc["kinds"]["alerts"]["written"], 3, "{doc}");
    assert_eq!(doc["client_id"], "bridge-1");
    drop(bridge);
    // With no bridge running, --status says so.
    let out = fleet(&ops, &["bridge", "--status"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}
