//! The outbox's own thread: the only owner of the [`Store`]. It takes
//! commands in rounds — everything queued since the last round — and
//! commits all appends and acknowledgements of a round in one transaction
//! (group commit: concurrent producers share one fsync). The round's
//! queries are answered first, from the last commit.
//!
//! It never loses a record it has accepted without counting it: when the
//! file cannot be written (disk full, I/O errors) new records wait in
//! memory, bounded, and past the bound the lowest class is given up first
//! and counted; acknowledgements keep being committed, since deleting
//! frees pages and draining is how a full outbox recovers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::store::{
    self, Batch, Committed, Cursors, RecordKey, Snapshot, Store, StoreError, StoredRecord,
};
use super::{OutboxError, Summary};
use crate::config::OutboxConfig;
use crate::report::{Class, PerClass, Report};
use crate::status::{StageState, StatusReporter, details};

details! {
    /// What the outbox shows in `status` (the agent's own metrics derive
    /// from these names: `_total` counters, `_by_class` families).
    pub struct OutboxDetails {
        pub records_waiting_by_class: PerClass<u64>,
        pub bytes_waiting_by_class: PerClass<u64>,
        pub oldest_waiting_age_secs: Option<u64>,
        pub [key] given_up_total_by_class: PerClass<u64>,
        pub [key] expired_total_by_class: PerClass<u64>,
        pub held_in_memory: u64,
        pub [key] disk_full: bool,
        pub file_bytes: u64,
        pub max_bytes: u64,
        pub budget_used_percent: f64,
        pub next_seq: u64,
        pub appended_total: u64,
        pub commits_total: u64,
        pub batch_mean: f64,
        pub batch_max: u64,
        /// Seconds, rounded to 0.1 ms (Prometheus wants base units).
        pub commit_seconds_mean: f64,
        pub commit_seconds_max: f64,
        pub compactions_total: u64,
        /// How the file was opened when that is news (moved aside, repaired).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub opened: Option<String>,
    }
}

/// Reports held in memory while the file cannot be written. The same as
/// the report channel in front of the outbox: twice its slack before the
/// lowest class is given up.
const MAX_HELD_RECORDS: usize = crate::report::REPORT_CHANNEL_CAPACITY;

/// Most reports in one transaction: bounds a commit's latency and memory.
pub const MAX_APPENDS_PER_COMMIT: usize = 8192;

/// Expiry and compaction checks: cheap, but nothing needs them sooner.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// Status and summary refreshes at most this often under load.
const SUMMARY_INTERVAL: Duration = Duration::from_millis(100);

/// Retrying a file that cannot be written: first after 1 s, doubling up
/// to 30 s (a full disk is freed by people or by draining, not at once).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// While the file cannot be written, "still failing" is logged at most
/// this often.
const STILL_FAILING_LOG: Duration = Duration::from_secs(60);

/// Records expired per housekeeping round at most, so that a first expiry
/// over a huge backlog does not hold the writer for long.
const EXPIRE_PER_ROUND: usize = 10_000;

/// What a fetch returns.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub records: Vec<StoredRecord>,
    pub cursors: Cursors,
    /// It stopped at its limit: more may follow.
    pub more: bool,
    /// `Summary::appended_total` when the records were read: without
    /// `more`, nothing newer than this exists.
    pub appended_total: u64,
}

pub type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

pub enum Command {
    /// Reports from producers (the report channel).
    Append(Vec<Report>),
    /// Reports whose sequence numbers the caller wants once durable (`None`
    /// for a report given up). Refused (not held) while the file cannot be
    /// written, so the caller learns it at once.
    AppendTracked(Vec<Report>, Reply<Vec<Option<RecordKey>>>),
    /// Records the broker acknowledged.
    Ack(Vec<RecordKey>),
    Fetch {
        after: Cursors,
        limit: usize,
        max_bytes: usize,
        reply: Reply<Fetched>,
    },
    Waiting(Vec<RecordKey>, Reply<Vec<RecordKey>>),
    /// A read view of the last commit, for a listing read on another
    /// thread (so a long listing never holds up commits).
    Snapshot(Reply<Snapshot>),
    Reconfigure(OutboxConfig),
    /// Four times a second, from the stage: housekeeping and a fresh
    /// summary.
    Tick,
    /// Commit what is left, close the file, and stop.
    Close(oneshot::Sender<()>),
}

enum Health {
    Ok,
    /// The filesystem is full; since when.
    DiskFull(Instant, Arc<StoreError>),
    /// The file cannot be opened or written for another reason.
    Failing(Instant, Arc<StoreError>),
}

#[derive(Default)]
struct Stats {
    commits: u64,
    append_commits: u64,
    appended: u64,
    batch_max: u64,
    compactions: u64,
    /// Time spent committing (the fsyncs): slow flash shows here first.
    commit_time: Duration,
    commit_time_max: Duration,
}

pub struct Worker {
    path: PathBuf,
    node: String,
    config: OutboxConfig,
    store: Option<Store>,
    status: StatusReporter,
    summary: watch::Sender<Summary>,
    held: Vec<Report>,
    held_given_up: PerClass<u64>,
    pending_acks: Vec<RecordKey>,
    health: Health,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    stats: Stats,
    last_housekeeping: Instant,
    last_summary: Instant,
    open_note: Option<String>,
    last_warned: Option<Instant>,
    /// A round changed something the last summary does not show yet.
    summary_dirty: bool,
}

impl Worker {
    pub fn new(
        path: PathBuf,
        node: String,
        config: OutboxConfig,
        status: StatusReporter,
        summary: watch::Sender<Summary>,
    ) -> Worker {
        Worker {
            path,
            node,
            config,
            store: None,
            status,
            summary,
            held: Vec::new(),
            held_given_up: PerClass::default(),
            pending_acks: Vec::new(),
            health: Health::Ok,
            retry_at: None,
            retry_delay: RETRY_FIRST,
            stats: Stats::default(),
            last_housekeeping: Instant::now(),
            last_summary: Instant::now() - SUMMARY_INTERVAL,
            open_note: None,
            last_warned: None,
            summary_dirty: true,
        }
    }

    /// The thread's body: open, then serve rounds until `Close`.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.open();
        self.publish(true);
        while let Some(first) = rx.blocking_recv() {
            let mut commands = vec![first];
            let mut appends = match &commands[0] {
                Command::Append(r) => r.len(),
                _ => 0,
            };
            // Everything already queued joins this round (group commit).
            while appends < MAX_APPENDS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(c) => {
                        if let Command::Append(r) = &c {
                            appends += r.len();
                        }
                        commands.push(c);
                    }
                    Err(_) => break,
                }
            }
            if let Some(done) = self.round(commands) {
                self.close();
                let _ = done.send(());
                return;
            }
        }
        self.close();
    }

    fn open(&mut self) {
        let status = self.status.clone();
        let on_repair: store::RepairProgress = std::sync::Arc::new(move |progress: f64| {
            status.set_state(
                StageState::Starting,
                format!(
                    "repairing the outbox after an unclean stop: {:.0} %",
                    progress * 100.0
                ),
            );
        });
        match Store::open(
            &self.path,
            &self.node,
            self.config.max_bytes.get(),
            on_repair,
        ) {
            Ok((store, opened)) => {
                if let Some((aside, why)) = &opened.moved_aside {
                    error!(file = %self.path.display(), moved_to = %aside.display(), reason = %why,
                        "the outbox file could not be used; it was moved aside and a new one started");
                    self.status.error(format!(
                        "{why}; the old file was moved to {} and a new outbox started",
                        aside.display()
                    ));
                }
                let how = match opened.repaired {
                    Some(t) => format!("repaired after an unclean stop in {} ms", t.as_millis()),
                    None if opened.created => "created".to_string(),
                    None => format!("opened in {} ms", opened.open_time.as_millis()),
                };
                info!(file = %self.path.display(), records = store.counters().records(), "outbox {how}");
                self.open_note = Some(how);
                self.warn_if_disk_smaller(&store);
                self.store = Some(store);
                if matches!(self.health, Health::Failing(..)) {
                    self.health = Health::Ok;
                }
                self.retry_delay = RETRY_FIRST;
            }
            Err(e) => {
                error!(error = %e, "cannot open the outbox; reports wait in memory and the open is retried");
                self.unhealthy(&Arc::new(e));
            }
        }
    }

    fn warn_if_disk_smaller(&self, store: &Store) {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("/"));
        if let Ok(st) = nix::sys::statvfs::statvfs(dir) {
            let free = st.blocks_available() * st.fragment_size();
            let room = free + store.file_len();
            if room < self.config.max_bytes.get() {
                warn!(
                    max_bytes = self.config.max_bytes.get(),
                    room,
                    "outbox.max_bytes is larger than the room on the state filesystem; a full disk will stop new records before the budget does"
                );
            }
        }
    }

    fn unhealthy(&mut self, e: &Arc<StoreError>) {
        let now = Instant::now();
        let message = e.to_string();
        let full = matches!(**e, StoreError::DiskFull { .. });
        let was_ok = matches!(self.health, Health::Ok);
        self.health = if full {
            Health::DiskFull(now, e.clone())
        } else {
            Health::Failing(now, e.clone())
        };
        if was_ok {
            error!(error = %message, "the outbox cannot write; new records wait in memory (up to {MAX_HELD_RECORDS}) and writing is retried");
            self.last_warned = Some(now);
        } else if self
            .last_warned
            .is_none_or(|t| t.elapsed() >= STILL_FAILING_LOG)
        {
            warn!(error = %message, retry_in_s = self.retry_delay.as_secs(), "the outbox still cannot write");
            self.last_warned = Some(now);
        }
        self.status.error(message);
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(RETRY_MAX);
    }

    /// One round; returns the close reply when asked to stop.
    fn round(&mut self, commands: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut appends = Vec::new();
        let mut tracked: Vec<(usize, Reply<Vec<Option<RecordKey>>>)> = Vec::new();
        let mut tracked_reports = Vec::new();
        let mut queries = Vec::new();
        let mut tick = false;
        let mut close = None;
        let retry_due = self.retry_at.is_some_and(|t| Instant::now() >= t);
        // Tracked appends are not held: refused at once while the file
        // cannot be written, except when a retry is due (then they are
        // part of the attempt).
        let accept_tracked = matches!(self.health, Health::Ok) || retry_due;
        for c in commands {
            match c {
                Command::Append(r) => appends.extend(r),
                Command::AppendTracked(r, reply) => {
                    if accept_tracked {
                        tracked.push((r.len(), reply));
                        tracked_reports.extend(r);
                    } else {
                        let _ = reply.send(Err(self.health_error()));
                    }
                }
                Command::Ack(keys) => self.pending_acks.extend(keys),
                Command::Reconfigure(cfg) => {
                    if let Some(s) = &mut self.store {
                        s.set_max_bytes(cfg.max_bytes.get());
                    }
                    self.config = cfg;
                }
                Command::Tick => tick = true,
                Command::Close(done) => close = Some(done),
                q => queries.push(q),
            }
        }

        if self.store.is_none() && (retry_due || close.is_some()) {
            self.open();
        }
        // Reads first: they see the last commit, and do not wait for this
        // round's fsync (the uplink's refill must not be paced by the disk;
        // what this round appends it learns from the summary right after).
        for q in queries {
            self.answer(q);
        }
        let healthy = matches!(self.health, Health::Ok);
        if healthy || retry_due {
            // Held records are older: they go first.
            let mut all = std::mem::take(&mut self.held);
            let tracked_at = all.len();
            all.extend(tracked_reports);
            all.extend(appends);
            self.commit(all, tracked_at, tracked);
        } else {
            self.hold(appends);
            // Acknowledgements only: deleting needs no new space.
            self.commit(Vec::new(), 0, Vec::new());
        }
        if tick {
            self.housekeeping();
        }
        self.publish(tick);
        close
    }

    /// Why a write is refused now.
    fn health_error(&self) -> OutboxError {
        match &self.health {
            Health::Ok => OutboxError::NotOpen,
            Health::DiskFull(_, e) | Health::Failing(_, e) => OutboxError::Store(e.clone()),
        }
    }

    /// Keep reports in memory; past the bound give up the lowest class,
    /// oldest first, and count it.
    fn hold(&mut self, reports: Vec<Report>) {
        self.held.extend(reports);
        while self.held.len() > MAX_HELD_RECORDS {
            let victim = super::budget::GIVE_UP_ORDER
                .iter()
                .find_map(|class| self.held.iter().position(|r| r.class == *class))
                .unwrap_or(0);
            let r = self.held.remove(victim);
            self.held_given_up[r.class] += 1;
        }
    }

    /// Commit `appends` (the first `tracked_at` of them are held records,
    /// then come the tracked ones) with the pending acknowledgements.
    fn commit(
        &mut self,
        appends: Vec<Report>,
        tracked_at: usize,
        tracked: Vec<(usize, Reply<Vec<Option<RecordKey>>>)>,
    ) {
        if appends.is_empty() && self.pending_acks.is_empty() {
            return;
        }
        if self.store.is_none() {
            self.hold(appends);
            for (_, reply) in tracked {
                let _ = reply.send(Err(OutboxError::NotOpen));
            }
            return;
        }
        let mut batch = Batch {
            acks: std::mem::take(&mut self.pending_acks),
            given_up_elsewhere: std::mem::take(&mut self.held_given_up),
            appends,
        };
        let started = Instant::now();
        let result = match self.store.as_mut() {
            Some(s) => s.commit(&batch),
            None => Err(StoreError::Storage {
                path: self.path.clone(),
                source: redb::Error::DatabaseClosed,
            }),
        };
        let took = started.elapsed();
        self.stats.commit_time += took;
        self.stats.commit_time_max = self.stats.commit_time_max.max(took);
        match result {
            Ok(committed) => self.committed(&batch, committed, tracked_at, tracked),
            Err(e) => {
                // The store reopens its file itself after a failed commit;
                // only a failed reopen leaves it unusable.
                if matches!(e, StoreError::Open { .. }) {
                    self.store = None;
                }
                let e = Arc::new(e);
                self.unhealthy(&e);
                for (_, reply) in tracked {
                    let _ = reply.send(Err(OutboxError::Store(e.clone())));
                }
                // Nothing of the batch was written: keep all of it.
                self.pending_acks = std::mem::take(&mut batch.acks);
                for (class, n) in batch.given_up_elsewhere.iter() {
                    self.held_given_up[class] += n;
                }
                self.hold(std::mem::take(&mut batch.appends));
            }
        }
    }

    fn reopen(&mut self) {
        self.store = None;
        self.open();
    }

    fn committed(
        &mut self,
        batch: &Batch,
        c: Committed,
        tracked_at: usize,
        tracked: Vec<(usize, Reply<Vec<Option<RecordKey>>>)>,
    ) {
        let appended = c.seqs.iter().flatten().count() as u64;
        self.stats.commits += 1;
        if !batch.appends.is_empty() {
            self.stats.append_commits += 1;
            self.stats.appended += appended;
            self.stats.batch_max = self.stats.batch_max.max(batch.appends.len() as u64);
        }
        if c.given_up.total() > 0 {
            warn!(
                critical_alert = c.given_up[Class::CriticalAlert],
                alert = c.given_up[Class::Alert],
                node_event = c.given_up[Class::NodeEvent],
                metrics = c.given_up[Class::Metrics],
                "the outbox is full: records given up"
            );
        }
        if !matches!(self.health, Health::Ok) && !batch.appends.is_empty() {
            info!("the outbox writes again");
            self.health = Health::Ok;
            self.retry_at = None;
            self.retry_delay = RETRY_FIRST;
        }
        let mut at = tracked_at;
        for (n, reply) in tracked {
            let keys = (at..at + n)
                .map(|k| {
                    c.seqs.get(k).copied().flatten().map(|seq| RecordKey {
                        class: batch.appends[k].class,
                        seq,
                    })
                })
                .collect();
            at += n;
            let _ = reply.send(Ok(keys));
        }
    }

    fn answer(&mut self, q: Command) {
        let appended_total = self.stats.appended;
        match q {
            Command::Fetch {
                after,
                limit,
                max_bytes,
                reply,
            } => {
                let r = match &self.store {
                    Some(s) => s
                        .fetch(&after, limit, max_bytes)
                        .map(|f| Fetched {
                            records: f.records,
                            cursors: f.cursors,
                            more: f.more,
                            appended_total,
                        })
                        .map_err(OutboxError::store),
                    None => Err(OutboxError::NotOpen),
                };
                let _ = reply.send(r);
            }
            Command::Waiting(keys, reply) => {
                let r = match &self.store {
                    Some(s) => s.waiting(&keys).map_err(OutboxError::store),
                    None => Err(OutboxError::NotOpen),
                };
                let _ = reply.send(r);
            }
            Command::Snapshot(reply) => {
                let r = match &self.store {
                    Some(s) => s.snapshot().map_err(OutboxError::store),
                    None => Err(OutboxError::NotOpen),
                };
                let _ = reply.send(r);
            }
            _ => {}
        }
    }

    fn housekeeping(&mut self) {
        if self.last_housekeeping.elapsed() < HOUSEKEEPING_INTERVAL {
            return;
        }
        self.last_housekeeping = Instant::now();
        let ages = PerClass::from_fn(|c| self.config.max_age.get(c));
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.expire(ages, crate::unix_time::now_millis(), EXPIRE_PER_ROUND) {
            Ok(n) if n.total() > 0 => {
                info!(
                    critical_alert = n[Class::CriticalAlert],
                    alert = n[Class::Alert],
                    node_event = n[Class::NodeEvent],
                    metrics = n[Class::Metrics],
                    "records older than outbox.max_age given up"
                );
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "outbox expiry failed; retried in a minute");
            }
        }
        if matches!(self.health, Health::Ok) && self.held.is_empty() {
            match store.compact_if_worthwhile() {
                Ok(Some((before, after))) => {
                    self.stats.compactions += 1;
                    info!(
                        before,
                        after, "outbox file compacted after a backlog drained"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "outbox compaction failed");
                    if e.needs_reopen() {
                        self.reopen();
                    }
                }
            }
        }
    }

    /// Publish the summary (for the uplink) and the status snapshot.
    /// `tick`: called from a tick (4 a second): publish what changed since,
    /// and refresh ages once a second even when nothing changed.
    fn publish(&mut self, tick: bool) {
        let since = self.last_summary.elapsed();
        let due = if tick {
            self.summary_dirty || since >= Duration::from_secs(1)
        } else {
            since >= SUMMARY_INTERVAL
        };
        if !due {
            // Still tell the uplink about new records at once.
            let appended = self.stats.appended;
            self.summary.send_if_modified(|s| {
                let changed = s.appended_total != appended;
                s.appended_total = appended;
                changed
            });
            self.summary_dirty |= !tick;
            return;
        }
        self.summary_dirty = false;
        self.last_summary = Instant::now();
        let mut sum = Summary {
            open: self.store.is_some(),
            disk_full: matches!(self.health, Health::DiskFull(..)),
            held: self.held.len() as u64,
            appended_total: self.stats.appended,
            ..Summary::default()
        };
        if let Some(s) = &self.store {
            let c = s.counters();
            sum.records = c.usage.map(|u| u.records);
            sum.bytes = c.bytes;
            sum.given_up = PerClass::from_fn(|class| c.given_up[class] + self.held_given_up[class]);
            sum.expired = c.expired;
            sum.next_seq = c.next_seq;
            sum.used_cost = c.cost();
            sum.budget = s.budget();
            sum.file_bytes = s.file_len();
            sum.oldest_created_ms = s.oldest_created().unwrap_or_default();
        } else {
            let prev = self.summary.borrow().clone();
            sum.records = prev.records;
            sum.bytes = prev.bytes;
            sum.given_up = prev.given_up;
            sum.expired = prev.expired;
        }
        self.summary.send_replace(sum.clone());
        self.refresh_status(&sum);
    }

    fn refresh_status(&self, s: &Summary) {
        let (state, line) = match &self.health {
            Health::Ok if self.store.is_some() => (StageState::Running, s.headline()),
            Health::Ok => (StageState::Starting, "opening the outbox".to_string()),
            Health::DiskFull(since, _) => (
                StageState::Degraded,
                format!(
                    "DISK FULL for {}s: {} new records wait in memory; sending continues",
                    since.elapsed().as_secs(),
                    s.held
                ),
            ),
            Health::Failing(since, m) => (
                StageState::Degraded,
                format!("cannot write for {}s: {m}", since.elapsed().as_secs()),
            ),
        };
        self.status.set_state(state, line);
        let mean = if self.stats.append_commits > 0 {
            self.stats.appended as f64 / self.stats.append_commits as f64
        } else {
            0.0
        };
        // Seconds, rounded to 0.1 ms (Prometheus wants base units).
        let commit_seconds_mean = if self.stats.commits > 0 {
            (self.stats.commit_time.as_secs_f64() * 1e4 / self.stats.commits as f64).round() / 1e4
        } else {
            0.0
        };
        self.status.details(&OutboxDetails {
            records_waiting_by_class: s.records,
            bytes_waiting_by_class: s.bytes,
            oldest_waiting_age_secs: s.oldest_age_secs(),
            given_up_total_by_class: s.given_up,
            expired_total_by_class: s.expired,
            held_in_memory: s.held,
            disk_full: s.disk_full,
            file_bytes: s.file_bytes,
            max_bytes: self.config.max_bytes.get(),
            budget_used_percent: s.budget_used_percent(),
            next_seq: s.next_seq,
            appended_total: self.stats.appended,
            commits_total: self.stats.commits,
            batch_mean: (mean * 10.0).round() / 10.0,
            batch_max: self.stats.batch_max,
            commit_seconds_mean,
            commit_seconds_max: (self.stats.commit_time_max.as_secs_f64() * 1e4).round() / 1e4,
            compactions_total: self.stats.compactions,
            opened: self.open_note.clone(),
        });
    }

    fn close(&mut self) {
        let held = std::mem::take(&mut self.held);
        self.commit(held, 0, Vec::new());
        if !self.held.is_empty() {
            let mut by_class = PerClass::<u64>::default();
            for r in &self.held {
                by_class[r.class] += 1;
            }
            error!(
                critical_alert = by_class[Class::CriticalAlert],
                alert = by_class[Class::Alert],
                node_event = by_class[Class::NodeEvent],
                metrics = by_class[Class::Metrics],
                "records held in memory were lost at shutdown: the outbox file could not be written"
            );
        }
        self.store = None;
        self.status.set_state(StageState::Stopped, "stopped");
    }
}
