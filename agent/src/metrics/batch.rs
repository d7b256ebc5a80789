//! The metrics record the outbox carries to the fleet: one JSON object per
//! collection, schema-versioned, self-contained.
//!
//! # Format, `metrics_schema` 1
//! ```json
//! {"metrics_schema": 1, "time_ms": 1795676661123, "interval_ms": 30000,
//!  "series": 412, "encoding": "deflate+base64", "data": "<base64>"}
//! ```
//! `data` is the base64 (standard alphabet, padded) of the raw-deflate
//! (RFC 1951) compression of a JSON array of families:
//! ```json
//! [{"name": "node_cpu_seconds_total", "type": "counter", "labels": ["cpu","mode"],
//!   "samples": [["0","idle",695.31], ...]},
//!  {"name": "node_load1", "type": "gauge", "labels": [], "samples": [[0.53]]}]
//! ```
//! Each sample is its label values in `labels` order followed by the value
//! (a JSON number; NaN and infinities, which JSON cannot carry, are sent
//! as the strings `"NaN"`, `"+Inf"`, `"-Inf"`). With `"encoding": "json"`
//! the same array is inline under `"families"` instead of `data`.
//! Names, label names, units and types are exactly those of the
//! local Prometheus endpoint; HELP texts are left out (they are the same
//! for every node and every batch).
//!
//! Every batch stands alone: counters are cumulative, never deltas, so a
//! consumer computes rates between any two batches it has, and the outbox
//! may drop whole batches (downsampling during a long outage) without
//! corrupting anything: resolution is lost, not correctness. A consumer
//! that meets a `metrics_schema` it does not know must not guess.
//! The metrics stage adds `groups` (the node's `node.groups`, in order)
//! and the outbox adds `node`, `seq` and `schema` around this payload.

use std::io::Write as _;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::family::Snapshot;

/// Bumped when a consumer written for the old shape would misread the new.
pub(crate) const METRICS_SCHEMA: u64 = 1;

/// How a batch carries its families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Inline JSON under `families`: readable with `mosquitto_sub`, about
    /// five times larger on the wire.
    Json,
    /// Raw deflate, base64, under `data`.
    DeflateBase64,
}

impl Encoding {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::DeflateBase64 => "deflate+base64",
        }
    }
}

/// The families as the JSON array described above.
pub(crate) fn families_json(snapshot: &Snapshot) -> Value {
    let families: Vec<Value> = snapshot
        .families
        .iter()
        .filter(|f| !f.samples.is_empty())
        .map(|f| {
            let samples: Vec<Value> = f
                .samples
                .iter()
                .map(|s| {
                    let mut row: Vec<Value> =
                        s.labels.iter().map(|l| Value::from(l.as_str())).collect();
                    row.push(number(s.value));
                    Value::Array(row)
                })
                .collect();
            json!({
                "name": f.name,
                "type": f.kind.as_str(),
                "labels": f.label_names,
                "samples": samples,
            })
        })
        .collect();
    Value::Array(families)
}

fn number(v: f64) -> Value {
    if v.is_finite() {
        // Integral values print without ".0", which JSON consumers read
        // as integers and which is shorter.
        if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
            Value::from(v as i64)
        } else {
            Value::from(v)
        }
    } else if v.is_nan() {
        Value::from("NaN")
    } else if v > 0.0 {
        Value::from("+Inf")
    } else {
        Value::from("-Inf")
    }
}

/// The payload for [`crate::report::Report::metrics`].
pub fn payload(
    snapshot: &Snapshot,
    time_ms: u64,
    interval_ms: u64,
    encoding: Encoding,
) -> Map<String, Value> {
    let families = families_json(snapshot);
    let mut m = Map::new();
    m.insert("metrics_schema".into(), Value::from(METRICS_SCHEMA));
    m.insert("time_ms".into(), Value::from(time_ms));
    m.insert("interval_ms".into(), Value::from(interval_ms));
    m.insert("series".into(), Value::from(snapshot.series() as u64));
    m.insert("encoding".into(), Value::from(encoding.as_str()));
    match encoding {
        Encoding::Json => {
            m.insert("families".into(), families);
        }
        Encoding::DeflateBase64 => {
            let raw = serde_json::to_vec(&families).unwrap_or_default();
            m.insert("data".into(), Value::from(deflate_base64(&raw)));
        }
    }
    m
}

/// Raw deflate at the default level (6): on a metrics batch levels 7-9
/// gain under 2 % for twice the CPU.
pub(crate) fn deflate_base64(raw: &[u8]) -> String {
    let mut enc = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(raw);
    let compressed = enc.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(compressed)
}

/// Decode a payload back to its families array (consumers, tests).
pub(crate) fn decode_families(payload: &Map<String, Value>) -> Result<Value, String> {
    if payload.get("metrics_schema").and_then(Value::as_u64) != Some(METRICS_SCHEMA) {
        return Err(format!(
            "unknown metrics_schema {:?}",
            payload.get("metrics_schema")
        ));
    }
    match payload.get("encoding").and_then(Value::as_str) {
        Some("json") => payload
            .get("families")
            .cloned()
            .ok_or_else(|| "no families".into()),
        Some("deflate+base64") => {
            let data = payload
                .get("data")
                .and_then(Value::as_str)
                .ok_or("no data")?;
            let compressed = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("data is not base64: {e}"))?;
            let mut raw = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::DeflateDecoder::new(&compressed[..]),
                &mut raw,
            )
            .map_err(|e| format!("data is not deflate: {e}"))?;
            serde_json::from_slice(&raw).map_err(|e| format!("data is not JSON: {e}"))
        }
        other => Err(format!("unknown encoding {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::family::Kind;

    fn sample() -> Snapshot {
        let mut s = Snapshot::new();
        let f = s.family(
            "node_cpu_seconds_total",
            "Seconds.",
            Kind::Counter,
            &["cpu", "mode"],
        );
        f.push(&["0", "idle"], 695.31);
        f.push(&["0", "user"], 12.0);
        s.single("node_load1", "1m load average.", Kind::Gauge, f64::NAN);
        s
    }

    #[test]
    fn both_encodings_carry_the_same_families() {
        let s = sample();
        let plain = payload(&s, 1, 30_000, Encoding::Json);
        let packed = payload(&s, 1, 30_000, Encoding::DeflateBase64);
        assert_eq!(
            decode_families(&plain).unwrap(),
            decode_families(&packed).unwrap()
        );
        let fams = decode_families(&plain).unwrap();
        assert_eq!(fams[0]["samples"][0], json!(["0", "idle", 695.31]));
        assert_eq!(fams[0]["samples"][1], json!(["0", "user", 12]));
        assert_eq!(fams[1]["samples"][0], json!(["NaN"]));
        assert_eq!(plain["series"], 3);
    }

    #[test]
    fn an_unknown_schema_is_refused() {
        let mut p = payload(&sample(), 1, 30_000, Encoding::Json);
        p.insert("metrics_schema".into(), Value::from(99));
        assert!(decode_families(&p).unwrap_err().contains("99"));
    }
}
