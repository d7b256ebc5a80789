//! The node's own alert trail: a real rule fires on a real exec (the eBPF
//! sensor, as root), the alert reaches a real broker, and then
//! `edge-agent alerts` shows it from the running daemon and, with the
//! daemon stopped, from the history file; the same alert is one journald
//! entry at the rule's priority (native protocol, to a socket the test
//! binds) and a line in rules.json_file, which is reopened after SIGHUP.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use edge_agent_tests::broker::{Subscriber, certs_and_broker};
use edge_agent_tests::{Daemon, SIGHUP, SIGTERM, Scratch, require_root, wait_for};
use serde_json::Value;

const RULE: &str = "- rule: History probe ran\n  desc: the test's own binary ran\n  condition: evt.type in (execve, execveat) and proc.name = ea-hist-probe\n  output: history probe ran (cmd=%proc.cmdline pid=%proc.pid)\n  priority: WARNING\n";

fn run_probe(dir: &std::path::Path) {
    let probe = dir.join("ea-hist-probe");
    if !probe.exists() {
        std::fs::copy("/bin/true", &probe).unwrap();
    }
    assert!(Command::new(&probe).status().unwrap().success());
}

fn alerts_cli(s: &Scratch, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["alerts"];
    all.extend_from_slice(args);
    let out = s.cli(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_real_rules_alert_is_kept_shown_with_and_without_the_daemon_and_sent_to_journald_and_json_file()
{
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (certs, broker) = certs_and_broker(dir.path());
    let subscriber = Subscriber::start(&broker);
    std::fs::write(dir.path().join("probe.yaml"), RULE).unwrap();
    let json_file = dir.path().join("alerts.json");
    let s = Scratch::new(&format!(
        "[sensor]\nenabled = true\n[rules]\nfiles = [\"{}\"]\njson_file = \"{}\"\n{}",
        dir.path().join("probe.yaml").display(),
        json_file.display(),
        certs.uplink_toml(&broker.agent_url())
    ));
    let journal_path = dir.path().join("journal.sock");
    let journal = UnixDatagram::bind(&journal_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut d = Daemon::start(
        &s,
        &[("EDGE_AGENT_JOURNAL_SOCKET", journal_path.to_str().unwrap())],
    );
    assert!(
        wait_for(Duration::from_secs(60), || {
            let st = edge_agent_tests::status_json(&s);
            (st["stages"]["sensor"]["state"] == "running"
                && st["stages"]["rules"]["details"]["rules_loaded"] == 1)
                .then_some(())
        })
        .is_some(),
        "sensor and rules up; log:\n{}",
        d.log()
    );

    run_probe(dir.path());
    // Delivered: the broker has it.
    assert!(
        subscriber.wait_until(Duration::from_secs(30), |m| m
            .iter()
            .any(
                |m| m.topic.ends_with("/alerts") && m.json()["rule"] == "History probe ran"
            )),
        "the alert reached the broker; log:\n{}",
        d.log()
    );

    let (code, text) = alerts_cli(&s, &[]);
    assert_eq!(code, Some(0));
    let line = text
        .lines()
        .find(|l| l.contains("history probe ran"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(": Warning history probe ran (cmd=ea-hist-probe"),
        "{line}"
    );
    assert!(line.starts_with("20"), "the date first: {line}");
    let (_, json) = alerts_cli(
        &s,
        &["--json", "--rule", "history PROBE*", "--since", "10m"],
    );
    let alerts: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(alerts.len(), 1, "{json}");
    assert_eq!(alerts[0]["priority"], "Warning");
    let (_, none) = alerts_cli(&s, &["--rule", "Some other rule"]);
    assert!(none.trim().is_empty(), "{none}");

    // journald: one native entry at the rule's priority (warning = 4).
    let mut buf = vec![0u8; 65536];
    let n = journal.recv(&mut buf).expect("a journal entry");
    let entry = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(entry.contains("PRIORITY=4\n"), "{entry}");
    assert!(
        entry.contains("MESSAGE=") && entry.contains("history probe ran"),
        "{entry}"
    );
    assert!(entry.contains("FALCO_RULE=History probe ran\n"), "{entry}");

    // json_file: moved away (logrotate) and SIGHUP: the next alert goes to a new file.
    let first = std::fs::read_to_string(&json_file).unwrap();
    assert_eq!(first.lines().count(), 1, "{first}");
    std::fs::rename(&json_file, dir.path().join("alerts.json.old")).unwrap();
    d.signal(SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    run_probe(dir.path());
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(
            &json_file
        )
        .ok()
        .filter(|t| t.lines().count() == 1))
        .is_some(),
        "a fresh json_file after SIGHUP; log:\n{}",
        d.log()
    );

    // The daemon stops: the history file still answers.
    d.signal(SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(30)).is_some());
    let (code, text) = alerts_cli(&s, &["--rule", "History probe ran"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("history probe ran"))
            .count(),
        2,
        "{text}"
    );
    let (code, _) = alerts_cli(&s, &["--follow"]);
    assert_eq!(code, Some(3), "following needs the daemon");
}
