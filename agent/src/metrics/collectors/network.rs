//! Network interfaces, connection tracking and IPVS: node_exporter's
//! `netdev`, `conntrack` and `ipvs` collectors, with the same names.
//!
//! Reads /proc/net/dev, /proc/sys/net/netfilter and /proc/net/ip_vs_stats.
//! Interfaces come and go (pods, USB modems, VPNs): each collection reports
//! exactly the interfaces the kernel lists at that moment. conntrack and
//! IPVS are absent (no series, no error) when their modules are not loaded.

use crate::metrics::family::{Kind, Snapshot};
use crate::metrics::source::{CollectError, parse_u64};

use super::Host;

/// /proc/net/dev's columns after the interface name, in file order.
const NETDEV_FIELDS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

pub(super) fn netdev(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("net/dev");
    let text = host.reader.read(&path)?;
    let mut rows: Vec<(&str, Vec<u64>)> = Vec::new();
    // Two header lines, then "  name: 16 numbers".
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let values = rest
            .split_ascii_whitespace()
            .map(|v| parse_u64(&path, v, name))
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() < NETDEV_FIELDS.len() {
            return Err(CollectError::parse(
                &path,
                format!("{name}: expected 16 counters, got {}", values.len()),
            ));
        }
        rows.push((name, values));
    }
    for (i, field) in NETDEV_FIELDS.iter().enumerate() {
        let family = out.family(
            format!("node_network_{field}_total"),
            format!("Network device statistic {field}."),
            Kind::Counter,
            &["device"],
        );
        for (device, values) in &rows {
            family.push(&[device], values[i] as f64);
        }
    }
    Ok(())
}

pub(super) fn conntrack(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    for (file, name, help) in [
        (
            "sys/net/netfilter/nf_conntrack_count",
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
        ),
        (
            "sys/net/netfilter/nf_conntrack_max",
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
        ),
    ] {
        let path = host.roots.proc(file);
        let Some(text) = host.reader.read_optional(&path)? else {
            continue;
        };
        let value = parse_u64(&path, text.trim(), name)? as f64;
        out.single(name, help, Kind::Gauge, value);
    }
    Ok(())
}

/// IPVS totals since the module loaded (kube-proxy in IPVS mode). The
/// third line of /proc/net/ip_vs_stats holds five hexadecimal counters.
pub(super) fn ipvs(host: &mut Host, out: &mut Snapshot) -> Result<(), CollectError> {
    let path = host.roots.proc("net/ip_vs_stats");
    let Some(text) = host.reader.read_optional(&path)? else {
        return Ok(());
    };
    let line = text
        .lines()
        .nth(2)
        .ok_or_else(|| CollectError::parse(&path, "expected a third line with the totals"))?;
    let values = line
        .split_ascii_whitespace()
        .map(|v| {
            u64::from_str_radix(v, 16).map_err(|_| {
                CollectError::parse(&path, format!("expected a hexadecimal counter, got {v:?}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if values.len() != 5 {
        return Err(CollectError::parse(
            &path,
            format!(
                "expected 5 counters on the third line, got {}",
                values.len()
            ),
        ));
    }
    for ((name, help), v) in [
        (
            "node_ipvs_connections_total",
            "The total number of connections made.",
        ),
        (
            "node_ipvs_incoming_packets_total",
            "The total number of incoming packets.",
        ),
        (
            "node_ipvs_outgoing_packets_total",
            "The total number of outgoing packets.",
        ),
        (
            "node_ipvs_incoming_bytes_total",
            "The total amount of incoming data.",
        ),
        (
            "node_ipvs_outgoing_bytes_total",
            "The total amount of outgoing data.",
        ),
    ]
    .into_iter()
    .zip(values)
    {
        out.single(name, help, Kind::Counter, v as f64);
    }
    Ok(())
}
