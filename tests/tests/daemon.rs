//! The daemon's life cycle, against the real binary.

use std::time::Duration;

use edge_agent_tests::{SIGHUP, SIGTERM, Scratch, status_json};

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
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        d.wait_exit(Duration::from_millis(10)).is_none(),
        "daemon died on a bad reload; log:\n{}",
        d.log()
    );
    // The socket path comes from the old config, which is still in force.
    std::fs::write(s.config_path(), &before).unwrap();
    let st = status_json(&s);
    assert_eq!(st["daemon"]["running"], true);
    assert_eq!(st["config"]["last_reload"]["ok"], false, "{st}");
    let err = st["config"]["last_reload"]["error"].as_str().unwrap();
    assert!(err.contains("log.level") && err.contains("loud"), "{err}");
    assert!(
        d.log().contains("refused"),
        "the refusal is logged: {}",
        d.log()
    );
}
