//! User and group names (`user.name`, `group.name`, `user.loginname`).
//!
//! Owns a cache of `passwd` and `group` databases: the node's own
//! (`/etc/passwd`, re-read when it changes, checked at most every
//! [`RECHECK`]), and one per container, read once from the container's root
//! through `/proc/<pid>/root/etc/...` (a uid means a different user inside a
//! container). Never asks NSS or the network: names come from files only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the node's files are checked for changes. Users are rarely
/// added on an edge node; a minute-old view costs nothing.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Container databases kept at most (one per running container).
const MAX_CONTAINER_DBS: usize = 512;

#[derive(Debug, Default)]
struct Db {
    users: HashMap<u32, Arc<str>>,
    groups: HashMap<u32, Arc<str>>,
}

impl Db {
    fn read(root: &Path) -> Db {
        Db {
            users: parse_ids(&read(root, "etc/passwd"), 2),
            groups: parse_ids(&read(root, "etc/group"), 2),
        }
    }
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_default()
}

/// `name:x:ID:...` lines: ID (the `field`th, 0-based) -> name.
fn parse_ids(text: &str, field: usize) -> HashMap<u32, Arc<str>> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut it = line.split(':');
        let Some(name) = it.next().filter(|n| !n.is_empty()) else {
            continue;
        };
        if let Some(id) = it.nth(field - 1).and_then(|v| v.parse::<u32>().ok()) {
            // The first entry wins, as getpwuid does.
            out.entry(id).or_insert_with(|| Arc::from(name));
        }
    }
    out
}

pub struct Users {
    host_root: PathBuf,
    host: Db,
    host_stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
    containers: HashMap<String, Db>,
}

/// The names for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Names {
    pub user: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    pub login: Option<Arc<str>>,
}

impl Users {
    /// Databases under `host_root` (`/` on a node).
    pub fn new(host_root: &Path) -> Users {
        let mut u = Users {
            host_root: host_root.to_path_buf(),
            host: Db::default(),
            host_stamp: None,
            checked: Instant::now(),
            containers: HashMap::new(),
        };
        u.reload_host();
        u
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |rel: &str| {
            std::fs::metadata(self.host_root.join(rel))
                .and_then(|m| m.modified())
                .ok()
        };
        Some((
            m("etc/passwd")?,
            m("etc/group").unwrap_or(SystemTime::UNIX_EPOCH),
        ))
    }

    fn reload_host(&mut self) {
        self.host = Db::read(&self.host_root);
        self.host_stamp = self.stamp();
        self.checked = Instant::now();
    }

    /// Re-read the node's files if they changed (at most every [`RECHECK`]).
    pub fn refresh(&mut self) {
        if self.checked.elapsed() < RECHECK {
            return;
        }
        if self.stamp() != self.host_stamp {
            self.reload_host();
        }
        self.checked = Instant::now();
    }

    /// Forget a container's database (it stopped).
    pub fn forget_container(&mut self, id: &str) {
        self.containers.remove(id);
    }

    /// Names of `uid`, `gid` and `loginuid` for a process in `container`
    /// (`None` = the host), whose files are under `root` as the host sees
    /// it. A container whose root is not known yet gets no names (rather
    /// than the host's, which would be wrong).
    pub fn names(
        &mut self,
        container: Option<(&str, Option<&str>)>,
        uid: u32,
        gid: u32,
        loginuid: Option<u32>,
    ) -> Names {
        // The login uid is the host's: the audit subsystem sets it at login.
        let login = loginuid.and_then(|l| self.host.users.get(&l).cloned());
        let db = match container {
            None => &self.host,
            Some((id, root)) => {
                if !self.containers.contains_key(id) {
                    let Some(root) = root else {
                        return Names {
                            login,
                            ..Names::default()
                        };
                    };
                    if self.containers.len() >= MAX_CONTAINER_DBS {
                        self.containers.clear();
                    }
                    self.containers
                        .insert(id.to_string(), Db::read(Path::new(root)));
                }
                &self.containers[id]
            }
        };
        Names {
            user: db.users.get(&uid).cloned(),
            group: db.groups.get(&gid).cloned(),
            login,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_lines_map_ids_to_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken\nalice:x:1000:1000::/home/a:/bin/sh\nalias:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:alice\n",
        )
        .unwrap();
        let mut u = Users::new(dir.path());
        let n = u.names(None, 1000, 50, Some(0));
        assert_eq!(n.user.as_deref(), Some("alice"));
        assert_eq!(n.group.as_deref(), Some("staff"));
        assert_eq!(n.login.as_deref(), Some("root"));
        assert_eq!(u.names(None, 4242, 4242, None), Names::default());
        // A container's names come from its own root; unknown root, no names.
        let c = tempfile::tempdir().unwrap();
        std::fs::create_dir(c.path().join("etc")).unwrap();
        std::fs::write(c.path().join("etc/passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        assert_eq!(u.names(Some(("c1", None)), 1000, 0, None).user, None);
        let root = c.path().to_string_lossy().into_owned();
        let n = u.names(Some(("c1", Some(root.as_str()))), 1000, 0, None);
        assert_eq!(n.user.as_deref(), Some("app"));
    }
}
