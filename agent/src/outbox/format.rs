//! The bytes of the outbox file (format 1) and of the payloads it holds.
//! Pure functions: encoding, decoding, the payload envelope, and the model
//! of what a record costs on disk. The layout itself is documented in the
//! module above (`outbox/mod.rs`).

use serde_json::{Map, Value};

use crate::report::{Class, Topic};

/// The file format this build writes (meta key `format`).
pub(crate) const FILE_FORMAT: u8 = 1;

/// The record value format this build writes and reads (first value byte).
pub(crate) const RECORD_VERSION: u8 = 1;

/// `schema` in every payload: the envelope (`node`, `seq`, `schema` at the
/// top level of the producer's JSON object). Bumped only if those three
/// change meaning.
pub(crate) const PAYLOAD_SCHEMA: u64 = 1;

/// Version byte + created (u64) + topic code.
const HEADER_LEN: usize = 1 + 8 + 1;

/// Bytes of a record's key: class (u8) + sequence number (u64).
pub(crate) const KEY_LEN: usize = 9;

/// The stable on-disk code of a topic. Never renumber.
pub(crate) fn topic_code(topic: Topic) -> u8 {
    match topic {
        Topic::Alerts => 0,
        Topic::Metrics => 1,
        Topic::Events => 2,
        Topic::ConfigResult => 3,
    }
}

pub(crate) fn topic_from_code(code: u8) -> Option<Topic> {
    Some(match code {
        0 => Topic::Alerts,
        1 => Topic::Metrics,
        2 => Topic::Events,
        3 => Topic::ConfigResult,
        _ => return None,
    })
}

/// A record value: version 1 header, then the payload.
pub(crate) fn encode_value(created_ms: u64, topic: Topic, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.push(RECORD_VERSION);
    v.extend_from_slice(&created_ms.to_be_bytes());
    v.push(topic_code(topic));
    v.extend_from_slice(payload);
    v
}

/// What a stored value turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    Record {
        created_ms: u64,
        topic: Topic,
        payload: &'a [u8],
    },
    /// Written by another version of the agent (or damaged): kept, never
    /// published, counted as unreadable; given up only by the budget.
    Unreadable { version: u8 },
}

pub(crate) fn decode_value(bytes: &[u8]) -> Decoded<'_> {
    let version = bytes.first().copied().unwrap_or(0);
    if version != RECORD_VERSION || bytes.len() < HEADER_LEN {
        return Decoded::Unreadable { version };
    }
    let created_ms = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    match topic_from_code(bytes[9]) {
        Some(topic) => Decoded::Record {
            created_ms,
            topic,
            payload: &bytes[HEADER_LEN..],
        },
        None => Decoded::Unreadable { version },
    }
}

/// The created time of a value, whatever it is (0 when unreadable): for
/// ages and time-to-live.
pub(crate) fn created_ms(bytes: &[u8]) -> u64 {
    match decode_value(bytes) {
        Decoded::Record { created_ms, .. } => created_ms,
        Decoded::Unreadable { .. } => 0,
    }
}

/// The producer's object as JSON, without the envelope keys (`node`,
/// `seq`, `schema`: the report contract forbids them, so any found are
/// dropped rather than published twice).
pub(crate) fn body(payload: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    for (k, v) in payload {
        if matches!(k.as_str(), "node" | "seq" | "schema") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, k).expect("writing to a Vec cannot fail");
        out.push(b':');
        serde_json::to_writer(&mut out, v).expect("writing to a Vec cannot fail");
    }
    out.push(b'}');
    out
}

/// Bytes the envelope adds to a body of a node id of `node_len` bytes, at
/// most (a 20-digit sequence number, an escaped id).
pub(crate) fn envelope_overhead(node_len: usize) -> usize {
    node_len * 2 + 48
}

/// The payload as published: `{"node":..,"seq":..,"schema":1, ..body}`.
/// The three envelope keys come first so a person reading `mosquitto_sub`
/// output sees them at once.
pub(crate) fn envelope(node: &str, seq: u64, body: &[u8]) -> Vec<u8> {
    let node = serde_json::to_string(node).expect("a string always serializes");
    let mut out = Vec::with_capacity(body.len() + node.len() + 48);
    out.extend_from_slice(b"{\"node\":");
    out.extend_from_slice(node.as_bytes());
    out.extend_from_slice(format!(",\"seq\":{seq},\"schema\":{PAYLOAD_SCHEMA}").as_bytes());
    if body.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&body[1..]);
    } else {
        out.push(b'}');
    }
    out
}

/// redb's page size (fixed in redb 4).
const PAGE: u64 = 4096;
/// Per-entry bookkeeping in a redb leaf (offsets and lengths), measured.
const ENTRY_OVERHEAD: u64 = 16;

/// What a record of `value_len` bytes costs in the file, modelled on redb's
/// B-tree leaves: entries that fit share a 4 KiB page (as many whole
/// entries as fit); a larger entry gets a page of the next power of two.
/// Measured against `WriteTransaction::stats()` for 150 B to 40 KB values,
/// the model is within 10 % of redb's allocated pages. The budget counts
/// this, not the bare payload size, because what fills a small eMMC is
/// pages, not bytes.
pub(crate) fn cost(value_len: usize) -> u64 {
    let entry = KEY_LEN as u64 + value_len as u64 + ENTRY_OVERHEAD;
    if entry <= PAGE / 2 {
        PAGE / (PAGE / entry)
    } else {
        entry.next_power_of_two().max(PAGE)
    }
}

/// The class of a stored key.
pub(crate) fn class_of(code: u8) -> Option<Class> {
    Class::from_index(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_round_trip_and_unknown_versions_are_unreadable() {
        let v = encode_value(1_700_000_000_123, Topic::Events, b"{\"a\":1}");
        assert_eq!(
            decode_value(&v),
            Decoded::Record {
                created_ms: 1_700_000_000_123,
                topic: Topic::Events,
                payload: b"{\"a\":1}"
            }
        );
        let mut future = v.clone();
        future[0] = 2;
        assert_eq!(decode_value(&future), Decoded::Unreadable { version: 2 });
        assert_eq!(decode_value(&[]), Decoded::Unreadable { version: 0 });
        assert_eq!(decode_value(&[1, 2]), Decoded::Unreadable { version: 1 });
        let mut bad_topic = v;
        bad_topic[9] = 200;
        assert_eq!(decode_value(&bad_topic), Decoded::Unreadable { version: 1 });
    }

    #[test]
    fn topic_codes_are_stable() {
        for (t, c) in [
            (Topic::Alerts, 0),
            (Topic::Metrics, 1),
            (Topic::Events, 2),
            (Topic::ConfigResult, 3),
        ] {
            assert_eq!(topic_code(t), c);
            assert_eq!(topic_from_code(c), Some(t));
        }
    }

    #[test]
    fn the_envelope_puts_node_seq_schema_first_and_keeps_the_producer_object() {
        let payload =
            json!({"rule": "r", "priority": "Critical", "seq": "evil", "output_fields": {"a": 1}});
        let bytes = envelope("n\"1", 42, &body(payload.as_object().unwrap()));
        assert!(bytes.len() <= body(payload.as_object().unwrap()).len() + envelope_overhead(4));
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with("{\"node\":\"n\\\"1\",\"seq\":42,\"schema\":1,\"rule\""),
            "{text}"
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["output_fields"]["a"], 1);
        let empty = envelope("n", 1, &body(&Map::new()));
        assert_eq!(empty, b"{\"node\":\"n\",\"seq\":1,\"schema\":1}");
    }

    #[test]
    fn cost_follows_redb_pages() {
        // 512 B values: 7 to a page.
        assert_eq!(cost(512), 4096 / 7);
        // 2 KiB values: one to a page.
        assert_eq!(cost(2048), 4096);
        // 40 KB values: a 64 KiB page.
        assert_eq!(cost(40_000), 65536);
        assert!(cost(10) >= 10);
    }
}
