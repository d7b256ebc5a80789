//! Golden tests of every rendered file for a table of desired states, and
//! the format checks that go with them: the YAML and TOML parse, every K3s
//! key is one K3s accepts, the containerd template is valid TOML once K3s's
//! base is in place (and would not be if the base kept its snapshotter
//! table: the reason for `snapshotter: ""`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::k3s::{self, ContainerdTemplate, K3sInfo, K3sVersion, VersionSource};
use super::render::{self, Rendered, Secrets};
use crate::config::{
    BootstrapConfig, KubeProxyMode, MirrorConfig, RegistryAuthConfig, Role, Snapshotter,
};

/// K3s's base template output for `generation`, with its CRI snapshotter
/// table when `snapshotter` is not empty (see testdata/README.md).
pub(crate) fn k3s_base(generation: ContainerdTemplate, snapshotter: &str) -> String {
    let (text, table) = match generation {
        ContainerdTemplate::V2 => (
            include_str!("testdata/k3s-base-v2.toml"),
            "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"SNAP\"\n  disable_snapshot_annotations = true\n",
        ),
        ContainerdTemplate::V3 => (
            include_str!("testdata/k3s-base-v3.toml"),
            "\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"SNAP\"\n  disable_snapshot_annotations = true\n",
        ),
    };
    let fill = if snapshotter.is_empty() {
        String::new()
    } else {
        table.replace("SNAP", snapshotter)
    };
    text.replace("#@snapshotter-table@\n", &fill)
}

/// Execute our template the way K3s would for a node without
/// `--default-runtime`: the base is substituted, the `with` block (false
/// here) disappears with the whitespace its `{{-` trims.
pub(crate) fn render_like_k3s(template: &str, base: &str) -> String {
    let mut out = template.replace("{{ template \"base\" . }}", base);
    let open = "\n{{- with .NodeConfig.DefaultRuntime }}";
    if let Some(start) = out.find(open) {
        let end_tag = "\n{{- end }}";
        let end = out[start..].find(end_tag).expect("with has an end") + start + end_tag.len();
        out.replace_range(start..end, "");
    }
    assert!(
        !out.contains("{{"),
        "an action K3s would execute is left:\n{out}"
    );
    out
}

fn known(v: &str) -> K3sInfo {
    K3sInfo {
        version: K3sVersion::parse(v),
        source: Some(VersionSource::Config),
        binary_problem: None,
        config_mismatch: None,
    }
}

struct Case {
    name: &'static str,
    cfg: BootstrapConfig,
    k3s: K3sInfo,
    secrets: Secrets,
}

fn agent() -> BootstrapConfig {
    BootstrapConfig {
        role: Some(Role::Agent),
        server: "https://k3s-server.example:6443".into(),
        token_file: PathBuf::from("/etc/rancher/k3s/token"),
        node_labels: vec!["topology.kubernetes.io/zone=edge".into()],
        kubelet_args: vec![
            "max-pods=250".into(),
            "eviction-hard=memory.available<100Mi,nodefs.available<10%".into(),
        ],
        ..Default::default()
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    let mut c = agent();
    c.snapshotter = Snapshotter::Nydus;
    c.kube_proxy.mode = KubeProxyMode::Ipvs;
    c.kube_proxy.ipvs_strict_arp = Some(true);
    c.kube_proxy.ipvs_scheduler = Some("rr".into());
    v.push(Case {
        name: "agent-ipvs-nydus-containerd2",
        cfg: c.clone(),
        k3s: known("v1.31.6+k3s1"),
        secrets: Secrets::default(),
    });

    let mut c17 = c;
    c17.kube_proxy.ipvs_strict_arp = None;
    c17.kube_proxy.ipvs_scheduler = Some("wlc".into());
    c17.node_taints = vec!["dedicated=edge:NoSchedule".into()];
    v.push(Case {
        name: "agent-ipvs-nydus-containerd17",
        cfg: c17,
        k3s: known("v1.30.6+k3s1"),
        secrets: Secrets::default(),
    });

    let mut s = BootstrapConfig {
        role: Some(Role::Server),
        cluster_init: true,
        data_dir: PathBuf::from("/srv/k3s"),
        tls_san: vec!["k3s.example".into(), "10.0.0.10".into()],
        disable: vec!["traefik".into(), "servicelb".into()],
        flannel_backend: "host-gw".into(),
        protect_kernel_defaults: false,
        modules: vec!["wireguard".into()],
        ..Default::default()
    };
    s.kube_proxy.mode = KubeProxyMode::Nftables;
    s.sysctls.insert("vm.max_map_count".into(), "262144".into());
    s.registries.mirrors.insert(
        "docker.io".into(),
        MirrorConfig {
            endpoints: vec!["https://mirror.example:5000".into()],
        },
    );
    s.registries.configs.insert(
        "mirror.example:5000".into(),
        RegistryAuthConfig {
            username: "edge".into(),
            password_file: PathBuf::from("/etc/edge-agent/registry-password"),
            ca_file: PathBuf::from("/etc/ssl/mirror-ca.pem"),
            ..Default::default()
        },
    );
    v.push(Case {
        name: "server-init-nftables-registries",
        cfg: s,
        k3s: known("v1.33.1+k3s1"),
        secrets: Secrets {
            registry_passwords: BTreeMap::from([(
                "mirror.example:5000".to_string(),
                "s3cr\"et".to_string(),
            )]),
        },
    });

    let join = BootstrapConfig {
        role: Some(Role::Server),
        server: "https://10.0.0.10:6443".into(),
        token_file: PathBuf::from("/etc/rancher/k3s/token"),
        node_name: "edge-server-2".into(),
        ..Default::default()
    };
    v.push(Case {
        name: "server-join-iptables",
        cfg: join,
        k3s: K3sInfo {
            version: None,
            source: None,
            binary_problem: Some("not installed".into()),
            config_mismatch: None,
        },
        secrets: Secrets::default(),
    });

    let mut gated = agent();
    gated.kube_proxy.mode = KubeProxyMode::Nftables;
    v.push(Case {
        name: "agent-nftables-k3s-1.30",
        cfg: gated,
        k3s: known("v1.30.2+k3s2"),
        secrets: Secrets::default(),
    });
    v
}

fn golden_name(path: &Path) -> String {
    path.to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "__")
}

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/bootstrap/testdata/golden")
        .join(case)
}

#[test]
fn every_rendered_file_matches_its_golden_copy() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for case in cases() {
        let r = render::render(&case.cfg, &case.k3s, &case.secrets);
        assert!(r.blockers.is_empty(), "{}: {:?}", case.name, r.blockers);
        let dir = golden_dir(case.name);
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
        }
        let mut expected_names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        expected_names.sort();
        let mut rendered_names: Vec<String> =
            r.files.iter().map(|f| golden_name(&f.path)).collect();
        rendered_names.sort();
        if !update {
            assert_eq!(
                rendered_names, expected_names,
                "{}: the set of rendered files changed",
                case.name
            );
        }
        for f in &r.files {
            let g = dir.join(golden_name(&f.path));
            if update {
                std::fs::write(&g, &f.content).unwrap();
                continue;
            }
            let want = std::fs::read(&g).unwrap_or_default();
            if want != f.content {
                mismatches.push(format!(
                    "{}: {} differs from {}:\n{}",
                    case.name,
                    f.path.display(),
                    g.display(),
                    String::from_utf8_lossy(&f.content)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(after an intended change: UPDATE_GOLDEN=1 cargo test -p edge-agent bootstrap::tests, then review the diff)",
        mismatches.join("\n")
    );
}

fn yaml_doc(bytes: &[u8]) -> yaml_rust2::Yaml {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut docs = yaml_rust2::YamlLoader::load_from_str(text).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn file<'a>(r: &'a Rendered, path: &str) -> Option<&'a [u8]> {
    r.files
        .iter()
        .find(|f| f.path == Path::new(path))
        .map(|f| &f.content[..])
}

#[test]
fn every_k3s_key_rendered_is_one_k3s_accepts_for_the_role() {
    for case in cases() {
        let r = render::render(&case.cfg, &case.k3s, &case.secrets);
        let doc = yaml_doc(file(&r, render::DROPIN_PATH).unwrap());
        let map = doc.as_hash().expect("a mapping");
        assert!(!map.is_empty());
        let role = case.cfg.role.unwrap();
        for (k, v) in map {
            let key = k.as_str().expect("string keys");
            assert!(
                k3s::accepts_key(role, key),
                "{}: `k3s {}` does not accept \"{key}\" (source: {})",
                case.name,
                role.as_str(),
                k3s::K3S_KEYS_SOURCE
            );
            if key.ends_with('+') {
                assert!(
                    v.as_vec().is_some(),
                    "{}: {key} appends, so it is a list",
                    case.name
                );
            }
        }
    }
}

#[test]
fn registries_yaml_has_the_mirrors_and_the_password_quoted() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "server-init-nftables-registries")
        .unwrap();
    let r = render::render(&case.cfg, &case.k3s, &case.secrets);
    let f = r
        .files
        .iter()
        .find(|f| f.path == Path::new(render::REGISTRIES_PATH))
        .unwrap();
    assert!(f.sensitive);
    assert_eq!(f.mode, 0o600);
    let doc = yaml_doc(&f.content);
    assert_eq!(
        doc["mirrors"]["docker.io"]["endpoint"][0].as_str(),
        Some("https://mirror.example:5000")
    );
    let auth = &doc["configs"]["mirror.example:5000"]["auth"];
    assert_eq!(auth["username"].as_str(), Some("edge"));
    assert_eq!(auth["password"].as_str(), Some("s3cr\"et"));
    assert_eq!(
        doc["configs"]["mirror.example:5000"]["tls"]["ca_file"].as_str(),
        Some("/etc/ssl/mirror-ca.pem")
    );
}

#[test]
fn the_nydus_files_parse_in_their_own_formats() {
    for case in cases()
        .into_iter()
        .filter(|c| c.cfg.snapshotter == Snapshotter::Nydus)
    {
        let r = render::render(&case.cfg, &case.k3s, &case.secrets);
        let cfg: toml::Table = std::str::from_utf8(file(&r, render::NYDUS_CONFIG_PATH).unwrap())
            .unwrap()
            .parse()
            .expect("nydus config.toml parses");
        assert_eq!(cfg["version"].as_integer(), Some(1));
        assert_eq!(cfg["daemon"]["fs_driver"].as_str(), Some("fusedev"));
        assert_eq!(
            cfg["daemon"]["nydusd_config"].as_str(),
            Some(render::NYDUSD_CONFIG_PATH)
        );
        let json: serde_json::Value =
            serde_json::from_slice(file(&r, render::NYDUSD_CONFIG_PATH).unwrap()).unwrap();
        assert_eq!(json["device"]["backend"]["type"], "registry");
        let unit = std::str::from_utf8(file(&r, render::NYDUS_UNIT_PATH).unwrap()).unwrap();
        assert!(unit.contains(
            "\nExecStart=/usr/local/bin/containerd-nydus-grpc --config /etc/nydus/config.toml\n"
        ));
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert!(unit.contains(section), "{unit}");
        }
    }
}

#[test]
fn the_containerd_template_is_valid_toml_on_k3s_base_and_sets_nydus_once() {
    for case in cases()
        .into_iter()
        .filter(|c| c.cfg.snapshotter == Snapshotter::Nydus)
    {
        let generation = case.k3s.version.unwrap().containerd_template();
        let r = render::render(&case.cfg, &case.k3s, &case.secrets);
        let path = render::containerd_template_path(&case.cfg, generation);
        assert!(path.ends_with(generation.file_name()));
        let template = std::str::from_utf8(file(&r, &path.to_string_lossy()).unwrap()).unwrap();
        assert_eq!(template.matches("{{ template \"base\" . }}").count(), 1);
        // The drop-in empties K3s's snapshotter, so the base has no table.
        let doc = yaml_doc(file(&r, render::DROPIN_PATH).unwrap());
        assert_eq!(doc["snapshotter"].as_str(), Some(""));
        let config = render_like_k3s(template, &k3s_base(generation, ""));
        let t: toml::Table = config
            .parse()
            .unwrap_or_else(|e| panic!("{}: not valid TOML: {e}\n{config}", case.name));
        let cri = match generation {
            ContainerdTemplate::V2 => {
                assert_eq!(t["version"].as_integer(), Some(2));
                &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]
            }
            ContainerdTemplate::V3 => {
                assert_eq!(t["version"].as_integer(), Some(3));
                &t["plugins"]["io.containerd.cri.v1.images"]
            }
        };
        assert_eq!(cri["snapshotter"].as_str(), Some("nydus"), "{config}");
        assert_eq!(cri["disable_snapshot_annotations"].as_bool(), Some(false));
        assert_eq!(
            t["proxy_plugins"]["nydus"]["type"].as_str(),
            Some("snapshot")
        );
        assert_eq!(
            t["proxy_plugins"]["nydus"]["address"].as_str(),
            Some("/run/containerd-nydus/containerd-nydus-grpc.sock")
        );
        // The rest of the base survives untouched.
        assert!(config.contains("SystemdCgroup = true"));
    }
}

#[test]
fn appending_to_the_base_while_k3s_keeps_its_snapshotter_would_redeclare_a_table() {
    // Why the drop-in sets `snapshotter: ""`: with K3s's default the base
    // emits the CRI table itself, and the template's table is a duplicate.
    for generation in [ContainerdTemplate::V2, ContainerdTemplate::V3] {
        let mut cfg = agent();
        cfg.snapshotter = Snapshotter::Nydus;
        let v = if generation == ContainerdTemplate::V2 {
            "v1.30.6+k3s1"
        } else {
            "v1.32.2+k3s1"
        };
        let r = render::render(&cfg, &known(v), &Secrets::default());
        let path = render::containerd_template_path(&cfg, generation);
        let template = std::str::from_utf8(file(&r, &path.to_string_lossy()).unwrap()).unwrap();
        let config = render_like_k3s(template, &k3s_base(generation, "overlayfs"));
        let err = config.parse::<toml::Table>().unwrap_err().to_string();
        assert!(
            err.contains("duplicate") || err.contains("defined"),
            "{err}"
        );
    }
}

#[test]
fn nydus_without_a_k3s_version_is_refused_with_what_to_do() {
    let mut cfg = agent();
    cfg.snapshotter = Snapshotter::Nydus;
    let unknown = K3sInfo {
        version: None,
        source: None,
        binary_problem: Some("/usr/local/bin/k3s does not exist".into()),
        config_mismatch: None,
    };
    let r = render::render(&cfg, &unknown, &Secrets::default());
    assert_eq!(r.blockers.len(), 1);
    let m = r.blockers[0].to_string();
    assert!(
        m.starts_with("bootstrap.snapshotter: = \"nydus\" needs the K3s version"),
        "{m}"
    );
    assert!(m.contains("/usr/local/bin/k3s does not exist"), "{m}");
    assert!(m.contains("set bootstrap.k3s_version"), "{m}");
    let old = render::render(&cfg, &known("v1.27.4+k3s1"), &Secrets::default());
    assert!(
        old.blockers[0].message.contains("does not have"),
        "{:?}",
        old.blockers
    );
}

#[test]
fn nftables_on_old_kubernetes_is_refused_and_gated_where_alpha() {
    let mut cfg = agent();
    cfg.kube_proxy.mode = KubeProxyMode::Nftables;
    let r = render::render(&cfg, &known("v1.28.5+k3s1"), &Secrets::default());
    assert!(
        r.blockers[0].message.contains("needs Kubernetes 1.29"),
        "{:?}",
        r.blockers
    );
    let r = render::render(&cfg, &known("v1.29.1+k3s1"), &Secrets::default());
    let doc = yaml_doc(file(&r, render::DROPIN_PATH).unwrap());
    let args: Vec<&str> = doc["kube-proxy-arg+"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|y| y.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "proxy-mode=nftables",
            "feature-gates=NFTablesProxyMode=true"
        ]
    );
}

#[test]
fn ipvs_mode_says_it_is_deprecated() {
    let mut cfg = agent();
    cfg.kube_proxy.mode = KubeProxyMode::Ipvs;
    let r = render::render(&cfg, &known("v1.35.0+k3s1"), &Secrets::default());
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("deprecated in Kubernetes 1.35")),
        "{:?}",
        r.notes
    );
    assert!(r.modules.contains(&"ip_vs_rr".to_string()));
}

#[test]
fn the_token_file_must_exist_be_private_and_not_empty_and_is_never_echoed() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let cfg = agent();
    let (_, b) = render::gather_secrets(&cfg, root.path());
    assert!(
        b[0].message
            .contains("does not exist: create it (mode 0600)"),
        "{b:?}"
    );
    let p = root.path().join("etc/rancher/k3s/token");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, "K10secret::server:abc\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, b) = render::gather_secrets(&cfg, root.path());
    assert!(b[0].message.contains("chmod 600"), "{b:?}");
    assert!(!format!("{b:?}").contains("K10secret"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, b) = render::gather_secrets(&cfg, root.path());
    assert!(b.is_empty(), "{b:?}");
    std::fs::write(&p, "\n").unwrap();
    let (_, b) = render::gather_secrets(&cfg, root.path());
    assert!(b[0].message.contains("is empty"), "{b:?}");
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    let (_, b) = render::gather_secrets(&cfg, root.path());
    assert!(b[0].message.contains("not a regular file"), "{b:?}");
}

#[test]
fn under_root_never_climbs_out() {
    let root = Path::new("/scratch");
    assert_eq!(
        super::under_root(root, Path::new("/etc/../../x")),
        PathBuf::from("/scratch/etc/x")
    );
    assert_eq!(
        super::under_root(Path::new("/"), Path::new("/etc/a")),
        PathBuf::from("/etc/a")
    );
}

#[test]
fn switching_k3s_to_containerd_2_moves_the_template_and_removes_the_old_one() {
    use super::fsio::Observed;
    use super::ledger::GenFile;
    use super::plan::{FileAction, FileStatus, PlanInput};
    let mut cfg = agent();
    cfg.snapshotter = Snapshotter::Nydus;
    let old = render::render(&cfg, &known("v1.31.5+k3s1"), &Secrets::default());
    let new = render::render(&cfg, &known("v1.31.6+k3s1"), &Secrets::default());
    let current: BTreeMap<PathBuf, GenFile> = old
        .files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                GenFile {
                    content: f.content.clone(),
                    mode: f.mode,
                    sensitive: f.sensitive,
                },
            )
        })
        .collect();
    let observed: BTreeMap<PathBuf, Observed> = old
        .files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                Observed::File {
                    content: f.content.clone(),
                    mode: f.mode,
                    uid: 0,
                    gid: 0,
                },
            )
        })
        .collect();
    let plan = super::plan::plan(&PlanInput {
        rendered: &new,
        observed: &observed,
        current: &current,
        pending: None,
        kernel: None,
        owed_restarts: &[],
        k3s_unit: "k3s-agent.service",
        nydus_unit: render::NYDUS_UNIT,
        force: super::Force::none(),
        owner: Some((0, 0)),
    });
    let by = |name: &str| plan.files.iter().find(|f| f.path.ends_with(name)).unwrap();
    assert_eq!(by("config-v3.toml.tmpl").status, FileStatus::New);
    assert_eq!(by("config.toml.tmpl").action, FileAction::Remove);
    assert_eq!(plan.restarts, ["k3s-agent.service"]);
}
