//! The shipped rule set (`configs/rules/*.yaml`): for every rule, an event
//! that must fire it and a look-alike benign event that must not.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::event::{
    Container, Event, EventType, Fd, FdType, L4Proto, Mount, Process, Role, exe_flags,
};

use super::loader::{RuleSet, Severity, load_paths};

fn shipped() -> &'static RuleSet {
    static SET: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/rules/*.yaml");
        let loaded = load_paths(&[dir]);
        let bad: Vec<String> = loaded
            .problems
            .iter()
            .filter(|p| p.severity != Severity::Skipped)
            .map(|p| p.to_string())
            .collect();
        assert!(bad.is_empty(), "the shipped rules load cleanly: {bad:#?}");
        loaded.set
    })
}

fn fired(e: &Event) -> Vec<String> {
    let mut out = Vec::new();
    shipped().for_each_match(e, |_, r| out.push(r.name.to_string()));
    out
}

fn assert_fires(rule: &str, e: &Event) {
    let f = fired(e);
    assert!(
        f.iter().any(|r| r == rule),
        "expected {rule:?} to fire; fired: {f:?}\n{e:#?}"
    );
}

fn assert_quiet(rule: &str, e: &Event) {
    let f = fired(e);
    assert!(
        !f.iter().any(|r| r == rule),
        "{rule:?} must not fire; fired: {f:?}\n{e:#?}"
    );
}

/// A small builder for realistic events.
struct Ev(Event);

fn proc(path: &str, argv: &[&str]) -> Arc<Process> {
    Arc::new(Process::new(4242, 4000, path, argv))
}

impl Ev {
    fn exec(path: &str, argv: &[&str]) -> Ev {
        Ev(Event::new(EventType::Execve, proc(path, argv)))
    }

    fn of(ty: EventType, path: &str, argv: &[&str]) -> Ev {
        Ev(Event::new(ty, proc(path, argv)))
    }

    fn open(process: &str, path: &str, flags: i32) -> Ev {
        let mut e = Event::new(
            EventType::Openat,
            proc(&format!("/usr/bin/{process}"), &[process]),
        );
        e.evt.args.flags = Some(flags as u64);
        e.evt.args.name = Some(path.into());
        e.evt.res = 3;
        e.fd = Some(Fd::file(3, path));
        Ev(e)
    }

    fn parents(mut self, chain: &[(&str, &[&str])]) -> Ev {
        self.0.ancestors = chain.iter().map(|(p, a)| proc(p, a)).collect();
        self
    }

    fn container(mut self, image: &str) -> Ev {
        let mut c = Container {
            id: "0123456789ab".into(),
            name: Some("app".into()),
            image_repository: Some(image.into()),
            image_tag: Some("1.0".into()),
            pod_name: Some("app-7d9f".into()),
            pod_namespace: Some("default".into()),
            ..Default::default()
        };
        c.image = Some(format!("{image}:1.0"));
        self.0.container = Arc::new(c);
        self
    }

    fn with_container(mut self, f: impl FnOnce(&mut Container)) -> Ev {
        f(Arc::make_mut(&mut self.0.container));
        self
    }

    fn with_proc(mut self, f: impl FnOnce(&mut Process)) -> Ev {
        f(Arc::make_mut(&mut self.0.proc));
        self
    }

    fn with(mut self, f: impl FnOnce(&mut Event)) -> Ev {
        f(&mut self.0);
        self
    }
}

fn sock(local: &str, remote: &str) -> Fd {
    let l: SocketAddr = local.parse().unwrap();
    let r: SocketAddr = remote.parse().unwrap();
    Fd::socket(3, l, r, Role::Client, L4Proto::Tcp)
}

const RUNC: (&str, &[&str]) = ("/usr/bin/runc", &["runc:[2:INIT]"]);

#[test]
fn every_shipped_rule_is_indexed_by_event_type() {
    let set = shipped();
    assert!(set.rules.len() >= 16);
    for r in &set.rules {
        assert_ne!(
            r.types,
            super::eval::ALL_TYPES,
            "{} meets every event",
            r.name
        );
    }
    // An open meets only the file rules, not all of them.
    assert!(
        set.rules_for(EventType::Openat) <= set.rules.len() / 3,
        "{} of {}",
        set.rules_for(EventType::Openat),
        set.rules.len()
    );
}

#[test]
fn terminal_shell_in_container() {
    let rule = "Terminal shell in container";
    let tty = |e: Ev| e.with_proc(|p| p.tty = 34816);
    assert_fires(
        rule,
        &tty(Ev::exec("/bin/bash", &["bash"]).container("docker.io/library/nginx")).0,
    );
    // The entrypoint's `sh -c` has no terminal; a host shell is not in a container.
    assert_quiet(
        rule,
        &Ev::exec("/bin/sh", &["sh", "-c", "nginx"])
            .container("docker.io/library/nginx")
            .0,
    );
    assert_quiet(rule, &tty(Ev::exec("/bin/bash", &["bash"])).0);
}

#[test]
fn shell_spawned_by_a_server_process() {
    let rule = "Shell spawned by a server process";
    let nginx: (&str, &[&str]) = ("/usr/sbin/nginx", &["nginx", "-g", "daemon off;"]);
    assert_fires(
        rule,
        &Ev::exec("/bin/sh", &["sh", "-c", "id"]).parents(&[nginx]).0,
    );
    // Through an intermediate (php-fpm -> perl -> sh).
    assert_fires(
        rule,
        &Ev::exec("/bin/sh", &["sh", "-c", "id"])
            .parents(&[
                ("/usr/bin/perl", &["perl"]),
                ("/usr/sbin/php-fpm", &["php-fpm"]),
            ])
            .0,
    );
    // A login shell's child shell, a server spawning a non-shell, and the exception.
    assert_quiet(
        rule,
        &Ev::exec("/bin/sh", &["sh"])
            .parents(&[("/bin/bash", &["bash"])])
            .0,
    );
    assert_quiet(
        rule,
        &Ev::exec("/usr/bin/gzip", &["gzip"]).parents(&[nginx]).0,
    );
    assert_quiet(
        rule,
        &Ev::exec("/bin/sh", &["sh", "-c", "pg_archivecleanup /wal 0001"])
            .parents(&[("/usr/lib/postgresql/15/bin/postgres", &["postgres"])])
            .0,
    );
}

#[test]
fn drop_and_execute_new_binary_in_container() {
    let rule = "Drop and execute new binary in container";
    let exe = |upper: bool| {
        Ev::exec("/tmp/x", &["./x"])
            .container("docker.io/library/alpine")
            .with_proc(|p| p.exe_upper_layer = Some(upper))
            .with(|e| {
                e.evt.args.flags = Some(if upper {
                    exe_flags::EXE_UPPER_LAYER
                } else {
                    exe_flags::EXE_LOWER_LAYER
                })
            })
    };
    assert_fires(rule, &exe(true).0);
    assert_quiet(rule, &exe(false).0);
}

#[test]
fn fileless_execution_from_shared_memory_or_memfd() {
    let rule = "Fileless execution from shared memory or memfd";
    assert_fires(rule, &Ev::exec("/dev/shm/.x/kworker", &["kworker"]).0);
    assert_fires(
        rule,
        &Ev::exec("memfd:payload", &["[kthreadd]"])
            .with_proc(|p| p.exe_from_memfd = Some(true))
            .0,
    );
    // Listing /dev/shm, and runc's own memfd re-exec, are fine.
    assert_quiet(rule, &Ev::exec("/bin/ls", &["ls", "/dev/shm"]).0);
    assert_quiet(
        rule,
        &Ev::exec("memfd:runc_cloned:/proc/self/exe", &["runc", "init"])
            .with_proc(|p| {
                p.name = "runc:[2:INIT]".into();
                p.exe_from_memfd = Some(true);
            })
            .0,
    );
}

#[test]
fn crypto_miner_by_name_or_pool_protocol() {
    let rule = "Crypto miner started";
    assert_fires(
        rule,
        &Ev::exec("/tmp/xmrig", &["xmrig", "-o", "pool:3333"]).0,
    );
    assert_fires(
        rule,
        &Ev::exec(
            "/tmp/.cache/sysupd",
            &["sysupd", "-o", "stratum+tcp://pool.example:4444"],
        )
        .0,
    );
    assert_quiet(
        rule,
        &Ev::exec("/usr/bin/grep", &["grep", "stratum", "notes.txt"]).0,
    );
    assert_quiet(rule, &Ev::exec("/usr/bin/xmllint", &["xmllint", "a.xml"]).0);
}

#[test]
fn sensitive_file_read_by_untrusted_process() {
    let rule = "Sensitive file read by untrusted process";
    assert_fires(rule, &Ev::open("cat", "/etc/shadow", libc::O_RDONLY).0);
    assert_fires(
        rule,
        &Ev::open(
            "python3",
            "/var/lib/rancher/k3s/server/token",
            libc::O_RDONLY,
        )
        .0,
    );
    assert_fires(
        rule,
        &Ev::open("cat", "/root/.ssh/id_ed25519", libc::O_RDONLY).0,
    );
    assert_fires(
        rule,
        &Ev::open("scp", "/etc/ssh/ssh_host_ed25519_key", libc::O_RDONLY).0,
    );
    // sshd reading shadow, anyone reading hostname or a public host key.
    assert_quiet(rule, &Ev::open("sshd", "/etc/shadow", libc::O_RDONLY).0);
    assert_quiet(rule, &Ev::open("cat", "/etc/hostname", libc::O_RDONLY).0);
    assert_quiet(
        rule,
        &Ev::open("cat", "/etc/ssh/ssh_host_ed25519_key.pub", libc::O_RDONLY).0,
    );
    // A failed open (fd -1) read nothing.
    assert_quiet(
        rule,
        &Ev::open("cat", "/etc/shadow", libc::O_RDONLY)
            .with(|e| {
                e.evt.res = -(libc::EACCES as i64);
                e.fd.as_mut().unwrap().num = -1;
            })
            .0,
    );
}

#[test]
fn exec_or_write_through_a_path_too_deep_to_resolve() {
    let rule = "Exec or write through a path too deep to resolve";
    let deep = |p: &mut Process| p.exepath_truncated = true;
    let partial = |e: &mut Event| e.fd.as_mut().expect("fd").name_truncated = true;
    let w = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let exec = Ev::exec("/a/a/a/payload", &["payload"]).with_proc(deep).0;
    assert_fires(rule, &exec);
    // The path rules fail closed on it: it may well lie below /dev/shm.
    assert_fires("Fileless execution from shared memory or memfd", &exec);
    let write = Ev::open("sh", "/a/a/a/f", w).with(partial).0;
    assert_fires(rule, &write);
    assert_fires("Write below etc or binary directories", &write);
    // Exceptions on whole fields still excuse: a package manager's write.
    assert_quiet(
        "Write below etc or binary directories",
        &Ev::open("dpkg", "/a/a/a/f", w).with(partial).0,
    );
    // The same paths known in full; a read; a deep working directory alone.
    assert_quiet(rule, &Ev::exec("/a/a/a/payload", &["payload"]).0);
    assert_quiet(rule, &Ev::open("sh", "/a/a/a/f", w).0);
    assert_quiet(
        rule,
        &Ev::open("cat", "/a/a/a/f", libc::O_RDONLY).with(partial).0,
    );
    assert_quiet(
        rule,
        &Ev::exec("/usr/bin/ls", &["ls"])
            .with_proc(|p| {
                p.cwd = Some("/a/a".into());
                p.cwd_truncated = true;
            })
            .0,
    );
}

#[test]
fn write_below_etc_or_binary_directories() {
    let rule = "Write below etc or binary directories";
    let w = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    assert_fires(rule, &Ev::open("bash", "/etc/cron.d/update", w).0);
    assert_fires(rule, &Ev::open("curl", "/usr/local/bin/kubectl", w).0);
    assert_fires(
        rule,
        &Ev::open("python3", "/etc/ld.so.preload", libc::O_RDWR).0,
    );
    // Package managers and k3s write there; reading is not writing; /tmp is not /etc.
    assert_quiet(rule, &Ev::open("dpkg", "/usr/bin/tool", w).0);
    assert_quiet(
        rule,
        &Ev::open("k3s", "/etc/rancher/k3s/registries.yaml", w).0,
    );
    assert_quiet(
        rule,
        &Ev::open("cp", "/usr/bin/x", w)
            .parents(&[("/usr/bin/apt-get", &["apt-get"])])
            .0,
    );
    assert_quiet(rule, &Ev::open("vim", "/etc/hosts", libc::O_RDONLY).0);
    assert_quiet(rule, &Ev::open("vim", "/etcetera/x", w).0);
    assert_quiet(rule, &Ev::open("cc", "/usr/bin/sub/dir/x", w).0);
}

#[test]
fn log_files_cleared() {
    let rule = "Log files cleared";
    assert_fires(
        rule,
        &Ev::open("bash", "/var/log/auth.log", libc::O_WRONLY | libc::O_TRUNC).0,
    );
    assert_fires(
        rule,
        &Ev::of(
            EventType::Unlinkat,
            "/bin/rm",
            &["rm", "-f", "/var/log/syslog"],
        )
        .with(|e| e.evt.args.path = Some("/var/log/syslog".into()))
        .0,
    );
    // Appending, rotating, and truncating elsewhere.
    assert_quiet(
        rule,
        &Ev::open(
            "rsyslogd",
            "/var/log/syslog",
            libc::O_WRONLY | libc::O_APPEND,
        )
        .0,
    );
    assert_quiet(
        rule,
        &Ev::open("bash", "/var/log/syslog", libc::O_WRONLY | libc::O_APPEND).0,
    );
    assert_quiet(
        rule,
        &Ev::open(
            "logrotate",
            "/var/log/syslog",
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .0,
    );
    assert_quiet(
        rule,
        &Ev::open("bash", "/tmp/build.log", libc::O_WRONLY | libc::O_TRUNC).0,
    );
}

#[test]
fn symlink_or_hardlink_over_sensitive_files() {
    let rule = "Link over sensitive file";
    let symlink = |target: &str| {
        Ev::of(
            EventType::Symlinkat,
            "/bin/ln",
            &["ln", "-s", target, "/tmp/x"],
        )
        .with(|e| {
            e.evt.args.target = Some(target.into());
            e.evt.args.linkpath = Some("/tmp/x".into());
        })
    };
    let hardlink = |old: &str| {
        Ev::of(EventType::Linkat, "/bin/ln", &["ln", old, "/tmp/y"]).with(|e| {
            e.evt.args.oldpath = Some(old.into());
            e.evt.args.newpath = Some("/tmp/y".into());
        })
    };
    assert_fires(rule, &symlink("/etc/shadow").0);
    assert_fires(rule, &symlink("/root/.ssh/authorized_keys").0);
    assert_fires(rule, &hardlink("/etc/sudoers").0);
    assert_quiet(rule, &symlink("/etc/hostname").0);
    assert_quiet(rule, &symlink("/usr/bin/python3").0);
    assert_quiet(rule, &hardlink("/home/ann/notes").0);
}

#[test]
fn kernel_module_load() {
    let rule = "Kernel module loaded";
    let load = |name: &str, parent: &str| {
        Ev::of(
            EventType::FinitModule,
            &format!("/sbin/{name}"),
            &[name, "rootkit"],
        )
        .parents(&[(parent, &[parent])])
        .with(|e| e.evt.args.name = Some("rootkit".into()))
    };
    assert_fires(rule, &load("insmod", "/bin/bash").0);
    assert_fires(rule, &load("modprobe", "/bin/bash").0);
    // The kernel's on-demand modprobe and the boot-time loader.
    let kworker = load("modprobe", "kworker/u8:2")
        .with(|e| Arc::make_mut(&mut e.ancestors[0]).name = "kworker/u8:2".into());
    assert_quiet(rule, &kworker.0);
    assert_quiet(
        rule,
        &load("modprobe", "/bin/bash")
            .with_proc(|p| p.name = "systemd-modules".into())
            .0,
    );
    // Listing modules is not loading one.
    assert_quiet(rule, &Ev::exec("/sbin/lsmod", &["lsmod"]).0);
}

#[test]
fn ptrace_attach() {
    let rule = "Ptrace attach to another process";
    let pt = |req: u64| {
        Ev::of(EventType::Ptrace, "/usr/bin/gdb", &["gdb", "-p", "1"]).with(|e| {
            e.evt.args.request = Some(req);
            e.evt.args.pid = Some(1);
        })
    };
    assert_fires(rule, &pt(16).0); // PTRACE_ATTACH
    assert_fires(rule, &pt(0x4206).0); // PTRACE_SEIZE
    assert_fires(rule, &pt(5).0); // PTRACE_POKEDATA
    assert_quiet(rule, &pt(0).0); // PTRACE_TRACEME: strace's child
    assert_quiet(rule, &pt(12).0); // PTRACE_GETREGS
}

#[test]
fn reverse_shell_socket_duped_onto_stdio() {
    let rule = "Reverse shell";
    let dup2 = |newfd: i64, fd: Fd| {
        Ev::of(EventType::Dup2, "/bin/bash", &["bash", "-i"]).with(|e| {
            e.evt.args.oldfd = Some(3);
            e.evt.args.newfd = Some(newfd);
            e.evt.res = newfd;
            e.fd = Some(fd);
        })
    };
    assert_fires(
        rule,
        &dup2(0, sock("10.42.0.9:41234", "203.0.113.7:4444")).0,
    );
    assert_fires(
        rule,
        &dup2(1, sock("[fd00::9]:41234", "[2001:db8::7]:443"))
            .container("docker.io/library/alpine")
            .0,
    );
    // A file onto stdout (`> out.txt`), and a socket onto fd 7.
    assert_quiet(rule, &dup2(1, Fd::file(3, "/tmp/out.txt")).0);
    assert_quiet(
        rule,
        &dup2(7, sock("10.42.0.9:41234", "203.0.113.7:4444")).0,
    );
    // A unix socket on stdin (systemd-style activation by another program).
    let unix = Fd {
        ty: FdType::Unix,
        ..Fd::file(3, "/run/app.sock")
    };
    assert_quiet(rule, &dup2(0, unix).0);
}

#[test]
fn packet_socket_in_container() {
    let rule = "Packet socket in container";
    let socket = |domain: i32| {
        Ev::of(
            EventType::Socket,
            "/usr/bin/python3",
            &["python3", "sniff.py"],
        )
        .with(|e| {
            e.evt.args.domain = Some(domain as u32);
            e.evt.args.sock_type = Some(libc::SOCK_RAW as u32);
        })
    };
    assert_fires(
        rule,
        &socket(libc::AF_PACKET)
            .container("docker.io/library/python")
            .0,
    );
    assert_quiet(
        rule,
        &socket(libc::AF_INET)
            .container("docker.io/library/python")
            .0,
    );
    assert_quiet(rule, &socket(libc::AF_PACKET).0);
}

#[test]
fn contact_with_the_k8s_api_server_from_a_container() {
    let rule = "Contact with K8s API server from a container";
    let connect = |remote: &str| {
        Ev::of(
            EventType::Connect,
            "/usr/bin/curl",
            &["curl", "-k", "https://kubernetes.default"],
        )
        .container("docker.io/library/alpine")
        .with(|e| {
            e.fd = Some(sock("10.42.0.12:51000", remote));
        })
    };
    assert_fires(rule, &connect("10.43.0.1:443").0);
    assert_fires(rule, &connect("192.168.1.10:6443").0);
    // DNS, kube-system, and the host itself.
    assert_quiet(rule, &connect("10.43.0.10:53").0);
    assert_quiet(
        rule,
        &connect("10.43.0.1:443")
            .with_container(|c| c.pod_namespace = Some("kube-system".into()))
            .0,
    );
    let mut host = connect("10.43.0.1:443");
    host.0.container = Container::host();
    assert_quiet(rule, &host.0);
}

#[test]
fn container_from_an_unauthorized_registry() {
    let rule = "Container from unauthorized registry";
    let start = |image: &str| {
        Ev::exec("/app/server", &["server"])
            .container(image)
            .parents(&[RUNC])
    };
    assert_fires(rule, &start("evil.example.net/miner").0);
    assert_fires(rule, &start("docker.io.evil.example/app").0);
    assert_quiet(rule, &start("registry.k8s.io/pause").0);
    assert_quiet(rule, &start("docker.io/library/nginx").0);
    // Later processes of the container are not its start.
    assert_quiet(
        rule,
        &Ev::exec("/bin/ls", &["ls"])
            .container("evil.example.net/miner")
            .parents(&[("/app/server", &["server"])])
            .0,
    );
}

#[test]
fn sensitive_host_path_mounted_into_a_container() {
    let rule = "Sensitive host path mounted into container";
    let start = |source: &str| {
        Ev::exec("/app/server", &["server"])
            .container("docker.io/library/nginx")
            .parents(&[RUNC])
            .with_container(|c| {
                c.mounts = vec![
                    Mount {
                        source: "/var/lib/rancher/k3s/agent/containerd/io.containerd.grpc.v1.cri/sandboxes/ab/resolv.conf".into(),
                        dest: "/etc/resolv.conf".into(),
                        options: Vec::new(),
                    },
                    Mount {
                        source: source.into(),
                        dest: "/host".into(),
                        options: Vec::new(),
                    },
                ]
            })
    };
    assert_fires(rule, &start("/").0);
    assert_fires(rule, &start("/run/k3s/containerd/containerd.sock").0);
    assert_fires(rule, &start("/root/.kube").0);
    assert_fires(rule, &start("/var/lib/rancher/k3s/server/tls").0);
    assert_quiet(rule, &start("/data/app").0);
    assert_quiet(
        rule,
        &start("/var/lib/kubelet/pods/1234/volumes/kubernetes.io~empty-dir/cache").0,
    );
}

#[test]
fn alerts_from_shipped_rules_render_their_fields() {
    let e = Ev::exec("/bin/bash", &["bash"])
        .container("docker.io/library/nginx")
        .with_proc(|p| p.tty = 34816)
        .0;
    let set = shipped();
    let mut text = None;
    set.for_each_match(&e, |_, r| {
        if &*r.name == "Terminal shell in container" {
            text = Some(r.output.render(&e).0);
        }
    });
    let text = text.expect("fired");
    assert!(text.contains("shell=bash"), "{text}");
    assert!(text.contains("image=docker.io/library/nginx"), "{text}");
    assert!(
        !text.contains('\n'),
        "folded YAML outputs stay on one line: {text}"
    );
}
