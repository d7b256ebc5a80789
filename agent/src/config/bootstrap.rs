//! `[bootstrap]`: the desired state of the node's K3s host files (K3s
//! config drop-in, registries, containerd template for nydus, nydus
//! snapshotter, kernel modules and sysctls).
//!
//! This is only the schema and its validation: no file is read here (a
//! missing token file is a fact about the node, checked when the reconciler
//! renders, not a reason to refuse to start the agent). An empty `role`
//! means "no desired state": the section is inert, which keeps an empty
//! `agent.toml` valid.
//!
//! Host paths (`token_file`, `data_dir`, `k3s_bin`, ...) are absolute paths
//! *on the node*; the reconciler reads and writes them below `root`, so they
//! are never resolved against the config file's directory and may not
//! contain `..` (a path must not climb out of the root).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{HumanDuration, Problem, resolve_path};

/// The shortest drift-check interval accepted. Each check renders every file
/// and reads a handful of files and `/proc/sys` values: cheap, but a check
/// every second on a busy node is noise. Tests use 1 s.
const MIN_INTERVAL_SECS: u64 = 1;

/// K3s's `--disable` accepts these packaged components (`k3s server --help`).
pub(crate) const K3S_DISABLE_ITEMS: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

/// K3s's `--flannel-backend` values (`k3s server --help`; `ipsec` and
/// `wireguard` were removed in favour of `wireguard-native`).
pub(crate) const FLANNEL_BACKENDS: &[&str] = &["none", "vxlan", "host-gw", "wireguard-native"];

/// IPVS schedulers kube-proxy accepts for `--ipvs-scheduler`; each needs the
/// kernel module `ip_vs_<name>`.
pub(crate) const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh",
];

/// Which K3s command this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `k3s server`: the first server (`cluster_init = true`), a server that
    /// joins one (`server` set), or a single server with its SQLite datastore.
    Server,
    /// `k3s agent`: joins the server at `server`.
    Agent,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }

    /// The systemd unit K3s's install script creates for this role.
    pub(crate) fn default_service(self) -> &'static str {
        match self {
            Role::Server => "k3s.service",
            Role::Agent => "k3s-agent.service",
        }
    }
}

/// kube-proxy's `--proxy-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    /// kube-proxy's default.
    #[default]
    Iptables,
    /// IPVS. Deprecated from Kubernetes 1.35 (kept working, no new
    /// features); needs the `ip_vs*` kernel modules, and since Kubernetes
    /// 1.26 kube-proxy exits rather than falling back to iptables when
    /// they are missing.
    Ipvs,
    /// nftables: alpha in 1.29 (feature gate), beta and on by default in
    /// 1.31, GA in 1.33. The successor to both iptables and IPVS modes.
    Nftables,
}

impl KubeProxyMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KubeProxyMode::Iptables => "iptables",
            KubeProxyMode::Ipvs => "ipvs",
            KubeProxyMode::Nftables => "nftables",
        }
    }
}

/// containerd snapshotter for K3s's embedded containerd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshotter {
    /// K3s's default.
    #[default]
    Overlayfs,
    /// nydus-snapshotter as a containerd proxy plugin (lazy image pulling).
    Nydus,
}

/// `[bootstrap.kube_proxy]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeProxyConfig {
    pub mode: KubeProxyMode,
    /// ipvs only: `--ipvs-strict-arp` (needed by MetalLB-style L2 load
    /// balancers); also sets arp_ignore/arp_announce in the sysctl file.
    pub(crate) ipvs_strict_arp: Option<bool>,
    /// ipvs only: `--ipvs-scheduler` (default "rr").
    pub(crate) ipvs_scheduler: Option<String>,
}

impl KubeProxyConfig {
    pub(crate) fn strict_arp(&self) -> bool {
        self.mode == KubeProxyMode::Ipvs && self.ipvs_strict_arp.unwrap_or(false)
    }

    pub(crate) fn scheduler(&self) -> &str {
        self.ipvs_scheduler.as_deref().unwrap_or("rr")
    }
}

/// `[bootstrap.nydus]`: where nydus-snapshotter and nydusd live on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NydusConfig {
    /// `containerd-nydus-grpc`, the snapshotter daemon.
    pub(crate) snapshotter_bin: PathBuf,
    pub(crate) nydusd_bin: PathBuf,
    pub(crate) nydus_image_bin: PathBuf,
    /// The snapshotter's gRPC socket (containerd's proxy plugin address).
    pub(crate) socket: PathBuf,
    /// The snapshotter's own state directory.
    pub(crate) state_dir: PathBuf,
}

impl Default for NydusConfig {
    fn default() -> Self {
        Self {
            snapshotter_bin: PathBuf::from("/usr/local/bin/containerd-nydus-grpc"),
            nydusd_bin: PathBuf::from("/usr/local/bin/nydusd"),
            nydus_image_bin: PathBuf::from("/usr/local/bin/nydus-image"),
            socket: PathBuf::from("/run/containerd-nydus/containerd-nydus-grpc.sock"),
            state_dir: PathBuf::from("/var/lib/containerd-nydus"),
        }
    }
}

/// One registry mirror in `registries.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MirrorConfig {
    /// Endpoints tried in order (`https://mirror.example:5000`).
    pub(crate) endpoints: Vec<String>,
}

/// Credentials and TLS for one registry host in `registries.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RegistryAuthConfig {
    pub(crate) username: String,
    /// A file (mode 0600, on the node) holding the password. The password
    /// itself never appears in agent.toml, in logs or in `plan` output.
    pub(crate) password_file: PathBuf,
    pub(crate) ca_file: PathBuf,
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) insecure_skip_verify: bool,
}

/// `[bootstrap.registries]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RegistriesConfig {
    /// Registry name (`docker.io`, `registry.example:5000`) -> mirror.
    pub(crate) mirrors: BTreeMap<String, MirrorConfig>,
    /// Registry host -> credentials/TLS.
    pub(crate) configs: BTreeMap<String, RegistryAuthConfig>,
}

impl RegistriesConfig {
    pub(crate) fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.configs.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Run the reconciler in the daemon: drift checks on a timer. The
    /// daemon only reads unless `auto_correct` is also true.
    pub(crate) enabled: bool,
    /// Root under which every managed path lives ("/" on a real node).
    /// Kernel state (modules, sysctls) is only checked and changed when it
    /// is "/".
    pub root: PathBuf,
    /// How often the daemon compares the node with the desired state.
    pub(crate) interval: HumanDuration,
    /// Let the daemon apply pending changes and undo drift (a hand-edited
    /// managed file is overwritten; its content is kept in the undo log).
    pub(crate) auto_correct: bool,

    /// Empty: no desired state (the reconciler has nothing to do).
    pub role: Option<Role>,
    /// server only: start a new cluster with embedded etcd.
    pub(crate) cluster_init: bool,
    /// URL of a K3s server to join (`https://10.0.0.1:6443`).
    pub server: String,
    /// File on the node holding the join token (mode 0600). Rendered as
    /// `token-file`; the token is never copied, logged or shown.
    pub token_file: PathBuf,
    /// K3s data directory (`--data-dir`).
    pub(crate) data_dir: PathBuf,
    /// The K3s binary asked `k3s --version`.
    pub(crate) k3s_bin: PathBuf,
    /// The K3s version to render for when the binary is not installed yet
    /// ("v1.31.6+k3s1"). When the binary answers, its version wins.
    pub k3s_version: String,
    /// systemd unit restarted when a file K3s reads changes. Empty: the
    /// install script's name for the role (k3s.service, k3s-agent.service).
    pub(crate) k3s_service: String,
    pub(crate) node_name: String,
    /// server only: extra Subject Alternative Names.
    pub(crate) tls_san: Vec<String>,
    /// `key=value`, applied at registration.
    pub(crate) node_labels: Vec<String>,
    /// `key=value:Effect`, applied at registration.
    pub(crate) node_taints: Vec<String>,
    /// server only: packaged components not to deploy.
    pub(crate) disable: Vec<String>,
    /// kubelet flags without the leading dashes (`max-pods=250`).
    pub(crate) kubelet_args: Vec<String>,
    /// server only: flannel backend; empty leaves K3s's default (vxlan).
    pub(crate) flannel_backend: String,
    /// `--protect-kernel-defaults`, and the kernel.panic / vm settings K3s's
    /// hardening guide asks for in the sysctl file.
    pub(crate) protect_kernel_defaults: bool,
    pub snapshotter: Snapshotter,
    pub kube_proxy: KubeProxyConfig,
    pub(crate) nydus: NydusConfig,
    pub(crate) registries: RegistriesConfig,
    /// Extra sysctls (override the reconciler's own where the key is the same).
    pub(crate) sysctls: BTreeMap<String, String>,
    /// Extra kernel modules to load at boot.
    pub(crate) modules: Vec<String>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            root: PathBuf::from("/"),
            interval: HumanDuration::from_secs(300),
            auto_correct: false,
            role: None,
            cluster_init: false,
            server: String::new(),
            token_file: PathBuf::new(),
            data_dir: PathBuf::from("/var/lib/rancher/k3s"),
            k3s_bin: PathBuf::from("/usr/local/bin/k3s"),
            k3s_version: String::new(),
            k3s_service: String::new(),
            node_name: String::new(),
            tls_san: Vec::new(),
            node_labels: Vec::new(),
            node_taints: Vec::new(),
            disable: Vec::new(),
            kubelet_args: Vec::new(),
            flannel_backend: String::new(),
            protect_kernel_defaults: true,
            snapshotter: Snapshotter::Overlayfs,
            kube_proxy: KubeProxyConfig::default(),
            nydus: NydusConfig::default(),
            registries: RegistriesConfig::default(),
            sysctls: BTreeMap::new(),
            modules: Vec::new(),
        }
    }
}

impl BootstrapConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.root);
    }

    /// The systemd unit to restart when K3s's files change.
    pub(crate) fn k3s_service(&self) -> String {
        if !self.k3s_service.is_empty() {
            self.k3s_service.clone()
        } else {
            self.role
                .unwrap_or(Role::Agent)
                .default_service()
                .to_string()
        }
    }

    /// Does this node join an existing cluster (and so need a token)?
    pub(crate) fn joins(&self) -> bool {
        !self.server.is_empty()
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut p = |key: &str, reason: String| {
            problems.push(Problem::new(format!("bootstrap.{key}"), reason));
        };
        if self.interval.get().as_secs() < MIN_INTERVAL_SECS {
            p(
                "interval",
                format!("must be at least \"{MIN_INTERVAL_SECS}s\""),
            );
        }
        if self.root.as_os_str().is_empty() {
            p("root", "must not be empty; use \"/\" on a real node".into());
        }
        let Some(role) = self.role else {
            if self.enabled {
                p(
                    "role",
                    "is not set, but bootstrap.enabled = true needs a desired state: set role = \"agent\" or \"server\", or set enabled = false".into(),
                );
            }
            return;
        };
        self.validate_role(role, &mut p);
        self.validate_files(&mut p);
        self.validate_k3s_flags(&mut p);
        self.validate_kube_proxy(&mut p);
        self.validate_registries(&mut p);
        self.validate_kernel(&mut p);
    }

    /// Exactly one of "first server", "joining server", "agent", with what
    /// joining needs.
    fn validate_role(&self, role: Role, p: &mut impl FnMut(&str, String)) {
        if self.cluster_init && self.joins() {
            p(
                "cluster_init",
                format!(
                    "conflicts with bootstrap.server = \"{}\": cluster_init starts a new cluster, server joins an existing one; keep one of them",
                    self.server
                ),
            );
        }
        if role == Role::Agent {
            if self.cluster_init {
                p(
                    "cluster_init",
                    "is a server option, but role = \"agent\": remove it, or set role = \"server\""
                        .into(),
                );
            }
            if !self.joins() {
                p(
                    "server",
                    "is required for role = \"agent\": the URL of a K3s server, e.g. \"https://10.0.0.1:6443\"".into(),
                );
            }
            for (key, set) in [
                ("tls_san", !self.tls_san.is_empty()),
                ("disable", !self.disable.is_empty()),
                ("flannel_backend", !self.flannel_backend.is_empty()),
            ] {
                if set {
                    p(
                        key,
                        "is a server option, but role = \"agent\": remove it, or set role = \"server\"".into(),
                    );
                }
            }
        }
        if self.joins() {
            check_server_url(&self.server, p);
            if self.token_file.as_os_str().is_empty() {
                p(
                    "token_file",
                    "is required to join a cluster: a file on the node (mode 0600) holding the K3s join token, e.g. \"/etc/rancher/k3s/token\"".into(),
                );
            }
        }
    }

    /// Host paths, the K3s version and its service.
    fn validate_files(&self, p: &mut impl FnMut(&str, String)) {
        for (key, path) in [
            ("token_file", &self.token_file),
            ("data_dir", &self.data_dir),
            ("k3s_bin", &self.k3s_bin),
            ("nydus.snapshotter_bin", &self.nydus.snapshotter_bin),
            ("nydus.nydusd_bin", &self.nydus.nydusd_bin),
            ("nydus.nydus_image_bin", &self.nydus.nydus_image_bin),
            ("nydus.socket", &self.nydus.socket),
            ("nydus.state_dir", &self.nydus.state_dir),
        ] {
            check_host_path(key, path, key == "token_file", p);
        }
        if !self.k3s_version.is_empty() && !looks_like_k3s_version(&self.k3s_version) {
            p(
                "k3s_version",
                format!(
                    "\"{}\" is not a K3s version; write it as `k3s --version` prints it, e.g. \"v1.31.6+k3s1\"",
                    self.k3s_version
                ),
            );
        }
        if !self.k3s_service.is_empty() && !self.k3s_service.ends_with(".service") {
            p(
                "k3s_service",
                format!(
                    "\"{}\" is not a systemd service unit name; e.g. \"k3s-agent.service\"",
                    self.k3s_service
                ),
            );
        }
    }

    /// What becomes K3s flags: names, labels, taints, components, kubelet
    /// arguments, the flannel backend.
    fn validate_k3s_flags(&self, p: &mut impl FnMut(&str, String)) {
        if self.node_name.contains(char::is_whitespace) {
            p("node_name", "must not contain whitespace".into());
        }
        for (i, san) in self.tls_san.iter().enumerate() {
            if san.is_empty() || san.contains(char::is_whitespace) || san.contains(',') {
                p(
                    &format!("tls_san[{i}]"),
                    format!("\"{san}\" is not a host name or IP address"),
                );
            }
        }
        for (i, label) in self.node_labels.iter().enumerate() {
            if let Err(why) = check_label(label) {
                p(&format!("node_labels[{i}]"), why);
            }
        }
        for (i, taint) in self.node_taints.iter().enumerate() {
            if let Err(why) = check_taint(taint) {
                p(&format!("node_taints[{i}]"), why);
            }
        }
        for (i, item) in self.disable.iter().enumerate() {
            if !K3S_DISABLE_ITEMS.contains(&item.as_str()) {
                p(
                    &format!("disable[{i}]"),
                    format!(
                        "\"{item}\" is not a K3s packaged component; use one of: {}",
                        K3S_DISABLE_ITEMS.join(", ")
                    ),
                );
            }
        }
        for (i, arg) in self.kubelet_args.iter().enumerate() {
            if let Err(why) = check_flag_arg(arg) {
                p(&format!("kubelet_args[{i}]"), why);
            }
        }
        if !self.flannel_backend.is_empty()
            && !FLANNEL_BACKENDS.contains(&self.flannel_backend.as_str())
        {
            p(
                "flannel_backend",
                format!(
                    "\"{}\" is not a flannel backend K3s accepts; use one of: {}",
                    self.flannel_backend,
                    FLANNEL_BACKENDS.join(", ")
                ),
            );
        }
    }

    fn validate_kube_proxy(&self, p: &mut impl FnMut(&str, String)) {
        let kp = &self.kube_proxy;
        if kp.mode != KubeProxyMode::Ipvs {
            for (key, set) in [
                ("kube_proxy.ipvs_strict_arp", kp.ipvs_strict_arp.is_some()),
                ("kube_proxy.ipvs_scheduler", kp.ipvs_scheduler.is_some()),
            ] {
                if set {
                    p(
                        key,
                        format!(
                            "only applies to kube_proxy.mode = \"ipvs\", but mode is \"{}\": remove it",
                            kp.mode.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(s) = &kp.ipvs_scheduler
            && !IPVS_SCHEDULERS.contains(&s.as_str())
        {
            p(
                "kube_proxy.ipvs_scheduler",
                format!(
                    "\"{s}\" is not an IPVS scheduler; use one of: {}",
                    IPVS_SCHEDULERS.join(", ")
                ),
            );
        }
    }

    /// Mirrors and registry credentials (registries.yaml).
    fn validate_registries(&self, p: &mut impl FnMut(&str, String)) {
        for (name, mirror) in &self.registries.mirrors {
            let key = format!("registries.mirrors.\"{name}\"");
            if let Err(why) = check_registry_name(name) {
                p(&key, why);
            }
            if mirror.endpoints.is_empty() {
                p(
                    &format!("{key}.endpoints"),
                    "must list at least one endpoint, e.g. [\"https://mirror.example:5000\"]"
                        .into(),
                );
            }
            for (i, ep) in mirror.endpoints.iter().enumerate() {
                if !(ep.starts_with("https://") || ep.starts_with("http://"))
                    || ep.contains(char::is_whitespace)
                    || ep.len() <= "https://".len()
                {
                    p(
                        &format!("{key}.endpoints[{i}]"),
                        format!("\"{ep}\" is not an http:// or https:// URL"),
                    );
                }
            }
        }
        for (host, auth) in &self.registries.configs {
            let key = format!("registries.configs.\"{host}\"");
            if let Err(why) = check_registry_name(host) {
                p(&key, why);
            }
            if !auth.username.is_empty() && auth.password_file.as_os_str().is_empty() {
                p(
                    &format!("{key}.password_file"),
                    "is required with a username: a file on the node (mode 0600) holding the password".into(),
                );
            }
            if auth.username.is_empty() && !auth.password_file.as_os_str().is_empty() {
                p(
                    &format!("{key}.username"),
                    "is required with a password_file".into(),
                );
            }
            if auth.cert_file.as_os_str().is_empty() != auth.key_file.as_os_str().is_empty() {
                p(
                    &format!("{key}.key_file"),
                    "cert_file and key_file go together: set both or neither".into(),
                );
            }
            for (sub, path) in [
                ("password_file", &auth.password_file),
                ("ca_file", &auth.ca_file),
                ("cert_file", &auth.cert_file),
                ("key_file", &auth.key_file),
            ] {
                check_host_path(&format!("{key}.{sub}"), path, true, p);
            }
        }
    }

    /// Sysctls and modules.
    fn validate_kernel(&self, p: &mut impl FnMut(&str, String)) {
        for (k, v) in &self.sysctls {
            let key = format!("sysctls.\"{k}\"");
            if let Err(why) = check_sysctl_name(k) {
                p(&key, why);
            }
            if v.trim().is_empty() || v.contains(['\n', '\r']) {
                p(
                    &key,
                    format!("value {v:?} must be one non-empty line, e.g. \"262144\""),
                );
            }
        }
        for (i, m) in self.modules.iter().enumerate() {
            if let Err(why) = check_module_name(m) {
                p(&format!("modules[{i}]"), why);
            }
        }
    }
}

fn check_server_url(url: &str, p: &mut impl FnMut(&str, String)) {
    let Some(rest) = url.strip_prefix("https://") else {
        p(
            "server",
            format!("\"{url}\" must be an https:// URL, e.g. \"https://10.0.0.1:6443\""),
        );
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains('@') {
        p(
            "server",
            format!("\"{url}\" has no usable host; e.g. \"https://10.0.0.1:6443\""),
        );
    }
}

/// Host paths: absolute, no `..`, no NUL/newline (they end up in YAML and
/// TOML files). Empty is allowed only where `optional`.
fn check_host_path(key: &str, path: &Path, optional: bool, p: &mut impl FnMut(&str, String)) {
    if path.as_os_str().is_empty() {
        if !optional {
            p(key, "must not be empty".into());
        }
        return;
    }
    let s = path.to_string_lossy();
    if !path.is_absolute() {
        p(
            key,
            format!(
                "\"{s}\" must be an absolute path on the node, e.g. \"/etc/rancher/k3s/token\""
            ),
        );
    } else if path.components().any(|c| matches!(c, Component::ParentDir)) {
        p(
            key,
            format!("\"{s}\" must not contain \"..\": every managed path stays below the root"),
        );
    } else if s.contains(['\n', '\r', '\0', '"']) {
        p(key, format!("{s:?} contains a quote or control character"));
    }
}

fn looks_like_k3s_version(v: &str) -> bool {
    crate::bootstrap::K3sVersion::parse(v).is_some()
}

/// `key=value` (value may be empty); Kubernetes label keys are
/// `[prefix/]name`.
fn check_label(label: &str) -> Result<(), String> {
    let (key, value) = label.split_once('=').ok_or_else(|| {
        format!("\"{label}\" is not key=value, e.g. \"topology.kubernetes.io/zone=edge-1\"")
    })?;
    check_label_key(key).map_err(|why| format!("\"{label}\": {why}"))?;
    if value.len() > 63
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "\"{label}\": the value must be at most 63 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

fn check_label_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    if name.is_empty()
        || name.len() > 63
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(format!(
            "key \"{key}\" must be [prefix/]name with letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// `key[=value]:Effect`.
fn check_taint(taint: &str) -> Result<(), String> {
    const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
    let (kv, effect) = taint.rsplit_once(':').ok_or_else(|| {
        format!("\"{taint}\" is not key=value:Effect, e.g. \"dedicated=edge:NoSchedule\"")
    })?;
    if !EFFECTS.contains(&effect) {
        return Err(format!(
            "\"{taint}\": effect \"{effect}\" must be one of {}",
            EFFECTS.join(", ")
        ));
    }
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    check_label_key(key).map_err(|why| format!("\"{taint}\": {why}"))
}

/// `name=value` or `name`, as K3s's `kubelet-arg` takes them.
fn check_flag_arg(arg: &str) -> Result<(), String> {
    if arg.starts_with('-') {
        return Err(format!(
            "\"{arg}\": write the flag without leading dashes, e.g. \"max-pods=250\""
        ));
    }
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || arg.contains(['\n', '\r'])
    {
        return Err(format!(
            "\"{arg}\" is not name=value, e.g. \"eviction-hard=memory.available<100Mi\""
        ));
    }
    Ok(())
}

fn check_registry_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name == "*"
        || name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'))
    {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a registry host (letters, digits, '-', '.', ':'), e.g. \"docker.io\""
        ))
    }
}

/// `net.ipv4.ip_forward`: dots between lowercase words; never a path.
pub(crate) fn check_sysctl_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a sysctl name (dot-separated words, e.g. \"vm.max_map_count\")"
        ))
    }
}

fn check_module_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 55
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a kernel module name (letters, digits, '_', '-'), e.g. \"ip_vs\""
        ))
    }
}

impl Section for BootstrapConfig {
    const ID: SectionId = SectionId::Bootstrap;
    /// A change runs a check (and auto-correct) on the new desired state.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;
    use std::path::Path;

    fn problems(text: &str) -> String {
        match AgentConfig::from_toml(text, Path::new("agent.toml")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const AGENT: &str = "[bootstrap]\nrole = \"agent\"\nserver = \"https://10.0.0.1:6443\"\ntoken_file = \"/etc/rancher/k3s/token\"\n";

    #[test]
    fn an_empty_bootstrap_section_is_inert_and_valid() {
        assert_eq!(problems("[bootstrap]\n"), "");
    }

    #[test]
    fn enabling_the_stage_without_a_role_says_what_to_set() {
        let e = problems("[bootstrap]\nenabled = true\n");
        assert!(e.contains("bootstrap.role: is not set"), "{e}");
    }

    #[test]
    fn a_complete_agent_is_valid() {
        assert_eq!(problems(AGENT), "");
    }

    #[test]
    fn an_unknown_kube_proxy_mode_names_the_key_and_the_choices() {
        let e = problems(&format!("{AGENT}[bootstrap.kube_proxy]\nmode = \"ebpf\"\n"));
        assert!(e.contains("bootstrap.kube_proxy.mode"), "{e}");
        assert!(
            e.contains("ebpf") && e.contains("nftables") && e.contains("ipvs"),
            "{e}"
        );
    }

    #[test]
    fn conflicting_role_settings_are_refused_with_the_way_out() {
        let e = problems(
            "[bootstrap]\nrole = \"server\"\ncluster_init = true\nserver = \"https://10.0.0.1:6443\"\ntoken_file = \"/t\"\n",
        );
        assert!(
            e.contains("bootstrap.cluster_init: conflicts with bootstrap.server"),
            "{e}"
        );
        let e = problems(&format!("{AGENT}cluster_init = true\ntls_san = [\"a\"]\n"));
        assert!(
            e.contains("bootstrap.cluster_init: is a server option"),
            "{e}"
        );
        assert!(e.contains("bootstrap.tls_san: is a server option"), "{e}");
        let e = problems("[bootstrap]\nrole = \"agent\"\n");
        assert!(
            e.contains("bootstrap.server: is required for role = \"agent\""),
            "{e}"
        );
    }

    #[test]
    fn joining_needs_a_token_file() {
        let e = problems("[bootstrap]\nrole = \"agent\"\nserver = \"https://s:6443\"\n");
        assert!(
            e.contains("bootstrap.token_file: is required to join"),
            "{e}"
        );
    }

    #[test]
    fn ipvs_options_on_another_mode_are_refused() {
        let e = problems(&format!(
            "{AGENT}[bootstrap.kube_proxy]\nmode = \"nftables\"\nipvs_strict_arp = true\n"
        ));
        assert!(
            e.contains("bootstrap.kube_proxy.ipvs_strict_arp: only applies"),
            "{e}"
        );
        let e = problems(&format!(
            "{AGENT}[bootstrap.kube_proxy]\nmode = \"ipvs\"\nipvs_scheduler = \"fastest\"\n"
        ));
        assert!(e.contains("\"fastest\" is not an IPVS scheduler"), "{e}");
    }

    #[test]
    fn paths_that_climb_out_of_the_root_are_refused() {
        let e = problems(
            "[bootstrap]\nrole = \"agent\"\nserver = \"https://s:6443\"\ntoken_file = \"/etc/../../../tmp/t\"\ndata_dir = \"var/lib/k3s\"\n",
        );
        assert!(
            e.contains("bootstrap.token_file") && e.contains("\"..\""),
            "{e}"
        );
        assert!(
            e.contains("bootstrap.data_dir") && e.contains("absolute"),
            "{e}"
        );
    }

    #[test]
    fn sysctl_and_module_names_cannot_smuggle_paths() {
        let e = problems(&format!(
            "{AGENT}modules = [\"../../evil\"]\n[bootstrap.sysctls]\n\"../../../etc/shadow\" = \"1\"\n\"kernel..x\" = \"1\"\n"
        ));
        assert!(e.contains("bootstrap.modules[0]"), "{e}");
        assert!(
            e.contains("\"../../../etc/shadow\" is not a sysctl name"),
            "{e}"
        );
        assert!(e.contains("\"kernel..x\" is not a sysctl name"), "{e}");
    }

    #[test]
    fn labels_taints_and_kubelet_args_are_checked() {
        let e = problems(&format!(
            "{AGENT}node_labels = [\"nokey\"]\nnode_taints = [\"a=b:Sometimes\"]\nkubelet_args = [\"--max-pods=250\"]\n"
        ));
        assert!(e.contains("bootstrap.node_labels[0]"), "{e}");
        assert!(
            e.contains("bootstrap.node_taints[0]") && e.contains("Sometimes"),
            "{e}"
        );
        assert!(e.contains("without leading dashes"), "{e}");
    }

    #[test]
    fn registry_credentials_need_a_password_file_not_a_password() {
        let e = problems(&format!(
            "{AGENT}[bootstrap.registries.configs.\"r.example\"]\nusername = \"edge\"\n"
        ));
        assert!(
            e.contains("password_file: is required with a username"),
            "{e}"
        );
        let e = problems(&format!(
            "{AGENT}[bootstrap.registries.configs.\"r.example\"]\npassword = \"x\"\n"
        ));
        assert!(e.contains("password"), "{e}");
    }
}
