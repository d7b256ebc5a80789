//! Which (node, seq) the bridge has delivered, and to which URLs: a small
//! redb file (`<state_dir>/bridge.redb`) that survives a restart, so that a
//! message the broker delivers again (it was not acknowledged before the
//! bridge stopped) is not posted again. Entries older than the window are
//! pruned. Blocking: call it from a blocking thread.
//!
//! # File format 1
//! - `delivered`: key `(node: &str, seq: u64)`; value: bytes 0-7 the time
//!   it was first recorded (Unix ms, big-endian), then 8 bytes per URL it
//!   reached (the URL's 64-bit FNV-1a hash, big-endian).
//! - `by_time`: key `(recorded_ms: u64, node: &str, seq: u64)` -> `()`:
//!   the pruning order.
//! - `meta`: `format` -> 1. A file with another format is moved aside
//!   (`bridge.redb.format-N`) and a new one started: duplicates are then
//!   possible for one window, nothing is lost.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};

const DELIVERED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("delivered");
const BY_TIME: TableDefinition<(u64, &str, u64), ()> = TableDefinition::new("by_time");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;

/// Entries pruned per transaction, so a first prune after a long pause
/// does not hold the writer for long.
const PRUNE_CHUNK: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub(crate) struct DedupError {
    pub(crate) path: PathBuf,
    pub(crate) message: String,
}

pub(crate) struct Dedup {
    db: Database,
    path: PathBuf,
}

/// The hash a URL is remembered by (FNV-1a, 64 bits: stable across
/// builds, unlike std's hasher).
pub(crate) fn url_key(url: &str) -> u64 {
    url.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Dedup {
    pub(crate) fn open(path: &Path) -> Result<Dedup, DedupError> {
        let err = |e: &dyn std::fmt::Display| DedupError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let db = Database::create(path).map_err(|e| err(&e))?;
        let d = Dedup {
            db,
            path: path.to_path_buf(),
        };
        let format = d.format().map_err(|e| err(&e))?;
        if format != FORMAT {
            drop(d);
            let aside = path.with_extension(format!("redb.format-{format}"));
            std::fs::rename(path, &aside).map_err(|e| err(&e))?;
            tracing::warn!(moved_to = %aside.display(), "the de-duplication file has an unknown format; started a new one");
            return Dedup::open(path);
        }
        Ok(d)
    }

    fn format(&self) -> Result<u64, redb::Error> {
        let tx = self.db.begin_write()?;
        let f = {
            let mut meta = tx.open_table(META)?;
            tx.open_table(DELIVERED)?;
            tx.open_table(BY_TIME)?;
            let current = meta.get("format")?.map(|v| v.value());
            match current {
                Some(f) => f,
                None => {
                    meta.insert("format", FORMAT)?;
                    FORMAT
                }
            }
        };
        tx.commit()?;
        Ok(f)
    }

    fn err(&self, e: impl std::fmt::Display) -> DedupError {
        DedupError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The URL keys `(node, seq)` was delivered to.
    pub(crate) fn delivered(&self, node: &str, seq: u64) -> Result<Vec<u64>, DedupError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(DELIVERED).map_err(|e| self.err(e))?;
        Ok(match t.get((node, seq)).map_err(|e| self.err(e))? {
            Some(v) => urls(v.value()),
            None => Vec::new(),
        })
    }

    /// Record deliveries `(node, seq, url key)` at `now_ms`, in one
    /// durable transaction.
    pub(crate) fn record(
        &self,
        deliveries: &[(String, u64, u64)],
        now_ms: u64,
    ) -> Result<(), DedupError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(DELIVERED).map_err(|e| self.err(e))?;
            let mut by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
            for (node, seq, url) in deliveries {
                let old = t
                    .get((node.as_str(), *seq))
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value().to_vec());
                let mut value = match old {
                    Some(v) => v,
                    None => {
                        by_time
                            .insert((now_ms, node.as_str(), *seq), ())
                            .map_err(|e| self.err(e))?;
                        now_ms.to_be_bytes().to_vec()
                    }
                };
                if !urls(&value).contains(url) {
                    value.extend_from_slice(&url.to_be_bytes());
                }
                t.insert((node.as_str(), *seq), value.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forget entries recorded before `cutoff_ms`; how many went.
    pub(crate) fn prune(&self, cutoff_ms: u64) -> Result<usize, DedupError> {
        let mut total = 0;
        loop {
            let tx = self.db.begin_write().map_err(|e| self.err(e))?;
            let n = {
                let mut t = tx.open_table(DELIVERED).map_err(|e| self.err(e))?;
                let mut by_time = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
                let old: Vec<(u64, String, u64)> = by_time
                    .range((0u64, "", 0u64)..(cutoff_ms, "", 0u64))
                    .map_err(|e| self.err(e))?
                    .take(PRUNE_CHUNK)
                    .filter_map(Result::ok)
                    .map(|(k, _)| {
                        let (t, n, s) = k.value();
                        (t, n.to_string(), s)
                    })
                    .collect();
                for (at, node, seq) in &old {
                    by_time
                        .remove((*at, node.as_str(), *seq))
                        .map_err(|e| self.err(e))?;
                    t.remove((node.as_str(), *seq)).map_err(|e| self.err(e))?;
                }
                old.len()
            };
            tx.commit().map_err(|e| self.err(e))?;
            total += n;
            if n < PRUNE_CHUNK {
                return Ok(total);
            }
        }
    }

    /// Entries remembered.
    pub(crate) fn entries(&self) -> Result<u64, DedupError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = tx.open_table(BY_TIME).map_err(|e| self.err(e))?;
        t.len().map_err(|e| self.err(e))
    }
}

fn urls(value: &[u8]) -> Vec<u64> {
    value
        .get(8..)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_survive_reopening_and_expire_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bridge.redb");
        let (a, b) = (url_key("http://a/"), url_key("http://b/"));
        {
            let d = Dedup::open(&path).unwrap();
            d.record(&[("n1".into(), 5, a), ("n2".into(), 5, a)], 1_000)
                .unwrap();
            d.record(&[("n1".into(), 5, b), ("n1".into(), 5, b)], 2_000)
                .unwrap();
            d.record(&[("n1".into(), 6, a)], 3_000).unwrap();
        }
        let d = Dedup::open(&path).unwrap();
        assert_eq!(d.delivered("n1", 5).unwrap(), [a, b]);
        assert_eq!(d.delivered("n2", 5).unwrap(), [a]);
        assert!(d.delivered("n3", 5).unwrap().is_empty());
        assert_eq!(d.entries().unwrap(), 3);
        assert_eq!(
            d.prune(2_500).unwrap(),
            2,
            "first recorded at 1,000: n1/5 and n2/5"
        );
        assert!(d.delivered("n1", 5).unwrap().is_empty());
        assert_eq!(d.delivered("n1", 6).unwrap(), [a]);
    }
}
