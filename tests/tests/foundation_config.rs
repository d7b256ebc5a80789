//! Bad config files, through the real binary: `config check` and `run` both
//! exit 78 (EX_CONFIG, which systemd's RestartPreventExitStatus= knows) with
//! a message that names the file, the key and the reason.

use std::process::{Command, Stdio};

use edge_agent_tests::foundation::both;
use edge_agent_tests::{Scratch, agent_bin};

const EXIT_CONFIG: i32 = 78;

/// (what is wrong, file contents, key the message must name, reason it must give)
const BAD_CONFIGS: &[(&str, &str, &str, &str)] = &[
    (
        "a duration without a unit",
        "[metrics]\ninterval = \"abc\"\n",
        "metrics.interval",
        "expected a duration such as \"30s\", got \"abc\"",
    ),
    (
        "a bare number where a duration belongs",
        "[uplink]\nkeep_alive = 30\n",
        "uplink.keep_alive",
        "got the bare number 30",
    ),
    (
        "a misspelt key",
        "[log]\nlevell = \"debug\"\n",
        "log.levell",
        "unknown field `levell`, expected `level` or `format`",
    ),
    (
        "a misspelt section",
        "[metrix]\nenabled = true\n",
        "metrix",
        "unknown field `metrix`",
    ),
    (
        "a string where a list belongs",
        "[node]\ngroups = \"edge\"\n",
        "node.groups",
        "invalid type: string \"edge\", expected a sequence",
    ),
    (
        "an unknown log level",
        "[log]\nlevel = \"loud\"\n",
        "log.level",
        "unknown variant `loud`",
    ),
    (
        "a node id that cannot be a topic level",
        "[node]\nid = \"rack/7\"\n",
        "node.id",
        "cannot appear in an MQTT topic level",
    ),
    (
        "an empty fleet",
        "[node]\nfleet = \"\"\n",
        "node.fleet",
        "must not be empty",
    ),
    (
        "a group name with a space",
        "[control]\ngroup = \"edge agent\"\n",
        "control.group",
        "is not a valid group name",
    ),
    (
        "a socket path longer than sun_path",
        "[paths]\nruntime_dir = \"/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
        "paths.runtime_dir",
        "too long for a Unix socket path",
    ),
    (
        "broken TOML syntax",
        "[node\nid = \"x\"\n",
        "",
        "not valid TOML",
    ),
];

fn write(s: &Scratch, name: &str, text: &str) -> std::path::PathBuf {
    let path = s.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_rejects_each_bad_input_with_exit_78_naming_file_key_and_reason() {
    let s = Scratch::new("");
    for (i, (what, text, key, reason)) in BAD_CONFIGS.iter().enumerate() {
        let path = write(&s, &format!("bad-{i}.toml"), text);
        let out = Command::new(agent_bin())
            .arg("config")
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_CONFIG),
            "{what}: {}",
            both(&out)
        );
        let first = err.lines().next().unwrap_or_default();
        let prefix = format!("{}: {key}", path.display());
        assert!(
            first.starts_with(&prefix),
            "{what}: the message starts with the file and the key ({prefix}): {err}"
        );
        assert!(err.contains(reason), "{what}: the reason ({reason}): {err}");
    }
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_config_with_exit_78_and_the_same_message() {
    let s = Scratch::new("");
    let path = write(&s, "bad.toml", "[metrics]\ninterval = \"abc\"\n");
    let out = Command::new(agent_bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{}", both(&out));
    assert!(
        err.starts_with(&format!(
            "{}: metrics.interval: expected a duration such as \"30s\", got \"abc\"",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let s = Scratch::new("");
    let path = write(
        &s,
        "two.toml",
        "[node]\nid = \"a b\"\nfleet = \"\"\n[control]\ngroup = \"\"\n",
    );
    let out = Command::new(agent_bin())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    for key in ["node.id", "node.fleet", "control.group"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{}: {key}: ", path.display()))),
            "{key} missing: {err}"
        );
    }
}

#[test]
fn a_missing_config_file_is_a_config_error_that_names_the_path() {
    let s = Scratch::new("");
    let missing = s.path().join("nowhere/agent.toml");
    for args in [&["config", "check"][..], &["run", "--config"][..]] {
        let out = Command::new(agent_bin())
            .args(args)
            .arg(&missing)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "{}: cannot read the config file",
                missing.display()
            )),
            "{err}"
        );
    }
}

#[test]
fn the_shipped_default_config_is_valid() {
    let shipped = edge_agent_tests::foundation::repo_root().join("configs/agent.toml");
    let out = Command::new(agent_bin())
        .args(["config", "check"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
}

#[test]
fn bad_command_line_usage_exits_64_not_clap_s_2() {
    let out = Command::new(agent_bin())
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", both(&out));
}
