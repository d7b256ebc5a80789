//! Preflight: can this node run what the desired state asks for? Each
//! finding says what was found, what it means for K3s, and what to do.
//!
//! [`HostFacts::gather`] reads the host (I/O); [`findings`] turns facts into
//! findings and is pure, so the "no IPVS" case is tested without a kernel
//! that lacks IPVS. Kernel, cgroup, swap, tool and systemd facts describe
//! the machine the agent runs on; with a scratch root they are still this
//! machine's, and the findings say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{BootstrapConfig, KubeProxyMode, Snapshotter};

use super::k3s::{K3sInfo, VersionSource};
use super::kernel::{self, CgroupFacts, CgroupLayout, ModuleState};

/// Below this much free space under the data dir K3s cannot hold its own
/// images (the agent's airgap/system images alone are several hundred MB)
/// and the kubelet's image GC thrashes.
const DISK_FAIL_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Below this, a few application images fill the disk.
const DISK_WARN_BYTES: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    Ok,
    Info,
    Warn,
    /// K3s (or a part of it) will not work this way.
    Fail,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable id: `kernel_module`, `cgroup`, `swap`, `tool`, `k3s`,
    /// `disk`, `systemd`, `nydus`.
    pub(crate) check: &'static str,
    pub(crate) subject: String,
    pub(crate) severity: Severity,
    pub(crate) message: String,
}

/// What the checks look at.
#[derive(Debug, Clone)]
pub(crate) struct HostFacts {
    pub(crate) scratch_root: bool,
    pub(crate) kernel_release: String,
    pub(crate) kernel_loads_modules: Option<bool>,
    pub(crate) modules: BTreeMap<String, ModuleState>,
    /// nf_tables is available (asked even when the mode does not need it,
    /// to suggest nftables mode where IPVS is missing).
    pub(crate) nftables: bool,
    pub(crate) cgroups: CgroupFacts,
    pub(crate) swap_kib: u64,
    pub(crate) tools: BTreeMap<&'static str, Option<PathBuf>>,
    pub(crate) systemd: bool,
    pub(crate) pid1: String,
    pub(crate) disk: Option<(PathBuf, u64)>,
    /// Nydus binaries (node path, present below the root).
    pub(crate) nydus_bins: Vec<(PathBuf, bool)>,
}

impl HostFacts {
    pub(crate) fn gather(cfg: &BootstrapConfig, root: &Path, modules: &[String]) -> HostFacts {
        let k = kernel::KernelInfo::read();
        let (systemd, pid1) = kernel::systemd();
        let tools = ["iptables", "ipset", "nft", "modprobe"]
            .into_iter()
            .map(|t| (t, kernel::which(t)))
            .collect();
        let nydus_bins = if cfg.snapshotter == Snapshotter::Nydus {
            [&cfg.nydus.snapshotter_bin, &cfg.nydus.nydusd_bin]
                .into_iter()
                .map(|p| (p.clone(), super::under_root(root, p).exists()))
                .collect()
        } else {
            Vec::new()
        };
        HostFacts {
            scratch_root: root != Path::new("/"),
            kernel_release: k.release.clone(),
            kernel_loads_modules: k.loads_modules(),
            modules: modules
                .iter()
                .map(|m| (m.clone(), k.module_state(m)))
                .collect(),
            nftables: k.module_state("nf_tables").available(),
            cgroups: kernel::cgroups(),
            swap_kib: kernel::swap_kib(),
            tools,
            systemd,
            pid1,
            disk: kernel::free_bytes(&super::under_root(root, &cfg.data_dir)),
            nydus_bins,
        }
    }
}

/// The findings, most severe first within each check's order.
pub(crate) fn findings(cfg: &BootstrapConfig, k3s: &K3sInfo, facts: &HostFacts) -> Vec<Finding> {
    let host = if facts.scratch_root {
        "this machine".to_string()
    } else {
        format!("kernel {}", facts.kernel_release)
    };
    let mut out = Findings(Vec::new());
    scope(&mut out, facts);
    kernel_modules(&mut out, &host, facts);
    cgroups(&mut out, &host, facts);
    swap(&mut out, &host, facts);
    tools(&mut out, &host, cfg.kube_proxy.mode, facts);
    k3s_version(&mut out, cfg, k3s);
    disk(&mut out, cfg, facts);
    systemd(&mut out, facts);
    nydus(&mut out, facts);
    out.0
}

/// The findings so far, in the order the checks ran.
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, check: &'static str, subject: &str, severity: Severity, message: String) {
        self.0.push(Finding {
            check,
            subject: subject.to_string(),
            severity,
            message,
        });
    }
}

/// On a scratch root the host checks describe this machine, not the node.
fn scope(out: &mut Findings, facts: &HostFacts) {
    if facts.scratch_root {
        out.add(
            "scope",
            "scratch_root",
            Severity::Info,
            format!(
                "kernel, cgroup, swap, tool and systemd checks describe this machine (kernel {}), not the node the scratch root stands for",
                facts.kernel_release
            ),
        );
    }
}

/// The kernel modules `bootstrap.modules` and the kube-proxy mode need.
fn kernel_modules(out: &mut Findings, host: &str, facts: &HostFacts) {
    let ipvs_missing: Vec<&str> = facts
        .modules
        .iter()
        .filter(|(m, s)| m.starts_with("ip_vs") && !s.available())
        .map(|(m, _)| m.as_str())
        .collect();
    for (m, state) in &facts.modules {
        if state.available() {
            out.add(
                "kernel_module",
                m,
                Severity::Ok,
                format!("{m}: {}", state.describe()),
            );
            continue;
        }
        let unknown = matches!(state, ModuleState::Unknown(_));
        let (severity, consequence) = if m.starts_with("ip_vs") {
            (
                Severity::Fail,
                format!(
                    "kube-proxy in ipvs mode will exit at start instead of falling back to iptables (Kubernetes >= 1.26, kubernetes/kubernetes#111806), so Services will not work on this node; set bootstrap.kube_proxy.mode = \"nftables\"{} or use a kernel with IPVS (CONFIG_IP_VS)",
                    if facts.nftables {
                        " (this kernel has nf_tables)"
                    } else {
                        ""
                    }
                ),
            )
        } else if m == "nf_tables" || m == "nf_nat" {
            (
                Severity::Fail,
                "kube-proxy in nftables mode cannot program Services; use a kernel with CONFIG_NF_TABLES, or mode = \"iptables\"".to_string(),
            )
        } else if m == "br_netfilter" {
            (
                Severity::Fail,
                "bridged pod traffic bypasses iptables/nftables, so Service and NetworkPolicy rules do not apply to it".to_string(),
            )
        } else if m == "overlay" {
            (
                Severity::Fail,
                "containerd's overlayfs snapshotter (and nydus's) needs it; K3s will refuse to start its containerd".to_string(),
            )
        } else if m == "fuse" {
            (
                Severity::Fail,
                "nydusd (fusedev driver) mounts images through FUSE".to_string(),
            )
        } else {
            (Severity::Warn, "listed in bootstrap.modules".to_string())
        };
        let severity = if unknown { Severity::Warn } else { severity };
        // One IPVS finding for the whole family reads better than five.
        if m.starts_with("ip_vs") && m != "ip_vs" && !ipvs_missing.contains(&"ip_vs") {
            out.add(
                "kernel_module",
                m,
                severity,
                format!("{m} on {host}: {}; {consequence}", state.describe()),
            );
        } else if m == "ip_vs" {
            out.add(
                "kernel_module",
                "ip_vs",
                severity,
                format!(
                    "no IPVS on {host}: {} ({} missing); {consequence}",
                    state.describe(),
                    ipvs_missing.join(", ")
                ),
            );
        } else if !m.starts_with("ip_vs") {
            out.add(
                "kernel_module",
                m,
                severity,
                format!("{m} on {host}: {}; {consequence}", state.describe()),
            );
        }
    }
    if facts.kernel_loads_modules == Some(false) {
        out.add(
            "kernel_module",
            "modules",
            Severity::Info,
            format!(
                "{host} cannot load modules (CONFIG_MODULES is not set): only built-in features exist, and modules-load.d has no effect"
            ),
        );
    }
}

/// The memory controller, and cgroup v2.
fn cgroups(out: &mut Findings, host: &str, facts: &HostFacts) {
    let cg = &facts.cgroups;
    match (cg.layout, cg.memory) {
        (_, false) => out.add(
            "cgroup",
            "memory",
            Severity::Fail,
            format!(
                "the memory cgroup controller is not available on {host}: the kubelet refuses to start; enable it (cgroup_enable=memory on the kernel command line, common on Raspberry Pi)"
            ),
        ),
        (CgroupLayout::Unified, true) => out.add(
            "cgroup",
            "v2",
            Severity::Ok,
            "cgroup v2 with the memory controller".into(),
        ),
        (layout, true) => out.add(
            "cgroup",
            "v1",
            Severity::Warn,
            format!(
                "{host} uses cgroup v1{} (memory controller present); Kubernetes has kept cgroup v1 in maintenance mode since 1.31 and recent kubelets refuse it by default: boot with systemd.unified_cgroup_hierarchy=1",
                if layout == CgroupLayout::Hybrid {
                    " in hybrid mode"
                } else {
                    ""
                }
            ),
        ),
    }
}

/// Swap: the kubelet runs with it, less predictably.
fn swap(out: &mut Findings, host: &str, facts: &HostFacts) {
    if facts.swap_kib > 0 {
        out.add(
            "swap",
            "swap",
            Severity::Warn,
            format!(
                "swap is on ({} MiB) on {host}: K3s starts the kubelet with fail-swap-on=false so it runs, but memory limits and eviction become less predictable; swapoff -a and remove swap from /etc/fstab",
                facts.swap_kib / 1024
            ),
        );
    } else {
        out.add("swap", "swap", Severity::Ok, "swap is off".into());
    }
}

/// The tools the kube-proxy mode runs.
fn tools(out: &mut Findings, host: &str, mode: KubeProxyMode, facts: &HostFacts) {
    let tool = |t: &str| facts.tools.get(t).cloned().flatten();
    let wanted: &[(&str, &str)] = match mode {
        KubeProxyMode::Iptables => &[("iptables", "kube-proxy programs Services with it")],
        KubeProxyMode::Ipvs => &[
            (
                "iptables",
                "kube-proxy's ipvs mode still uses iptables for masquerading and filtering",
            ),
            (
                "ipset",
                "kube-proxy's ipvs mode keeps its address sets in ipset",
            ),
        ],
        KubeProxyMode::Nftables => &[(
            "nft",
            "kube-proxy's nftables mode runs the nft command (package nftables)",
        )],
    };
    for (t, why) in wanted {
        match tool(t) {
            Some(p) => out.add("tool", t, Severity::Ok, format!("{t}: {}", p.display())),
            None => out.add(
                "tool",
                t,
                Severity::Warn,
                format!(
                    "{t} is not on PATH on {host}: {why}; K3s falls back to the copy it bundles where it has one, else install it"
                ),
            ),
        }
    }
}

/// The K3s version the files are rendered for, and where it came from.
fn k3s_version(out: &mut Findings, cfg: &BootstrapConfig, k3s: &K3sInfo) {
    match (&k3s.version, &k3s.source) {
        (Some(v), Some(VersionSource::Binary(bin))) => out.add(
            "k3s",
            "version",
            Severity::Ok,
            format!("K3s {v} ({bin} --version)"),
        ),
        (Some(v), Some(VersionSource::BinaryText(bin))) => out.add(
            "k3s",
            "version",
            Severity::Ok,
            format!("K3s {v} (read from {bin}; nothing is run under a root other than /)"),
        ),
        (Some(v), _) => out.add(
            "k3s",
            "version",
            Severity::Info,
            format!(
                "K3s is not installed ({}); rendering for {v} from bootstrap.k3s_version",
                k3s.binary_problem.as_deref().unwrap_or("no answer")
            ),
        ),
        (None, _) => out.add(
            "k3s",
            "version",
            if cfg.snapshotter == Snapshotter::Nydus {
                Severity::Fail
            } else {
                Severity::Info
            },
            format!(
                "K3s version unknown: {}{}",
                k3s.binary_problem.as_deref().unwrap_or("no binary"),
                if cfg.snapshotter == Snapshotter::Nydus {
                    "; the nydus containerd template cannot be chosen (set bootstrap.k3s_version)"
                } else {
                    "; the files do not depend on it"
                }
            ),
        ),
    }
    if let Some(b) = &k3s.config_mismatch {
        out.add(
            "k3s",
            "k3s_version",
            Severity::Warn,
            format!(
                "bootstrap.k3s_version = \"{b}\" but the installed binary is {}; the binary wins: update or remove the setting",
                k3s.version.map(|v| v.to_string()).unwrap_or_default()
            ),
        );
    }
}

/// Free disk under the data dir.
fn disk(out: &mut Findings, cfg: &BootstrapConfig, facts: &HostFacts) {
    match &facts.disk {
        Some((at, free)) => {
            let gib = *free as f64 / (1024.0 * 1024.0 * 1024.0);
            let (sev, what) = if *free < DISK_FAIL_BYTES {
                (Severity::Fail, "too little for K3s's own images")
            } else if *free < DISK_WARN_BYTES {
                (Severity::Warn, "tight once application images arrive")
            } else {
                (Severity::Ok, "enough")
            };
            out.add(
                "disk",
                "data_dir",
                sev,
                format!(
                    "{gib:.1} GiB free on the filesystem holding {} (checked at {}): {what}",
                    cfg.data_dir.display(),
                    at.display()
                ),
            );
        }
        None => out.add(
            "disk",
            "data_dir",
            Severity::Warn,
            format!("cannot tell free space under {}", cfg.data_dir.display()),
        ),
    }
}

/// systemd, for restarts.
fn systemd(out: &mut Findings, facts: &HostFacts) {
    if facts.systemd {
        out.add(
            "systemd",
            "systemd",
            Severity::Ok,
            "systemd is the init system: apply restarts units whose files changed".into(),
        );
    } else {
        out.add(
            "systemd",
            "systemd",
            Severity::Info,
            format!(
                "systemd is not running on this machine (PID 1 is {}): apply writes the files but cannot restart K3s or nydus-snapshotter; restart them yourself",
                facts.pid1
            ),
        );
    }
}

/// The nydus binaries the snapshotter needs.
fn nydus(out: &mut Findings, facts: &HostFacts) {
    for (p, present) in &facts.nydus_bins {
        if !present {
            out.add(
                "nydus",
                &p.display().to_string(),
                Severity::Warn,
                format!(
                    "{} is not installed: nydus-snapshotter.service will fail until it is (nydus-snapshotter and nydus release binaries)",
                    p.display()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn facts(modules: &[(&str, ModuleState)]) -> HostFacts {
        HostFacts {
            scratch_root: false,
            kernel_release: "6.18.44".into(),
            kernel_loads_modules: Some(false),
            modules: modules
                .iter()
                .map(|(m, s)| (m.to_string(), s.clone()))
                .collect(),
            nftables: true,
            cgroups: CgroupFacts {
                layout: CgroupLayout::Unified,
                memory: true,
            },
            swap_kib: 0,
            tools: BTreeMap::new(),
            systemd: false,
            pid1: "process_api".into(),
            disk: Some((PathBuf::from("/"), 50 << 30)),
            nydus_bins: vec![],
        }
    }

    fn ipvs_cfg() -> BootstrapConfig {
        let mut c = BootstrapConfig {
            role: Some(Role::Agent),
            ..Default::default()
        };
        c.kube_proxy.mode = KubeProxyMode::Ipvs;
        c
    }

    #[test]
    fn a_kernel_without_ipvs_fails_with_what_kube_proxy_will_do_and_the_way_out() {
        let missing = ModuleState::Missing(
            "not in this kernel (CONFIG_IP_VS is not set in /proc/config.gz)".into(),
        );
        let fs = facts(&[
            ("br_netfilter", ModuleState::BuiltIn),
            ("ip_vs", missing.clone()),
            ("ip_vs_rr", missing.clone()),
            ("nf_conntrack", ModuleState::Loaded),
        ]);
        let out = findings(
            &ipvs_cfg(),
            &K3sInfo {
                version: None,
                source: None,
                binary_problem: None,
                config_mismatch: None,
            },
            &fs,
        );
        let ipvs: Vec<_> = out
            .iter()
            .filter(|f| f.check == "kernel_module" && f.subject.starts_with("ip_vs"))
            .collect();
        assert_eq!(ipvs.len(), 1, "one finding for the IPVS family: {ipvs:#?}");
        let m = &ipvs[0].message;
        assert_eq!(ipvs[0].severity, Severity::Fail);
        assert!(
            m.contains("no IPVS") && m.contains("CONFIG_IP_VS is not set"),
            "{m}"
        );
        assert!(m.contains("kube-proxy in ipvs mode will exit"), "{m}");
        assert!(m.contains("nftables"), "{m}");
        assert!(m.contains("ip_vs, ip_vs_rr"), "{m}");
    }

    #[test]
    fn swap_cgroup_v1_and_systemd_are_reported_with_their_consequence() {
        let mut fs = facts(&[]);
        fs.swap_kib = 2048 * 1024;
        fs.cgroups = CgroupFacts {
            layout: CgroupLayout::Hybrid,
            memory: true,
        };
        let out = findings(
            &ipvs_cfg(),
            &K3sInfo {
                version: None,
                source: None,
                binary_problem: Some("x".into()),
                config_mismatch: None,
            },
            &fs,
        );
        let by = |c: &str| out.iter().find(|f| f.check == c).unwrap();
        assert_eq!(by("swap").severity, Severity::Warn);
        assert!(by("swap").message.contains("2048 MiB"));
        assert!(by("cgroup").message.contains("hybrid"));
        assert!(by("systemd").message.contains("PID 1 is process_api"));
        let ipset = out.iter().find(|f| f.subject == "ipset").unwrap();
        assert_eq!(ipset.severity, Severity::Warn);
    }

    #[test]
    fn nydus_without_a_k3s_version_is_a_failure_and_overlayfs_is_not() {
        let none = K3sInfo {
            version: None,
            source: None,
            binary_problem: Some("/usr/local/bin/k3s does not exist".into()),
            config_mismatch: None,
        };
        let mut c = ipvs_cfg();
        c.snapshotter = Snapshotter::Nydus;
        let out = findings(&c, &none, &facts(&[]));
        assert_eq!(
            out.iter().find(|f| f.check == "k3s").unwrap().severity,
            Severity::Fail
        );
        c.snapshotter = Snapshotter::Overlayfs;
        let out = findings(&c, &none, &facts(&[]));
        assert_eq!(
            out.iter().find(|f| f.check == "k3s").unwrap().severity,
            Severity::Info
        );
    }
}
