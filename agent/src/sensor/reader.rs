//! A running sensor: the loaded kernel side, the ring-buffer consumer, and
//! the enricher, in the order they must start.
//!
//! Owns the start-up sequence (preflight, load, consumer, attach, seed) and
//! reading: [`Sensor::read`] waits on the ring buffer's fd with `AsyncFd`,
//! then decodes a bounded batch. Used by the daemon's stage and by
//! `edge-agent sensor watch` when no daemon runs. Never sends anything
//! anywhere; callers decide what decoded records become.

use std::path::Path;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::debug;

use super::SensorError;
use super::abi::{self, Counter};
use super::decode::{Decoded, Enricher};
use super::loader::{Kernel, ProbeReport, preflight};
use super::proctable::BootClock;
use crate::config::SensorConfig;

/// Records decoded per wakeup before the reader lets the rest of its task
/// run (status, reloads, shutdown): a quarter of a millisecond of work.
/// The batch's vector is kept for the agent's life and a decoded event is
/// close to a kilobyte, so this is also 0.23 MiB of resident memory.
pub(crate) const BATCH: usize = 256;

pub(crate) struct Sensor {
    kernel: Kernel,
    ring: AsyncFd<RingBuf<MapData>>,
    pub(crate) enricher: Enricher,
    pub(crate) probes: ProbeReport,
    /// Records that failed their length checks (a bug if ever nonzero).
    pub(crate) decode_errors: u64,
    /// Time from the start of [`Sensor::start`] to probes attached.
    pub(crate) startup: Duration,
    /// Processes found in `/proc` at start.
    pub(crate) seeded: usize,
    /// The last read stopped at [`BATCH`] with records left.
    backlog: bool,
}

/// Decode up to [`BATCH`] records; true when the ring is empty.
fn drain(
    ring: &mut RingBuf<MapData>,
    enricher: &mut Enricher,
    errors: &mut u64,
    out: &mut Vec<Decoded>,
) -> bool {
    for _ in 0..BATCH {
        let Some(item) = ring.next() else {
            return true;
        };
        match enricher.decode(&item) {
            Ok(d) => out.push(d),
            Err(e) => {
                *errors += 1;
                debug!(error = %e, "skipped a record");
            }
        }
    }
    false
}

impl Sensor {
    /// Check, load, start the consumer, attach, seed the process table.
    /// Blocking (program loading, `/proc`): call it from a blocking thread
    /// inside the runtime (the consumer registers with its reactor).
    pub(crate) fn start(config: &SensorConfig) -> Result<Sensor, SensorError> {
        let t0 = Instant::now();
        preflight()?;
        let t_pre = t0.elapsed();
        let (mut kernel, ring) = Kernel::load(config, std::process::id())?;
        let t_load = t0.elapsed();
        // The consumer exists before any probe fires: records produced while
        // the probes attach and the table is seeded wait in the ring buffer.
        // SAFETY: the RingBuf owns its map's fd for as long as it lives, and
        // the AsyncFd owns the RingBuf, so the registered fd stays open and
        // refers to the same map until the AsyncFd is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| SensorError::Ring(e.into_parts().1))?;
        let probes = kernel.attach()?;
        let startup = t0.elapsed();
        let mut enricher =
            Enricher::new(config, Path::new("/proc"), Path::new("/"), BootClock::now());
        let seeded = enricher.procs.seed();
        debug!(
            preflight_ms = t_pre.as_millis() as u64,
            load_ms = (t_load - t_pre).as_millis() as u64,
            attach_ms = (startup - t_load).as_millis() as u64,
            seed_ms = (t0.elapsed() - startup).as_millis() as u64,
            seeded,
            "sensor started"
        );
        Ok(Sensor {
            kernel,
            ring,
            enricher,
            probes,
            decode_errors: 0,
            startup,
            seeded,
            backlog: false,
        })
    }

    /// Wait for records, then decode up to [`BATCH`] of them into `out`.
    /// The kernel wakes the reader only once a batch has built up (or for a
    /// kill), so this also drains every [`abi::POLL_MS`] without a wakeup.
    pub(crate) async fn read(&mut self, out: &mut Vec<Decoded>) -> Result<(), SensorError> {
        if self.backlog {
            // The last batch left records behind: take the next one now,
            // after letting the rest of the task's work run.
            tokio::task::yield_now().await;
            self.backlog = !drain(
                self.ring.get_mut(),
                &mut self.enricher,
                &mut self.decode_errors,
                out,
            );
            return Ok(());
        }
        let poll = Duration::from_millis(abi::POLL_MS);
        match tokio::time::timeout(poll, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard.map_err(SensorError::Ring)?;
                let drained = drain(
                    guard.get_inner_mut(),
                    &mut self.enricher,
                    &mut self.decode_errors,
                    out,
                );
                if drained {
                    // Wait for the kernel's next wakeup. (tokio clears only
                    // the readiness this guard saw; a wakeup that raced us stays.)
                    guard.clear_ready();
                }
                self.backlog = !drained;
            }
            Err(_elapsed) => {
                self.backlog = !drain(
                    self.ring.get_mut(),
                    &mut self.enricher,
                    &mut self.decode_errors,
                    out,
                );
            }
        }
        Ok(())
    }

    pub(crate) fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    pub(crate) fn counter(&self, c: Counter) -> u64 {
        self.kernel.counter(c)
    }

    /// Apply a reloaded config's filters and deny list, in the kernel and
    /// in user space.
    pub(crate) fn apply(&mut self, config: &SensorConfig) -> Result<(), SensorError> {
        self.kernel.apply_filters(config)?;
        self.enricher.set_filters(config);
        Ok(())
    }

    /// Follow cgroups created or removed below `exclude_cgroups` entries,
    /// and `deny_open` and `deny_exec` paths created or replaced.
    pub(crate) fn refresh_cgroups(&mut self) -> Result<(), SensorError> {
        self.kernel.refresh_cgroups()?;
        self.kernel.refresh_deny_exec()?;
        self.kernel.refresh_deny_open()
    }

    /// cgroups whose processes the kernel does not watch.
    pub(crate) fn excluded_cgroups(&self) -> usize {
        self.kernel.excluded_cgroups()
    }
}
