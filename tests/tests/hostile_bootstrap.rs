//! `edge-agent bootstrap` as root against roots someone else controls: a
//! root others can write to (or a link to one) is refused before anything
//! is read or written, and a K3s binary under a root other than `/` is
//! never run (its version is read from its bytes).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use edge_agent_tests::bootstrap::{Node, agent_section, show, stderr, stdout};

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
