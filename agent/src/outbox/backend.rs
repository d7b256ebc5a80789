//! The outbox file as redb sees it: redb's own `FileBackend`, except that
//! growing the file allocates its disk blocks first and never goes past a
//! cap.
//!
//! Why: redb grows its file with `set_len`, which on Linux makes a sparse
//! tail; the blocks are claimed only when pages are written at commit. On a
//! full disk that write fails half-way through a commit, and (measured on a
//! 4 MiB tmpfs) even a delete-only transaction fails afterwards, so a full
//! disk would stop the outbox from draining too. Allocating on growth
//! (`posix_fallocate`) makes a full disk fail *at growth*, before anything
//! is written, and every page inside the file stays writable: deletes keep
//! working and freed pages are reused. The same hook enforces
//! `outbox.max_bytes` as a hard cap on the file.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use redb::StorageBackend;
use redb::backends::FileBackend;

/// Why the last growth was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    None = 0,
    /// Growing would pass `outbox.max_bytes`.
    Cap = 1,
    /// The filesystem has no room (ENOSPC, EDQUOT).
    DiskFull = 2,
}

/// Shared between the backend (inside redb) and the store, which reads why
/// a commit failed.
#[derive(Debug, Default)]
pub(crate) struct Growth {
    refusal: AtomicU8,
    cap: AtomicU64,
}

impl Growth {
    pub(crate) fn new(cap: u64) -> Arc<Growth> {
        Arc::new(Growth {
            refusal: AtomicU8::new(Refusal::None as u8),
            cap: AtomicU64::new(cap),
        })
    }

    /// Take the last refusal (and forget it).
    pub(crate) fn take_refusal(&self) -> Refusal {
        match self.refusal.swap(Refusal::None as u8, Ordering::AcqRel) {
            1 => Refusal::Cap,
            2 => Refusal::DiskFull,
            _ => Refusal::None,
        }
    }

    pub(crate) fn set_cap(&self, cap: u64) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    fn refuse(&self, why: Refusal) {
        self.refusal.store(why as u8, Ordering::Release);
    }
}

#[derive(Debug)]
pub(crate) struct CappedFile {
    inner: FileBackend,
    /// The same open file, for `posix_fallocate`.
    file: File,
    growth: Arc<Growth>,
}

impl CappedFile {
    pub(crate) fn new(file: File, growth: Arc<Growth>) -> Result<CappedFile, redb::DatabaseError> {
        let dup = file.try_clone()?;
        Ok(CappedFile {
            inner: FileBackend::new(file)?,
            file: dup,
            growth,
        })
    }
}

impl StorageBackend for CappedFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let current = self.inner.len()?;
        if len > current {
            if len > self.growth.cap.load(Ordering::Relaxed) {
                self.growth.refuse(Refusal::Cap);
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "the outbox file reached outbox.max_bytes",
                ));
            }
            let (offset, extra) = (to_off(current)?, to_off(len - current)?);
            if let Err(errno) = nix::fcntl::posix_fallocate(&self.file, offset, extra) {
                if matches!(errno, nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT) {
                    self.growth.refuse(Refusal::DiskFull);
                }
                // EOPNOTSUPP (a filesystem without fallocate) is not fatal:
                // set_len below still works, only without the early check.
                if errno != nix::errno::Errno::EOPNOTSUPP {
                    return Err(io::Error::from(errno));
                }
            }
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let r = self.inner.write(offset, data);
        if let Err(e) = &r
            && e.raw_os_error() == Some(libc::ENOSPC)
        {
            self.growth.refuse(Refusal::DiskFull);
        }
        r
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(s, e)
    }

    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }

    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(s, e)
    }

    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(s, e)
    }

    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(s, e)
    }

    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

fn to_off(n: u64) -> Result<libc::off_t, io::Error> {
    libc::off_t::try_from(n).map_err(|_| io::Error::other("file offset out of range"))
}
