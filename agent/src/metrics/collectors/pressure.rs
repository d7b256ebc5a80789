//! Pressure stall information (PSI): node_exporter's `pressure` collector.
//!
//! Reads /proc/pressure/{cpu,io,memory,irq}. A kernel built without PSI has
//! no such directory, and one booted with `psi=0` refuses the reads with
//! EOPNOTSUPP: both mean "no pressure series", not an error.

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, parse_u64};

use super::Host;

/// (file, line, metric, help). `some` is time at least one task stalled,
/// `full` time all non-idle tasks stalled at once.
const PSI: [(&str, &str, &str, &str); 7] = [
    (
        "cpu",
        "some",
        "node_pressure_cpu_waiting_seconds_total",
        "Total time in seconds that processes have waited for CPU time",
    ),
    (
        "cpu",
        "full",
        "node_pressure_cpu_stalled_seconds_total",
        "Total time in seconds no process could make progress due to CPU congestion",
    ),
    (
        "io",
        "some",
        "node_pressure_io_waiting_seconds_total",
        "Total time in seconds that processes have waited due to IO congestion",
    ),
    (
        "io",
        "full",
        "node_pressure_io_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IO congestion",
    ),
    (
        "memory",
        "some",
        "node_pressure_memory_waiting_seconds_total",
        "Total time in seconds that processes have waited for memory",
    ),
    (
        "memory",
        "full",
        "node_pressure_memory_stalled_seconds_total",
        "Total time in seconds no process could make progress due to memory congestion",
    ),
    (
        "irq",
        "full",
        "node_pressure_irq_stalled_seconds_total",
        "Total time in seconds no process could make progress due to IRQ congestion",
    ),
];

pub(super) fn pressure(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let mut current: Option<(&str, String)> = None;
    for (resource, kind, name, help) in PSI {
        if current.as_ref().map(|(r, _)| *r) != Some(resource) {
            let path = host.roots.proc(&format!("pressure/{resource}"));
            let text = host.reader.read_optional(&path)?.map(str::to_string);
            current = Some((resource, text.unwrap_or_default()));
        }
        let Some((_, text)) = &current else { continue };
        let Some(line) = text
            .lines()
            .find(|l| l.split_ascii_whitespace().next() == Some(kind))
        else {
            continue;
        };
        let Some(total) = line
            .split_ascii_whitespace()
            .find_map(|f| f.strip_prefix("total="))
        else {
            continue;
        };
        let path = host.roots.proc(&format!("pressure/{resource}"));
        let micros = parse_u64(&path, total, kind)?;
        out.single(name, help, Kind::Counter, micros as f64 / 1e6);
    }
    Ok(())
}
