//! `edge-agent status` against a running daemon, against none, with a broken
//! config, and for callers the control socket must refuse or let in.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use edge_agent_tests::foundation::{Unprivileged, both, share_with_nobody};
use edge_agent_tests::{Scratch, require_root, status_json};
use serde_json::Value;

/// Exit codes from `agent/src/cli/mod.rs` (the README documents them).
const EXIT_NOT_RUNNING: i32 = 3;
const EXIT_PERMISSION_DENIED: i32 = 4;

/// The keys of an object, sorted (this crate's serde_json sorts them anyway).
fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

/// The stable key set of `status --json`, whether the daemon runs or not.
fn assert_stable_keys(doc: &Value) {
    assert_eq!(
        keys(doc),
        [
            "config",
            "daemon",
            "fleet",
            "node",
            "paths",
            "reports_dropped_before_outbox",
            "schema",
            "stages"
        ],
        "{doc}"
    );
    assert_eq!(doc["schema"], 1);
    assert_eq!(
        keys(&doc["daemon"]),
        [
            "pid",
            "reason",
            "running",
            "started_at",
            "uptime_secs",
            "version"
        ]
    );
    assert_eq!(
        keys(&doc["config"]),
        [
            "applied",
            "error",
            "generation",
            "last_reload",
            "path",
            "pending_restart",
            "valid"
        ]
    );
    assert_eq!(
        keys(&doc["paths"]),
        [
            "control_socket",
            "runtime_dir",
            "state_dir",
            "state_dir_bytes",
            "state_dir_exists"
        ]
    );
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_of_a_running_daemon_shows_version_node_config_and_paths() {
    let s = Scratch::new("");
    let d = s.start();
    let out = s.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    let text = stdout(&out);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("edge-agent ")
            && first.contains("is RUNNING")
            && first.contains(&format!("pid {}", d.pid())),
        "{text}"
    );
    for expected in [
        "node     test-node  fleet test-fleet".to_string(),
        format!("config   {}", s.config_path().display()),
        format!("state    {}", s.state_dir().display()),
        format!("socket   {}", s.socket().display()),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }

    let doc = status_json(&s);
    assert_stable_keys(&doc);
    assert_eq!(doc["daemon"]["running"], true);
    assert_eq!(doc["daemon"]["pid"], d.pid());
    assert!(doc["daemon"]["reason"].is_null());
    assert_eq!(doc["node"]["id"], "test-node");
    assert_eq!(doc["config"]["valid"], true);
    assert_eq!(doc["paths"]["state_dir_exists"], true);
    assert_eq!(
        doc["paths"]["control_socket"],
        s.socket().to_string_lossy().as_ref()
    );
}

#[test]
fn status_without_a_daemon_says_not_running_plainly_and_still_shows_config_and_state() {
    let s = Scratch::new("");
    let out = s.cli(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("edge-agent is NOT RUNNING"),
        "the first line says it: {text}"
    );
    assert!(text.contains("systemctl start edge-agent"), "{text}");
    assert!(
        text.contains(&format!("config   {}", s.config_path().display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("state    {} (missing)", s.state_dir().display())),
        "{text}"
    );

    let out = s.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_stable_keys(&doc);
    assert_eq!(doc["daemon"]["running"], false);
    assert!(
        doc["daemon"]["reason"]
            .as_str()
            .unwrap()
            .contains(&s.socket().display().to_string()),
        "{doc}"
    );
    assert_eq!(doc["node"]["fleet"], "test-fleet");
}

#[test]
fn status_reports_the_state_directory_the_daemon_left_behind() {
    let s = Scratch::new("");
    std::fs::create_dir_all(s.state_dir()).unwrap();
    std::fs::write(s.state_dir().join("outbox.redb"), vec![0u8; 3000]).unwrap();
    let doc = status_json(&s);
    assert_eq!(doc["paths"]["state_dir_exists"], true);
    assert_eq!(doc["paths"]["state_dir_bytes"], 3000);
}

#[test]
fn status_finds_the_running_daemon_even_when_the_config_file_is_now_broken() {
    let s = Scratch::new("");
    let d = s.start();
    let good = std::fs::read_to_string(s.config_path()).unwrap();
    for (broken, names) in [
        // Valid TOML, invalid value.
        (format!("{good}\n[log]\nlevel = \"loud\"\n"), "log.level"),
        // Not even TOML: [paths] is still read line by line.
        (format!("{good}\n[metrics\n"), "not valid TOML"),
    ] {
        std::fs::write(s.config_path(), &broken).unwrap();
        let out = s.cli(&["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", both(&out));
        let text = stdout(&out);
        assert!(text.contains("is RUNNING"), "{text}");
        assert!(text.contains(&format!("pid {}", d.pid())), "{text}");
        assert!(
            text.contains("INVALID") && text.contains("restart will fail"),
            "{text}"
        );
        assert!(text.contains(names), "{text}");
        let doc = status_json(&s);
        assert_eq!(doc["config"]["valid"], false);
        assert!(
            doc["config"]["error"].as_str().unwrap().contains(names),
            "{doc}"
        );
    }
}

#[test]
fn status_without_a_daemon_and_with_a_broken_config_says_both() {
    let s = Scratch::new("[node]\nid = \"a/b\"\n");
    let out = s.cli(&["status"]);
    assert_eq!(out.status.code(), Some(EXIT_NOT_RUNNING), "{}", both(&out));
    let text = stdout(&out);
    assert!(text.starts_with("edge-agent is NOT RUNNING"), "{text}");
    assert!(text.contains("INVALID"), "{text}");
    assert!(text.contains("node.id"), "{text}");
    assert!(text.contains("edge-agent config check"), "{text}");
    // Where it looked comes from the broken file's [paths].
    assert!(text.contains(&s.socket().display().to_string()), "{text}");
}

/// `edge-agent status` run by nobody: exit 4 and PERMISSION DENIED.
fn assert_status_refuses_the_stranger(s: &Scratch, agent: &std::path::Path) {
    let config = s.config_path();
    let out = Unprivileged::STRANGER.run(agent, &["status", "--config", config.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_PERMISSION_DENIED),
        "{}",
        both(&out)
    );
    assert!(stdout(&out).contains("PERMISSION DENIED"), "{}", both(&out));
}

#[test]
fn a_stranger_is_refused_by_the_socket_file_mode() {
    require_root();
    let s = Scratch::new("[control]\ngroup = \"users\"\n");
    let (agent, probe) = share_with_nobody(&s);
    let _d = s.start();
    let mode = std::fs::metadata(s.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");

    assert_status_refuses_the_stranger(&s, &agent);
    let probe = Unprivileged::STRANGER.run(&probe, &[s.socket().to_str().unwrap(), "status"]);
    assert!(
        String::from_utf8_lossy(&probe.stderr).contains("Permission denied"),
        "connect() itself fails: {}",
        both(&probe)
    );
}

#[test]
fn a_stranger_who_reaches_the_socket_is_refused_by_the_daemon_with_permission_denied() {
    require_root();
    let s = Scratch::new("[control]\ngroup = \"users\"\n");
    let (agent, probe) = share_with_nobody(&s);
    let d = s.start();
    // Open the file mode up, so only the daemon's SO_PEERCRED check stands.
    std::fs::set_permissions(s.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();

    let answer = Unprivileged::STRANGER.run(&probe, &[s.socket().to_str().unwrap(), "status"]);
    let line: Value = serde_json::from_slice(&answer.stdout)
        .unwrap_or_else(|e| panic!("no JSON answer ({e}): {}", both(&answer)));
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["error"]["code"], "permission_denied", "{line}");

    assert_status_refuses_the_stranger(&s, &agent);
    assert!(
        d.log().contains("refused a peer") && d.log().contains("uid=65534"),
        "the daemon logs whom it refused: {}",
        d.log()
    );
}

#[test]
fn members_of_the_control_group_are_let_in_by_primary_or_supplementary_group() {
    require_root();
    let s = Scratch::new("[control]\ngroup = \"users\"\n");
    let (agent, _) = share_with_nobody(&s);
    let d = s.start();
    let config = s.config_path();
    let args = ["status", "--json", "--config", config.to_str().unwrap()];
    for member in [
        Unprivileged {
            group: "nogroup",
            supplementary: &["users"],
        },
        Unprivileged {
            group: "users",
            supplementary: &[],
        },
    ] {
        let out = member.run(&agent, &args);
        assert_eq!(out.status.code(), Some(0), "{}", both(&out));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["daemon"]["pid"], d.pid());
    }
}

#[test]
fn status_piped_into_a_reader_that_leaves_early_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    // `edge-agent status | head -1`: the reader has gone before the second
    // line is written. The command must die of SIGPIPE like any Unix tool,
    // not panic with a backtrace on the technician's screen.
    let s = Scratch::new("");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(edge_agent_tests::agent_bin())
        .args(["status", "--config"])
        .arg(s.config_path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run edge-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
}

#[test]
fn status_fits_a_screen_and_verbose_lists_every_number() {
    // A broker that is not there: the uplink's error code is a key detail
    // (shown on the one screen while it says something).
    let port = edge_agent_tests::broker::free_port();
    let s = Scratch::new(&format!(
        "[uplink]\nurl = \"mqtt://127.0.0.1:{port}\"\ninsecure_plaintext = true\n"
    ));
    let _d = s.start();
    let failed = edge_agent_tests::wait_for(Duration::from_secs(10), || {
        status_json(&s)["stages"]["uplink"]["details"]["last_error_code"]
            .as_str()
            .map(str::to_string)
    });
    let code = failed.expect("the uplink reports why it cannot connect");
    let doc = status_json(&s);
    assert!(
        doc["stages"]["uplink"]["key_details"]
            .as_array()
            .is_some_and(|k| k.iter().any(|n| n == "last_error_code")),
        "the stage names its key details: {doc}"
    );
    let short = stdout(&s.cli(&["status"]));
    assert!(
        short.contains(&format!("      last_error_code: {code}")),
        "{short}"
    );
    let long = stdout(&s.cli(&["status", "--verbose"]));
    // The outbox reports its file size as a detail: only the long form has it.
    assert!(long.contains("      file_bytes: "), "{long}");
    assert!(!short.contains("file_bytes"), "{short}");
    assert!(short.contains("outbox     RUNNING"), "{short}");
    assert!(short.contains("status --verbose"), "{short}");
    assert!(short.lines().count() <= 24, "one screen:\n{short}");
    assert_eq!(
        stdout(&s.cli(&["status", "-v"])).lines().count(),
        long.lines().count()
    );
}
