//! The rules engine through the real binary: `rules check`, `rules test`,
//! `rules list`, and the daemon's rules stage (status, reload).

use std::time::Duration;

use edge_agent_tests::rules::{exec_event, falco_rules, shipped_rules_glob};
use edge_agent_tests::{SIGHUP, Scratch, status_json, wait_for};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn rules_check_accepts_the_shipped_rule_set() {
    let s = Scratch::new("");
    let files: Vec<String> =
        std::fs::read_dir(edge_agent_tests::rules::repo_root().join("configs/rules"))
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
    let mut args = vec!["rules", "check"];
    args.extend(files.iter().map(String::as_str));
    let out = s.cli(&args);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let rules: usize = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("- rule:"))
                .count()
        })
        .sum();
    assert!(rules >= 50, "{rules} shipped rules");
    assert!(
        t.contains(&format!("{rules} of {rules} rules loaded, 0 failed")),
        "{t}"
    );
}

#[test]
fn rules_check_lists_every_error_with_file_line_and_column() {
    let s = Scratch::new("");
    let bad = s.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "- rule: Typo\n  desc: x\n  condition: evt.type = execve and proc.nme = sh\n  output: x\n  priority: WARNING\n\
         - rule: Loud\n  desc: x\n  condition: evt.type = execve\n  output: x\n  priority: LOUD\n\
         - rule: Fine\n  desc: x\n  condition: evt.type = execve\n  output: x\n  priority: INFO\n",
    )
    .unwrap();
    let broken = s.path().join("broken.yaml");
    std::fs::write(&broken, "- rule: x\n  condition: [oops\n").unwrap();
    let out = s.cli(&[
        "rules",
        "check",
        bad.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "rules that did not load exit 2: {t}"
    );
    assert!(
        t.contains(&format!(
            "{}:1:3: error: rule \"Typo\": unknown field proc.nme",
            bad.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{}:10:13: error: rule \"Loud\": priority \"LOUD\"",
            bad.display()
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!("{}:2:14:", broken.display())) && t.contains("not valid YAML"),
        "{t}"
    );
    assert!(t.contains("1 of 3 rules loaded, 2 failed"), "{t}");
}

#[test]
fn rules_check_loads_falcos_stable_rules_and_reports_why_the_rest_do_not() {
    let s = Scratch::new("");
    let mut corpora = vec![falco_rules()];
    let shared = edge_agent_tests::rules::repo_root().join("../shared/falco/falco_rules.yaml");
    if shared.exists() {
        corpora.push(shared);
    }
    for f in corpora {
        let out = s.cli(&["rules", "check", f.to_str().unwrap()]);
        let t = text(&out);
        let summary = t
            .lines()
            .find(|l| l.contains(" rules loaded,"))
            .expect("a summary line");
        let (loaded, total) = {
            let w: Vec<&str> = summary.split_whitespace().collect();
            (
                w[0].parse::<usize>().unwrap(),
                w[2].parse::<usize>().unwrap(),
            )
        };
        assert!(loaded * 100 >= total * 80, "{loaded} of {total}: {t}");
        let errors = t.lines().filter(|l| l.contains(": error: rule ")).count();
        assert_eq!(
            errors,
            total - loaded,
            "every rule that did not load says why: {t}"
        );
    }
}

#[test]
fn rules_test_replays_sensor_json_and_prints_falco_alerts() {
    let s = Scratch::new("");
    let events = s.path().join("events.jsonl");
    let lines = [
        exec_event("bash", &[], 34816, Some("docker.io/library/nginx")).to_string(),
        // Benign: the entrypoint's shell has no terminal.
        exec_event("sh", &["-c", "nginx"], 0, Some("docker.io/library/nginx")).to_string(),
        String::new(),
        exec_event("xmrig", &["-o", "stratum+tcp://pool:3333"], 0, None).to_string(),
    ];
    std::fs::write(&events, lines.join("\n")).unwrap();
    let glob = shipped_rules_glob();
    let out = s.cli(&[
        "rules",
        "test",
        "--events",
        events.to_str().unwrap(),
        "--rules",
        &glob,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    let alerts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rules: Vec<&str> = alerts.iter().map(|a| a["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        ["Terminal shell in container", "Crypto miner started"],
        "{t}"
    );
    let a = &alerts[0];
    for key in [
        "time",
        "rule",
        "priority",
        "output",
        "output_fields",
        "tags",
        "hostname",
        "source",
    ] {
        assert!(a.get(key).is_some(), "alert has {key}: {a}");
    }
    assert_eq!(a["priority"], "Notice");
    assert_eq!(
        a["output_fields"]["container.image.repository"],
        "docker.io/library/nginx"
    );
    assert!(t.contains("3 events, 2 alerts, 0 bad lines"), "{t}");

    // A bad line is reported by number, and the good ones still run.
    std::fs::write(&events, format!("{}\n{{\"evt\": 1}}\n", lines[0])).unwrap();
    let out = s.cli(&[
        "rules",
        "test",
        "--events",
        events.to_str().unwrap(),
        "--rules",
        &glob,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("events.jsonl:2: not an event"), "{t}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{t}"
    );
}

#[test]
fn rules_list_without_the_daemon_shows_the_configured_rules() {
    let s = Scratch::new(&format!(
        "[rules]\nfiles = [\"{}\"]\n",
        shipped_rules_glob()
    ));
    let out = s.cli(&["rules", "list"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "daemon not running: {t}");
    assert!(t.contains("not running"), "{t}");
    assert!(t.contains("Reverse shell") && t.contains("critical"), "{t}");
}

#[test]
fn the_daemon_runs_the_rules_reports_them_in_status_and_refuses_a_broken_reload() {
    let rules_dir = tempfile::tempdir().unwrap();
    let shipped = edge_agent_tests::rules::repo_root().join("configs/rules/10-edge-rules.yaml");
    std::fs::copy(&shipped, rules_dir.path().join("10-edge-rules.yaml")).unwrap();
    let s = Scratch::new(&format!(
        "[rules]\nfiles = [\"{}/*.yaml\"]\n",
        rules_dir.path().display()
    ));
    let d = s.start();
    let st = wait_for(Duration::from_secs(20), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["rules_loaded"] == 16).then_some(st)
    })
    .unwrap_or_else(|| panic!("rules stage never reported 16 rules: {}", status_json(&s)));
    let rules = &st["stages"]["rules"];
    assert_eq!(rules["state"], "running", "{rules}");
    let file = &rules["details"]["files"][0];
    assert_eq!(file["sha256"].as_str().unwrap().len(), 16, "{file}");
    assert_eq!(file["engine_version"], "0.57.0");
    assert!(rules["details"]["alerts_last_hour"].is_object());

    let out = s.cli(&["rules", "list"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("RULE") && t.contains("HITS") && t.contains("Kernel module loaded"),
        "{t}"
    );
    let out = s.cli(&["rules", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["rules"].as_array().unwrap().len(), 16);
    assert_eq!(doc["rules"][0]["hits"], 0);

    // A broken rule file: refused on SIGHUP, the running rules stay.
    std::fs::write(
        rules_dir.path().join("90-local.yaml"),
        "- rule: Broken\n  desc: x\n  condition: evt.type = execve and proc.nme = x\n  output: x\n  priority: INFO\n",
    )
    .unwrap();
    d.signal(SIGHUP);
    let st = wait_for(Duration::from_secs(20), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["last_reload"]["ok"] == false).then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "no refused reload in status: {}\nlog:\n{}",
            status_json(&s),
            d.log()
        )
    });
    let details = &st["stages"]["rules"]["details"];
    assert_eq!(details["rules_loaded"], 16, "{details}");
    let reason = details["last_reload"]["errors"][0].as_str().unwrap();
    assert!(
        reason.contains("90-local.yaml:1:3") && reason.contains("unknown field proc.nme"),
        "{reason}"
    );
    assert!(d.log().contains("refused"), "{}", d.log());

    // Fixing the file on disk is picked up without a signal.
    std::fs::write(
        rules_dir.path().join("90-local.yaml"),
        "- list: edge_miner_binaries\n  items: [mysteryminer]\n  append: true\n",
    )
    .unwrap();
    wait_for(Duration::from_secs(20), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["last_reload"]["ok"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("the fixed file was not reloaded: {}", status_json(&s)));
}

/// 10,000 nested `- `: 20 KB that overflowed the parser's stack (issue 13).
fn nested_sequences(levels: usize) -> String {
    "- ".repeat(levels) + "x\n"
}

#[test]
fn rules_check_refuses_ten_thousand_nested_sequences_with_the_line_and_the_limit() {
    let s = Scratch::new("");
    let deep = s.path().join("deep.yaml");
    std::fs::write(
        &deep,
        format!("- list: fine\n  items: [a]\n{}", nested_sequences(10_000)),
    )
    .unwrap();
    let out = s.cli(&["rules", "check", deep.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused like any bad file, not a crash: {t}"
    );
    assert!(
        t.contains(&format!("{}:3:", deep.display())) && t.contains("nest deeper than 64 levels"),
        "the line and the limit: {t}"
    );
}

#[test]
fn a_deeply_nested_file_dropped_into_the_rules_directory_leaves_the_daemon_on_its_rules() {
    let rules_dir = tempfile::tempdir().unwrap();
    let shipped = edge_agent_tests::rules::repo_root().join("configs/rules/10-edge-rules.yaml");
    std::fs::copy(&shipped, rules_dir.path().join("10-edge-rules.yaml")).unwrap();
    let s = Scratch::new(&format!(
        "[rules]\nfiles = [\"{}/*.yaml\"]\n",
        rules_dir.path().display()
    ));
    let mut d = s.start();
    wait_for(Duration::from_secs(20), || {
        (status_json(&s)["stages"]["rules"]["details"]["rules_loaded"] == 16).then_some(())
    })
    .unwrap_or_else(|| panic!("rules never loaded: {}", status_json(&s)));

    // Picked up from disk within 2 s, refused, and the daemon stays up.
    std::fs::write(
        rules_dir.path().join("90-deep.yaml"),
        nested_sequences(10_000),
    )
    .unwrap();
    let st = wait_for(Duration::from_secs(20), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["last_reload"]["ok"] == false).then_some(st)
    })
    .unwrap_or_else(|| panic!("no refused reload: {}\nlog:\n{}", status_json(&s), d.log()));
    let details = &st["stages"]["rules"]["details"];
    assert_eq!(details["rules_loaded"], 16, "{details}");
    let reason = details["last_reload"]["errors"][0].as_str().unwrap();
    assert!(
        reason.contains("90-deep.yaml:1:") && reason.contains("deeper than 64 levels"),
        "{reason}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "the daemon died: {}",
        d.log()
    );
    assert_eq!(
        status_json(&s)["stages"]["rules"]["details"]["rules_loaded"],
        16
    );

    // Restarted with the file still there: it starts, on the files that load.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).is_some(), "no exit");
    let d = s.start();
    let st = wait_for(Duration::from_secs(20), || {
        let st = status_json(&s);
        (st["stages"]["rules"]["details"]["rules_loaded"] == 16).then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "no rules after restart: {}\nlog:\n{}",
            status_json(&s),
            d.log()
        )
    });
    let rules = &st["stages"]["rules"];
    assert_eq!(
        rules["state"], "degraded",
        "running, and saying why: {rules}"
    );
    let load_error = rules["details"]["load_errors"][0].as_str().unwrap();
    assert!(
        load_error.contains("90-deep.yaml:1:") && load_error.contains("deeper than 64 levels"),
        "{load_error}"
    );
}
