//! The socket file and its connections: bind with mode 0660 and the configured
//! group, check every peer with SO_PEERCRED, read requests, write answers.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ControlError, MAX_REQUEST_BYTES, PROTOCOL_VERSION, Reply, Request, Router};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the runtime directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("another edge-agent is already running: its control socket {} answers", path.display())]
    AlreadyRunning { path: PathBuf },
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
    fn allows(&self, uid: u32, gid: u32, pid: Option<i32>) -> bool {
        if uid == 0 || uid == self.own_uid.as_raw() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        gid == group.as_raw()
            || pid.is_some_and(|pid| supplementary_groups(pid).contains(&group.as_raw()))
    }
}

/// The supplementary groups of a live process, from `/proc/<pid>/status`.
fn supplementary_groups(pid: i32) -> Vec<u32> {
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

/// Bind the socket, then serve until `shutdown`. The socket file is removed on
/// the way out. Returns once bound (the serving runs in a spawned task).
pub async fn serve(
    path: &Path,
    group_name: &str,
    router: Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|source| ServerError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;

    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::AlreadyRunning {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(|source| ServerError::RemoveStale {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind {
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
        // Only root may give a file to a group it is not in; anyone else keeps
        // their own group and the 0660 mode still keeps others out.
        if let Err(e) = nix::unistd::chown(path, None, Some(gid)) {
            warn!(error = %e, "cannot give the control socket to group {group_name}");
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perm_err)?;
    info!(socket = %path.display(), "control socket listening");

    let access = Access {
        own_uid: nix::unistd::geteuid(),
        group,
    };
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let router = router.clone();
                        let shutdown = shutdown.clone();
                        tokio::spawn(async move { connection(stream, access, router, shutdown).await });
                    }
                    Err(e) => {
                        warn!(error = %e, "control socket accept failed");
                        // An accept error is usually fd exhaustion: wait before retrying.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn connection(
    stream: UnixStream,
    access: Access,
    router: Router,
    shutdown: CancellationToken,
) {
    let (uid, gid, pid) = match stream.peer_cred() {
        Ok(c) => (c.uid(), c.gid(), c.pid()),
        Err(e) => {
            warn!(error = %e, "cannot read control socket peer credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    if !access.allows(uid, gid, pid) {
        warn!(
            uid,
            gid, pid, "control socket: refused a peer that is neither root nor in control.group"
        );
        let err = ControlError::new(
            "permission_denied",
            "only root and members of the control group may use this socket",
        );
        let _ = write_line(&mut write, &error_line(&err)).await;
        return;
    }
    let mut lines = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = read_line_limited(&mut lines, &mut buf) => n,
        };
        match n {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "control connection closed");
                return;
            }
        }
        let answer = match serde_json::from_slice::<Request>(&buf) {
            Ok(req) => router.dispatch(req).await,
            Err(e) => Err(ControlError::new(
                "bad_request",
                format!("not a control request: {e}"),
            )),
        };
        let ok = match answer {
            Ok(Reply::Value(v)) => {
                write_line(
                    &mut write,
                    &json!({"v": PROTOCOL_VERSION, "ok": true, "result": v}),
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
                )
                .await
            }
            Err(e) => write_line(&mut write, &error_line(&e)).await,
        };
        if ok.is_err() {
            return;
        }
    }
}

fn error_line(e: &ControlError) -> Value {
    json!({"v": PROTOCOL_VERSION, "ok": false, "error": e})
}

async fn read_line_limited<R: tokio::io::AsyncBufRead + Unpin>(
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

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, v: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
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
        assert!(a.allows(0, 0, None));
        assert!(a.allows(998, 5, None));
        assert!(a.allows(1000, 990, None));
        assert!(!a.allows(1000, 1000, None));
        let no_group = Access {
            own_uid: Uid::from_raw(0),
            group: None,
        };
        assert!(!no_group.allows(1000, 990, None));
    }
}
