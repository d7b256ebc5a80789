//! A full outbox: the budget gives up the right classes in the right order
//! and counts them (also across restarts and in the retained state), and a
//! full disk is reported without losing anything durable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edge_agent_tests::broker::{
    Gate, Subscriber, certs_and_broker, inject, wait_stage, waiting_seqs,
};
use edge_agent_tests::{SIGTERM, Scratch, require_root, status_json};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn seqs(v: &[Option<u64>]) -> Vec<u64> {
    v.iter().map(|s| s.expect("not given up")).collect()
}

fn n(v: &Value, class: &str) -> u64 {
    v[class]
        .as_u64()
        .unwrap_or_else(|| panic!("no {class} in {v}"))
}

fn waiting_of(s: &Scratch, class: &str) -> BTreeSet<u64> {
    waiting_seqs(s)
        .into_iter()
        .filter(|(c, _)| c == class)
        .map(|(_, s)| s)
        .collect()
}

/// Outbox details once they show `appended` records appended.
fn settled(s: &Scratch, appended: u64) -> Value {
    wait_stage(s, "outbox", LONG, |st| {
        st["details"]["appended_total"].as_u64() == Some(appended)
    })["details"]
        .clone()
}

#[test]
fn a_full_outbox_gives_up_metrics_then_events_then_alerts_and_keeps_critical_alerts() {
    let scratch = Scratch::new("");
    let (certs, broker) = certs_and_broker(scratch.path());
    // The link is down throughout, so nothing leaves but by giving up.
    let gate = Gate::new(broker.tls_port, false);
    let toml = certs.uplink_toml(&gate.url());
    // 2 MiB file: 40 % for records, about 200 records of 2 KB (a page each).
    scratch.write_config(&format!("{toml}[outbox]\nmax_bytes = \"2 MiB\"\n"));
    let mut d = scratch.start();
    const PAD: usize = 2000;

    let metrics = seqs(&inject(&scratch, "metrics", 100, PAD).unwrap());
    let events = seqs(&inject(&scratch, "node_event", 50, PAD).unwrap());
    let alerts = seqs(&inject(&scratch, "alert", 40, PAD).unwrap());
    let det = settled(&scratch, 190);
    assert_eq!(
        det["given_up_total_by_class"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        0,
        "within budget: {det}"
    );

    // Critical alerts arrive: older metrics are thinned first.
    let mut critical = seqs(&inject(&scratch, "critical_alert", 30, PAD).unwrap());
    let det = settled(&scratch, 220);
    let g = &det["given_up_total_by_class"];
    assert!(n(g, "metrics") > 0, "{det}");
    assert_eq!(
        (n(g, "node_event"), n(g, "alert"), n(g, "critical_alert")),
        (0, 0, 0),
        "{det}"
    );
    let m = waiting_of(&scratch, "metrics");
    assert!(
        m.contains(&metrics[0]),
        "thinning keeps the oldest metrics batch"
    );
    assert!(
        !m.contains(&metrics[1]),
        "and drops every second one of the older half"
    );
    assert!(
        m.contains(metrics.last().unwrap()),
        "the newest metrics stay"
    );

    // More: all metrics go, then node events, and alerts are untouched.
    critical.extend(seqs(&inject(&scratch, "critical_alert", 100, PAD).unwrap()));
    let det = settled(&scratch, 320);
    let g = &det["given_up_total_by_class"];
    assert_eq!(n(g, "metrics"), 100, "{det}");
    assert!(n(g, "node_event") > 0, "{det}");
    assert_eq!((n(g, "alert"), n(g, "critical_alert")), (0, 0), "{det}");

    // More still: events are gone, alerts go, critical alerts survive.
    critical.extend(seqs(&inject(&scratch, "critical_alert", 50, PAD).unwrap()));
    let det = settled(&scratch, 370);
    let g = det["given_up_total_by_class"].clone();
    assert_eq!(n(&g, "node_event"), 50, "{det}");
    assert!(n(&g, "alert") > 0, "{det}");
    assert_eq!(n(&g, "critical_alert"), 0, "{det}");
    let crit_waiting = waiting_of(&scratch, "critical_alert");
    assert!(
        critical.iter().all(|s| crit_waiting.contains(s)),
        "every critical alert is still there"
    );
    // Every record is either waiting or counted as given up.
    let w = &det["records_waiting_by_class"];
    for (class, sent) in [
        ("metrics", metrics.len()),
        ("node_event", events.len()),
        ("alert", alerts.len()),
        ("critical_alert", critical.len()),
    ] {
        assert_eq!(n(w, class) + n(&g, class), sent as u64, "{class}: {det}");
    }

    // The counts survive a restart...
    d.signal(SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
    // ...are shown without the daemon...
    let offline = status_json(&scratch);
    assert_eq!(offline["daemon"]["running"], false);
    assert_eq!(
        offline["stages"]["outbox"]["details"]["given_up_total_by_class"], g,
        "{offline}"
    );
    let listing = scratch.cli(&["outbox", "--json"]);
    assert_eq!(
        listing.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing: Value = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(listing["given_up"], g);
    assert_eq!(listing["classes"][0]["class"], "critical_alert");
    assert_eq!(listing["classes"][0]["records"], critical.len() as u64);
    // ...and by the running daemon again, and in the retained state message.
    let _d = scratch.start();
    wait_stage(&scratch, "outbox", LONG, |s| {
        s["details"]["given_up_total_by_class"] == g
    });
    let sub = Subscriber::start(&broker);
    gate.open();
    assert!(
        sub.wait_until(LONG, |msgs| msgs
            .iter()
            .any(|m| m.topic.ends_with("/state") && m.json()["state"] == "online"))
    );
    let state = sub
        .on("state")
        .into_iter()
        .rev()
        .find(|m| m.json()["state"] == "online")
        .unwrap()
        .json();
    assert_eq!(state["given_up"], g, "{state}");
}

/// A tmpfs mounted for the test and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_and_nothing_durable_is_lost() {
    require_root();
    let scratch = Scratch::new("");
    let (certs, broker) = certs_and_broker(scratch.path());
    let gate = Gate::new(broker.tls_port, false);
    let toml = certs.uplink_toml(&gate.url());
    // The budget is larger than the disk: the disk fills first.
    scratch.write_config(&format!("{toml}[outbox]\nmax_bytes = \"64 MiB\"\n"));
    let _fs = Tmpfs::mount(&scratch.state_dir(), "3m");
    let d = scratch.start();

    let mut durable = BTreeSet::new();
    let mut refusal = None;
    for _ in 0..200 {
        match inject(&scratch, "alert", 50, 1000) {
            Ok(s) => durable.extend(seqs(&s)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("the disk never filled");
    assert!(
        refusal["message"].as_str().unwrap().contains("full"),
        "{refusal}"
    );
    assert!(durable.len() > 100, "{}", durable.len());

    // Still running, and saying what is wrong.
    let st = wait_stage(&scratch, "outbox", LONG, |s| {
        s["details"]["disk_full"] == true
    });
    assert_eq!(st["state"], "degraded", "{st}");
    assert!(
        st["summary"].as_str().unwrap().contains("DISK FULL"),
        "{st}"
    );
    assert!(
        st["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("is full"),
        "{st}"
    );
    assert!(d.log().contains("cannot write"), "logged: {}", d.log());

    // Nothing durable is lost, and it all still drains.
    let waiting: BTreeSet<u64> = waiting_seqs(&scratch).into_iter().map(|(_, s)| s).collect();
    assert!(durable.is_subset(&waiting), "a durable record vanished");
    let sub = Subscriber::start(&broker);
    gate.open();
    assert!(
        sub.wait_until(LONG, |m| {
            let got: BTreeSet<u64> = m.iter().filter_map(|m| m.seq()).collect();
            durable.is_subset(&got)
        }),
        "not everything durable was delivered; log:\n{}",
        d.log()
    );

    // Drained pages are reused: the outbox writes again without new disk.
    let again = wait_for_ok(&d, || inject(&scratch, "alert", 20, 1000).ok());
    assert_eq!(again.len(), 20);
    wait_stage(&scratch, "outbox", LONG, |s| {
        s["details"]["disk_full"] == false && s["state"] == "running"
    });
}

fn wait_for_ok<T>(d: &edge_agent_tests::Daemon, mut f: impl FnMut() -> Option<T>) -> T {
    edge_agent_tests::wait_for(LONG, || {
        let r = f();
        if r.is_none() {
            std::thread::sleep(Duration::from_millis(500));
        }
        r
    })
    .unwrap_or_else(|| panic!("the outbox did not write again; log:\n{}", d.log()))
}
