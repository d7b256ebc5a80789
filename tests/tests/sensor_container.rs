//! Container enrichment against a real runc container: the test starts its
//! own containerd (root, state and socket in a temp dir) and runs a busybox
//! container in a Kubernetes-style cgroup, with the CRI annotations a
//! kubelet would have containerd write into the task bundle. Only the
//! kubelet is absent. Needs root, containerd, runc and busybox-static.

use edge_agent_tests::sensor::{
    Containerd, Watch, at, i64_at, is_type, sensor_details, start_with_sensor, str_at,
};
use edge_agent_tests::{Scratch, require_root, wait_for};

#[test]
fn processes_in_a_kubernetes_container_carry_its_pod_image_mounts_and_users() {
    require_root();
    let mut ctrd = Containerd::start();
    let rootfs = ctrd.busybox_rootfs();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{:064x}", nanos ^ (u128::from(std::process::id()) << 64));
    let pod_uid = format!("6f1b7a36-7c8e-4a8f-9b41-{:012x}", nanos & 0xffff_ffff_ffff);
    let cgroup = format!("/kubepods/besteffort/pod{pod_uid}/{id}");

    let s = Scratch::new(&format!(
        "[sensor]\nenabled = true\nwatch_open_prefixes = [\"/etc\"]\nruntime_state_dirs = [\"{}\"]\n",
        ctrd.task_state_dir().display()
    ));
    let _d = start_with_sensor(&s);
    let mut w = Watch::start(&s);

    let out = ctrd.run(
        &rootfs,
        &id,
        &cgroup,
        &[
            ("io.kubernetes.cri.sandbox-name", "web-7d9f"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.container-name", "web"),
            ("io.kubernetes.cri.image-name", "docker.io/library/busybox:1.36"),
        ],
        "echo hi > /tmp/in-container; su -s /bin/sh appuser -c 'touch /tmp/as-app'; cat /etc/passwd > /dev/null",
    );
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}\ncontainerd log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        ctrd.log()
    );

    let short = &id[..12];
    let exec = w.expect("the container's shell", |e| {
        is_type(e, &["execve"]) && str_at(e, "container.id") == Some(short)
    });
    assert_eq!(str_at(&exec, "container.full_id"), Some(id.as_str()));
    assert_eq!(str_at(&exec, "container.name"), Some("web"));
    assert_eq!(str_at(&exec, "container.pod_name"), Some("web-7d9f"));
    assert_eq!(str_at(&exec, "container.pod_namespace"), Some("shop"));
    assert_eq!(str_at(&exec, "container.pod_uid"), Some(pod_uid.as_str()));
    assert_eq!(
        str_at(&exec, "container.image_repository"),
        Some("docker.io/library/busybox")
    );
    assert_eq!(str_at(&exec, "container.image_tag"), Some("1.36"));
    assert_eq!(at(&exec, "container.privileged"), false, "{exec:#}");
    let mounts: Vec<&str> = at(&exec, "container.mounts")
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["dest"].as_str())
        .collect();
    assert!(mounts.contains(&"/proc"), "{mounts:?}");
    // Paths are the container's, not the host's view of its rootfs.
    assert_eq!(
        str_at(&exec, "proc.exepath"),
        Some("/bin/busybox"),
        "{exec:#}"
    );
    assert!(i64_at(&exec, "container.start_ts").unwrap() > 0);
    // The container's first process is pid 1 in its own pid namespace.
    let init = w.expect("the container's first exec", |e| {
        is_type(e, &["execve"])
            && str_at(e, "container.id") == Some(short)
            && str_at(e, "proc.cmdline").is_some_and(|c| c.starts_with("sh -c echo hi"))
    });
    assert_eq!(i64_at(&init, "proc.vpid"), Some(1), "{init:#}");
    assert_ne!(i64_at(&init, "proc.pid"), Some(1));

    let open = w.expect("a write inside the container", |e| {
        str_at(e, "fd.name") == Some("/tmp/in-container")
            && str_at(e, "container.id") == Some(short)
    });
    assert_eq!(str_at(&open, "container.pod_name"), Some("web-7d9f"));
    assert_eq!(str_at(&open, "user.name"), Some("root"));

    let app = w.expect("a file touched by the container's own user", |e| {
        str_at(e, "fd.name") == Some("/tmp/as-app") && str_at(e, "container.id") == Some(short)
    });
    assert_eq!(i64_at(&app, "user.uid"), Some(1234));
    assert_eq!(
        str_at(&app, "user.name"),
        Some("appuser"),
        "names come from the container's /etc/passwd: {app:#}"
    );

    // Host processes stay on the host.
    let host = w.expect("a host event", |e| {
        str_at(e, "container.id") == Some("host")
    });
    assert!(at(&host, "container.pod_name").is_null());

    let known = wait_for(std::time::Duration::from_secs(10), || {
        (sensor_details(&s)["containers_known"].as_u64()? >= 1).then_some(())
    });
    assert!(
        known.is_some(),
        "status counts the container: {}",
        sensor_details(&s)
    );
}
