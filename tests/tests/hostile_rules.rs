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

/// A rule file with one rule named `name`.
fn one_rule(name: &str, proc_name: &str) -> String {
    format!(
        "- rule: {name}\n  desc: x\n  condition: evt.type = execve and proc.name = {proc_name}\n  output: x\n  priority: WARNING\n"
    )
}

/// A config whose rules are `dir/*.yaml` and that runs no sensor.
fn rules_in(dir: &std::path::Path) -> Scratch {
    Scratch::new(&format!(
        "[rules]\nfiles = [\"{}/*.yaml\"]\n[sensor]\nenabled = false\n",
        dir.display()
    ))
}

fn rules_details(s: &Scratch) -> serde_json::Value {
    status_json(s)["stages"]["rules"].clone()
}

/// Wait until the rules stage's status satisfies `f`; panic with it and
/// the daemon's log when it does not within a minute (a trial is 20 s).
fn wait_rules(
    s: &Scratch,
    d: &edge_agent_tests::Daemon,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(Duration::from_secs(60), || {
        let st = rules_details(s);
        f(&st).then_some(st)
    })
    .unwrap_or_else(|| panic!("{what}: {}\nlog:\n{}", rules_details(s), d.log()))
}

fn kill_with(d: &mut edge_agent_tests::Daemon, sig: i32) {
    use std::os::unix::process::ExitStatusExt;
    d.signal(sig);
    let status = d
        .wait_exit(Duration::from_secs(20))
        .expect("the daemon ends on the signal");
    assert_eq!(status.signal(), Some(sig), "{status}");
}

#[test]
fn a_rule_set_the_daemon_died_of_is_held_back_at_the_next_start_until_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-good.yaml"), one_rule("Good", "good")).unwrap();
    let s = rules_in(dir.path());
    let mut d = s.start();
    wait_rules(&s, &d, "the first set never ran through its trial", |st| {
        st["details"]["rules_loaded"] == 1 && st["details"]["trial_ends"].is_null()
    });

    // A new set, then the daemon dies of SIGABRT (exit 134) while it is on
    // trial, as it would on a rule that aborts the compiler or evaluator.
    let new = dir.path().join("20-new.yaml");
    std::fs::write(&new, one_rule("New", "new")).unwrap();
    wait_rules(&s, &d, "the new set never went on trial", |st| {
        st["details"]["rules_loaded"] == 2 && !st["details"]["trial_ends"].is_null()
    });
    kill_with(&mut d, libc::SIGABRT);

    // The next start runs the last good set, and says so.
    let mut d = s.start();
    let st = wait_rules(&s, &d, "the new set was not held back", |st| {
        !st["details"]["held_back"].is_null()
    });
    let held = &st["details"]["held_back"];
    assert_eq!(held["signals"], serde_json::json!(["SIGABRT"]), "{st}");
    assert_eq!(st["details"]["rules_loaded"], 1, "the last good set: {st}");
    assert_eq!(st["state"], "degraded", "{st}");
    let summary = st["summary"].as_str().unwrap();
    assert!(
        summary.contains("held back")
            && summary.contains("SIGABRT")
            && summary.contains("last good rule set")
            && summary.contains("change the rule files"),
        "{summary}"
    );
    assert!(d.log().contains("rule set held back"), "{}", d.log());
    let list = s.cli(&["rules", "list", "--json"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("\"Good\"") && !list.contains("\"New\""),
        "{list}"
    );

    // Rewriting the same text is not the operator's say: still held back.
    std::fs::write(&new, one_rule("New", "new")).unwrap();
    wait_rules(&s, &d, "a rewrite of the same set was not refused", |st| {
        st["details"]["last_reload"]["ok"] == false
            && st["details"]["last_reload"]["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("held back"))
    });
    assert_eq!(rules_details(&s)["details"]["rules_loaded"], 1);

    // Changed files are: they load, on trial, and nothing is held back.
    std::fs::write(&new, one_rule("New", "newer")).unwrap();
    wait_rules(&s, &d, "the changed set did not load", |st| {
        st["details"]["rules_loaded"] == 2
            && st["details"]["held_back"].is_null()
            && !st["details"]["trial_ends"].is_null()
    });
    assert!(d.wait_exit(Duration::ZERO).is_none(), "{}", d.log());
}

#[test]
fn a_kill_on_trial_holds_nothing_back_and_a_segfault_without_a_good_set_leaves_no_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-only.yaml"), one_rule("Only", "only")).unwrap();
    let s = rules_in(dir.path());
    let on_trial = |st: &serde_json::Value| {
        st["details"]["rules_loaded"] == 1 && !st["details"]["trial_ends"].is_null()
    };

    // SIGKILL (the OOM killer, a power cut) is no evidence against the set.
    let mut d = s.start();
    wait_rules(&s, &d, "not on trial", on_trial);
    kill_with(&mut d, libc::SIGKILL);
    let mut d = s.start();
    let st = wait_rules(&s, &d, "not loaded again after SIGKILL", on_trial);
    assert!(st["details"]["held_back"].is_null(), "{st}");

    // SIGSEGV (exit 139) is; with no earlier good set, no rules run.
    kill_with(&mut d, libc::SIGSEGV);
    let d = s.start();
    let st = wait_rules(&s, &d, "not held back after SIGSEGV", |st| {
        !st["details"]["held_back"].is_null()
    });
    assert_eq!(
        st["details"]["held_back"]["signals"],
        serde_json::json!(["SIGSEGV"])
    );
    assert_eq!(st["details"]["rules_loaded"], 0, "{st}");
    assert!(
        st["details"]["held_back"]["running"]
            .as_str()
            .unwrap()
            .contains("no rules"),
        "{st}"
    );
    // `status` says so with the daemon down too.
    drop(d);
    let st = rules_details(&s);
    assert!(!st["details"]["held_back"].is_null(), "offline: {st}");
}
