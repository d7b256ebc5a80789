//! Filesystems and block devices: node_exporter's `filesystem` and
//! `diskstats` collectors, with the same names, labels and units.
//!
//! Filesystems come from the mount table of PID 1 (the host's, even when the
//! agent runs with a private mount namespace, as node_exporter does), minus
//! pseudo filesystems and the per-container mounts a K3s node has by the
//! hundred. `statvfs` runs on a helper thread with a deadline, because a
//! dead NFS server or a failing disk makes it hang; a mount that hung is
//! reported as `node_filesystem_device_error 1` and not asked again until
//! its old call returns, so one stuck mount never stops a collection.
//!
//! Never writes and never follows a mount point outside the root prefix.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, is_absent, parse_u64};

use super::Host;

/// Filesystem types that hold no user data (node_exporter's default
/// `--collector.filesystem.fs-types-exclude`).
const PSEUDO_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mount points left out: node_exporter's defaults (`/dev`, `/proc`, `/sys`,
/// systemd credentials, container storage) plus what a K3s node mounts per
/// pod and per container (projected volumes under `/var/lib/kubelet/pods`,
/// rootfs and shm mounts under `/run/k3s` and `/run/containerd`, network
/// namespaces) — hundreds of short-lived series that belong to the
/// cluster's own monitoring, not the node's.
static IGNORED_MOUNT_POINTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^/(dev|proc|sys|run/credentials/.+|run/k3s|run/containerd|run/netns|var/lib/docker/.+|var/lib/containers/storage/.+|var/lib/kubelet/pods/.+|var/lib/rancher/k3s/agent/containerd/.+)($|/)",
    )
    .expect("mount point pattern")
});

/// How long one `statvfs` may take. Local filesystems answer in
/// microseconds; a network filesystem whose server is gone blocks for
/// minutes. Five seconds is what node_exporter allows
/// (`--collector.filesystem.mount-timeout`).
const STATFS_TIMEOUT: Duration = Duration::from_secs(5);

/// Mount points whose `statvfs` has not returned yet, shared with the
/// helper threads that remove them when it finally does.
#[derive(Debug, Default)]
pub(crate) struct StatfsGuard {
    pending: Arc<Mutex<HashSet<PathBuf>>>,
}

impl StatfsGuard {
    /// How many mount points are currently stuck.
    pub(crate) fn stuck(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }
}

struct Mount {
    device: String,
    mountpoint: String,
    fstype: String,
    readonly: bool,
}

/// What `statvfs` said about one mount.
enum FsStat {
    Ok(nix::sys::statvfs::Statvfs),
    /// The mount point vanished (unmounted between reading the table and
    /// asking): no series at all, as if it had not been in the table.
    Gone,
    Failed,
}

pub(super) fn filesystem(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let mounts = read_mounts(host)?;
    // Ask about every mount at once, so N stuck mounts cost one timeout, not N.
    let deadline = Instant::now() + STATFS_TIMEOUT;
    let pending: Vec<_> = mounts
        .iter()
        .map(|m| start_statfs(&host.statfs, host.roots.under_root(&m.mountpoint)))
        .collect();
    let stats: Vec<FsStat> = pending
        .into_iter()
        .map(|p| match p {
            None => FsStat::Failed,
            Some(rx) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Ok(st)) => FsStat::Ok(st),
                    Ok(Err(e)) if is_absent(&std::io::Error::from(e)) => FsStat::Gone,
                    Ok(Err(_)) | Err(_) => FsStat::Failed,
                }
            }
        })
        .collect();

    const LABELS: &[&str] = &["device", "fstype", "mountpoint"];
    let fields: [(&str, &str); 5] = [
        ("node_filesystem_size_bytes", "Filesystem size in bytes."),
        (
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
        ),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
        ),
        ("node_filesystem_files", "Filesystem total file nodes."),
        (
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
        ),
    ];
    for (name, help) in fields {
        let family = out.family(name, help, Kind::Gauge, LABELS);
        for (m, st) in mounts.iter().zip(&stats) {
            let FsStat::Ok(st) = st else { continue };
            let frsize = st.fragment_size() as f64;
            let value = match name {
                "node_filesystem_size_bytes" => st.blocks() as f64 * frsize,
                "node_filesystem_free_bytes" => st.blocks_free() as f64 * frsize,
                "node_filesystem_avail_bytes" => st.blocks_available() as f64 * frsize,
                "node_filesystem_files" => st.files() as f64,
                _ => st.files_free() as f64,
            };
            family.push(&[&m.device, &m.fstype, &m.mountpoint], value);
        }
    }
    let readonly = out.family(
        "node_filesystem_readonly",
        "Filesystem read-only status.",
        Kind::Gauge,
        LABELS,
    );
    for (m, st) in mounts.iter().zip(&stats) {
        if !matches!(st, FsStat::Gone) {
            readonly.push(
                &[&m.device, &m.fstype, &m.mountpoint],
                f64::from(u8::from(m.readonly)),
            );
        }
    }
    let errors = out.family(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        Kind::Gauge,
        LABELS,
    );
    for (m, st) in mounts.iter().zip(&stats) {
        let value = match st {
            FsStat::Ok(_) => 0.0,
            FsStat::Failed => 1.0,
            FsStat::Gone => continue,
        };
        errors.push(&[&m.device, &m.fstype, &m.mountpoint], value);
    }
    Ok(())
}

type StatfsReply = std::sync::mpsc::Receiver<nix::Result<nix::sys::statvfs::Statvfs>>;

/// Start `statvfs(path)` on a helper thread. `None` when an earlier call on
/// the same path has not returned yet (the mount is stuck) or no thread
/// could be started.
fn start_statfs(guard: &StatfsGuard, path: PathBuf) -> Option<StatfsReply> {
    {
        let mut pending = guard.pending.lock().ok()?;
        if !pending.insert(path.clone()) {
            return None;
        }
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let pending = guard.pending.clone();
    let thread_path = path.clone();
    let spawned = std::thread::Builder::new()
        .name("statfs".into())
        // statvfs needs almost no stack; the default 2 MiB is virtual anyway,
        // but a small one keeps a pile-up of stuck threads cheap.
        .stack_size(64 * 1024)
        .spawn(move || {
            let res = nix::sys::statvfs::statvfs(&thread_path);
            if let Ok(mut p) = pending.lock() {
                p.remove(&thread_path);
            }
            let _ = tx.send(res);
        });
    if spawned.is_err() {
        if let Ok(mut p) = guard.pending.lock() {
            p.remove(&path);
        }
        return None;
    }
    Some(rx)
}

/// The host's mount table, filtered and de-duplicated (a later mount on the
/// same mount point hides the earlier one, so the later one is kept).
fn read_mounts(host: &mut Host) -> Result<Vec<Mount>, CollectError> {
    let mut text = None;
    for rel in ["1/mounts", "self/mounts"] {
        let path = host.roots.proc(rel);
        if let Some(t) = host.reader.read_optional(&path)? {
            text = Some(t.to_string());
            break;
        }
    }
    let text = text.ok_or_else(|| CollectError::Read {
        path: host.roots.proc("self/mounts"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let mut mounts: Vec<Mount> = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines().rev() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mountpoint = unescape_octal(f[1]);
        let fstype = f[2];
        if PSEUDO_FS_TYPES.contains(&fstype) || IGNORED_MOUNT_POINTS.is_match(&mountpoint) {
            continue;
        }
        if !seen.insert(mountpoint.clone()) {
            continue;
        }
        mounts.push(Mount {
            device: unescape_octal(f[0]),
            mountpoint,
            fstype: fstype.to_string(),
            readonly: f[3].split(',').any(|o| o == "ro"),
        });
    }
    mounts.reverse();
    Ok(mounts)
}

/// The mount table writes space, tab, newline and backslash as `\040`,
/// `\011`, `\012`, `\134`.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Partitions, RAM disks, loop and floppy devices (node_exporter's default
/// `--collector.diskstats.device-exclude`): whole disks are what matter.
static IGNORED_DISKS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$")
        .expect("disk pattern")
});

/// /proc/diskstats counts in 512-byte sectors whatever the device's sector size.
const SECTOR_BYTES: f64 = 512.0;

pub(super) fn diskstats(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("diskstats");
    let text = host.reader.read(&path)?;
    // (name, help, kind, column after the device name, scale)
    const FIELDS: [(&str, &str, Kind, usize, f64); 11] = [
        (
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
            Kind::Counter,
            0,
            1.0,
        ),
        (
            "node_disk_reads_merged_total",
            "The total number of reads merged.",
            Kind::Counter,
            1,
            1.0,
        ),
        (
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
            Kind::Counter,
            2,
            SECTOR_BYTES,
        ),
        (
            "node_disk_read_time_seconds_total",
            "The total number of seconds spent by all reads.",
            Kind::Counter,
            3,
            0.001,
        ),
        (
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
            Kind::Counter,
            4,
            1.0,
        ),
        (
            "node_disk_writes_merged_total",
            "The number of writes merged.",
            Kind::Counter,
            5,
            1.0,
        ),
        (
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
            Kind::Counter,
            6,
            SECTOR_BYTES,
        ),
        (
            "node_disk_write_time_seconds_total",
            "This is the total number of seconds spent by all writes.",
            Kind::Counter,
            7,
            0.001,
        ),
        (
            "node_disk_io_now",
            "The number of I/Os currently in progress.",
            Kind::Gauge,
            8,
            1.0,
        ),
        (
            "node_disk_io_time_seconds_total",
            "Total seconds spent doing I/Os.",
            Kind::Counter,
            9,
            0.001,
        ),
        (
            "node_disk_io_time_weighted_seconds_total",
            "The weighted # of seconds spent doing I/Os.",
            Kind::Counter,
            10,
            0.001,
        ),
    ];
    let mut rows: Vec<(&str, Vec<u64>)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 3 + FIELDS.len() {
            continue;
        }
        let device = f[2];
        if IGNORED_DISKS.is_match(device) {
            continue;
        }
        let mut values = Vec::with_capacity(FIELDS.len());
        for v in &f[3..3 + FIELDS.len()] {
            values.push(parse_u64(&path, v, device)?);
        }
        rows.push((device, values));
    }
    for (name, help, kind, column, scale) in FIELDS {
        let family = out.family(name, help, kind, &["device"]);
        for (device, values) in &rows {
            family.push(&[device], values[column] as f64 * scale);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_in_mount_points_are_decoded() {
        assert_eq!(unescape_octal("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("/odd\\04"), "/odd\\04");
    }

    #[test]
    fn pod_volumes_and_pseudo_mounts_are_ignored_but_real_ones_kept() {
        for ignored in [
            "/proc",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
            "/var/lib/kubelet/pods/1234/volumes/kubernetes.io~projected/kube-api-access",
        ] {
            assert!(IGNORED_MOUNT_POINTS.is_match(ignored), "{ignored}");
        }
        for kept in [
            "/",
            "/boot",
            "/run",
            "/var/lib/rancher",
            "/devices",
            "/data",
        ] {
            assert!(!IGNORED_MOUNT_POINTS.is_match(kept), "{kept}");
        }
    }

    #[test]
    fn partitions_are_ignored_but_whole_disks_kept() {
        for ignored in ["sda1", "vda2", "nvme0n1p1", "mmcblk0p2", "loop3", "ram0"] {
            assert!(IGNORED_DISKS.is_match(ignored), "{ignored}");
        }
        for kept in ["sda", "vda", "nvme0n1", "mmcblk0", "zram0", "dm-0"] {
            assert!(!IGNORED_DISKS.is_match(kept), "{kept}");
        }
    }
}
