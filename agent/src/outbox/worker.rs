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
    self, Batch, Committed, Cursors, RecordKey, Replaced, Snapshot, Store, StoreError, StoredRecord,
};
use super::{OutboxError, Summary};
use crate::config::OutboxConfig;
use crate::report::{Class, PerClass, Report};
use crate::status::{StageState, StatusReporter, details};

details! {
    /// What the outbox shows in `status` (the agent's own metrics derive
    /// from these names: `_total` counters, `_by_class` families).
    pub(crate) struct OutboxDetails {
        pub(crate) records_waiting_by_class: PerClass<u64>,
        pub(crate) bytes_waiting_by_class: PerClass<u64>,
        pub(crate) oldest_waiting_age_secs: Option<u64>,
        pub(crate) [key] given_up_total_by_class: PerClass<u64>,
        pub(crate) [key] expired_total_by_class: PerClass<u64>,
        pub(crate) held_in_memory: u64,
        pub(crate) [key] disk_full: bool,
        pub(crate) file_bytes: u64,
        pub(crate) max_bytes: u64,
        pub(crate) budget_used_percent: f64,
        pub(crate) next_seq: u64,
        pub(crate) appended_total: u64,
        pub(crate) commits_total: u64,
        pub(crate) batch_mean: f64,
        pub(crate) batch_max: u64,
        /// Seconds, rounded to 0.1 ms (Prometheus wants base units).
        pub(crate) commit_seconds_mean: f64,
        pub(crate) commit_seconds_max: f64,
        pub(crate) compactions_total: u64,
        /// How the file was opened when that is news (moved aside, repaired).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(crate) opened: Option<String>,
        /// The last damaged file moved aside: where, why, what it held.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(crate) last_file_replaced: Option<Replaced>,
        /// Panics the outbox thread got over (see [`Worker::run`]).
        pub(crate) thread_panics_total: u64,
    }
}

/// Reports held in memory while the file cannot be written. The same as
/// the report channel in front of the outbox: twice its slack before the
/// lowest class is given up.
const MAX_HELD_RECORDS: usize = crate::report::REPORT_CHANNEL_CAPACITY;

/// Most reports in one transaction: bounds a commit's latency and memory.
pub(crate) const MAX_APPENDS_PER_COMMIT: usize = 8192;

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

/// The outbox thread recovers from a panic (closes the file, opens it
/// again, carries on) this many times within [`PANIC_WINDOW`]; one more and
/// it stops, the stage fails and the daemon exits for systemd to restart
/// it, rather than run on without durable storage.
const MAX_PANICS: usize = 3;
const PANIC_WINDOW: Duration = Duration::from_secs(600);

/// What a fetch returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetched {
    pub(crate) records: Vec<StoredRecord>,
    pub(crate) cursors: Cursors,
    /// It stopped at its limit: more may follow.
    pub(crate) more: bool,
    /// `Summary::appended_total` when the records were read: without
    /// `more`, nothing newer than this exists.
    pub(crate) appended_total: u64,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, OutboxError>>;

pub(crate) enum Command {
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
    /// thread (so a long listing never holds up commits), with the
    /// generation of the file it reads.
    Snapshot(Reply<(Snapshot, u64)>),
    /// A read on another thread found the file of `generation` damaged.
    Damaged {
        generation: u64,
        what: String,
    },
    Reconfigure(OutboxConfig),
    /// Four times a second, from the stage: housekeeping and a fresh
    /// summary.
    Tick,
    /// Commit what is left, close the file, and stop.
    Close(oneshot::Sender<()>),
    /// Panic on the outbox thread (tests of its supervision).
    #[cfg(test)]
    Panic,
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

pub(crate) struct Worker {
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
    /// The last damaged file moved aside, for status.
    replaced: Option<Replaced>,
    /// Counts files opened: a damaged-file report names the one it read.
    generation: u64,
    /// When the thread recovered from a panic, within [`PANIC_WINDOW`].
    panics: Vec<Instant>,
    panics_total: u64,
}

impl Worker {
    pub(crate) fn new(
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
            replaced: None,
            generation: 0,
            panics: Vec::new(),
            panics_total: 0,
        }
    }

    /// The thread's body: open, then serve rounds until `Close`. A panic
    /// is caught here: the file is closed and opened again (a damaged one
    /// replaced) and the thread carries on, at most [`MAX_PANICS`] times in
    /// [`PANIC_WINDOW`]. Past that the thread ends: the stage then fails
    /// and the daemon exits, so the outbox is never silently gone. The
    /// commands taken in the round that panicked are lost as at a crash:
    /// their callers are answered `Stopped`, durable records are kept.
    /// (redb's own panics are caught closer, per call, and cost the file,
    /// not the round: see [`store::guard`].)
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.open();
        self.refresh_summary(true);
        loop {
            let served =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.serve(&mut rx)));
            match served {
                Ok(done) => {
                    self.close();
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Err(panic) => {
                    let what = store::panic_message(&*panic);
                    if !self.recover_from_panic(&what) {
                        return;
                    }
                }
            }
        }
    }

    /// After a panic on the thread: close the file and open it again.
    /// Returns false when the thread has panicked too often to go on.
    fn recover_from_panic(&mut self, what: &str) -> bool {
        let now = Instant::now();
        self.panics
            .retain(|t| now.duration_since(*t) < PANIC_WINDOW);
        self.panics.push(now);
        self.panics_total += 1;
        if self.panics.len() > MAX_PANICS {
            error!(panic = %what, "the outbox thread panicked {} times in {} s; it stops, and the agent exits so that its service manager restarts it",
                self.panics.len(), PANIC_WINDOW.as_secs());
            // Dropping a database redb panicked in may panic again.
            let store = self.store.take();
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(store)));
            self.status
                .fail(format!("the outbox thread panicked too often: {what}"));
            return false;
        }
        error!(panic = %what, "the outbox thread panicked; it closes the outbox file, opens it again and carries on");
        self.status
            .error(format!("the outbox thread panicked and recovered: {what}"));
        let store = self.store.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(store)));
        self.open();
        self.summary_dirty = true;
        true
    }

    /// Serve rounds until `Close` (its reply) or until every sender is gone.
    fn serve(&mut self, rx: &mut mpsc::Receiver<Command>) -> Option<oneshot::Sender<()>> {
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
                return Some(done);
            }
        }
        None
    }

    /// Run `f` on the open file (`None` when no file is open). A panic in
    /// redb or an error that says the file is damaged replaces the file
    /// before the error is returned.
    fn with_store<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let store = self.store.as_mut()?;
        let r = store::guard(&self.path, || f(store));
        if let Err(e @ StoreError::Damaged { .. }) = &r {
            self.replace_damaged(e);
        }
        Some(r)
    }

    /// The open file is damaged: move it aside and start a new one that
    /// carries on its sequence numbers; what it held is counted as given
    /// up and reported. Acknowledgements pending for it are dropped (their
    /// records went with it).
    fn replace_damaged(&mut self, why: &StoreError) {
        let Some(old) = self.store.take() else {
            return;
        };
        self.pending_acks.clear();
        match old.replace(why) {
            Ok((store, replaced)) => {
                self.store = Some(store);
                self.health = Health::Ok;
                self.retry_at = None;
                self.retry_delay = RETRY_FIRST;
                self.file_replaced(replaced);
            }
            Err(e) => {
                error!(error = %e, "the damaged outbox file could not be replaced; reports wait in memory and opening is retried");
                self.unhealthy(&Arc::new(e));
            }
        }
    }

    /// Log, show and report a file that was moved aside and replaced.
    fn file_replaced(&mut self, r: Replaced) {
        self.generation += 1;
        let lost = r
            .lost_by_class
            .as_ref()
            .map_or("unknown (the file could not be read)".to_string(), |l| {
                format!("{} records", l.total())
            });
        error!(file = %self.path.display(), moved_to = %r.moved_to.display(), reason = %r.reason, lost = %lost,
            "the outbox file could not be used; it was moved aside and a new one started");
        self.status.error(format!(
            "{}; the old file was moved aside to {} and a new outbox started (lost: {lost})",
            r.reason,
            r.moved_to.display()
        ));
        let mut fields = serde_json::Map::new();
        fields.insert("file".into(), self.path.display().to_string().into());
        fields.insert("moved_to".into(), r.moved_to.display().to_string().into());
        fields.insert("reason".into(), r.reason.clone().into());
        fields.insert("file_bytes".into(), r.file_bytes.into());
        fields.insert(
            "lost_by_class".into(),
            serde_json::to_value(r.lost_by_class).unwrap_or_default(),
        );
        let event = Report::node_event(
            "outbox_file_replaced",
            format!(
                "the outbox file was damaged and replaced by a new one; lost: {lost}; the old file is kept at {}",
                r.moved_to.display()
            ),
            fields,
        );
        // First in line: held records go into the next commit first.
        self.held.insert(0, event);
        self.replaced = Some(r);
        self.summary_dirty = true;
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
                if let Some(replaced) = opened.replaced {
                    self.file_replaced(replaced);
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
            // `as u64`: the fragment size is a `c_ulong`, 32 bits on 32-bit ARM.
            #[allow(clippy::unnecessary_cast)]
            let free = st.blocks_available() * st.fragment_size() as u64;
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
        self.refresh_summary(tick);
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
        mut tracked_at: usize,
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
        let mut result = self
            .with_store(|s| s.commit(&batch))
            .unwrap_or_else(|| Err(self.closed_error()));
        if matches!(result, Err(StoreError::Damaged { .. })) && self.store.is_some() {
            // The file was replaced: the batch goes into the new one, after
            // the report of the replacement; its acknowledgements went
            // with the old file.
            batch.acks.clear();
            let mut appends = std::mem::take(&mut self.held);
            let tracked_shift = appends.len();
            appends.append(&mut batch.appends);
            batch.appends = appends;
            tracked_at += tracked_shift;
            result = self
                .with_store(|s| s.commit(&batch))
                .unwrap_or_else(|| Err(self.closed_error()));
        }
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

    fn closed_error(&self) -> StoreError {
        StoreError::Storage {
            path: self.path.clone(),
            source: redb::Error::DatabaseClosed,
        }
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
                let r = match self.with_store(|s| s.fetch(&after, limit, max_bytes)) {
                    Some(r) => r
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
                let r = match self.with_store(|s| s.waiting(&keys)) {
                    Some(r) => r.map_err(OutboxError::store),
                    None => Err(OutboxError::NotOpen),
                };
                let _ = reply.send(r);
            }
            Command::Snapshot(reply) => {
                let generation = self.generation;
                let r = match self.with_store(|s| s.snapshot()) {
                    Some(r) => r.map(|s| (s, generation)).map_err(OutboxError::store),
                    None => Err(OutboxError::NotOpen),
                };
                let _ = reply.send(r);
            }
            Command::Damaged { generation, what }
                if generation == self.generation && self.store.is_some() =>
            {
                let why = StoreError::Damaged {
                    path: self.path.clone(),
                    what,
                };
                self.replace_damaged(&why);
            }
            #[cfg(test)]
            Command::Panic => panic!("a test asked the outbox thread to panic"),
            _ => {}
        }
    }

    fn housekeeping(&mut self) {
        if self.last_housekeeping.elapsed() < HOUSEKEEPING_INTERVAL {
            return;
        }
        self.last_housekeeping = Instant::now();
        let ages = PerClass::from_fn(|c| self.config.max_age.get(c));
        let Some(expired) =
            self.with_store(|s| s.expire(ages, crate::unix_time::now_millis(), EXPIRE_PER_ROUND))
        else {
            return;
        };
        match expired {
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
            let Some(compacted) = self.with_store(|s| s.compact_if_worthwhile()) else {
                return;
            };
            match compacted {
                Ok(Some((before, after))) => {
                    self.stats.compactions += 1;
                    info!(
                        before,
                        after, "outbox file compacted after a backlog drained"
                    );
                }
                Ok(None) => {}
                Err(StoreError::Damaged { .. }) => {}
                Err(e) => {
                    warn!(error = %e, "outbox compaction failed");
                    if e.needs_reopen() {
                        self.reopen();
                    }
                }
            }
        }
    }

    /// Refresh the summary (for the uplink) and the status snapshot.
    /// `tick`: called from a tick (4 a second): refresh what changed since,
    /// and refresh ages once a second even when nothing changed.
    fn refresh_summary(&mut self, tick: bool) {
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
        let oldest = self.with_store(|s| s.oldest_created());
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
            sum.oldest_created_ms = oldest.and_then(Result::ok).unwrap_or_default();
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
            last_file_replaced: self.replaced.clone(),
            thread_panics_total: self.panics_total,
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

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    /// A worker on its own thread over a file in `dir`; its status and the
    /// sender of its commands.
    fn spawn(
        dir: &std::path::Path,
    ) -> (
        StatusReporter,
        mpsc::Sender<Command>,
        std::thread::JoinHandle<()>,
    ) {
        let status = StatusReporter::detached();
        let (summary, _) = watch::channel(Summary::default());
        let worker = Worker::new(
            dir.join(store::FILE_NAME),
            "n".into(),
            OutboxConfig::default(),
            status.clone(),
            summary,
        );
        let (tx, rx) = mpsc::channel(16);
        let thread = std::thread::spawn(move || worker.run(rx));
        (status, tx, thread)
    }

    fn append_one(tx: &mpsc::Sender<Command>) -> Result<Vec<Option<RecordKey>>, OutboxError> {
        let (reply, answer) = oneshot::channel();
        let alert = Report::alert(false, Map::new());
        tx.blocking_send(Command::AppendTracked(vec![alert], reply))
            .map_err(|_| OutboxError::Stopped)?;
        answer.blocking_recv().map_err(|_| OutboxError::Stopped)?
    }

    /// Append once the thread has got over a panic: commands it had taken
    /// in the round that panicked are answered `Stopped`.
    fn append_after_panic(tx: &mpsc::Sender<Command>) -> Option<RecordKey> {
        (0..50).find_map(|_| {
            let r = append_one(tx).ok().map(|k| k[0].unwrap());
            if r.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            r
        })
    }

    #[test]
    fn a_panic_on_the_outbox_thread_is_caught_and_records_stay_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (status, tx, thread) = spawn(dir.path());
        let before = append_one(&tx).unwrap()[0].unwrap();
        tx.blocking_send(Command::Panic).unwrap();
        let after = append_after_panic(&tx).expect("the thread carries on after a panic");
        assert!(after.seq > before.seq);
        let st = status.current();
        assert_eq!(st.state, StageState::Running, "{st:?}");
        assert!(
            st.last_error
                .unwrap()
                .message
                .contains("panicked and recovered"),
            "the panic is reported"
        );
        let (done, closed) = oneshot::channel();
        tx.blocking_send(Command::Close(done)).unwrap();
        closed.blocking_recv().unwrap();
        thread.join().unwrap();
        // Both records are in the file.
        let l = store::read_offline(&dir.path().join(store::FILE_NAME), 10).unwrap();
        assert_eq!(l.classes[Class::Alert.index()].records, 2);
    }

    #[test]
    fn an_outbox_thread_that_keeps_panicking_stops_and_fails_its_stage() {
        let dir = tempfile::tempdir().unwrap();
        let (status, tx, thread) = spawn(dir.path());
        // One at a time: a round's other commands go with its panic.
        for _ in 0..MAX_PANICS {
            tx.blocking_send(Command::Panic).unwrap();
            append_after_panic(&tx).expect("recovered");
        }
        tx.blocking_send(Command::Panic).unwrap();
        thread.join().expect("the thread ends, it does not unwind");
        assert!(matches!(append_one(&tx), Err(OutboxError::Stopped)));
        let st = status.current();
        assert_eq!(st.state, StageState::Failed, "{st:?}");
        assert!(st.summary.contains("panicked too often"), "{}", st.summary);
    }
}
