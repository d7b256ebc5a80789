//! The control socket: a Unix-socket API used by `edge-agent status` and the
//! other local commands.
//!
//! Owns the wire protocol, the socket file and the peer check. Never holds a
//! stage's state: stages register handlers on the [`Router`] and answer
//! through them (usually by asking their own task over a channel).
//!
//! # Wire protocol, version 1
//! Newline-delimited JSON over a stream socket; one request per line, any
//! number of requests per connection.
//! - request: `{"v":1,"method":"status","params":{...}}` (`params` optional)
//! - answer: `{"v":1,"ok":true,"result":...}` or
//!   `{"v":1,"ok":false,"error":{"code":"unknown_method","message":"..."}}`
//! - streaming answer: any number of `{"v":1,"ok":true,"item":...}` lines,
//!   then `{"v":1,"ok":true,"end":true}`; the client ends a stream early by
//!   closing the connection.
//!
//! Method names: the daemon's own are one word (`ping`, `status`); a
//! stage's are `<stage>.<verb>` in snake_case, registered by that stage
//! (`sensor.watch`, `rules.list`, `outbox.list`, `outbox.test_alert`,
//! `outbox.test_report`).
//!
//! A request with a `v` the daemon does not speak gets error code
//! `unsupported_version` and the connection stays open. A line longer than
//! [`MAX_REQUEST_BYTES`] closes the connection.
//!
//! # Who may call what
//! Root, the daemon's own user and members of `control.group` may connect.
//! Most methods answer all of them; a method registered with
//! [`Router::register_privileged`] (tools that write into the outbox, such as
//! `outbox.test_report`) answers only root and the daemon's own user, and tells
//! the others `permission_denied`. Connections are capped in number, per
//! peer and in idle time (see `server.rs`): a connection over a cap gets
//! one `busy` answer and is closed.

mod client;
mod server;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

pub(crate) use client::{Client, ClientError};
pub use server::Limits;
pub(crate) use server::{ServerError, serve_with};
pub(crate) use server::{error_line, read_line_limited};

/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Requests are small commands; anything larger is a confused or hostile peer.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) v: u32,
    pub(crate) method: String,
    #[serde(default)]
    pub(crate) params: Value,
}

/// One request line as it came off the socket (newline included or not).
/// Anything that is not a request is `bad_request`; the version and the
/// method are the router's business.
pub(crate) fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    serde_json::from_slice::<Request>(line)
        .map_err(|e| ControlError::new("bad_request", format!("not a control request: {e}")))
}

/// A stable, machine-readable error: `code` is what scripts match on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} [{code}]")]
pub(crate) struct ControlError {
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ControlError {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
    pub(crate) fn bad_params(message: impl Into<String>) -> Self {
        Self::new("bad_params", message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new("unavailable", message)
    }
}

/// What a handler answers.
pub(crate) enum Reply {
    Value(Value),
    /// Items until the sender is dropped or the client goes away.
    Stream(mpsc::Receiver<Value>),
}

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Reply, ControlError>> + Send>>;
pub(crate) type Handler = Arc<dyn Fn(Value) -> HandlerFuture + Send + Sync>;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Everyone the socket lets in (root, the daemon's user, `control.group`).
    Members,
    /// Root and the daemon's own user only.
    Privileged,
}

/// The caller of a request, as the socket's peer check saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Root or the daemon's own user (not merely a member of the group).
    pub(crate) privileged: bool,
}

impl Caller {
    /// A call from inside the daemon (or a test): no peer to check.
    #[cfg(test)]
    pub(crate) const IN_PROCESS: Caller = Caller { privileged: true };
}

/// Method name -> handler. Stages register theirs when they start.
///
/// The daemon serves the socket before its stages start (so `status` works
/// while, say, the sensor is still loading), which leaves a window in which a
/// stage's method does not exist yet. A router made with [`Router::starting`]
/// holds a call to a method it does not know until [`Router::started`] is
/// called, then answers it; only then is `unknown_method` final.
#[derive(Clone)]
pub struct Router {
    handlers: Arc<RwLock<HashMap<String, (Handler, Access)>>>,
    started: watch::Sender<bool>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

/// The longest a call to a not-yet-registered method waits for start-up to
/// finish; past it the answer is `unknown_method` as usual.
pub(crate) const STARTING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Router {
    /// A router whose method set is complete (tests, one-shot tools).
    pub fn new() -> Self {
        Self {
            handlers: Arc::default(),
            started: watch::Sender::new(true),
        }
    }

    /// A router for a daemon still starting its stages.
    pub(crate) fn starting() -> Self {
        Self {
            handlers: Arc::default(),
            started: watch::Sender::new(false),
        }
    }

    /// Every stage has registered its methods: unknown is unknown from now on.
    pub(crate) fn started(&self) {
        self.started.send_replace(true);
    }

    fn handler(&self, method: &str) -> Option<(Handler, Access)> {
        self.handlers
            .read()
            .expect("router lock")
            .get(method)
            .cloned()
    }

    /// Register (or replace) `method`, open to every caller the socket lets in.
    pub(crate) fn register<F, Fut>(&self, method: &str, f: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, ControlError>> + Send + 'static,
    {
        self.insert(method, Access::Members, f);
    }

    /// Register (or replace) `method`, answered only for root and the
    /// daemon's own user; group members get `permission_denied`.
    pub(crate) fn register_privileged<F, Fut>(&self, method: &str, f: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, ControlError>> + Send + 'static,
    {
        self.insert(method, Access::Privileged, f);
    }

    fn insert<F, Fut>(&self, method: &str, access: Access, f: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply, ControlError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |params| Box::pin(f(params)));
        self.handlers
            .write()
            .expect("router lock")
            .insert(method.to_string(), (handler, access));
    }

    pub(crate) fn unregister(&self, method: &str) {
        self.handlers.write().expect("router lock").remove(method);
    }

    /// Answer a request from inside the daemon (no peer to check).
    #[cfg(test)]
    pub(crate) async fn dispatch(&self, request: Request) -> Result<Reply, ControlError> {
        self.dispatch_from(request, Caller::IN_PROCESS).await
    }

    /// Answer a request from `caller`.
    pub(crate) async fn dispatch_from(
        &self,
        request: Request,
        caller: Caller,
    ) -> Result<Reply, ControlError> {
        if request.v != PROTOCOL_VERSION {
            return Err(ControlError::new(
                "unsupported_version",
                format!(
                    "this daemon speaks control protocol v{PROTOCOL_VERSION}, the request was v{}",
                    request.v
                ),
            ));
        }
        let mut handler = self.handler(&request.method);
        if handler.is_none() && !*self.started.borrow() {
            let mut started = self.started.subscribe();
            let _ = tokio::time::timeout(STARTING_WAIT, started.wait_for(|s| *s)).await;
            handler = self.handler(&request.method);
        }
        match handler {
            Some((_, Access::Privileged)) if !caller.privileged => Err(ControlError::new(
                "permission_denied",
                format!(
                    "\"{}\" is for root only (members of the control group may not call it)",
                    request.method
                ),
            )),
            Some((h, _)) => h(request.params).await,
            None => Err(ControlError::new(
                "unknown_method",
                format!(
                    "the daemon has no method \"{}\" (is the stage that serves it enabled?)",
                    request.method
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: u32, method: &str) -> Request {
        Request {
            v,
            method: method.into(),
            params: Value::Null,
        }
    }

    #[tokio::test]
    async fn unknown_methods_and_versions_get_stable_error_codes() {
        let r = Router::new();
        r.register("ping", |_| async { Ok(Reply::Value(Value::from("pong"))) });
        assert!(matches!(r.dispatch(req(1, "ping")).await, Ok(Reply::Value(v)) if v == "pong"));
        assert_eq!(
            r.dispatch(req(1, "nope")).await.err().unwrap().code,
            "unknown_method"
        );
        assert_eq!(
            r.dispatch(req(2, "ping")).await.err().unwrap().code,
            "unsupported_version"
        );
    }

    #[tokio::test]
    async fn a_privileged_method_answers_root_and_refuses_group_members() {
        let r = Router::new();
        r.register_privileged("outbox.test_report", |_| async {
            Ok(Reply::Value(Value::from(1)))
        });
        let member = Caller { privileged: false };
        let refused = r.dispatch_from(req(1, "outbox.test_report"), member).await;
        assert_eq!(refused.err().unwrap().code, "permission_denied");
        let root = Caller { privileged: true };
        assert!(
            r.dispatch_from(req(1, "outbox.test_report"), root)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_call_during_start_up_waits_for_the_stage_that_registers_it() {
        let r = Router::starting();
        let call = tokio::spawn({
            let r = r.clone();
            async move { r.dispatch(req(1, "sensor.watch")).await }
        });
        tokio::task::yield_now().await;
        r.register("sensor.watch", |_| async {
            Ok(Reply::Value(Value::from("ok")))
        });
        r.started();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), call)
            .await
            .expect("answered once started")
            .unwrap();
        assert!(matches!(answer, Ok(Reply::Value(v)) if v == "ok"));
        // Once started, an unknown method is refused at once.
        let refused = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            r.dispatch(req(1, "nope")),
        )
        .await
        .expect("no wait after start-up");
        assert_eq!(refused.err().unwrap().code, "unknown_method");
    }
}
