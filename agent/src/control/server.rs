//! The socket file and its connections: one instance per runtime directory
//! (a lock file), bind with mode 0660 and the configured group, check every
//! peer with SO_PEERCRED and SO_PEERGROUPS, read requests, write answers.
//!
//! The socket appears under its final name only once its owner and mode are
//! set (it is bound under a temporary name and renamed), so there is no
//! moment in which a wider mode lets anyone connect.
//!
//! Connections are capped ([`Limits`]): in total, per peer user, with a few
//! slots only root and the daemon's own user may take, and in idle time. A
//! connection over a cap gets one `busy` answer and is closed at once, so
//! a flood of connections from a group member costs the daemon a handful of
//! descriptors, never all of them (the collectors, the outbox, the eBPF
//! programs and rule reloads need theirs).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Group, Uid};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Caller, ControlError, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Router, parse_request,
};

/// The lock that makes one daemon per runtime directory, beside the socket.
/// It holds the pid of the daemon that owns it.
pub(crate) const LOCK_FILE_NAME: &str = "edge-agent.lock";

/// The socket is bound under this name, given its owner and mode, then
/// renamed to its final name. It is no longer than `control.sock`, so a
/// runtime directory that passed the socket-path length check fits it too.
const BINDING_NAME: &str = "control.new";

/// How long a refused peer gets to send its request before it is told no.
/// Reading the request first means every request gets an answer (the client
/// sees `permission_denied`, not a reset connection).
const REFUSED_PEER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Caps on the socket's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all peers together.
    pub max_connections: usize,
    /// Of those, slots only root and the daemon's own user may take, so a
    /// technician running `sudo edge-agent status` always gets in.
    pub(crate) privileged_reserve: usize,
    /// Connections open at once per peer user other than root and the
    /// daemon's own.
    pub(crate) per_peer: usize,
    /// A connection with no request for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// A client that does not read its answer for this long is dropped.
    pub(crate) write_timeout: Duration,
}

/// `status`, `rules list` and the like open one connection each and close
/// it; `sensor watch` keeps one. 64 is far above what technicians and
/// scripts on one node do at once, and 64 descriptors are little of the
/// agent's budget (see `crate::fds`).
const MAX_CONNECTIONS: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            privileged_reserve: 8,
            per_peer: 16,
            // The CLI sends its request at once; a minute is generous for a
            // person typing into socat.
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The default caps, lowered when the process may not open enough
    /// descriptors for them besides its own work.
    pub(crate) fn within(connection_budget: usize) -> Limits {
        let d = Limits::default();
        let max = d.max_connections.min(connection_budget).max(4);
        Limits {
            max_connections: max,
            privileged_reserve: d.privileged_reserve.min(max / 4),
            per_peer: d.per_peer.min(max / 4).max(1),
            ..d
        }
    }
}

/// Connections open now, by peer, against [`Limits`].
#[derive(Debug, Default)]
struct Tally {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// A connection's place in the tally, given back when it closes.
struct Slot {
    tally: Arc<Mutex<Tally>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.tally.lock().expect("tally lock");
        t.total -= 1;
        if let Some(n) = t.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                t.by_uid.remove(&self.uid);
            }
        }
    }
}

/// Take a slot for a peer, or say which cap it hit.
fn take_slot(
    tally: &Arc<Mutex<Tally>>,
    limits: &Limits,
    uid: u32,
    privileged: bool,
) -> Result<Slot, String> {
    let mut t = tally.lock().expect("tally lock");
    let mine = t.by_uid.get(&uid).copied().unwrap_or(0);
    if t.total >= limits.max_connections {
        return Err(format!(
            "the control socket has {} connections open, its limit; try again in a moment",
            t.total
        ));
    }
    if !privileged {
        if t.total >= limits.max_connections - limits.privileged_reserve {
            return Err(format!(
                "the control socket's last {} connections are kept for root; try again in a moment",
                limits.privileged_reserve
            ));
        }
        if mine >= limits.per_peer {
            return Err(format!(
                "uid {uid} already has {mine} control connections open (at most {}); close some first",
                limits.per_peer
            ));
        }
    }
    t.total += 1;
    *t.by_uid.entry(uid).or_default() += 1;
    Ok(Slot {
        tally: tally.clone(),
        uid,
    })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ServerError {
    #[error("cannot create the runtime directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the instance lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("another edge-agent{} is already running with the runtime directory {} (lock {} is held); stop it first, or give this one its own paths.runtime_dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), dir.display(), lock.display())]
    AlreadyRunning {
        dir: PathBuf,
        lock: PathBuf,
        pid: Option<u32>,
    },
    #[error("cannot remove the stale control socket {}: {source}", path.display())]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot bind the control socket {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot set owner or mode of the control socket {}: {source}", path.display())]
    Permissions { path: PathBuf, source: io::Error },
}

/// Who may connect: root, the daemon's own user, and members of `group`.
#[derive(Debug, Clone, Copy)]
struct Access {
    own_uid: Uid,
    group: Option<Gid>,
}

impl Access {
    /// Root or the daemon's own user: may call every method and take the
    /// reserved connection slots.
    fn privileged(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid.as_raw()
    }

    /// `groups`: the peer's supplementary groups when connecting.
    fn allows(&self, uid: u32, gid: u32, groups: &[u32]) -> bool {
        if uid == 0 || uid == self.own_uid.as_raw() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        gid == group.as_raw() || groups.contains(&group.as_raw())
    }
}

/// `SO_PEERGROUPS` (Linux 4.13+): the peer's supplementary groups as they were
/// when it called `connect()`. The generic value, used by x86_64 and arm64;
/// libc does not export it.
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary groups of the peer of `stream`: from the kernel
/// (`SO_PEERGROUPS`), which cannot race with the peer exiting or changing
/// groups; from `/proc/<pid>/status` only on kernels without it.
fn peer_groups(stream: &UnixStream, pid: Option<i32>) -> Vec<u32> {
    let fd = stream.as_raw_fd();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    for _ in 0..2 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `fd` is a live socket owned by `stream` for the duration of
        // the call; `groups` has room for `len` bytes and the kernel writes at
        // most `len` bytes, then stores the length it wrote (or, with ERANGE,
        // the length it needs) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return groups;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ERANGE) if count > groups.len() => groups.resize(count, 0),
            _ => break,
        }
    }
    pid.map(proc_supplementary_groups).unwrap_or_default()
}

/// The supplementary groups of a live process, from `/proc/<pid>/status`.
fn proc_supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Take the instance lock in `dir`, or say who holds it.
fn lock_instance(dir: &Path) -> Result<Flock<std::fs::File>, ServerError> {
    let path = dir.join(LOCK_FILE_NAME);
    let lock_err = |source| ServerError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(lock_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // Record our pid for the next instance's error message.
            let _ = lock.set_len(0);
            let _ = writeln!(*lock, "{}", std::process::id());
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(ServerError::AlreadyRunning {
            dir: dir.to_path_buf(),
            pid: std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            lock: path,
        }),
        Err((_, errno)) => Err(lock_err(errno.into())),
    }
}

/// Bind the socket, then serve until `shutdown`. The socket file is removed on
/// the way out. Returns once bound (the serving runs in a spawned task, which
/// also holds the instance lock until it ends).
pub(crate) async fn serve_with(
    path: &Path,
    group_name: &str,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|source| ServerError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let lock = lock_instance(dir)?;

    // We hold the lock, so a socket file left here belongs to a daemon that
    // died without cleaning up (SIGKILL, power loss on a persistent /run).
    let binding = dir.join(BINDING_NAME);
    for stale in [path, binding.as_path()] {
        match std::fs::remove_file(stale) {
            Ok(()) => debug!(socket = %stale.display(), "removed a stale control socket"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ServerError::RemoveStale {
                    path: stale.to_path_buf(),
                    source,
                });
            }
        }
    }
    let listener = UnixListener::bind(&binding).map_err(|source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    })?;

    let group = match Group::from_name(group_name) {
        Ok(Some(g)) => Some(g.gid),
        Ok(None) => {
            warn!(
                group = group_name,
                "control.group does not exist; only root and the agent's user may use the control socket"
            );
            None
        }
        Err(e) => {
            warn!(group = group_name, error = %e, "cannot look up control.group; only root and the agent's user may use the control socket");
            None
        }
    };
    let perm_err = |source| ServerError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    if let Some(gid) = group {
        // Giving a file to a group we are not in needs CAP_CHOWN; without it
        // the socket keeps our group and the 0660 mode still keeps others out.
        if let Err(e) = nix::unistd::chown(&binding, None, Some(gid)) {
            warn!(error = %e, "cannot give the control socket to group {group_name}; members of it will be refused by the file mode");
        }
    }
    std::fs::set_permissions(&binding, std::fs::Permissions::from_mode(0o660)).map_err(perm_err)?;
    std::fs::rename(&binding, path).map_err(perm_err)?;
    info!(socket = %path.display(), "control socket listening");

    let access = Access {
        own_uid: nix::unistd::geteuid(),
        group,
    };
    let path = path.to_path_buf();
    let tally = Arc::new(Mutex::new(Tally::default()));
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => admit(stream, access, &tally, &limits, &router, &shutdown),
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        // An accept error is usually fd exhaustion: wait before retrying.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
        drop(lock);
    }))
}

/// Serve an accepted connection in its own task if it fits the caps; else
/// answer `busy` and close it.
fn admit(
    stream: UnixStream,
    access: Access,
    tally: &Arc<Mutex<Tally>>,
    limits: &Limits,
    router: &Router,
    shutdown: &CancellationToken,
) {
    let (uid, gid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.gid(), c.pid()),
        Err(e) => {
            warn!(error = %e, "cannot read control socket peer credentials; closing");
            return;
        }
    };
    let slot = match take_slot(tally, limits, uid, access.privileged(uid)) {
        Ok(slot) => slot,
        Err(why) => {
            debug!(uid, pid, reason = %why, "control socket: connection refused");
            // One line into an empty socket buffer never blocks; a peer that
            // is gone already costs nothing.
            if let Ok(mut line) = serde_json::to_vec(&error_line(&ControlError::new("busy", why))) {
                line.push(b'\n');
                let _ = stream.try_write(&line);
            }
            return;
        }
    };
    let router = router.clone();
    let shutdown = shutdown.clone();
    let limits = *limits;
    tokio::spawn(async move {
        let _slot = slot;
        connection(stream, (uid, gid, pid), access, limits, router, shutdown).await
    });
}

async fn connection(
    stream: UnixStream,
    (uid, gid, pid): (u32, u32, Option<i32>),
    access: Access,
    limits: Limits,
    router: Router,
    shutdown: CancellationToken,
) {
    let groups = peer_groups(&stream, pid);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    if !access.allows(uid, gid, &groups) {
        warn!(
            uid,
            gid, pid, "control socket: refused a peer that is neither root nor in control.group"
        );
        // Let the peer finish sending its request, so the refusal is an
        // answer it reads rather than a connection reset under its write.
        let _ = tokio::time::timeout(
            REFUSED_PEER_READ_TIMEOUT,
            read_line_limited(&mut lines, &mut buf),
        )
        .await;
        let err = ControlError::new(
            "permission_denied",
            "only root and members of the control group may use this socket",
        );
        let _ = write_line(&mut write, &error_line(&err), limits.write_timeout).await;
        return;
    }
    let caller = Caller {
        privileged: access.privileged(uid),
    };
    loop {
        buf.clear();
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = tokio::time::timeout(limits.idle_timeout, read_line_limited(&mut lines, &mut buf)) => n,
        };
        match n {
            Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "control connection closed");
                return;
            }
            Err(_) => {
                debug!(
                    uid,
                    "control connection idle for {}s; closed",
                    limits.idle_timeout.as_secs()
                );
                return;
            }
        }
        let answer = match parse_request(&buf) {
            Ok(req) => {
                debug!(method = %req.method, uid, "control request");
                router.dispatch_from(req, caller).await
            }
            Err(e) => Err(e),
        };
        let wt = limits.write_timeout;
        let ok = match answer {
            Ok(Reply::Value(v)) => {
                write_line(
                    &mut write,
                    &json!({"v": PROTOCOL_VERSION, "ok": true, "result": v}),
                    wt,
                )
                .await
            }
            Ok(Reply::Stream(mut rx)) => {
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => None,
                        item = rx.recv() => item,
                    };
                    let Some(item) = item else { break };
                    if write_line(
                        &mut write,
                        &json!({"v": PROTOCOL_VERSION, "ok": true, "item": item}),
                        wt,
                    )
                    .await
                    .is_err()
                    {
                        return; // client went away: dropping rx tells the producer
                    }
                }
                write_line(
                    &mut write,
                    &json!({"v": PROTOCOL_VERSION, "ok": true, "end": true}),
                    wt,
                )
                .await
            }
            Err(e) => write_line(&mut write, &error_line(&e), wt).await,
        };
        if ok.is_err() {
            return;
        }
    }
}

pub(crate) fn error_line(e: &ControlError) -> Value {
    json!({"v": PROTOCOL_VERSION, "ok": false, "error": e})
}

pub(crate) async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let used = chunk.len();
        buf.extend_from_slice(chunk);
        r.consume(used);
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "control request too long",
            ));
        }
        if done {
            return Ok(buf.len());
        }
    }
}

/// Write one answer line; a client that does not read it within `timeout`
/// is given up (its connection closes).
async fn write_line<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    v: &Value,
    timeout: Duration,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    let write = async {
        w.write_all(&line).await?;
        w.flush().await
    };
    tokio::time::timeout(timeout, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_own_user_and_group_members_are_allowed_others_not() {
        let a = Access {
            own_uid: Uid::from_raw(998),
            group: Some(Gid::from_raw(990)),
        };
        assert!(a.allows(0, 0, &[]));
        assert!(a.allows(998, 5, &[]));
        assert!(a.allows(1000, 990, &[]));
        assert!(a.allows(1000, 1000, &[27, 990]));
        assert!(!a.allows(1000, 1000, &[27]));
        let no_group = Access {
            own_uid: Uid::from_raw(0),
            group: None,
        };
        assert!(!no_group.allows(1000, 990, &[990]));
    }

    #[tokio::test]
    async fn a_request_line_over_the_limit_is_refused_and_one_at_it_is_read() {
        let mut at_limit = vec![b'x'; MAX_REQUEST_BYTES - 1];
        at_limit.push(b'\n');
        let mut buf = Vec::new();
        let mut r = tokio::io::BufReader::with_capacity(1000, &at_limit[..]);
        assert_eq!(
            read_line_limited(&mut r, &mut buf).await.unwrap(),
            MAX_REQUEST_BYTES
        );
        let over = vec![b'x'; MAX_REQUEST_BYTES + 1];
        let mut r = tokio::io::BufReader::with_capacity(1000, &over[..]);
        buf.clear();
        let e = read_line_limited(&mut r, &mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            buf.len() <= MAX_REQUEST_BYTES + 1000,
            "read no more than one buffer past the limit"
        );
    }

    #[tokio::test]
    async fn peer_groups_come_from_the_kernel_for_a_live_connection() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        let mut got = peer_groups(&a, None);
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
    }

    #[test]
    fn members_are_capped_per_user_and_the_last_slots_are_kept_for_root() {
        let limits = Limits {
            max_connections: 6,
            privileged_reserve: 2,
            per_peer: 2,
            ..Limits::default()
        };
        let tally = Arc::new(Mutex::new(Tally::default()));
        let a1 = take_slot(&tally, &limits, 1000, false).unwrap();
        let _a2 = take_slot(&tally, &limits, 1000, false).unwrap();
        let third = take_slot(&tally, &limits, 1000, false).err().unwrap();
        assert!(third.contains("uid 1000 already has 2"), "{third}");
        let b1 = take_slot(&tally, &limits, 1001, false).unwrap();
        let _b2 = take_slot(&tally, &limits, 1001, false).unwrap();
        // Four taken: the last two are root's.
        let member = take_slot(&tally, &limits, 1002, false).err().unwrap();
        assert!(member.contains("kept for root"), "{member}");
        let _r1 = take_slot(&tally, &limits, 0, true).unwrap();
        let r2 = take_slot(&tally, &limits, 0, true).unwrap();
        assert!(
            take_slot(&tally, &limits, 0, true).is_err(),
            "the total is a hard cap"
        );
        // A closed connection gives its slot back.
        drop((a1, b1, r2));
        assert!(take_slot(&tally, &limits, 1000, false).is_ok());
    }

    #[test]
    fn few_descriptors_lower_the_caps_but_never_to_nothing() {
        assert_eq!(Limits::within(10_000), Limits::default());
        let small = Limits::within(20);
        assert_eq!(small.max_connections, 20);
        assert!(small.per_peer <= 5 && small.privileged_reserve <= 5);
        assert_eq!(Limits::within(0).max_connections, 4);
    }

    /// A client of the socket at `path`: send `line`, read one answer line
    /// (empty when the daemon closed the connection first).
    async fn exchange(path: &Path, line: Option<&str>) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = UnixStream::connect(path).await.unwrap();
        if let Some(l) = line {
            s.write_all(l.as_bytes()).await.unwrap();
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_one_over_the_cap_is_told_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let router = Router::new();
        router.register("ping", |_| async { Ok(Reply::Value(json!("pong"))) });
        let limits = Limits {
            max_connections: 2,
            privileged_reserve: 0,
            per_peer: 2,
            idle_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(1),
        };
        let shutdown = CancellationToken::new();
        let task = serve_with(
            &path,
            "no-such-group-here",
            router,
            shutdown.clone(),
            limits,
        )
        .await
        .unwrap();
        // Two idle clients fill the socket; a third is refused with a reason.
        let idle1 = UnixStream::connect(&path).await.unwrap();
        let idle2 = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = exchange(&path, Some("{\"v\":1,\"method\":\"ping\"}\n")).await;
        assert!(third.contains("\"code\":\"busy\""), "{third}");
        // The idle ones are let go after the idle timeout ...
        for idle in [idle1, idle2] {
            let mut idle = idle;
            let mut b = Vec::new();
            let n = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut b),
            )
            .await
            .expect("the daemon closed the idle connection");
            assert_eq!(n.unwrap(), 0);
        }
        // ... which frees their slots.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"v\":1,\"method\":\"ping\"}\n")
            .await
            .unwrap();
        let mut answer = String::new();
        BufReader::new(&mut s).read_line(&mut answer).await.unwrap();
        assert!(answer.contains("pong"), "{answer}");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_second_instance_is_refused_by_the_lock_and_told_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_instance(dir.path()).unwrap();
        match lock_instance(dir.path()) {
            Err(ServerError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
    }
}
