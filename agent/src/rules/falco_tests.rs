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

/// Falco's three files (vendored) in Falco's order, and the shipped set.
fn all_rule_sets() -> Vec<Vec<PathBuf>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let falco = root.join("tests/data/falco");
    vec![
        vec![
            falco.join("falco_rules.yaml"),
            falco.join("falco-incubating_rules.yaml"),
            falco.join("falco-sandbox_rules.yaml"),
        ],
        vec![root.join("configs/rules/*.yaml")],
    ]
}

/// Events that reach the merged string tests from every side: paths the
/// rules watch and their near misses, truncated paths, absent fields,
/// images Falco trusts and images it does not, miner command lines.
fn merge_probe_events() -> Vec<Event> {
    let images = [
        None,
        Some("docker.io/library/alpine"),
        Some("docker.io/calico/node"),
        Some("602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni"),
        Some("602401143452.dkr.ecr.us-west-2.amazonaws.com/other"),
        Some("registry.redhat.io/openshift-logging/fluentd-rhel8"),
        Some("quay.io/sysdig/agent"),
        Some("istio/proxy_v2"),
    ];
    let mut containers = vec![Container::host()];
    for (i, image) in images.iter().enumerate() {
        for privileged in [None, Some(true), Some(false)] {
            containers.push(Arc::new(Container {
                id: format!("c0ffee{i:06}"),
                image_repository: image.map(str::to_string),
                privileged,
                ..Default::default()
            }));
        }
    }
    let procs: [(&str, &[&str]); 9] = [
        ("/bin/bash", &["bash"]),
        ("/bin/sh", &["sh", "-c", "/dev/shm/x.sh"]),
        (
            "/usr/bin/xmrig",
            &[
                "xmrig",
                "--donate-level",
                "1",
                "-o",
                "stratum+tcp://pool.minexmr.com:4444",
            ],
        ),
        ("/usr/bin/python3", &["python3", "-c", "import pty"]),
        ("/usr/bin/find", &["find", "/", "-name", "id_rsa"]),
        ("/usr/bin/cat", &["cat", "/etc/shadow"]),
        ("/tmp/x", &["x"]),
        ("/usr/bin/aws", &["aws", "s3", "ls"]),
        ("/usr/bin/apt-get", &["apt-get", "install", "-y", "nmap"]),
    ];
    let paths = [
        "/etc/shadow",
        "/etc/shadow.d",
        "/etc/sudoers",
        "/root/.aws/credentials",
        "/home/u/.ssh/id_rsa",
        "/home/u/.ssh/authorized_keys",
        "/home/u/.bash_history",
        "/home/u/.bashrc",
        "/etc/cron.d/job",
        "/etc/cron.daily",
        "/etc/profile.d/x.sh",
        "/proc/1/environ",
        "/var/log/syslog",
        "/dev/shm/x",
        "/usr/bin/.hidden",
        "/var/lib/rpm/Packages",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "",
    ];
    let mut out = Vec::new();
    for (n, (exe, argv)) in procs.iter().enumerate() {
        for (ci, ct) in containers.iter().enumerate() {
            let mut proc = Process::new(100 + n as u32, 1, exe, argv);
            proc.vpid = if ci % 2 == 0 { 1 } else { 7 };
            proc.env = Some(Arc::from("HISTFILE=/dev/null PATH=/bin"));
            let proc = Arc::new(proc);
            let mut x = ev(EventType::Execve, proc.clone());
            x.container = ct.clone();
            x.ancestors = vec![
                p("/usr/sbin/nginx", &["nginx"]),
                p("/usr/bin/containerd-shim", &["containerd-shim"]),
            ];
            out.push(x);
            if ci > 3 {
                continue;
            }
            for (pi, path) in paths.iter().enumerate() {
                for flags in [
                    Some(libc::O_RDONLY),
                    Some(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
                    Some(libc::O_RDWR | libc::O_CREAT),
                    Some(libc::O_ACCMODE),
                    None,
                ] {
                    let mut o = ev(EventType::Openat, proc.clone());
                    o.evt.args.flags = flags.map(|f| f as u64);
                    o.evt.args.name = Some((*path).into());
                    o.evt.res = 3;
                    let mut fd = Fd::file(3, path);
                    fd.name_truncated = pi % 7 == 3;
                    o.fd = Some(fd);
                    o.container = ct.clone();
                    out.push(o);
                }
                for ty in [
                    EventType::Renameat2,
                    EventType::Unlinkat,
                    EventType::Mkdirat,
                ] {
                    let mut r = ev(ty, proc.clone());
                    r.evt.args.path = Some((*path).into());
                    r.evt.args.oldpath = Some((*path).into());
                    r.evt.args.newpath = Some((*path).into());
                    r.container = ct.clone();
                    out.push(r);
                }
            }
        }
    }
    let mut c = ev(EventType::Connect, p("/usr/bin/curl", &["curl"]));
    c.fd = Some(Fd::socket(
        4,
        "10.0.0.2:40000".parse().unwrap(),
        "10.0.0.9:3333".parse().unwrap(),
        Role::Client,
        L4Proto::Tcp,
    ));
    out.push(c);
    out
}

/// Merged string tests and the index by event class answer what separate
/// tests behind a plain index by type answered: the rule set compiled
/// without merging, every rule of the event's type evaluated.
#[test]
fn merged_string_tests_answer_what_the_separate_tests_answered_on_every_rule() {
    use super::compile::MERGE_STRING_TESTS;
    let events = merge_probe_events();
    for files in all_rule_sets() {
        MERGE_STRING_TESTS.set(false);
        let separate = load_paths(&files);
        MERGE_STRING_TESTS.set(true);
        let merged = load_paths(&files);
        assert_eq!(separate.set.rules.len(), merged.set.rules.len());
        assert!(merged.set.rules.len() >= 54, "{}", merged.set.rules.len());
        let mut fired_total = 0;
        for e in &events {
            let bit = super::eval::type_bit(e.evt.ty);
            let a: Vec<usize> = (separate.set.rules.iter().enumerate())
                .filter(|(_, r)| r.types & bit != 0 && r.tree.eval(e))
                .map(|(i, _)| i)
                .collect();
            let mut b = Vec::new();
            merged.set.for_each_match(e, |i, _| b.push(i));
            assert_eq!(a, b, "{:?} {:?} in {:?}", e.evt.ty, e.fd, e.container);
            fired_total += b.len();
        }
        // The probe reaches the rules: many of them fire somewhere.
        assert!(fired_total > 100, "{fired_total} matches");
    }
}

/// The evaluator's fast string readers read what the field table reads,
/// on the probe events and on the cases they do not cover (truncated
/// executable and working directory, no working directory, a user name,
/// a socket, no fd, ancestors beyond the list).
#[test]
fn fast_string_fields_read_what_the_field_table_reads() {
    use crate::event::fields::{StrField, StrValue};
    use crate::event::{Field, FieldValue};
    let mut events = merge_probe_events();
    let mut extra = Vec::new();
    for (i, e) in events.iter().enumerate().step_by(7) {
        let mut e = e.clone();
        let mut p = (*e.proc).clone();
        p.exepath_truncated = i % 2 == 0;
        p.cwd = (i % 3 != 0).then(|| "/home/u".to_string());
        p.cwd_truncated = i % 5 < 2;
        e.proc = Arc::new(p);
        e.user.name = (i % 2 == 1).then(|| Arc::from("root"));
        if i % 4 == 0 {
            e.fd = None;
        }
        extra.push(e);
    }
    events.extend(extra);
    let fields = [
        Field::ProcName,
        Field::ProcExe,
        Field::ProcExepath,
        Field::ProcCwd,
        Field::ProcPname,
        Field::UserName,
        Field::ContainerId,
        Field::ContainerImageRepository,
        Field::FdTypechar,
        Field::FdName,
        Field::FdDirectory,
        Field::FdFilename,
    ]
    .into_iter()
    .chain((0..=4).map(|n| Field::parse("proc.aname", Some(&n.to_string())).unwrap()));
    let mut checked = 0;
    for f in fields {
        let fast = StrField::of(f).expect("a fast reader");
        assert_eq!(fast.field(), f);
        for e in &events {
            let want = match e.field(&f) {
                FieldValue::Absent => StrValue::Absent,
                FieldValue::Str(s) => StrValue::Whole(match s {
                    std::borrow::Cow::Borrowed(b) => b,
                    owned => panic!("{f:?} rendered {owned:?}"),
                }),
                FieldValue::Partial(_) => StrValue::Partial,
                other => panic!("{f:?} read {other:?}"),
            };
            assert_eq!(fast.get(e), want, "{f:?} on {:?} {:?}", e.evt.ty, e.fd);
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked}");
}

#[test]
fn launch_privileged_container_fires_for_untrusted_images_only_with_merged_tests() {
    let files = &all_rule_sets()[0];
    let set = load_paths(files).set;
    let start = |image: Option<&str>, privileged: bool| {
        let mut proc = Process::new(60, 59, "/bin/sh", &["sh"]);
        proc.vpid = 1;
        let mut e = ev(EventType::Execve, Arc::new(proc));
        e.container = Arc::new(Container {
            id: "0123456789ab".into(),
            image_repository: image.map(str::to_string),
            privileged: Some(privileged),
            ..Default::default()
        });
        let mut v = Vec::new();
        set.for_each_match(&e, |_, r| v.push(r.name.to_string()));
        v.contains(&"Launch Privileged Container".to_string())
    };
    assert!(start(Some("docker.io/library/alpine"), true));
    assert!(start(None, true), "an unknown image is not a trusted one");
    assert!(!start(Some("docker.io/library/alpine"), false));
    for trusted in [
        "docker.io/calico/node",
        "602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni",
        "registry.redhat.io/openshift-logging/fluentd-rhel8",
        "quay.io/sysdig/agent",
        "istio/proxy_v2",
    ] {
        assert!(!start(Some(trusted), true), "{trusted}");
    }
    // An EKS registry with an image Falco does not list is not trusted.
    assert!(start(
        Some("602401143452.dkr.ecr.us-west-2.amazonaws.com/other"),
        true
    ));
}

#[test]
fn a_read_only_open_on_the_host_meets_neither_write_rules_nor_container_rules() {
    use super::eval::EventClass;
    for files in all_rule_sets() {
        let set = load_paths(&files).set;
        let class = |access: i32, host: bool| EventClass {
            ty: EventType::Openat,
            access: access as u8,
            host,
        };
        let host_read = set.rules_for_class(class(libc::O_RDONLY, true));
        let ct_write = set.rules_for_class(class(libc::O_WRONLY, false));
        let unknown = set.rules_for_class(class(i32::from(EventClass::OTHER_ACCESS), false));
        println!("{files:?}: host read {host_read}, container write {ct_write}, unknown {unknown}");
        assert!(host_read * 3 < unknown * 2, "{host_read} of {unknown}");
        assert!(ct_write < unknown, "{ct_write} of {unknown}");
    }
}
