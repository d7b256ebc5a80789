//! Container files that are traps: a container chooses its own
//! `/etc/passwd` and `/etc/group`, and the sensor reads them as root. Real
//! runc containers under a containerd of the test's own; a binary of its
//! own so that no other container test runs beside it. Needs root,
//! containerd, runc and busybox-static.

use edge_agent_tests::sensor::{
    Containerd, Watch, at, i64_at, sensor_details, start_with_sensor, str_at,
};
use edge_agent_tests::{Scratch, require_root};

/// A container chooses its own `/etc/passwd` and `/etc/group`; the sensor
/// reads them as root. Each trap here would have exhausted memory, stalled
/// the sensor or read a host file with a plain read; now each container's
/// events simply carry no names, the sensor keeps going, and a normal
/// container after them still gets its names.
#[test]
fn container_user_files_that_are_traps_give_no_names_and_never_stall_or_escape() {
    require_root();
    let mut ctrd = Containerd::start();
    // A file on the host that an absolute symlink in a container names.
    let host = tempfile::Builder::new()
        .prefix("ea-host-")
        .tempdir_in("/tmp")
        .unwrap();
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, "hostroot:x:0:0::/:/bin/sh\n").unwrap();
    let host_group = host.path().join("group");
    std::fs::write(&host_group, "hostgroup:x:0:\n").unwrap();

    let traps: [Trap<'_>; 4] = [
        ("zero", &|etc| {
            // /etc/passwd -> /dev/zero, and the rootfs has that device.
            let dev = etc.parent().unwrap().join("dev/zero");
            sh(std::process::Command::new("mknod")
                .arg(&dev)
                .args(["c", "1", "5"]));
            for f in ["passwd", "group"] {
                std::os::unix::fs::symlink("/dev/zero", etc.join(f)).unwrap();
            }
        }),
        ("host", &|etc| {
            std::os::unix::fs::symlink(&host_passwd, etc.join("passwd")).unwrap();
            std::os::unix::fs::symlink(&host_group, etc.join("group")).unwrap();
        }),
        ("fifo", &|etc| {
            for f in ["passwd", "group"] {
                sh(std::process::Command::new("mkfifo").arg(etc.join(f)));
            }
        }),
        ("huge", &|etc| {
            for f in ["passwd", "group"] {
                let mut file = std::fs::File::create(etc.join(f)).unwrap();
                std::io::Write::write_all(&mut file, b"huge:x:0:0::/:/bin/sh\n").unwrap();
                file.set_len(8 << 30).unwrap();
            }
        }),
    ];
    let mut rootfs = Vec::new();
    for (name, make) in &traps {
        let r = ctrd.busybox_rootfs_at(name);
        let etc = r.join("etc");
        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::fs::remove_file(etc.join("group")).unwrap();
        make(&etc);
        rootfs.push((*name, r));
    }
    let normal = ctrd.busybox_rootfs();
    let good_etc = normal.join("etc");

    let s = Scratch::new(&format!(
        "[sensor]\nenabled = true\nruntime_state_dirs = [\"{}\"]\n",
        ctrd.task_state_dir().display()
    ));
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut run = |name: &str, root: &std::path::Path, n: u128| {
        let id = format!("{n:02x}{stamp:062x}");
        let cgroup = format!(
            "/kubepods/besteffort/pod6f1b7a36-7c8e-4a8f-9b41-{:012x}/{id}",
            n
        );
        // runc itself reads the container's /etc/passwd as it starts it
        // (and would hang on the FIFO): inside the container a good /etc is
        // bind-mounted over the trapped one, which only the host's view of
        // the rootfs (what the sensor reads) still shows.
        let bind = format!(
            "type=bind,src={},dst=/etc,options=rbind:ro",
            good_etc.display()
        );
        let mount = ["--mount", bind.as_str()];
        let out = ctrd.run_with(
            root,
            &id,
            &cgroup,
            &[],
            &mount,
            &format!("touch /tmp/trap-{name}"),
        );
        assert!(
            out.status.success(),
            "ctr run {name}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            ctrd.log()
        );
        id[..12].to_string()
    };
    for (n, (name, root)) in rootfs.iter().enumerate() {
        let short = run(name, root, n as u128 + 1);
        let path = format!("/tmp/trap-{name}");
        let e = w.expect(&format!("the {name} container's write"), |e| {
            str_at(e, "fd.name") == Some(path.as_str())
                && str_at(e, "container.id") == Some(short.as_str())
        });
        assert_eq!(i64_at(&e, "user.uid"), Some(0));
        assert!(
            at(&e, "user.name").is_null(),
            "{name}: names from a trap: {e:#}"
        );
        assert!(
            at(&e, "user.group").is_null(),
            "{name}: group from a trap: {e:#}"
        );
    }
    // The sensor is not stuck and still reads a well-made container's names.
    let short = run("normal", &normal, 9);
    let e = w.expect("the normal container's write", |e| {
        str_at(e, "fd.name") == Some("/tmp/trap-normal")
            && str_at(e, "container.id") == Some(short.as_str())
    });
    assert_eq!(str_at(&e, "user.name"), Some("root"), "{e:#}");
    assert_eq!(sensor_details(&s)["decode_errors_total"], 0);
}

fn sh(cmd: &mut std::process::Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}: {st}");
}

/// A trap's name and what it does to a rootfs's etc/ directory.
type Trap<'a> = (&'a str, &'a dyn Fn(&std::path::Path));
