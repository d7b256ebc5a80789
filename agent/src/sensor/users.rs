//! User and group names (`user.name`, `group.name`, `user.loginname`).
//!
//! Owns a cache of `passwd` and `group` databases: the node's own
//! (`/etc/passwd`, re-read when it changes, checked at most every
//! [`RECHECK`]), and one per container, read once from the container's root
//! (a uid means a different user inside a container). Never asks NSS or the
//! network: names come from files only.
//!
//! A container's files are the container's to choose, so they are read
//! confined to its root ([`super::confined`]: no symlink out, regular files
//! only, at most [`MAX_DB_BYTES`]) and on a thread of their own: a file on
//! a stuck mount can hold that thread, never the sensor. The first event of
//! a container waits up to [`FIRST_WAIT`] for its names; later events take
//! whatever has arrived.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

/// How often the node's files are checked for changes. Users are rarely
/// added on an edge node; a minute-old view costs nothing.
pub(crate) const RECHECK: Duration = Duration::from_secs(10);

/// Container databases kept at most (one per running container).
const MAX_CONTAINER_DBS: usize = 512;

/// A container's passwd or group file is read up to this size; a bigger one
/// gives no names (a real one is a few KiB; 10,000 users are ~1 MiB).
pub(crate) const MAX_DB_BYTES: u64 = 4 << 20;

/// How long the first event of a new container waits for its names. A read
/// takes well under a millisecond; a file that cannot be read in time is the
/// container's doing, and its events go on without names meanwhile.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(20);

/// Container databases being read at once at most; past that a container
/// waits for a free reader (its events carry no names until then).
const MAX_READERS: usize = 4;

#[derive(Debug, Default)]
struct Db {
    users: HashMap<u32, Arc<str>>,
    groups: HashMap<u32, Arc<str>>,
}

impl Db {
    /// The node's own files (trusted: the host's).
    fn read_host(root: &Path) -> Db {
        let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap_or_default();
        Db {
            users: parse_ids(&read("etc/passwd"), 2),
            groups: parse_ids(&read("etc/group"), 2),
        }
    }

    /// A container's files, confined to its root. A file that cannot be
    /// read safely gives no names (and a debug line saying why).
    fn read_container(root: &Path) -> Db {
        let read = |rel: &str| match super::confined::read_in_root(root, rel, MAX_DB_BYTES) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                tracing::debug!(error = %e, "no user or group names from this container file");
                String::new()
            }
        };
        Db {
            users: parse_ids(&read("etc/passwd"), 2),
            groups: parse_ids(&read("etc/group"), 2),
        }
    }
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

pub(crate) struct Users {
    host_root: PathBuf,
    host: Db,
    host_stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
    containers: HashMap<String, Db>,
    /// Containers whose databases are being read, and the answers.
    reading: HashSet<String>,
    done_tx: mpsc::Sender<(String, Db)>,
    done_rx: mpsc::Receiver<(String, Db)>,
}

/// The names for one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Names {
    pub(crate) user: Option<Arc<str>>,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) login: Option<Arc<str>>,
}

impl Users {
    /// Databases under `host_root` (`/` on a node).
    pub(crate) fn new(host_root: &Path) -> Users {
        let (done_tx, done_rx) = mpsc::channel();
        let mut u = Users {
            host_root: host_root.to_path_buf(),
            host: Db::default(),
            host_stamp: None,
            checked: Instant::now(),
            containers: HashMap::new(),
            reading: HashSet::new(),
            done_tx,
            done_rx,
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
        self.host = Db::read_host(&self.host_root);
        self.host_stamp = self.stamp();
        self.checked = Instant::now();
    }

    /// Re-read the node's files if they changed (at most every [`RECHECK`]).
    pub(crate) fn refresh(&mut self) {
        if self.checked.elapsed() < RECHECK {
            return;
        }
        if self.stamp() != self.host_stamp {
            self.reload_host();
        }
        self.checked = Instant::now();
    }

    /// Read container `id`'s databases on a thread of their own. False when
    /// a read is already under way or every reader is busy.
    fn start_reading(&mut self, id: &str, root: &str) -> bool {
        if self.reading.contains(id) || self.reading.len() >= MAX_READERS {
            return false;
        }
        let tx = self.done_tx.clone();
        let (id_owned, root) = (id.to_string(), std::path::PathBuf::from(root));
        let spawned = std::thread::Builder::new()
            .name("edge-agent-users".into())
            .spawn(move || {
                let db = Db::read_container(&root);
                let _ = tx.send((id_owned, db));
            });
        match spawned {
            Ok(_) => {
                self.reading.insert(id.to_string());
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not start a reader for container users");
                false
            }
        }
    }

    /// Take the databases that were read. With `wait_for`, wait until
    /// that container's arrives or the deadline passes.
    fn collect(&mut self, wait_for: Option<(&str, Instant)>) {
        loop {
            let got = match wait_for {
                None => self.done_rx.try_recv().ok(),
                Some((_, deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.done_rx.recv_timeout(left).ok()
                }
            };
            let Some((id, db)) = got else {
                return;
            };
            self.reading.remove(&id);
            if self.containers.len() >= MAX_CONTAINER_DBS {
                self.containers.clear();
            }
            let ours = wait_for.is_some_and(|(want, _)| want == id);
            self.containers.insert(id, db);
            if ours {
                return;
            }
        }
    }

    /// Forget a container's database (it stopped).
    pub(crate) fn forget_container(&mut self, id: &str) {
        self.containers.remove(id);
    }

    /// Names of `uid`, `gid` and `loginuid` for a process in `container`
    /// (`None` = the host), whose files are under `root` as the host sees
    /// it. A container whose root is not known yet gets no names (rather
    /// than the host's, which would be wrong).
    pub(crate) fn names(
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
                self.collect(None);
                if !self.containers.contains_key(id)
                    && let Some(root) = root
                    && self.start_reading(id, root)
                {
                    self.collect(Some((id, Instant::now() + FIRST_WAIT)));
                }
                match self.containers.get(id) {
                    Some(db) => db,
                    None => {
                        return Names {
                            login,
                            ..Names::default()
                        };
                    }
                }
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

    #[test]
    fn a_container_file_that_never_answers_costs_one_short_wait_not_the_sensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Users::new(dir.path());
        let c = tempfile::tempdir().unwrap();
        std::fs::create_dir(c.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &c.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let root = c.path().to_string_lossy().into_owned();
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                u.names(Some(("fifo", Some(root.as_str()))), 0, 0, None)
                    .user,
                None
            );
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
