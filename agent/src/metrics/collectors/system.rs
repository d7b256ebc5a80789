//! CPU seconds, kernel counters, load, memory, file handles and the clock:
//! node_exporter's `cpu`, `stat`, `loadavg`, `meminfo`, `filefd` and `time`
//! collectors, with the same names, help texts and units.
//!
//! Reads /proc/stat, /proc/loadavg, /proc/meminfo and
//! /proc/sys/fs/file-nr. Never keeps state between collections.

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, parse_f64, parse_u64};

use super::Host;

/// The /proc/stat CPU columns that are node_exporter's `mode` label values,
/// in file order. Columns 9 and 10 (guest, guest_nice) are reported apart.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

pub(super) fn cpu(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("stat");
    let tck = host.sysconf.clk_tck;
    let text = host.reader.read(&path)?;
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        // "cpu" alone is the sum over all CPUs; node_exporter reports per CPU only.
        let Some(cpu) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
            continue;
        };
        let mut values = Vec::with_capacity(10);
        for f in fields {
            values.push(parse_u64(&path, f, name)? as f64 / tck);
        }
        if values.len() < CPU_MODES.len() {
            return Err(CollectError::parse(
                &path,
                format!("{name}: expected at least 8 columns, got {}", values.len()),
            ));
        }
        rows.push((cpu, values));
    }
    let seconds = out.family(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
        Kind::Counter,
        &["cpu", "mode"],
    );
    for (cpu, values) in &rows {
        for (mode, v) in CPU_MODES.iter().zip(values) {
            seconds.push(&[cpu, mode], *v);
        }
    }
    let guest = out.family(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
        Kind::Counter,
        &["cpu", "mode"],
    );
    for (cpu, values) in &rows {
        if values.len() >= 10 {
            guest.push(&[cpu, "user"], values[8]);
            guest.push(&[cpu, "nice"], values[9]);
        }
    }
    Ok(())
}

pub(super) fn stat(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("stat");
    let text = host.reader.read(&path)?;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(first)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (name, help, kind) = match key {
            "btime" => (
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                Kind::Gauge,
            ),
            "ctxt" => (
                "node_context_switches_total",
                "Total number of context switches.",
                Kind::Counter,
            ),
            "processes" => ("node_forks_total", "Total number of forks.", Kind::Counter),
            "intr" => (
                "node_intr_total",
                "Total number of interrupts serviced.",
                Kind::Counter,
            ),
            "procs_running" => (
                "node_procs_running",
                "Number of processes in runnable state.",
                Kind::Gauge,
            ),
            "procs_blocked" => (
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                Kind::Gauge,
            ),
            _ => continue,
        };
        let value = parse_u64(&path, first, key)? as f64;
        out.single(name, help, kind, value);
    }
    Ok(())
}

pub(super) fn loadavg(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("loadavg");
    let text = host.reader.read(&path)?;
    let mut fields = text.split_ascii_whitespace();
    for (name, help) in [
        ("node_load1", "1m load average."),
        ("node_load5", "5m load average."),
        ("node_load15", "15m load average."),
    ] {
        let field = fields
            .next()
            .ok_or_else(|| CollectError::parse(&path, "expected three load averages"))?;
        let value = parse_f64(&path, field, name)?;
        out.single(name, help, Kind::Gauge, value);
    }
    Ok(())
}

/// Every /proc/meminfo line, as node_exporter names it: `Active(anon)`
/// becomes `node_memory_Active_anon_bytes`; fields in kB become bytes;
/// unitless fields (`HugePages_Total`) keep their name and value.
pub(super) fn meminfo(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("meminfo");
    let text = host.reader.read(&path)?;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(number) = fields.next() else {
            continue;
        };
        let mut value = parse_u64(&path, number, key)? as f64;
        let key = key.replace('(', "_").replace(')', "");
        let field = if fields.next() == Some("kB") {
            value *= 1024.0;
            format!("{key}_bytes")
        } else {
            key
        };
        out.single(
            format!("node_memory_{field}"),
            format!("Memory information field {field}."),
            Kind::Gauge,
            value,
        );
    }
    Ok(())
}

pub(super) fn filefd(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("sys/fs/file-nr");
    let text = host.reader.read(&path)?;
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    if fields.len() != 3 {
        return Err(CollectError::parse(&path, "expected three numbers"));
    }
    let allocated = parse_u64(&path, fields[0], "allocated")? as f64;
    let maximum = parse_u64(&path, fields[2], "maximum")? as f64;
    out.single(
        "node_filefd_allocated",
        "File descriptor statistics: allocated.",
        Kind::Gauge,
        allocated,
    );
    out.single(
        "node_filefd_maximum",
        "File descriptor statistics: maximum.",
        Kind::Gauge,
        maximum,
    );
    Ok(())
}

/// `node_time_seconds`; with `node_boot_time_seconds` it gives the uptime
/// (`node_time_seconds - node_boot_time_seconds`, as dashboards compute it).
pub(super) fn time(_host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let now = crate::unix_time::since_epoch(std::time::SystemTime::now()).as_secs_f64();
    out.single(
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        Kind::Gauge,
        now,
    );
    Ok(())
}
