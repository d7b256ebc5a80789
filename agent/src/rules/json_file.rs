//! `rules.json_file`: every alert as a JSON line, for local tools that
//! tail a file (Falco's `file_output`).
//!
//! Rotated by size (`json_file` -> `.1` -> `.2` ... -> `.<keep>`, the
//! oldest deleted) when the next line would take it past
//! `json_file_max_bytes`. Reopened on SIGHUP and when the path no longer
//! names the open file (moved away by logrotate). A failed open or write
//! (full disk, a removed directory) does not end the output: the file is
//! closed, lines wait in memory (up to [`MAX_WAITING_LINES`], the oldest
//! dropped and counted past that) and it is tried again with backoff.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::uplink::Backoff;

/// Lines kept while the file cannot be written: a few minutes of a busy
/// node's alerts; the outbox and the history keep them all anyway.
pub(crate) const MAX_WAITING_LINES: usize = 1000;

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub(crate) struct JsonFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    ino: u64,
    waiting: VecDeque<Vec<u8>>,
    retry_at: Option<Instant>,
    backoff: Backoff,
    pub(crate) errors: u64,
    pub(crate) lost: u64,
    pub(crate) rotations: u64,
    failing: bool,
}

impl JsonFile {
    pub(crate) fn new(path: &Path, max_bytes: u64, keep: u32) -> JsonFile {
        JsonFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: None,
            size: 0,
            ino: 0,
            waiting: VecDeque::new(),
            retry_at: None,
            backoff: Backoff::seeded(RETRY_FIRST, RETRY_MAX),
            errors: 0,
            lost: 0,
            rotations: 0,
            failing: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queue one line and write what can be written.
    pub(crate) fn write(&mut self, line: Vec<u8>) {
        if self.waiting.len() >= MAX_WAITING_LINES {
            self.waiting.pop_front();
            self.lost += 1;
        }
        self.waiting.push_back(line);
        self.flush();
    }

    /// Close; the next write opens the path again (SIGHUP, logrotate).
    pub(crate) fn reopen(&mut self) {
        self.file = None;
        self.retry_at = None;
        self.flush();
    }

    /// Reopen when the path no longer names the open file.
    pub(crate) fn check_moved(&mut self) {
        if self.file.is_none() {
            self.flush();
            return;
        }
        let moved = std::fs::metadata(&self.path).map_or(true, |m| m.ino() != self.ino);
        if moved {
            info!(path = %self.path.display(), "rules.json_file was moved or removed; reopening it");
            self.reopen();
        }
    }

    /// Write the waiting lines, unless a retry is not due yet.
    pub(crate) fn flush(&mut self) {
        if self.waiting.is_empty() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        while let Some(len) = self.waiting.front().map(|l| l.len() as u64) {
            let result = self.ensure_room(len).and_then(|()| {
                let line = self.waiting.front().expect("checked above");
                self.file
                    .as_mut()
                    .expect("opened by ensure_room")
                    .write_all(line)
            });
            match result {
                Ok(()) => {
                    self.size += len;
                    self.waiting.pop_front();
                }
                Err(e) => {
                    self.errors += 1;
                    self.file = None;
                    let delay = self.backoff.next_delay();
                    self.retry_at = Some(Instant::now() + delay);
                    if !self.failing {
                        warn!(path = %self.path.display(), error = %e, "cannot write rules.json_file; retrying with backoff (alerts still go to the outbox and the history)");
                    }
                    self.failing = true;
                    return;
                }
            }
        }
        if self.failing {
            info!(path = %self.path.display(), "rules.json_file is written again");
        }
        self.failing = false;
        self.retry_at = None;
        self.backoff.reset();
    }

    /// Open the file if needed, rotating first when `len` more bytes would
    /// pass the size limit.
    fn ensure_room(&mut self, len: u64) -> std::io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        if self.max_bytes > 0 && self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn open(&mut self) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let m = f.metadata()?;
        self.size = m.len();
        self.ino = m.ino();
        self.file = Some(f);
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.rotations += 1;
        self.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> usize {
        std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        let mut f = JsonFile::new(&path, 100, 2);
        for _ in 0..20 {
            f.write(b"0123456789012345678\n".to_vec());
        }
        assert_eq!(lines(&path), 5, "20-byte lines, 100 bytes a file");
        assert_eq!(lines(&dir.path().join("alerts.json.1")), 5);
        assert_eq!(lines(&dir.path().join("alerts.json.2")), 5);
        assert!(!dir.path().join("alerts.json.3").exists());
        assert_eq!(f.rotations, 3);
    }

    #[test]
    fn a_moved_file_is_reopened_and_a_failing_one_retried_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("alerts.json");
        let mut f = JsonFile::new(&path, 0, 1);
        f.write(b"a\n".to_vec());
        std::fs::rename(&path, sub.join("alerts.json.old")).unwrap();
        f.check_moved();
        f.write(b"b\n".to_vec());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");

        // The directory goes away: writes fail, lines wait.
        std::fs::remove_dir_all(&sub).unwrap();
        f.reopen();
        f.write(b"c\n".to_vec());
        assert_eq!(f.waiting(), 1);
        assert!(f.errors >= 1);
        std::fs::create_dir(&sub).unwrap();
        // The retry is due after the backoff (1 s at most the first time).
        std::thread::sleep(Duration::from_millis(1100));
        f.flush();
        assert_eq!(f.waiting(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");
        assert_eq!(f.lost, 0);
    }
}
