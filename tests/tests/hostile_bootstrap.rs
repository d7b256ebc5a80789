//! `edge-agent bootstrap` as root against roots someone else controls: a
//! root others can write to (or a link to one) is refused before anything
//! is read or written, and a K3s binary under a root other than `/` is
//! never run (its version is read from its bytes). The daemon's bootstrap
//! stage refuses such a root on every check too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use edge_agent_tests::bootstrap::{Node, agent_section, show, stderr, stdout};
use edge_agent_tests::{Daemon, status_json, wait_for};

/// Every file below `dir`, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

/// `edge-agent bootstrap plan --root ROOT` with the node's config.
fn plan_at(node: &Node, root: &Path) -> std::process::Output {
    node.bootstrap(&["plan", "--root", root.to_str().unwrap()])
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn bootstrap_as_root_refuses_a_root_others_can_write_own_or_swap() {
    edge_agent_tests::require_root();
    let node = Node::new(&agent_section(""), "");
    node.token();
    let base = tempfile::tempdir().unwrap();

    // Writable by others (a /tmp/node made by anyone with a umask of 0).
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let out = plan_at(&node, &open);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        stderr(&out).contains("can be written by group or others")
            && stderr(&out).contains(&open.display().to_string()),
        "{}",
        show(&out)
    );

    // Owned by someone else.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = plan_at(&node, &theirs);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        stderr(&out).contains("owned by uid 65534"),
        "{}",
        show(&out)
    );

    // Fine itself, below a directory others can write to (no sticky bit).
    let under = open.join("node");
    std::fs::create_dir(&under).unwrap();
    chmod(&under, 0o755);
    let out = plan_at(&node, &under);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        stderr(&out).contains("a directory above the root"),
        "{}",
        show(&out)
    );

    // A symbolic link (to a directory that would pass).
    let good = base.path().join("good");
    std::fs::create_dir(&good).unwrap();
    chmod(&good, 0o755);
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let out = plan_at(&node, &link);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", show(&out));
    for dir in [&open, &theirs, &under, &good] {
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            usize::from(dir == &open),
            "nothing written under {}",
            dir.display()
        );
    }

    // The same directory, root-owned and 0755 below a sticky /tmp-like
    // directory, is planned.
    let sticky = base.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let fine = sticky.join("node");
    std::fs::create_dir(&fine).unwrap();
    chmod(&fine, 0o755);
    let out = plan_at(&node, &fine);
    assert_eq!(out.status.code(), Some(2), "planned: {}", show(&out));
}

#[test]
fn bootstrap_under_a_scratch_root_never_runs_its_k3s_binary() {
    let node = Node::new(&agent_section(""), "");
    node.token();
    let ran = node.scratch.path().join("k3s-ran");
    node.write(
        "/usr/local/bin/k3s",
        &format!(
            "#!/bin/sh\ntouch {}\nprintf 'k3s version v1.31.6+k3s1 (6a1e6fd6)\\ngo version go1.22.12\\n'\n",
            ran.display()
        ),
        0o755,
    );
    for cmd in ["plan", "preflight", "apply"] {
        let out = node.bootstrap(&[cmd]);
        assert!(
            cmd == "apply" || stdout(&out).contains("v1.31.6+k3s1"),
            "{cmd}: the version is still known: {}",
            show(&out)
        );
        assert!(!ran.exists(), "{cmd} ran the root's k3s: {}", show(&out));
    }
}

#[test]
fn the_daemon_refuses_a_root_others_can_write_on_every_check_and_resumes_once_fixed() {
    edge_agent_tests::require_root();
    let node = Node::new(
        &agent_section("enabled = true\ninterval = \"1s\"\nauto_correct = true\n"),
        "",
    );
    node.token();
    chmod(&node.root(), 0o777);
    let before = files_below(&node.root());
    let daemon = Daemon::start(&node.scratch, &[]);
    let stage = |want: &dyn Fn(&serde_json::Value) -> bool| {
        wait_for(Duration::from_secs(30), || {
            let b = status_json(&node.scratch)["stages"]["bootstrap"].clone();
            want(&b).then_some(b)
        })
    };
    let b = stage(&|b| b["summary"].as_str().is_some_and(|s| s.contains("refused")))
        .unwrap_or_else(|| panic!("the unsafe root was not refused; log:\n{}", daemon.log()));
    assert_eq!(b["state"], "degraded", "{b}");
    let summary = b["summary"].as_str().unwrap();
    assert!(
        summary.contains("can be written by group or others")
            && summary.contains(&node.root().display().to_string()),
        "{b}"
    );
    // Auto-correct is on, yet several checks later nothing was written.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(files_below(&node.root()), before);

    // Fixed by hand: the next check goes ahead and writes the node's files.
    chmod(&node.root(), 0o755);
    stage(&|b| b["state"] == "running")
        .unwrap_or_else(|| panic!("never resumed; log:\n{}", daemon.log()));
    assert!(
        files_below(&node.root()).len() > before.len(),
        "auto-correct wrote nothing after the fix; log:\n{}",
        daemon.log()
    );
}
