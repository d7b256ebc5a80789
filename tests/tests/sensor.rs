//! The eBPF sensor against the real kernel: each event type produced by a
//! real action and observed, with its fields, through the real binary
//! (`edge-agent run` with the sensor on, `edge-agent sensor watch --json`).
//! Kernel-side filtering is checked with the kernel's own counters, the
//! deny list by killing a real exec. Needs root.

use std::ffi::CString;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use edge_agent_tests::sensor::{
    DnsServer, EVENT_TIMEOUT, Watch, at, copy_binary, expect_in_outbox, i64_at, in_child, is_type,
    pid_of, real, sensor_details, sensor_scratch, start_with_sensor, str_at,
};
use edge_agent_tests::{Scratch, require_root, status_json, wait_for};

/// Read-only opens below the scratch dir are reported too.
fn watched(s_path: &std::path::Path) -> String {
    format!("watch_open_prefixes = [\"/etc\", \"{}\"]", s_path.display())
}

fn scratch_watched() -> Scratch {
    // The scratch dir is only known after creating it; rewrite the config.
    let s = sensor_scratch("");
    s.write_config(&format!(
        "[sensor]\nenabled = true\n{}\n",
        watched(s.path())
    ));
    s
}

#[test]
fn exec_fork_and_exit_are_observed_with_the_process_and_its_parent() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let me = std::process::id() as i64;
    let marker = format!("exec-marker-{}", std::process::id());

    let child = Command::new("/bin/echo")
        .args([marker.as_str(), "second arg"])
        .current_dir(s.path())
        .output()
        .expect("run echo");
    assert!(child.status.success());

    let exec = w.expect("execve of echo", |e| {
        is_type(e, &["execve"]) && at(e, "proc.args")[0] == marker.as_str()
    });
    let pid = pid_of(&exec).unwrap();
    assert_eq!(
        str_at(&exec, "proc.exepath"),
        Some(real("/bin/echo").as_str()),
        "{exec:#}"
    );
    assert_eq!(str_at(&exec, "proc.name"), Some("echo"));
    assert_eq!(str_at(&exec, "proc.exe"), Some("/bin/echo"));
    assert_eq!(at(&exec, "proc.args")[1], "second arg");
    assert_eq!(
        str_at(&exec, "proc.cmdline"),
        Some(format!("echo {marker} second arg").as_str())
    );
    assert_eq!(str_at(&exec, "evt.args.filename"), Some("/bin/echo"));
    assert_eq!(
        i64_at(&exec, "proc.ppid"),
        Some(me),
        "the test process is the parent"
    );
    assert_eq!(at(&exec, "ancestors")[0]["pid"], me, "{exec:#}");
    assert_eq!(
        str_at(&exec, "proc.cwd"),
        Some(real(&s.path().to_string_lossy()).as_str())
    );
    assert_eq!(i64_at(&exec, "user.uid"), Some(0));
    assert_eq!(str_at(&exec, "user.name"), Some("root"));
    assert_eq!(str_at(&exec, "container.id"), Some("host"));
    assert_eq!(at(&exec, "proc.exe_from_memfd"), false);
    assert!(i64_at(&exec, "proc.start_time").unwrap() > 1_600_000_000_000_000_000);

    let fork = w.expect("the fork that made the child", |e| {
        is_type(e, &["clone", "clone3", "fork", "vfork"])
            && pid_of(e) == Some(me)
            && i64_at(e, "evt.res") == Some(pid)
    });
    assert_eq!(i64_at(&fork, "proc.pid"), Some(me));

    let exit = w.expect("procexit of echo", |e| {
        is_type(e, &["procexit"]) && pid_of(e) == Some(pid)
    });
    assert_eq!(i64_at(&exit, "evt.args.status"), Some(0));

    // A non-zero exit code is reported as such.
    let status = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
    let exit7 = w.expect("procexit with status 7", |e| {
        is_type(e, &["procexit"])
            && str_at(e, "proc.name") == Some("sh")
            && i64_at(e, "evt.args.status") == Some(7)
    });
    assert_eq!(i64_at(&exit7, "proc.ppid"), Some(me));
}

#[test]
fn execveat_is_reported_as_execveat() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let path = CString::new("/bin/true").unwrap();
    let arg0 = CString::new("true").unwrap();
    let arg1 = CString::new("from-execveat").unwrap();
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let (pid, _) = in_child(|| {
        // SAFETY: every pointer was built before the fork and stays valid;
        // on success execveat does not return.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                libc::AT_FDCWD,
                path.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                0,
            );
        }
    });
    let e = w.expect("execveat of /bin/true", |e| {
        is_type(e, &["execveat"]) && pid_of(e) == Some(i64::from(pid))
    });
    assert_eq!(str_at(&e, "proc.exepath"), Some(real("/bin/true").as_str()));
    assert_eq!(at(&e, "proc.args")[0], "from-execveat");
}

#[test]
fn opens_carry_the_path_flags_and_result() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let me = std::process::id() as i64;

    let written = s.path().join("written.txt");
    let f = std::fs::File::create(&written).unwrap();
    let fd = f.as_raw_fd() as i64;
    let name = written.to_string_lossy().into_owned();
    let e = w.expect("openat O_WRONLY|O_TRUNC", |e| {
        is_type(e, &["openat"])
            && str_at(e, "fd.name") == Some(name.as_str())
            && pid_of(e) == Some(me)
    });
    let flags = i64_at(&e, "evt.args.flags").unwrap() as i32;
    assert_eq!(flags & libc::O_ACCMODE, libc::O_WRONLY, "{e:#}");
    assert_ne!(flags & libc::O_TRUNC, 0, "{e:#}");
    assert_ne!(flags & libc::O_CREAT, 0, "{e:#}");
    assert_eq!(i64_at(&e, "evt.res"), Some(fd));
    assert_eq!(i64_at(&e, "fd.num"), Some(fd));
    assert_eq!(str_at(&e, "fd.type"), Some("file"));
    assert_eq!(str_at(&e, "evt.args.name"), Some(name.as_str()));
    drop(f);

    // A failed read-only open below a watched prefix: the errno, fd -1.
    let missing = s.path().join("does-not-exist");
    assert!(std::fs::File::open(&missing).is_err());
    let m = missing.to_string_lossy().into_owned();
    let e = w.expect("failed openat", |e| {
        str_at(e, "fd.name") == Some(m.as_str())
    });
    assert_eq!(i64_at(&e, "evt.res"), Some(-(libc::ENOENT as i64)));
    assert_eq!(i64_at(&e, "fd.num"), Some(-1));

    // openat2, with the flags from its open_how.
    let path = CString::new(name.clone()).unwrap();
    let how = [(libc::O_RDWR | libc::O_CLOEXEC) as u64, 0u64, 0u64];
    // SAFETY: a valid path and open_how of the size given; the fd is closed below.
    let fd2 = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        )
    };
    assert!(fd2 >= 0, "openat2 failed");
    // SAFETY: closing the fd openat2 just returned.
    unsafe { libc::close(fd2 as i32) };
    let e = w.expect("openat2", |e| {
        is_type(e, &["openat2"]) && str_at(e, "fd.name") == Some(name.as_str())
    });
    assert_eq!(i64_at(&e, "evt.res"), Some(fd2));
    assert_eq!(
        i64_at(&e, "evt.args.flags").unwrap() as i32 & libc::O_ACCMODE,
        libc::O_RDWR
    );

    // A relative path is resolved against the working directory.
    let out = Command::new("/bin/sh")
        .args(["-c", "echo x > relative.txt"])
        .current_dir(s.path())
        .status()
        .unwrap();
    assert!(out.success());
    let rel = real(&s.path().to_string_lossy()) + "/relative.txt";
    let e = w.expect("relative open", |e| {
        str_at(e, "fd.name") == Some(rel.as_str())
    });
    assert_eq!(str_at(&e, "evt.args.name"), Some("relative.txt"));
}

#[test]
fn connect_and_accept_on_loopback_carry_addresses_ports_and_results() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let me = std::process::id() as i64;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port() as i64;
    let client = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    let cport = client.local_addr().unwrap().port() as i64;
    let (_server_side, _) = listener.accept().unwrap();

    let c = w.expect("connect to the listener", |e| {
        is_type(e, &["connect"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.name") == Some(format!("127.0.0.1:{cport}->127.0.0.1:{port}").as_str())
    });
    assert_eq!(i64_at(&c, "evt.res"), Some(0));
    assert_eq!(i64_at(&c, "fd.num"), Some(client.as_raw_fd() as i64));
    assert_eq!(str_at(&c, "fd.type"), Some("ipv4"));
    assert_eq!(str_at(&c, "fd.l4proto"), Some("tcp"));
    assert_eq!(str_at(&c, "fd.role"), Some("client"));

    let a = w.expect("accept on the listener", |e| {
        is_type(e, &["accept", "accept4"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.local") == Some(format!("127.0.0.1:{port}").as_str())
    });
    assert_eq!(
        str_at(&a, "fd.remote"),
        Some(format!("127.0.0.1:{cport}").as_str())
    );
    assert!(i64_at(&a, "evt.res").unwrap() >= 0);
    assert_eq!(str_at(&a, "fd.role"), Some("server"));

    // A refused connect: the error and the address it tried.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(TcpStream::connect(("127.0.0.1", dead)).is_err());
    let r = w.expect("refused connect", |e| {
        is_type(e, &["connect"])
            && str_at(e, "fd.remote") == Some(format!("127.0.0.1:{dead}").as_str())
    });
    assert_eq!(i64_at(&r, "evt.res"), Some(-(libc::ECONNREFUSED as i64)));

    // IPv6 loopback, where the machine has it.
    if let Ok(l6) = TcpListener::bind("[::1]:0") {
        let p6 = l6.local_addr().unwrap().port();
        let _c6 = TcpStream::connect(("::1", p6)).unwrap();
        let e6 = w.expect("IPv6 connect", |e| {
            is_type(e, &["connect"])
                && str_at(e, "fd.remote") == Some(format!("[::1]:{p6}").as_str())
        });
        assert_eq!(str_at(&e6, "fd.type"), Some("ipv6"));
    }

    // A unix socket: the path is the fd name.
    let sock = s.path().join("test.sock");
    let ul = UnixListener::bind(&sock).unwrap();
    let _uc = UnixStream::connect(&sock).unwrap();
    let _ = ul.accept().unwrap();
    let p = sock.to_string_lossy().into_owned();
    let u = w.expect("unix connect", |e| {
        is_type(e, &["connect"]) && str_at(e, "fd.name") == Some(p.as_str())
    });
    assert_eq!(str_at(&u, "fd.type"), Some("unix"));
    w.expect("unix accept with the listener's path", |e| {
        is_type(e, &["accept", "accept4"]) && str_at(e, "fd.name") == Some(p.as_str())
    });
}

#[test]
fn ptrace_attach_is_seen_with_its_request_and_target() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let mut target = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let tpid = target.id() as i32;
    // SAFETY: PTRACE_ATTACH/DETACH on our own child with null addr/data.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, tpid, 0, 0) };
    assert_eq!(rc, 0, "ptrace attach");
    let mut st = 0;
    // SAFETY: waiting for the stop of the traced child.
    unsafe { libc::waitpid(tpid, &mut st, 0) };
    // SAFETY: as above.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, tpid, 0, 0) };
    let _ = target.kill();
    let _ = target.wait();
    let e = w.expect("ptrace attach", |e| {
        is_type(e, &["ptrace"]) && i64_at(e, "evt.args.pid") == Some(i64::from(tpid))
    });
    assert_eq!(
        i64_at(&e, "evt.args.request"),
        Some(libc::PTRACE_ATTACH as i64)
    );
    assert_eq!(i64_at(&e, "evt.res"), Some(0));
}

#[test]
fn privilege_changes_memfds_and_packet_sockets_are_seen() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let me = std::process::id() as i64;

    let (child, status) = in_child(|| {
        // SAFETY: raw syscalls in the forked child (see in_child).
        unsafe {
            libc::setgid(65534);
            libc::setresuid(65534, 65534, 65534);
        }
    });
    assert_eq!(status, 0);
    let g = w.expect("setgid", |e| {
        is_type(e, &["setgid"]) && pid_of(e) == Some(i64::from(child))
    });
    assert_eq!(i64_at(&g, "evt.args.gid"), Some(65534));
    assert_eq!(i64_at(&g, "evt.res"), Some(0));
    let u = w.expect("setresuid", |e| {
        is_type(e, &["setresuid"]) && pid_of(e) == Some(i64::from(child))
    });
    assert_eq!(i64_at(&u, "evt.args.ruid"), Some(65534));
    assert_eq!(i64_at(&u, "evt.args.suid"), Some(65534));
    assert_eq!(
        i64_at(&u, "user.uid"),
        Some(65534),
        "after the call the effective uid is nobody's"
    );

    let name = CString::new("ea-test-memfd").unwrap();
    // SAFETY: a valid name; the fd is closed below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: closing the fd memfd_create returned.
    unsafe { libc::close(fd) };
    let m = w.expect("memfd_create", |e| {
        is_type(e, &["memfd_create"]) && pid_of(e) == Some(me)
    });
    assert_eq!(str_at(&m, "evt.args.name"), Some("ea-test-memfd"));
    assert_eq!(i64_at(&m, "evt.res"), Some(i64::from(fd)));
    assert_eq!(str_at(&m, "fd.type"), Some("memfd"));
    assert_eq!(
        i64_at(&m, "evt.args.flags"),
        Some(i64::from(libc::MFD_CLOEXEC))
    );

    // SAFETY: plain socket(2); closed below.
    let pfd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if pfd >= 0 {
        // SAFETY: closing the socket just made.
        unsafe { libc::close(pfd) };
    }
    let p = w.expect("AF_PACKET socket", |e| {
        is_type(e, &["socket"])
            && pid_of(e) == Some(me)
            && i64_at(e, "evt.args.domain") == Some(libc::AF_PACKET as i64)
    });
    assert_eq!(i64_at(&p, "evt.args.type"), Some(libc::SOCK_RAW as i64));
    assert_eq!(i64_at(&p, "evt.res"), Some(i64::from(pfd)));
    assert_eq!(str_at(&p, "fd.type"), Some("packet"));
}

#[test]
fn links_renames_unlinks_and_mounts_carry_their_paths() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let dir = real(&s.path().to_string_lossy());

    // A symlink over a watched file, made with a relative link path.
    let st = Command::new("/bin/ln")
        .args(["-s", "/etc/shadow", "shadow-link"])
        .current_dir(s.path())
        .status()
        .unwrap();
    assert!(st.success());
    let link = format!("{dir}/shadow-link");
    let e = w.expect("symlink", |e| {
        is_type(e, &["symlink", "symlinkat"])
            && str_at(e, "evt.args.linkpath") == Some(link.as_str())
    });
    assert_eq!(str_at(&e, "evt.args.target"), Some("/etc/shadow"));
    assert_eq!(i64_at(&e, "evt.res"), Some(0));

    let file = format!("{dir}/data");
    std::fs::write(&file, b"x").unwrap();
    let hard = format!("{dir}/data-hard");
    std::fs::hard_link(&file, &hard).unwrap();
    let e = w.expect("hard link", |e| {
        is_type(e, &["link", "linkat"]) && str_at(e, "evt.args.newpath") == Some(hard.as_str())
    });
    assert_eq!(str_at(&e, "evt.args.oldpath"), Some(file.as_str()));

    let moved = format!("{dir}/data-moved");
    std::fs::rename(&file, &moved).unwrap();
    let e = w.expect("rename", |e| {
        is_type(e, &["rename", "renameat", "renameat2"])
            && str_at(e, "evt.args.newpath") == Some(moved.as_str())
    });
    assert_eq!(str_at(&e, "evt.args.oldpath"), Some(file.as_str()));

    std::fs::remove_file(&moved).unwrap();
    w.expect("unlink", |e| {
        is_type(e, &["unlink", "unlinkat"]) && str_at(e, "evt.args.path") == Some(moved.as_str())
    });

    let mnt = s.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let target = CString::new(mnt.to_string_lossy().as_bytes()).unwrap();
    let (src, fstype) = (
        CString::new("ea-test").unwrap(),
        CString::new("tmpfs").unwrap(),
    );
    // SAFETY: valid C strings; the mount is undone right below.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount tmpfs");
    // SAFETY: unmounting what was just mounted.
    unsafe { libc::umount(target.as_ptr()) };
    let m = mnt.to_string_lossy().into_owned();
    let e = w.expect("mount", |e| {
        is_type(e, &["mount"]) && str_at(e, "evt.args.dir") == Some(m.as_str())
    });
    assert_eq!(str_at(&e, "evt.args.dev"), Some("ea-test"));
    assert_eq!(str_at(&e, "evt.args.fstype"), Some("tmpfs"));
    assert_eq!(i64_at(&e, "evt.args.flags"), Some(libc::MS_NOSUID as i64));
}

#[test]
fn dup2_of_a_socket_onto_stdin_is_seen_as_a_network_fd() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port() as i64;
    let sock = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let sfd = sock.as_raw_fd();
    let (child, status) = in_child(|| {
        // SAFETY: raw dup2 in the forked child (see in_child).
        unsafe { libc::dup2(sfd, 0) };
    });
    assert_eq!(status, 0);
    let e = w.expect("dup2 onto stdin", |e| {
        is_type(e, &["dup2", "dup3"]) && pid_of(e) == Some(i64::from(child))
    });
    assert_eq!(i64_at(&e, "evt.res"), Some(0));
    assert_eq!(i64_at(&e, "evt.args.newfd"), Some(0));
    assert_eq!(i64_at(&e, "evt.args.oldfd"), Some(i64::from(sfd)));
    assert_eq!(str_at(&e, "fd.type"), Some("ipv4"));
    assert_eq!(
        str_at(&e, "fd.remote"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    // dup2 onto a higher fd is not an event: the kernel skips it.
    let (child2, _) = in_child(|| {
        // SAFETY: as above.
        unsafe { libc::dup2(sfd, 50) };
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !w.collect(Duration::from_millis(200))
            .iter()
            .any(|e| is_type(e, &["dup2", "dup3"]) && pid_of(e) == Some(i64::from(child2))),
        "dup2 onto fd 50 must not be reported"
    );
}

#[test]
fn executables_on_an_overlayfs_upper_layer_are_flagged() {
    require_root();
    let s = scratch_watched();
    let root = s.path();
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    copy_binary("/bin/true", &root.join("lower"), "lower-true");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        root.join("lower").display(),
        root.join("upper").display(),
        root.join("work").display()
    );
    let st = Command::new("/bin/mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(root.join("merged"))
        .status()
        .unwrap();
    assert!(st.success(), "mount overlay");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("/bin/umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(root.join("merged"));
    let merged = root.join("merged");
    copy_binary("/bin/true", &merged, "upper-true");

    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    for name in ["upper-true", "lower-true"] {
        let st = Command::new(merged.join(name)).status().unwrap();
        assert!(st.success());
    }
    let up = w.expect("exec from the upper layer", |e| {
        is_type(e, &["execve"]) && str_at(e, "proc.name") == Some("upper-true")
    });
    assert_eq!(at(&up, "proc.exe_upper_layer"), true, "{up:#}");
    assert_eq!(i64_at(&up, "evt.args.flags"), Some(2), "EXE_UPPER_LAYER");
    let low = w.expect("exec from the lower layer", |e| {
        is_type(e, &["execve"]) && str_at(e, "proc.name") == Some("lower-true")
    });
    assert_eq!(at(&low, "proc.exe_upper_layer"), false, "{low:#}");
    assert_eq!(i64_at(&low, "evt.args.flags"), Some(8), "EXE_LOWER_LAYER");
}

#[test]
fn filtered_opens_and_excluded_processes_never_reach_user_space() {
    require_root();
    let s = sensor_scratch("");
    let dir = real(&s.path().to_string_lossy());
    let watched = format!("{dir}/watched");
    let unwatched = format!("{dir}/unwatched");
    let excluded = format!("{dir}/excluded");
    for d in [&watched, &unwatched, &excluded] {
        std::fs::create_dir(d).unwrap();
    }
    s.write_config(&format!(
        "[sensor]\nenabled = true\nwatch_open_prefixes = [\"{watched}\"]\nexclude_paths = [\"{excluded}\"]\nexclude_comms = [\"quiet-cat\"]\n"
    ));
    let d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    const N: u64 = 300;
    for i in 0..N {
        std::fs::write(format!("{unwatched}/f{i}"), b"x").unwrap();
    }
    let before = sensor_details(&s)["kernel_events_total_by_outcome"].clone();
    for i in 0..N {
        let _ = std::fs::read(format!("{unwatched}/f{i}")).unwrap();
        let _ = std::fs::write(format!("{excluded}/f{i}"), b"x");
    }
    // A process whose name is excluded: nothing of it reaches user space.
    let quiet = copy_binary("/bin/cat", s.path(), "quiet-cat");
    let st = Command::new(&quiet)
        .arg(format!("{watched}/missing-quiet"))
        .status()
        .unwrap();
    assert!(!st.success());
    std::fs::write(format!("{watched}/seen"), b"x").unwrap();
    let _ = std::fs::read(format!("{watched}/seen")).unwrap();
    let seen = format!("{watched}/seen");
    w.expect("a read-only open below the watched prefix", |e| {
        str_at(e, "fd.name") == Some(seen.as_str())
            && i64_at(e, "evt.args.flags")
                .is_some_and(|f| f as i32 & libc::O_ACCMODE == libc::O_RDONLY)
    });
    let after = wait_for(EVENT_TIMEOUT, || {
        let k = sensor_details(&s)["kernel_events_total_by_outcome"].clone();
        let d = |n: &str| k[n].as_u64().unwrap_or(0) - before[n].as_u64().unwrap_or(0);
        (d("filtered_open") >= N && d("filtered_path") >= N && d("filtered_comm") >= 1).then_some(k)
    });
    assert!(
        after.is_some(),
        "the kernel counted the filtered opens: before {before}, now {}",
        sensor_details(&s)["kernel_events_total_by_outcome"]
    );
    // The agent's own activity is dropped in the kernel too.
    assert!(
        sensor_details(&s)["kernel_events_total_by_outcome"]["filtered_own"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the agent's own syscalls are filtered"
    );
    let all = w.collect(Duration::from_millis(500));
    let leaked: Vec<&serde_json::Value> = all
        .iter()
        .filter(|e| {
            let name = str_at(e, "fd.name").unwrap_or("");
            (name.starts_with(&unwatched)
                && is_type(e, &["openat", "open"])
                && i64_at(e, "evt.args.flags")
                    .is_some_and(|f| f as i32 & libc::O_ACCMODE == libc::O_RDONLY))
                || name.starts_with(&excluded)
                || str_at(e, "proc.name") == Some("quiet-cat")
                || pid_of(e) == Some(i64::from(d.pid()))
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "filtered events reached user space: {leaked:#?}"
    );
}

#[test]
fn a_denied_exec_is_killed_before_it_prints_anything() {
    require_root();
    let s = sensor_scratch("");
    let dir = real(&s.path().to_string_lossy());
    let denied = copy_binary("/bin/echo", s.path(), "denied-echo");
    std::fs::create_dir(s.path().join("sub")).unwrap();
    let by_name = copy_binary("/bin/echo", &s.path().join("sub"), "evil-miner");
    let allowed = copy_binary("/bin/echo", s.path(), "allowed-echo");
    s.write_config(&format!(
        "[sensor]\nenabled = true\ndeny_exec = [\"{dir}/denied-echo\", \"evil-miner\", \"{dir}/later/dropped\"]\n"
    ));
    let _d = start_with_sensor(&s);
    // A denied path is denied by inode too: a hard link under another name
    // in another directory is the same file.
    let linked = s.path().join("sub").join("innocent-name");
    std::fs::hard_link(&denied, &linked).unwrap();
    // A denied path that only exists after the sensor started (resolved
    // again every second).
    std::fs::create_dir(s.path().join("later")).unwrap();
    let dropped = copy_binary("/bin/echo", &s.path().join("later"), "dropped");
    let dropped_link = s.path().join("sub").join("also-innocent");
    std::fs::hard_link(&dropped, &dropped_link).unwrap();
    std::thread::sleep(Duration::from_millis(2500));

    for bin in [&denied, &by_name, &linked, &dropped_link] {
        let out = Command::new(bin)
            .arg("should never print")
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{} was not killed: {out:?}",
            bin.display()
        );
        assert!(
            out.stdout.is_empty(),
            "the denied binary ran: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = Command::new(&allowed).arg("hello").output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\n");

    let details = wait_for(EVENT_TIMEOUT, || {
        let d = sensor_details(&s);
        (d["kills_total"].as_u64() == Some(4)).then_some(d)
    })
    .unwrap_or_else(|| panic!("four kills in status: {}", sensor_details(&s)));
    assert_eq!(
        details["kernel_events_total_by_outcome"]["killed"].as_u64(),
        Some(4)
    );
    let last = details["last_kill"].as_str().unwrap_or_default();
    assert!(
        last.contains(dropped_link.to_string_lossy().as_ref())
            && last.contains("should never print"),
        "{last}"
    );
    // Each kill is a critical alert, waiting in the outbox for the fleet.
    expect_in_outbox(&s, "critical_alert", "Critical: Denied executable killed");
    // This machine's kernel cannot load BPF-LSM programs (scripts/kernel-
    // matrix.sh tests the refusals on kernels that can): status says the
    // list kills.
    assert_eq!(details["deny_exec_mode"], "kill", "{details}");
}

#[test]
fn deny_open_is_enforced_only_with_bpf_lsm_and_says_so_when_it_cannot() {
    require_root();
    let s = sensor_scratch("");
    let dir = real(&s.path().to_string_lossy());
    let protected = s.path().join("k3s");
    std::fs::create_dir(&protected).unwrap();
    std::fs::write(protected.join("config.yaml"), "original\n").unwrap();
    s.write_config(&format!(
        "[sensor]\nenabled = true\n[[sensor.deny_open]]\npath = \"{dir}/k3s\"\nallow = [\"/usr/local/bin/k3s\"]\n"
    ));
    let _d = start_with_sensor(&s);
    let details = wait_for(EVENT_TIMEOUT, || {
        let d = sensor_details(&s);
        d["deny_open_mode"].is_string().then_some(d)
    })
    .unwrap_or_else(|| panic!("deny_open_mode in status: {}", sensor_details(&s)));
    let write = std::fs::write(protected.join("config.yaml"), "changed\n");
    // Where BPF-LSM programs load (scripts/kernel-matrix.sh's 6.1 kernels)
    // the write is refused; this machine's kernel lists bpf among its LSMs
    // but refuses the programs, so the agent must say it cannot enforce.
    if details["deny_open_mode"] == "lsm" {
        let e = write.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        expect_in_outbox(&s, "critical_alert", "Critical: Denied file open refused");
    } else {
        // Not enforced here: status says so, the sensor is degraded, and
        // the rest of the sensor runs.
        let mode = details["deny_open_mode"].as_str().unwrap();
        assert!(
            mode.starts_with("unavailable: ") && mode.to_lowercase().contains("bpf"),
            "{mode}"
        );
        assert!(write.is_ok());
        let st = status_json(&s);
        let sensor = &st["stages"]["sensor"];
        assert_eq!(sensor["state"], "degraded", "{sensor}");
        assert!(
            sensor["summary"]
                .as_str()
                .unwrap()
                .contains("deny_open NOT ENFORCED"),
            "{sensor}"
        );
        assert!(
            details["probes_attached"].as_u64().unwrap() > 30,
            "{details}"
        );
    }
}

#[test]
fn a_reload_changes_the_kernel_filters_without_a_restart() {
    require_root();
    let s = sensor_scratch("");
    let dir = real(&s.path().to_string_lossy());
    let victim = copy_binary("/bin/echo", s.path(), "later-denied");
    let d = start_with_sensor(&s);
    let out = Command::new(&victim).arg("runs").output().unwrap();
    assert!(out.status.success(), "not denied yet");
    s.write_config(&format!(
        "[sensor]\nenabled = true\ndeny_exec = [\"{dir}/later-denied\"]\n"
    ));
    d.signal(edge_agent_tests::SIGHUP);
    let killed = wait_for(EVENT_TIMEOUT, || {
        let out = Command::new(&victim).arg("runs").output().unwrap();
        (out.status.signal() == Some(libc::SIGKILL)).then_some(())
    });
    assert!(
        killed.is_some(),
        "the reloaded deny list took effect; log:\n{}",
        d.log()
    );
}

#[test]
fn an_unprivileged_daemon_shows_the_sensor_failed_and_keeps_running() {
    require_root();
    let s = sensor_scratch("");
    // Run the daemon as nobody, without capabilities: it cannot load eBPF.
    for d in [s.state_dir(), s.runtime_dir()] {
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
    }
    std::fs::set_permissions(
        s.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log = s.path().join("unprivileged.log");
    let mut child = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(edge_agent_tests::agent_bin())
        .args(["run", "--config"])
        .arg(s.config_path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("setpriv");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let st = wait_for(EVENT_TIMEOUT, || {
        let st = status_json(&s);
        (st["stages"]["sensor"]["state"] == "failed").then_some(st)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sensor did not show as failed: {}\nlog:\n{}",
            status_json(&s),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let sensor = &st["stages"]["sensor"];
    assert_eq!(
        sensor["details"]["error_code"], "not_privileged",
        "{sensor:#}"
    );
    assert!(
        sensor["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("root"),
        "{sensor:#}"
    );
    assert_eq!(st["daemon"]["running"], true);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("could not start"), "{text}");
    // The fleet hears of it: a node event waits in the outbox.
    expect_in_outbox(&s, "node_event", "sensor_unavailable");
    // Still serving: a second status answers.
    assert_eq!(status_json(&s)["daemon"]["running"], true);
    drop(guard);
    let _ = std::io::stderr().flush();
}

#[test]
fn the_rules_engine_alerts_on_what_the_sensor_sees() {
    require_root();
    let s = sensor_scratch("");
    let alerts = s.path().join("alerts.jsonl");
    s.write_config(&format!(
        "[sensor]\nenabled = true\n[rules]\nfiles = [\"{}\"]\njson_file = \"{}\"\n",
        edge_agent_tests::rules::shipped_rules_glob(),
        alerts.display()
    ));
    let d = start_with_sensor(&s);
    // A credentials file read by a program with no business reading it.
    let reader = copy_binary("/bin/cat", s.path(), "nosy-cat");
    let out = Command::new(&reader).arg("/etc/shadow").output().unwrap();
    assert!(out.status.success());
    let alert = wait_for(EVENT_TIMEOUT, || {
        std::fs::read_to_string(&alerts)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| {
                a["rule"] == "Sensitive file read by untrusted process"
                    && a["output_fields"]["proc.name"] == "nosy-cat"
            })
    })
    .unwrap_or_else(|| {
        panic!(
            "no alert; alerts file: {:?}\nlog:\n{}",
            std::fs::read_to_string(&alerts),
            d.log()
        )
    });
    assert_eq!(
        alert["output_fields"]["fd.name"], "/etc/shadow",
        "{alert:#}"
    );
    assert_eq!(alert["source"], "syscall");
}

#[test]
fn sigterm_stops_a_daemon_with_probes_attached_cleanly_and_detaches_them() {
    require_root();
    // Detaching 60-odd tracepoints takes the kernel seconds (an RCU grace
    // period each). The sensor stage must still stop within its shutdown
    // phase, the daemon exit 0, and none of its probes stay attached.
    let s = sensor_scratch("");
    let mut d = start_with_sensor(&s);
    // The daemon's BPF links, from the fdinfo of its open files.
    let links: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fdinfo", d.pid()))
        .expect("fdinfo")
        .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    let attached = || -> Vec<u64> {
        let out = Command::new("bpftool")
            .args(["-j", "link", "list"])
            .output()
            .expect("bpftool (scripts/deps.sh installs it)");
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        all.as_array()
            .expect("a list")
            .iter()
            .filter_map(|l| l["id"].as_u64())
            .filter(|id| links.contains(id))
            .collect()
    };
    assert!(
        links.len() > 10 && attached().len() == links.len(),
        "the running sensor's links are attached: {links:?}"
    );
    d.signal(edge_agent_tests::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(19))
        .expect("the daemon exits within systemd's TimeoutStopSec=20s");
    let log = d.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(!log.contains("did not stop in time"), "log:\n{log}");
    assert_eq!(attached(), Vec::<u64>::new(), "links left attached");
}

/// A cgroup made for one test under the cgroup v2 root; removed on drop.
struct TestCgroup(std::path::PathBuf);

impl TestCgroup {
    fn under(parent: &std::path::Path, name: &str) -> TestCgroup {
        let p = parent.join(name);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TestCgroup(p)
    }

    /// `sh` moves itself into the cgroup, then becomes `exe` reading `file`.
    fn run(&self, exe: &std::path::Path, file: &str) {
        let procs = self.0.join("cgroup.procs");
        let st = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec '{}' '{file}'",
                procs.display(),
                exe.display()
            ))
            .status()
            .unwrap();
        // 1 is cat's "no such file"; the shell's own failures are 2.
        assert_eq!(
            st.code(),
            Some(1),
            "{} ran and failed to read {file}",
            exe.display()
        );
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The cgroup v2 mount (`/sys/fs/cgroup/unified` on this hybrid host).
fn cgroup2_root() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            right.starts_with("cgroup2 ").then(|| point.into())
        })
        .expect("a cgroup v2 mount")
}

#[test]
fn processes_in_an_excluded_cgroup_and_below_it_never_reach_user_space() {
    require_root();
    let s = sensor_scratch("");
    let dir = real(&s.path().to_string_lossy());
    let name = format!("ea-test-exclude-{}", std::process::id());
    let excluded = TestCgroup::under(&cgroup2_root(), &name);
    let sibling = TestCgroup::under(&cgroup2_root(), &format!("{name}-sibling"));
    s.write_config(&format!(
        "[sensor]\nenabled = true\nwatch_open_prefixes = [\"{dir}\"]\nexclude_cgroups = [\"{name}\"]\n"
    ));
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    // A cgroup made below the excluded one after the start (a new container
    // in an excluded pod): picked up within a tick.
    let nested = TestCgroup::under(&excluded.0, "nested");
    let counted = wait_for(EVENT_TIMEOUT, || {
        (sensor_details(&s)["cgroups_excluded"].as_u64() == Some(2)).then_some(())
    });
    assert!(
        counted.is_some(),
        "the excluded cgroup and the one made below it: {}",
        sensor_details(&s)
    );
    let inside = copy_binary("/bin/cat", s.path(), "cg-inside");
    let below = copy_binary("/bin/cat", s.path(), "cg-nested");
    let beside = copy_binary("/bin/cat", s.path(), "cg-beside");
    excluded.run(&inside, &format!("{dir}/missing-inside"));
    nested.run(&below, &format!("{dir}/missing-nested"));
    // The look-alike in a cgroup whose name only starts the same is seen.
    sibling.run(&beside, &format!("{dir}/missing-beside"));
    w.expect("the process in the sibling cgroup", |e| {
        str_at(e, "proc.name") == Some("cg-beside")
            && str_at(e, "fd.name") == Some(format!("{dir}/missing-beside").as_str())
    });
    let all = w.collect(Duration::from_millis(500));
    let leaked: Vec<&serde_json::Value> = all
        .iter()
        .filter(|e| matches!(str_at(e, "proc.name"), Some("cg-inside" | "cg-nested")))
        .collect();
    assert!(
        leaked.is_empty(),
        "excluded events reached user space: {leaked:#?}"
    );
    // Exec, open and exit of each of the two (status refreshes every second).
    let filtered = wait_for(EVENT_TIMEOUT, || {
        let n = sensor_details(&s)["kernel_events_total_by_outcome"]["filtered_cgroup"].as_u64()?;
        (n >= 6).then_some(n)
    });
    assert!(
        filtered.is_some(),
        "the kernel counted what it dropped: {}",
        sensor_details(&s)["kernel_events_total_by_outcome"]
    );
    drop(nested);
}

#[test]
fn sensor_watch_asked_while_the_sensor_still_loads_waits_for_it() {
    require_root();
    // `start` returns as soon as the control socket answers; the sensor then
    // still needs a few hundred milliseconds to load. A `sensor watch` in
    // that window is held until the stage has registered it, not refused.
    let s = sensor_scratch("");
    let _d = s.start();
    let loading = status_json(&s)["stages"]["sensor"]["state"] == "starting";
    let mut w = Watch::start(&s);
    let dir = real(&s.path().to_string_lossy());
    let target = format!("{dir}/watched-after-start");
    std::fs::write(&target, b"x").unwrap();
    w.expect("the write made after the early watch started", |e| {
        str_at(e, "fd.name") == Some(target.as_str())
    });
    eprintln!("the sensor was still loading when the watch was asked: {loading}");
}

/// The first event of type `ty` by process `pid`, already seen or arriving.
fn of_child(w: &mut Watch, what: &str, ty: &str, pid: i32) -> serde_json::Value {
    let ty = ty.to_string();
    w.expect(what, move |e| {
        is_type(e, &[ty.as_str()]) && pid_of(e) == Some(i64::from(pid))
    })
}

#[test]
fn chmod_fchmod_and_fchmodat_carry_the_mode_and_the_file() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let dir = real(&s.path().to_string_lossy());
    let file = format!("{dir}/implant");
    std::fs::write(&file, b"#!/bin/sh\n").unwrap();
    let path = CString::new(file.clone()).unwrap();
    let rel = CString::new("implant").unwrap();
    let dirc = CString::new(dir.clone()).unwrap();
    let (pid, status) = in_child(|| {
        // SAFETY: raw syscalls on valid C strings in the forked child.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            libc::syscall(libc::SYS_chmod, path.as_ptr(), 0o4755);
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            libc::syscall(libc::SYS_fchmod, fd, 0o2750);
            let dfd = libc::open(dirc.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            libc::syscall(libc::SYS_fchmodat, dfd, rel.as_ptr(), 0o755);
        }
    });
    assert_eq!(status, 0);
    #[cfg(target_arch = "x86_64")]
    {
        let c = of_child(&mut w, "chmod", "chmod", pid);
        assert_eq!(str_at(&c, "evt.args.filename"), Some(file.as_str()));
        assert_eq!(i64_at(&c, "evt.args.mode"), Some(0o4755));
        assert_eq!(i64_at(&c, "evt.res"), Some(0));
    }
    let f = of_child(&mut w, "fchmod", "fchmod", pid);
    assert_eq!(str_at(&f, "fd.name"), Some(file.as_str()), "{f:#}");
    assert_eq!(i64_at(&f, "evt.args.mode"), Some(0o2750));
    let at_ = of_child(&mut w, "fchmodat", "fchmodat", pid);
    assert_eq!(
        str_at(&at_, "evt.args.filename"),
        Some(file.as_str()),
        "the relative path is resolved against the dirfd: {at_:#}"
    );
    assert_eq!(i64_at(&at_, "evt.args.mode"), Some(0o755));
}

#[test]
fn mkdir_mkdirat_and_rmdir_carry_absolute_paths() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let dir = real(&s.path().to_string_lossy());
    let hidden = format!("{dir}/.hidden-dir");
    let st = Command::new("/bin/mkdir")
        .args(["-m", "700", ".hidden-dir"])
        .current_dir(s.path())
        .status()
        .unwrap();
    assert!(st.success());
    let m = w.expect("mkdir of a hidden directory", |e| {
        is_type(e, &["mkdir", "mkdirat"]) && str_at(e, "evt.args.path") == Some(hidden.as_str())
    });
    assert_eq!(i64_at(&m, "evt.res"), Some(0));
    assert_eq!(str_at(&m, "proc.name"), Some("mkdir"));
    let st = Command::new("/bin/rmdir").arg(&hidden).status().unwrap();
    assert!(st.success());
    // rmdir(2) on x86_64; arm64 has only unlinkat(AT_REMOVEDIR).
    let r = w.expect("rmdir", |e| {
        is_type(e, &["rmdir", "unlinkat"])
            && str_at(e, "evt.args.path") == Some(hidden.as_str())
            && str_at(e, "proc.name") == Some("rmdir")
    });
    assert_eq!(i64_at(&r, "evt.res"), Some(0));
}

#[test]
fn a_failed_exec_is_seen_with_its_errno_from_the_unchanged_caller() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    // A file that is not executable: execve fails with EACCES.
    let target = s.path().join("not-executable");
    std::fs::write(&target, b"#!/bin/sh\n").unwrap();
    let path = CString::new(target.to_string_lossy().as_bytes()).unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let me = std::fs::read_link("/proc/self/exe").unwrap();
    let (pid, _) = in_child(|| {
        // SAFETY: valid pointers built before the fork; the exec fails and returns.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    });
    let e = of_child(&mut w, "the failed execve", "execve", pid);
    assert_eq!(i64_at(&e, "evt.res"), Some(-(libc::EACCES as i64)), "{e:#}");
    assert_eq!(
        str_at(&e, "evt.args.filename"),
        Some(target.to_string_lossy().as_ref())
    );
    assert_eq!(
        str_at(&e, "proc.exepath"),
        Some(me.to_string_lossy().as_ref()),
        "the caller's image did not change"
    );
}

#[test]
fn exec_events_carry_the_environment_namespace_ids_capabilities_and_inode() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let marker = format!("EA_MARK_{}", std::process::id());
    let out = Command::new("/bin/sh")
        .args(["-c", "exec /bin/true"])
        .env("GLIBC_TUNABLES", &marker)
        .status()
        .unwrap();
    assert!(out.success());
    let e = w.expect("exec of true with the marked environment", |e| {
        is_type(e, &["execve"])
            && str_at(e, "proc.name") == Some("true")
            && str_at(e, "proc.env").is_some_and(|env| env.contains(&marker))
    });
    let env = str_at(&e, "proc.env").unwrap();
    assert!(
        env.split(' ')
            .any(|v| v == format!("GLIBC_TUNABLES={marker}")),
        "{env}"
    );
    let pid = pid_of(&e).unwrap();
    assert_eq!(
        i64_at(&e, "proc.vpid"),
        Some(pid),
        "on the host vpid is the pid"
    );
    assert_eq!(
        i64_at(&e, "proc.sid"),
        Some(i64::from(unsafe { libc::getsid(0) }))
    );
    let sys_admin = 1i64 << 21;
    assert_ne!(i64_at(&e, "proc.cap_permitted").unwrap() & sys_admin, 0);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(real("/bin/true")).unwrap();
    assert_eq!(i64_at(&e, "proc.exe_ino"), Some(meta.ino() as i64));
    assert_eq!(
        i64_at(&e, "proc.exe_ino_ctime"),
        Some(meta.ctime() * 1_000_000_000 + meta.ctime_nsec())
    );
    assert_eq!(
        i64_at(&e, "proc.exe_ino_mtime"),
        Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
    );
}

#[test]
fn unshare_and_setns_carry_the_namespaces_and_the_callers_capabilities() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let ns = CString::new("/proc/self/ns/uts").unwrap();
    // An unprivileged process making itself a user namespace: before the
    // call it has no capability at all, after it every one.
    let (pid, status) = in_child(|| {
        // SAFETY: raw syscalls in the forked (single-threaded) child.
        unsafe {
            libc::setgid(65534);
            libc::setresuid(65534, 65534, 65534);
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                libc::_exit(3);
            }
        }
    });
    assert_eq!(status, 0, "unprivileged user namespaces are allowed here");
    let u = of_child(&mut w, "unshare", "unshare", pid);
    assert_eq!(
        i64_at(&u, "evt.args.flags"),
        Some(libc::CLONE_NEWUSER as i64)
    );
    assert_eq!(i64_at(&u, "evt.res"), Some(0));
    assert_eq!(i64_at(&u, "caps.permitted"), Some(0), "{u:#}");

    let (pid, status) = in_child(|| {
        // SAFETY: raw syscalls on a valid C string in the forked child.
        unsafe {
            let fd = libc::open(ns.as_ptr(), libc::O_RDONLY);
            libc::setns(fd, libc::CLONE_NEWUTS);
        }
    });
    assert_eq!(status, 0);
    let n = of_child(&mut w, "setns", "setns", pid);
    assert_eq!(
        i64_at(&n, "evt.args.nstype"),
        Some(libc::CLONE_NEWUTS as i64)
    );
    assert_eq!(i64_at(&n, "evt.res"), Some(0));
    assert_ne!(
        i64_at(&n, "caps.permitted").unwrap() & (1 << 21),
        0,
        "root's CAP_SYS_ADMIN"
    );
}

#[test]
fn bpf_program_loads_are_seen_and_map_reads_stay_in_the_kernel() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let filtered = |s: &Scratch| {
        sensor_details(s)["kernel_events_total_by_outcome"]["filtered_args"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = filtered(&s);
    // r0 = 0; exit: the smallest socket filter.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = CString::new("GPL").unwrap();
    let mut attr = [0u64; 16];
    attr[0] = 1 | (2 << 32); // prog_type SOCKET_FILTER, insn_cnt 2
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // SAFETY: bpf(BPF_PROG_LOAD) with an attr that outlives the call; the fd is closed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), 128) };
    assert!(fd >= 0, "BPF_PROG_LOAD failed");
    // A map and many lookups in it: the traffic of every BPF agent.
    let mut mattr = [0u32; 32];
    mattr[0] = 2; // BPF_MAP_TYPE_ARRAY
    mattr[1] = 4;
    mattr[2] = 4;
    mattr[3] = 1;
    // SAFETY: bpf(BPF_MAP_CREATE) with a valid attr.
    let map = unsafe { libc::syscall(libc::SYS_bpf, 0, mattr.as_mut_ptr(), 128) };
    assert!(map >= 0, "BPF_MAP_CREATE failed");
    let key = 0u32;
    let mut value = 0u32;
    for _ in 0..100 {
        let mut lattr = [0u64; 4];
        lattr[0] = map as u64;
        lattr[1] = &key as *const u32 as u64;
        lattr[2] = &mut value as *mut u32 as u64;
        // SAFETY: BPF_MAP_LOOKUP_ELEM with pointers valid for the call.
        unsafe { libc::syscall(libc::SYS_bpf, 1, lattr.as_mut_ptr(), 32) };
    }
    // SAFETY: closing the fds made above.
    unsafe {
        libc::close(fd as i32);
        libc::close(map as i32);
    }
    let me = std::process::id() as i64;
    let e = w.expect("BPF_PROG_LOAD", |e| {
        is_type(e, &["bpf"]) && pid_of(e) == Some(me) && i64_at(e, "evt.args.cmd") == Some(5)
    });
    assert_eq!(i64_at(&e, "evt.res"), Some(fd));
    w.expect("BPF_MAP_CREATE", |e| {
        is_type(e, &["bpf"]) && pid_of(e) == Some(me) && i64_at(e, "evt.args.cmd") == Some(0)
    });
    let grew = wait_for(Duration::from_secs(10), || {
        (filtered(&s) >= before + 100).then_some(())
    });
    assert!(grew.is_some(), "map lookups are counted as filtered_args");
    let lookups = w
        .collect(Duration::from_millis(500))
        .iter()
        .filter(|e| is_type(e, &["bpf"]) && i64_at(e, "evt.args.cmd") == Some(1))
        .count();
    assert_eq!(lookups, 0, "no map lookup reaches user space");
}

#[test]
fn userfaultfd_prctl_and_session_changes_are_seen() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let name = CString::new("kworker/0:7").unwrap();
    let (pid, status) = in_child(|| {
        // SAFETY: raw syscalls in the forked child; the buffer is its own.
        unsafe {
            libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC);
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            let mut buf = [0u8; 16];
            libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr());
            libc::setsid();
            libc::setpgid(0, 0);
        }
    });
    assert_eq!(status, 0);
    let u = of_child(&mut w, "userfaultfd", "userfaultfd", pid);
    assert!(i64_at(&u, "evt.res").unwrap() >= 0, "{u:#}");
    assert_eq!(i64_at(&u, "evt.args.flags"), Some(libc::O_CLOEXEC as i64));
    let p = of_child(&mut w, "prctl(PR_SET_NAME)", "prctl", pid);
    assert_eq!(
        i64_at(&p, "evt.args.option"),
        Some(libc::PR_SET_NAME as i64)
    );
    assert_eq!(str_at(&p, "evt.args.arg2_str"), Some("kworker/0:7"));
    assert_eq!(
        str_at(&p, "proc.name"),
        Some("kworker/0:7"),
        "the process shows its new name"
    );
    let sid = of_child(&mut w, "setsid", "setsid", pid);
    assert_eq!(i64_at(&sid, "evt.res"), Some(i64::from(pid)));
    assert_eq!(i64_at(&sid, "proc.sid"), Some(i64::from(pid)));
    assert_eq!(i64_at(&sid, "proc.pgid"), Some(i64::from(pid)));
    let all = w.collect(Duration::from_millis(500));
    let prctls = all
        .iter()
        .filter(|e| is_type(e, &["prctl"]) && pid_of(e) == Some(i64::from(pid)))
        .count();
    assert_eq!(prctls, 1, "PR_GET_NAME stays in the kernel");
}

#[test]
fn datagrams_are_seen_once_per_new_peer_and_listens_with_their_socket() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let me = std::process::id() as i64;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a1, a2) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    for _ in 0..20 {
        sender.send_to(b"x", a1).unwrap();
    }
    sender.send_to(b"y", a2).unwrap();
    let mut buf = [0u8; 8];
    for _ in 0..20 {
        first.recv_from(&mut buf).unwrap();
    }
    // A connected datagram socket names no new peer.
    let connected = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    connected.connect(a2).unwrap();
    connected.send(b"z").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lport = i64::from(listener.local_addr().unwrap().port());

    let to = |port: u16| {
        move |e: &serde_json::Value| {
            is_type(e, &["sendto", "sendmsg"])
                && pid_of(e) == Some(me)
                && str_at(e, "fd.remote").is_some_and(|r| r.ends_with(&format!(":{port}")))
        }
    };
    let first_send = w.expect("a datagram to the first peer", to(a1.port()));
    assert_eq!(str_at(&first_send, "fd.l4proto"), Some("udp"));
    assert_eq!(at(&first_send, "fd.connected"), false);
    assert_eq!(at(&first_send, "fd.name_changed"), true);
    w.expect("a datagram to the second peer", to(a2.port()));
    w.expect("a datagram received from the sender", |e| {
        is_type(e, &["recvfrom", "recvmsg"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.local") == Some(a1.to_string().as_str())
    });
    let l = w.expect("listen", |e| {
        is_type(e, &["listen"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.local").is_some_and(|a| a.ends_with(&format!(":{lport}")))
    });
    assert_eq!(
        i64_at(&l, "evt.args.fd"),
        Some(i64::from(listener.as_raw_fd()))
    );
    let seen = w.collect(Duration::from_millis(500));
    let sends_to_first = seen.iter().filter(|e| to(a1.port())(e)).count();
    assert_eq!(sends_to_first, 1, "20 datagrams to one peer are one event");
    let from_connected = seen
        .iter()
        .filter(|e| {
            is_type(e, &["sendto", "sendmsg"])
                && str_at(e, "fd.local")
                    == Some(connected.local_addr().unwrap().to_string().as_str())
        })
        .count();
    assert_eq!(
        from_connected, 0,
        "a connected socket's data stays in the kernel"
    );
}

#[test]
fn a_connection_to_an_address_the_node_resolved_is_named_after_the_host() {
    require_root();
    const NAME: &str = "pool.dns-test.example";
    let s = sensor_scratch("");
    let alerts = s.path().join("alerts.jsonl");
    let rules = s.path().join("dns.yaml");
    std::fs::write(
        &rules,
        format!(
            "- rule: Connection to the resolved test pool\n  desc: a connection to an address the node resolved {NAME} to\n  condition: evt.type = connect and fd.sip.name = {NAME}\n  output: connect to %fd.sip.name (%fd.sip) from port %fd.cport\n  priority: WARNING\n"
        ),
    )
    .unwrap();
    s.write_config(&format!(
        "[sensor]\nenabled = true\n[rules]\nfiles = [\"{}\"]\njson_file = \"{}\"\n",
        rules.display(),
        alerts.display()
    ));
    let d = start_with_sensor(&s);
    let mut w = Watch::start(&s);

    // The server and the address it gives out: loopback addresses of this
    // test's own (127/8 is all loopback), so that parallel tests differ.
    let tag = (std::process::id() % 200 + 20) as u8;
    let server_ip = std::net::Ipv4Addr::new(127, 53, tag, 1);
    let pool_ip = std::net::Ipv4Addr::new(127, 54, tag, 2);
    let pool = TcpListener::bind((pool_ip, 0)).unwrap();
    let pool_addr = pool.local_addr().unwrap();
    let server = DnsServer::start(server_ip, &[(NAME, pool_ip)]);

    // Before the node resolved the name, the address has no name.
    let (before, unnamed) = connect_seen(&mut w, pool_addr, "before the name was resolved");
    assert!(at(&unnamed, "fd.remote_names").is_null(), "{unnamed:#}");

    // glibc's own resolver (getent), in a mount namespace whose
    // resolv.conf names the test server; the node's own stays untouched.
    let resolv = s.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {server_ip}\noptions timeout:2 attempts:2\n"),
    )
    .unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec getent ahostsv4 {NAME}",
            resolv.display()
        ))
        .output()
        .unwrap();
    drop(server);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&pool_ip.to_string()),
        "getent resolved the name through the test server: {out:?}"
    );

    // A program then connects to the address it was given.
    let (after, named) = connect_seen(&mut w, pool_addr, "after the name was resolved");
    let after_port = after.local_addr().unwrap().port();
    assert_eq!(at(&named, "fd.remote_names"), &serde_json::json!([NAME]));

    let alert = wait_for(EVENT_TIMEOUT, || {
        std::fs::read_to_string(&alerts)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["rule"] == "Connection to the resolved test pool")
    })
    .unwrap_or_else(|| panic!("no alert; log:\n{}", d.log()));
    assert_eq!(alert["output_fields"]["fd.sip.name"], NAME, "{alert:#}");
    assert_eq!(
        alert["output_fields"]["fd.cport"],
        i64::from(after_port),
        "the alert is for the connect after the lookup, not the one before: {alert:#}"
    );
    // Status is refreshed on the stage's tick, not per event: wait for it.
    let learned = wait_for(EVENT_TIMEOUT, || {
        (sensor_details(&s)["dns_answers_total"].as_u64() >= Some(1)).then_some(())
    });
    assert!(learned.is_some(), "{}", sensor_details(&s));
    drop((before, after, pool));
}

/// Connect to `to` and return the stream with its connect event. Every
/// test's daemon sees every event on the machine, so a burst from a
/// parallel test can fill this daemon's ring buffer and drop an event: the
/// connect is retried from a new port only when the daemon counted such a
/// loss meanwhile; otherwise a missing event fails the test.
fn connect_seen(
    w: &mut Watch,
    to: std::net::SocketAddr,
    what: &str,
) -> (TcpStream, serde_json::Value) {
    loop {
        let lost = w.kernel_lost();
        let stream = TcpStream::connect(to).unwrap();
        let port = stream.local_addr().unwrap().port();
        let is_it = |e: &serde_json::Value| {
            is_type(e, &["connect"])
                && str_at(e, "fd.local").is_some_and(|l| l.ends_with(&format!(":{port}")))
        };
        if let Some(e) = w.wait(Duration::from_secs(5), is_it) {
            return (stream, e);
        }
        if w.kernel_lost() == lost {
            let e = w.expect(&format!("the connect {what}"), is_it);
            return (stream, e);
        }
        eprintln!("the connect {what} was lost with other kernel events; connecting again");
    }
}

#[test]
fn setpgid_and_datagrams_by_sendmsg_and_recvmsg_carry_their_arguments() {
    require_root();
    let s = scratch_watched();
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    // A child that is not a session leader makes itself a group leader.
    let (pid, status) = in_child(|| {
        // SAFETY: a raw syscall in the forked child.
        unsafe { libc::setpgid(0, 0) };
    });
    assert_eq!(status, 0);
    let g = of_child(&mut w, "setpgid", "setpgid", pid);
    assert_eq!(i64_at(&g, "evt.res"), Some(0), "{g:#}");
    assert_eq!(i64_at(&g, "evt.args.pid"), Some(0));
    assert_eq!(i64_at(&g, "evt.args.pgid"), Some(0));
    assert_eq!(
        i64_at(&g, "proc.vpgid"),
        Some(i64::from(pid)),
        "the process leads its new group: {g:#}"
    );

    // sendmsg and recvmsg with an address, as resolvers and QUIC stacks do.
    let me = std::process::id() as i64;
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (la, lb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let sockaddr = |addr: std::net::SocketAddr| {
        let std::net::SocketAddr::V4(v4) = addr else {
            unreachable!()
        };
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    };
    let mut to = sockaddr(lb);
    let mut from = sockaddr(la);
    let mut data = *b"msg";
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the calls.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut to).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: msg points at live buffers; the fds are open sockets.
    let sent = unsafe { libc::sendmsg(a.as_raw_fd(), &msg, 0) };
    assert_eq!(sent, 3);
    msg.msg_name = (&raw mut from).cast();
    // SAFETY: as above; recvmsg fills `from` and `data`.
    let got = unsafe { libc::recvmsg(b.as_raw_fd(), &mut msg, 0) };
    assert_eq!(got, 3);

    let out = w.expect("sendmsg to the second socket", |e| {
        is_type(e, &["sendmsg"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.remote") == Some(lb.to_string().as_str())
    });
    assert_eq!(str_at(&out, "fd.local"), Some(la.to_string().as_str()));
    assert_eq!(str_at(&out, "fd.l4proto"), Some("udp"));
    assert_eq!(i64_at(&out, "evt.res"), Some(3));
    assert_eq!(i64_at(&out, "evt.args.fd"), Some(i64::from(a.as_raw_fd())));
    let inb = w.expect("recvmsg from the first socket", |e| {
        is_type(e, &["recvmsg"])
            && pid_of(e) == Some(me)
            && str_at(e, "fd.local") == Some(lb.to_string().as_str())
    });
    assert_eq!(str_at(&inb, "fd.remote"), Some(la.to_string().as_str()));
    assert_eq!(i64_at(&inb, "evt.res"), Some(3));
    assert_eq!(at(&inb, "fd.name_changed"), true);
}
