//! install.sh into a scratch root (`--root`): install, reinstall, uninstall,
//! purge; and the systemd unit it installs, checked by systemd's own tools.
//! No systemd runs here as PID 1, so the live start/stop path is not
//! exercised; `--root` never calls the running systemd.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge_agent_tests::foundation::{both, repo_root};
use edge_agent_tests::{agent_bin, require_root};

fn install(root: &Path, args: &[&str]) -> Output {
    Command::new(repo_root().join("install.sh"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run install.sh")
}

fn install_ok(root: &Path, args: &[&str]) -> String {
    let out = install(root, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "install.sh {args:?}: {}",
        both(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The gid of `name` in the scratch root's /etc/group.
fn gid_in(root: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(root.join("etc/group"))
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
        })
}

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        Root {
            dir: tempfile::Builder::new()
                .prefix("ea-root-")
                .tempdir()
                .unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn at(&self, p: &str) -> PathBuf {
        self.path().join(p.trim_start_matches('/'))
    }
}

#[test]
fn install_reinstall_uninstall_and_purge_round_trip_in_a_scratch_root() {
    require_root();
    let root = Root::new();
    let bin = agent_bin();
    let bin = bin.to_str().unwrap();

    // Install.
    let host_groups = std::fs::read_to_string("/etc/group").unwrap();
    let out = install_ok(root.path(), &["--binary", bin, "--no-start"]);
    assert!(
        out.contains("installed  /usr/local/bin/edge-agent"),
        "{out}"
    );
    assert!(out.contains("created    group edge-agent"), "{out}");
    assert_eq!(
        std::fs::read(root.at("/usr/local/bin/edge-agent")).unwrap(),
        std::fs::read(bin).unwrap()
    );
    assert_eq!(mode(&root.at("/usr/local/bin/edge-agent")), 0o755);
    assert_eq!(
        std::fs::read(root.at("/etc/systemd/system/edge-agent.service")).unwrap(),
        std::fs::read(repo_root().join("systemd/edge-agent.service")).unwrap()
    );
    let wants = root.at("/etc/systemd/system/multi-user.target.wants/edge-agent.service");
    assert_eq!(
        std::fs::read_link(&wants).expect("enabled: the wants symlink"),
        PathBuf::from("/etc/systemd/system/edge-agent.service")
    );
    let config = root.at("/etc/edge-agent/agent.toml");
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(repo_root().join("configs/agent.toml")).unwrap()
    );
    let gid = gid_in(root.path(), "edge-agent").expect("group edge-agent in <root>/etc/group");
    assert_eq!(
        std::fs::read_to_string("/etc/group").unwrap(),
        host_groups,
        "--root leaves the host's groups alone"
    );
    let meta = std::fs::metadata(&config).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, gid),
        "config is root:edge-agent"
    );
    assert_eq!(mode(&config), 0o640);
    assert_eq!(mode(&root.at("/var/lib/edge-agent")), 0o750);
    assert_eq!(mode(&root.at("/var/log/edge-agent")), 0o750);
    for dir in [
        "/etc/rancher/k3s",
        "/var/lib/rancher/k3s/agent/etc/containerd",
        "/etc/nydus",
    ] {
        assert!(
            root.at(dir).is_dir(),
            "{dir} exists for the unit's ReadWritePaths="
        );
    }

    // Again: nothing changes.
    let before = std::fs::metadata(root.at("/usr/local/bin/edge-agent"))
        .unwrap()
        .modified()
        .unwrap();
    let out = install_ok(root.path(), &["--binary", bin, "--no-start"]);
    assert!(
        !out.lines()
            .any(|l| l.starts_with("installed") || l.starts_with("created")),
        "a second run changes nothing: {out}"
    );
    assert!(
        out.contains("unchanged  /usr/local/bin/edge-agent"),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(root.at("/usr/local/bin/edge-agent"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );

    // An operator edits the config; a reinstall keeps it.
    let edited = "[node]\nfleet = \"plant-7\"\n";
    std::fs::write(&config, edited).unwrap();
    std::fs::write(root.at("/var/lib/edge-agent/outbox.redb"), b"queued").unwrap();
    let out = install_ok(root.path(), &["--binary", bin, "--no-start"]);
    assert!(
        out.contains("kept       /etc/edge-agent/agent.toml"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(
        std::fs::read(root.at("/etc/edge-agent/agent.toml.new")).unwrap(),
        std::fs::read(repo_root().join("configs/agent.toml")).unwrap(),
        "the shipped default is put beside it"
    );

    // Uninstall: binary, unit and link go; config, state and group stay.
    let out = install_ok(root.path(), &["--uninstall"]);
    assert!(
        out.contains("removed    /usr/local/bin/edge-agent"),
        "{out}"
    );
    for gone in [
        "/usr/local/bin/edge-agent",
        "/etc/systemd/system/edge-agent.service",
    ] {
        assert!(!root.at(gone).exists(), "{gone} removed");
    }
    assert!(std::fs::symlink_metadata(&wants).is_err(), "unit disabled");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    assert_eq!(
        std::fs::read(root.at("/var/lib/edge-agent/outbox.redb")).unwrap(),
        b"queued"
    );
    assert_eq!(gid_in(root.path(), "edge-agent"), Some(gid));
    // Uninstalling twice is fine.
    install_ok(root.path(), &["--uninstall"]);

    // Purge: everything of ours goes, the group too.
    let out = install_ok(root.path(), &["--uninstall", "--purge"]);
    assert!(out.contains("removed    group edge-agent"), "{out}");
    for gone in [
        "/etc/edge-agent",
        "/var/lib/edge-agent",
        "/var/log/edge-agent",
        "/etc/rancher",
        "/var/lib/rancher",
        "/etc/nydus",
    ] {
        assert!(!root.at(gone).exists(), "{gone} purged");
    }
    assert_eq!(gid_in(root.path(), "edge-agent"), None);
}

#[test]
fn purge_leaves_files_that_k3s_owns_in_the_bootstrap_directories() {
    require_root();
    let root = Root::new();
    let bin = agent_bin();
    install_ok(
        root.path(),
        &["--binary", bin.to_str().unwrap(), "--no-start"],
    );
    std::fs::write(root.at("/etc/rancher/k3s/config.yaml"), "node-name: n1\n").unwrap();
    install_ok(root.path(), &["--purge"]);
    assert_eq!(
        std::fs::read_to_string(root.at("/etc/rancher/k3s/config.yaml")).unwrap(),
        "node-name: n1\n"
    );
    assert!(!root.at("/etc/nydus").exists(), "empty ones go");
}

#[test]
fn install_fails_clearly_on_a_missing_binary_and_on_bad_usage() {
    require_root();
    let root = Root::new();
    let out = install(root.path(), &["--binary", "/nonexistent/edge-agent"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--binary /nonexistent/edge-agent: not an executable file"),
        "{err}"
    );
    assert!(!root.at("/usr/local/bin").exists(), "nothing was installed");

    let out = install(root.path(), &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(64), "{}", both(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown option: --frobnicate"),
        "{}",
        both(&out)
    );
}

/// The unit with `ExecStart=` pointing at the binary under test, so that
/// `systemd-analyze verify` (which checks the executable exists) sees a
/// valid path; everything else is the shipped file, byte for byte.
fn unit_with_test_binary(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo_root().join("systemd/edge-agent.service")).unwrap();
    assert_eq!(
        shipped.matches("/usr/local/bin/edge-agent").count(),
        1,
        "ExecStart= is the only use of the installed path"
    );
    let unit = dir.join("edge-agent.service");
    std::fs::write(
        &unit,
        shipped.replace("/usr/local/bin/edge-agent", agent_bin().to_str().unwrap()),
    )
    .unwrap();
    unit
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_test_binary(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        both(&out)
    );
}

/// The README quotes this score; lower both when the unit gets tighter.
const EXPOSURE_AT_MOST: f64 = 3.4;

#[test]
fn the_unit_exposure_score_stays_at_or_below_the_one_the_readme_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_test_binary(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for edge-agent.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {}", both(&out)));
    assert!(
        score <= EXPOSURE_AT_MOST,
        "exposure {score} > {EXPOSURE_AT_MOST}: {text}"
    );
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("exposure level {EXPOSURE_AT_MOST}")),
        "README.md quotes \"exposure level {EXPOSURE_AT_MOST}\""
    );
}

/// Run `script` (sh) in a private mount namespace where /etc, /usr/local and
/// /var are overlays on scratch directories: install.sh acts on "the live
/// system" (no --root) and every change vanishes with the namespace. The
/// script refuses to run unless the overlays are in place.
fn in_throwaway_system(script: &str) -> Output {
    let upper = tempfile::Builder::new()
        .prefix("ea-overlay-")
        .tempdir()
        .unwrap();
    let guarded = format!(
        r#"set -e
for d in /etc /usr/local /var; do
    mkdir -p "{u}$d/upper" "{u}$d/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir={u}$d/upper,workdir={u}$d/work" "$d"
    [ "$(findmnt -n -o FSTYPE "$d")" = overlay ] || exit 99
done
set +e
cd "{repo}"
{script}"#,
        u = upper.path().display(),
        repo = repo_root().display(),
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &guarded])
        .output()
        .expect("unshare (util-linux)")
}

#[test]
fn install_on_a_live_system_without_systemd_installs_enables_and_says_it_did_not_start() {
    require_root();
    let bin = agent_bin();
    let out = in_throwaway_system(&format!(
        r#"./install.sh --binary "{bin}"; echo "first=$?"
./install.sh --binary "{bin}"; echo "second=$?"
getent group edge-agent >/dev/null && echo group=yes
stat -c 'config=%a:%G' /etc/edge-agent/agent.toml
printf '[metrics]\ninterval = "abc"\n' > /etc/edge-agent/agent.toml
./install.sh --binary "{bin}"; echo "invalid=$?"
./install.sh --purge; echo "purge=$?"
getent group edge-agent >/dev/null || echo group=gone
[ -e /usr/local/bin/edge-agent ] || echo binary=gone
"#,
        bin = bin.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(99),
        "overlays not in place: {}",
        both(&out)
    );
    for expected in [
        "first=0",
        "second=0",
        "group=yes",
        "config=640:edge-agent",
        "systemd is not running here, so it was not started",
        "invalid=0",
        "purge=0",
        "group=gone",
        "binary=gone",
    ] {
        assert!(
            text.contains(expected),
            "missing {expected:?}: {}",
            both(&out)
        );
    }
    assert!(
        err.contains("metrics.interval") && err.contains("agent.toml is invalid"),
        "an invalid existing config is reported: {err}"
    );
}
