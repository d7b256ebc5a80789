//! Task bundles kept past their container's end.
//!
//! [`super::container`] reads a container's `config.json` when it first
//! decodes one of its events. Under load the reader can be seconds behind
//! the kernel, and a short-lived container (a job, `kubectl run --rm`, an
//! attacker's one-shot privileged pod) may have exited and had its bundle
//! deleted by then: its events would carry no pod, image or `privileged`.
//! So a thread watches the runtime state directories with inotify and reads
//! every `config.json` as soon as the runtime has written it, keeping what
//! the lookup would have taken from it (names, image, mounts, privileged:
//! well under a KiB, not the file); the lookup falls back to that when the
//! file is gone. A copy is dropped [`KEEP_AFTER_END`] after its bundle
//! directory is deleted, and there are at most [`MAX_KEPT`] (oldest dropped
//! first). Only directories that exist at start are watched; a state
//! directory created later is still read directly, as before.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::event::Container;

/// Containers kept at most (live and recently ended).
const MAX_KEPT: usize = 1024;

/// How long a container is kept after its bundle directory was deleted:
/// longer than the reader is ever behind the kernel.
const KEEP_AFTER_END: Duration = Duration::from_secs(120);

/// How long the watcher sleeps in `poll` before it checks whether it should
/// stop (on drop).
const POLL_MS: i32 = 500;

/// A container as its bundle described it when the runtime wrote it.
#[derive(Clone)]
pub(crate) struct KeptBundle {
    pub(crate) container: Container,
    /// Its root as the host sees it (`root.path`).
    pub(crate) root: Option<String>,
    /// When its bundle directory was deleted.
    ended: Option<Instant>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<String, KeptBundle>,
    order: VecDeque<String>,
}

impl Kept {
    fn insert(&mut self, id: String, bundle: KeptBundle) {
        if self.by_id.insert(id.clone(), bundle).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    fn ended(&mut self, id: &str) {
        if let Some(k) = self.by_id.get_mut(id) {
            k.ended.get_or_insert_with(Instant::now);
        }
    }

    fn expire(&mut self, now: Instant) {
        let by_id = &mut self.by_id;
        self.order.retain(|id| {
            let keep = by_id.get(id).is_some_and(|k| {
                k.ended
                    .is_none_or(|at| now.duration_since(at) < KEEP_AFTER_END)
            });
            if !keep {
                by_id.remove(id);
            }
            keep
        });
    }
}

/// The watcher thread and what it kept; stops it when dropped.
pub(crate) struct BundleWatch {
    kept: Arc<Mutex<Kept>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BundleWatch {
    /// Watch `dirs` (those that exist). `None` when none does or inotify is
    /// unavailable: lookups then read bundles directly only.
    pub(crate) fn start(dirs: &[PathBuf], max_bytes: u64) -> Option<BundleWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let kept = Arc::new(Mutex::new(Kept::default()));
        let mut w = Watcher {
            inotify,
            watches: HashMap::new(),
            kept: kept.clone(),
            max_bytes,
        };
        for d in dirs {
            w.watch(d, 0);
        }
        if w.watches.is_empty() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ea-bundles".into())
            .spawn(move || w.run(&stopping))
            .ok()?;
        Some(BundleWatch {
            kept,
            stop,
            thread: Some(thread),
        })
    }

    /// Container `full_id` as its bundle described it, if the watcher saw
    /// one (and it did not end too long ago).
    pub(crate) fn get(&self, full_id: &str) -> Option<KeptBundle> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.by_id.get(full_id).cloned()
    }
}

impl Drop for BundleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Watcher {
    inotify: Inotify,
    /// Watched directory and its depth below its state directory: 0 the
    /// state directory, 1 a namespace or a task, 2 a task.
    watches: HashMap<WatchDescriptor, (PathBuf, u8)>,
    kept: Arc<Mutex<Kept>>,
    max_bytes: u64,
}

impl Watcher {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd: self.inotify.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on a descriptor this thread owns.
            let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
            if n > 0 {
                self.drain();
            }
            self.kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expire(Instant::now());
        }
    }

    /// Watch `dir` (depth as in [`Watcher::watches`]); then look at what
    /// it already holds, since entries made before the watch send nothing.
    fn watch(&mut self, dir: &Path, depth: u8) {
        let mask = AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_ONLYDIR;
        let Ok(wd) = self.inotify.add_watch(dir, mask) else {
            return;
        };
        self.watches.insert(wd, (dir.to_path_buf(), depth));
        if depth > 0 {
            self.keep(dir);
        }
        if depth < 2
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.watch(&e.path(), depth + 1);
                }
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(events) = self.inotify.read_events() {
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory is gone: a task's bundle was deleted.
                    if let Some((dir, _)) = self.watches.remove(&ev.wd)
                        && let Some(id) = dir.file_name().and_then(|n| n.to_str())
                    {
                        self.kept
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .ended(id);
                    }
                    continue;
                }
                let (Some((dir, depth)), Some(name)) = (self.watches.get(&ev.wd), ev.name) else {
                    continue;
                };
                let (dir, depth) = (dir.join(&name), *depth);
                if ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    if depth < 2 {
                        self.watch(&dir, depth + 1);
                    }
                } else if name == "config.json" && depth > 0 {
                    self.keep(dir.parent().unwrap_or(Path::new("/")));
                }
            }
        }
    }

    /// Copy `dir/config.json` if there is one (read as the lookup reads it).
    fn keep(&self, dir: &Path) {
        let Some(id) = dir.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let Ok(text) = super::confined::read_beneath(dir, "config.json", self.max_bytes) else {
            return;
        };
        let Some((container, root)) = super::container::from_bundle(id, None, dir, &text) else {
            return;
        };
        let bundle = KeptBundle {
            container,
            root,
            ended: None,
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(id.to_string(), bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(v) = f() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    const SPEC: &[u8] = br#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "annotations":{"io.kubernetes.cri.sandbox-name":"job-x","io.kubernetes.cri.image-name":"docker.io/library/busybox:1.36"},
        "process":{"capabilities":{"bounding":["CAP_SYS_ADMIN"]}}}"#;

    #[test]
    fn a_bundle_written_and_deleted_is_kept_for_its_container_until_it_expires() {
        let state = tempfile::tempdir().unwrap();
        let w = BundleWatch::start(&[state.path().to_path_buf()], 1 << 20).expect("inotify");
        // A namespace and a task made after the watch started, as
        // containerd does: directories first, then config.json.
        let task = state.path().join("k8s.io").join("abc123");
        std::fs::create_dir_all(&task).unwrap();
        std::fs::write(task.join("config.json"), SPEC).unwrap();
        let kept = wait_for(|| w.get("abc123")).expect("kept");
        assert_eq!(kept.container.id, "abc123");
        assert_eq!(kept.container.pod_name.as_deref(), Some("job-x"));
        assert_eq!(
            kept.container.image_repository.as_deref(),
            Some("docker.io/library/busybox")
        );
        assert!(kept.container.start_ts.is_some_and(|t| t > 0));
        assert_eq!(kept.root, Some(task.join("rootfs").display().to_string()));
        std::fs::remove_dir_all(state.path().join("k8s.io")).unwrap();
        let ended = wait_for(|| {
            let k = w.kept.lock().unwrap();
            k.by_id.get("abc123").and_then(|b| b.ended)
        })
        .expect("its end is noticed");
        assert!(w.get("abc123").is_some(), "kept past the bundle's deletion");
        let mut k = w.kept.lock().unwrap();
        k.expire(ended + KEEP_AFTER_END - Duration::from_secs(1));
        assert!(k.by_id.contains_key("abc123"));
        k.expire(ended + KEEP_AFTER_END);
        assert!(!k.by_id.contains_key("abc123"));
        assert!(k.order.is_empty());
    }

    #[test]
    fn bundles_present_at_start_are_kept_and_the_copies_are_bounded() {
        let state = tempfile::tempdir().unwrap();
        let old = state.path().join("moby").join("old1");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("config.json"), b"{}").unwrap();
        let w = BundleWatch::start(&[state.path().to_path_buf()], 1 << 20).expect("inotify");
        assert!(w.get("old1").is_some());
        for i in 0..MAX_KEPT + 10 {
            let t = state.path().join("moby").join(format!("t{i}"));
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("config.json"), b"{}").unwrap();
        }
        let last = format!("t{}", MAX_KEPT + 9);
        wait_for(|| w.get(&last)).expect("the newest is kept");
        assert!(w.get("old1").is_none(), "the oldest was dropped");
        let kept = w.kept.lock().unwrap();
        assert_eq!(kept.by_id.len(), MAX_KEPT);
        assert_eq!(kept.order.len(), MAX_KEPT);
    }

    #[test]
    fn no_existing_state_directory_means_no_watcher() {
        assert!(BundleWatch::start(&[PathBuf::from("/nonexistent/ea-state")], 1 << 20).is_none());
    }
}
