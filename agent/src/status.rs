//! The status board: every stage keeps a small snapshot of itself here,
//! and the control socket reads them all for `edge-agent status`.
//!
//! Owns the snapshot types and the `status --json` document
//! ([`StatusDocument`]), which the daemon answers and `edge-agent status`
//! writes itself when the daemon is down: one type, so both have the same
//! keys. A stage writes only its own snapshot through a
//! [`StatusReporter`]; nothing here blocks a stage (a `watch` channel keeps
//! just the latest value).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, watch};

/// Where a stage is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StageState {
    Starting,
    /// Doing its job.
    Running,
    /// Working, but not fully (a probe missing, the broker unreachable).
    Degraded,
    /// Not working; `last_error` says why.
    Failed,
    /// Switched off in the config.
    Disabled,
    Stopped,
}

impl StageState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StageState::Starting => "starting",
            StageState::Running => "running",
            StageState::Degraded => "degraded",
            StageState::Failed => "failed",
            StageState::Disabled => "disabled",
            StageState::Stopped => "stopped",
        }
    }
}

/// An error as the technician sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ErrorNote {
    /// Unix seconds.
    pub(crate) at: u64,
    pub(crate) message: String,
}

/// One stage's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStatus {
    pub(crate) state: StageState,
    /// Unix seconds of the last state change.
    pub(crate) since: u64,
    /// One line for a person, e.g. "connected to mqtts://broker:8883".
    pub(crate) summary: String,
    /// Key numbers, in the order the stage set them. Names are stable
    /// (`snake_case`), values are JSON scalars or small objects.
    pub details: Map<String, Value>,
    /// The details a technician acts on (records given up, events lost):
    /// `edge-agent status` shows them without `--verbose` whenever they say
    /// something (non-zero, true, non-empty).
    #[serde(default)]
    pub(crate) key_details: Vec<String>,
    pub(crate) last_error: Option<ErrorNote>,
}

impl StageStatus {
    /// What `status` says of a stage while the daemon is down, from what it
    /// can read on disk: typed details, as a running stage gives them, and
    /// their key details.
    pub(crate) fn offline<D: Details>(
        state: StageState,
        summary: impl Into<String>,
        details: &D,
    ) -> Self {
        StageStatus {
            summary: summary.into(),
            details: details_map(details),
            key_details: D::KEY.iter().map(|k| (*k).to_string()).collect(),
            ..StageStatus::new(state)
        }
    }

    /// A stage in `state` since now, with nothing else said yet.
    pub(crate) fn new(state: StageState) -> Self {
        Self {
            state,
            since: unix_now(),
            summary: String::new(),
            details: Map::new(),
            key_details: Vec::new(),
            last_error: None,
        }
    }
}

/// A stage's status details as one typed snapshot: the fields, in order,
/// are the details `status --verbose` lists (and the agent's own metrics
/// derive from), and [`Details::KEY`] names those `status` shows on its one
/// screen when they say something ([`StageStatus::key_details`]).
///
/// Declared with [`details!`], which derives `KEY` from the fields marked
/// `[key]`, so a key detail cannot name a field the stage does not have.
pub(crate) trait Details: Serialize {
    /// The key details: names of fields of this struct.
    const KEY: &'static [&'static str];
}

/// `details` as the JSON object a [`StageStatus`] holds.
fn details_map<D: Details>(details: &D) -> Map<String, Value> {
    match serde_json::to_value(details) {
        Ok(Value::Object(map)) => map,
        // A derived Serialize of a struct is always an object.
        _ => Map::new(),
    }
}

/// Declare a stage's status details: a `#[derive(Serialize)]` struct and
/// its [`Details`] impl, whose `KEY` lists the fields marked `[key]` (after
/// the visibility), in order.
///
/// ```ignore
/// details! {
///     /// What the uplink shows.
///     pub struct UplinkDetails {
///         pub connected: bool,
///         /// Connections made since start.
///         pub [key] reconnects_total: u64,
///     }
/// }
/// ```
macro_rules! details {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $([$key:ident])? $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }
        impl $crate::status::Details for $name {
            const KEY: &'static [&'static str] = &[
                $( $( $crate::status::details!(@key $key $field), )? )*
            ];
        }
    };
    (@key key $field:ident) => {
        stringify!($field)
    };
}
pub(crate) use details;

/// The `status --json` document. Schema 1: keys are stable; keys may be
/// added, none renamed or removed without a new `schema`. The daemon fills
/// it; `edge-agent status` fills it too when the daemon does not answer,
/// with `null` where only the daemon knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatusDocument {
    /// [`STATUS_SCHEMA`].
    pub(crate) schema: u32,
    pub(crate) daemon: DaemonStatus,
    /// Null when the config cannot be read.
    pub(crate) node: Option<NodeStatus>,
    pub(crate) config: ConfigStatus,
    pub(crate) paths: PathsStatus,
    /// Reports refused before the outbox, per class (null without the
    /// daemon).
    pub(crate) reports_dropped_before_outbox: Option<IndexMap<crate::report::Class, u64>>,
    /// Per stage, in the order they started.
    pub(crate) stages: IndexMap<String, StageStatus>,
    /// The fleet config in force (`enabled`, `layers` with the version per
    /// layer, `effective_sha256`, `trial`, `last_results`; see
    /// `fleet/summary.rs`); null when the config cannot be read.
    #[serde(default)]
    pub(crate) fleet: Option<crate::fleet::summary::Summary>,
    /// Sections this build does not know (written by a newer daemon), kept
    /// as they are.
    #[serde(flatten)]
    pub(crate) more: Map<String, Value>,
}

/// The `schema` of [`StatusDocument`].
pub(crate) const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DaemonStatus {
    pub(crate) running: bool,
    pub(crate) pid: Option<u32>,
    pub(crate) version: String,
    /// Unix seconds.
    pub(crate) started_at: Option<u64>,
    pub(crate) uptime_secs: Option<u64>,
    /// Why it is not running (null when it is).
    pub(crate) reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeStatus {
    pub(crate) id: String,
    pub(crate) fleet: String,
    pub(crate) groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ConfigStatus {
    pub(crate) path: PathBuf,
    /// The file on disk, as `status` read it just now.
    pub(crate) valid: bool,
    pub(crate) error: Option<String>,
    /// The last SIGHUP's outcome (null before the first, or without the
    /// daemon).
    pub(crate) last_reload: Option<ReloadNote>,
    /// Keys changed on disk that wait for a restart, e.g.
    /// `sensor.ring_buffer_bytes`.
    pub(crate) pending_restart: Vec<String>,
    /// Of the config in force: 1 at start, one more per config submitted
    /// (null without the daemon).
    #[serde(default)]
    pub(crate) generation: Option<u64>,
    /// Per stage that follows the config: its answer to the last config it
    /// was handed (null without the daemon).
    #[serde(default)]
    pub(crate) applied: Option<IndexMap<String, AppliedNote>>,
}

/// The outcome of a reload (SIGHUP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReloadNote {
    /// Unix seconds.
    pub(crate) at: u64,
    pub(crate) ok: bool,
    pub(crate) error: Option<String>,
}

/// A stage's answer to a config it was handed (see `reload.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AppliedNote {
    pub(crate) generation: u64,
    /// Unix seconds.
    pub(crate) at: u64,
    pub(crate) ok: bool,
    pub(crate) error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PathsStatus {
    pub(crate) state_dir: PathBuf,
    pub(crate) state_dir_exists: bool,
    pub(crate) state_dir_bytes: u64,
    pub(crate) runtime_dir: PathBuf,
    pub(crate) control_socket: PathBuf,
}

/// Bytes in the regular files directly below `dir` (the state directory is
/// flat); 0 when it cannot be read.
pub(crate) fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One registered stage: its name and the receiving end of its snapshot.
type Slot = (String, watch::Receiver<StageStatus>);

/// The set of stages, in registration order.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Vec<Slot>>>,
    /// Woken whenever any stage changes state (the daemon waits on it for
    /// READY=1).
    state_changed: Arc<Notify>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a stage (or replace the one of the same name, after a restart).
    pub(crate) fn register(&self, name: &str) -> StatusReporter {
        let (tx, rx) = watch::channel(StageStatus::new(StageState::Starting));
        let mut stages = self.inner.lock().expect("status board lock");
        match stages.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = rx,
            None => stages.push((name.to_string(), rx)),
        }
        StatusReporter {
            tx: Arc::new(tx),
            state_changed: self.state_changed.clone(),
        }
    }

    /// Those of `names` whose stage is registered and still `Starting`.
    pub(crate) fn starting(&self, names: &[&str]) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|(n, s)| s.state == StageState::Starting && names.contains(&n.as_str()))
            .map(|(n, _)| n)
            .collect()
    }

    /// Completes at the next state change of any stage. Create it *before*
    /// looking at the states (and `enable` it), or a change in between is
    /// missed.
    pub(crate) fn state_changed(&self) -> Notified<'_> {
        self.state_changed.notified()
    }

    /// The latest snapshot of every stage, in registration order.
    pub fn snapshot(&self) -> Vec<(String, StageStatus)> {
        let stages = self.inner.lock().expect("status board lock");
        stages
            .iter()
            .map(|(n, rx)| (n.clone(), rx.borrow().clone()))
            .collect()
    }

    /// Every stage's snapshot keyed by its name, in registration order.
    pub(crate) fn stages(&self) -> IndexMap<String, StageStatus> {
        self.snapshot().into_iter().collect()
    }
}

/// A stage's handle on its own snapshot. Cheap to clone into sub-tasks.
#[derive(Clone)]
pub(crate) struct StatusReporter {
    tx: Arc<watch::Sender<StageStatus>>,
    state_changed: Arc<Notify>,
}

impl StatusReporter {
    /// A reporter not attached to any board (tests, one-shot CLI commands).
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        let (tx, _rx) = watch::channel(StageStatus::new(StageState::Starting));
        Self {
            tx: Arc::new(tx),
            state_changed: Arc::default(),
        }
    }

    /// Change state (and summary); `since` moves only when the state does.
    pub(crate) fn set_state(&self, state: StageState, summary: impl Into<String>) {
        let summary = summary.into();
        let mut changed = false;
        self.tx.send_modify(|s| {
            if s.state != state {
                s.state = state;
                s.since = unix_now();
                changed = true;
            }
            s.summary = summary;
        });
        if changed {
            self.state_changed.notify_waiters();
        }
    }

    /// Set one detail value, keeping the order in which details first appeared.
    pub(crate) fn set(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        self.tx.send_modify(|s| {
            s.details.insert(key.to_string(), value);
        });
    }

    /// Name the details `status` shows on its one screen when they say
    /// something ([`StageStatus::key_details`]).
    pub(crate) fn key_details(&self, names: &[&str]) {
        self.tx.send_modify(|s| {
            s.key_details = names.iter().map(|n| (*n).to_string()).collect();
        });
    }

    /// Set every detail of `details` at once (one notification), keeping
    /// the order in which details first appeared.
    pub(crate) fn details<D: Details>(&self, details: &D) {
        let map = details_map(details);
        self.tx.send_modify(|s| s.details.extend(map));
    }

    /// Record an error without changing state.
    pub(crate) fn error(&self, message: impl Into<String>) {
        let note = ErrorNote {
            at: unix_now(),
            message: message.into(),
        };
        self.tx.send_modify(|s| s.last_error = Some(note));
    }

    /// Record an error and mark the stage failed.
    pub(crate) fn fail(&self, message: impl Into<String>) {
        let message = message.into();
        self.set_state(StageState::Failed, message.clone());
        self.error(message);
    }

    pub(crate) fn current(&self) -> StageStatus {
        self.tx.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_keep_registration_order_and_detail_order() {
        let board = StatusBoard::new();
        let b = board.register("outbox");
        let a = board.register("uplink");
        a.set("zeta", 1);
        a.set("alpha", 2);
        b.set_state(StageState::Running, "ok");
        let snap = board.snapshot();
        assert_eq!(snap[0].0, "outbox");
        assert_eq!(snap[0].1.state, StageState::Running);
        let keys: Vec<_> = snap[1].1.details.keys().cloned().collect();
        assert_eq!(keys, ["zeta", "alpha"]);
    }

    details! {
        /// A stage's details, for the tests.
        struct ProbeDetails {
            up: bool,
            /// Marked: a key detail.
            [key] lost_total: u64,
            #[serde(rename = "ignored_by_key")]
            renamed: u8,
            [key] probes_missing: Vec<&'static str>,
        }
    }

    #[test]
    fn typed_details_fill_the_snapshot_in_field_order_and_name_their_key_fields() {
        assert_eq!(ProbeDetails::KEY, ["lost_total", "probes_missing"]);
        let board = StatusBoard::new();
        let r = board.register("probe");
        r.set("first", 1);
        r.details(&ProbeDetails {
            up: true,
            lost_total: 3,
            renamed: 0,
            probes_missing: vec!["kprobe/x"],
        });
        let (_, s) = &board.snapshot()[0];
        let keys: Vec<_> = s.details.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "first",
                "up",
                "lost_total",
                "ignored_by_key",
                "probes_missing"
            ]
        );
        assert_eq!(s.details["lost_total"], 3);
        assert_eq!(s.details["probes_missing"], serde_json::json!(["kprobe/x"]));
    }

    #[test]
    fn an_offline_snapshot_holds_typed_details_and_their_key_details() {
        let s = StageStatus::offline(
            StageState::Stopped,
            "not running",
            &ProbeDetails {
                up: false,
                lost_total: 7,
                renamed: 1,
                probes_missing: vec![],
            },
        );
        assert_eq!(s.state, StageState::Stopped);
        assert_eq!(s.summary, "not running");
        assert_eq!(s.key_details, ["lost_total", "probes_missing"]);
        let keys: Vec<_> = s.details.keys().cloned().collect();
        assert_eq!(
            keys,
            ["up", "lost_total", "ignored_by_key", "probes_missing"]
        );
        assert_eq!(s.details["lost_total"], 7);
    }

    #[test]
    fn failing_records_the_error_and_the_state() {
        let board = StatusBoard::new();
        let r = board.register("sensor");
        r.fail("tracefs not mounted");
        let (_, s) = &board.snapshot()[0];
        assert_eq!(s.state, StageState::Failed);
        assert_eq!(
            s.last_error.as_ref().unwrap().message,
            "tracefs not mounted"
        );
    }

    #[tokio::test]
    async fn the_board_says_who_is_still_starting_and_wakes_on_a_state_change() {
        let board = StatusBoard::new();
        let sensor = board.register("sensor");
        let _outbox = board.register("outbox");
        assert_eq!(board.starting(&["sensor", "rules"]), ["sensor"]);
        let changed = board.state_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        sensor.set("probes", 3); // not a state change
        sensor.set_state(StageState::Running, "37 probes attached");
        tokio::time::timeout(std::time::Duration::from_secs(5), changed)
            .await
            .expect("woken by the state change");
        assert!(board.starting(&["sensor", "rules"]).is_empty());
    }
}
