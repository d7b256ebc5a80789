//! Collectors against real files: copies of the fixture trees under
//! `agent/tests/fixtures/metrics/` (a Raspberry Pi-like K3s server with
//! thermal sensors, PSI, conntrack and IPVS; a VM with none of those),
//! mutated between collections the way a live node changes.

use std::collections::BTreeSet;
use std::path::Path;

use super::collectors::{CollectorId, Host, Outcome};
use super::family::Snapshot;
use super::source::Roots;

fn fixture(name: &str) -> (tempfile::TempDir, Roots) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let dir = tempfile::Builder::new()
        .prefix("ea-metrics-")
        .tempdir()
        .unwrap();
    copy_tree(&src, dir.path());
    let roots = Roots {
        procfs: dir.path().join("proc"),
        sysfs: dir.path().join("sys"),
        rootfs: dir.path().join("root"),
    };
    (dir, roots)
}

/// Copy a directory tree, keeping symlinks as symlinks (sysfs is made of them).
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        let ty = entry.file_type().unwrap();
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &to).unwrap();
        } else if ty.is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

fn collect(host: &mut Host) -> (Snapshot, Vec<Outcome>) {
    let mut snap = Snapshot::new();
    let outcomes = host.collect(&CollectorId::ALL, &mut snap);
    (snap, outcomes)
}

fn labels_of(snap: &Snapshot, family: &str, label: usize) -> BTreeSet<String> {
    snap.get(family)
        .map(|f| f.samples.iter().map(|s| s.labels[label].clone()).collect())
        .unwrap_or_default()
}

fn assert_all_succeeded(outcomes: &[Outcome]) {
    for o in outcomes {
        assert!(
            o.error.is_none(),
            "{} failed: {:?}",
            o.collector.name(),
            o.error
        );
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_edge_node_yields_node_exporter_series_with_node_exporter_units() {
    let (_dir, roots) = fixture("edge-node");
    let mut host = Host::new(roots);
    let (s, outcomes) = collect(&mut host);
    assert_all_succeeded(&outcomes);
    let v = |name: &str, labels: &[&str]| {
        s.value(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing"))
    };

    assert_eq!(v("node_cpu_seconds_total", &["0", "user"]), 13932.8);
    assert_eq!(v("node_cpu_seconds_total", &["3", "softirq"]), 10.57);
    assert_eq!(
        s.get("node_cpu_seconds_total").unwrap().samples.len(),
        4 * 8
    );
    assert_eq!(v("node_cpu_guest_seconds_total", &["0", "user"]), 239.33);
    assert_eq!(v("node_boot_time_seconds", &[]), 1.7e9);
    assert_eq!(v("node_context_switches_total", &[]), 38014093.0);
    assert_eq!(v("node_forks_total", &[]), 26442.0);
    assert_eq!(v("node_procs_blocked", &[]), 1.0);
    assert_eq!(v("node_load1", &[]), 0.42);
    assert_eq!(v("node_load15", &[]), 0.31);
    assert_eq!(v("node_memory_MemTotal_bytes", &[]), 3881880.0 * 1024.0);
    assert_eq!(v("node_memory_Active_anon_bytes", &[]), 612004.0 * 1024.0);
    assert_eq!(v("node_memory_SwapFree_bytes", &[]), 98300.0 * 1024.0);
    assert_eq!(v("node_memory_HugePages_Total", &[]), 0.0);
    assert_eq!(v("node_filefd_allocated", &[]), 2112.0);
    assert_eq!(v("node_filefd_maximum", &[]), 379123.0);

    // Real mounts only: pseudo filesystems, pod volumes and container
    // rootfs mounts are left out; /data is in the table but gone.
    assert_eq!(
        labels_of(&s, "node_filesystem_size_bytes", 2),
        set(&["/", "/boot/firmware", "/run", "/mnt/usb data"])
    );
    assert_eq!(
        v(
            "node_filesystem_readonly",
            &["/dev/mmcblk0p1", "vfat", "/boot/firmware"]
        ),
        1.0
    );
    assert_eq!(
        v("node_filesystem_readonly", &["/dev/mmcblk0p2", "ext4", "/"]),
        0.0
    );
    assert_eq!(
        v(
            "node_filesystem_device_error",
            &["/dev/sda1", "ext4", "/mnt/usb data"]
        ),
        0.0
    );
    assert!(
        v(
            "node_filesystem_size_bytes",
            &["/dev/mmcblk0p2", "ext4", "/"]
        ) > 0.0
    );
    assert!(v("node_filesystem_files", &["tmpfs", "tmpfs", "/run"]) > 0.0);

    assert_eq!(
        labels_of(&s, "node_disk_reads_completed_total", 0),
        set(&["mmcblk0", "sda", "zram0"])
    );
    assert_eq!(
        v("node_disk_read_bytes_total", &["mmcblk0"]),
        3210242.0 * 512.0
    );
    assert_eq!(
        v("node_disk_write_time_seconds_total", &["mmcblk0"]),
        812.345
    );
    assert_eq!(v("node_disk_io_now", &["sda"]), 1.0);

    assert_eq!(
        labels_of(&s, "node_network_receive_bytes_total", 0),
        set(&["lo", "eth0", "wlan0", "cni0", "flannel.1", "veth1a2b3c4d"])
    );
    assert_eq!(
        v("node_network_receive_bytes_total", &["eth0"]),
        912345678.0
    );
    assert_eq!(v("node_network_receive_multicast_total", &["eth0"]), 4312.0);
    assert_eq!(v("node_network_transmit_drop_total", &["flannel.1"]), 7.0);
    assert_eq!(v("node_network_receive_errs_total", &["wlan0"]), 1.0);

    assert_eq!(v("node_nf_conntrack_entries", &[]), 212.0);
    assert_eq!(v("node_nf_conntrack_entries_limit", &[]), 65536.0);
    assert_eq!(v("node_ipvs_connections_total", &[]), 420.0);
    assert_eq!(v("node_ipvs_incoming_bytes_total", &[]), 100000.0);
    assert_eq!(v("node_ipvs_outgoing_packets_total", &[]), 992.0);

    assert_eq!(
        v("node_pressure_cpu_waiting_seconds_total", &[]),
        123.456789
    );
    assert_eq!(v("node_pressure_cpu_stalled_seconds_total", &[]), 0.0);
    assert_eq!(v("node_pressure_io_stalled_seconds_total", &[]), 4.56789);
    assert_eq!(v("node_pressure_memory_waiting_seconds_total", &[]), 1.5);
    assert!(s.get("node_pressure_irq_stalled_seconds_total").is_none());

    assert_eq!(v("node_thermal_zone_temp", &["cpu-thermal", "0"]), 52.582);
    assert_eq!(
        s.get("node_thermal_zone_temp").unwrap().samples.len(),
        1,
        "cooling devices are not zones"
    );
    assert_eq!(
        v(
            "node_hwmon_temp_celsius",
            &["thermal_thermal_zone0", "temp1"]
        ),
        52.582
    );
    assert_eq!(
        v("node_hwmon_temp_celsius", &["i2c_1_1_0048", "temp1"]),
        41.25
    );
    assert_eq!(
        v("node_hwmon_temp_max_celsius", &["i2c_1_1_0048", "temp1"]),
        80.0
    );
    assert_eq!(
        v("node_hwmon_temp_crit_celsius", &["i2c_1_1_0048", "temp1"]),
        95.0
    );
    assert_eq!(v("node_hwmon_chip_names", &["i2c_1_1_0048", "tmp102"]), 1.0);
    assert_eq!(
        v(
            "node_hwmon_sensor_label",
            &["i2c_1_1_0048", "Board Temp", "temp1"]
        ),
        1.0
    );

    assert_eq!(v("edge_agent_process_up", &["k3s"]), 1.0);
    assert_eq!(
        v("edge_agent_process_up", &["containerd"]),
        1.0,
        "the shim is not containerd"
    );
    assert_eq!(
        v("edge_agent_process_up", &["edge-agent"]),
        0.0,
        "the fixture has no /proc/self"
    );
    let page = super::source::SysConf::get().page_size;
    assert_eq!(
        v("edge_agent_process_resident_memory_bytes", &["k3s"]),
        61440.0 * page
    );
    assert_eq!(v("edge_agent_process_cpu_seconds_total", &["k3s"]), 1690.0);
    assert_eq!(v("edge_agent_process_threads", &["k3s"]), 97.0);
    assert_eq!(v("edge_agent_process_open_fds", &["k3s"]), 5.0);
    assert_eq!(v("edge_agent_process_open_fds", &["containerd"]), 3.0);
    assert_eq!(
        v("edge_agent_process_start_time_seconds", &["k3s"]),
        1.7e9 + 15.0
    );
    assert_eq!(v("edge_agent_process_restarts_total", &["k3s"]), 0.0);
}

#[test]
fn a_vm_without_psi_sensors_conntrack_or_ipvs_has_none_of_those_series_and_no_errors() {
    let (_dir, roots) = fixture("vm-node");
    let mut host = Host::new(roots);
    let (s, outcomes) = collect(&mut host);
    assert_all_succeeded(&outcomes);
    for f in &s.families {
        let absent = f.name.starts_with("node_pressure_")
            || f.name.starts_with("node_thermal_")
            || f.name.starts_with("node_hwmon_")
            || f.name.starts_with("node_nf_conntrack")
            || f.name.starts_with("node_ipvs_");
        assert!(
            !absent || f.samples.is_empty(),
            "{} should be absent",
            f.name
        );
    }
    assert!(s.value("node_memory_MemTotal_bytes", &[]).is_some());
    assert_eq!(s.value("edge_agent_process_up", &["k3s"]), Some(0.0));
}

#[test]
fn interfaces_that_appear_and_vanish_between_collections_are_followed() {
    let (dir, roots) = fixture("edge-node");
    let mut host = Host::new(roots);
    let (before, _) = collect(&mut host);
    assert!(labels_of(&before, "node_network_receive_bytes_total", 0).contains("wlan0"));

    // The WiFi dongle is unplugged and a USB modem is plugged in.
    let path = dir.path().join("proc/net/dev");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("wlan0:"))
        .map(String::from)
        .collect();
    lines.push("  usb0:  4096  32  0  0  0  0  0  0  2048  16  0  0  0  0  0  0".into());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let (after, outcomes) = collect(&mut host);
    assert_all_succeeded(&outcomes);
    let devices = labels_of(&after, "node_network_receive_bytes_total", 0);
    assert!(!devices.contains("wlan0"), "{devices:?}");
    assert_eq!(
        after.value("node_network_receive_bytes_total", &["usb0"]),
        Some(4096.0)
    );
    assert_eq!(
        after.value("node_network_transmit_packets_total", &["usb0"]),
        Some(16.0)
    );
}

#[test]
fn a_mount_that_vanishes_between_table_and_statvfs_is_left_out_and_the_rest_reported() {
    let (dir, roots) = fixture("edge-node");
    let mut host = Host::new(roots);
    let (before, _) = collect(&mut host);
    assert!(labels_of(&before, "node_filesystem_size_bytes", 2).contains("/mnt/usb data"));
    // /data is in the mount table but not on disk: already the mid-scrape case.
    assert!(!labels_of(&before, "node_filesystem_readonly", 2).contains("/data"));

    std::fs::remove_dir_all(dir.path().join("root/mnt/usb data")).unwrap();
    let (after, outcomes) = collect(&mut host);
    assert_all_succeeded(&outcomes);
    for family in [
        "node_filesystem_size_bytes",
        "node_filesystem_readonly",
        "node_filesystem_device_error",
    ] {
        assert_eq!(
            labels_of(&after, family, 2),
            set(&["/", "/boot/firmware", "/run"]),
            "{family}"
        );
    }
}

#[test]
fn a_restarted_k3s_is_counted_once_and_an_absent_one_is_down() {
    let (dir, roots) = fixture("edge-node");
    let proc = dir.path().join("proc");
    let mut host = Host::new(roots);
    collect(&mut host);

    // K3s restarts: pid 812 is gone, pid 905 is k3s-server started later.
    let stat = std::fs::read_to_string(proc.join("812/stat")).unwrap();
    std::fs::remove_dir_all(proc.join("812")).unwrap();
    std::fs::create_dir_all(proc.join("905")).unwrap();
    let restarted = stat
        .replacen("812 (", "905 (", 1)
        .replace(" 97 0 1500 ", " 41 0 88000 ");
    std::fs::write(proc.join("905/stat"), restarted).unwrap();
    for _ in 0..2 {
        let (s, _) = collect(&mut host);
        assert_eq!(
            s.value("edge_agent_process_restarts_total", &["k3s"]),
            Some(1.0)
        );
        assert_eq!(s.value("edge_agent_process_up", &["k3s"]), Some(1.0));
        assert_eq!(s.value("edge_agent_process_threads", &["k3s"]), Some(41.0));
        assert_eq!(
            s.value("edge_agent_process_open_fds", &["k3s"]),
            None,
            "pid 905 has no fd dir here"
        );
    }

    std::fs::remove_dir_all(proc.join("905")).unwrap();
    let (s, _) = collect(&mut host);
    assert_eq!(s.value("edge_agent_process_up", &["k3s"]), Some(0.0));
    assert_eq!(
        s.value("edge_agent_process_restarts_total", &["k3s"]),
        Some(1.0)
    );
    assert_eq!(s.value("edge_agent_process_threads", &["k3s"]), None);
}

#[test]
fn a_malformed_file_fails_only_its_collector_and_names_the_file() {
    let (dir, roots) = fixture("edge-node");
    std::fs::write(dir.path().join("proc/loadavg"), "not numbers\n").unwrap();
    let mut host = Host::new(roots);
    let (s, outcomes) = collect(&mut host);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].collector, CollectorId::Loadavg);
    let err = failed[0].error.as_deref().unwrap();
    assert!(err.contains("proc/loadavg") && err.contains("not"), "{err}");
    assert!(
        s.get("node_load1").is_none(),
        "no partial series from a failed collector"
    );
    assert!(s.get("node_cpu_seconds_total").is_some());
}

#[test]
fn mount_points_from_the_table_cannot_leave_the_root_prefix() {
    let (dir, roots) = fixture("edge-node");
    let root = dir.path().join("root");
    assert_eq!(roots.under_root("/../../etc"), root.join("etc"));
    assert_eq!(roots.under_root("/mnt/./../x"), root.join("mnt/x"));
    assert_eq!(roots.under_root("/"), root);
}
