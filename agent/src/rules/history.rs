//! The alerts kept on the node for `edge-agent alerts`: the last
//! `rules.history` alerts, within `rules.history_max_bytes`, in the state
//! directory, whether or not they have been sent.
//!
//! # Files
//! `alerts.jsonl` (the newest) and `alerts.jsonl.1` (the one before), one
//! alert per line, Falco's JSON as the rules engine made it. The current
//! file is started afresh (the old one becoming `.1`, the one before that
//! deleted) when it holds `rules.history` alerts or half of
//! `history_max_bytes`, so the two together hold at least the last
//! `history` alerts (fewer when they are large) and never more than
//! `history_max_bytes`. A line is written with one `write(2)`; a torn last
//! line (a crash in the middle of it) is cut off when the file is opened
//! again, and skipped by readers. Not fsynced: the outbox is the durable
//! path to the fleet; this is a convenience copy, and flash wears.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) const CURRENT: &str = "alerts.jsonl";
pub(crate) const PREVIOUS: &str = "alerts.jsonl.1";

/// Which alerts a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Query {
    /// Alerts whose `time` is at or after this (Unix ms).
    pub(crate) since_ms: Option<u64>,
    /// Rule name: exact (any case) or a glob (`Terminal*`).
    pub(crate) rule: Option<String>,
    /// The last this many (after filtering).
    pub(crate) limit: Option<usize>,
}

impl Query {
    pub(crate) fn matcher(&self) -> impl Fn(&Value) -> bool + use<> {
        let since = self.since_ms;
        let rule = self.rule.as_ref().map(|r| {
            globset::GlobBuilder::new(r)
                .case_insensitive(true)
                .literal_separator(false)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|_| r.to_ascii_lowercase())
        });
        move |a: &Value| {
            if let Some(since) = since {
                let t = a["time"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok());
                let ms = t
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as u64);
                if ms < since {
                    return false;
                }
            }
            match (&rule, a["rule"].as_str()) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(Ok(g)), Some(r)) => g.is_match(r),
                (Some(Err(lower)), Some(r)) => r.to_ascii_lowercase() == *lower,
            }
        }
    }
}

/// The writer (the rules stage's sink thread owns it).
pub(crate) struct History {
    dir: PathBuf,
    limit: usize,
    max_bytes: u64,
    file: Option<File>,
    count: usize,
    bytes: u64,
}

impl History {
    /// Open (or start) the history in `dir`; `limit` 0 keeps nothing.
    pub(crate) fn open(dir: &Path, limit: usize, max_bytes: u64) -> std::io::Result<History> {
        let mut h = History {
            dir: dir.to_path_buf(),
            limit,
            max_bytes,
            file: None,
            count: 0,
            bytes: 0,
        };
        if limit > 0 {
            h.open_current()?;
        }
        Ok(h)
    }

    fn open_current(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(CURRENT);
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut text = Vec::new();
        f.read_to_end(&mut text)?;
        // Cut a torn last line.
        let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if keep < text.len() {
            f.set_len(keep as u64)?;
            f.seek(SeekFrom::End(0))?;
        }
        self.count = text[..keep].iter().filter(|b| **b == b'\n').count();
        self.bytes = keep as u64;
        self.file = Some(f);
        Ok(())
    }

    /// Append one alert.
    pub(crate) fn append(&mut self, alert: &Value) -> std::io::Result<()> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut line = serde_json::to_vec(alert).unwrap_or_default();
        line.push(b'\n');
        if self.count >= self.limit
            || (self.count > 0 && self.bytes + line.len() as u64 > self.max_bytes / 2)
        {
            self.rotate()?;
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => {
                self.open_current()?;
                self.file.as_mut().expect("just opened")
            }
        };
        if let Err(e) = f.write_all(&line) {
            self.file = None;
            return Err(e);
        }
        self.count += 1;
        self.bytes += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
        self.count = 0;
        self.bytes = 0;
        self.open_current()
    }

    /// Alerts kept now.
    pub(crate) fn read(&self, q: &Query) -> Vec<Value> {
        read(&self.dir, self.limit, q)
    }
}

/// The kept alerts in `dir` (oldest first): the last `limit`, filtered by `q`.
pub(crate) fn read(dir: &Path, limit: usize, q: &Query) -> Vec<Value> {
    let mut all = Vec::new();
    for name in [PREVIOUS, CURRENT] {
        let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
            continue;
        };
        all.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
        );
    }
    let skip = all.len().saturating_sub(limit.max(1));
    let matches = q.matcher();
    let mut out: Vec<Value> = all.into_iter().skip(skip).filter(|a| matches(a)).collect();
    if let Some(n) = q.limit {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(i: u64, rule: &str) -> Value {
        json!({"time": format!("2026-11-26T10:00:{:02}Z", i % 60), "rule": rule, "output": format!("n{i}")})
    }

    #[test]
    fn the_last_n_alerts_are_kept_across_two_files_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 10, 1 << 20).unwrap();
        for i in 0..25 {
            h.append(&alert(i, "A")).unwrap();
        }
        let all = h.read(&Query::default());
        assert_eq!(all.len(), 10);
        assert_eq!(all[0]["output"], "n15");
        assert_eq!(all[9]["output"], "n24");
        drop(h);
        // A torn line from a crash is cut; counting goes on from the file.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(CURRENT))
            .unwrap();
        f.write_all(b"{\"time\": \"2026-").unwrap();
        let mut h = History::open(dir.path(), 10, 1 << 20).unwrap();
        h.append(&alert(25, "B")).unwrap();
        let all = read(dir.path(), 10, &Query::default());
        assert_eq!(all.len(), 10);
        assert_eq!(all[9]["output"], "n25");
    }

    #[test]
    fn the_byte_bound_keeps_fewer_large_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 1000, 64 * 1024).unwrap();
        let big = json!({"rule": "A", "output": "x".repeat(4000)});
        for _ in 0..100 {
            h.append(&big).unwrap();
        }
        let on_disk: u64 = [CURRENT, PREVIOUS]
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).map_or(0, |m| m.len()))
            .sum();
        assert!(on_disk <= 64 * 1024, "{on_disk}");
        assert!(h.read(&Query::default()).len() >= 7);
    }

    #[test]
    fn queries_filter_by_time_rule_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), 100, 1 << 20).unwrap();
        for i in 0..10 {
            h.append(&alert(
                i,
                if i % 2 == 0 {
                    "Terminal shell"
                } else {
                    "Write below etc"
                },
            ))
            .unwrap();
        }
        let since = humantime::parse_rfc3339("2026-11-26T10:00:05Z").unwrap();
        let since_ms = since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let q = |since_ms, rule: Option<&str>, limit| Query {
            since_ms,
            rule: rule.map(str::to_string),
            limit,
        };
        assert_eq!(h.read(&q(Some(since_ms), None, None)).len(), 5);
        assert_eq!(h.read(&q(None, Some("terminal SHELL"), None)).len(), 5);
        assert_eq!(h.read(&q(None, Some("Write*"), None)).len(), 5);
        let last = h.read(&q(None, Some("Write*"), Some(2)));
        assert_eq!(
            last.iter().map(|a| a["output"].clone()).collect::<Vec<_>>(),
            [json!("n7"), json!("n9")]
        );
    }
}
