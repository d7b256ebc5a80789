//! Hostile rule files through the real binary: small files whose lists or
//! macros expand exponentially. `rules check` must refuse them by name
//! within a bounded amount of memory, and a running daemon must stay on
//! the rules it had.

use std::process::Command;
use std::time::Duration;

use edge_agent_tests::{Scratch, agent_bin, status_json, wait_for};

/// Ten lists, each holding the one before it eight times (8^10 items), and
/// a rule using the last: some 640 bytes of YAML.
fn exploding_lists() -> String {
    let mut y = String::from("- list: l0\n  items: [a, b, c, d, e, f, g, h]\n");
    for i in 1..10 {
        let prev = format!("l{}", i - 1);
        y.push_str(&format!(
            "- list: l{i}\n  items: [{}]\n",
            vec![prev; 8].join(", ")
        ));
    }
    y.push_str("- rule: Exploding lists\n  desc: x\n  condition: evt.type = execve and proc.name in (l9)\n  output: x\n  priority: WARNING\n");
    y
}

/// Thirty macros, each `(m or m)` of the one before (2^30 checks).
fn exploding_macros() -> String {
    let mut y = String::from("- macro: m0\n  condition: proc.name = a\n");
    for i in 1..30 {
        let p = i - 1;
        y.push_str(&format!("- macro: m{i}\n  condition: (m{p} or m{p})\n"));
    }
    y.push_str("- rule: Exploding macros\n  desc: x\n  condition: evt.type = execve and m29\n  output: x\n  priority: WARNING\n");
    y
}

/// `edge-agent rules check FILE` with its address space capped at 1 GiB
/// (the old compiler used 2.4 GB on these files, then aborted).
fn check_within_a_gigabyte(s: &Scratch, file: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg("--")
        .arg(agent_bin())
        .args(["rules", "check"])
        .arg(file)
        .arg("--config")
        .arg(s.config_path())
        .output()
        .expect("prlimit");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn rules_check_refuses_exponentially_expanding_lists_and_macros_by_rule_name() {
    let s = Scratch::new("");
    for (name, yaml, rule, what) in [
        (
            "lists.yaml",
            exploding_lists(),
            "Exploding lists",
            "more than 20000 list items",
        ),
        (
            "macros.yaml",
            exploding_macros(),
            "Exploding macros",
            "more than 10000 condition nodes",
        ),
    ] {
        let file = s.path().join(name);
        std::fs::write(&file, &yaml).unwrap();
        let (code, text) = check_within_a_gigabyte(&s, &file);
        assert_eq!(
            code,
            Some(2),
            "refused like any bad rule, not a crash: {text}"
        );
        assert!(
            text.contains(&format!("rule \"{rule}\"")) && text.contains(what),
            "the rule and the limit: {text}"
        );
    }
    assert!(exploding_lists().len() < 700, "a file of the report's size");
}

#[test]
fn an_exploding_rule_file_dropped_into_the_rules_directory_leaves_the_daemon_on_its_rules() {
    let rules_dir = tempfile::tempdir().unwrap();
    let shipped = edge_agent_tests::rules::repo_root().join("configs/rules/10-edge-rules.yaml");
    std::fs::copy(&shipped, rules_dir.path().join("10-edge-rules.yaml")).unwrap();
    let s = Scratch::new(&format!(
        "[rules]\nfiles = [\"{}/*.yaml\"]\n",
        rules_dir.path().display()
    ));
    let mut d = s.start();
    let loaded = wait_for(Duration::from_secs(20), || {
        let n = status_json(&s)["stages"]["rules"]["details"]["rules_loaded"].as_u64()?;
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("rules never loaded: {}", status_json(&s)));

    std::fs::write(rules_dir.path().join("90-lists.yaml"), exploding_lists()).unwrap();
    let st = wait_for(Duration::from_secs(30), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["last_reload"]["ok"] == false).then_some(st)
    })
    .unwrap_or_else(|| panic!("no refused reload: {}\nlog:\n{}", status_json(&s), d.log()));
    let details = &st["stages"]["rules"]["details"];
    assert_eq!(details["rules_loaded"], loaded, "{details}");
    let reason = details["last_reload"]["errors"][0].as_str().unwrap();
    assert!(
        reason.contains("90-lists.yaml:")
            && reason.contains("Exploding lists")
            && reason.contains("list items"),
        "{reason}"
    );
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "the daemon died: {}",
        d.log()
    );
}
