//! The outbox file: open it (repairing after a crash), commit batches of
//! appends, acknowledgements and give-ups in one transaction, and read
//! records in drain order. Synchronous; owned by exactly one thread (the
//! worker), so there is one writer and no lock around it.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use serde_json::Value;

use super::backend::{CappedFile, Growth, Refusal};
use super::budget::{self, ByClass, Step, Usage};
use super::format::{self, Decoded};
use crate::report::{Class, PerClass, Report, Topic};
use crate::unix_time;

/// The outbox file's name in the state directory.
pub(crate) const FILE_NAME: &str = "outbox.redb";

/// Records: `(class, seq)` -> version byte, created, topic, payload.
const RECORDS: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("records");
/// Bookkeeping: `format` and `counters`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// redb's page cache. The default (1 GiB) would make the agent's RSS grow
/// with the backlog; 4 MiB keeps the whole agent within its 24 MiB budget
/// and still holds the B-tree's branch pages, so appends and drains touch
/// the disk only for leaves (see the benchmark in the closing note).
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Largest record accepted. Far above any real report (a metrics batch of
/// a busy node is ~100 KB of JSON) and small enough to publish as one MQTT
/// packet on a slow link.
pub(crate) const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Share of `max_bytes` that records may fill (by `format::cost`), in
/// percent. redb doubles its file as it grows (until 1 GiB), so under a
/// cap of 2^k the file stops at half of it, and redb's own bookkeeping
/// (allocator state, pages freed by the last commit) needs a little of
/// that. If the file still cannot grow, the budget is lowered at run time
/// (`lower_budget_after_cap`).
const RECORD_SHARE_PERCENT: u64 = 40;

fn record_budget(max_bytes: u64) -> u64 {
    max_bytes / 100 * RECORD_SHARE_PERCENT
}

/// Called with the repair's progress (0.0-1.0) when redb repairs the file.
pub(crate) type RepairProgress = Arc<dyn Fn(f64) + Send + Sync>;

/// Compact when the file is at least this large and at least this many
/// times larger than what it holds: smaller wins are not worth rewriting
/// the file on flash.
const COMPACT_MIN_FILE: u64 = 16 * 1024 * 1024;
const COMPACT_RATIO: u64 = 4;

/// A record's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub(crate) class: Class,
    pub(crate) seq: u64,
}

impl RecordKey {
    fn raw(self) -> (u8, u64) {
        (self.class.index() as u8, self.seq)
    }
}

/// What happens next after an error, by the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the outbox file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the outbox file {} has format {found}, newer than this agent understands ({}); it was written by a newer edge-agent",
        path.display(), format::FILE_FORMAT
    )]
    NewerFormat { path: PathBuf, found: u8 },
    #[error("the filesystem holding {} is full: {source}", path.display())]
    DiskFull { path: PathBuf, source: redb::Error },
    #[error("the outbox file {} reached outbox.max_bytes ({} bytes)", path.display(), cap)]
    Cap { path: PathBuf, cap: u64 },
    #[error("outbox file {}: {source}", path.display())]
    Storage { path: PathBuf, source: redb::Error },
    #[error("cannot move the unusable outbox file {} aside: {source}", path.display())]
    MoveAside { path: PathBuf, source: io::Error },
    /// redb found the file damaged while reading or writing it: it said so
    /// (corrupted pages, a file shorter than its own header says), or it
    /// panicked on what it read.
    #[error("the outbox file {} is damaged: {what}", path.display())]
    Damaged { path: PathBuf, what: String },
}

/// Run `f`, which reads or writes the file at `path` through redb, turning
/// a panic inside it into [`StoreError::Damaged`]. redb asserts on what it
/// reads (in debug builds on any corruption, in release builds on some):
/// garbage in the file must cost the file, not the outbox thread.
pub(crate) fn guard<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            what: format!("redb panicked reading it: {}", panic_message(&*panic)),
        }),
    }
}

/// The message a panic carried.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Whether redb's error says the file itself is damaged.
fn is_damage(source: &redb::Error) -> bool {
    match source {
        redb::Error::Corrupted(_) => true,
        redb::Error::Io(e) => e.kind() == io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

impl StoreError {
    /// The handle is unusable after this error (redb refuses every later
    /// operation after an I/O error): close and reopen before retrying.
    pub(crate) fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. }
                | StoreError::Cap { .. }
                | StoreError::Storage { .. }
                | StoreError::Open { .. }
        )
    }
}

/// Counters kept in the file with every commit, so that they survive
/// restarts and always agree with the records (meta key `counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// The next sequence number to hand out.
    pub(crate) next_seq: u64,
    /// Records and estimated file bytes waiting, by class.
    pub(crate) usage: ByClass,
    /// Payload bytes waiting, by class (what `status` shows as bytes).
    pub(crate) bytes: PerClass<u64>,
    /// Records given up, by class, for any reason (budget, age, size).
    pub(crate) given_up: PerClass<u64>,
    /// Of those, records given up for their age.
    pub(crate) expired: PerClass<u64>,
}

/// Version of the `counters` value layout.
const COUNTERS_VERSION: u8 = 1;

impl Counters {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + 8 + 4 * 5 * 8);
        v.push(COUNTERS_VERSION);
        v.extend_from_slice(&self.next_seq.to_be_bytes());
        for class in Class::ALL {
            for n in [
                self.usage[class].records,
                self.bytes[class],
                self.usage[class].cost,
                self.given_up[class],
                self.expired[class],
            ] {
                v.extend_from_slice(&n.to_be_bytes());
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Option<Counters> {
        if b.first() != Some(&COUNTERS_VERSION) || b.len() < 1 + 8 + 4 * 5 * 8 {
            return None;
        }
        let n = |i: usize| u64::from_be_bytes(b[1 + i * 8..9 + i * 8].try_into().expect("8 bytes"));
        let mut c = Counters {
            next_seq: n(0),
            ..Counters::default()
        };
        for class in Class::ALL {
            let base = 1 + class.index() * 5;
            c.usage[class] = Usage {
                records: n(base),
                cost: n(base + 2),
            };
            c.bytes[class] = n(base + 1);
            c.given_up[class] = n(base + 3);
            c.expired[class] = n(base + 4);
        }
        Some(c)
    }

    pub(crate) fn records(&self) -> u64 {
        self.usage.values().map(|u| u.records).sum()
    }

    pub(crate) fn cost(&self) -> u64 {
        budget::total(&self.usage)
    }

    fn add(&mut self, class: Class, value_len: usize) {
        let usage = &mut self.usage[class];
        usage.records += 1;
        usage.cost += format::cost(value_len);
        self.bytes[class] += value_len as u64;
    }

    fn remove(&mut self, class: Class, value_len: usize) {
        let usage = &mut self.usage[class];
        usage.records = usage.records.saturating_sub(1);
        usage.cost = usage.cost.saturating_sub(format::cost(value_len));
        self.bytes[class] = self.bytes[class].saturating_sub(value_len as u64);
    }
}

/// A record on its way in: class, topic, created (ms), body, estimated
/// value length.
type Incoming = (Class, Topic, u64, Vec<u8>, usize);

/// One stored record, as the uplink publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    pub(crate) key: RecordKey,
    pub(crate) topic: Topic,
    pub(crate) created_ms: u64,
    pub(crate) payload: Vec<u8>,
}

/// Where the uplink is in each class: the highest sequence number it has
/// been handed. `None`: from the start.
pub(crate) type Cursors = PerClass<Option<u64>>;

/// What a fetch read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fetch {
    pub(crate) records: Vec<StoredRecord>,
    /// The cursors after what was read (past unreadable records too).
    pub(crate) cursors: Cursors,
    pub(crate) unreadable: u64,
    /// It stopped at its limit: more may follow.
    pub(crate) more: bool,
}

/// A batch of changes committed as one transaction.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) appends: Vec<Report>,
    /// Records the broker acknowledged.
    pub(crate) acks: Vec<RecordKey>,
    /// Records given up before they reached the file (held in memory while
    /// the disk was full), to add to the persisted counts.
    pub(crate) given_up_elsewhere: PerClass<u64>,
}

/// What a commit did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The sequence number of each append, in order; `None` if it was
    /// given up (too large, or no room).
    pub(crate) seqs: Vec<Option<u64>>,
    pub(crate) given_up: PerClass<u64>,
    /// Acknowledged records that were still there (others were given up,
    /// or acknowledged twice after a reconnect).
    pub(crate) acked: u64,
}

/// How the file was opened.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    pub(crate) created: bool,
    /// redb repaired the file after an unclean stop, taking this long.
    pub(crate) repaired: Option<Duration>,
    pub(crate) open_time: Duration,
    /// An unusable file was moved aside and a new one started.
    pub(crate) replaced: Option<Replaced>,
}

/// A file that was moved aside and replaced by a new one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Replaced {
    pub(crate) moved_to: PathBuf,
    pub(crate) reason: String,
    /// The old file's size.
    pub(crate) file_bytes: u64,
    /// Records it held, by class, when they were known (the outbox had the
    /// file open); `None` when it could not be opened at all.
    pub(crate) lost_by_class: Option<PerClass<u64>>,
    /// When, in Unix seconds.
    pub(crate) at: u64,
}

pub(crate) struct Store {
    db: Database,
    path: PathBuf,
    node: String,
    growth: Arc<Growth>,
    counters: Counters,
    /// `max_bytes / 2`: what records may fill (by cost).
    record_budget: u64,
    /// Lowered when the file hits its cap before the estimate says so.
    effective_budget: u64,
    max_bytes: u64,
    on_repair: RepairProgress,
}

fn open_db(
    path: &Path,
    growth: &Arc<Growth>,
    repaired: &Arc<AtomicBool>,
    on_repair: RepairProgress,
) -> Result<Database, StoreError> {
    let open_err = |source: redb::DatabaseError| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| open_err(e.into()))?;
    let backend = CappedFile::new(file, growth.clone()).map_err(open_err)?;
    let flag = repaired.clone();
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(move |session| {
            flag.store(true, Ordering::Relaxed);
            on_repair(session.progress());
        })
        .create_with_backend(backend)
        .map_err(open_err)
}

impl Store {
    /// Open (or create) the outbox file at `path`. A file that cannot be
    /// used at all (corrupted, or written by a newer agent) is moved aside
    /// with a timestamp suffix and a new file started, so that the node
    /// keeps recording; `Opened::moved_aside` says so. `on_repair` is told
    /// the repair's progress (0.0-1.0) when redb must repair the file.
    pub(crate) fn open(
        path: &Path,
        node: &str,
        max_bytes: u64,
        on_repair: RepairProgress,
    ) -> Result<(Store, Opened), StoreError> {
        let first = guard(path, || {
            Self::open_once(path, node, max_bytes, on_repair.clone())
        });
        match first {
            Ok(v) => Ok(v),
            Err(e) if unusable(&e) => {
                let replaced = move_aside(path, &e, None)?;
                let (store, mut opened) =
                    guard(path, || Self::open_once(path, node, max_bytes, on_repair))?;
                opened.replaced = Some(replaced);
                Ok((store, opened))
            }
            Err(e) => Err(e),
        }
    }

    /// Move this (damaged) file aside and open a new one in its place,
    /// which carries on the old one's sequence numbers and counts: what it
    /// held is counted as given up. What the move cost is in the result.
    pub(crate) fn replace(self, why: &StoreError) -> Result<(Store, Replaced), StoreError> {
        let Store {
            db,
            path,
            node,
            max_bytes,
            on_repair,
            counters: old,
            ..
        } = self;
        // Dropping a database redb panicked in may panic again.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
        let lost = old.usage.map(|u| u.records);
        let replaced = move_aside(&path, why, Some(lost))?;
        let (mut store, _) = Store::open(&path, &node, max_bytes, on_repair)?;
        store.carry_on(&old, &lost)?;
        Ok((store, replaced))
    }

    /// Continue the counters of a file this one replaces: sequence numbers
    /// never go back, and its given-up counts grow by what was lost.
    fn carry_on(&mut self, old: &Counters, lost: &PerClass<u64>) -> Result<(), StoreError> {
        let path = self.path.clone();
        guard(&path, || {
            self.counters.next_seq = self.counters.next_seq.max(old.next_seq);
            for class in Class::ALL {
                self.counters.given_up[class] += old.given_up[class] + lost[class];
                self.counters.expired[class] += old.expired[class];
            }
            let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
            self.write_meta(&txn)?;
            self.finish(txn)
        })
    }

    fn open_once(
        path: &Path,
        node: &str,
        max_bytes: u64,
        on_repair: RepairProgress,
    ) -> Result<(Store, Opened), StoreError> {
        let started = Instant::now();
        let existing = std::fs::metadata(path).map_or(0, |m| m.len());
        // The cap never refuses the file as it already is (after a lowered
        // max_bytes): only further growth.
        let growth = Growth::new(max_bytes.max(existing));
        let repaired = Arc::new(AtomicBool::new(false));
        let db = open_db(path, &growth, &repaired, on_repair.clone())?;
        let open_time = started.elapsed();
        let budget = record_budget(max_bytes);
        let mut store = Store {
            db,
            path: path.to_path_buf(),
            node: node.to_string(),
            growth,
            counters: Counters::default(),
            record_budget: budget,
            effective_budget: budget,
            max_bytes,
            on_repair,
        };
        store.load_meta()?;
        Ok((
            store,
            Opened {
                created: existing == 0,
                repaired: repaired.load(Ordering::Relaxed).then_some(open_time),
                open_time,
                replaced: None,
            },
        ))
    }

    /// The counters as the file has them, reopening it if redb refuses to
    /// read after an I/O error.
    fn reload_counters(&mut self) -> Result<(), StoreError> {
        let read = |db: &Database| -> Result<Option<Counters>, redb::Error> {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            Ok(meta
                .get("counters")?
                .and_then(|v| Counters::decode(v.value())))
        };
        let counters = match read(&self.db) {
            Ok(c) => c,
            Err(_) => {
                self.reopen()?;
                read(&self.db).map_err(|e| self.err(e))?
            }
        };
        if let Some(c) = counters {
            self.counters = c;
        }
        Ok(())
    }

    /// Close and open the file again: redb refuses every operation after an
    /// I/O error until then. The counters in memory are the file's (a
    /// failed commit restored them).
    fn reopen(&mut self) -> Result<(), StoreError> {
        // Release the file (and its lock) before opening it again.
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open {
                path: self.path.clone(),
                source,
            })?;
        drop(std::mem::replace(&mut self.db, placeholder));
        let repaired = Arc::new(AtomicBool::new(false));
        self.growth.set_cap(self.max_bytes.max(self.file_len()));
        self.db = open_db(&self.path, &self.growth, &repaired, self.on_repair.clone())?;
        Ok(())
    }

    /// Read (or initialise) `format` and `counters`.
    fn load_meta(&mut self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        let (format, counters) = {
            let meta = txn.open_table(META).map_err(|e| self.err(e.into()))?;
            let format = meta
                .get("format")
                .map_err(|e| self.err(e.into()))?
                .map(|v| v.value().first().copied().unwrap_or(0));
            let counters = meta
                .get("counters")
                .map_err(|e| self.err(e.into()))?
                .and_then(|v| Counters::decode(v.value()));
            (format, counters)
        };
        match format {
            Some(f) if f > format::FILE_FORMAT => {
                let _ = txn.abort();
                return Err(StoreError::NewerFormat {
                    path: self.path.clone(),
                    found: f,
                });
            }
            _ => {}
        }
        let needs_meta = format.is_none() || counters.is_none();
        self.counters = match counters {
            Some(c) => c,
            None => self.recount(&txn)?,
        };
        if needs_meta {
            self.write_meta(&txn)?;
            self.finish(txn)?;
        } else {
            let _ = txn.abort();
        }
        Ok(())
    }

    /// Counters from the records themselves (a new file, or a file whose
    /// counters are missing). A new file starts its sequence at the current
    /// time in microseconds, so a node whose state directory was wiped does
    /// not reuse numbers consumers have already seen (unless its clock is
    /// behind the old one).
    fn recount(&self, txn: &WriteTransaction) -> Result<Counters, StoreError> {
        let table = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
        let mut c = Counters {
            next_seq: unix_time::micros(SystemTime::now()).max(1),
            ..Counters::default()
        };
        for entry in table.iter().map_err(|e| self.err(e.into()))? {
            let (k, v) = entry.map_err(|e| self.err(e.into()))?;
            let (class, seq) = k.value();
            if let Some(class) = format::class_of(class) {
                c.add(class, v.value().len());
            }
            c.next_seq = c.next_seq.max(seq + 1);
        }
        Ok(c)
    }

    fn write_meta(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut meta = txn.open_table(META).map_err(|e| self.err(e.into()))?;
        meta.insert("format", [format::FILE_FORMAT].as_slice())
            .map_err(|e| self.err(e.into()))?;
        meta.insert("counters", self.counters.encode().as_slice())
            .map_err(|e| self.err(e.into()))?;
        Ok(())
    }

    /// Commit durably, with quick repair. Every commit is durable: redb
    /// reuses the pages of deleted records only after a durable commit
    /// (measured on a full 3 MiB tmpfs: with non-durable deletes the file
    /// had to grow to delete, so a full disk could not even drain).
    fn finish(&self, mut txn: WriteTransaction) -> Result<(), StoreError> {
        txn.set_quick_repair(true);
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err(redb::Error::from(e)))?;
        txn.commit().map_err(|e| self.err(e.into()))
    }

    /// Classify a redb error by what the caller must do.
    fn err(&self, source: redb::Error) -> StoreError {
        match self.growth.take_refusal() {
            Refusal::Cap => StoreError::Cap {
                path: self.path.clone(),
                cap: self.max_bytes,
            },
            Refusal::DiskFull => StoreError::DiskFull {
                path: self.path.clone(),
                source,
            },
            Refusal::None => match &source {
                redb::Error::Io(e) if is_disk_full(e) => StoreError::DiskFull {
                    path: self.path.clone(),
                    source,
                },
                s if is_damage(s) => StoreError::Damaged {
                    path: self.path.clone(),
                    what: source.to_string(),
                },
                _ => StoreError::Storage {
                    path: self.path.clone(),
                    source,
                },
            },
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn file_len(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// What records may fill, by cost (40 % of `max_bytes`, or less after
    /// the file hit its cap early).
    pub(crate) fn budget(&self) -> u64 {
        self.effective_budget
    }

    /// Apply a new `max_bytes` (config reload).
    pub(crate) fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
        self.record_budget = record_budget(max_bytes);
        self.effective_budget = self.record_budget;
        self.growth.set_cap(max_bytes.max(self.file_len()));
    }

    /// The file could not grow to hold a batch although the estimate said
    /// it fits (fragmentation): hold records to 90 % of what is there now,
    /// so the next commit gives up enough to reuse freed pages instead.
    fn lower_budget_after_cap(&mut self) {
        self.effective_budget = (self.counters.cost() / 10 * 9).min(self.effective_budget);
    }

    /// Append, acknowledge and give up in one transaction, durable when
    /// this returns.
    ///
    /// When the file would pass `max_bytes` although the estimate said the
    /// batch fits (fragmentation), the budget is lowered to 90 % of what
    /// the file holds and the batch tried again, giving up more.
    pub(crate) fn commit(&mut self, batch: &Batch) -> Result<Committed, StoreError> {
        /// Each retry lowers the budget by a tenth; three make room in any
        /// file that is not all critical alerts.
        const CAP_RETRIES: usize = 3;
        let mut attempt = 0;
        loop {
            let result = self.commit_inner(batch);
            if matches!(result, Ok(_) | Err(StoreError::Damaged { .. })) {
                return result;
            }
            // redb refuses every operation after an I/O error until the file
            // is reopened; and part of the work may have been committed
            // (give-ups go first), so the file, not memory, says what the
            // counters are now.
            self.reopen()?;
            self.reload_counters()?;
            match result {
                Err(StoreError::Cap { .. }) if attempt < CAP_RETRIES => {
                    attempt += 1;
                    self.lower_budget_after_cap();
                    self.reopen()?;
                }
                other => return other,
            }
        }
    }

    fn commit_inner(&mut self, batch: &Batch) -> Result<Committed, StoreError> {
        let mut out = Committed::default();
        // Given up from the file, and refused on the way in, by class.
        let mut stored_drops = PerClass::<u64>::default();
        let mut incoming_drops = PerClass::<u64>::default();

        // Serialize first: the budget needs sizes. The envelope's length
        // depends on the sequence number only by a few digits.
        let mut incoming: Vec<Option<Incoming>> = Vec::with_capacity(batch.appends.len());
        let mut in_usage = ByClass::default();
        let overhead = format::envelope_overhead(self.node.len());
        for r in &batch.appends {
            let body = format::body(&r.payload);
            let est = body.len() + overhead;
            if est > MAX_RECORD_BYTES || format::cost(est) > self.effective_budget / 4 {
                incoming_drops[r.class] += 1;
                incoming.push(None);
                continue;
            }
            in_usage[r.class].records += 1;
            in_usage[r.class].cost += format::cost(est);
            incoming.push(Some((
                r.class,
                r.topic,
                unix_time::millis(r.created),
                body,
                est,
            )));
        }

        let mut txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
            for key in &batch.acks {
                if let Some(v) = table.remove(key.raw()).map_err(|e| self.err(e.into()))? {
                    let len = v.value().len();
                    drop(v);
                    self.counters.remove(key.class, len);
                    out.acked += 1;
                }
            }
            let mut thinned = false;
            while let Some(step) = budget::next_step(
                &self.counters.usage,
                &in_usage,
                self.effective_budget,
                thinned,
            ) {
                match step {
                    Step::ThinMetrics => {
                        thinned = true;
                        let n = self.thin_metrics(&mut table)?;
                        stored_drops[Class::Metrics] += n;
                        if n == 0 {
                            break;
                        }
                    }
                    Step::DropStored { class, cost } => {
                        let n = self.drop_oldest(&mut table, class, cost)?;
                        stored_drops[class] += n;
                        if n == 0 {
                            break;
                        }
                    }
                    Step::DropIncoming { class, cost } => {
                        let mut freed = 0;
                        for slot in incoming.iter_mut() {
                            if freed >= cost {
                                break;
                            }
                            if let Some((c, .., est)) = slot
                                && *c == class
                            {
                                let est = *est;
                                freed += format::cost(est);
                                in_usage[class].records -= 1;
                                in_usage[class].cost -= format::cost(est);
                                incoming_drops[class] += 1;
                                *slot = None;
                            }
                        }
                    }
                }
            }
        }
        for class in Class::ALL {
            self.counters.given_up[class] += stored_drops[class];
            out.given_up[class] = stored_drops[class] + incoming_drops[class];
        }
        if stored_drops.total() > 0 && incoming.iter().any(Option::is_some) {
            // redb copies on write: pages of records deleted in a
            // transaction are free for reuse only after it commits. Commit
            // the give-ups first, so the new records take their pages
            // instead of growing a full file.
            self.write_meta(&txn)?;
            self.finish(txn)?;
            txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
        }
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
            for slot in incoming {
                match slot {
                    None => out.seqs.push(None),
                    Some((class, topic, created_ms, body, _)) => {
                        let seq = self.counters.next_seq;
                        self.counters.next_seq += 1;
                        let body = format::envelope(&self.node, seq, &body);
                        let value = format::encode_value(created_ms, topic, &body);
                        table
                            .insert((class.index() as u8, seq), value.as_slice())
                            .map_err(|e| self.err(e.into()))?;
                        self.counters.add(class, value.len());
                        out.seqs.push(Some(seq));
                    }
                }
            }
        }
        for (class, n) in incoming_drops.iter() {
            self.counters.given_up[class] += n + batch.given_up_elsewhere[class];
        }
        self.write_meta(&txn)?;
        self.finish(txn)?;
        Ok(out)
    }

    /// Every second record of the older half of the stored metrics.
    fn thin_metrics(
        &mut self,
        table: &mut redb::Table<(u8, u64), &[u8]>,
    ) -> Result<u64, StoreError> {
        let m = Class::Metrics.index() as u8;
        let half = self.counters.usage[Class::Metrics].records / 2;
        let mut doomed = Vec::new();
        for (i, entry) in table
            .range((m, 0)..=(m, u64::MAX))
            .map_err(|e| self.err(e.into()))?
            .take(half as usize)
            .enumerate()
        {
            let (k, _) = entry.map_err(|e| self.err(e.into()))?;
            if i % 2 == 1 {
                doomed.push(k.value());
            }
        }
        self.remove_keys(table, Class::Metrics, &doomed)
    }

    /// The oldest records of `class` until `cost` bytes are freed.
    fn drop_oldest(
        &mut self,
        table: &mut redb::Table<(u8, u64), &[u8]>,
        class: Class,
        cost: u64,
    ) -> Result<u64, StoreError> {
        let c = class.index() as u8;
        let mut doomed = Vec::new();
        let mut freed = 0;
        for entry in table
            .range((c, 0)..=(c, u64::MAX))
            .map_err(|e| self.err(e.into()))?
        {
            if freed >= cost {
                break;
            }
            let (k, v) = entry.map_err(|e| self.err(e.into()))?;
            freed += format::cost(v.value().len());
            doomed.push(k.value());
        }
        self.remove_keys(table, class, &doomed)
    }

    fn remove_keys(
        &mut self,
        table: &mut redb::Table<(u8, u64), &[u8]>,
        class: Class,
        keys: &[(u8, u64)],
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for k in keys {
            if let Some(v) = table.remove(*k).map_err(|e| self.err(e.into()))? {
                let len = v.value().len();
                drop(v);
                self.counters.remove(class, len);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Give up records older than their class's time-to-live, oldest
    /// first, at most `limit` per call (so one call never holds the writer
    /// long). Returns how many expired, by class.
    pub(crate) fn expire(
        &mut self,
        max_age: PerClass<Option<Duration>>,
        now_ms: u64,
        limit: usize,
    ) -> Result<PerClass<u64>, StoreError> {
        let mut expired = PerClass::<u64>::default();
        if max_age.values().all(Option::is_none) {
            return Ok(expired);
        }
        let before = self.counters.clone();
        let result = (|| {
            let txn = self.db.begin_write().map_err(|e| self.err(e.into()))?;
            {
                let mut table = txn.open_table(RECORDS).map_err(|e| self.err(e.into()))?;
                for class in Class::ALL {
                    let Some(age) = max_age[class] else {
                        continue;
                    };
                    let cutoff = now_ms.saturating_sub(age.as_millis() as u64);
                    let c = class.index() as u8;
                    let mut doomed = Vec::new();
                    for entry in table
                        .range((c, 0)..=(c, u64::MAX))
                        .map_err(|e| self.err(e.into()))?
                    {
                        let (k, v) = entry.map_err(|e| self.err(e.into()))?;
                        if doomed.len() >= limit || format::created_ms(v.value()) >= cutoff {
                            break;
                        }
                        doomed.push(k.value());
                    }
                    expired[class] = self.remove_keys(&mut table, class, &doomed)?;
                }
            }
            for (class, n) in expired.iter() {
                self.counters.given_up[class] += n;
                self.counters.expired[class] += n;
            }
            if expired.total() > 0 {
                self.write_meta(&txn)?;
                self.finish(txn)?;
            } else {
                let _ = txn.abort();
            }
            Ok(expired)
        })();
        if result.is_err() {
            self.counters = before;
        }
        result
    }

    /// Up to `limit` records (and about `max_bytes` of payload, at least
    /// one record) after `after`, in drain order (class, then sequence).
    /// Unreadable records are skipped (the cursors move past them) and
    /// counted.
    pub(crate) fn fetch(
        &self,
        after: &Cursors,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Fetch, StoreError> {
        let mut out = Fetch {
            records: Vec::new(),
            cursors: *after,
            unreadable: 0,
            more: false,
        };
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let table = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(self.err(e.into())),
        };
        let mut bytes = 0;
        'classes: for class in Class::ALL {
            let c = class.index() as u8;
            let from = after[class].map_or(0, |s| s.saturating_add(1));
            for entry in table
                .range((c, from)..=(c, u64::MAX))
                .map_err(|e| self.err(e.into()))?
            {
                if out.records.len() >= limit || (bytes >= max_bytes && !out.records.is_empty()) {
                    out.more = true;
                    break 'classes;
                }
                let (k, v) = entry.map_err(|e| self.err(e.into()))?;
                let seq = k.value().1;
                out.cursors[class] = Some(seq);
                match format::decode_value(v.value()) {
                    Decoded::Record {
                        created_ms,
                        topic,
                        payload,
                    } => {
                        bytes += payload.len();
                        out.records.push(StoredRecord {
                            key: RecordKey { class, seq },
                            topic,
                            created_ms,
                            payload: payload.to_vec(),
                        });
                    }
                    Decoded::Unreadable { .. } => out.unreadable += 1,
                }
            }
        }
        Ok(out)
    }

    /// Which of `keys` are still waiting.
    pub(crate) fn waiting(&self, keys: &[RecordKey]) -> Result<Vec<RecordKey>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let table = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e.into())),
        };
        let mut out = Vec::new();
        for k in keys {
            if table
                .get(k.raw())
                .map_err(|e| self.err(e.into()))?
                .is_some()
            {
                out.push(*k);
            }
        }
        Ok(out)
    }

    /// The created time of the oldest waiting record of each class.
    pub(crate) fn oldest_created(&self) -> Result<PerClass<Option<u64>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        let mut out = PerClass::default();
        let table = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(self.err(e.into())),
        };
        for class in Class::ALL {
            let c = class.index() as u8;
            if let Some(entry) = table
                .range((c, 0)..=(c, u64::MAX))
                .map_err(|e| self.err(e.into()))?
                .next()
            {
                let (_, v) = entry.map_err(|e| self.err(e.into()))?;
                out[class] = Some(format::created_ms(v.value()));
            }
        }
        Ok(out)
    }

    /// What waits, by class, with the oldest `per_class` records of each.
    #[cfg(test)]
    pub(crate) fn listing(&self, per_class: usize) -> Result<Listing, StoreError> {
        self.snapshot()?.listing(per_class, &Cursors::default())
    }

    /// A read-only view of the last commit, for reading on another thread:
    /// redb readers never block the writer, so a long listing costs the
    /// outbox thread only the start of a read transaction.
    pub(crate) fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e.into()))?;
        Ok(Snapshot(txn, self.path.clone()))
    }

    /// Make the file small again after a large backlog drained, when that
    /// is worth it. Returns the file size before and after.
    pub(crate) fn compact_if_worthwhile(&mut self) -> Result<Option<(u64, u64)>, StoreError> {
        let before = self.file_len();
        if before < COMPACT_MIN_FILE || self.counters.cost().saturating_mul(COMPACT_RATIO) > before
        {
            return Ok(None);
        }
        match self.db.compact() {
            Ok(_) => {}
            Err(redb::CompactionError::Storage(e)) => return Err(self.err(e.into())),
            Err(e) => {
                return Err(StoreError::Storage {
                    path: self.path.clone(),
                    source: e.into(),
                });
            }
        }
        let after = self.file_len();
        self.effective_budget = self.record_budget;
        self.growth.set_cap(self.max_bytes.max(after));
        Ok(Some((before, after)))
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Errors after which the file is not worth keeping in place.
fn unusable(e: &StoreError) -> bool {
    match e {
        StoreError::NewerFormat { .. } | StoreError::Damaged { .. } => true,
        StoreError::Open { source, .. } => {
            matches!(
                source,
                redb::DatabaseError::UpgradeRequired(_)
                    | redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
            ) || matches!(source, redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof))
        }
        StoreError::Storage { source, .. } => is_damage(source),
        _ => false,
    }
}

/// Move the file at `path` aside (`outbox.redb.<why>-<unix secs>`, never
/// over an earlier one) and say what it was.
fn move_aside(
    path: &Path,
    why: &StoreError,
    lost_by_class: Option<PerClass<u64>>,
) -> Result<Replaced, StoreError> {
    let at = unix_time::now_millis() / 1000;
    let suffix = match why {
        StoreError::NewerFormat { found, .. } => format!("format-{found}"),
        StoreError::Damaged { .. } => "damaged".to_string(),
        _ => "unusable".to_string(),
    };
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut aside = path.with_extension(format!("redb.{suffix}-{at}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = path.with_extension(format!("redb.{suffix}-{at}.{n}"));
    }
    std::fs::rename(path, &aside).map_err(|source| StoreError::MoveAside {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Replaced {
        moved_to: aside,
        reason: why.to_string(),
        file_bytes,
        lost_by_class,
        at,
    })
}

/// One class in a listing.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct ClassListing {
    pub(crate) class: &'static str,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) oldest_created_ms: Option<u64>,
    /// Records after `after`, oldest first, at most `per_class`.
    pub(crate) oldest: Vec<ListedRecord>,
    /// More records follow the last one listed.
    pub(crate) more: bool,
}

/// One record in a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct ListedRecord {
    pub(crate) seq: u64,
    pub(crate) created_ms: u64,
    /// Topic suffix; `None` for an unreadable record.
    pub(crate) topic: Option<&'static str>,
    pub(crate) bytes: usize,
    /// A few words about it: the rule and priority of an alert, the kind
    /// of a node event, the record version of an unreadable one.
    pub(crate) about: String,
}

/// A read transaction on the outbox file (see [`Store::snapshot`]).
pub(crate) struct Snapshot(redb::ReadTransaction, PathBuf);

impl Snapshot {
    /// What waits, by class, with up to `per_class` records of each after
    /// `after` (from the oldest when `None`).
    pub(crate) fn listing(&self, per_class: usize, after: &Cursors) -> Result<Listing, StoreError> {
        guard(&self.1, || {
            listing(&self.0, per_class, after).map_err(|source| {
                if is_damage(&source) {
                    StoreError::Damaged {
                        path: self.1.clone(),
                        what: source.to_string(),
                    }
                } else {
                    StoreError::Storage {
                        path: self.1.clone(),
                        source,
                    }
                }
            })
        })
    }
}

/// What waits in an outbox file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Listing {
    pub(crate) next_seq: u64,
    pub(crate) given_up: PerClass<u64>,
    pub(crate) expired: PerClass<u64>,
    pub(crate) classes: Vec<ClassListing>,
}

fn listing(
    txn: &redb::ReadTransaction,
    per_class: usize,
    after: &Cursors,
) -> Result<Listing, redb::Error> {
    let counters = match txn.open_table(META) {
        Ok(meta) => meta
            .get("counters")?
            .and_then(|v| Counters::decode(v.value()))
            .unwrap_or_default(),
        Err(redb::TableError::TableDoesNotExist(_)) => Counters::default(),
        Err(e) => return Err(e.into()),
    };
    let table = match txn.open_table(RECORDS) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = Listing {
        next_seq: counters.next_seq,
        given_up: counters.given_up,
        expired: counters.expired,
        classes: Vec::new(),
    };
    for class in Class::ALL {
        let mut cl = ClassListing {
            class: class.as_str(),
            records: counters.usage[class].records,
            bytes: counters.bytes[class],
            ..ClassListing::default()
        };
        if let Some(table) = &table {
            let c = class.index() as u8;
            if let Some(first) = table.range((c, 0)..=(c, u64::MAX))?.next() {
                cl.oldest_created_ms = Some(format::created_ms(first?.1.value()));
            }
            let from = after[class].map_or(0, |s| s.saturating_add(1));
            for (n, entry) in table.range((c, from)..=(c, u64::MAX))?.enumerate() {
                if n >= per_class {
                    cl.more = true;
                    break;
                }
                let (k, v) = entry?;
                let value = v.value();
                let item = match format::decode_value(value) {
                    Decoded::Record {
                        created_ms,
                        topic,
                        payload,
                    } => ListedRecord {
                        seq: k.value().1,
                        created_ms,
                        topic: Some(topic.suffix()),
                        bytes: payload.len(),
                        about: about(payload),
                    },
                    Decoded::Unreadable { version } => ListedRecord {
                        seq: k.value().1,
                        created_ms: 0,
                        topic: None,
                        bytes: value.len(),
                        about: format!("unreadable (record version {version})"),
                    },
                };
                cl.oldest.push(item);
            }
        }
        out.classes.push(cl);
    }
    Ok(out)
}

/// A few words about a payload, for listings.
fn about(payload: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return "not JSON".into();
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    match (s("rule"), s("priority"), s("kind")) {
        (Some(rule), Some(p), _) => format!("{p}: {rule}"),
        (Some(rule), None, _) => rule.to_string(),
        (None, _, Some(kind)) => kind.to_string(),
        _ => {
            let keys: Vec<&str> = v
                .as_object()
                .map(|m| {
                    m.keys()
                        .map(String::as_str)
                        .filter(|k| !matches!(*k, "node" | "seq" | "schema"))
                        .take(4)
                        .collect()
                })
                .unwrap_or_default();
            keys.join(", ")
        }
    }
}

/// Read an outbox file without the daemon (it must not be running: the
/// daemon holds the file exclusively). For `status` and `outbox` when the
/// daemon is down.
pub(crate) fn read_offline(path: &Path, per_class: usize) -> Result<Listing, StoreError> {
    let err = |source: redb::Error| StoreError::Storage {
        path: path.to_path_buf(),
        source,
    };
    guard(path, || {
        let db: ReadOnlyDatabase = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open_read_only(path)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        listing(&txn, per_class, &Cursors::default()).map_err(err)
    })
}

/// Number of records in a table (for tests).
#[cfg(test)]
fn count(store: &Store) -> u64 {
    use redb::ReadableTableMetadata;
    let txn = store.db.begin_read().unwrap();
    txn.open_table(RECORDS).map_or(0, |t| t.len().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn open(dir: &Path, max: u64) -> Store {
        Store::open(&dir.join(FILE_NAME), "node-1", max, Arc::new(|_| {}))
            .unwrap()
            .0
    }

    fn report(class: Class, pad: usize) -> Report {
        let mut m = Map::new();
        m.insert("pad".into(), Value::from("x".repeat(pad)));
        match class {
            Class::Metrics => Report::metrics(m),
            Class::NodeEvent => Report::node_event("test", "t", m),
            Class::Alert => Report::alert(false, m),
            Class::CriticalAlert => Report::alert(true, m),
        }
    }

    fn append(s: &mut Store, reports: Vec<Report>) -> Committed {
        s.commit(&Batch {
            appends: reports,
            ..Batch::default()
        })
        .unwrap()
    }

    /// The `counters` meta value, byte for byte: version 1, the next
    /// sequence number, then per class in drain order its records, payload
    /// bytes, estimated cost, given up and expired (big-endian u64s).
    #[test]
    fn the_counters_value_keeps_its_byte_layout() {
        let mut c = Counters {
            next_seq: 77,
            ..Counters::default()
        };
        for class in Class::ALL {
            let n = 10 * (class.index() as u64 + 1);
            c.usage[class] = budget::Usage {
                records: n + 1,
                cost: n + 3,
            };
            c.bytes[class] = n + 2;
            c.given_up[class] = n + 4;
            c.expired[class] = n + 5;
        }
        let mut want = vec![1u8];
        want.extend_from_slice(&77u64.to_be_bytes());
        for i in 1..=4u64 {
            for k in 1..=5u64 {
                want.extend_from_slice(&(10 * i + k).to_be_bytes());
            }
        }
        assert_eq!(c.encode(), want);
        assert_eq!(Counters::decode(&want), Some(c));
    }

    #[test]
    fn sequence_numbers_increase_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let c = append(
            &mut s,
            vec![report(Class::Alert, 10), report(Class::Metrics, 10)],
        );
        let (a, b) = (c.seqs[0].unwrap(), c.seqs[1].unwrap());
        assert_eq!(b, a + 1);
        drop(s);
        let mut s = open(dir.path(), 64 << 20);
        let c = append(&mut s, vec![report(Class::Alert, 10)]);
        assert_eq!(c.seqs[0], Some(b + 1));
        assert_eq!(s.counters().records(), 3);
    }

    #[test]
    fn fetch_returns_class_then_sequence_order_and_payloads_carry_the_envelope() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        append(
            &mut s,
            vec![
                report(Class::Metrics, 1),
                report(Class::Alert, 1),
                report(Class::CriticalAlert, 1),
                report(Class::Metrics, 1),
            ],
        );
        let f = s.fetch(&Cursors::default(), 10, usize::MAX).unwrap();
        let (recs, cursors) = (f.records, f.cursors);
        let classes: Vec<Class> = recs.iter().map(|r| r.key.class).collect();
        assert_eq!(
            classes,
            [
                Class::CriticalAlert,
                Class::Alert,
                Class::Metrics,
                Class::Metrics
            ]
        );
        assert!(recs[2].key.seq < recs[3].key.seq);
        let v: Value = serde_json::from_slice(&recs[0].payload).unwrap();
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["seq"], recs[0].key.seq);
        assert_eq!(v["schema"], 1);
        // Cursors: nothing new after them.
        assert!(
            s.fetch(&cursors, 10, usize::MAX)
                .unwrap()
                .records
                .is_empty()
        );
        // A new critical alert comes before the metrics past the cursors.
        append(&mut s, vec![report(Class::CriticalAlert, 1)]);
        let recs = s.fetch(&cursors, 10, usize::MAX).unwrap().records;
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].key.class, Class::CriticalAlert);
    }

    #[test]
    fn acknowledged_records_leave_and_counters_follow() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        append(
            &mut s,
            vec![report(Class::Alert, 100), report(Class::Alert, 100)],
        );
        let recs = s
            .fetch(&Cursors::default(), 10, usize::MAX)
            .unwrap()
            .records;
        let c = s
            .commit(&Batch {
                acks: vec![recs[0].key, recs[0].key],
                ..Batch::default()
            })
            .unwrap();
        assert_eq!(c.acked, 1);
        assert_eq!(s.counters().usage[Class::Alert].records, 1);
        assert_eq!(count(&s), 1);
        assert_eq!(
            s.waiting(&[recs[0].key, recs[1].key]).unwrap(),
            [recs[1].key]
        );
    }

    #[test]
    fn a_full_outbox_gives_up_metrics_first_and_counts_it_persistently() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB file: 400 KiB of records; 2 KiB payloads cost a page each.
        let mut s = open(dir.path(), 1 << 20);
        let metrics: Vec<Report> = (0..90).map(|_| report(Class::Metrics, 2000)).collect();
        append(&mut s, metrics);
        let crit: Vec<Report> = (0..80)
            .map(|_| report(Class::CriticalAlert, 2000))
            .collect();
        let c = append(&mut s, crit);
        assert!(
            c.seqs.iter().all(Option::is_some),
            "no critical alert refused"
        );
        assert!(c.given_up[Class::Metrics] > 0);
        assert_eq!(c.given_up[Class::CriticalAlert], 0);
        assert!(s.counters().cost() <= s.budget());
        let given_up = s.counters().given_up;
        drop(s);
        let s = open(dir.path(), 1 << 20);
        assert_eq!(s.counters().given_up, given_up);
        assert_eq!(s.counters().records(), count(&s));
    }

    #[test]
    fn thinning_keeps_the_oldest_metrics_batch_and_every_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 2 << 20);
        let first = append(
            &mut s,
            (0..100).map(|_| report(Class::Metrics, 2000)).collect(),
        );
        // Just over budget: one thinning pass is enough.
        let budget_records = s.budget() / 4096;
        let extra = budget_records.saturating_sub(100) + 1;
        append(
            &mut s,
            (0..extra).map(|_| report(Class::NodeEvent, 2000)).collect(),
        );
        let recs = s
            .fetch(&Cursors::default(), 1000, usize::MAX)
            .unwrap()
            .records;
        let metrics: Vec<u64> = recs
            .iter()
            .filter(|r| r.key.class == Class::Metrics)
            .map(|r| r.key.seq)
            .collect();
        let s0 = first.seqs[0].unwrap();
        assert_eq!(metrics[0], s0, "the oldest batch stays");
        assert_eq!(metrics[1], s0 + 2, "its neighbour went");
        assert_eq!(
            *metrics.last().unwrap(),
            first.seqs[99].unwrap(),
            "the newest stay"
        );
        assert_eq!(metrics.len(), 75);
    }

    #[test]
    fn oversized_records_are_given_up_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let c = append(&mut s, vec![report(Class::Alert, MAX_RECORD_BYTES + 1)]);
        assert_eq!(c.seqs, [None]);
        assert_eq!(s.counters().given_up[Class::Alert], 1);
    }

    #[test]
    fn old_records_expire_by_class_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let mut old = report(Class::Metrics, 1);
        old.created = SystemTime::now() - Duration::from_secs(7200);
        append(
            &mut s,
            vec![old, report(Class::Metrics, 1), report(Class::Alert, 1)],
        );
        let mut ages = PerClass::default();
        ages[Class::Metrics] = Some(Duration::from_secs(3600));
        let e = s.expire(ages, unix_time::now_millis(), 100).unwrap();
        assert_eq!(e[Class::Metrics], 1);
        assert_eq!(s.counters().expired[Class::Metrics], 1);
        assert_eq!(s.counters().given_up[Class::Metrics], 1);
        assert_eq!(s.counters().records(), 2);
    }

    #[test]
    fn records_of_an_unknown_version_are_kept_but_never_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        append(&mut s, vec![report(Class::Alert, 1)]);
        {
            let txn = s.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(RECORDS).unwrap();
                t.insert((Class::Alert.index() as u8, 5), [9u8, 1, 2].as_slice())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let f = s.fetch(&Cursors::default(), 10, usize::MAX).unwrap();
        assert_eq!(f.records.len(), 1);
        assert_eq!(f.unreadable, 1);
        assert!(f.cursors[Class::Alert].unwrap() > 5);
        assert!(!f.more);
        let l = s.listing(10).unwrap();
        assert!(
            l.classes[1].oldest[0]
                .about
                .contains("unreadable (record version 9)")
        );
    }

    #[test]
    fn a_file_from_a_newer_agent_is_moved_aside_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 64 << 20);
        {
            let txn = s.db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", [9u8].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        drop(s);
        let (s, opened) =
            Store::open(&dir.path().join(FILE_NAME), "n", 64 << 20, Arc::new(|_| {})).unwrap();
        let r = opened.replaced.unwrap();
        assert!(r.moved_to.exists(), "{}", r.moved_to.display());
        assert!(r.reason.contains("format 9"), "{}", r.reason);
        assert_eq!(s.counters().records(), 0);
    }

    #[test]
    fn a_file_shorter_than_redbs_header_is_moved_aside_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let s = open(dir.path(), 64 << 20);
        drop(s);
        let head = std::fs::read(&path).unwrap()[..100].to_vec();
        std::fs::write(&path, head).unwrap();
        let (s, opened) = Store::open(&path, "n", 64 << 20, Arc::new(|_| {})).unwrap();
        let r = opened.replaced.expect("moved aside");
        assert_eq!(r.file_bytes, 100);
        assert!(
            r.moved_to
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("outbox.redb.unusable-"),
            "{}",
            r.moved_to.display()
        );
        assert_eq!(r.lost_by_class, None);
        assert_eq!(s.counters().records(), 0);
    }

    #[test]
    fn a_replaced_file_carries_on_the_sequence_and_counts_what_it_held_as_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let c = append(&mut s, (0..7).map(|_| report(Class::Alert, 10)).collect());
        let last = c.seqs.iter().flatten().max().copied().unwrap();
        let why = StoreError::Damaged {
            path: s.path().to_path_buf(),
            what: "test".into(),
        };
        let (mut s, r) = s.replace(&why).unwrap();
        assert_eq!(r.lost_by_class.unwrap()[Class::Alert], 7);
        assert!(
            r.moved_to
                .to_string_lossy()
                .contains("outbox.redb.damaged-")
        );
        assert_eq!(s.counters().given_up[Class::Alert], 7);
        assert_eq!(s.counters().records(), 0);
        let next = append(&mut s, vec![report(Class::Alert, 10)]);
        assert!(next.seqs[0].unwrap() > last);
        // And the counts survive reopening.
        let path = s.path().to_path_buf();
        drop(s);
        let (s, _) = Store::open(&path, "n", 64 << 20, Arc::new(|_| {})).unwrap();
        assert_eq!(s.counters().given_up[Class::Alert], 7);
    }

    #[test]
    fn a_panic_inside_a_guarded_read_is_a_damaged_file() {
        let e = guard::<()>(Path::new("/x/outbox.redb"), || unreachable!("bad page")).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("bad page"), "{e}");
        assert!(unusable(&e));
    }

    #[test]
    fn a_snapshot_read_on_another_thread_never_holds_up_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let first = append(&mut s, (0..5).map(|_| report(Class::Alert, 10)).collect());
        let snapshot = s.snapshot().unwrap();
        // The writer commits (and deletes) while the reader's view is open.
        let key = RecordKey {
            class: Class::Alert,
            seq: first.seqs[0].unwrap(),
        };
        s.commit(&Batch {
            appends: (0..3).map(|_| report(Class::Alert, 10)).collect(),
            acks: vec![key],
            ..Batch::default()
        })
        .unwrap();
        // The reader sees the last commit before its snapshot, pages with
        // `after`, and says when more follow.
        let after = Cursors::from([None, first.seqs[1], None, None]);
        let l = std::thread::spawn(move || snapshot.listing(2, &after))
            .join()
            .unwrap()
            .unwrap();
        let alerts = &l.classes[1];
        assert_eq!(alerts.records, 5);
        let seqs: Vec<u64> = alerts.oldest.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [first.seqs[2].unwrap(), first.seqs[3].unwrap()]);
        assert!(alerts.more);
        assert_eq!(
            s.snapshot()
                .unwrap()
                .listing(10, &Cursors::default())
                .unwrap()
                .classes[1]
                .records,
            7
        );
    }

    #[test]
    fn the_offline_reader_sees_what_the_daemon_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 64 << 20);
        let mut m = Map::new();
        m.insert("rule".into(), json!("Terminal shell in container"));
        m.insert("priority".into(), json!("Critical"));
        append(
            &mut s,
            vec![Report::alert(true, m), report(Class::Metrics, 1)],
        );
        drop(s);
        let l = read_offline(&dir.path().join(FILE_NAME), 5).unwrap();
        assert_eq!(l.classes[0].records, 1);
        assert_eq!(
            l.classes[0].oldest[0].about,
            "Critical: Terminal shell in container"
        );
        assert_eq!(l.classes[3].records, 1);
    }

    #[test]
    fn a_drained_backlog_is_compacted_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path(), 256 << 20);
        for _ in 0..20 {
            append(
                &mut s,
                (0..500).map(|_| report(Class::Metrics, 2000)).collect(),
            );
        }
        let recs = s
            .fetch(&Cursors::default(), usize::MAX, usize::MAX)
            .unwrap()
            .records;
        s.commit(&Batch {
            acks: recs.iter().map(|r| r.key).collect(),
            ..Batch::default()
        })
        .unwrap();
        let (before, after) = s
            .compact_if_worthwhile()
            .unwrap()
            .expect("worth compacting");
        assert!(after * 4 < before, "{before} -> {after}");
    }
}
