//! Store and forward against a real mosquitto over mTLS: records arrive as
//! sent, in priority order after an outage, and nothing is lost when the
//! broker or the agent is killed mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent_tests::broker::{
    AgentAccess, Broker, Certs, Gate, Subscriber, control_at, inject, uplink_toml, wait_stage,
    waiting_seqs,
};
use edge_agent_tests::{SIGKILL, Scratch, wait_for};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(90);

struct World {
    scratch: Scratch,
    certs: Certs,
    broker: Broker,
}

/// Certificates and a broker (started if `start`); the agent's config comes
/// from [`World::configure`].
fn world(persistence: bool, start: bool) -> World {
    let scratch = Scratch::new("");
    let certs = Certs::generate(&scratch.path().join("certs"));
    let mut broker = Broker::new(
        &scratch.path().join("broker"),
        &certs,
        persistence,
        AgentAccess::Allowed,
    );
    if start {
        broker.launch();
    }
    World {
        scratch,
        certs,
        broker,
    }
}

impl World {
    fn configure(&self, url: &str, extra: &str) {
        let toml = uplink_toml(
            url,
            &self.certs.ca(),
            (&self.certs.client_cert(), &self.certs.client_key()),
        );
        self.scratch.write_config(&format!("{toml}{extra}"));
    }
}

fn seqs(v: &[Option<u64>]) -> Vec<u64> {
    v.iter().map(|s| s.expect("no record given up")).collect()
}

/// The sum of a `{class: n}` object.
fn total(by_class: &Value) -> u64 {
    by_class
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(u64::MAX)
}

#[test]
fn mtls_publish_delivers_every_record_exactly_as_sent() {
    let w = world(false, true);
    w.configure(&w.broker.agent_url(), "");
    let sub = Subscriber::start(&w.broker);
    let _d = w.scratch.start();
    wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["connected"] == true
    });

    // Alerts through the operator's command, end to end.
    let out = w.scratch.cli(&[
        "test-alert",
        "--priority",
        "warning",
        "--count",
        "3",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "test-alert: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["delivered"], 3, "{answer}");
    let test_id = answer["test_id"].as_str().unwrap().to_string();
    let alert_seqs: Vec<u64> = answer["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();

    // Records of every class, with known contents.
    let mut sent = BTreeMap::new();
    for (class, suffix) in [
        ("critical_alert", "alerts"),
        ("alert", "alerts"),
        ("node_event", "events"),
        ("metrics", "metrics"),
    ] {
        for (i, seq) in seqs(&inject(&w.scratch, class, 5, 300).unwrap())
            .into_iter()
            .enumerate()
        {
            sent.insert(seq, (class, suffix, i as u64));
        }
    }
    assert!(
        sub.wait_until(LONG, |m| m
            .iter()
            .filter(|m| m.seq().is_some_and(|s| sent.contains_key(&s)))
            .count()
            >= sent.len()),
        "not every record arrived"
    );

    for m in sub
        .on("alerts")
        .iter()
        .filter(|m| m.json()["output_fields"]["test.id"] == test_id.as_str())
    {
        let v = m.json();
        assert_eq!(m.topic, "edge/test-fleet/test-node/alerts");
        assert!(!m.retained);
        assert!(alert_seqs.contains(&v["seq"].as_u64().unwrap()));
        assert_eq!(v["node"], "test-node");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["rule"], "edge-agent test alert");
        assert_eq!(v["priority"], "Warning");
        assert_eq!(v["source"], "syscall");
        for field in ["time", "output", "tags", "hostname"] {
            assert!(v.get(field).is_some(), "Falco's {field} is missing: {v}");
        }
    }
    let mut delivered = BTreeMap::new();
    for m in sub.messages() {
        if let Some(seq) = m.seq().filter(|s| sent.contains_key(s)) {
            *delivered.entry(seq).or_insert(0) += 1;
            let (class, suffix, i) = sent[&seq];
            assert_eq!(
                m.topic,
                format!("edge/test-fleet/test-node/{suffix}"),
                "{class}"
            );
            let mut expected = json!({"node": "test-node", "seq": seq, "schema": 1});
            if class == "node_event" {
                expected["kind"] = json!("test");
                expected["message"] = json!("synthetic node event");
            }
            expected["test_index"] = json!(i);
            expected["pad"] = json!("x".repeat(300));
            assert_eq!(
                m.json(),
                expected,
                "record {seq} ({class}) differs from what was sent"
            );
            assert!(
                m.payload.starts_with(b"{\"node\":\"test-node\",\"seq\":"),
                "envelope first"
            );
        }
    }
    assert_eq!(delivered.len(), sent.len());
    assert!(
        delivered.values().all(|n| *n == 1),
        "no duplicates without a reconnect: {delivered:?}"
    );

    // The retained online state: version and outbox depth.
    let state = sub.on("state");
    let last = state.last().expect("a state message").json();
    assert_eq!(last["state"], "online");
    assert_eq!(last["node"], "test-node");
    assert!(last["version"].is_string());
    assert!(last["outbox"]["records"]["metrics"].is_u64(), "{last}");
    assert!(last["given_up"]["critical_alert"].is_u64(), "{last}");

    let up = wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["acked_total"].as_u64().unwrap_or(0) >= 23
    });
    assert!(
        up["details"]["last_publish_at"].as_u64().unwrap_or(0) > 0,
        "{up}"
    );
    wait_stage(&w.scratch, "outbox", LONG, |s| {
        total(&s["details"]["records_waiting_by_class"]) == 0
    });
}

#[test]
fn records_queued_while_the_broker_is_down_are_delivered_alerts_before_metrics() {
    let mut w = world(false, false);
    let gate = Gate::new(w.broker.tls_port, false);
    w.configure(&gate.url(), "");
    // The broker is not running when the agent starts.
    let _d = w.scratch.start();
    let mut sent: Vec<(u64, usize)> = Vec::new();
    for (rank, class) in [
        (3, "metrics"),
        (2, "node_event"),
        (1, "alert"),
        (0, "critical_alert"),
    ] {
        for seq in seqs(&inject(&w.scratch, class, 20, 100).unwrap()) {
            sent.push((seq, rank));
        }
    }
    let down = wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["connected"] == false
            && s["details"]["reconnects_total"].as_u64().unwrap_or(0) >= 2
    });
    assert!(
        down["last_error"]["message"].is_string(),
        "the reason is shown: {down}"
    );
    wait_stage(&w.scratch, "outbox", LONG, |s| {
        total(&s["details"]["records_waiting_by_class"]) == 80
    });

    // The broker comes up; the subscriber is there before the agent is let through.
    w.broker.launch();
    let sub = Subscriber::start(&w.broker);
    gate.open();
    let rank: BTreeMap<u64, usize> = sent.iter().copied().collect();
    assert!(
        sub.wait_until(LONG, |m| m
            .iter()
            .filter(|m| m.seq().is_some_and(|s| rank.contains_key(&s)))
            .count()
            >= 80),
        "not everything queued arrived; agent log:\n{}",
        _d.log()
    );
    let arrived: Vec<(usize, u64)> = sub
        .messages()
        .iter()
        .filter_map(|m| m.seq())
        .filter_map(|s| rank.get(&s).map(|r| (*r, s)))
        .collect();
    let mut in_order = arrived.clone();
    in_order.sort();
    assert_eq!(
        arrived, in_order,
        "records arrive by class (critical alerts first), then by sequence"
    );
    wait_stage(&w.scratch, "outbox", LONG, |s| {
        total(&s["details"]["records_waiting_by_class"]) == 0
    });
}

#[test]
fn a_broker_killed_mid_stream_and_restarted_without_persistence_loses_no_record() {
    let mut w = world(true, true);
    let gate = Gate::new(w.broker.tls_port, true);
    w.configure(&gate.url(), "");
    let sub = Subscriber::start(&w.broker);
    let d = w.scratch.start();
    wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["connected"] == true
    });

    let all: BTreeSet<u64> = seqs(&inject(&w.scratch, "alert", 30_000, 200).unwrap())
        .into_iter()
        .collect();
    // Mid-stream: some have arrived, many have not.
    assert!(
        sub.wait_until(LONG, |m| m.len() >= 1000),
        "the drain did not start"
    );
    w.broker.kill();
    gate.close();
    let received_before = sub.messages().len();
    assert!(
        received_before < 30_000,
        "the kill came after the drain finished"
    );
    wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["connected"] == false
    });
    // What the dead broker never acknowledged is still in the outbox.
    let unacked = wait_for(LONG, || {
        let a = waiting_seqs(&w.scratch);
        std::thread::sleep(Duration::from_millis(300));
        let b = waiting_seqs(&w.scratch);
        (a == b).then_some(b)
    })
    .expect("the outbox settles");
    let unacked: BTreeSet<u64> = unacked.into_iter().map(|(_, s)| s).collect();
    assert!(!unacked.is_empty());

    w.broker.wipe_persistence();
    w.broker.restart(AgentAccess::Allowed);
    sub.wait_subscribed(2);
    gate.open();
    wait_stage(&w.scratch, "outbox", LONG, |s| {
        total(&s["details"]["records_waiting_by_class"]) == 0
    });
    assert!(
        sub.wait_until(LONG, |m| {
            let got: BTreeSet<u64> = m.iter().filter_map(|m| m.seq()).collect();
            unacked.is_subset(&got)
        }),
        "a record the broker never acknowledged was lost; agent log:\n{}",
        d.log()
    );

    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for s in sub.messages().iter().filter_map(|m| m.seq()) {
        *count.entry(s).or_default() += 1;
    }
    let duplicates = count.values().filter(|n| **n > 1).count();
    let lost_in_broker = all.iter().filter(|s| !count.contains_key(s)).count();
    eprintln!(
        "broker kill: {} records, {} unacknowledged at the kill and all re-sent, {duplicates} duplicates (by seq), {lost_in_broker} acknowledged by the killed broker but never forwarded (its loss, not the agent's)",
        all.len(),
        unacked.len()
    );
    // The killed broker can only have lost what it acknowledged in its last
    // moments: at most a few windows' worth, never the unacknowledged ones.
    assert!(lost_in_broker <= 2000, "{lost_in_broker}");
}

#[test]
fn an_agent_killed_mid_stream_loses_nothing_that_was_durable() {
    let w = world(false, true);
    w.configure(&w.broker.agent_url(), "");
    let sub = Subscriber::start(&w.broker);
    let mut d = w.scratch.start();
    wait_stage(&w.scratch, "uplink", LONG, |s| {
        s["details"]["connected"] == true
    });

    let durable = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (dur, st) = (durable.clone(), stop.clone());
    let socket = w.scratch.socket();
    let producer = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match control_at(
                &socket,
                "outbox.test_report",
                json!({"class": "alert", "count": 200, "pad_bytes": 100}),
            ) {
                Ok(r) => dur.lock().unwrap().extend(
                    r["seqs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap()),
                ),
                Err(_) => break,
            }
        }
    });
    assert!(
        wait_for(LONG, || (durable.lock().unwrap().len() >= 4000)
            .then_some(()))
        .is_some()
    );
    d.signal(SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(10));
    stop.store(true, Ordering::SeqCst);
    let _ = producer.join();
    let durable: BTreeSet<u64> = durable.lock().unwrap().iter().copied().collect();
    let max_before = *durable.iter().max().unwrap();

    let d2 = w.scratch.start();
    let opened = wait_stage(&w.scratch, "outbox", LONG, |s| s["state"] == "running");
    eprintln!("outbox after the kill: {}", opened["details"]["opened"]);
    assert!(
        sub.wait_until(LONG, |m| {
            let got: BTreeSet<u64> = m.iter().filter_map(|m| m.seq()).collect();
            durable.is_subset(&got)
        }),
        "a record reported durable was lost; log:\n{}",
        d2.log()
    );
    let after = seqs(&inject(&w.scratch, "alert", 1, 0).unwrap());
    assert!(
        after[0] > max_before,
        "sequence numbers keep growing across a crash"
    );
}
