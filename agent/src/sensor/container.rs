//! Container enrichment (`container.*`, `k8s.*`) from the container
//! runtime's state on disk, without a CRI/gRPC client.
//!
//! Owns two caches: cgroup id -> container, and container id -> what its
//! task bundle says. A process's cgroup v2 path names its container
//! (`.../pod<uid>/<64 hex>`, `cri-containerd-<id>.scope`, `docker-<id>.scope`);
//! containerd writes each running task's OCI bundle to
//! `<state dir>/[<namespace>/]<id>/config.json`, and for Kubernetes pods that
//! file carries the CRI annotations a kubelet asked for (pod name,
//! namespace, uid, container name, image). The state directories are
//! configurable (`[sensor] runtime_state_dirs`). A cgroup without a
//! container id is the host. A container whose bundle is not found yet is
//! looked up again, a few times, on later events. A container that ended
//! (and whose bundle was deleted) before its first event was decoded gets
//! the copy [`super::bundles`] made when the runtime wrote it. Never writes
//! anything, and reads bundle files only through [`super::confined`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bundles::BundleWatch;
use crate::event::{Container, Mount};

/// How often, and how many times, a container whose bundle was not found is
/// looked up again (the bundle exists before the container's first exec, so
/// this covers only runtimes that write it late).
const RETRY_EVERY: Duration = Duration::from_secs(2);
const RETRIES: u8 = 3;

/// A bundle's `config.json` is read up to this size (a pod's is a few KiB;
/// thousands of mounts and variables stay far below it).
const MAX_BUNDLE_BYTES: u64 = 4 << 20;

/// cgroups remembered at most. One per container plus the host's few; when
/// full the cache starts over (a burst of lookups, nothing lost).
const MAX_CGROUPS: usize = 8192;

struct Known {
    container: Arc<Container>,
    /// Set while the bundle has not been found: next retry and retries left.
    retry: Option<(Instant, u8)>,
}

pub(crate) struct Containers {
    state_dirs: Vec<PathBuf>,
    proc_root: PathBuf,
    host: Arc<Container>,
    by_cgroup: HashMap<u64, Known>,
    /// The root of each container as the host sees it (`/proc/<pid>/root`),
    /// to turn host paths into container paths.
    roots: HashMap<String, String>,
    /// Copies of bundles made as they were written (`None`: no state
    /// directory existed at start, or no inotify).
    watch: Option<BundleWatch>,
}

impl Containers {
    pub(crate) fn new(state_dirs: &[PathBuf], proc_root: &Path) -> Containers {
        Containers {
            state_dirs: state_dirs.to_vec(),
            proc_root: proc_root.to_path_buf(),
            host: Container::host(),
            by_cgroup: HashMap::new(),
            roots: HashMap::new(),
            watch: BundleWatch::start(state_dirs, MAX_BUNDLE_BYTES),
        }
    }

    /// Distinct containers currently known.
    pub(crate) fn known(&self) -> usize {
        let mut ids: Vec<&str> = self
            .by_cgroup
            .values()
            .filter(|k| !k.container.is_host())
            .map(|k| k.container.id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// The container of a process in cgroup `cgroup_id`. `leaf` is the end
    /// of the cgroup's path (`<parent>/<name>`) when the kernel sent it (exec
    /// records); else the process's `/proc/<pid>/cgroup` is read.
    pub(crate) fn lookup(
        &mut self,
        cgroup_id: u64,
        pid: u32,
        leaf: Option<&str>,
    ) -> Arc<Container> {
        let leaf = leaf.filter(|l| container_id(l).is_some());
        if let Some(k) = self.by_cgroup.get_mut(&cgroup_id) {
            // An exec naming a container cgroup corrects a cgroup first seen
            // (and taken for the host's) before its container was set up.
            let stale_host = k.container.is_host() && leaf.is_some();
            match k.retry {
                _ if stale_host => {}
                None => return k.container.clone(),
                Some((at, left)) if at > Instant::now() || left == 0 => {
                    return k.container.clone();
                }
                Some((_, left)) => {
                    let full = k.container.full_id.clone().unwrap_or_default();
                    let pod_uid = k.container.pod_uid.clone();
                    let found = self.read_bundle(&full, pod_uid);
                    let k = self.by_cgroup.get_mut(&cgroup_id).expect("just seen");
                    if found.start_ts.is_some() {
                        k.retry = None;
                    } else {
                        k.retry = Some((Instant::now() + RETRY_EVERY, left - 1));
                    }
                    k.container = Arc::new(found);
                    return k.container.clone();
                }
            }
        }
        let path = match leaf {
            Some(l) => l.to_string(),
            None => match self.cgroup_path(pid) {
                Some(p) => p,
                // The process is gone and the record named no cgroup: host
                // for this event, but not remembered.
                None => return self.host.clone(),
            },
        };
        let container = match container_id(&path) {
            None => self.host.clone(),
            Some(id) => Arc::new(self.read_bundle(id, pod_uid_from_cgroup(&path))),
        };
        if self.by_cgroup.len() >= MAX_CGROUPS {
            self.by_cgroup.clear();
        }
        let retry = (!container.is_host() && container.start_ts.is_none())
            .then(|| (Instant::now() + RETRY_EVERY, RETRIES));
        self.by_cgroup.insert(
            cgroup_id,
            Known {
                container: container.clone(),
                retry,
            },
        );
        container
    }

    /// The process's cgroup path that names a container (the v2 `0::` line
    /// first); `""` when none does; `None` when the process is gone.
    fn cgroup_path(&self, pid: u32) -> Option<String> {
        let text =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        let mut v1 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(h), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if container_id(path).is_none() {
                continue;
            }
            if h == "0" {
                return Some(path.to_string());
            }
            v1.get_or_insert_with(|| path.to_string());
        }
        Some(v1.unwrap_or_default())
    }

    /// Everything the bundle of container `full_id` says; only the id when
    /// no bundle is found.
    fn read_bundle(&mut self, full_id: &str, pod_uid: Option<String>) -> Container {
        let bare = Container {
            id: full_id.chars().take(12).collect(),
            full_id: Some(full_id.to_string()),
            pod_uid: pod_uid.clone(),
            ..Default::default()
        };
        let found = match find_bundle(&self.state_dirs, full_id) {
            Some(config) => {
                // The runtime writes it, but it sits beside the container's
                // files: no symlinks, a regular file, a size cap.
                let bundle = config.parent().unwrap_or(Path::new("/"));
                match super::confined::read_beneath(bundle, "config.json", MAX_BUNDLE_BYTES) {
                    Ok(text) => from_bundle(full_id, pod_uid, bundle, &text),
                    Err(e) => {
                        tracing::debug!(error = %e, "container bundle not read");
                        None
                    }
                }
            }
            // Gone already: what the runtime wrote, read when it wrote it.
            None => self.watch.as_ref().and_then(|w| w.get(full_id)).map(|k| {
                let (mut c, root) = (k.container, k.root);
                if c.pod_uid.is_none() {
                    c.pod_uid = pod_uid;
                }
                (c, root)
            }),
        };
        let Some((c, root)) = found else {
            return bare;
        };
        if let Some(root) = root {
            self.roots.insert(c.id.clone(), root);
        }
        c
    }

    /// The container's root as the host sees it: the bundle's `root.path`,
    /// else `/proc/<pid>/root` of a live process that is already inside it
    /// (runc's init is not, until it pivots).
    pub(crate) fn root_of(&mut self, container: &Container, pid: u32) -> Option<String> {
        if container.is_host() {
            return None;
        }
        if let Some(r) = self.roots.get(&container.id) {
            return Some(r.clone());
        }
        let r = std::fs::read_link(self.proc_root.join(pid.to_string()).join("root"))
            .ok()?
            .to_string_lossy()
            .into_owned();
        if r == "/" {
            return None;
        }
        if self.roots.len() >= MAX_CGROUPS {
            self.roots.clear();
        }
        self.roots.insert(container.id.clone(), r.clone());
        Some(r)
    }

    /// Drop containers whose bundle is gone (they stopped). Returns their ids.
    pub(crate) fn sweep(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        let dirs = &self.state_dirs;
        self.by_cgroup.retain(|_, k| {
            let c = &k.container;
            if c.is_host() || k.retry.is_some() {
                return true;
            }
            let alive = c
                .full_id
                .as_deref()
                .is_some_and(|id| find_bundle(dirs, id).is_some());
            if !alive {
                gone.push(c.id.clone());
            }
            alive
        });
        for id in &gone {
            self.roots.remove(id);
        }
        gone
    }
}

/// `<dir>/<id>/config.json` or `<dir>/<namespace>/<id>/config.json`.
fn find_bundle(dirs: &[PathBuf], id: &str) -> Option<PathBuf> {
    for dir in dirs {
        let direct = dir.join(id).join("config.json");
        if direct.is_file() {
            return Some(direct);
        }
        let Ok(namespaces) = std::fs::read_dir(dir) else {
            continue;
        };
        for ns in namespaces.filter_map(Result::ok) {
            let p = ns.path().join(id).join("config.json");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Container `full_id` as its bundle directory `bundle` and the
/// `config.json` text read from it describe it, with the container's root
/// as the host sees it; `None` when the text is not JSON.
pub(super) fn from_bundle(
    full_id: &str,
    pod_uid: Option<String>,
    bundle: &Path,
    text: &[u8],
) -> Option<(Container, Option<String>)> {
    let spec = serde_json::from_slice::<Value>(text).ok()?;
    let mut c = Container {
        id: full_id.chars().take(12).collect(),
        full_id: Some(full_id.to_string()),
        pod_uid,
        ..Default::default()
    };
    apply_spec(&mut c, &spec);
    // Relative to the bundle directory when not absolute (OCI).
    let root = spec["root"]["path"]
        .as_str()
        .map(|r| bundle.join(r).to_string_lossy().into_owned());
    c.start_ts = Some(
        std::fs::metadata(bundle.join("config.json"))
            .and_then(|m| m.modified())
            .map_or(0, crate::unix_time::nanos),
    );
    Some((c, root))
}

/// Fill `c` from an OCI runtime spec (`config.json`).
fn apply_spec(c: &mut Container, spec: &Value) {
    let ann = |k: &str| {
        spec["annotations"][k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    c.name =
        ann("io.kubernetes.cri.container-name").or_else(|| ann("io.kubernetes.container.name"));
    c.pod_name = ann("io.kubernetes.cri.sandbox-name").or_else(|| ann("io.kubernetes.pod.name"));
    c.pod_namespace =
        ann("io.kubernetes.cri.sandbox-namespace").or_else(|| ann("io.kubernetes.pod.namespace"));
    if let Some(uid) = ann("io.kubernetes.cri.sandbox-uid").or_else(|| ann("io.kubernetes.pod.uid"))
    {
        c.pod_uid = Some(uid);
    }
    if let Some(image) = ann("io.kubernetes.cri.image-name") {
        let (repo, tag) = split_image(&image);
        c.image_repository = Some(repo);
        c.image_tag = tag;
        c.image = Some(image);
    }
    c.mounts = spec["mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    Some(Mount {
                        dest: m["destination"].as_str()?.to_string(),
                        source: m["source"].as_str().unwrap_or_default().to_string(),
                        options: m["options"]
                            .as_array()
                            .map(|o| {
                                o.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    c.privileged = Some(is_privileged(spec));
}

/// The OCI spec has no "privileged" flag; a privileged container is what
/// the runtime makes of one: every capability in the bounding set
/// (CAP_SYS_ADMIN among them) and no masked paths.
fn is_privileged(spec: &Value) -> bool {
    let has_sys_admin = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .is_some_and(|caps| caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
    let masked = spec["linux"]["maskedPaths"]
        .as_array()
        .is_some_and(|m| !m.is_empty());
    has_sys_admin && !masked
}

/// `registry/repo:tag` -> (`registry/repo`, `tag`); a digest has no tag.
pub(crate) fn split_image(image: &str) -> (String, Option<String>) {
    if let Some((repo, _digest)) = image.split_once('@') {
        return (repo.to_string(), None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), None),
    }
}

/// The container id a cgroup path names, if any: a 64-hex component, bare
/// (cgroupfs driver) or as `<runtime>-<id>.scope` (systemd driver).
pub(crate) fn container_id(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|seg| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = seg.rsplit('-').next().unwrap_or(seg);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}

/// The pod uid a kubepods cgroup path names (`pod<uid>`, or
/// `kubepods-besteffort-pod<uid_with_underscores>.slice`).
pub(crate) fn pod_uid_from_cgroup(path: &str) -> Option<String> {
    path.split('/').find_map(|seg| {
        let seg = seg.strip_suffix(".slice").unwrap_or(seg);
        let pod = match seg.rfind("-pod") {
            Some(i) => &seg[i + 4..],
            None => seg.strip_prefix("pod")?,
        };
        (pod.len() >= 32).then(|| pod.replace('_', "-"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_come_from_either_cgroup_driver() {
        assert_eq!(
            container_id(&format!("/kubepods/besteffort/pod1234/{ID}")),
            Some(ID)
        );
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-pod12.slice/cri-containerd-{ID}.scope"
            )),
            Some(ID)
        );
        assert_eq!(
            container_id(&format!("/system.slice/docker-{ID}.scope")),
            Some(ID)
        );
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
    }

    #[test]
    fn pod_uids_come_from_either_cgroup_driver() {
        let uid = "6f1b7a36-7c8e-4a8f-9b41-0f6a1d7e2c11";
        assert_eq!(
            pod_uid_from_cgroup(&format!("/kubepods/besteffort/pod{uid}/{ID}")).as_deref(),
            Some(uid)
        );
        assert_eq!(
            pod_uid_from_cgroup(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/x",
                uid.replace('-', "_")
            ))
            .as_deref(),
            Some(uid)
        );
    }

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(
            split_image("docker.io/library/nginx:1.25"),
            ("docker.io/library/nginx".into(), Some("1.25".into()))
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app".into(), None)
        );
        assert_eq!(
            split_image("registry:5000/app:v2"),
            ("registry:5000/app".into(), Some("v2".into()))
        );
        assert_eq!(split_image("app@sha256:abc"), ("app".into(), None));
    }

    #[test]
    fn a_container_that_ended_before_its_first_event_was_decoded_keeps_its_bundles_facts() {
        let state = tempfile::tempdir().unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        let mut cs = Containers::new(&[state.path().to_path_buf()], proc_root.path());
        // The runtime writes the bundle after the agent started, the
        // container runs and ends, its bundle is deleted; only then does
        // the reader get to the container's first event.
        let bundle = state.path().join("k8s.io").join(ID);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({
                "annotations": {"io.kubernetes.cri.sandbox-name": "one-shot"},
                "process": {"capabilities": {"bounding": ["CAP_SYS_ADMIN", "CAP_SYS_MODULE"]}},
            })
            .to_string(),
        )
        .unwrap();
        let seen = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            cs.watch.as_ref().is_some_and(|w| w.get(ID).is_some())
        });
        assert!(seen, "the watcher never read the bundle");
        std::fs::remove_dir_all(&bundle).unwrap();
        let leaf = format!("pod1/{ID}");
        let c = cs.lookup(9, 4242, Some(&leaf));
        assert_eq!(c.pod_name.as_deref(), Some("one-shot"));
        assert_eq!(c.privileged, Some(true));
        assert!(c.start_ts.is_some(), "found: no retries");
    }

    #[test]
    fn a_cri_bundle_fills_the_kubernetes_fields() {
        let state = tempfile::tempdir().unwrap();
        let bundle = state.path().join("k8s.io").join(ID);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({
                "annotations": {
                    "io.kubernetes.cri.container-name": "web",
                    "io.kubernetes.cri.sandbox-name": "web-7d9f",
                    "io.kubernetes.cri.sandbox-namespace": "shop",
                    "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25",
                },
                "mounts": [{"destination": "/proc", "source": "proc"}, {"destination": "/data", "source": "/srv/data", "options": ["rbind", "rprivate", "ro"]}],
                "process": {"capabilities": {"bounding": ["CAP_CHOWN"]}},
                "linux": {"maskedPaths": ["/proc/kcore"]},
            })
            .to_string(),
        )
        .unwrap();
        let proc_root = tempfile::tempdir().unwrap();
        let pid_dir = proc_root.path().join("77");
        std::fs::create_dir_all(&pid_dir).unwrap();
        std::fs::write(pid_dir.join("cgroup"), format!("1:cpu:/kubepods/besteffort/podx/{ID}\n0::/kubepods/besteffort/pod6f1b7a36-7c8e-4a8f-9b41-0f6a1d7e2c11/{ID}\n")).unwrap();
        let mut cs = Containers::new(&[state.path().to_path_buf()], proc_root.path());
        let c = cs.lookup(5, 77, None);
        assert_eq!(c.id, &ID[..12]);
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(c.pod_name.as_deref(), Some("web-7d9f"));
        assert_eq!(c.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(
            c.pod_uid.as_deref(),
            Some("6f1b7a36-7c8e-4a8f-9b41-0f6a1d7e2c11")
        );
        assert_eq!(
            c.image_repository.as_deref(),
            Some("docker.io/library/nginx")
        );
        assert_eq!(c.image_tag.as_deref(), Some("1.25"));
        assert_eq!(c.privileged, Some(false));
        assert_eq!(c.mounts[1].dest, "/data");
        assert_eq!(c.mounts[1].describe(), "/srv/data:/data::false:rprivate");
        assert!(c.start_ts.unwrap() > 0);
        assert_eq!(cs.known(), 1);
        // Cached by cgroup: the next lookup does not read /proc.
        std::fs::remove_file(pid_dir.join("cgroup")).unwrap();
        assert_eq!(cs.lookup(5, 77, None).id, c.id);
        // A host cgroup is the host.
        assert!(cs.lookup(6, 1, None).is_host());
        // The bundle goes away: the container is forgotten.
        std::fs::remove_dir_all(&bundle).unwrap();
        assert_eq!(cs.sweep(), vec![c.id.clone()]);
        assert_eq!(cs.known(), 0);
    }
}
