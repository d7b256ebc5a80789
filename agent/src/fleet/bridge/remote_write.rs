//! Prometheus remote-write 1.0: a node's metrics batch becomes time
//! series (protobuf `prometheus.WriteRequest`, snappy block-compressed).
//!
//! Owns the mapping from a batch (see `metrics::batch` for its format) to
//! series: the family name becomes `__name__`, the batch's labels stay, and
//! `node`, `fleet` and `group` (the node's groups in order, joined with
//! commas; absent without groups) are added. A batch label that collides
//! with one of those is kept as `exported_<name>`, as Prometheus does for
//! scraped labels. Every sample carries the batch's own `time_ms`, so a
//! backlog that drains after an outage lands at the time it was measured.
//! Pure: no I/O.

use serde_json::{Map, Value};

use crate::metrics::batch::decode_families;

/// The protobuf messages of `prometheus/prompb/{remote,types}.proto`,
/// only the fields remote-write 1.0 sends.
pub(crate) mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub(crate) timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub(crate) metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct TimeSeries {
        /// Sorted by name, `__name__` included.
        #[prost(message, repeated, tag = "1")]
        pub(crate) labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Label {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(string, tag = "2")]
        pub(crate) value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Sample {
        #[prost(double, tag = "1")]
        pub(crate) value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub(crate) timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct MetricMetadata {
        /// 0 unknown, 1 counter, 2 gauge (prompb `MetricType`).
        #[prost(int32, tag = "1")]
        pub(crate) r#type: i32,
        #[prost(string, tag = "2")]
        pub(crate) metric_family_name: String,
    }
}

/// Headers every remote-write 1.0 request carries.
pub(crate) const CONTENT_TYPE: &str = "application/x-protobuf";
pub(crate) const CONTENT_ENCODING: &str = "snappy";
pub(crate) const VERSION: &str = "0.1.0";

/// Labels the bridge adds; a batch label of the same name becomes `exported_<name>`.
const ADDED: [&str; 3] = ["fleet", "group", "node"];

/// One decoded batch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) time_ms: i64,
    pub(crate) series: Vec<proto::TimeSeries>,
    pub(crate) metadata: Vec<proto::MetricMetadata>,
}

/// Why a payload is not a batch this bridge can write (bad input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BatchError(pub(crate) String);

/// Decode a metrics record (the node's payload with `node`, `seq`,
/// `schema`) into series for `fleet`/`node`.
pub(crate) fn decode(
    payload: &Map<String, Value>,
    fleet: &str,
    node: &str,
) -> Result<Batch, BatchError> {
    let time_ms = payload
        .get("time_ms")
        .and_then(Value::as_i64)
        .filter(|t| *t > 0)
        .ok_or_else(|| BatchError("no time_ms".into()))?;
    let families = decode_families(payload).map_err(BatchError)?;
    let families = families
        .as_array()
        .ok_or_else(|| BatchError("families are not an array".into()))?;
    let group = payload
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut batch = Batch {
        time_ms,
        series: Vec::new(),
        metadata: Vec::with_capacity(families.len()),
    };
    for f in families {
        family(f, time_ms, [fleet, &group, node], &mut batch)?;
    }
    Ok(batch)
}

fn family(f: &Value, time_ms: i64, added: [&str; 3], batch: &mut Batch) -> Result<(), BatchError> {
    let bad = |what: &str| {
        BatchError(format!(
            "family {}: {what}",
            f.get("name").unwrap_or(&Value::Null)
        ))
    };
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| bad("no valid name"))?;
    let label_names: Vec<String> = f
        .get("labels")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no labels"))?
        .iter()
        .map(|l| {
            let l = l
                .as_str()
                .filter(|l| valid_name(l) && *l != "__name__")
                .ok_or_else(|| bad("bad label name"))?;
            Ok(if ADDED.contains(&l) {
                format!("exported_{l}")
            } else {
                l.to_string()
            })
        })
        .collect::<Result<_, BatchError>>()?;
    let kind = match f.get("type").and_then(Value::as_str) {
        Some("counter") => 1,
        Some("gauge") => 2,
        _ => 0,
    };
    batch.metadata.push(proto::MetricMetadata {
        r#type: kind,
        metric_family_name: name.to_string(),
    });
    let samples = f
        .get("samples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no samples"))?;
    for row in samples {
        let row = row
            .as_array()
            .filter(|r| r.len() == label_names.len() + 1)
            .ok_or_else(|| bad("a sample does not match its labels"))?;
        let value =
            number(&row[label_names.len()]).ok_or_else(|| bad("a sample value is not a number"))?;
        let mut labels = Vec::with_capacity(label_names.len() + 4);
        labels.push(label("__name__", name));
        for (n, v) in label_names.iter().zip(row) {
            let v = v
                .as_str()
                .ok_or_else(|| bad("a label value is not a string"))?;
            if !v.is_empty() {
                labels.push(label(n, v));
            }
        }
        for (n, v) in ADDED.iter().zip(added) {
            if !v.is_empty() {
                labels.push(label(n, v));
            }
        }
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        batch.series.push(proto::TimeSeries {
            labels,
            samples: vec![proto::Sample {
                value,
                timestamp: time_ms,
            }],
        });
    }
    Ok(())
}

fn label(name: &str, value: &str) -> proto::Label {
    proto::Label {
        name: name.to_string(),
        value: value.to_string(),
    }
}

/// Prometheus's metric and label name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`
/// (colons are for recording rules, harmless here).
fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// The request body for `batches`: one WriteRequest, snappy-compressed.
/// Metadata is sent once per family name.
pub(crate) fn encode(batches: &[&Batch]) -> Vec<u8> {
    use prost::Message as _;
    let mut req = proto::WriteRequest::default();
    let mut seen = std::collections::HashSet::new();
    for b in batches {
        req.timeseries.extend(b.series.iter().cloned());
        for m in &b.metadata {
            if seen.insert(m.metric_family_name.as_str()) {
                req.metadata.push(m.clone());
            }
        }
    }
    let raw = req.encode_to_vec();
    // Compressing into a Vec cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::batch::{Encoding, payload};
    use crate::metrics::family::{Kind, Snapshot};
    use prost::Message as _;

    fn batch_payload(groups: &[&str]) -> Map<String, Value> {
        let mut s = Snapshot::new();
        let f = s.family(
            "node_cpu_seconds_total",
            "x",
            Kind::Counter,
            &["cpu", "node"],
        );
        f.push(&["0", "inner"], 1.5);
        s.single("node_load1", "x", Kind::Gauge, f64::NAN);
        let mut p = payload(&s, 1_700_000_000_123, 30_000, Encoding::DeflateBase64);
        p.insert("node".into(), "n1".into());
        p.insert("seq".into(), 7.into());
        p.insert(
            "groups".into(),
            groups.iter().map(|g| Value::from(*g)).collect(),
        );
        p
    }

    fn labels(ts: &proto::TimeSeries) -> Vec<(String, String)> {
        ts.labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    #[test]
    fn a_batch_becomes_sorted_series_with_node_fleet_and_group_at_its_own_time() {
        let b = decode(&batch_payload(&["eu", "edge"]), "f1", "n1").unwrap();
        assert_eq!(b.series.len(), 2);
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(&b.series[0]),
            pairs(&[
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("exported_node", "inner"),
                ("fleet", "f1"),
                ("group", "eu,edge"),
                ("node", "n1"),
            ])
        );
        assert_eq!(b.series[0].samples[0].value, 1.5);
        assert_eq!(b.series[0].samples[0].timestamp, 1_700_000_000_123);
        assert!(b.series[1].samples[0].value.is_nan());
        assert_eq!(b.metadata[0].r#type, 1);
        let no_group = decode(&batch_payload(&[]), "f1", "n1").unwrap();
        assert!(
            !labels(&no_group.series[1])
                .iter()
                .any(|(n, _)| n == "group")
        );
    }

    #[test]
    fn the_body_is_snappy_protobuf_that_decodes_back() {
        let b = decode(&batch_payload(&[]), "f1", "n1").unwrap();
        let body = encode(&[&b, &b]);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::WriteRequest::decode(&raw[..]).unwrap();
        assert_eq!(req.timeseries.len(), 4);
        assert_eq!(req.metadata.len(), 2, "metadata once per family");
    }

    #[test]
    fn payloads_that_are_not_batches_are_refused_with_a_reason() {
        let mut p = batch_payload(&[]);
        p.insert("data".into(), "!!!".into());
        assert!(decode(&p, "f", "n").unwrap_err().0.contains("base64"));
        let mut p = batch_payload(&[]);
        p.insert("encoding".into(), "json".into());
        p.insert(
            "families".into(),
            serde_json::json!([{"name": "x y", "labels": [], "samples": [[1]]}]),
        );
        assert!(
            decode(&p, "f", "n")
                .unwrap_err()
                .0
                .contains("no valid name")
        );
        p.insert(
            "families".into(),
            serde_json::json!([{"name": "x", "labels": ["a"], "samples": [[1]]}]),
        );
        assert!(
            decode(&p, "f", "n")
                .unwrap_err()
                .0
                .contains("does not match")
        );
        p.remove("time_ms");
        assert!(decode(&p, "f", "n").unwrap_err().0.contains("time_ms"));
    }
}
