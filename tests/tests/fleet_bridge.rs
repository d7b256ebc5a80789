//! `edge-agent fleet bridge` end to end with real components: real agents
//! (sensor off) publish to a real mosquitto over mTLS; real bridges share
//! the subscription; Debian's real `prometheus` takes remote-write; a
//! local HTTP receiver stands in for falcosidekick.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use edge_agent_tests::bridge::{Bridge, Mode, Prometheus, Receiver, ops_toml};
use edge_agent_tests::broker::{AgentAccess, Broker, Certs, Gate, Subscriber, certs_and_broker};
use edge_agent_tests::{SIGTERM, Scratch, wait_for};
use serde_json::Value;

fn agent(certs: &Certs, url: &str, node: &str, groups: &str, metrics: bool) -> Scratch {
    let metrics = if metrics {
        "[metrics]\nenabled = true\ninterval = \"1s\"\nlisten = \"\"\n"
    } else {
        ""
    };
    Scratch::new(&format!(
        "[node]\nid = \"{node}\"\nfleet = \"test-fleet\"\ngroups = {groups}\n{metrics}{}",
        certs.uplink_toml(url)
    ))
}

fn test_alerts(s: &Scratch, count: u64) {
    let out = s.cli(&["test-alert", "--count", &count.to_string(), "--wait", "30s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (node, seq) of every body the receiver took, with how often.
fn deliveries(r: &Receiver) -> HashMap<(String, u64), usize> {
    let mut m = HashMap::new();
    for b in r.bodies() {
        let key = (
            b["node"].as_str().unwrap_or("").to_string(),
            b["seq"].as_u64().unwrap_or(0),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

fn kind_connects(b: &Bridge) -> u64 {
    b.status()
        .map_or(0, |s| s["connects"].as_u64().unwrap_or(0))
}

fn kind(b: &Bridge, kind: &str, counter: &str) -> u64 {
    b.status()
        .map_or(0, |s| s["kinds"][kind][counter].as_u64().unwrap_or(0))
}

#[test]
fn two_agents_through_two_bridges_reach_prometheus_and_the_webhook_with_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let prom = Prometheus::start(&dir.path().join("prometheus"));
    let receiver = Receiver::start();
    let sinks = format!(
        "remote_write_url = \"{}\"\nalert_webhooks = [\"{}\"]\n",
        prom.write_url(),
        receiver.url()
    );
    let bridges: Vec<Bridge> = ["bridge-1", "bridge-2"]
        .iter()
        .map(|id| {
            let (ops, port) = ops_toml(
                &dir.path().join(id),
                &certs,
                &broker.agent_url(),
                id,
                &sinks,
            );
            Bridge::start(&ops, port)
        })
        .collect();
    let a = agent(
        &certs,
        &broker.agent_url(),
        "node-a",
        "[\"edge\", \"eu\"]",
        true,
    );
    let b = agent(&certs, &broker.agent_url(), "node-b", "[]", true);
    let (_da, _db) = (a.start(), b.start());

    let found = wait_for(Duration::from_secs(60), || {
        let r = prom.query("node_load1{fleet=\"test-fleet\"}");
        (r.len() == 2).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "node_load1 of both nodes in Prometheus; bridge log:\n{}",
            bridges[0].log()
        )
    });
    let mut by_node: HashMap<String, Value> = HashMap::new();
    for s in found {
        by_node.insert(
            s["metric"]["node"].as_str().unwrap().to_string(),
            s["metric"].clone(),
        );
    }
    assert_eq!(by_node["node-a"]["group"], "edge,eu");
    assert_eq!(by_node["node-a"]["fleet"], "test-fleet");
    assert!(
        by_node["node-b"].get("group").is_none(),
        "{:?}",
        by_node["node-b"]
    );
    assert_eq!(by_node["node-b"]["__name__"], "node_load1");

    test_alerts(&a, 20);
    test_alerts(&b, 20);
    let got = wait_for(Duration::from_secs(30), || {
        let d = deliveries(&receiver);
        (d.len() >= 40).then_some(d)
    })
    .expect("40 alerts at the webhook");
    assert_eq!(got.len(), 40);
    assert!(
        got.values().all(|n| *n == 1),
        "every (node, seq) once: {got:?}"
    );
    let body = &receiver.bodies()[0];
    for key in [
        "time",
        "rule",
        "priority",
        "output",
        "output_fields",
        "tags",
        "hostname",
        "source",
    ] {
        assert!(body.get(key).is_some(), "Falco's {key} in {body}");
    }
    // The shared subscription splits the work between the two bridges.
    for b in &bridges {
        assert!(kind(b, "metrics", "written") > 0, "{:?}", b.status());
        assert!(kind(b, "alerts", "written") > 0, "{:?}", b.status());
    }
    let (code, text) =
        edge_agent_tests::metrics::http_get(&format!("127.0.0.1:{}", bridges[0].port), "/metrics")
            .unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("edge_bridge_node_lag_seconds{node=\"node-a\"}"),
        "{text}"
    );
    assert!(
        text.contains("edge_bridge_messages_received_total{kind=\"metrics\"}"),
        "{text}"
    );
}

#[test]
fn every_test_alert_reaches_the_webhook_exactly_once_across_a_bridge_sigkill_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let receiver = Receiver::start();
    let sinks = format!(
        "alert_webhooks = [\"{}\"]\nrequest_timeout = \"2s\"\n",
        receiver.url()
    );
    let (ops, port) = ops_toml(
        &dir.path().join("bridge"),
        &certs,
        &broker.agent_url(),
        "bridge-1",
        &sinks,
    );
    let mut bridge = Bridge::start(&ops, port);
    let a = agent(&certs, &broker.agent_url(), "node-a", "[]", false);
    let _d = a.start();

    test_alerts(&a, 10);
    assert!(
        wait_for(Duration::from_secs(30), || (deliveries(&receiver).len()
            >= 10)
            .then_some(()))
        .is_some()
    );

    // The receiver stops answering; alerts pile up unacknowledged; the
    // bridge dies in the middle of delivering them.
    receiver.set_mode(Mode::Hold);
    test_alerts(&a, 10);
    assert!(
        wait_for(Duration::from_secs(30), || (receiver.held() >= 1)
            .then_some(()))
        .is_some(),
        "a delivery under way"
    );
    bridge.kill();
    receiver.set_mode(Mode::Take);
    bridge.restart();
    let got = wait_for(Duration::from_secs(60), || {
        let d = deliveries(&receiver);
        (d.len() >= 20).then_some(d)
    })
    .unwrap_or_else(|| panic!("20 alerts after the restart; log:\n{}", bridge.log()));

    // Copies of delivered alerts (a node resends when its link drops
    // before the broker's acknowledgement) and bad input.
    let topic = "edge/test-fleet/node-a/alerts";
    let plain = broker.plain_port.to_string();
    let publish = |payload: &str| {
        let ok = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &plain,
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    for body in receiver.bodies().iter().take(5) {
        publish(&body.to_string());
    }
    publish("not json at all");
    publish("{\"node\": \"node-b\", \"seq\": 1, \"schema\": 1}");
    let big = dir.path().join("big");
    std::fs::write(&big, "x".repeat(3 * 1024 * 1024)).unwrap();
    let ok = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &plain,
            "-q",
            "1",
            "-t",
            topic,
            "-f",
        ])
        .arg(&big)
        .status()
        .unwrap();
    assert!(ok.success());
    let settled = wait_for(Duration::from_secs(30), || {
        let s = bridge.status()?;
        (s["kinds"]["alerts"]["duplicates"].as_u64()? >= 5
            && s["kinds"]["alerts"]["bad"].as_u64()? >= 3)
            .then_some(s)
    });
    assert!(
        settled.is_some(),
        "copies and bad input counted: {:?}",
        bridge.status()
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = deliveries(&receiver);
    assert_eq!(after, got, "nothing posted twice");
    assert!(after.values().all(|n| *n == 1), "{after:?}");
    let indexes: BTreeSet<u64> = receiver
        .bodies()
        .iter()
        .map(|b| b["output_fields"]["test.index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        (1..=10).collect(),
        "both runs' alerts 1-10 are there"
    );
    assert!(
        bridge.log().contains("bad input from the broker"),
        "{}",
        bridge.log()
    );
}

#[test]
fn a_broker_outage_and_a_prometheus_outage_lose_no_metrics_batch() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&dir.path().join("certs"));
    let mut broker = Broker::start(
        &dir.path().join("broker"),
        &certs,
        true,
        AgentAccess::Allowed,
    );
    let subscriber = Subscriber::start(&broker);
    let mut prom = Prometheus::start(&dir.path().join("prometheus"));
    let sinks = format!("remote_write_url = \"{}\"\n", prom.write_url());
    let (ops, port) = ops_toml(
        &dir.path().join("bridge"),
        &certs,
        &broker.agent_url(),
        "bridge-1",
        &sinks,
    );
    let bridge = Bridge::start(&ops, port);
    // The agent reaches the broker through a gate, closed while the broker
    // is down and opened once the bridge has subscribed again: mosquitto
    // 2.0.11 does not restore shared subscriptions from its persistence
    // file, so what nodes publish before the bridge is back goes nowhere
    // (see the README).
    let gate = Gate::new(broker.tls_port, true);
    let a = agent(&certs, &gate.url(), "node-a", "[]", true);
    let mut daemon = a.start();
    let selector = "node_load1{node=\"node-a\"}";
    assert!(
        wait_for(Duration::from_secs(60), || (!prom
            .sample_times(selector, "1h")
            .is_empty())
        .then_some(()))
        .is_some(),
        "first batches written; log:\n{}",
        bridge.log()
    );

    prom.stop();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        kind(&bridge, "metrics", "retried") > 0,
        "{:?}",
        bridge.status()
    );
    prom.start_again();
    let more = |n: usize| {
        let base = subscriber.on("metrics").len();
        assert!(
            subscriber.wait_until(Duration::from_secs(60), |_| subscriber.on("metrics").len()
                >= base + n),
            "the agent keeps sending batches"
        );
    };
    more(2);
    let connects = kind_connects(&bridge);
    gate.close();
    broker.stop();
    std::thread::sleep(Duration::from_secs(5));
    broker.start_again();
    assert!(
        wait_for(Duration::from_secs(30), || (bridge.status()?["connects"]
            .as_u64()?
            > connects
            && bridge.status()?["connected"] == true)
            .then_some(()))
        .is_some(),
        "the bridge reconnects"
    );
    std::thread::sleep(Duration::from_millis(500));
    let before_open = subscriber.on("metrics").len();
    gate.open();
    // The backlog made during the outage, then new batches.
    assert!(
        subscriber.wait_until(Duration::from_secs(60), |_| subscriber.on("metrics").len()
            >= before_open + 3),
        "the agent drains its backlog"
    );
    daemon.signal(SIGTERM);
    daemon
        .wait_exit(Duration::from_secs(20))
        .expect("the agent stops");

    let sent: BTreeSet<u64> = subscriber
        .on("metrics")
        .iter()
        .filter_map(|m| m.json()["time_ms"].as_u64())
        .collect();
    assert!(sent.len() >= 6, "{} batches sent", sent.len());
    let complete = wait_for(Duration::from_secs(60), || {
        let written: BTreeSet<u64> = prom.sample_times(selector, "1h").into_iter().collect();
        sent.is_subset(&written).then_some(written)
    });
    let written: BTreeSet<u64> = prom.sample_times(selector, "1h").into_iter().collect();
    assert!(
        complete.is_some(),
        "every batch the broker saw is in Prometheus at its own time; missing {:?}; bridge log:\n{}",
        sent.difference(&written).collect::<Vec<_>>(),
        bridge.log()
    );
    assert_eq!(kind(&bridge, "metrics", "given_up"), 0);
}
