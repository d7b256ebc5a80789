//! Where alerts go on the node besides the outbox: the history kept for
//! `edge-agent alerts`, `rules.json_file`, and journald. All three are
//! disk or socket writes, so they run on a thread of their own: the rules
//! stage hands each alert over without waiting (a full queue is counted,
//! never waited for) and the event loop never touches a file.
//!
//! The thread also answers reads of the history (so a reader never sees a
//! rotation half done) and feeds followers (`edge-agent alerts --follow`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot};
use tracing::warn;

use super::history::{History, Query};
use super::journal::Journal;
use super::json_file::JsonFile;
use crate::config::AgentConfig;

/// Alerts queued for the thread: the per-rule rate limits keep alerts to
/// a few hundred a second at worst; this is seconds of that. The channel
/// allocates and touches every slot up front, so a slot ([`Msg`]) is kept
/// to two words: 4,096 of them are 96 KiB of resident memory.
const QUEUE: usize = 4096;

/// Followers that fall this far behind skip ahead (and are told how much).
const FOLLOW_BUFFER: usize = 1024;

/// How often the json_file's path is checked for a move (logrotate).
const MOVE_CHECK: Duration = Duration::from_secs(2);

/// What the sinks need from the config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) state_dir: PathBuf,
    pub(crate) history: u32,
    pub(crate) history_max_bytes: u64,
    pub(crate) json_file: PathBuf,
    pub(crate) json_file_max_bytes: u64,
    pub(crate) json_file_keep: u32,
    pub(crate) syslog_output: bool,
}

impl Settings {
    pub(crate) fn from_config(c: &AgentConfig) -> Settings {
        Settings {
            state_dir: c.paths.state_dir.clone(),
            history: c.rules.history,
            history_max_bytes: c.rules.history_max_bytes.0,
            json_file: c.rules.json_file.clone(),
            json_file_max_bytes: c.rules.json_file_max_bytes.0,
            json_file_keep: c.rules.json_file_keep,
            syslog_output: c.rules.syslog_output,
        }
    }
}

enum Msg {
    Alert(Arc<Map<String, Value>>),
    /// New settings (a reload): the json_file is reopened in any case.
    Settings(Box<Settings>),
    Read(Box<(Query, oneshot::Sender<Vec<Value>>)>),
    Flush(oneshot::Sender<()>),
}

/// Counters for the rules stage's status.
#[derive(Debug, Default)]
pub(crate) struct SinkStats {
    pub(crate) dropped: AtomicU64,
    pub(crate) json_file_errors: AtomicU64,
    pub(crate) json_file_lost: AtomicU64,
    pub(crate) journal_errors: AtomicU64,
    pub(crate) history_errors: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
}

/// The sinks' counters in the rules stage's status.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct SinkDetails {
    /// Alerts not handed to the sink thread: its queue was full.
    pub(crate) alerts_dropped_before_sinks_total: u64,
    pub(crate) json_file_errors_total: u64,
    /// Lines given up after the json_file kept failing.
    pub(crate) json_file_lost_total: u64,
    pub(crate) journal_errors_total: u64,
    pub(crate) history_errors_total: u64,
    pub(crate) alert_sinks_last_error: Option<String>,
}

impl SinkStats {
    pub(crate) fn details(&self) -> SinkDetails {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkDetails {
            alerts_dropped_before_sinks_total: load(&self.dropped),
            json_file_errors_total: load(&self.json_file_errors),
            json_file_lost_total: load(&self.json_file_lost),
            journal_errors_total: load(&self.journal_errors),
            history_errors_total: load(&self.history_errors),
            alert_sinks_last_error: self.last_error.lock().expect("last error").clone(),
        }
    }
}

/// The stage's handle on the sink thread.
#[derive(Clone)]
pub(crate) struct AlertSinks {
    tx: SyncSender<Msg>,
    follow: broadcast::Sender<Arc<Map<String, Value>>>,
    pub(crate) stats: Arc<SinkStats>,
}

impl AlertSinks {
    pub(crate) fn start(settings: Settings) -> std::io::Result<AlertSinks> {
        let (tx, rx) = sync_channel(QUEUE);
        let (follow, _) = broadcast::channel(FOLLOW_BUFFER);
        let stats = Arc::new(SinkStats::default());
        let worker = Worker::new(settings, stats.clone());
        std::thread::Builder::new()
            .name("alert-sinks".into())
            .spawn(move || worker.run(rx))?;
        Ok(AlertSinks { tx, follow, stats })
    }

    /// Hand over one alert; never waits.
    pub(crate) fn send(&self, alert: Map<String, Value>) {
        let alert = Arc::new(alert);
        let _ = self.follow.send(alert.clone());
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Alert(alert)) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reconfigure(&self, settings: Settings) {
        let _ = self.tx.try_send(Msg::Settings(Box::new(settings)));
    }

    /// The kept alerts that match `q`.
    pub(crate) async fn read(&self, q: Query) -> Option<Vec<Value>> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send(Msg::Read(Box::new((q, tx)))).ok()?;
        rx.await.ok()
    }

    /// New alerts as they come.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Map<String, Value>>> {
        self.follow.subscribe()
    }

    /// Wait until everything handed over so far is written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        let sender = self.tx.clone();
        // The queue may be full: wait for room off the runtime.
        let _ = tokio::task::spawn_blocking(move || sender.send(Msg::Flush(tx))).await;
        let _ = rx.await;
    }
}

struct Worker {
    settings: Settings,
    history: Option<History>,
    json: Option<JsonFile>,
    journal: Journal,
    stats: Arc<SinkStats>,
}

impl Worker {
    fn new(settings: Settings, stats: Arc<SinkStats>) -> Worker {
        let mut w = Worker {
            settings: settings.clone(),
            history: None,
            json: None,
            journal: Journal::new(),
            stats,
        };
        w.apply(settings, true);
        w
    }

    fn apply(&mut self, s: Settings, first: bool) {
        let history_changed = first
            || (s.state_dir.clone(), s.history, s.history_max_bytes)
                != (
                    self.settings.state_dir.clone(),
                    self.settings.history,
                    self.settings.history_max_bytes,
                );
        if history_changed && s.state_dir.as_os_str().is_empty() {
            self.history = None;
        } else if history_changed {
            self.history =
                match History::open(&s.state_dir, s.history as usize, s.history_max_bytes) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        self.error(format!(
                            "cannot open the alert history in {}: {e}",
                            s.state_dir.display()
                        ));
                        None
                    }
                };
        }
        let json_same = !first
            && (s.json_file.clone(), s.json_file_max_bytes, s.json_file_keep)
                == (
                    self.settings.json_file.clone(),
                    self.settings.json_file_max_bytes,
                    self.settings.json_file_keep,
                );
        match (&mut self.json, json_same) {
            // SIGHUP reopens the file (log rotation by an outside tool).
            (Some(j), true) => j.reopen(),
            _ => {
                self.json = (!s.json_file.as_os_str().is_empty())
                    .then(|| JsonFile::new(&s.json_file, s.json_file_max_bytes, s.json_file_keep));
            }
        }
        self.settings = s;
    }

    fn error(&self, message: String) {
        warn!("{message}");
        *self.stats.last_error.lock().expect("last error") = Some(message);
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let mut next_check = Instant::now() + MOVE_CHECK;
        loop {
            match rx.recv_timeout(MOVE_CHECK) {
                Ok(Msg::Alert(a)) => self.alert(&a),
                Ok(Msg::Settings(s)) => self.apply(*s, false),
                Ok(Msg::Read(read)) => {
                    let (q, reply) = *read;
                    let v = self
                        .history
                        .as_ref()
                        .map(|h| h.read(&q))
                        .unwrap_or_default();
                    let _ = reply.send(v);
                }
                Ok(Msg::Flush(reply)) => {
                    let _ = reply.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + MOVE_CHECK;
                if let Some(j) = &mut self.json {
                    j.check_moved();
                }
            }
        }
    }

    fn alert(&mut self, a: &Map<String, Value>) {
        let value = Value::Object(a.clone());
        if let Some(h) = &mut self.history
            && let Err(e) = h.append(&value)
        {
            self.stats.history_errors.fetch_add(1, Ordering::Relaxed);
            let message = format!("cannot append to the alert history: {e}");
            self.error(message);
        }
        if let Some(j) = &mut self.json {
            let mut line = serde_json::to_vec(&value).unwrap_or_default();
            line.push(b'\n');
            j.write(line);
            self.stats
                .json_file_errors
                .store(j.errors, Ordering::Relaxed);
            self.stats.json_file_lost.store(j.lost, Ordering::Relaxed);
        }
        if self.settings.syslog_output {
            self.journal.send(a);
            self.stats
                .journal_errors
                .store(self.journal.errors, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queued_message_is_two_words_so_the_preallocated_queue_stays_small() {
        // The sync channel allocates and touches QUEUE slots at start: a
        // variant carrying the settings by value made it 360 KiB resident.
        assert!(
            std::mem::size_of::<Msg>() <= 2 * std::mem::size_of::<usize>(),
            "Msg is {} bytes: box the large variant",
            std::mem::size_of::<Msg>()
        );
    }
}
