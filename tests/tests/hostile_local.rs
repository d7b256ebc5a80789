//! Hostile local clients against the real daemon: members of the control
//! group (not root) flooding the control socket with idle connections and
//! asking for synthetic records, and any local user pipelining scrapes at
//! the metrics endpoint. Each test reproduces an attack that took the
//! daemon down or starved it, and asserts the daemon keeps serving root,
//! Prometheus and its own collectors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use edge_agent_tests::broker::control;
use edge_agent_tests::foundation::{both, share_with_nobody};
use edge_agent_tests::metrics::{http_get, metrics_addr, wait_collections};
use edge_agent_tests::{Daemon, Scratch, require_root, status_json, wait_for};

const MEMBER_GROUP: &str = "users";

/// A member of the control group (nobody, supplementary group `users`)
/// running the control probe with `args`; its parsed answer line.
fn member_call(
    probe: &std::path::Path,
    socket: &std::path::Path,
    method: &str,
    params: Value,
) -> Value {
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            &format!("--groups={MEMBER_GROUP}"),
            "--",
        ])
        .arg(probe)
        .arg(socket)
        .arg(method)
        .arg(params.to_string())
        .output()
        .expect("setpriv");
    assert!(out.status.success(), "probe failed: {}", both(&out));
    serde_json::from_slice(&out.stdout).expect("an answer line")
}

/// A member of the control group holding `n` idle connections; the line it
/// printed once they settled (`held N open O closed C busy B`).
struct Flood {
    child: Child,
    pub open: usize,
    pub busy: usize,
    pub held: usize,
}

impl Flood {
    fn start(probe: &std::path::Path, socket: &std::path::Path, n: usize) -> Flood {
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                &format!("--groups={MEMBER_GROUP}"),
                "--",
            ])
            .arg(probe)
            .args(["--hold", &n.to_string()])
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("setpriv");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .expect("the flood reports");
        let field = |name: &str| -> usize {
            let words: Vec<&str> = line.split_whitespace().collect();
            let i = words
                .iter()
                .position(|w| *w == name)
                .unwrap_or_else(|| panic!("{line}"));
            words[i + 1].parse().unwrap()
        };
        Flood {
            open: field("open"),
            busy: field("busy"),
            held: field("held"),
            child,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_idle_connection_flood_from_a_group_member_leaves_status_metrics_collectors_and_reloads_working()
 {
    require_root();
    let s = Scratch::new(&format!(
        "[control]\ngroup = \"{MEMBER_GROUP}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1s\"\n[rules]\nfiles = [\"rules.yaml\"]\n"
    ));
    let rule = |name: &str| {
        format!(
            "- rule: {name}\n  desc: x\n  condition: evt.type = execve and proc.name = sh\n  output: shell\n  priority: WARNING\n"
        )
    };
    std::fs::write(s.path().join("rules.yaml"), rule("First")).unwrap();
    let (_, probe) = share_with_nobody(&s);
    // systemd's default soft limit, without the unit's LimitNOFILE: the
    // agent must protect its descriptors itself.
    let d = Daemon::start_with_nofile(&s, 1024);
    let addr = metrics_addr(&s);
    let flood = Flood::start(&probe, &s.socket(), 1100);
    assert_eq!(flood.held, 1100, "the flood connected");
    assert!(
        flood.open <= 16,
        "a single member may hold only a few connections; {} stayed open",
        flood.open
    );
    assert!(
        flood.busy >= 1100 - 16,
        "the rest are told why: {} busy",
        flood.busy
    );

    // root still gets answers.
    let out = s.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", both(&out), d.log());
    assert!(text.contains("is RUNNING"), "{text}");
    // Prometheus still gets every series.
    let (code, body) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("node_cpu_seconds_total"), "{body}");
    // The collectors still open their files.
    let before = wait_collections(&s, 1, Duration::from_secs(20));
    wait_collections(&s, before + 2, Duration::from_secs(20));
    let failing = status_json(&s)["stages"]["metrics"]["details"]["failing_collectors"].clone();
    assert_eq!(failing, 0, "{}", d.log());
    // And a rules change still loads.
    std::fs::write(s.path().join("rules.yaml"), rule("Second")).unwrap();
    let reloaded = wait_for(Duration::from_secs(30), || {
        let r = status_json(&s)["stages"]["rules"]["details"]["last_reload"].clone();
        (r["ok"] == true).then_some(r)
    });
    assert!(reloaded.is_some(), "the rules reload failed: {}", d.log());
    drop(flood);
}

#[test]
fn test_report_is_refused_to_group_members_and_bounded_for_root() {
    require_root();
    let s = Scratch::new(&format!("[control]\ngroup = \"{MEMBER_GROUP}\"\n"));
    let (_, probe) = share_with_nobody(&s);
    let mut d = s.start();
    let huge = json!({"class": "critical_alert", "count": 1, "pad_bytes": 1u64 << 40});
    let answer = member_call(&probe, &s.socket(), "outbox.test_report", huge.clone());
    assert_eq!(answer["error"]["code"], "permission_denied", "{answer}");
    let answer = member_call(
        &probe,
        &s.socket(),
        "outbox.test_report",
        json!({"class": "critical_alert", "count": 3000}),
    );
    assert_eq!(answer["error"]["code"], "permission_denied", "{answer}");
    // root may call it, within bounds: the terabyte is refused, not tried.
    let refused =
        control(&s, "outbox.test_report", huge).expect_err("a terabyte record is refused");
    assert_eq!(refused["code"], "bad_params", "{refused}");
    assert!(
        d.wait_exit(Duration::from_millis(500)).is_none(),
        "the daemon died: {}",
        d.log()
    );
    let ok = control(
        &s,
        "outbox.test_report",
        json!({"class": "alert", "count": 2, "pad_bytes": 100}),
    )
    .unwrap();
    assert_eq!(ok["seqs"].as_array().map(Vec::len), Some(2));
    // test-alert stays open to members, bounded as it was.
    let alert = member_call(
        &probe,
        &s.socket(),
        "outbox.test_alert",
        json!({"count": 1, "wait_ms": 0}),
    );
    assert_eq!(alert["ok"], true, "{alert}");
    let many = member_call(
        &probe,
        &s.socket(),
        "outbox.test_alert",
        json!({"count": 1_000_000, "wait_ms": 0}),
    );
    assert_eq!(many["error"]["code"], "bad_params", "{many}");
}

#[test]
fn the_unit_lets_the_agent_open_more_files_than_its_reserve_and_connection_caps() {
    let unit = std::fs::read_to_string(
        edge_agent_tests::foundation::repo_root().join("systemd/edge-agent.service"),
    )
    .unwrap();
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE (systemd's default soft limit is 1024)")
        .parse()
        .expect("a number");
    let needed = edge_agent::fds::RESERVE
        + edge_agent::control::Limits::default().max_connections as u64
        + edge_agent::metrics::MAX_ENDPOINT_CONNECTIONS as u64;
    assert!(
        limit >= 2 * needed,
        "LimitNOFILE={limit}, needs {needed} and room to grow"
    );
}

/// `connections` clients of `addr` that each pipeline `requests` scrapes and
/// never read an answer; a client the agent lets go comes back at once,
/// until `stop`.
fn pipelining_flood(
    addr: &str,
    connections: usize,
    requests: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..connections)
        .map(|_| {
            let addr = addr.to_string();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let burst = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(requests);
                let mut conn: Option<TcpStream> = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // A write to a connection the agent closed fails: then
                    // reconnect. (A blank line between requests is allowed.)
                    let alive = conn.as_mut().is_some_and(|c| c.write_all(b"\r\n").is_ok());
                    if !alive {
                        conn = TcpStream::connect(&addr).ok().and_then(|mut c| {
                            c.set_write_timeout(Some(Duration::from_millis(500))).ok()?;
                            c.write_all(burst.as_bytes()).ok()?;
                            Some(c)
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect()
}

#[test]
fn clients_pipelining_scrapes_without_reading_cannot_keep_prometheus_out() {
    let s = Scratch::new("[metrics]\nlisten = \"127.0.0.1:0\"\ninterval = \"1h\"\n");
    let d = s.start();
    let addr = metrics_addr(&s);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = pipelining_flood(&addr, 8, 200, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    // Prometheus' default scrape timeout is 10 s; three scrapes in a row,
    // each within it, while the flood goes on.
    for _ in 0..3 {
        let started = Instant::now();
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = Vec::new();
        let read = c.read_to_end(&mut body);
        let text = String::from_utf8_lossy(&body);
        assert!(
            read.is_ok()
                && text.starts_with("HTTP/1.0 200")
                && text.contains("node_cpu_seconds_total"),
            "no scrape within 10 s ({:?} after {:?}): {}\n{}",
            read.err(),
            started.elapsed(),
            &text[..text.len().min(200)],
            d.log()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
}
