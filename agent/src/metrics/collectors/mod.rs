//! The host collectors: which exist, their config names, and one
//! collection over the enabled ones with node_exporter's per-collector
//! `node_scrape_collector_duration_seconds` and
//! `node_scrape_collector_success`.
//!
//! Owns the state kept between collections (the watched processes, mounts
//! whose `statvfs` hung, the read buffer), all of it bounded. Collectors
//! read files and nothing else: no network (K3s health lives in `health`),
//! no channels, no async. A collector that fails yields no series and
//! `success 0`; the others are unaffected.

mod network;
mod pressure;
mod processes;
mod storage;
mod system;
mod thermal;

use std::time::Instant;

use super::family::{Kind, Snapshot};
use super::source::{CollectError, FileReader, Roots, SysConf};

pub(crate) use processes::ProcessTracker;
pub(crate) use storage::StatfsGuard;

/// Every collector, by the name `metrics.collectors` uses (node_exporter's
/// collector names where one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectorId {
    Cpu,
    Stat,
    Loadavg,
    Meminfo,
    Filefd,
    Time,
    Filesystem,
    Diskstats,
    Netdev,
    Conntrack,
    Ipvs,
    Pressure,
    ThermalZone,
    Hwmon,
    Processes,
    /// kubelet `/healthz` and API server `/readyz` (async; run by the stage).
    K3s,
    /// The agent's own stages and counters (read from the status board).
    Agent,
}

impl CollectorId {
    pub(crate) const ALL: [CollectorId; 17] = [
        CollectorId::Cpu,
        CollectorId::Stat,
        CollectorId::Loadavg,
        CollectorId::Meminfo,
        CollectorId::Filefd,
        CollectorId::Time,
        CollectorId::Filesystem,
        CollectorId::Diskstats,
        CollectorId::Netdev,
        CollectorId::Conntrack,
        CollectorId::Ipvs,
        CollectorId::Pressure,
        CollectorId::ThermalZone,
        CollectorId::Hwmon,
        CollectorId::Processes,
        CollectorId::K3s,
        CollectorId::Agent,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            CollectorId::Cpu => "cpu",
            CollectorId::Stat => "stat",
            CollectorId::Loadavg => "loadavg",
            CollectorId::Meminfo => "meminfo",
            CollectorId::Filefd => "filefd",
            CollectorId::Time => "time",
            CollectorId::Filesystem => "filesystem",
            CollectorId::Diskstats => "diskstats",
            CollectorId::Netdev => "netdev",
            CollectorId::Conntrack => "conntrack",
            CollectorId::Ipvs => "ipvs",
            CollectorId::Pressure => "pressure",
            CollectorId::ThermalZone => "thermal_zone",
            CollectorId::Hwmon => "hwmon",
            CollectorId::Processes => "processes",
            CollectorId::K3s => "k3s",
            CollectorId::Agent => "agent",
        }
    }

    #[cfg(test)]
    pub(crate) fn from_name(name: &str) -> Option<CollectorId> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The host collectors: plain file reads, run on a blocking thread.
    fn host_fn(self) -> Option<HostFn> {
        Some(match self {
            CollectorId::Cpu => system::cpu,
            CollectorId::Stat => system::stat,
            CollectorId::Loadavg => system::loadavg,
            CollectorId::Meminfo => system::meminfo,
            CollectorId::Filefd => system::filefd,
            CollectorId::Time => system::time,
            CollectorId::Filesystem => storage::filesystem,
            CollectorId::Diskstats => storage::diskstats,
            CollectorId::Netdev => network::netdev,
            CollectorId::Conntrack => network::conntrack,
            CollectorId::Ipvs => network::ipvs,
            CollectorId::Pressure => pressure::pressure,
            CollectorId::ThermalZone => thermal::thermal_zone,
            CollectorId::Hwmon => thermal::hwmon,
            CollectorId::Processes => processes::processes,
            CollectorId::K3s | CollectorId::Agent => return None,
        })
    }
}

/// All collector names, for config validation and help texts.
pub(crate) fn collector_names() -> Vec<&'static str> {
    CollectorId::ALL.iter().map(|c| c.name()).collect()
}

/// Which collectors `metrics.collectors` selects: empty means all;
/// `["cpu", "meminfo"]` means only those; `["-hwmon", "-ipvs"]` means all
/// but those. Names were validated with the config.
pub fn select(list: &[String]) -> Vec<CollectorId> {
    if list.is_empty() {
        return CollectorId::ALL.to_vec();
    }
    if list.iter().all(|n| n.starts_with('-')) {
        return CollectorId::ALL
            .into_iter()
            .filter(|c| !list.iter().any(|n| &n[1..] == c.name()))
            .collect();
    }
    CollectorId::ALL
        .into_iter()
        .filter(|c| list.iter().any(|n| n == c.name()))
        .collect()
}

type HostFn = fn(&mut Host, &mut Snapshot) -> Result<(), CollectError>;

/// How one collector did in one collection.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) collector: CollectorId,
    pub(crate) seconds: f64,
    pub(crate) error: Option<String>,
}

/// The state of the host collectors between collections.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) roots: Roots,
    reader: FileReader,
    sysconf: SysConf,
    processes: ProcessTracker,
    statfs: StatfsGuard,
}

impl Host {
    pub(crate) fn new(roots: Roots) -> Self {
        Self {
            roots,
            reader: FileReader::default(),
            sysconf: SysConf::get(),
            processes: ProcessTracker::default(),
            statfs: StatfsGuard::default(),
        }
    }

    /// Point the collectors at other roots (a config reload).
    pub(crate) fn set_roots(&mut self, roots: Roots) {
        if roots != self.roots {
            *self = Host::new(roots);
        }
    }

    /// Mount points whose `statvfs` has not returned.
    pub(crate) fn stuck_mounts(&self) -> usize {
        self.statfs.stuck()
    }

    /// Run the host collectors among `which` into `out`, each timed.
    pub(crate) fn collect(&mut self, which: &[CollectorId], out: &mut Snapshot) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(which.len());
        for &id in which {
            let Some(f) = id.host_fn() else { continue };
            let started = Instant::now();
            // A failing collector's partial output would be a lie about the
            // series it did not reach: collect into a scratch snapshot and
            // keep it only on success.
            let mut part = Snapshot::new();
            let result = f(self, &mut part);
            let error = match result {
                Ok(()) => {
                    out.append(part);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            outcomes.push(Outcome {
                collector: id,
                seconds: started.elapsed().as_secs_f64(),
                error,
            });
        }
        outcomes
    }
}

/// node_exporter's per-collector self-metrics.
pub(crate) fn push_outcomes(out: &mut Snapshot, outcomes: &[Outcome]) {
    let duration = out.family(
        "node_scrape_collector_duration_seconds",
        "node_exporter: Duration of a collector scrape.",
        Kind::Gauge,
        &["collector"],
    );
    for o in outcomes {
        duration.push(&[o.collector.name()], o.seconds);
    }
    let success = out.family(
        "node_scrape_collector_success",
        "node_exporter: Whether a collector succeeded.",
        Kind::Gauge,
        &["collector"],
    );
    for o in outcomes {
        success.push(
            &[o.collector.name()],
            f64::from(u8::from(o.error.is_none())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_by_inclusion_exclusion_or_default() {
        assert_eq!(select(&[]).len(), CollectorId::ALL.len());
        assert_eq!(
            select(&["cpu".into(), "meminfo".into()]),
            [CollectorId::Cpu, CollectorId::Meminfo]
        );
        let without = select(&["-hwmon".into(), "-k3s".into()]);
        assert_eq!(without.len(), CollectorId::ALL.len() - 2);
        assert!(!without.contains(&CollectorId::Hwmon));
    }

    #[test]
    fn every_collector_name_round_trips() {
        for c in CollectorId::ALL {
            assert_eq!(CollectorId::from_name(c.name()), Some(c));
        }
    }
}
