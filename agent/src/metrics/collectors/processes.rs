//! The processes an edge node lives on: K3s, containerd, and the agent
//! itself. Resident memory, CPU seconds, threads, open file descriptors,
//! start time, and the restarts seen since the agent started.
//!
//! Finds K3s and containerd by their command name in /proc/PID/stat and
//! remembers each one's pid and start time, so a steady node costs one
//! small read per process per collection; /proc is scanned only while one
//! of them is missing. A new pid or start time for a process seen before is
//! a restart. Never signals or otherwise touches the processes it watches.

use std::path::Path;

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, FileReader, Roots, SysConf, list_dir};

use super::Host;

/// A process to watch: its label value and how to recognise it.
struct Role {
    label: &'static str,
    /// Command names (`/proc/PID/comm`, at most 15 bytes) that identify it;
    /// empty means "the agent itself" (`/proc/self`).
    comms: &'static [&'static str],
    /// Whether restarts can be seen from here. The agent cannot see its
    /// own: a restarted agent starts counting afresh.
    count_restarts: bool,
}

/// K3s names its main process after the subcommand (`k3s server` runs as
/// comm `k3s-server`); the containerd K3s embeds and a distribution's own
/// containerd both run as `containerd` (the shims are `containerd-shim`,
/// which does not match).
const ROLES: [Role; 3] = [
    Role {
        label: "k3s",
        comms: &["k3s-server", "k3s-agent", "k3s"],
        count_restarts: true,
    },
    Role {
        label: "containerd",
        comms: &["containerd"],
        count_restarts: true,
    },
    Role {
        label: "edge-agent",
        comms: &[],
        count_restarts: false,
    },
];

/// Which process a role was last seen as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    pid: u32,
    /// Start time in clock ticks since boot: with the pid, unique for the
    /// life of the machine.
    start_ticks: u64,
}

#[derive(Debug, Default, Clone)]
struct Watched {
    current: Option<Identity>,
    last_seen: Option<Identity>,
    restarts: u64,
}

/// What one /proc/PID/stat says.
struct ProcStat {
    comm: String,
    cpu_ticks: u64,
    threads: u64,
    start_ticks: u64,
    rss_pages: u64,
}

/// Per-role memory of the last collection. Bounded: one entry per role.
#[derive(Debug, Default)]
pub(crate) struct ProcessTracker {
    watched: [Watched; ROLES.len()],
    boot_time: Option<f64>,
}

pub(super) fn processes(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let Host {
        roots,
        reader,
        sysconf,
        processes: tracker,
        ..
    } = host;
    let boot_time = match tracker.boot_time {
        Some(b) => b,
        None => {
            let b = read_boot_time(roots, reader)?;
            tracker.boot_time = Some(b);
            b
        }
    };

    // Re-check the processes we know; scan /proc only for the missing ones.
    let mut stats: [Option<ProcStat>; ROLES.len()] = Default::default();
    let mut missing = false;
    for (i, role) in ROLES.iter().enumerate() {
        if role.comms.is_empty() {
            stats[i] = read_stat(roots, reader, "self");
            continue;
        }
        let still = tracker.watched[i].current.and_then(|id| {
            read_stat(roots, reader, &id.pid.to_string()).filter(|s| {
                s.start_ticks == id.start_ticks && role.comms.contains(&s.comm.as_str())
            })
        });
        if still.is_none() {
            tracker.watched[i].current = None;
            missing = true;
        }
        stats[i] = still;
    }
    if missing {
        scan(roots, reader, tracker, &mut stats)?;
    }

    let mut found: Vec<(usize, ProcStat, Option<u64>)> = Vec::new();
    for (i, stat) in stats.into_iter().enumerate() {
        let Some(stat) = stat else { continue };
        let fds = count_fds(
            roots,
            &pid_dir_name(ROLES[i].comms, tracker.watched[i].current),
        );
        found.push((i, stat, fds));
    }
    emit(out, tracker, &found, *sysconf, boot_time);
    Ok(())
}

fn pid_dir_name(comms: &[&str], id: Option<Identity>) -> String {
    match (comms.is_empty(), id) {
        (true, _) => "self".to_string(),
        (false, Some(id)) => id.pid.to_string(),
        (false, None) => String::new(),
    }
}

/// Walk /proc for the roles not found; for each, the oldest matching
/// process (the parent, when a daemon forks helpers of the same name).
fn scan(
    roots: &Roots,
    reader: &mut FileReader,
    tracker: &mut ProcessTracker,
    stats: &mut [Option<ProcStat>; ROLES.len()],
) -> Result<(), CollectError> {
    let mut best: [Option<(u32, ProcStat)>; ROLES.len()] = Default::default();
    for name in list_dir(&roots.procfs)? {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Some(stat) = read_stat(roots, reader, &name) else {
            continue;
        };
        for (i, role) in ROLES.iter().enumerate() {
            if stats[i].is_some() || !role.comms.contains(&stat.comm.as_str()) {
                continue;
            }
            if best[i]
                .as_ref()
                .is_none_or(|(_, b)| stat.start_ticks < b.start_ticks)
            {
                best[i] = Some((pid, stat));
                break;
            }
        }
    }
    for (i, candidate) in best.into_iter().enumerate() {
        let Some((pid, stat)) = candidate else {
            continue;
        };
        let id = Identity {
            pid,
            start_ticks: stat.start_ticks,
        };
        let w = &mut tracker.watched[i];
        if ROLES[i].count_restarts && w.last_seen.is_some_and(|last| last != id) {
            w.restarts += 1;
        }
        w.current = Some(id);
        w.last_seen = Some(id);
        stats[i] = Some(stat);
    }
    Ok(())
}

fn emit(
    out: &mut Snapshot,
    tracker: &ProcessTracker,
    found: &[(usize, ProcStat, Option<u64>)],
    sysconf: SysConf,
    boot_time: f64,
) {
    let up = out.family(
        "edge_agent_process_up",
        "Whether the watched process (k3s, containerd, edge-agent) is running.",
        Kind::Gauge,
        &["process"],
    );
    for (i, role) in ROLES.iter().enumerate() {
        let running = found.iter().any(|(j, ..)| *j == i);
        up.push(&[role.label], f64::from(u8::from(running)));
    }
    let restarts = out.family(
        "edge_agent_process_restarts_total",
        "Restarts of the watched process seen since the agent started (a new pid or start time).",
        Kind::Counter,
        &["process"],
    );
    for (i, role) in ROLES.iter().enumerate() {
        if role.count_restarts {
            restarts.push(&[role.label], tracker.watched[i].restarts as f64);
        }
    }
    let rows: [(&str, &str, Kind); 5] = [
        (
            "edge_agent_process_resident_memory_bytes",
            "Resident memory of the watched process in bytes.",
            Kind::Gauge,
        ),
        (
            "edge_agent_process_cpu_seconds_total",
            "User and system CPU time of the watched process in seconds.",
            Kind::Counter,
        ),
        (
            "edge_agent_process_threads",
            "Threads of the watched process.",
            Kind::Gauge,
        ),
        (
            "edge_agent_process_open_fds",
            "Open file descriptors of the watched process.",
            Kind::Gauge,
        ),
        (
            "edge_agent_process_start_time_seconds",
            "Start time of the watched process since the epoch in seconds.",
            Kind::Gauge,
        ),
    ];
    for (n, (name, help, kind)) in rows.into_iter().enumerate() {
        let family = out.family(name, help, kind, &["process"]);
        for (i, stat, fds) in found {
            let value = match n {
                0 => stat.rss_pages as f64 * sysconf.page_size,
                1 => stat.cpu_ticks as f64 / sysconf.clk_tck,
                2 => stat.threads as f64,
                3 => match fds {
                    Some(f) => *f as f64,
                    None => continue,
                },
                _ => boot_time + stat.start_ticks as f64 / sysconf.clk_tck,
            };
            family.push(&[ROLES[*i].label], value);
        }
    }
}

/// Parse /proc/<dir>/stat; `None` if the process is gone or the line is
/// malformed (a process exiting mid-read).
fn read_stat(roots: &Roots, reader: &mut FileReader, dir: &str) -> Option<ProcStat> {
    let text = reader.read(&roots.procfs.join(dir).join("stat")).ok()?;
    parse_stat(text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
    // it ends at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    // Indexes below are field numbers from proc(5) minus 3.
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        cpu_ticks: num(11)? + num(12)?,
        threads: num(17)?,
        start_ticks: num(19)?,
        rss_pages: num(21)?,
    })
}

/// Entries in /proc/<dir>/fd; `None` when not readable (another user's
/// process and the agent not root).
fn count_fds(roots: &Roots, dir: &str) -> Option<u64> {
    if dir.is_empty() {
        return None;
    }
    let entries = std::fs::read_dir(roots.procfs.join(dir).join("fd")).ok()?;
    Some(entries.count() as u64)
}

fn read_boot_time(roots: &Roots, reader: &mut FileReader) -> Result<f64, CollectError> {
    let path = roots.proc("stat");
    let text = reader.read(&path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|v| v as f64)
        .ok_or_else(|| CollectError::parse(Path::new(&path), "no btime line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 98765 123456789 4321 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "my (odd) proc");
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.rss_pages, 4321);
    }

    #[test]
    fn a_truncated_stat_line_is_not_a_process() {
        assert!(parse_stat("1234 (x) S 1 2").is_none());
    }
}
