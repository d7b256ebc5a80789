//! The running kernel and host, as the reconciler sees them: which modules
//! are there, sysctl values, cgroups, swap, tools on `PATH`, systemd, free
//! disk. Reads `/sys`, `/proc`, `/lib/modules`; changes the kernel only in
//! [`write_sysctl`] and [`load_module`], which the reconciler calls only
//! for the real root, as root.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where a kernel module stands on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModuleState {
    /// Listed in /sys/module: loaded, or built in.
    Loaded,
    /// Built into the kernel image.
    BuiltIn,
    /// On disk as a loadable module, not loaded yet.
    Loadable,
    /// Not available; the reason says how we know.
    Missing(String),
    /// Nothing to go by (no /lib/modules, no kernel config).
    Unknown(String),
}

impl ModuleState {
    pub(crate) fn available(&self) -> bool {
        matches!(
            self,
            ModuleState::Loaded | ModuleState::BuiltIn | ModuleState::Loadable
        )
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            ModuleState::Loaded => "loaded".into(),
            ModuleState::BuiltIn => "built into the kernel".into(),
            ModuleState::Loadable => "available as a module, not loaded".into(),
            ModuleState::Missing(why) | ModuleState::Unknown(why) => why.clone(),
        }
    }
}

/// The kernel config symbol for the modules the reconciler knows, to
/// answer from `/proc/config.gz` when `/lib/modules` is absent.
pub(crate) fn config_symbol(module: &str) -> Option<String> {
    let s = match module {
        "br_netfilter" => "BRIDGE_NETFILTER",
        "overlay" => "OVERLAY_FS",
        "nf_conntrack" => "NF_CONNTRACK",
        "nf_tables" => "NF_TABLES",
        "nf_nat" => "NF_NAT",
        "fuse" => "FUSE_FS",
        "ip_vs" => "IP_VS",
        other => {
            let sched = other.strip_prefix("ip_vs_")?;
            return Some(format!("IP_VS_{}", sched.to_ascii_uppercase()));
        }
    };
    Some(s.to_string())
}

/// Facts about the running kernel used to answer module questions.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelInfo {
    pub(crate) release: String,
    /// `CONFIG_X` -> "y" / "m" / "n", from /proc/config.gz or /boot.
    config: Option<HashMap<String, String>>,
    config_source: String,
    /// `/lib/modules/<release>/modules.dep` and `modules.builtin` contents.
    modules_dep: Option<String>,
    modules_builtin: Option<String>,
}

impl KernelInfo {
    pub(crate) fn read() -> KernelInfo {
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut k = KernelInfo {
            release: release.clone(),
            ..Default::default()
        };
        if let Ok(f) = std::fs::File::open("/proc/config.gz") {
            let mut text = String::new();
            if flate2::read::GzDecoder::new(f)
                .read_to_string(&mut text)
                .is_ok()
            {
                k.config = Some(parse_kconfig(&text));
                k.config_source = "/proc/config.gz".into();
            }
        }
        if k.config.is_none() {
            let p = format!("/boot/config-{release}");
            if let Ok(text) = std::fs::read_to_string(&p) {
                k.config = Some(parse_kconfig(&text));
                k.config_source = p;
            }
        }
        let moddir = PathBuf::from("/lib/modules").join(&release);
        k.modules_dep = std::fs::read_to_string(moddir.join("modules.dep")).ok();
        k.modules_builtin = std::fs::read_to_string(moddir.join("modules.builtin")).ok();
        k
    }

    /// Can this kernel load modules at all?
    pub(crate) fn loads_modules(&self) -> Option<bool> {
        self.config
            .as_ref()
            .map(|c| c.get("CONFIG_MODULES").is_some_and(|v| v == "y"))
    }

    pub(crate) fn module_state(&self, name: &str) -> ModuleState {
        let under = name.replace('-', "_");
        if Path::new("/sys/module").join(&under).exists() {
            return ModuleState::Loaded;
        }
        let listed = |text: &Option<String>| {
            text.as_deref().is_some_and(|t| {
                t.lines().any(|l| {
                    let file = l.split(':').next().unwrap_or("");
                    let base = file.rsplit('/').next().unwrap_or("");
                    let stem = base.split(".ko").next().unwrap_or("");
                    base.contains(".ko") && stem.replace('-', "_") == under
                })
            })
        };
        if listed(&self.modules_builtin) {
            return ModuleState::BuiltIn;
        }
        if listed(&self.modules_dep) {
            return ModuleState::Loadable;
        }
        let symbol = config_symbol(&under);
        if let (Some(cfg), Some(sym)) = (&self.config, &symbol) {
            let key = format!("CONFIG_{sym}");
            let src = &self.config_source;
            return match cfg.get(&key).map(String::as_str) {
                Some("y") => ModuleState::BuiltIn,
                Some("m") if self.modules_dep.is_some() => ModuleState::Missing(format!(
                    "{key}=m in {src}, but no {under}.ko under /lib/modules/{}",
                    self.release
                )),
                Some("m") => ModuleState::Missing(format!(
                    "built as a module ({key}=m in {src}) but /lib/modules/{} is missing",
                    self.release
                )),
                _ => {
                    ModuleState::Missing(format!("not in this kernel ({key} is not set in {src})"))
                }
            };
        }
        if self.modules_dep.is_some() {
            return ModuleState::Missing(format!(
                "not in /lib/modules/{} (modules.dep, modules.builtin)",
                self.release
            ));
        }
        ModuleState::Unknown(format!(
            "cannot tell: no /lib/modules/{} and no kernel config to read",
            self.release
        ))
    }
}

fn parse_kconfig(text: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.trim().to_string(), v.trim().to_string());
        } else if let Some(k) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.strip_suffix(" is not set"))
        {
            m.insert(k.trim().to_string(), "n".into());
        }
    }
    m
}

/// `/proc/sys/<a/b/c>` for `a.b.c`. Names are validated (no `/`, no `..`).
pub(crate) fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

/// The live value, whitespace-normalised (`"4096\t87380"` -> `"4096 87380"`).
pub(crate) fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|v| normalize_sysctl(&v))
}

pub(crate) fn normalize_sysctl(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn write_sysctl(name: &str, value: &str) -> Result<(), String> {
    let p = sysctl_path(name);
    if !p.exists() {
        return Err(format!(
            "{name}: this kernel has no {} (its module is not loaded, or the feature is not built in)",
            p.display()
        ));
    }
    std::fs::write(&p, value).map_err(|e| format!("{name} = {value}: {e}"))
}

/// `modprobe <name>`. An absent `modprobe` or a kernel without module
/// support is an error that says so.
pub(crate) fn load_module(name: &str, kernel: &KernelInfo) -> Result<(), String> {
    if kernel.loads_modules() == Some(false) {
        return Err(format!(
            "{name}: this kernel cannot load modules (built without CONFIG_MODULES)"
        ));
    }
    let Some(modprobe) = which("modprobe") else {
        return Err(format!("{name}: modprobe is not installed (package kmod)"));
    };
    let out = Command::new(modprobe)
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{name}: cannot run modprobe: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name}: modprobe failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Search `PATH` and the sbin directories root's PATH has (a daemon under
/// systemd may run with a short PATH).
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// cgroup layout of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CgroupLayout {
    /// Only cgroup v2 at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    Legacy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupFacts {
    pub(crate) layout: CgroupLayout,
    /// Whether the memory controller is usable (in cgroup.controllers for
    /// v2; mounted for v1/hybrid).
    pub(crate) memory: bool,
}

pub(crate) fn cgroups() -> CgroupFacts {
    let root = Path::new("/sys/fs/cgroup");
    if let Ok(c) = std::fs::read_to_string(root.join("cgroup.controllers")) {
        return CgroupFacts {
            layout: CgroupLayout::Unified,
            memory: c.split_whitespace().any(|w| w == "memory"),
        };
    }
    let layout = if root.join("unified/cgroup.controllers").exists() {
        CgroupLayout::Hybrid
    } else {
        CgroupLayout::Legacy
    };
    CgroupFacts {
        layout,
        memory: root.join("memory/memory.limit_in_bytes").exists() || root.join("memory").is_dir(),
    }
}

/// Active swap in KiB, from /proc/swaps.
pub(crate) fn swap_kib() -> u64 {
    std::fs::read_to_string("/proc/swaps")
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// Is systemd the init system (`/run/systemd/system` exists, as
/// sd_booted(3) checks), and what is PID 1?
pub(crate) fn systemd() -> (bool, String) {
    let pid1 = std::fs::read_to_string("/proc/1/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    (Path::new("/run/systemd/system").is_dir(), pid1)
}

/// Free bytes on the filesystem that holds `path` (or its nearest existing
/// ancestor), and that ancestor.
pub(crate) fn free_bytes(path: &Path) -> Option<(PathBuf, u64)> {
    let mut p = path.to_path_buf();
    loop {
        if p.exists() {
            let st = nix::sys::statvfs::statvfs(&p).ok()?;
            #[allow(clippy::unnecessary_cast)] // the field types differ by target
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            return Some((p, free));
        }
        if !p.pop() {
            return None;
        }
    }
}

/// Read every desired sysctl's live value.
pub(crate) fn read_sysctls<'a>(
    names: impl Iterator<Item = &'a String>,
) -> BTreeMap<String, Option<String>> {
    names.map(|n| (n.clone(), read_sysctl(n))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_with(config: &str, dep: Option<&str>) -> KernelInfo {
        KernelInfo {
            release: "6.1.0-test".into(),
            config: Some(parse_kconfig(config)),
            config_source: "/proc/config.gz".into(),
            modules_dep: dep.map(String::from),
            modules_builtin: None,
        }
    }

    #[test]
    fn a_kernel_config_answers_when_lib_modules_is_absent() {
        let k = kernel_with(
            "# CONFIG_MODULES is not set\n# CONFIG_IP_VS is not set\nCONFIG_NF_TABLES=y\n",
            None,
        );
        assert_eq!(k.loads_modules(), Some(false));
        // Names that /sys/module never lists on a test host.
        let ipvs = k.module_state("ip_vs_sed");
        assert!(!ipvs.available());
        assert!(
            ipvs.describe().contains("CONFIG_IP_VS_SED is not set"),
            "{ipvs:?}"
        );
    }

    #[test]
    fn modules_dep_lists_loadable_modules_with_any_compression() {
        let k = kernel_with(
            "CONFIG_MODULES=y\nCONFIG_IP_VS_WLC=m\n",
            Some(
                "kernel/net/netfilter/ipvs/ip_vs_wlc.ko.zst: kernel/net/netfilter/ipvs/ip_vs.ko.zst\n",
            ),
        );
        assert_eq!(k.module_state("ip_vs_wlc"), ModuleState::Loadable);
        assert!(matches!(
            k.module_state("ip_vs_lblcr"),
            ModuleState::Missing(_)
        ));
    }

    #[test]
    fn sysctl_names_map_to_proc_sys_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(normalize_sysctl("4096\t87380 \n"), "4096 87380");
    }
}
