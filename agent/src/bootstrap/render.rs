//! Desired state -> the exact bytes of every managed file, the kernel
//! modules and the sysctls. Pure: no file is read here (secrets are read
//! beforehand by [`gather_secrets`], the only I/O in this module) so the
//! same input renders the same bytes every time, which is what makes
//! drift detection and the golden tests meaningful.
//!
//! Formats, as their readers define them:
//! - K3s config drop-in: YAML whose keys are `k3s server|agent` flag names;
//!   `key+:` appends to a list set by an earlier file. Every key rendered is
//!   checked against [`super::k3s::accepts_key`] (see the tests).
//! - `registries.yaml`: K3s's `mirrors:` / `configs:` document.
//! - containerd template: a Go template K3s executes with its own base
//!   template available as `{{ template "base" . }}` (K3s >= the September
//!   2023 releases). The base already emits the CRI table that holds
//!   `snapshotter` and `disable_snapshot_annotations` *whenever K3s's own
//!   snapshotter setting is non-empty* (`[plugins."io.containerd.grpc.v1.cri".containerd]`
//!   in config version 2, `[plugins.'io.containerd.cri.v1.images']` in
//!   version 3), with `disable_snapshot_annotations = true` for everything
//!   but stargz. TOML allows neither a table nor a key twice, so the nydus
//!   settings cannot be appended to that table. Instead the drop-in sets
//!   K3s's `snapshotter: ""`: the base then leaves the table out, and this
//!   template declares it once with `snapshotter = "nydus"` and
//!   `disable_snapshot_annotations = false`. The base never emits
//!   `proxy_plugins`, so `[proxy_plugins.nydus]` is added as is.
//! - nydus-snapshotter: its `config.toml` (format `version = 1`), the
//!   nydusd JSON it points at, and a systemd unit shaped like upstream's
//!   `misc/snapshotter/nydus-snapshotter.service`.
//! - `modules-load.d` and `sysctl.d` files (systemd's formats).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{BootstrapConfig, KubeProxyMode, Role, Snapshotter};

use super::k3s::{ContainerdTemplate, K3sInfo, NftablesSupport};

/// The drop-in's name. K3s reads `config.yaml.d/*.yaml` in lexical order
/// and later files win: operators' own drop-ins numbered above 50 override
/// ours, those below are overridden.
pub(crate) const DROPIN_PATH: &str = "/etc/rancher/k3s/config.yaml.d/50-edge-agent.yaml";
pub(crate) const REGISTRIES_PATH: &str = "/etc/rancher/k3s/registries.yaml";
pub(crate) const MODULES_PATH: &str = "/etc/modules-load.d/edge-agent.conf";
pub(crate) const SYSCTL_PATH: &str = "/etc/sysctl.d/90-edge-agent.conf";
pub(crate) const NYDUS_CONFIG_PATH: &str = "/etc/nydus/config.toml";
pub(crate) const NYDUSD_CONFIG_PATH: &str = "/etc/nydus/nydusd-config.fusedev.json";
pub(crate) const NYDUS_UNIT: &str = "nydus-snapshotter.service";
pub(crate) const NYDUS_UNIT_PATH: &str = "/etc/systemd/system/nydus-snapshotter.service";
/// K3s's default `--data-dir` for root.
pub(crate) const DEFAULT_DATA_DIR: &str = "/var/lib/rancher/k3s";

/// inotify limits: every pod's log tailer and every configmap watcher takes
/// an inotify instance; the kernel default of 128 instances per user runs
/// out at a few dozen pods ("too many open files" from kubelet/containerd).
const INOTIFY_MAX_USER_INSTANCES: &str = "8192";
const INOTIFY_MAX_USER_WATCHES: &str = "524288";

/// Who reads a managed file, and so must restart when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Reader {
    K3s,
    Nydus,
    /// systemd-modules-load / systemd-sysctl at boot; applied live by the
    /// reconciler instead of by a restart.
    Boot,
}

/// One file the reconciler owns, fully rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderedFile {
    /// The path on the node (absolute; below the root when written).
    pub(crate) path: PathBuf,
    pub(crate) content: Vec<u8>,
    pub(crate) mode: u32,
    pub(crate) reader: Reader,
    /// Holds credentials: never shown in a diff, never logged.
    pub(crate) sensitive: bool,
}

/// Something that stops `apply`: the plan is still shown, with these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The `agent.toml` key to look at, when there is one.
    pub(crate) key: Option<String>,
    pub(crate) message: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{k}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Everything that should be on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rendered {
    pub(crate) files: Vec<RenderedFile>,
    pub(crate) modules: Vec<String>,
    pub(crate) sysctls: BTreeMap<String, String>,
    /// Things the operator should know that change nothing (e.g. "ipvs is
    /// deprecated in this Kubernetes").
    pub(crate) notes: Vec<String>,
    pub(crate) blockers: Vec<Blocker>,
}

/// Secrets read from the node for rendering. `Debug` hides them.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secrets {
    pub(crate) registry_passwords: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("registry_passwords", &self.registry_passwords.keys())
            .finish()
    }
}

/// Read the password files and check the token file, below `root`. The
/// token is never read into memory beyond a length check, never logged.
pub(crate) fn gather_secrets(cfg: &BootstrapConfig, root: &Path) -> (Secrets, Vec<Blocker>) {
    let mut blockers = Vec::new();
    let mut secrets = Secrets::default();
    if !cfg.token_file.as_os_str().is_empty()
        && let Err(why) = check_secret_file(root, &cfg.token_file, "the K3s join token")
    {
        blockers.push(Blocker {
            key: Some("bootstrap.token_file".into()),
            message: why,
        });
    }
    for (host, auth) in &cfg.registries.configs {
        if auth.password_file.as_os_str().is_empty() {
            continue;
        }
        let key = format!("bootstrap.registries.configs.\"{host}\".password_file");
        match check_secret_file(root, &auth.password_file, "a registry password") {
            Ok(bytes) => {
                let pw = String::from_utf8_lossy(&bytes);
                let pw = pw.trim_end_matches(['\n', '\r']).to_string();
                secrets.registry_passwords.insert(host.clone(), pw);
            }
            Err(why) => blockers.push(Blocker {
                key: Some(key),
                message: why,
            }),
        }
    }
    (secrets, blockers)
}

/// A secret file: present, a regular file, not readable by group or others,
/// not empty. Returns its bytes (callers that only check drop them).
fn check_secret_file(root: &Path, path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::MetadataExt;
    let full = super::under_root(root, path);
    let shown = path.display();
    let meta = std::fs::metadata(&full).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("{shown} does not exist: create it (mode 0600) holding {what}")
        }
        _ => format!("{shown} cannot be read: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a regular file: it must be a file (mode 0600) holding {what}"
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {:04o}: a file holding {what} must not be readable by group or others; run chmod 600 {shown}",
            meta.mode() & 0o7777
        ));
    }
    let bytes = std::fs::read(&full).map_err(|e| format!("{shown} cannot be read: {e}"))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{shown} is empty: it must hold {what}"));
    }
    Ok(bytes)
}

/// Render everything `cfg` asks for. `cfg.role` must be set.
pub(crate) fn render(cfg: &BootstrapConfig, k3s: &K3sInfo, secrets: &Secrets) -> Rendered {
    let mut out = Rendered::default();
    let Some(role) = cfg.role else {
        out.blockers.push(Blocker {
            key: Some("bootstrap.role".into()),
            message: "is not set: there is no desired state to reconcile; set role = \"agent\" or \"server\"".into(),
        });
        return out;
    };

    let kube_proxy_args = kube_proxy_args(cfg, k3s, &mut out);
    out.files.push(RenderedFile {
        path: PathBuf::from(DROPIN_PATH),
        content: k3s_dropin(cfg, role, &kube_proxy_args).into_bytes(),
        mode: 0o600,
        reader: Reader::K3s,
        sensitive: false,
    });

    if !cfg.registries.is_empty() {
        out.files.push(RenderedFile {
            path: PathBuf::from(REGISTRIES_PATH),
            content: registries_yaml(cfg, secrets).into_bytes(),
            mode: 0o600,
            reader: Reader::K3s,
            sensitive: !cfg.registries.configs.is_empty(),
        });
    }

    if cfg.snapshotter == Snapshotter::Nydus {
        match containerd_template_for(k3s) {
            Ok(generation) => out.files.push(RenderedFile {
                path: containerd_template_path(cfg, generation),
                content: containerd_template(cfg, generation).into_bytes(),
                mode: 0o600,
                reader: Reader::K3s,
                sensitive: false,
            }),
            Err(why) => out.blockers.push(Blocker {
                key: Some("bootstrap.snapshotter".into()),
                message: why,
            }),
        }
        out.files.push(RenderedFile {
            path: PathBuf::from(NYDUS_CONFIG_PATH),
            content: nydus_config(cfg).into_bytes(),
            mode: 0o644,
            reader: Reader::Nydus,
            sensitive: false,
        });
        out.files.push(RenderedFile {
            path: PathBuf::from(NYDUSD_CONFIG_PATH),
            content: nydusd_config().into_bytes(),
            mode: 0o644,
            reader: Reader::Nydus,
            sensitive: false,
        });
        out.files.push(RenderedFile {
            path: PathBuf::from(NYDUS_UNIT_PATH),
            content: nydus_unit(cfg).into_bytes(),
            mode: 0o644,
            reader: Reader::Nydus,
            sensitive: false,
        });
    }

    out.modules = modules(cfg);
    out.files.push(RenderedFile {
        path: PathBuf::from(MODULES_PATH),
        content: modules_file(cfg, &out.modules).into_bytes(),
        mode: 0o644,
        reader: Reader::Boot,
        sensitive: false,
    });
    out.sysctls = sysctls(cfg);
    out.files.push(RenderedFile {
        path: PathBuf::from(SYSCTL_PATH),
        content: sysctl_file(cfg, &out.sysctls).into_bytes(),
        mode: 0o644,
        reader: Reader::Boot,
        sensitive: false,
    });
    out
}

/// Which containerd template K3s will read, or why it cannot be told.
pub(crate) fn containerd_template_for(k3s: &K3sInfo) -> Result<ContainerdTemplate, String> {
    let Some(v) = k3s.version else {
        let why = k3s
            .binary_problem
            .clone()
            .unwrap_or_else(|| "no K3s version is known".into());
        return Err(format!(
            "= \"nydus\" needs the K3s version to choose the containerd template (config.toml.tmpl for containerd 1.7, config-v3.toml.tmpl for containerd 2.x, embedded from v1.31.6+k3s1 and v1.32.2+k3s1), and it cannot tell: {why}. Install K3s first, or set bootstrap.k3s_version to the version you will install (e.g. \"v1.31.6+k3s1\")"
        ));
    };
    if !v.has_base_template() {
        return Err(format!(
            "= \"nydus\" extends K3s's containerd base template, which K3s {v} does not have (it arrived in v1.24.17, v1.25.13, v1.26.8, v1.27.5 and v1.28.1): upgrade K3s, or use snapshotter = \"overlayfs\""
        ));
    }
    Ok(v.containerd_template())
}

pub(crate) fn containerd_template_path(
    cfg: &BootstrapConfig,
    generation: ContainerdTemplate,
) -> PathBuf {
    cfg.data_dir
        .join("agent/etc/containerd")
        .join(generation.file_name())
}

fn kube_proxy_args(cfg: &BootstrapConfig, k3s: &K3sInfo, out: &mut Rendered) -> Vec<String> {
    let kp = &cfg.kube_proxy;
    let mut args = vec![format!("proxy-mode={}", kp.mode.as_str())];
    match kp.mode {
        KubeProxyMode::Iptables => {}
        KubeProxyMode::Ipvs => {
            if kp.strict_arp() {
                args.push("ipvs-strict-arp=true".into());
            }
            args.push(format!("ipvs-scheduler={}", kp.scheduler()));
            out.notes.push(match k3s.version {
                Some(v) if v.ipvs_deprecated() => format!(
                    "kube-proxy's ipvs mode is deprecated in Kubernetes {}.{} (K3s {v}); plan the move to mode = \"nftables\"",
                    v.major, v.minor
                ),
                _ => "kube-proxy's ipvs mode is deprecated from Kubernetes 1.35; mode = \"nftables\" is its successor".into(),
            });
        }
        KubeProxyMode::Nftables => match k3s.version.map(|v| (v, v.nftables_support())) {
            Some((v, NftablesSupport::Missing)) => out.blockers.push(Blocker {
                key: Some("bootstrap.kube_proxy.mode".into()),
                message: format!(
                    "= \"nftables\" needs Kubernetes 1.29 or later, and K3s {v} is Kubernetes {}.{}: upgrade K3s or use \"iptables\"",
                    v.major, v.minor
                ),
            }),
            Some((v, NftablesSupport::FeatureGate)) => {
                args.push("feature-gates=NFTablesProxyMode=true".into());
                out.notes.push(format!(
                    "kube-proxy's nftables mode is alpha in Kubernetes {}.{} (K3s {v}): the NFTablesProxyMode feature gate is switched on",
                    v.major, v.minor
                ));
            }
            Some((_, NftablesSupport::Default)) => {}
            None => out.notes.push(
                "K3s version unknown: nftables mode is rendered for Kubernetes 1.31 or later, where it needs no feature gate".into(),
            ),
        },
    }
    args
}

/// Managed-file header, in the file's comment syntax.
fn header(comment: &str, what: &str) -> String {
    format!(
        "{c} Managed by edge-agent (bootstrap): {what}\n{c} A hand edit is reported as drift and kept: `edge-agent bootstrap apply --force`\n{c} replaces it (the edited copy stays in the undo log).\n",
        c = comment
    )
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::to_string(s).expect("strings serialize")
}

fn yaml_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(key);
    out.push_str(":\n");
    for i in items {
        out.push_str("  - ");
        out.push_str(&yaml_str(i));
        out.push('\n');
    }
}

fn k3s_dropin(cfg: &BootstrapConfig, role: Role, kube_proxy_args: &[String]) -> String {
    let mut y = header("#", &format!("K3s {} settings.", role.as_str()));
    y.push_str("# K3s reads /etc/rancher/k3s/config.yaml, then config.yaml.d/*.yaml in order;\n# a key ending in \"+\" appends to the list an earlier file set.\n");
    if cfg.cluster_init {
        y.push_str("cluster-init: true\n");
    }
    if cfg.joins() {
        y.push_str(&format!("server: {}\n", yaml_str(&cfg.server)));
    }
    if !cfg.token_file.as_os_str().is_empty() {
        y.push_str(&format!(
            "token-file: {}\n",
            yaml_str(&cfg.token_file.to_string_lossy())
        ));
    }
    if cfg.data_dir != Path::new(DEFAULT_DATA_DIR) {
        y.push_str(&format!(
            "data-dir: {}\n",
            yaml_str(&cfg.data_dir.to_string_lossy())
        ));
    }
    if !cfg.node_name.is_empty() {
        y.push_str(&format!("node-name: {}\n", yaml_str(&cfg.node_name)));
    }
    if !cfg.flannel_backend.is_empty() {
        y.push_str(&format!(
            "flannel-backend: {}\n",
            yaml_str(&cfg.flannel_backend)
        ));
    }
    match cfg.snapshotter {
        Snapshotter::Overlayfs => y.push_str("snapshotter: \"overlayfs\"\n"),
        Snapshotter::Nydus => y.push_str(
            "# nydus: empty, so that K3s's base containerd template leaves the CRI\n# snapshotter table to the edge-agent template (which sets \"nydus\").\nsnapshotter: \"\"\n",
        ),
    }
    if cfg.protect_kernel_defaults {
        y.push_str("protect-kernel-defaults: true\n");
    }
    yaml_list(&mut y, "tls-san+", &cfg.tls_san);
    yaml_list(&mut y, "disable+", &cfg.disable);
    yaml_list(&mut y, "node-label+", &cfg.node_labels);
    yaml_list(&mut y, "node-taint+", &cfg.node_taints);
    yaml_list(&mut y, "kubelet-arg+", &cfg.kubelet_args);
    yaml_list(&mut y, "kube-proxy-arg+", kube_proxy_args);
    y
}

fn registries_yaml(cfg: &BootstrapConfig, secrets: &Secrets) -> String {
    let r = &cfg.registries;
    let mut y = header("#", "K3s private registries and mirrors.");
    if !r.mirrors.is_empty() {
        y.push_str("mirrors:\n");
        for (name, m) in &r.mirrors {
            y.push_str(&format!("  {}:\n    endpoint:\n", yaml_str(name)));
            for ep in &m.endpoints {
                y.push_str(&format!("      - {}\n", yaml_str(ep)));
            }
        }
    }
    if !r.configs.is_empty() {
        y.push_str("configs:\n");
        for (host, a) in &r.configs {
            y.push_str(&format!("  {}:\n", yaml_str(host)));
            if !a.username.is_empty() {
                let pw = secrets
                    .registry_passwords
                    .get(host)
                    .map(String::as_str)
                    .unwrap_or("");
                y.push_str(&format!(
                    "    auth:\n      username: {}\n      password: {}\n",
                    yaml_str(&a.username),
                    yaml_str(pw)
                ));
            }
            let tls: Vec<(&str, String)> = [
                ("ca_file", &a.ca_file),
                ("cert_file", &a.cert_file),
                ("key_file", &a.key_file),
            ]
            .into_iter()
            .filter(|(_, p)| !p.as_os_str().is_empty())
            .map(|(k, p)| (k, yaml_str(&p.to_string_lossy())))
            .collect();
            if !tls.is_empty() || a.insecure_skip_verify {
                y.push_str("    tls:\n");
                for (k, v) in tls {
                    y.push_str(&format!("      {k}: {v}\n"));
                }
                if a.insecure_skip_verify {
                    y.push_str("      insecure_skip_verify: true\n");
                }
            }
        }
    }
    y
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The containerd template: K3s's base plus the nydus snapshotter.
fn containerd_template(cfg: &BootstrapConfig, generation: ContainerdTemplate) -> String {
    let socket = toml_str(&cfg.nydus.socket.to_string_lossy());
    let mut t = header("#", "containerd for K3s with the nydus snapshotter.");
    t.push_str(&format!(
        "# K3s renders this Go template ({}) into config.toml; the base is K3s's own.\n",
        generation.describe()
    ));
    t.push_str("{{ template \"base\" . }}\n\n");
    match generation {
        ContainerdTemplate::V2 => {
            t.push_str("[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n");
            t.push_str("  snapshotter = \"nydus\"\n");
            t.push_str("  disable_snapshot_annotations = false\n");
            t.push_str("  discard_unpacked_layers = false\n");
            // The base emits default_runtime_name inside the table it now
            // leaves out; keep K3s's --default-runtime working.
            t.push_str(
                "{{- with .NodeConfig.DefaultRuntime }}\n  default_runtime_name = {{ printf \"%q\" . }}\n{{- end }}\n",
            );
        }
        ContainerdTemplate::V3 => {
            t.push_str("[plugins.'io.containerd.cri.v1.images']\n");
            t.push_str("  snapshotter = \"nydus\"\n");
            t.push_str("  disable_snapshot_annotations = false\n");
            t.push_str("  discard_unpacked_layers = false\n");
        }
    }
    t.push_str(&format!(
        "\n[proxy_plugins.nydus]\n  type = \"snapshot\"\n  address = {socket}\n"
    ));
    t
}

/// nydus-snapshotter's own config (`containerd-nydus-grpc --config`).
fn nydus_config(cfg: &BootstrapConfig) -> String {
    let n = &cfg.nydus;
    let system_sock = n
        .socket
        .parent()
        .unwrap_or(Path::new("/run/containerd-nydus"))
        .join("system.sock");
    let mut t = header("#", "nydus-snapshotter (containerd-nydus-grpc --config).");
    t.push_str("version = 1\n");
    t.push_str(&format!(
        "root = {}\n",
        toml_str(&n.state_dir.to_string_lossy())
    ));
    t.push_str(&format!(
        "address = {}\n",
        toml_str(&n.socket.to_string_lossy())
    ));
    // One nydusd per image: a crash affects one image, not the node.
    t.push_str("daemon_mode = \"dedicated\"\n");
    t.push_str("cleanup_on_close = false\n\n");
    t.push_str(&format!(
        "[system]\nenable = true\naddress = {}\n\n",
        toml_str(&system_sock.to_string_lossy())
    ));
    t.push_str("[daemon]\n");
    t.push_str(&format!(
        "nydusd_config = {}\n",
        toml_str(NYDUSD_CONFIG_PATH)
    ));
    t.push_str(&format!(
        "nydusd_path = {}\n",
        toml_str(&n.nydusd_bin.to_string_lossy())
    ));
    t.push_str(&format!(
        "nydusimage_path = {}\n",
        toml_str(&n.nydus_image_bin.to_string_lossy())
    ));
    t.push_str("fs_driver = \"fusedev\"\n");
    t.push_str("recover_policy = \"restart\"\n\n");
    // journald keeps the logs; the snapshotter's own rotation is not needed.
    t.push_str("[log]\nlog_to_stdout = true\nlevel = \"info\"\n\n");
    if !cfg.registries.mirrors.is_empty() {
        // nydusd reads containerd-style hosts.toml mirrors; K3s writes them
        // from registries.yaml into its certs.d directory.
        let certs = cfg.data_dir.join("agent/etc/containerd/certs.d");
        t.push_str(&format!(
            "[remote.mirrors_config]\ndir = {}\n\n",
            toml_str(&certs.to_string_lossy())
        ));
    }
    t.push_str("[snapshot]\nenable_nydus_overlayfs = false\nsync_remove = false\n");
    t
}

/// nydusd's config for the fusedev driver (the file `[daemon].nydusd_config`
/// names): registry backend, local blob cache, prefetch.
fn nydusd_config() -> String {
    let v = serde_json::json!({
        "device": {
            "backend": {
                "type": "registry",
                "config": { "scheme": "https", "timeout": 5, "connect_timeout": 5, "retry_limit": 2 }
            },
            "cache": { "type": "blobcache", "config": { "work_dir": "/var/lib/nydus/cache" } }
        },
        "mode": "direct",
        "digest_validate": false,
        "iostats_files": false,
        "enable_xattr": true,
        "fs_prefetch": { "enable": true, "threads_count": 2, "prefetch_all": true }
    });
    let mut s = serde_json::to_string_pretty(&v).expect("json");
    s.push('\n');
    s
}

fn nydus_unit(cfg: &BootstrapConfig) -> String {
    let mut t = header("#", "the nydus snapshotter service.");
    t.push_str("[Unit]\n");
    t.push_str("Description=nydus snapshotter (containerd remote snapshotter for K3s)\n");
    t.push_str("After=network.target\n");
    // K3s embeds containerd, so "before containerd" means before K3s.
    t.push_str("Before=k3s.service k3s-agent.service\n\n");
    t.push_str("[Service]\n");
    t.push_str("Type=simple\n");
    t.push_str("Environment=HOME=/root\n");
    t.push_str(&format!(
        "ExecStart={} --config {}\n",
        cfg.nydus.snapshotter_bin.display(),
        NYDUS_CONFIG_PATH
    ));
    t.push_str("Restart=always\nRestartSec=1\n");
    // nydusd processes must outlive a snapshotter restart: they serve the
    // running containers' filesystems.
    t.push_str("KillMode=process\n");
    t.push_str("OOMScoreAdjust=-999\n");
    t.push_str("StandardOutput=journal\nStandardError=journal\n\n");
    t.push_str("[Install]\nWantedBy=multi-user.target\n");
    t
}

/// Kernel modules, in load order, without duplicates.
pub(crate) fn modules(cfg: &BootstrapConfig) -> Vec<String> {
    let mut m: Vec<String> = vec!["br_netfilter".into(), "overlay".into()];
    match cfg.kube_proxy.mode {
        KubeProxyMode::Iptables => {}
        KubeProxyMode::Ipvs => {
            for n in ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"] {
                m.push(n.into());
            }
            m.push(format!("ip_vs_{}", cfg.kube_proxy.scheduler()));
        }
        KubeProxyMode::Nftables => {
            for n in ["nf_tables", "nf_nat", "nf_conntrack"] {
                m.push(n.into());
            }
        }
    }
    if cfg.snapshotter == Snapshotter::Nydus {
        m.push("fuse".into());
    }
    m.extend(cfg.modules.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    m.retain(|x| seen.insert(x.clone()));
    m
}

fn modules_file(cfg: &BootstrapConfig, modules: &[String]) -> String {
    let mut t = header("#", "kernel modules loaded at boot.");
    t.push_str(&format!(
        "# K3s networking and storage; kube-proxy mode {}.\n",
        cfg.kube_proxy.mode.as_str()
    ));
    for m in modules {
        t.push_str(m);
        t.push('\n');
    }
    t
}

/// Sysctls: the reconciler's own, then `cfg.sysctls` (which win).
pub(crate) fn sysctls(cfg: &BootstrapConfig) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        s.insert(k.to_string(), v.to_string());
    };
    set("net.ipv4.ip_forward", "1");
    set("net.bridge.bridge-nf-call-iptables", "1");
    set("net.bridge.bridge-nf-call-ip6tables", "1");
    set("fs.inotify.max_user_instances", INOTIFY_MAX_USER_INSTANCES);
    set("fs.inotify.max_user_watches", INOTIFY_MAX_USER_WATCHES);
    if cfg.protect_kernel_defaults {
        // With --protect-kernel-defaults the kubelet refuses to start unless
        // these match its defaults (K3s hardening guide).
        set("vm.panic_on_oom", "0");
        set("vm.overcommit_memory", "1");
        set("kernel.panic", "10");
        set("kernel.panic_on_oops", "1");
    }
    if cfg.kube_proxy.strict_arp() {
        // What --ipvs-strict-arp makes kube-proxy set: answer ARP only for
        // addresses on the receiving interface.
        set("net.ipv4.conf.all.arp_ignore", "1");
        set("net.ipv4.conf.all.arp_announce", "2");
    }
    for (k, v) in &cfg.sysctls {
        s.insert(k.clone(), v.trim().to_string());
    }
    s
}

fn sysctl_file(cfg: &BootstrapConfig, sysctls: &BTreeMap<String, String>) -> String {
    let mut t = header("#", "kernel settings for K3s.");
    if cfg.protect_kernel_defaults {
        t.push_str("# Includes the values kubelet's --protect-kernel-defaults requires.\n");
    }
    for (k, v) in sysctls {
        t.push_str(&format!("{k} = {v}\n"));
    }
    t
}
