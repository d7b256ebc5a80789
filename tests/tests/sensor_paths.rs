//! Paths that cannot hide: real directories nested 40 levels deep, deeper
//! than the kernel-side path walk follows (32 levels), on the real kernel
//! through the real binary with the shipped rules. What the sensor cannot
//! read in full must say so (`proc.exepath_truncated`, `fd.name_truncated`,
//! printed after `...`), must make the path rules fail closed (a rule
//! watching /dev/shm or /etc fires), and must raise the shipped rule "Exec
//! or write through a path too deep to resolve"; the same actions 20 levels
//! deep must not. The same in a runc container (paths relative to its
//! root), and a process already running in a directory longer than
//! PATH_MAX when the agent starts is flagged from /proc. Needs root,
//! containerd, runc, busybox-static and perl (every Debian system has it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use edge_agent_tests::sensor::{
    Containerd, EVENT_TIMEOUT, copy_binary, sensor_scratch, start_with_sensor,
};
use edge_agent_tests::{Daemon, Scratch, require_root, wait_for};

const TOO_DEEP: &str = "Exec or write through a path too deep to resolve";
const HIDDEN: &str = "Hidden file or directory in a system place";
/// Levels below a scratch directory: past the kernel's walk (32 steps).
const DEEP: usize = 40;
/// Levels the kernel's walk keeps of a path (`EA_WALK_DEPTH`).
const WALK: usize = 32;
/// Levels a look-alike uses: deep, but within the walk.
const SHALLOW: usize = 20;

/// A daemon with the sensor (and `extra_sensor` lines) and the shipped
/// rules, alerts in a JSON file.
fn daemon_with_shipped_rules(extra_sensor: &str) -> (Scratch, Daemon, PathBuf) {
    let s = sensor_scratch("");
    let alerts = s.path().join("alerts.jsonl");
    s.write_config(&format!(
        "[sensor]\nenabled = true\n{extra_sensor}\n[rules]\nfiles = [\"{}\"]\njson_file = \"{}\"\n",
        edge_agent_tests::rules::shipped_rules_glob(),
        alerts.display()
    ));
    let d = start_with_sensor(&s);
    (s, d, alerts)
}

/// `levels` directories named `d`, one inside the other, below `root`;
/// returns the innermost.
fn nest(root: &Path, levels: usize) -> PathBuf {
    let deepest = (0..levels).fold(root.to_path_buf(), |p, _| p.join("d"));
    std::fs::create_dir_all(&deepest).expect("create the nested directories");
    deepest
}

/// A name no other test or run uses (at most 15 bytes: it is also a comm).
fn token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}{}", (std::process::id() ^ nanos) % 100_000)
}

fn alerts(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The alert of `rule` whose output field `field` ends with `suffix`.
fn alert_for(all: &[Value], rule: &str, field: &str, suffix: &str) -> Option<Value> {
    all.iter()
        .find(|a| {
            a["rule"] == rule
                && a["output_fields"][field]
                    .as_str()
                    .is_some_and(|v| v.ends_with(suffix))
        })
        .cloned()
}

/// Wait for the alert of `rule` on `field` ending with `suffix`.
fn expect_alert(file: &Path, d: &Daemon, rule: &str, field: &str, suffix: &str) -> Value {
    wait_for(EVENT_TIMEOUT, || {
        alert_for(&alerts(file), rule, field, suffix)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {rule:?} alert with {field} ending in {suffix:?} within {EVENT_TIMEOUT:?}; alerts: {:#?}\nlog:\n{}",
            alerts(file)
                .iter()
                .map(|a| a["output"].clone())
                .collect::<Vec<_>>(),
            d.log()
        )
    })
}

/// `/d` repeated `n` times.
fn ds(n: usize) -> String {
    "/d".repeat(n)
}

/// Removes a directory tree below /dev/shm when the test ends.
struct ShmDir(PathBuf);

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_exec_forty_levels_below_dev_shm_is_flagged_and_alerts_as_too_deep_and_as_shared_memory() {
    require_root();
    let (_s, d, file) = daemon_with_shipped_rules("");
    let shm = ShmDir(PathBuf::from("/dev/shm").join(token("ea-paths-")));
    // First the look-alike, 20 levels deep: its path is read in full.
    let near = token("near");
    let near_exe = copy_binary("/bin/true", &nest(&shm.0, SHALLOW), &near);
    assert!(Command::new(&near_exe).status().unwrap().success());
    // Then the program 40 levels deep.
    let deep = token("deep");
    let deep_exe = copy_binary("/bin/true", &nest(&shm.0, DEEP), &deep);
    assert!(Command::new(&deep_exe).status().unwrap().success());

    let suffix = format!("/{deep}");
    let alert = expect_alert(&file, &d, TOO_DEEP, "proc.exepath", &suffix);
    // The kernel kept the last 32 levels: the program and 31 of its
    // directories; `...` stands for the rest.
    assert_eq!(
        alert["output_fields"]["proc.exepath"],
        format!("...{}/{deep}", ds(WALK - 1)),
        "{alert:#}"
    );
    assert_eq!(alert["output_fields"]["evt.type"], "execve", "{alert:#}");
    assert_eq!(
        alert["tags"]
            .as_array()
            .map(|t| t.iter().any(|t| t == "T1564")),
        Some(true)
    );
    // The /dev/shm rule cannot see /dev/shm in that path, and fires anyway.
    let shm_alert = expect_alert(
        &file,
        &d,
        "Fileless execution from shared memory or memfd",
        "proc.exepath",
        &suffix,
    );
    assert!(
        shm_alert["output"].as_str().unwrap().contains("..."),
        "{shm_alert:#}"
    );

    // The look-alike ran first, so its alerts are written by now: the
    // /dev/shm rule saw its whole path, and it is not too deep.
    let all = alerts(&file);
    let near_suffix = format!("/{near}");
    let near_shm = alert_for(
        &all,
        "Fileless execution from shared memory or memfd",
        "proc.exepath",
        &near_suffix,
    )
    .unwrap_or_else(|| panic!("the 20-level exec from /dev/shm raised no alert: {all:#?}"));
    assert_eq!(
        near_shm["output_fields"]["proc.exepath"],
        near_exe.to_str().unwrap(),
        "{near_shm:#}"
    );
    assert_eq!(
        alert_for(&all, TOO_DEEP, "proc.exepath", &near_suffix),
        None,
        "a path within the walk is not too deep"
    );
}

#[test]
fn a_write_and_a_mkdir_forty_levels_deep_are_flagged_and_every_path_rule_fails_closed() {
    require_root();
    let (s, d, file) = daemon_with_shipped_rules("");
    let root = s.path().join("nest");
    // The look-alike first: a shell writing a file and making a hidden
    // directory 20 levels deep.
    let near = token("near-");
    let status = Command::new("sh")
        .current_dir(nest(&root, SHALLOW))
        .args(["-c", &format!("echo x > {near} && mkdir .{near}")])
        .status()
        .unwrap();
    assert!(status.success());
    // A shell whose working directory is 40 levels deep writes a file
    // and makes a hidden directory there by their relative names.
    let deep = token("deep-");
    let status = Command::new("sh")
        .current_dir(nest(&root, DEEP))
        .args(["-c", &format!("echo x > {deep} && mkdir .{deep}")])
        .status()
        .unwrap();
    assert!(status.success());

    let suffix = format!("/{deep}");
    let alert = expect_alert(&file, &d, TOO_DEEP, "fd.name", &suffix);
    // The kernel sent the working directory's last 32 levels.
    assert_eq!(
        alert["output_fields"]["fd.name"],
        format!("...{}/{deep}", ds(WALK)),
        "{alert:#}"
    );
    assert_eq!(alert["output_fields"]["proc.name"], "sh", "{alert:#}");
    // The file lies in a scratch directory, but nobody can tell: the rule
    // that watches /etc fires on it rather than let it pass.
    expect_alert(
        &file,
        &d,
        "Write below etc or binary directories",
        "fd.name",
        &suffix,
    );
    // The same for a path argument: a hidden directory that may lie in
    // /tmp, /etc or /usr/bin as far as anyone can tell.
    let hidden = expect_alert(&file, &d, HIDDEN, "evt.arg.path", &format!("/.{deep}"));
    assert_eq!(
        hidden["output_fields"]["evt.arg.path"],
        format!("...{}/.{deep}", ds(WALK)),
        "{hidden:#}"
    );

    // The look-alike's path was whole: no alert of either rule.
    let all = alerts(&file);
    let near_suffix = format!("/{near}");
    for rule in [TOO_DEEP, "Write below etc or binary directories"] {
        assert_eq!(
            alert_for(&all, rule, "fd.name", &near_suffix),
            None,
            "{rule:?} fired on a write 20 levels deep"
        );
    }
    assert_eq!(
        alert_for(&all, HIDDEN, "evt.arg.path", &format!("/.{near}")),
        None,
        "a hidden directory 20 levels deep is nowhere near a system place"
    );
}

/// A process already running in a directory longer than PATH_MAX when the
/// agent starts: /proc cannot name its working directory, so the process
/// table (read from /proc) marks `proc.cwd` as known only in part, and its
/// relative write is flagged from the kernel's walk.
#[test]
fn a_process_older_than_the_agent_in_a_directory_longer_than_path_max_is_flagged_from_proc() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    require_root();
    let scratch = tempfile::Builder::new()
        .prefix("ea-paths-")
        .tempdir()
        .unwrap();
    let file = token("old-");
    // 40 levels of 110-byte names: 4,440 bytes, past PATH_MAX (4,096). A
    // shell's `cd` refuses such a path; perl's chdir() takes one level at
    // a time. Perl then waits for a line before it writes, and for EOF.
    let script = format!(
        r#"$n = "n" x 110; for (1..{DEEP}) {{ mkdir $n; chdir $n or die "chdir: $!" }}
           $| = 1; print "ready\n"; <STDIN>;
           open(F, ">", "{file}") or die "open: $!"; print F "x"; close F; <STDIN>;"#
    );
    let mut perl = Command::new("perl")
        .current_dir(scratch.path())
        .args(["-e", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl (perl-base is part of every Debian system)");
    let mut ready = String::new();
    BufReader::new(perl.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n", "perl could not build the deep directory");

    let (_s, d, alerts_file) = daemon_with_shipped_rules("");
    let mut stdin = perl.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let alert = expect_alert(&alerts_file, &d, TOO_DEEP, "fd.name", &format!("/{file}"));
    drop(stdin);
    let _ = perl.wait();
    let name = "n".repeat(110);
    assert_eq!(
        alert["output_fields"]["fd.name"],
        format!("...{}/{file}", format!("/{name}").repeat(WALK)),
        "{alert:#}"
    );
    // Nothing of the working directory could be read from /proc.
    assert_eq!(alert["output_fields"]["proc.cwd"], "...", "{alert:#}");
    assert_eq!(alert["output_fields"]["proc.name"], "perl", "{alert:#}");
}

/// In a container the paths are the container's own (relative to its
/// root), and the walk is cut the same way: an exec and a write 40 levels
/// below the container's /tmp. Needs containerd, runc and busybox-static.
#[test]
fn an_exec_and_a_write_forty_levels_deep_in_a_container_are_flagged() {
    require_root();
    let mut ctrd = Containerd::start();
    let rootfs = ctrd.busybox_rootfs();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:064x}", nanos ^ (u128::from(std::process::id()) << 64));
    let pod_uid = format!("5e0a6925-6b7d-4f7e-8a30-{:012x}", nanos & 0xffff_ffff_ffff);
    let cgroup = format!("/kubepods/besteffort/pod{pod_uid}/{id}");
    let (_s, d, file) = daemon_with_shipped_rules(&format!(
        "runtime_state_dirs = [\"{}\"]",
        ctrd.task_state_dir().display()
    ));

    let deep = token("ctr");
    let dir = format!("/tmp{}", ds(DEEP));
    // busybox run under a name that is no applet still execs (and exits 127).
    let out = ctrd.run(
        &rootfs,
        &id,
        &cgroup,
        &[],
        &format!(
            "busybox mkdir -p {dir} && busybox cp /bin/busybox {dir}/{deep}; {dir}/{deep}; cd {dir} && echo x > w{deep}"
        ),
    );
    assert!(
        out.status.success(),
        "container: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctrd.log()
    );
    let exec = expect_alert(&file, &d, TOO_DEEP, "proc.exepath", &format!("/{deep}"));
    assert_eq!(
        exec["output_fields"]["proc.exepath"],
        format!("...{}/{deep}", ds(WALK - 1)),
        "{exec:#}"
    );
    assert_eq!(exec["output_fields"]["container.id"], &id[..12], "{exec:#}");
    let write = expect_alert(&file, &d, TOO_DEEP, "fd.name", &format!("/w{deep}"));
    assert_eq!(
        write["output_fields"]["fd.name"],
        format!("...{}/w{deep}", ds(WALK)),
        "{write:#}"
    );
    assert_eq!(
        write["output_fields"]["container.id"],
        &id[..12],
        "{write:#}"
    );
}
