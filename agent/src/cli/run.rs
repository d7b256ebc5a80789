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

pub fn run(config_path: &Path) -> anyhow::Result<Exit> {
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
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKER_THREADS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("edge-agent")
        .enable_all()
        .build()?;
    match runtime.block_on(crate::daemon::run(loaded, Supervision { notifier, log })) {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => {
            tracing::error!(error = %e, "edge-agent stopped on an error");
            Ok(Exit::Failure)
        }
    }
}
