//! The client side of the control socket, for the CLI commands. Owns the
//! mapping from socket and protocol failures to what a person can do about
//! them (not running, permission denied, refused); never retries on its own.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{ControlError, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No socket, or nobody listening on it.
    #[error("the edge-agent daemon is not running (no answer on {})", path.display())]
    NotRunning { path: PathBuf },
    #[error("permission denied on {}: run as root or as a member of the control group", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("control socket {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon answered something this client cannot read: {0}")]
    Protocol(String),
    #[error("the daemon refused the request: {0}")]
    Refused(ControlError),
}

pub(crate) struct Client {
    path: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Client {
    pub(crate) async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        path: path.to_path_buf(),
                    }
                }
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    path: path.to_path_buf(),
                },
                _ => ClientError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let (read, write) = stream.into_split();
        Ok(Client {
            path: path.to_path_buf(),
            lines: BufReader::new(read).lines(),
            write,
        })
    }

    async fn send(&mut self, method: &str, params: Value) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_vec(&json!({"v": PROTOCOL_VERSION, "method": method, "params": params}))
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.write
            .write_all(&line)
            .await
            .map_err(|source| self.io(source))
    }

    fn io(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn next_answer(&mut self) -> Result<Value, ClientError> {
        let line = self.lines.next_line().await.map_err(|e| self.io(e))?;
        let line =
            line.ok_or_else(|| ClientError::Protocol("the daemon closed the connection".into()))?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if v.get("ok") == Some(&Value::Bool(true)) {
            Ok(v)
        } else {
            let err = v
                .get("error")
                .and_then(|e| serde_json::from_value::<ControlError>(e.clone()).ok())
                .unwrap_or_else(|| ControlError::new("unknown", line));
            if err.code == "permission_denied" {
                return Err(ClientError::PermissionDenied {
                    path: self.path.clone(),
                });
            }
            Err(ClientError::Refused(err))
        }
    }

    /// One request, one answer.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        if let Err(sent) = self.send(method, params).await {
            // The daemon may have answered and closed before our request was
            // written (a refusal): its answer explains more than EPIPE does.
            return match self.next_answer().await {
                Err(ClientError::Io { .. }) | Err(ClientError::Protocol(_)) => Err(sent),
                Ok(_) => Err(sent),
                Err(answer) => Err(answer),
            };
        }
        let mut v = self.next_answer().await?;
        Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }

    /// Start a streaming request; then call [`Client::next_item`] until `None`.
    pub(crate) async fn start_stream(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<(), ClientError> {
        self.send(method, params).await
    }

    pub(crate) async fn next_item(&mut self) -> Result<Option<Value>, ClientError> {
        let mut v = self.next_answer().await?;
        if v.get("end") == Some(&Value::Bool(true)) {
            return Ok(None);
        }
        Ok(Some(
            v.get_mut("item").map(Value::take).unwrap_or(Value::Null),
        ))
    }
}
