//! Open file descriptors: how many the process may hold, and how many of
//! them the local servers (control socket, metrics endpoint) may give to
//! clients. Owns nothing at run time; the daemon asks once at start.
//!
//! systemd's default soft limit is 1,024 descriptors. The agent's own work
//! needs a few hundred of them at peak (below), so without a reserve a
//! local client holding idle connections could starve the collectors, the
//! outbox and rule reloads (measured: 1,100 idle control connections made
//! every collector fail with EMFILE). The unit sets `LimitNOFILE=`; the
//! agent also raises its soft limit to the hard one itself and caps the
//! servers so that [`RESERVE`] descriptors always stay free.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for the agent's own work: the eBPF sensor holds about
/// 200 (a link per tracepoint, its maps and programs), the metrics
/// collectors open a few /proc and /sys files at a time, redb one, the
/// uplink a socket and its certificate files, rule reloads one file at a
/// time, the bootstrap a few; twice that, for what grows (more probes,
/// more collectors).
pub const RESERVE: u64 = 512;

/// Raise the soft limit on open files to the hard limit (always allowed)
/// and return the soft limit in force.
pub(crate) fn raise_soft_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// Descriptors the local servers may spend on client connections, all
/// together, with a soft limit of `soft`.
pub(crate) fn connection_budget(soft: u64) -> usize {
    soft.saturating_sub(RESERVE) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_out_of_the_connection_budget() {
        assert_eq!(connection_budget(1024), 512);
        assert_eq!(connection_budget(100), 0);
        assert!(raise_soft_limit() >= 1);
    }
}
