//! `edge-agent run`: take systemd's notify socket from the environment, load
//! the config, start logging, run the daemon. A bad config exits with
//! [`Exit::Config`] (78), which the unit's `RestartPreventExitStatus=` knows.

use std::path::Path;

use super::Exit;
use crate::config::AgentConfig;
use crate::daemon::Supervision;
use crate::systemd::Notifier;

/// Worker threads for the daemon's runtime. Edge nodes have 1-4 cores and the
/// agent must stay small; two workers keep the sensor and the uplink from
/// starving each other without claiming a big node's every core.
const MAX_WORKER_THREADS: usize = 2;

/// How long the exit waits for blocking tasks after the daemon has returned:
/// mostly the sensor detaching its probes (~3 s here, an RCU grace period
/// per probe). Together with the daemon's own 10 s this stays under the
/// unit's `TimeoutStopSec=20s`; past it the kernel detaches what is left as
/// the process exits.
const BLOCKING_TASKS_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

pub(crate) fn run(config_path: &Path) -> anyhow::Result<Exit> {
    // SAFETY: no other thread exists yet: the runtime is built below, and
    // nothing before this line spawns one.
    let notifier = unsafe { Notifier::from_env_and_unset() };
    let loaded = match AgentConfig::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let log = crate::logging::init(&loaded.config.log);
    crate::daemon::tune_allocator();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKER_THREADS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("edge-agent")
        .enable_all()
        .build()?;
    let result = runtime.block_on(crate::daemon::run(loaded, Supervision { notifier, log }));
    // Dropping a runtime waits for every blocking task; one stuck in a
    // syscall would hold the exit past systemd's TimeoutStopSec=. The daemon
    // has already stopped or aborted every stage, so do not wait long.
    runtime.shutdown_timeout(BLOCKING_TASKS_EXIT_WAIT);
    match result {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => {
            tracing::error!(error = %e, "edge-agent stopped on an error");
            Ok(Exit::Failure)
        }
    }
}
