//! The outbox: a durable priority queue of reports on redb, one file in the
//! state directory (`outbox.redb`). Owns that file. Never touches the
//! network, and never deletes a record the broker has not acknowledged
//! unless it gives it up — and every record given up is counted.
//!
//! # Life of a record
//! A producer hands a [`Report`] to the report channel (bounded; a full
//! channel refuses and counts). This stage forwards reports to the
//! outbox's own thread ([`worker`]), which commits everything queued since
//! its last commit in one transaction (group commit: concurrent producers
//! share one fsync). When that commit returns, the record is durable and
//! has its sequence number. The uplink fetches records in drain order,
//! publishes them (QoS 1), and hands back what the broker acknowledged;
//! the next commit deletes those.
//!
//! # File format 1
//! A redb 4.6 file with two tables.
//! - `records`: key `(class: u8, seq: u64)`, a redb tuple, so keys sort by
//!   class, then sequence — the drain order. Class codes: 0 critical
//!   alert, 1 alert, 2 node event, 3 metrics. `seq` is node-wide, strictly
//!   increasing and never reused, also across restarts; a new file starts
//!   at the current time in microseconds, so a wiped state directory does
//!   not reuse numbers consumers have seen. Value: byte 0 is the record
//!   version (1); bytes 1-8 the creation time (Unix milliseconds, u64
//!   big-endian); byte 9 the topic (0 `alerts`, 1 `metrics`, 2 `events`, 3
//!   `config/result`); the rest the payload exactly as published: the
//!   producer's JSON object with `node`, `seq` and `schema` (1) added at its
//!   top level, first.
//! - `meta`: `format` -> one byte, the file format (1); `counters` -> byte
//!   0 its version (1), then u64 big-endian: the next sequence number, and
//!   for each class in code order: records, payload bytes, estimated file
//!   bytes, records given up, records expired. Counters change in the same
//!   transaction as the records they count, so they always agree, also
//!   after a crash.
//!
//! **Unknown versions.** A record whose version byte is not 1 (written by
//! a newer agent before a downgrade, or damaged) stays in the file: it is
//! never published and never deleted by an acknowledgement; `edge-agent
//! outbox` lists it as "unreadable (record version N)", and only the
//! budget gives it up, as a record of its class. A file whose `format` is
//! newer than 1, or which redb cannot open as a database, is not touched:
//! it is moved aside (`outbox.redb.format-N-<unix time>`,
//! `outbox.redb.unusable-<unix time>`), a new file is started so that the
//! node keeps recording, and the move is logged and shown in `status`.
//!
//! **Damaged files.** A file redb finds corrupted, one shorter than its own
//! header, or one redb panics on while reading or writing it is moved aside
//! too (`outbox.redb.damaged-<unix time>`), at start or while running. The
//! new file carries on the old one's sequence numbers; what the old one
//! held is counted as given up, and an `outbox_file_replaced` node event
//! (where the file went, why, its size, what it held by class) is the first
//! record of the new file.
//!
//! # Durability and crashes
//! Every commit is durable when it returns (redb `Durability::Immediate`),
//! acknowledgement-only ones too: redb reuses the pages of deleted records
//! only after a durable commit, and with non-durable deletes a full disk
//! could not even drain (measured). Every commit uses redb's quick repair
//! (two-phase commit with the allocator state saved), so reopening after a
//! crash does not scan the file: measured 2 ms instead of 570 ms for a
//! 1 GB file, for about a third of the append rate. A crash can still
//! re-send the records acknowledged in the round it interrupted
//! (consumers de-duplicate on `seq`).
//!
//! # Budget
//! `outbox.max_bytes` caps the file: the storage backend ([`backend`])
//! refuses to grow it further. Records may fill half of it, by an estimate
//! of the pages they take ([`format::cost`]): redb doubles its file as it
//! grows and leaves B-tree leaves half full under sequential inserts, so
//! the file measured 2.0-2.1 times the payload bytes for 150 B to 8 KiB
//! records. When a batch does not fit, [`budget`] decides what is given
//! up: metrics first (older batches thinned, then the oldest dropped), then
//! node events, then alerts; critical alerts last. Records older than their
//! class's `outbox.max_age` are given up too (counted as expired). After a
//! backlog drains, the file is compacted when it is at least 16 MiB and
//! four times larger than what it holds.
//!
//! # A full disk
//! The backend allocates disk blocks when the file grows, so a full disk
//! fails at growth, before anything is written (see [`backend`]): the
//! durable records are untouched and every page inside the file stays
//! writable, so acknowledgements keep deleting records and the uplink keeps
//! draining. New records wait in memory (bounded; past the bound the
//! lowest class is given up first, counted) and writing is retried with
//! backoff. `status` shows `disk_full`.

mod backend;
mod budget;
pub(crate) mod format;
pub(crate) mod store;
pub(crate) mod synthetic;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, SectionId};
use crate::control::{ControlError, Reply};
use crate::reload::ConfigWatch;
use crate::report::{Class, PerClass, Report};
use crate::stage::{self, Stage, StageContext, StageSpec};
use crate::status::{Details, StageState, StageStatus, details};

pub(crate) use store::{Cursors, Listing, RecordKey, StoredRecord, read_offline};

/// Records a listing shows per class at most; `after` pages through more.
/// A thousand fill several screens, and reading them takes milliseconds.
pub(crate) const MAX_LISTING_PER_CLASS: usize = 1000;
pub(crate) use worker::{Command, Fetched, MAX_APPENDS_PER_COMMIT};

/// Commands queued to the outbox thread. Each carries a batch (up to
/// [`REPORTS_PER_FORWARD`] reports) or a small request; 64 of them are far
/// more than one commit round takes, so a full queue means the disk is
/// behind and the report channel in front starts counting drops.
const COMMAND_CHANNEL_CAPACITY: usize = 64;

/// Reports moved from the report channel to the outbox thread at once.
const REPORTS_PER_FORWARD: usize = 1024;

/// The outbox thread's clock: housekeeping checks and status refreshes.
/// A quarter second keeps `status` current to the eye at negligible cost.
const TICK: Duration = Duration::from_millis(250);

/// How long the outbox waits at shutdown for the uplink to hand back its
/// last acknowledgements before closing the file.
const UPLINK_FLUSH_WAIT: Duration = Duration::from_secs(4);

/// Why the outbox did not do what it was asked. Crosses from the outbox
/// thread to its callers as it is: a full disk stays
/// [`StoreError::DiskFull`], not a sentence.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    #[error("the outbox thread has stopped")]
    Stopped,
    /// Not open yet, or closed after a failure it is retrying.
    #[error("the outbox file is not open")]
    NotOpen,
    /// The file failed; shared because one failed commit answers every
    /// caller waiting on it.
    #[error(transparent)]
    Store(Arc<store::StoreError>),
    #[error("cannot start the outbox thread: {0}")]
    Thread(Arc<std::io::Error>),
    /// The blocking read of a listing panicked or was cancelled.
    #[error("the outbox listing read failed: {0}")]
    ListingRead(Arc<tokio::task::JoinError>),
}

impl OutboxError {
    pub(crate) fn store(e: store::StoreError) -> OutboxError {
        OutboxError::Store(Arc::new(e))
    }
}

/// What the outbox holds, published after every commit round (at most
/// every 100 ms under load) for the uplink and `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub open: bool,
    pub(crate) records: PerClass<u64>,
    pub(crate) bytes: PerClass<u64>,
    pub(crate) given_up: PerClass<u64>,
    pub(crate) expired: PerClass<u64>,
    pub(crate) oldest_created_ms: PerClass<Option<u64>>,
    /// Records appended since the agent started; grows with every commit
    /// that appends (the uplink's "something new" signal).
    pub appended_total: u64,
    pub(crate) next_seq: u64,
    pub(crate) file_bytes: u64,
    pub(crate) used_cost: u64,
    pub(crate) budget: u64,
    pub(crate) disk_full: bool,
    pub(crate) held: u64,
}

impl Summary {
    pub fn total_records(&self) -> u64 {
        self.records.total()
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes.total()
    }

    pub(crate) fn oldest_age_secs(&self) -> Option<u64> {
        let oldest = self.oldest_created_ms.values().flatten().min()?;
        Some(crate::unix_time::now_millis().saturating_sub(*oldest) / 1000)
    }

    pub(crate) fn budget_used_percent(&self) -> f64 {
        if self.budget == 0 {
            return 0.0;
        }
        (self.used_cost as f64 * 1000.0 / self.budget as f64).round() / 10.0
    }

    /// One line for `status`.
    pub(crate) fn headline(&self) -> String {
        let n = self.total_records();
        if n == 0 {
            return "empty: everything has been sent".into();
        }
        format!(
            "{n} records waiting ({}), oldest {} old",
            crate::config::ByteSize(self.total_bytes()),
            humantime::format_duration(Duration::from_secs(self.oldest_age_secs().unwrap_or(0)))
        )
    }
}

/// Why [`Outbox::try_ack`] did not take the keys.
#[derive(Debug)]
pub(crate) enum TryAck {
    /// The outbox thread is behind: here they are, try again later.
    Busy(Vec<RecordKey>),
    Stopped,
}

/// A handle on the outbox, for the uplink and control handlers. Cheap to
/// clone; every method is a message to the outbox thread.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Command>,
    summary: watch::Receiver<Summary>,
    /// Listings are read one at a time, off the outbox thread: clients
    /// looping over `outbox` share one core and never stall commits.
    listings: Arc<Semaphore>,
}

impl Outbox {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, OutboxError>>) -> Command,
    ) -> Result<T, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| OutboxError::Stopped)?;
        answer.await.map_err(|_| OutboxError::Stopped)?
    }

    /// Append and wait until durable; the key of each report, `None` for
    /// one given up. Refused while the file cannot be written.
    pub async fn append_tracked(
        &self,
        reports: Vec<Report>,
    ) -> Result<Vec<Option<RecordKey>>, OutboxError> {
        self.ask(|r| Command::AppendTracked(reports, r)).await
    }

    /// Records the broker acknowledged (deleted with the next commit).
    pub(crate) async fn ack(&self, keys: Vec<RecordKey>) -> Result<(), OutboxError> {
        self.tx
            .send(Command::Ack(keys))
            .await
            .map_err(|_| OutboxError::Stopped)
    }

    /// [`Outbox::ack`] without waiting: while the outbox thread is busy
    /// committing, the keys come back to be sent later with more.
    pub(crate) fn try_ack(&self, keys: Vec<RecordKey>) -> Result<(), TryAck> {
        match self.tx.try_send(Command::Ack(keys)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Command::Ack(keys))) => Err(TryAck::Busy(keys)),
            Err(_) => Err(TryAck::Stopped),
        }
    }

    /// Up to `limit` records (about `max_bytes` of payload, at least one)
    /// after `after`, in drain order.
    pub(crate) async fn fetch(
        &self,
        after: Cursors,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Fetched, OutboxError> {
        self.ask(|reply| Command::Fetch {
            after,
            limit,
            max_bytes,
            reply,
        })
        .await
    }

    /// Which of `keys` are still waiting.
    pub(crate) async fn waiting(
        &self,
        keys: Vec<RecordKey>,
    ) -> Result<Vec<RecordKey>, OutboxError> {
        self.ask(|r| Command::Waiting(keys, r)).await
    }

    /// What waits, with up to `per_class` records of each class after
    /// `after` (capped at [`MAX_LISTING_PER_CLASS`]). Read from a snapshot
    /// on a blocking thread; the outbox thread only starts the read.
    pub(crate) async fn listing(
        &self,
        per_class: usize,
        after: Cursors,
    ) -> Result<Listing, OutboxError> {
        let per_class = per_class.min(MAX_LISTING_PER_CLASS);
        let _turn = self
            .listings
            .acquire()
            .await
            .map_err(|_| OutboxError::Stopped)?;
        let (snapshot, generation) = self.ask(Command::Snapshot).await?;
        let listed = tokio::task::spawn_blocking(move || snapshot.listing(per_class, &after))
            .await
            .map_err(|e| OutboxError::ListingRead(Arc::new(e)))?;
        if let Err(store::StoreError::Damaged { what, .. }) = &listed {
            // The outbox thread replaces the file it reads.
            let _ = self
                .tx
                .send(Command::Damaged {
                    generation,
                    what: what.clone(),
                })
                .await;
        }
        listed.map_err(OutboxError::store)
    }

    /// The latest summary; `changed()` on it wakes on every update.
    pub fn summary(&self) -> watch::Receiver<Summary> {
        self.summary.clone()
    }
}

/// The outbox file of a config.
pub(crate) fn file_path(config: &AgentConfig) -> PathBuf {
    config.paths.state_dir.join(store::FILE_NAME)
}

/// The outbox stage.
pub(crate) const STAGE: StageSpec = StageSpec {
    name: "outbox",
    sections: &[SectionId::Outbox],
    key_details: worker::OutboxDetails::KEY,
};

/// Start the outbox: its thread, its stage (which feeds the thread from the
/// report channel), and its control methods (`outbox.list`,
/// `outbox.test_alert`, and `outbox.test_report` for root only). At shutdown the stage waits for `uplink_done` (the
/// uplink's last acknowledgements) before closing the file.
pub(crate) fn start(
    ctx: &StageContext,
    reports: mpsc::Receiver<Report>,
    shutdown: CancellationToken,
    uplink_done: oneshot::Receiver<()>,
) -> (Outbox, Stage) {
    let (tx, rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (summary_tx, summary_rx) = watch::channel(Summary::default());
    let outbox = Outbox {
        tx: tx.clone(),
        summary: summary_rx,
        listings: Arc::new(Semaphore::new(1)),
    };
    let stage = stage::start(ctx, &STAGE, |own| {
        let config = own.config.current();
        let worker = worker::Worker::new(
            file_path(&config),
            config.node.id.clone(),
            config.outbox.clone(),
            own.status,
            summary_tx,
        );
        let thread = std::thread::Builder::new()
            .name("edge-agent-outbox".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| OutboxError::Thread(Arc::new(e)));
        register_methods(ctx, &outbox);
        run(own.config, reports, tx, thread, shutdown, uplink_done)
    });
    (outbox, stage)
}

async fn run(
    mut config: ConfigWatch,
    mut reports: mpsc::Receiver<Report>,
    tx: mpsc::Sender<Command>,
    thread: Result<std::thread::JoinHandle<()>, OutboxError>,
    shutdown: CancellationToken,
    uplink_done: oneshot::Receiver<()>,
) -> Result<(), OutboxError> {
    let thread = thread?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::with_capacity(REPORTS_PER_FORWARD);
    let send = |c: Command| {
        let tx = tx.clone();
        async move { tx.send(c).await.map_err(|_| OutboxError::Stopped) }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            n = reports.recv_many(&mut buf, REPORTS_PER_FORWARD) => {
                if n == 0 {
                    break;
                }
                send(Command::Append(std::mem::take(&mut buf))).await?;
            }
            _ = tick.tick() => send(Command::Tick).await?,
            update = config.changed() => {
                send(Command::Reconfigure(update.config.outbox.clone())).await?;
                update.ticket.ok();
            }
        }
    }
    // Producers have stopped: whatever is still in the channel goes in.
    while let Ok(r) = reports.try_recv() {
        buf.push(r);
        if buf.len() >= REPORTS_PER_FORWARD {
            send(Command::Append(std::mem::take(&mut buf))).await?;
        }
    }
    if !buf.is_empty() {
        send(Command::Append(buf)).await?;
    }
    let _ = tokio::time::timeout(UPLINK_FLUSH_WAIT, uplink_done).await;
    let (done, closed) = oneshot::channel();
    send(Command::Close(done)).await?;
    let _ = closed.await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    Ok(())
}

/// Most records `outbox.test_report` makes in one call.
const MAX_TEST_RECORDS: u64 = 100_000;

/// Largest filler `outbox.test_report` puts in one record: the outbox gives up any
/// record larger than `store::MAX_RECORD_BYTES` anyway.
const MAX_TEST_PAD_BYTES: u64 = store::MAX_RECORD_BYTES as u64;

/// Most filler bytes one `outbox.test_report` call makes in all: enough for the
/// benchmarks and the budget tests, a few seconds of disk at most.
const MAX_TEST_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// `outbox.test_report`'s `count` and `pad_bytes`, within bounds.
pub(crate) fn test_report_size(params: &Value) -> Result<(u64, usize), ControlError> {
    let count = params.get("count").and_then(Value::as_u64).unwrap_or(1);
    let pad = params.get("pad_bytes").and_then(Value::as_u64).unwrap_or(0);
    if count > MAX_TEST_RECORDS {
        return Err(ControlError::bad_params(format!(
            "count must be at most {MAX_TEST_RECORDS}"
        )));
    }
    if pad > MAX_TEST_PAD_BYTES {
        return Err(ControlError::bad_params(format!(
            "pad_bytes must be at most {MAX_TEST_PAD_BYTES} (the largest record the outbox keeps)"
        )));
    }
    if count.saturating_mul(pad) > MAX_TEST_TOTAL_BYTES {
        return Err(ControlError::bad_params(format!(
            "count x pad_bytes must be at most {MAX_TEST_TOTAL_BYTES} bytes per call"
        )));
    }
    Ok((count, pad as usize))
}

fn register_methods(ctx: &StageContext, outbox: &Outbox) {
    let ob = outbox.clone();
    ctx.router.register("outbox.list", move |params| {
        let ob = ob.clone();
        async move {
            let limit = params
                .get("limit")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .min(MAX_LISTING_PER_CLASS as u64) as usize;
            let after = listing_after(params.get("after"))?;
            let listing = ob
                .listing(limit, after)
                .await
                .map_err(|e| ControlError::unavailable(e.to_string()))?;
            let summary = ob.summary().borrow().clone();
            Ok(Reply::Value(listing_json(&listing, Some(&summary))))
        }
    });

    let ob = outbox.clone();
    let config = ctx.config.clone();
    let board = ctx.board.clone();
    ctx.router.register("outbox.test_alert", move |params| {
        let ob = ob.clone();
        let config = config.current();
        let board = board.clone();
        async move { synthetic::test_alert(&ob, &config, &board, &params).await }
    });

    let ob = outbox.clone();
    // Synthetic records of any class and size, for tests and benchmarks:
    // root only, since critical ones can push real alerts out of a small
    // outbox.
    ctx.router
        .register_privileged("outbox.test_report", move |params| {
            let ob = ob.clone();
            async move {
                let class = match params.get("class").and_then(Value::as_str) {
                    None => Class::Metrics,
                    Some(s) => Class::ALL
                        .into_iter()
                        .find(|c| c.as_str() == s)
                        .ok_or_else(|| {
                            ControlError::bad_params(format!("unknown class \"{s}\""))
                        })?,
                };
                let (count, pad) = test_report_size(&params)?;
                let keys = synthetic::test_reports(&ob, class, count, pad)
                    .await
                    .map_err(|e| ControlError::new("outbox_unavailable", e.to_string()))?;
                Ok(Reply::Value(json!({
                    "class": class.as_str(),
                    "seqs": keys.iter().map(|k| k.map(|k| k.seq)).collect::<Vec<_>>(),
                })))
            }
        });
}

/// The `outbox` method's `after`: `{class: seq}`, list each class after
/// that sequence number (absent or null: from the oldest).
pub(crate) fn listing_after(after: Option<&Value>) -> Result<Cursors, ControlError> {
    let mut cursors = Cursors::default();
    let Some(after) = after.filter(|v| !v.is_null()) else {
        return Ok(cursors);
    };
    let Some(map) = after.as_object() else {
        return Err(ControlError::bad_params(
            "after must be an object such as {\"alert\": 1234}",
        ));
    };
    for (name, seq) in map {
        let class = Class::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| ControlError::bad_params(format!("after: unknown class \"{name}\"")))?;
        let seq = seq.as_u64().ok_or_else(|| {
            ControlError::bad_params(format!("after.{name} must be a sequence number"))
        })?;
        cursors[class] = Some(seq);
    }
    Ok(cursors)
}

/// The JSON form of a listing (`edge-agent outbox --json`, schema 1).
pub(crate) fn listing_json(l: &Listing, summary: Option<&Summary>) -> Value {
    let classes: Vec<Value> = l
        .classes
        .iter()
        .map(|c| {
            json!({
                "class": c.class,
                "records": c.records,
                "bytes": c.bytes,
                "oldest_created_ms": c.oldest_created_ms,
                "oldest": c.oldest,
                "more": c.more,
            })
        })
        .collect();
    let mut v = json!({
        "schema": 1,
        "next_seq": l.next_seq,
        "given_up": l.given_up,
        "expired": l.expired,
        "classes": classes,
    });
    if let Some(s) = summary {
        v["file_bytes"] = s.file_bytes.into();
        v["disk_full"] = s.disk_full.into();
        v["held_in_memory"] = s.held.into();
    }
    v
}

details! {
    /// What `status` shows of the outbox while the daemon is down: what
    /// the file says (the running outbox's [`worker::OutboxDetails`] less
    /// what only the worker knows).
    pub(crate) struct OfflineDetails {
        pub(crate) records_waiting_by_class: PerClass<u64>,
        pub(crate) bytes_waiting_by_class: PerClass<u64>,
        pub(crate) oldest_waiting_age_secs: Option<u64>,
        pub(crate) [key] given_up_total_by_class: PerClass<u64>,
        pub(crate) [key] expired_total_by_class: PerClass<u64>,
        pub(crate) file_bytes: u64,
        pub(crate) next_seq: u64,
    }
}

details! {
    /// What `status` shows of an outbox file it cannot read.
    pub(crate) struct UnreadableDetails {
        pub(crate) file_bytes: u64,
    }
}

/// `status` without the daemon: what waits in the outbox file.
pub(crate) fn offline_status(config: &AgentConfig) -> Option<StageStatus> {
    let path = file_path(config);
    if !path.exists() {
        return None;
    }
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    Some(match read_offline(&path, 1) {
        Ok(l) => {
            let details = OfflineDetails {
                records_waiting_by_class: PerClass::from_fn(|c| l.classes[c.index()].records),
                bytes_waiting_by_class: PerClass::from_fn(|c| l.classes[c.index()].bytes),
                oldest_waiting_age_secs: l
                    .classes
                    .iter()
                    .filter_map(|c| c.oldest_created_ms)
                    .min()
                    .map(|ms| crate::unix_time::now_millis().saturating_sub(ms) / 1000),
                given_up_total_by_class: l.given_up,
                expired_total_by_class: l.expired,
                file_bytes,
                next_seq: l.next_seq,
            };
            StageStatus::offline(
                StageState::Stopped,
                format!(
                    "{} records waiting in {}",
                    details.records_waiting_by_class.total(),
                    path.display()
                ),
                &details,
            )
        }
        Err(e) => StageStatus::offline(
            StageState::Stopped,
            format!("cannot read {} without the daemon: {e}", path.display()),
            &UnreadableDetails { file_bytes },
        ),
    })
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}
