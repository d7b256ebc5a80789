//! Facts about K3s the reconciler relies on: its version and what follows
//! from it (which containerd template file it reads, whether it has a base
//! template to extend, which kube-proxy modes its Kubernetes has), and the
//! config keys it accepts.
//!
//! Everything here is pure except [`detect`], which runs `k3s --version`
//! on the real root (`/`) and, under any other root, reads the version out
//! of the binary's bytes without running it (a root others could write to
//! must not get a binary run as root).
//! Each version boundary names where it comes from, so that the next person
//! can re-check it when K3s moves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the key lists below come from: the `k3s server --help` and
/// `k3s agent --help` blocks in k3s-io/docs (`docs/cli/server.md`,
/// `docs/cli/agent.md`). Those blocks list `--nonroot-devices`,
/// `--embedded-registry` and `--disable-apiserver-lb`, so they describe the
/// K3s v1.31-and-later command line; keys only older releases had
/// (`no-deploy`, `cluster-secret`) are deliberately absent.
#[cfg(test)]
pub(crate) const K3S_KEYS_SOURCE: &str =
    "k3s-io/docs docs/cli/server.md and docs/cli/agent.md (`k3s server|agent --help`, K3s v1.31+)";

/// Config-file keys `k3s agent` accepts (its flag names, without dashes).
#[cfg(test)]
pub(crate) const AGENT_KEYS: &[&str] = &[
    "config",
    "debug",
    "v",
    "vmodule",
    "log",
    "alsologtostderr",
    "token",
    "token-file",
    "server",
    "data-dir",
    "node-name",
    "with-node-id",
    "node-label",
    "node-taint",
    "image-credential-provider-bin-dir",
    "image-credential-provider-config",
    "selinux",
    "lb-server-port",
    "protect-kernel-defaults",
    "container-runtime-endpoint",
    "default-runtime",
    "image-service-endpoint",
    "pause-image",
    "snapshotter",
    "private-registry",
    "disable-default-registry-endpoint",
    "nonroot-devices",
    "node-ip",
    "bind-address",
    "node-external-ip",
    "node-internal-dns",
    "node-external-dns",
    "resolv-conf",
    "flannel-iface",
    "flannel-conf",
    "flannel-cni-conf",
    "kubelet-arg",
    "kube-proxy-arg",
    "enable-pprof",
    "rootless",
    "prefer-bundled-bin",
    "docker",
    "vpn-auth",
    "vpn-auth-file",
    "disable-apiserver-lb",
];

/// Config-file keys only `k3s server` accepts (it also accepts every agent
/// key except `disable-apiserver-lb`, which the agent alone has).
#[cfg(test)]
pub(crate) const SERVER_ONLY_KEYS: &[&str] = &[
    "https-listen-port",
    "advertise-address",
    "advertise-port",
    "tls-san",
    "tls-san-security",
    "cluster-cidr",
    "service-cidr",
    "service-node-port-range",
    "cluster-dns",
    "cluster-domain",
    "flannel-backend",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "egress-selector-mode",
    "servicelb-namespace",
    "write-kubeconfig",
    "write-kubeconfig-mode",
    "write-kubeconfig-group",
    "helm-job-image",
    "agent-token",
    "agent-token-file",
    "cluster-init",
    "cluster-reset",
    "cluster-reset-restore-path",
    "kube-apiserver-arg",
    "etcd-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kube-cloud-controller-manager-arg",
    "datastore-endpoint",
    "datastore-cafile",
    "datastore-certfile",
    "datastore-keyfile",
    "etcd-expose-metrics",
    "etcd-disable-snapshots",
    "etcd-snapshot-name",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
    "etcd-snapshot-dir",
    "etcd-snapshot-compress",
    "etcd-s3",
    "etcd-s3-endpoint",
    "etcd-s3-endpoint-ca",
    "etcd-s3-skip-ssl-verify",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-bucket",
    "etcd-s3-region",
    "etcd-s3-folder",
    "etcd-s3-proxy",
    "etcd-s3-config-secret",
    "etcd-s3-insecure",
    "etcd-s3-timeout",
    "default-local-storage-path",
    "disable",
    "disable-scheduler",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "embedded-registry",
    "supervisor-metrics",
    "system-default-registry",
    "secrets-encryption",
    "secrets-encryption-provider",
    "disable-agent",
];

/// Whether `k3s <role>` accepts config-file key `key`. A trailing `+`
/// (K3s's "append to the value from earlier files") is not part of the key.
#[cfg(test)]
pub(crate) fn accepts_key(role: crate::config::Role, key: &str) -> bool {
    let key = key.strip_suffix('+').unwrap_or(key);
    match role {
        crate::config::Role::Agent => AGENT_KEYS.contains(&key),
        crate::config::Role::Server => {
            SERVER_ONLY_KEYS.contains(&key)
                || (AGENT_KEYS.contains(&key) && key != "disable-apiserver-lb")
        }
    }
}

/// A K3s release: `v1.31.6+k3s1` is Kubernetes 1.31.6, K3s revision 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct K3sVersion {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) patch: u32,
    pub(crate) k3s: u32,
}

impl std::fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "v{}.{}.{}+k3s{}",
            self.major, self.minor, self.patch, self.k3s
        )
    }
}

/// The containerd config template file K3s reads, which depends on the
/// containerd it embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerdTemplate {
    /// containerd 1.7 (and older): `config.toml.tmpl`, config version 2.
    V2,
    /// containerd 2.x: `config-v3.toml.tmpl`, config version 3.
    V3,
}

impl ContainerdTemplate {
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            ContainerdTemplate::V2 => "config.toml.tmpl",
            ContainerdTemplate::V3 => "config-v3.toml.tmpl",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            ContainerdTemplate::V2 => "containerd 1.7, config version 2",
            ContainerdTemplate::V3 => "containerd 2.x, config version 3",
        }
    }
}

impl K3sVersion {
    /// `v1.31.6+k3s1` (the leading `v` and the `+k3sN` are optional; a
    /// missing revision is 1).
    pub(crate) fn parse(s: &str) -> Option<K3sVersion> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (core, rev) = match s.split_once('+') {
            Some((core, rev)) => (core, Some(rev)),
            None => (s, None),
        };
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        // Pre-release suffixes (`1.32.0-rc1`) sort with the release.
        let patch = parts.next()?.split('-').next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        let k3s = match rev {
            Some(r) => r.strip_prefix("k3s")?.parse().ok()?,
            None => 1,
        };
        Some(K3sVersion {
            major,
            minor,
            patch,
            k3s,
        })
    }

    /// The first line of `k3s --version`: `k3s version v1.31.6+k3s1 (6a1e6fd6)`.
    pub(crate) fn from_version_output(out: &str) -> Option<K3sVersion> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("k3s version"))?;
        let word = line.split_whitespace().nth(2)?;
        K3sVersion::parse(word)
    }

    fn at_least(&self, minor: u32, patch: u32) -> bool {
        self.major > 1 || (self.major == 1 && (self.minor, self.patch) >= (minor, patch))
    }

    /// K3s embeds containerd 2.0 "as of the February 2025 releases:
    /// v1.31.6+k3s1 and v1.32.2+k3s1" (k3s-io/docs, docs/advanced.md,
    /// "Configuring containerd"); every later minor has it too.
    pub(crate) fn containerd_template(&self) -> ContainerdTemplate {
        let v3 = self.major > 1
            || self.minor >= 33
            || (self.minor == 32 && self.patch >= 2)
            || (self.minor == 31 && self.patch >= 6);
        if v3 {
            ContainerdTemplate::V3
        } else {
            ContainerdTemplate::V2
        }
    }

    /// `{{ template "base" . }}` exists "as of September 2023 releases:
    /// v1.24.17+k3s1, v1.25.13+k3s1, v1.26.8+k3s1, v1.27.5+k3s1,
    /// v1.28.1+k3s1" (k3s-io/docs, docs/advanced.md, "Base template").
    pub(crate) fn has_base_template(&self) -> bool {
        if self.major > 1 || self.minor >= 29 {
            return true;
        }
        match self.minor {
            28 => self.patch >= 1,
            27 => self.patch >= 5,
            26 => self.patch >= 8,
            25 => self.patch >= 13,
            24 => self.patch >= 17,
            _ => false,
        }
    }

    /// kube-proxy's nftables mode: alpha behind the `NFTablesProxyMode`
    /// feature gate in Kubernetes 1.29-1.30, beta and on by default from
    /// 1.31, GA in 1.33.
    pub(crate) fn nftables_support(&self) -> NftablesSupport {
        if self.at_least(31, 0) {
            NftablesSupport::Default
        } else if self.at_least(29, 0) {
            NftablesSupport::FeatureGate
        } else {
            NftablesSupport::Missing
        }
    }

    /// IPVS mode is deprecated from Kubernetes 1.35.
    pub(crate) fn ipvs_deprecated(&self) -> bool {
        self.at_least(35, 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NftablesSupport {
    Missing,
    /// Needs `feature-gates=NFTablesProxyMode=true` on kube-proxy.
    FeatureGate,
    Default,
}

/// Where the version the reconciler renders for came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VersionSource {
    /// `<bin> --version` answered.
    Binary(String),
    /// Read from the binary's bytes (under a root other than `/`, where
    /// nothing is executed).
    BinaryText(String),
    /// `bootstrap.k3s_version` (the binary is absent or did not answer).
    Config,
}

/// What the reconciler knows about the installed K3s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct K3sInfo {
    pub(crate) version: Option<K3sVersion>,
    pub(crate) source: Option<VersionSource>,
    /// Why the binary gave no version (absent, not executable, odd output).
    pub(crate) binary_problem: Option<String>,
    /// The binary's version when the config pins a different one.
    pub(crate) config_mismatch: Option<String>,
}

impl K3sInfo {
    pub(crate) fn describe(&self) -> String {
        match (&self.version, &self.source) {
            (Some(v), Some(VersionSource::Binary(bin))) => format!("{v} (from {bin} --version)"),
            (Some(v), Some(VersionSource::BinaryText(bin))) => {
                format!("{v} (read from {bin}, not run: the root is not /)")
            }
            (Some(v), Some(VersionSource::Config)) => {
                format!("{v} (from bootstrap.k3s_version)")
            }
            _ => "unknown".into(),
        }
    }
}

/// How long `k3s --version` may take. It prints two lines without touching
/// the network; on a slow SD card a cold start of the 70 MB binary takes a
/// second or two.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask `root/k3s_bin --version`; fall back to `pinned` (the config). The
/// binary's answer wins: it is what will read the files.
pub(crate) fn detect(root: &Path, k3s_bin: &Path, pinned: &str) -> K3sInfo {
    let bin = super::under_root(root, k3s_bin);
    let shown = k3s_bin.display().to_string();
    let pinned = K3sVersion::parse(pinned);
    let executes = root == Path::new("/");
    let found = if executes {
        run_version(&bin).and_then(|out| {
            K3sVersion::from_version_output(&out).ok_or_else(|| {
                format!(
                    "{shown} --version printed no \"k3s version vX.Y.Z+k3sN\" line: {:?}",
                    out.lines().next().unwrap_or("")
                )
            })
        })
    } else {
        version_in_file(&bin)
    };
    let (binary, binary_problem) = match found {
        Ok(v) => (Some(v), None),
        Err(why) => (None, Some(why)),
    };
    let source = if executes {
        VersionSource::Binary(shown)
    } else {
        VersionSource::BinaryText(shown)
    };
    match (binary, pinned) {
        (Some(b), pinned) => K3sInfo {
            version: Some(b),
            source: Some(source),
            binary_problem: None,
            config_mismatch: pinned.filter(|p| *p != b).map(|p| p.to_string()),
        },
        (None, Some(p)) => K3sInfo {
            version: Some(p),
            source: Some(VersionSource::Config),
            binary_problem,
            config_mismatch: None,
        },
        (None, None) => K3sInfo {
            version: None,
            source: None,
            binary_problem,
            config_mismatch: None,
        },
    }
}

/// Most bytes of a binary searched for its version (K3s is about 70 MB).
const MAX_BINARY_BYTES: u64 = 512 * 1024 * 1024;

/// The K3s version a binary carries, read from its bytes without running
/// it: K3s's build stamps `vX.Y.Z+k3sN` into it (the `--version` line is
/// formatted at run time). Exactly one distinct version must be found.
fn version_in_file(bin: &Path) -> Result<K3sVersion, String> {
    use std::io::Read;
    let shown = bin.display();
    let file = match std::fs::File::open(bin) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{shown} does not exist (K3s is not installed there)"
            ));
        }
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    let md = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !md.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    // Chunks overlap by the longest version word, so none is cut in two.
    const CHUNK: usize = 1 << 20;
    const OVERLAP: usize = 64;
    let mut found: Vec<K3sVersion> = Vec::new();
    let mut buf = vec![0u8; CHUNK + OVERLAP];
    let mut kept = 0;
    let mut reader = file.take(MAX_BINARY_BYTES);
    loop {
        let n = reader
            .read(&mut buf[kept..])
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        let end = kept + n;
        for v in versions_in(&buf[..end]) {
            if !found.contains(&v) {
                found.push(v);
            }
        }
        if n == 0 {
            break;
        }
        let keep = OVERLAP.min(end);
        buf.copy_within(end - keep..end, 0);
        kept = keep;
    }
    match found.as_slice() {
        [v] => Ok(*v),
        [] => Err(format!("{shown} carries no \"vX.Y.Z+k3sN\" version")),
        many => Err(format!(
            "{shown} carries several K3s versions ({}); set bootstrap.k3s_version",
            many.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Every `vX.Y.Z+k3sN` word in `bytes`.
fn versions_in(bytes: &[u8]) -> Vec<K3sVersion> {
    let mut out = Vec::new();
    for at in memchr::memmem::find_iter(bytes, b"+k3s") {
        let mut start = at;
        while start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
            start -= 1;
        }
        if start == 0 || bytes[start - 1] != b'v' {
            continue;
        }
        let mut end = at + 4;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
        if let Some(v) = std::str::from_utf8(&bytes[start - 1..end])
            .ok()
            .and_then(K3sVersion::parse)
        {
            out.push(v);
        }
    }
    out
}

fn run_version(bin: &Path) -> Result<String, String> {
    let shown = bin.display();
    if !bin.exists() {
        return Err(format!(
            "{shown} does not exist (K3s is not installed there)"
        ));
    }
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {shown} --version: {e}"))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} --version did not answer within {}s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for {shown} --version: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading {shown} --version: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} --version exited with {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    fn v(s: &str) -> K3sVersion {
        K3sVersion::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_as_k3s_prints_them() {
        let out = "k3s version v1.31.6+k3s1 (6a1e6fd6)\ngo version go1.22.12\n";
        assert_eq!(
            K3sVersion::from_version_output(out),
            Some(v("v1.31.6+k3s1"))
        );
        assert_eq!(v("1.30.4").k3s, 1);
        assert!(K3sVersion::parse("latest").is_none());
        assert!(K3sVersion::parse("v1.31").is_none());
        assert!(K3sVersion::from_version_output("Usage: k3s").is_none());
    }

    #[test]
    fn containerd_2_starts_at_the_february_2025_releases() {
        assert_eq!(
            v("v1.31.5+k3s1").containerd_template(),
            ContainerdTemplate::V2
        );
        assert_eq!(
            v("v1.31.6+k3s1").containerd_template(),
            ContainerdTemplate::V3
        );
        assert_eq!(
            v("v1.32.1+k3s1").containerd_template(),
            ContainerdTemplate::V2
        );
        assert_eq!(
            v("v1.32.2+k3s1").containerd_template(),
            ContainerdTemplate::V3
        );
        assert_eq!(
            v("v1.33.0+k3s1").containerd_template(),
            ContainerdTemplate::V3
        );
        assert_eq!(
            v("v1.30.10+k3s1").containerd_template(),
            ContainerdTemplate::V2
        );
    }

    #[test]
    fn the_base_template_starts_at_the_september_2023_releases() {
        assert!(!v("v1.27.4+k3s1").has_base_template());
        assert!(v("v1.27.5+k3s1").has_base_template());
        assert!(!v("v1.28.0+k3s1").has_base_template());
        assert!(v("v1.28.1+k3s1").has_base_template());
        assert!(!v("v1.23.17+k3s1").has_base_template());
        assert!(v("v1.29.0+k3s1").has_base_template());
    }

    #[test]
    fn nftables_mode_needs_a_gate_before_1_31_and_ipvs_is_deprecated_from_1_35() {
        assert_eq!(
            v("v1.28.9+k3s1").nftables_support(),
            NftablesSupport::Missing
        );
        assert_eq!(
            v("v1.29.0+k3s1").nftables_support(),
            NftablesSupport::FeatureGate
        );
        assert_eq!(
            v("v1.31.0+k3s1").nftables_support(),
            NftablesSupport::Default
        );
        assert!(!v("v1.34.2+k3s1").ipvs_deprecated());
        assert!(v("v1.35.0+k3s1").ipvs_deprecated());
    }

    #[test]
    fn server_only_keys_are_refused_for_agents_and_appends_are_the_same_key() {
        assert!(accepts_key(Role::Agent, "kubelet-arg+"));
        assert!(accepts_key(Role::Server, "kubelet-arg"));
        assert!(!accepts_key(Role::Agent, "tls-san"));
        assert!(accepts_key(Role::Server, "tls-san+"));
        assert!(!accepts_key(Role::Server, "disable-apiserver-lb"));
        assert!(!accepts_key(Role::Agent, "kind"));
    }

    #[test]
    fn under_a_scratch_root_the_version_is_read_from_the_binary_not_run() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/local/bin/k3s");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        let ran = root.path().join("ran");
        let mut bytes = format!("#!/bin/sh\ntouch {}\n", ran.display()).into_bytes();
        bytes.extend(vec![0u8; (1 << 20) - 5]); // the version across a chunk edge
        bytes.extend(b"\0v1.31.6+k3s1\0go1.22.12\0rancher/pause:3.6\0");
        std::fs::write(&bin, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let info = detect(root.path(), Path::new("/usr/local/bin/k3s"), "");
        assert_eq!(info.version, Some(v("v1.31.6+k3s1")), "{info:?}");
        assert!(
            info.describe()
                .contains("read from /usr/local/bin/k3s, not run")
        );
        assert!(!ran.exists(), "the binary was executed");
        // Two different versions: none is guessed.
        bytes.extend(b"v1.32.2+k3s1");
        std::fs::write(&bin, &bytes).unwrap();
        let info = detect(root.path(), Path::new("/usr/local/bin/k3s"), "");
        assert_eq!(info.version, None);
        assert!(
            info.binary_problem
                .unwrap()
                .contains("several K3s versions")
        );
    }

    #[test]
    fn a_missing_binary_falls_back_to_the_pinned_version_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        let info = detect(root.path(), Path::new("/usr/local/bin/k3s"), "v1.30.6+k3s1");
        assert_eq!(info.version, Some(v("v1.30.6+k3s1")));
        assert_eq!(info.source, Some(VersionSource::Config));
        assert!(info.binary_problem.unwrap().contains("does not exist"));
        let info = detect(root.path(), Path::new("/usr/local/bin/k3s"), "");
        assert_eq!(info.version, None);
    }
}
