//! `edge-agent bootstrap` against scratch roots, with the real binary:
//! plan/apply/plan again/hand edit/rollback, foreign files, a kill -9 in the
//! middle of an apply, bad desired states, version detection, preflight,
//! and the daemon's drift checks.
//!
//! K3s cannot be installed here: where "the installed K3s" matters, a
//! stand-in script prints the real `k3s --version` output
//! (`Node::fake_k3s`), and the tests that use it say so.

use std::path::Path;
use std::time::{Duration, Instant};

use edge_agent_tests::bootstrap::{
    K3S_VERSION_OUTPUT_1_31_6, Node, agent_section, show, stderr, stdout,
};
use edge_agent_tests::{Daemon, SIGHUP, SIGKILL, status_json, wait_for};

const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/50-edge-agent.yaml";
const SYSCTL: &str = "/etc/sysctl.d/90-edge-agent.conf";
const MODULES: &str = "/etc/modules-load.d/edge-agent.conf";
const TEMPLATE_V3: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl";

fn ipvs_nydus() -> (String, String) {
    (
        agent_section("snapshotter = \"nydus\"\n"),
        "[bootstrap.kube_proxy]\nmode = \"ipvs\"\nipvs_strict_arp = true\n".to_string(),
    )
}

#[test]
fn the_shipped_config_plans_a_full_change_set_against_an_empty_scratch_root() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(edge_agent_tests::agent_bin())
        .args(["bootstrap", "plan", "--root"])
        .arg(root.path())
        .arg("--config")
        .arg(repo.join("configs/agent.toml"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    for path in [
        DROPIN,
        TEMPLATE_V3,
        "/etc/nydus/config.toml",
        "/etc/nydus/nydusd-config.fusedev.json",
        "/etc/systemd/system/nydus-snapshotter.service",
        MODULES,
        SYSCTL,
    ] {
        assert!(
            text.contains(&format!("+ {path}")),
            "{path} missing:\n{text}"
        );
    }
    assert!(text.contains("\"proxy-mode=ipvs\""), "{text}");
    assert!(text.contains("restart k3s-agent.service"), "{text}");
    assert!(text.contains("pending: 7 file changes"), "{text}");
    // The example's token file is not in the empty root: apply would refuse.
    assert!(
        text.contains("bootstrap.token_file: /etc/rancher/k3s/token does not exist"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "plan wrote nothing"
    );
}

#[test]
fn plan_apply_plan_again_hand_edit_and_rollback_round_trip() {
    let (b, kp) = ipvs_nydus();
    let node = Node::new(&b, &kp);
    node.token();
    // Stand-in K3s carrying the real v1.31.6+k3s1 `--version` output; under
    // a scratch root its version is read from its bytes, never run.
    node.fake_k3s(K3S_VERSION_OUTPUT_1_31_6);

    let plan = node.bootstrap(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    assert!(
        stdout(&plan).contains(
            "K3s v1.31.6+k3s1 (read from /usr/local/bin/k3s, not run: the root is not /)"
        ),
        "{}",
        show(&plan)
    );

    let apply = node.bootstrap(&["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", show(&apply));
    let gen1 = node.read(DROPIN).expect("drop-in written");
    assert!(
        gen1.contains("token-file: \"/etc/rancher/k3s/token\""),
        "{gen1}"
    );
    assert!(
        !gen1.contains("K10deadbeef"),
        "the token is never copied:\n{gen1}"
    );
    assert!(gen1.contains("snapshotter: \"\""), "{gen1}");
    assert_eq!(node.mode(DROPIN), 0o600);
    assert_eq!(node.mode(SYSCTL), 0o644);
    assert!(
        node.read(TEMPLATE_V3)
            .unwrap()
            .contains("[proxy_plugins.nydus]")
    );
    assert!(
        stdout(&apply).contains("not restarted: the root is"),
        "{}",
        show(&apply)
    );

    let again = node.bootstrap(&["plan"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert!(
        stdout(&again).contains("in sync: nothing to do"),
        "{}",
        show(&again)
    );

    // The desired state changes: a diff, then generation 2.
    node.configure(
        &agent_section("snapshotter = \"nydus\"\nnode_taints = [\"dedicated=edge:NoSchedule\"]\n"),
        &kp,
    );
    let plan = node.bootstrap(&["plan"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(stdout(&plan).contains("+node-taint+:"), "{}", show(&plan));
    assert!(
        stdout(&plan).contains("~ /etc/rancher/k3s/config.yaml.d/50-edge-agent.yaml"),
        "{}",
        show(&plan)
    );
    let apply = node.bootstrap(&["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", show(&apply));
    assert!(stdout(&apply).contains("generation 2"), "{}", show(&apply));
    let gen2 = node.read(DROPIN).unwrap();
    assert_ne!(gen1, gen2);

    // A hand edit: reported with its diff, kept, apply refuses.
    let edited = node
        .read(SYSCTL)
        .unwrap()
        .replace("net.ipv4.ip_forward = 1", "net.ipv4.ip_forward = 0");
    node.write(SYSCTL, &edited, 0o644);
    let plan = node.bootstrap(&["plan"]);
    assert_eq!(plan.status.code(), Some(2));
    let text = stdout(&plan);
    assert!(
        text.contains(&format!("! {SYSCTL}")) && text.contains("edited by hand"),
        "{text}"
    );
    assert!(
        text.contains("-net.ipv4.ip_forward = 0") && text.contains("+net.ipv4.ip_forward = 1"),
        "{text}"
    );
    let refused = node.bootstrap(&["apply"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        stderr(&refused).contains("nothing was written"),
        "{}",
        show(&refused)
    );
    assert!(stderr(&refused).contains("--force"), "{}", show(&refused));
    assert_eq!(node.read(SYSCTL).unwrap(), edited, "the hand edit is kept");
    // Rollback will not silently drop it either.
    let refused = node.bootstrap(&["rollback"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert_eq!(node.read(SYSCTL).unwrap(), edited);

    // --force replaces it and keeps the edited copy in the undo log.
    let forced = node.bootstrap(&["apply", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    assert!(
        node.read(SYSCTL)
            .unwrap()
            .contains("net.ipv4.ip_forward = 1")
    );
    let kept = grep_dir(&node.scratch.state_dir(), "net.ipv4.ip_forward = 0");
    assert!(kept, "the displaced hand edit is in the undo log");

    // Rollback: back to generation 2 (forced apply was generation 3)...
    let rb = node.bootstrap(&["rollback"]);
    assert_eq!(rb.status.code(), Some(0), "{}", show(&rb));
    assert_eq!(node.read(DROPIN).unwrap(), gen2);
    // ... then to generation 1, whose drop-in had no taint ...
    let rb = node.bootstrap(&["rollback"]);
    assert_eq!(rb.status.code(), Some(0), "{}", show(&rb));
    assert_eq!(node.read(DROPIN).unwrap(), gen1);
    let plan = node.bootstrap(&["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "the config still asks for the taint"
    );
    // ... then to before edge-agent: its files are gone, others untouched.
    let rb = node.bootstrap(&["rollback"]);
    assert_eq!(rb.status.code(), Some(0), "{}", show(&rb));
    assert_eq!(
        node.files(),
        ["/etc/rancher/k3s/token", "/usr/local/bin/k3s"],
        "only what the test put there is left"
    );
    let nothing = node.bootstrap(&["rollback"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("nothing to roll back"),
        "{}",
        show(&nothing)
    );

    // status without the daemon reads the undo log.
    let st = status_json(&node.scratch);
    let b = &st["stages"]["bootstrap"];
    assert_eq!(b["details"]["last_apply"]["action"], "rollback", "{st}");
    assert_eq!(b["details"]["generation"], 0, "{st}");
}

fn has_dir_named(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            let p = e.path();
            p.is_dir() && (e.file_name() == name || has_dir_named(&p, name))
        })
    })
}

fn grep_dir(dir: &Path, needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            grep_dir(&p, needle)
        } else {
            std::fs::read_to_string(&p).is_ok_and(|s| s.contains(needle))
        }
    })
}

#[test]
fn a_file_edge_agent_did_not_write_is_left_alone_unless_forced_and_rollback_gives_it_back() {
    let node = Node::new(&agent_section(""), "");
    node.token();
    let operator = "# the operator's own sysctls\nvm.swappiness = 10\n";
    node.write(SYSCTL, operator, 0o640);

    let plan = node.bootstrap(&["plan"]);
    assert!(
        stdout(&plan).contains("not edge-agent's"),
        "{}",
        show(&plan)
    );
    let refused = node.bootstrap(&["apply"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        stderr(&refused).contains("was not written by edge-agent"),
        "{}",
        show(&refused)
    );
    assert_eq!(node.read(SYSCTL).unwrap(), operator);
    assert!(
        node.read(DROPIN).is_none(),
        "refused means nothing at all was written"
    );

    let forced = node.bootstrap(&["apply", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", show(&forced));
    assert!(node.read(SYSCTL).unwrap().contains("Managed by edge-agent"));
    let rb = node.bootstrap(&["rollback"]);
    assert_eq!(rb.status.code(), Some(0), "{}", show(&rb));
    assert_eq!(node.read(SYSCTL).unwrap(), operator);
    assert_eq!(node.mode(SYSCTL), 0o640, "the original mode comes back too");
    assert!(node.read(DROPIN).is_none());
}

#[test]
fn a_kill_between_two_writes_leaves_every_file_old_or_new_and_apply_finishes_the_job() {
    let (b, kp) = ipvs_nydus();
    let node = Node::new(&b, &kp);
    node.token();
    node.fake_k3s(K3S_VERSION_OUTPUT_1_31_6);
    assert_eq!(node.bootstrap(&["apply"]).status.code(), Some(0));
    let managed: Vec<String> = node
        .files()
        .into_iter()
        .filter(|p| p != "/etc/rancher/k3s/token" && p != "/usr/local/bin/k3s")
        .collect();
    let old: Vec<Option<String>> = managed.iter().map(|p| node.read(p)).collect();

    // The new desired state changes the drop-in, the modules and the sysctls.
    let new_kp = "[bootstrap.kube_proxy]\nmode = \"nftables\"\n";
    let twin = Node::new(&b, new_kp);
    twin.token();
    twin.fake_k3s(K3S_VERSION_OUTPUT_1_31_6);
    assert_eq!(twin.bootstrap(&["apply"]).status.code(), Some(0));
    let new: Vec<Option<String>> = managed.iter().map(|p| twin.read(p)).collect();
    let changing = old.iter().zip(&new).filter(|(o, n)| o != n).count();
    assert!(changing >= 3, "the test needs several writes: {changing}");

    node.configure(&b, new_kp);
    // Test hook: sleep 400 ms before each file write, so the kill lands
    // between two writes.
    let mut child = std::process::Command::new(edge_agent_tests::agent_bin())
        .args(["bootstrap", "apply", "--config"])
        .arg(node.scratch.config_path())
        .env("EDGE_AGENT_TEST_APPLY_PAUSE_MS", "400")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let some_new = wait_for(Duration::from_secs(30), || {
        managed
            .iter()
            .zip(&old)
            .any(|(p, o)| node.read(p) != *o)
            .then_some(())
    });
    // SAFETY: kill() on the child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, SIGKILL) };
    let status = child.wait().unwrap();
    assert!(some_new.is_some(), "apply never wrote a file");
    assert!(!status.success(), "apply was killed, not finished");

    let mut saw_old = 0;
    for ((p, o), n) in managed.iter().zip(&old).zip(&new) {
        let now = node.read(p);
        assert!(
            now == *o || now == *n,
            "{p} is neither its old nor its new content:\n{now:?}"
        );
        if now == *o && o != n {
            saw_old += 1;
        }
    }
    assert!(
        saw_old > 0,
        "the kill came after the last write; the test proves nothing"
    );

    let plan = node.bootstrap(&["plan"]);
    assert!(
        stdout(&plan).contains("an apply was interrupted"),
        "{}",
        show(&plan)
    );
    let finish = node.bootstrap(&["apply"]);
    assert_eq!(finish.status.code(), Some(0), "{}", show(&finish));
    for (p, n) in managed.iter().zip(&new) {
        assert_eq!(node.read(p), *n, "{p}");
    }
    assert!(
        !node.files().iter().any(|f| f.ends_with(".tmp")),
        "no temp file is left: {:?}",
        node.files()
    );
    let plan = node.bootstrap(&["plan"]);
    assert_eq!(plan.status.code(), Some(0), "{}", show(&plan));
}

#[test]
fn bad_desired_state_is_refused_with_clear_errors_and_nothing_written() {
    // An unknown kube-proxy mode: the config itself is refused (78).
    let node = Node::new(
        &agent_section(""),
        "[bootstrap.kube_proxy]\nmode = \"ebpf\"\n",
    );
    node.token();
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    let e = stderr(&out);
    assert!(
        e.contains("bootstrap.kube_proxy.mode") && e.contains("ebpf"),
        "{e}"
    );
    assert!(
        e.contains("`nftables`"),
        "the accepted values are named: {e}"
    );

    // Conflicting role settings.
    node.configure(
        "role = \"server\"\ncluster_init = true\nserver = \"https://10.0.0.1:6443\"\ntoken_file = \"/etc/rancher/k3s/token\"\n",
        "",
    );
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    assert!(
        stderr(&out).contains("bootstrap.cluster_init: conflicts with bootstrap.server"),
        "{}",
        show(&out)
    );
    node.configure(&agent_section("cluster_init = true\n"), "");
    let out = node.bootstrap(&["plan"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("is a server option, but role = \"agent\""),
        "{}",
        show(&out)
    );

    // The token file: missing, group-readable, a directory.
    node.configure(&agent_section(""), "");
    std::fs::remove_file(node.at("/etc/rancher/k3s/token")).unwrap();
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("bootstrap.token_file: /etc/rancher/k3s/token does not exist"),
        "{}",
        show(&out)
    );
    node.write("/etc/rancher/k3s/token", "K10secret\n", 0o644);
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", show(&out));
    assert!(
        !stderr(&out).contains("K10secret"),
        "the token is never shown"
    );
    std::fs::remove_file(node.at("/etc/rancher/k3s/token")).unwrap();
    std::fs::create_dir(node.at("/etc/rancher/k3s/token")).unwrap();
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not a regular file"),
        "{}",
        show(&out)
    );

    // nydus, with no K3s installed and no version in the config.
    std::fs::remove_dir(node.at("/etc/rancher/k3s/token")).unwrap();
    node.token();
    node.configure(&agent_section("snapshotter = \"nydus\"\n"), "");
    let out = node.bootstrap(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("needs the K3s version"),
        "{}",
        show(&out)
    );
    assert!(
        stderr(&out).contains("set bootstrap.k3s_version"),
        "{}",
        show(&out)
    );

    assert_eq!(
        node.files(),
        ["/etc/rancher/k3s/token"],
        "nothing was written"
    );
    assert!(
        !has_dir_named(&node.scratch.state_dir(), "generations"),
        "no generation was recorded in the undo log"
    );
}

#[test]
fn the_installed_k3s_version_wins_over_the_configured_one() {
    // Stand-in K3s (prints the real v1.31.6+k3s1 output); the config pins
    // an older release whose containerd would read config.toml.tmpl.
    let node = Node::new(
        &agent_section("snapshotter = \"nydus\"\nk3s_version = \"v1.30.6+k3s1\"\n"),
        "",
    );
    node.token();
    node.fake_k3s(K3S_VERSION_OUTPUT_1_31_6);
    let plan = node.bootstrap(&["plan"]);
    let text = stdout(&plan);
    assert!(text.contains(&format!("+ {TEMPLATE_V3}")), "{text}");
    assert!(!text.contains("config.toml.tmpl "), "{text}");
    assert!(
        text.contains(
            "bootstrap.k3s_version = \"v1.30.6+k3s1\" but the installed binary is v1.31.6+k3s1"
        ),
        "{text}"
    );

    // Without the binary, the pinned version decides.
    std::fs::remove_file(node.at("/usr/local/bin/k3s")).unwrap();
    let plan = node.bootstrap(&["plan"]);
    assert!(
        stdout(&plan).contains("+ /var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl"),
        "{}",
        show(&plan)
    );
}

#[test]
fn preflight_names_what_the_kube_proxy_mode_needs_on_this_machine() {
    let node = Node::new(
        &agent_section(""),
        "[bootstrap.kube_proxy]\nmode = \"nftables\"\n",
    );
    let out = node.bootstrap(&["preflight"]);
    let text = stdout(&out);
    // scripts/deps.sh installs nftables, so nft is on PATH.
    assert!(text.contains("ok   nft: /"), "{}", show(&out));
    assert!(text.contains("nf_tables"), "{text}");
    assert!(text.contains("describe this machine"), "{text}");

    node.configure(
        &agent_section(""),
        "[bootstrap.kube_proxy]\nmode = \"ipvs\"\n",
    );
    let out = node.bootstrap(&["preflight"]);
    let text = stdout(&out);
    assert!(text.contains("ok   ipset: /"), "{}", show(&out));
    // This machine may or may not have IPVS; either way the answer is clear.
    let ok = text.contains("ok   ip_vs: ");
    let missing = text.contains("FAIL no IPVS on this machine");
    assert!(ok ^ missing, "{text}");
    if missing {
        assert!(
            text.contains("kube-proxy in ipvs mode will exit at start"),
            "{text}"
        );
        assert!(text.contains("kube_proxy.mode = \"nftables\""), "{text}");
        assert_eq!(out.status.code(), Some(2));
    }
}

#[test]
fn the_daemon_reports_drift_and_corrects_it_only_when_asked() {
    let node = Node::new(&agent_section(""), "");
    node.token();
    assert_eq!(node.bootstrap(&["apply"]).status.code(), Some(0));
    let enable = |auto: bool| {
        node.configure(
            &agent_section(&format!(
                "enabled = true\ninterval = \"1s\"\nauto_correct = {auto}\n"
            )),
            "",
        );
    };
    enable(false);
    let daemon = Daemon::start(&node.scratch, &[]);
    let stage = |want: &dyn Fn(&serde_json::Value) -> bool| {
        wait_for(Duration::from_secs(30), || {
            let st = status_json(&node.scratch);
            let b = st["stages"]["bootstrap"].clone();
            want(&b).then_some(b)
        })
    };
    let b = stage(&|b| {
        b["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("in sync"))
    })
    .unwrap_or_else(|| panic!("never in sync; log:\n{}", daemon.log()));
    assert_eq!(b["state"], "running");

    let edited = node.read(MODULES).unwrap() + "ip_vs\n";
    node.write(MODULES, &edited, 0o644);
    let b = stage(&|b| {
        b["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("DRIFT"))
    })
    .unwrap_or_else(|| panic!("drift never reported; log:\n{}", daemon.log()));
    assert_eq!(b["state"], "degraded");
    assert!(b["summary"].as_str().unwrap().contains(MODULES), "{b}");
    assert!(
        b["details"]["drift"][0]
            .as_str()
            .unwrap()
            .contains("edited by hand"),
        "{b}"
    );
    // Reporting only: two more checks later the edit is still there.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(node.read(MODULES).unwrap(), edited);

    enable(true);
    daemon.signal(SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.read(MODULES).unwrap() == edited {
        assert!(
            Instant::now() < deadline,
            "auto-correct never ran; log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!node.read(MODULES).unwrap().contains("ip_vs"));
    let b = stage(&|b| {
        b["details"]["last_apply"]["action"] == "auto-correct"
            && b["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("in sync"))
    })
    .unwrap_or_else(|| panic!("status never showed the correction; log:\n{}", daemon.log()));
    assert_eq!(b["details"]["last_apply"]["outcome"], "ok", "{b}");
}
