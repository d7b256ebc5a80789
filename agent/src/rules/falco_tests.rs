//! Compatibility with Falco's own stable rules (test data: Apache-2.0, The
//! Falco Authors; see tests/data/falco/README.md). The file is loaded
//! unmodified; the figure and every failure reason are asserted so that a
//! regression, or an improvement, is noticed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::event::{Container, Event, EventType, Fd, L4Proto, Process, Role};

use super::loader::{Loaded, Severity, load_paths};

/// The vendored copy (always present in a clone) and the shared corpus
/// beside the repository (present on the team's machines and in CI).
fn corpora() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut v = vec![root.join("tests/data/falco/falco_rules.yaml")];
    let shared = root.join("../shared/falco/falco_rules.yaml");
    if shared.exists() {
        v.push(shared);
    }
    v
}

fn load(path: &PathBuf) -> Loaded {
    load_paths(std::slice::from_ref(path))
}

#[test]
fn at_least_80_percent_of_falcos_stable_rules_load_and_every_failure_says_why() {
    for path in corpora() {
        let l = load(&path);
        let total = l.set.catalog.len();
        let loaded = l.set.rules.len();
        println!("{}: {loaded} of {total} rules load", path.display());
        for p in &l.problems {
            println!("  {p}");
        }
        assert!(total >= 25, "{}: {total} rules", path.display());
        assert!(loaded * 100 >= total * 80, "{loaded} of {total} load");
        let errors: Vec<_> = l.errors().collect();
        assert_eq!(
            errors.len() + loaded,
            total,
            "every rule that did not load has an error"
        );
        for e in errors {
            assert_eq!(e.kind, "rule");
            assert!(e.line > 0 && !e.name.is_empty(), "{e}");
            assert!(
                e.reason
                    .starts_with("unknown field fd.sip.name (Falco resolves peer host names")
                    || e.reason.starts_with(
                        "unknown field fd.connected (the sensor keeps no per-fd socket state"
                    ),
                "an unexpected failure: {e}"
            );
        }
        // Warnings are about outputs only; conditions load as written.
        for w in l
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
        {
            assert!(w.reason.starts_with("output fields unknown"), "{w}");
        }
    }
}

fn falco() -> &'static Loaded {
    static L: std::sync::OnceLock<Loaded> = std::sync::OnceLock::new();
    L.get_or_init(|| load(&corpora()[0]))
}

fn fired(e: &Event) -> Vec<String> {
    let mut v = Vec::new();
    falco()
        .set
        .for_each_match(e, |_, r| v.push(r.name.to_string()));
    v
}

fn container() -> Arc<Container> {
    Arc::new(Container {
        id: "0123456789ab".into(),
        image_repository: Some("docker.io/library/alpine".into()),
        privileged: Some(true),
        ..Default::default()
    })
}

/// Falco's `never_true` macro is `evt.num=0`: real events are numbered from 1.
fn ev(ty: EventType, proc: Arc<Process>) -> Event {
    let mut e = Event::new(ty, proc);
    e.evt.num = 1;
    e
}

fn p(path: &str, argv: &[&str]) -> Arc<Process> {
    Arc::new(Process::new(50, 40, path, argv))
}

#[test]
fn falco_rules_evaluate_on_our_events() {
    // Terminal shell in container: the parent is runc.
    let mut e = ev(EventType::Execve, p("/bin/bash", &["bash"]));
    Arc::make_mut(&mut e.proc).tty = 34816;
    e.ancestors = vec![p("/usr/bin/runc", &["runc:[1:CHILD]"])];
    Arc::make_mut(&mut e.ancestors[0]).name = "runc:[1:CHILD]".into();
    e.container = container();
    assert!(
        fired(&e).contains(&"Terminal shell in container".to_string()),
        "{:?}",
        fired(&e)
    );

    // Read sensitive file untrusted.
    let mut o = ev(
        EventType::Openat,
        p("/usr/bin/cat", &["cat", "/etc/shadow"]),
    );
    o.evt.args.flags = Some(libc::O_RDONLY as u64);
    o.evt.res = 3;
    o.fd = Some(Fd::file(3, "/etc/shadow"));
    assert!(
        fired(&o).contains(&"Read sensitive file untrusted".to_string()),
        "{:?}",
        fired(&o)
    );
    let mut ok = o.clone();
    Arc::make_mut(&mut ok.proc).name = "sshd".into();
    assert!(!fired(&ok).contains(&"Read sensitive file untrusted".to_string()));

    // Clear Log Activities: the O_TRUNC bit test.
    let mut t = ev(EventType::Openat, p("/bin/bash", &["bash"]));
    t.evt.args.flags = Some((libc::O_WRONLY | libc::O_TRUNC) as u64);
    t.evt.res = 3;
    t.fd = Some(Fd::file(3, "/var/log/auth.log"));
    assert!(
        fired(&t).contains(&"Clear Log Activities".to_string()),
        "{:?}",
        fired(&t)
    );
    t.evt.args.flags = Some((libc::O_WRONLY | libc::O_APPEND) as u64);
    assert!(!fired(&t).contains(&"Clear Log Activities".to_string()));

    // PTRACE attached to process / anti-debug.
    let mut pt = ev(EventType::Ptrace, p("/usr/bin/gdb", &["gdb"]));
    pt.evt.args.request = Some(16);
    assert_eq!(fired(&pt), ["PTRACE attached to process"]);
    pt.evt.args.request = Some(0);
    assert_eq!(fired(&pt), ["PTRACE anti-debug attempt"]);

    // Redirect STDOUT/STDIN to Network Connection in Container.
    let mut d = ev(EventType::Dup2, p("/bin/sh", &["sh"]));
    d.evt.res = 1;
    d.fd = Some(Fd::socket(
        3,
        "10.0.0.2:4000".parse().unwrap(),
        "10.0.0.9:4444".parse().unwrap(),
        Role::Client,
        L4Proto::Tcp,
    ));
    d.container = container();
    assert_eq!(
        fired(&d),
        ["Redirect STDOUT/STDIN to Network Connection in Container"]
    );

    // Packet socket created in container.
    let mut s = ev(EventType::Socket, p("/usr/bin/tcpdump", &["tcpdump"]));
    s.evt.args.domain = Some(libc::AF_PACKET as u32);
    s.container = container();
    assert_eq!(fired(&s), ["Packet socket created in container"]);

    // Create Symlink Over Sensitive Files.
    let mut l = ev(EventType::Symlinkat, p("/bin/ln", &["ln"]));
    l.evt.args.target = Some("/etc/shadow".into());
    assert_eq!(fired(&l), ["Create Symlink Over Sensitive Files"]);

    // Execution from /dev/shm, Fileless execution via memfd_create, Drop and execute.
    let shm = ev(EventType::Execve, p("/dev/shm/x", &["/dev/shm/x"]));
    assert!(
        fired(&shm).contains(&"Execution from /dev/shm".to_string()),
        "{:?}",
        fired(&shm)
    );
    let mut memfd = ev(EventType::Execve, p("memfd:x", &["x"]));
    Arc::make_mut(&mut memfd.proc).exe_from_memfd = Some(true);
    assert!(fired(&memfd).contains(&"Fileless execution via memfd_create".to_string()));
    let mut drop = ev(EventType::Execve, p("/tmp/x", &["x"]));
    Arc::make_mut(&mut drop.proc).exe_upper_layer = Some(true);
    drop.container = container();
    assert!(fired(&drop).contains(&"Drop and execute new binary in container".to_string()));

    // Run shell untrusted: a shell under nginx.
    let mut sh = ev(EventType::Execve, p("/bin/sh", &["sh", "-c", "id"]));
    sh.ancestors = vec![p("/usr/sbin/nginx", &["nginx"]), p("/sbin/init", &["init"])];
    assert!(
        fired(&sh).contains(&"Run shell untrusted".to_string()),
        "{:?}",
        fired(&sh)
    );

    // Linux Kernel Module Injection Detected: capabilities render and match.
    let mut km = ev(
        EventType::FinitModule,
        p("/sbin/insmod", &["insmod", "x.ko"]),
    );
    Arc::make_mut(&mut km.proc).cap_effective = Some(1 << 16);
    km.container = container();
    assert_eq!(fired(&km), ["Linux Kernel Module Injection Detected"]);

    // Search Private Keys or Passwords.
    let g = ev(
        EventType::Execve,
        p("/bin/grep", &["grep", "-r", "BEGIN RSA PRIVATE", "/"]),
    );
    assert!(fired(&g).contains(&"Search Private Keys or Passwords".to_string()));
}
