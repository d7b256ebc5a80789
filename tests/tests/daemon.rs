//! The daemon's life cycle, against the real binary.

use std::process::{Command, Stdio};
use std::time::Duration;

use edge_agent_tests::foundation::NotifyListener;
use edge_agent_tests::sensor::start_with_sensor;
use edge_agent_tests::{
    Daemon, SIGHUP, SIGINT, SIGKILL, SIGTERM, Scratch, agent_bin, status_json, wait_for,
};
use serde_json::json;

#[test]
fn sigterm_stops_the_daemon_with_exit_0_within_the_grace_period() {
    let s = Scratch::new("");
    let mut d = s.start();
    d.signal(SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(12))
        .expect("daemon still running 12s after SIGTERM");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
    assert!(
        !s.socket().exists(),
        "the control socket is removed on the way out"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_daemon_running_on_the_old_one() {
    let s = Scratch::new("");
    let mut d = s.start();
    let before = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(
        s.config_path(),
        format!("{before}\n[log]\nlevel = \"loud\"\n"),
    )
    .unwrap();
    d.signal(SIGHUP);
    // `status` still finds the daemon: it reads [paths] leniently.
    let st = wait_for(Duration::from_secs(10), || {
        let st = status_json(&s);
        (!st["config"]["last_reload"].is_null()).then_some(st)
    })
    .unwrap_or_else(|| panic!("the reload never showed in status; log:\n{}", d.log()));
    assert_eq!(st["daemon"]["running"], true);
    assert_eq!(st["config"]["last_reload"]["ok"], false, "{st}");
    let err = st["config"]["last_reload"]["error"].as_str().unwrap();
    assert!(err.contains("log.level") && err.contains("loud"), "{err}");
    assert_eq!(
        st["config"]["valid"], false,
        "the file on disk is still bad: {st}"
    );
    assert!(
        d.log().contains("refused"),
        "the refusal is logged: {}",
        d.log()
    );
    assert!(
        d.wait_exit(Duration::from_millis(10)).is_none(),
        "daemon died on a bad reload; log:\n{}",
        d.log()
    );
}

#[test]
fn sigint_stops_the_daemon_like_sigterm() {
    let s = Scratch::new("");
    let mut d = s.start();
    d.signal(SIGINT);
    let status = d
        .wait_exit(Duration::from_secs(12))
        .expect("daemon still running 12s after SIGINT");
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log());
}

#[test]
fn sighup_with_a_good_config_applies_it_and_holds_back_restart_only_sections() {
    let s = Scratch::new("[log]\nlevel = \"info\"\n");
    let d = s.start();
    // At info, a control request is not logged.
    assert_eq!(status_json(&s)["daemon"]["running"], true);
    assert!(!d.log().contains("control request"), "{}", d.log());

    // Live: log.level. Restart-only: node.fleet.
    s.write_config(
        "[node]\nid = \"test-node\"\nfleet = \"moved-fleet\"\n\n[log]\nlevel = \"debug\"\n",
    );
    d.signal(SIGHUP);
    let st = wait_for(Duration::from_secs(10), || {
        let st = status_json(&s);
        (st["config"]["last_reload"]["ok"] == true).then_some(st)
    })
    .unwrap_or_else(|| panic!("reload not reported in status; log:\n{}", d.log()));
    assert_eq!(
        st["config"]["pending_restart"],
        json!(["node.fleet"]),
        "{st}"
    );
    assert_eq!(
        st["node"]["fleet"], "test-fleet",
        "the node's identity changes only at a restart: {st}"
    );
    // The status requests above ran after the reload: at debug they are logged.
    assert!(
        wait_for(Duration::from_secs(5), || d
            .log()
            .contains("control request")
            .then_some(()))
        .is_some(),
        "log.level = debug was not applied; log:\n{}",
        d.log()
    );
    assert!(d.log().contains("config reloaded"), "{}", d.log());
}

#[test]
fn the_daemon_tells_systemd_ready_status_watchdog_reloading_and_stopping() {
    let s = Scratch::new("");
    let mut notify = NotifyListener::bind(&s);
    let sock = notify.path.to_string_lossy().into_owned();
    // 200 ms watchdog: pings every 100 ms.
    let mut d = Daemon::start(
        &s,
        &[
            ("NOTIFY_SOCKET", sock.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let t = Duration::from_secs(10);
    let ready = notify
        .wait_for("READY=1", t)
        .unwrap_or_else(|| panic!("no READY=1: {:?}", notify.received));
    assert!(
        notify.received[ready].contains("STATUS="),
        "READY=1 carries a STATUS= line: {:?}",
        notify.received
    );
    // Pings keep coming, not just one.
    let mut from = ready;
    for _ in 0..3 {
        from = notify
            .wait_for_from(from + 1, "WATCHDOG=1", t)
            .unwrap_or_else(|| panic!("WATCHDOG=1 pings stopped: {:?}", notify.received));
    }

    d.signal(SIGHUP);
    let reloading = notify
        .wait_for_from(from + 1, "RELOADING=1", t)
        .unwrap_or_else(|| panic!("no RELOADING=1: {:?}", notify.received));
    assert!(
        notify.received[reloading].contains("MONOTONIC_USEC="),
        "{:?}",
        notify.received
    );
    let ready_again = notify
        .wait_for_from(reloading + 1, "READY=1", t)
        .unwrap_or_else(|| panic!("no READY=1 after the reload: {:?}", notify.received));

    d.signal(SIGTERM);
    notify
        .wait_for_from(ready_again + 1, "STOPPING=1", t)
        .unwrap_or_else(|| panic!("no STOPPING=1: {:?}", notify.received));
    assert_eq!(
        d.wait_exit(Duration::from_secs(12)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn a_second_daemon_on_the_same_runtime_dir_refuses_to_start_and_names_the_first() {
    let s = Scratch::new("");
    let first = s.start();
    let second = Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(s.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("run a second edge-agent");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("already running"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    // The first one is untouched: still answering on its socket.
    let st = status_json(&s);
    assert_eq!(st["daemon"]["pid"], first.pid(), "{st}");
}

#[test]
fn a_stale_socket_left_by_a_killed_daemon_does_not_block_the_next_start() {
    let s = Scratch::new("");
    let mut d = s.start();
    d.signal(SIGKILL);
    d.wait_exit(Duration::from_secs(10)).expect("SIGKILL");
    assert!(s.socket().exists(), "SIGKILL leaves the socket file behind");
    let again = s.start();
    assert_eq!(status_json(&s)["daemon"]["pid"], again.pid());
}

#[test]
fn ready_is_sent_only_once_the_producers_have_left_starting() {
    edge_agent_tests::require_root();
    // The sensor takes a few hundred milliseconds to load and attach its
    // programs: READY=1 must wait for it (or for its failure).
    let s = Scratch::new("[sensor]\nenabled = true\n");
    let mut notify = NotifyListener::bind(&s);
    let sock = notify.path.to_string_lossy().into_owned();
    let d = Daemon::start(&s, &[("NOTIFY_SOCKET", sock.as_str())]);
    notify
        .wait_for("READY=1", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no READY=1; log:\n{}", d.log()));
    let st = status_json(&s);
    for producer in ["sensor", "rules", "metrics", "bootstrap"] {
        let state = &st["stages"][producer]["state"];
        assert!(
            !state.is_null() && state != "starting",
            "{producer} is {state} at READY=1: {st}"
        );
    }
}

/// Sensor and metrics on, with `metrics_interval` and `exclude_comms`.
fn sensor_and_metrics(metrics_interval: &str, exclude_comms: &str) -> String {
    format!(
        "[sensor]\nenabled = true\nexclude_comms = [{exclude_comms}]\n\n[metrics]\nenabled = true\nlisten = \"\"\ninterval = \"{metrics_interval}\"\n"
    )
}

#[test]
fn a_sighup_that_changes_only_metrics_wakes_neither_the_sensor_nor_the_rules() {
    edge_agent_tests::require_root();
    let s = Scratch::new(&sensor_and_metrics("30s", ""));
    let d = start_with_sensor(&s);

    // Generation 2 changes [metrics] only.
    s.write_config(&sensor_and_metrics("45s", ""));
    d.signal(SIGHUP);
    let st = wait_for(Duration::from_secs(30), || {
        let st = status_json(&s);
        let summary = st["stages"]["metrics"]["summary"].as_str()?.to_string();
        summary.contains("every 45s").then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never applied 45s: {}\n{}",
            status_json(&s),
            d.log()
        )
    });
    assert_eq!(st["config"]["generation"], 2, "{st}");
    // Generation 3 changes [sensor] only: once the sensor has answered it,
    // it has seen everything before it too.
    s.write_config(&sensor_and_metrics("45s", "\"noisy\""));
    d.signal(SIGHUP);
    let st = wait_for(Duration::from_secs(30), || {
        let st = status_json(&s);
        (st["config"]["applied"]["sensor"]["generation"] == 3).then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sensor never applied generation 3: {}\n{}",
            status_json(&s),
            d.log()
        )
    });

    let applied = &st["config"]["applied"];
    assert_eq!(applied["sensor"]["ok"], true, "{st}");
    assert_eq!(applied["metrics"]["generation"], 2, "{st}");
    assert!(
        applied.get("rules").is_none(),
        "the rules were woken by a config that did not change [rules]: {st}"
    );
    assert!(
        st["stages"]["rules"]["details"]["last_reload"].is_null(),
        "the rules reloaded: {st}"
    );
    let sensor_updates = d
        .log()
        .matches("sensor filters and deny lists updated")
        .count();
    assert_eq!(
        sensor_updates,
        1,
        "the sensor applied its filters for a [metrics] change too:\n{}",
        d.log()
    );
}

#[test]
fn sensor_keys_read_only_at_start_are_listed_as_waiting_for_a_restart() {
    let s = Scratch::new("");
    let d = s.start();
    s.write_config(
        "[sensor]\nenabled = true\nring_buffer_bytes = \"16 MiB\"\nruntime_state_dirs = [\"/run/elsewhere\"]\nmax_processes = 100\n",
    );
    d.signal(SIGHUP);
    let st = wait_for(Duration::from_secs(10), || {
        let st = status_json(&s);
        (st["config"]["last_reload"]["ok"] == true).then_some(st)
    })
    .unwrap_or_else(|| panic!("reload not reported in status; log:\n{}", d.log()));
    assert_eq!(
        st["config"]["pending_restart"],
        json!([
            "sensor.enabled",
            "sensor.ring_buffer_bytes",
            "sensor.runtime_state_dirs",
            "sensor.max_processes"
        ]),
        "{st}"
    );
    assert_eq!(
        st["stages"]["sensor"]["state"], "disabled",
        "enabled = true waits for the restart: {st}"
    );
    let out = s.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("applied at the next restart: sensor.enabled, sensor.ring_buffer_bytes"),
        "{text}"
    );
}
