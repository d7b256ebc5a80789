//! Enforcement before the fact: whether this kernel runs the BPF LSM, what
//! `deny_open` resolves to in the kernel's terms (inodes), and which mode
//! each deny list runs in.
//!
//! Owns the translation from `[sensor] deny_open` to the entries of the
//! kernel's `ea_deny_open_*` maps and the mode each list is reported in.
//! Reads only metadata (`stat`) and `/sys/kernel/security/lsm`; `loader.rs`
//! loads the LSM programs and writes the maps. Never refuses anything
//! itself.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::abi::{DenyOpenRule, InodeKey, kernel_dev};
use crate::config::SensorConfig;

/// The kernel's list of active LSMs (securityfs).
pub(crate) const LSM_FILE: &str = "/sys/kernel/security/lsm";

/// Whether the kernel runs the BPF LSM: `Ok` when `lsm_list` (the content
/// of [`LSM_FILE`], `None` when it cannot be read) names `bpf`, else why not,
/// in words an operator can act on.
pub(crate) fn bpf_lsm(lsm_list: Option<&str>) -> Result<(), String> {
    let Some(list) = lsm_list else {
        return Err(format!(
            "{LSM_FILE} cannot be read (securityfs not mounted, or a kernel without LSM support)"
        ));
    };
    let list = list.trim();
    if list.split(',').any(|l| l == "bpf") {
        return Ok(());
    }
    Err(format!(
        "BPF-LSM is not active on this kernel (active LSMs: {list}); kernels built with CONFIG_BPF_LSM enable it with the boot parameter lsm={list},bpf"
    ))
}

/// Read [`LSM_FILE`] and judge it with [`bpf_lsm`]. securityfs is mounted
/// at /sys/kernel/security first when nothing is (systemd does it on a
/// node; a bare container or initramfs may not have).
pub(crate) fn bpf_lsm_here() -> Result<(), String> {
    if !Path::new(LSM_FILE).exists() && Path::new(SECURITYFS).is_dir() {
        match nix::mount::mount(
            Some("securityfs"),
            SECURITYFS,
            Some("securityfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) => tracing::info!(
                path = SECURITYFS,
                "mounted securityfs to see the active LSMs"
            ),
            Err(e) => tracing::debug!(error = %e, "could not mount securityfs"),
        }
    }
    bpf_lsm(std::fs::read_to_string(LSM_FILE).ok().as_deref())
}

const SECURITYFS: &str = "/sys/kernel/security";

/// How a deny list is enforced on this node (`status`: `deny_exec_mode`,
/// `deny_open_mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The list is empty.
    Off,
    /// Refused in a BPF-LSM hook: the call fails with EPERM, nothing ran.
    Lsm,
    /// deny_exec without BPF-LSM: killed with SIGKILL at exec, before the
    /// new image runs an instruction (the exec itself succeeded).
    Kill,
    /// deny_open without BPF-LSM: not enforced, with the reason.
    Unavailable(String),
}

impl Mode {
    pub(crate) fn as_status(&self) -> String {
        match self {
            Mode::Off => "off".into(),
            Mode::Lsm => "lsm".into(),
            Mode::Kill => "kill".into(),
            Mode::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// `deny_open` in the kernel's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DenyOpenEntries {
    /// Protected inode -> the index of the entry protecting it.
    pub(crate) inodes: BTreeMap<InodeKey, u32>,
    /// Per entry, what it refuses (index = entry index).
    pub(crate) rules: Vec<DenyOpenRule>,
    /// (entry, executable inode) pairs that are let through.
    pub(crate) allow: Vec<InodeKey>,
    /// The union of every entry's access bits.
    pub(crate) access: u32,
    /// Paths that do not exist (yet): nothing to protect there until they do.
    pub(crate) missing: Vec<String>,
}

fn inode_key(path: &Path, rule: u32) -> Option<InodeKey> {
    // Follows symlinks: protecting a link protects what it points to.
    let m = std::fs::metadata(path).ok()?;
    Some(InodeKey {
        dev: kernel_dev(m.dev()),
        rule,
        ino: m.ino(),
    })
}

/// The inodes of the `deny_exec` entries given as full paths, as they are
/// on disk now (an entry that does not exist yet has none; the sensor
/// resolves again every second). A bare name has no inode: it is matched
/// by name only.
pub(crate) fn deny_exec_inodes(entries: &[String]) -> Vec<InodeKey> {
    let mut keys: Vec<InodeKey> = entries
        .iter()
        .filter(|e| e.starts_with('/'))
        .filter_map(|e| inode_key(Path::new(e), 0))
        .collect();
    keys.sort_unstable_by_key(|k| (k.dev, k.ino));
    keys.dedup();
    keys
}

impl DenyOpenEntries {
    /// Resolve every `deny_open` entry (and its allowed executables) to
    /// inodes, as they are on disk now. A path that does not exist yet is
    /// listed in `missing`; the sensor resolves again every second, so a
    /// directory created later (K3s installed after the agent) or a binary
    /// replaced by an upgrade (a new inode) is followed.
    pub(crate) fn resolve(config: &SensorConfig) -> DenyOpenEntries {
        let mut out = DenyOpenEntries::default();
        for (i, entry) in config.deny_open.iter().enumerate() {
            let idx = i as u32;
            out.rules.push(DenyOpenRule {
                access: entry.access.bits(),
                has_allow: u32::from(!entry.allow.is_empty()),
            });
            out.access |= entry.access.bits();
            match inode_key(&entry.path, 0) {
                // Two entries naming one inode: the first one's rule holds.
                Some(k) => {
                    out.inodes.entry(k).or_insert(idx);
                }
                None => out.missing.push(entry.path.display().to_string()),
            }
            for exe in &entry.allow {
                if let Some(k) = inode_key(exe, idx) {
                    out.allow.push(k);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_exec_full_paths_resolve_to_inodes_and_names_to_none() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("miner");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let link = dir.path().join("renamed");
        std::fs::hard_link(&bin, &link).unwrap();
        let entries = vec![
            bin.display().to_string(),
            link.display().to_string(),
            "miner".to_string(),
            dir.path().join("not-yet").display().to_string(),
        ];
        let keys = deny_exec_inodes(&entries);
        // The path and its hard link are one inode; a bare name and a
        // missing path have none.
        let m = std::fs::metadata(&bin).unwrap();
        assert_eq!(
            keys,
            vec![InodeKey {
                dev: kernel_dev(m.dev()),
                rule: 0,
                ino: m.ino(),
            }]
        );
    }
    use crate::config::{Access, DenyOpen};

    #[test]
    fn bpf_lsm_is_active_only_when_the_kernel_lists_it() {
        assert!(bpf_lsm(Some("lockdown,capability,landlock,yama,apparmor,bpf\n")).is_ok());
        let e = bpf_lsm(Some("lockdown,capability,yama,apparmor")).unwrap_err();
        assert!(
            e.contains("lsm=lockdown,capability,yama,apparmor,bpf"),
            "{e}"
        );
        assert!(bpf_lsm(Some("bpfx")).is_err());
        assert!(bpf_lsm(None).unwrap_err().contains("securityfs"));
    }

    #[test]
    fn deny_open_resolves_paths_and_allowed_executables_to_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let k3s_dir = dir.path().join("k3s");
        std::fs::create_dir(&k3s_dir).unwrap();
        let exe = dir.path().join("k3s-bin");
        std::fs::write(&exe, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&k3s_dir, &link).unwrap();
        let c = SensorConfig {
            deny_open: vec![
                DenyOpen {
                    path: k3s_dir.clone(),
                    access: Access::Write,
                    allow: vec![exe.clone(), dir.path().join("not-installed")],
                },
                DenyOpen {
                    path: dir.path().join("later"),
                    access: Access::Read,
                    allow: vec![],
                },
                DenyOpen {
                    path: link,
                    access: Access::Any,
                    allow: vec![],
                },
            ],
            ..Default::default()
        };
        let e = DenyOpenEntries::resolve(&c);
        let m = std::fs::metadata(&k3s_dir).unwrap();
        let key = InodeKey {
            dev: kernel_dev(m.dev()),
            rule: 0,
            ino: m.ino(),
        };
        // The symlink names the same directory: the first entry keeps it.
        assert_eq!(e.inodes.len(), 1);
        assert_eq!(e.inodes[&key], 0);
        assert_eq!(e.rules.len(), 3);
        assert_eq!(
            e.rules[0],
            DenyOpenRule {
                access: 2,
                has_allow: 1
            }
        );
        assert_eq!(
            e.rules[1],
            DenyOpenRule {
                access: 1,
                has_allow: 0
            }
        );
        assert_eq!(e.access, 3);
        assert_eq!(e.allow.len(), 1);
        assert_eq!(e.allow[0].rule, 0);
        assert_eq!(e.allow[0].ino, std::fs::metadata(&exe).unwrap().ino());
        assert_eq!(
            e.missing,
            vec![dir.path().join("later").display().to_string()]
        );
    }
}
