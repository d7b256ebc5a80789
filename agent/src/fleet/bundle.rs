//! Config bundles: the wire format, signing, and opening (verification).
//!
//! Owns the format below and the checks that need nothing but the bundle,
//! the topic it came on and the trusted keys. Never touches disk or the
//! running config: whether a verified bundle is new enough, and whether
//! the config it makes is valid and healthy, is the receiver's business.
//!
//! # Envelope (what `fleet bundle --out` writes and `fleet publish` sends, byte for byte)
//! One JSON object, schema 1:
//! ```json
//! {"schema": 1, "key_id": "3f9c0a1b2c3d4e5f",
//!  "signature": "<base64: 64-byte Ed25519 signature>",
//!  "payload": "<base64: the payload bytes>"}
//! ```
//! The signature covers exactly the bytes `payload` decodes to: no
//! canonical JSON, nothing re-serialized. `key_id` names the signing key
//! (see `keys.rs`); it is a hint, the signature is what is checked. The
//! bundle's identity in results (`bundle_sha256`) is the SHA-256 of the
//! envelope as published (what `sha256sum bundle.json` prints).
//!
//! # Payload (JSON, schema 1; unknown fields are refused)
//! - `schema`: 1.
//! - `fleet`: the fleet id it is for; must equal the topic's fleet.
//! - `target`: `"fleet"`, `"group:NAME"` or `"node:ID"`; must equal the
//!   layer of the topic it arrives on, so a node's bundle cannot be
//!   replayed on another node or layer.
//! - `version`: an integer >= 1 that only ever grows per layer. A node
//!   applies a version only if it is above the last one it decided for
//!   that layer (an equal one is a quiet no-op, a lower one `stale`).
//! - `created_at`: RFC 3339 UTC time it was made; `expires_at`: optional
//!   RFC 3339 time after which nodes refuse it.
//! - `overlay`: TOML text in agent.toml's format, laid over the node's
//!   local file (only some keys are allowed: `overlay.rs`).
//! - `rules`: rule files by name (`{"50-fleet.yaml": "<YAML text>"}`);
//!   names are one path component ending in `.yaml` or `.yml`.
//!
//! # Versions of the format
//! Both `schema` numbers are 1. A node refuses a higher one ("made by a
//! newer edge-agent") with nothing changed; a change nodes of this version
//! could misread bumps the number.
//!
//! # Topics (lowest precedence first)
//! `edge/<fleet>/all/config`, `edge/<fleet>/group/<group>/config`,
//! `edge/<fleet>/<node>/config`; published retained, QoS 1, so a node that
//! was away gets exactly the latest bundle of each layer.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::keys::{KeyId, PublicKey, SIGNATURE_LEN, SigningKey};
use crate::config::Problem;

/// The envelope's and the payload's format version.
pub const SCHEMA: u64 = 1;

/// At most this many rule files in one bundle (a fleet's rule set is a
/// handful of files; more is a mistake or an attack).
pub(crate) const MAX_RULE_FILES: usize = 64;

/// A rule file name's longest length (one path component).
const MAX_RULE_NAME: usize = 100;

/// Which layer a bundle is for, in the CLI's and the payload's spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Fleet,
    Group(String),
    Node(String),
}

impl Target {
    /// The retained topic the bundle for this layer lives on.
    pub(crate) fn topic(&self, fleet: &str) -> String {
        match self {
            Target::Fleet => format!("edge/{fleet}/all/config"),
            Target::Group(g) => format!("edge/{fleet}/group/{g}/config"),
            Target::Node(n) => format!("edge/{fleet}/{n}/config"),
        }
    }

    /// The fleet and layer of a config topic (the inverse of
    /// [`Target::topic`]).
    pub(crate) fn from_topic(topic: &str) -> Option<(&str, Target)> {
        let rest = topic.strip_prefix("edge/")?.strip_suffix("/config")?;
        let (fleet, layer) = rest.split_once('/')?;
        let target = match layer.split_once('/') {
            None if layer == "all" => Target::Fleet,
            None if layer == "group" => return None,
            None => Target::Node(layer.to_string()),
            Some(("group", g)) if !g.is_empty() && !g.contains('/') => Target::Group(g.to_string()),
            Some(_) => return None,
        };
        (!fleet.is_empty() && !layer.is_empty()).then_some((fleet, target))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Fleet => f.write_str("fleet"),
            Target::Group(g) => write!(f, "group:{g}"),
            Target::Node(n) => write!(f, "node:{n}"),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        let check = |what: &str, name: &str| -> Result<String, String> {
            let mut problems = Vec::new();
            crate::config::check_topic_level(what, name, &mut problems);
            if let Some(p) = problems.first() {
                return Err(format!("target \"{s}\": {} {}", p.key, p.reason));
            }
            if what == "node id" && crate::config::RESERVED_NODE_IDS.contains(&name) {
                return Err(format!(
                    "target \"{s}\": \"{name}\" is reserved for fleet-wide topics and cannot be a node id"
                ));
            }
            Ok(name.to_string())
        };
        match s.split_once(':') {
            None if s == "fleet" => Ok(Target::Fleet),
            Some(("group", g)) => Ok(Target::Group(check("group", g)?)),
            Some(("node", n)) => Ok(Target::Node(check("node id", n)?)),
            _ => Err(format!(
                "target \"{s}\": expected fleet, group:NAME or node:ID"
            )),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The signed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Envelope {
    pub(crate) schema: u64,
    pub(crate) key_id: String,
    pub(crate) signature: String,
    pub(crate) payload: String,
}

/// What a bundle says (the signed part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub schema: u64,
    pub fleet: String,
    pub target: Target,
    pub version: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub overlay: String,
    #[serde(default)]
    pub rules: BTreeMap<String, String>,
}

impl Payload {
    /// When it expires, if it does (an unparsable time is refused by
    /// [`check_payload`] before anyone asks).
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        self.expires_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    }
}

/// Why a bundle is refused before its content is looked at. Each names
/// what to fix; [`Refusal::code`] is stable (logs, status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the bundle is {bytes} bytes, over fleet.max_bundle_bytes ({max})")]
    Oversized { bytes: usize, max: usize },
    #[error("not a bundle: {0}")]
    Malformed(String),
    #[error(
        "bundle schema {0} was made by a newer edge-agent (this one reads schema {SCHEMA}); upgrade the node's agent"
    )]
    Schema(u64),
    #[error(
        "the bundle is not signed (its envelope has no signature); make bundles with `edge-agent fleet bundle --key`"
    )]
    Unsigned,
    #[error("signed by key {0}, which is not in fleet.trusted_keys")]
    UntrustedKey(String),
    #[error(
        "bad signature: the payload was not signed by key {0} (altered in transit, or signed by another key)"
    )]
    BadSignature(String),
    #[error(
        "the bundle is for {claimed} but arrived on the topic of {topic} (a bundle only applies to the layer it was made for)"
    )]
    WrongTarget { claimed: String, topic: String },
    #[error("the bundle expired at {0}")]
    Expired(String),
    #[error("{}", render_problems(.0))]
    Content(Vec<Problem>),
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Refusal {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Refusal::Oversized { .. } => "oversized",
            Refusal::Malformed(_) => "malformed",
            Refusal::Schema(_) => "schema",
            Refusal::Unsigned => "unsigned",
            Refusal::UntrustedKey(_) => "untrusted_key",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::Expired(_) => "expired",
            Refusal::Content(_) => "invalid",
        }
    }

    /// The reasons, one per problem (for the result's `reasons`).
    pub(crate) fn reasons(&self) -> Vec<String> {
        match self {
            Refusal::Content(problems) => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// A bundle whose signature checked out against a trusted key, for the
/// layer it arrived on, not expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) payload: Payload,
    pub(crate) key_id: KeyId,
    /// SHA-256 of the envelope as received, lowercase hex.
    pub(crate) sha256: String,
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Sign `payload` into an envelope (the bytes `fleet bundle` writes).
pub fn seal(payload: &Payload, key: &SigningKey) -> Vec<u8> {
    let bytes = serde_json::to_vec(payload).expect("a payload serializes");
    seal_bytes(&bytes, key)
}

/// Sign exactly `payload` (any bytes) into an envelope.
pub(crate) fn seal_bytes(payload: &[u8], key: &SigningKey) -> Vec<u8> {
    let envelope = Envelope {
        schema: SCHEMA,
        key_id: key.public().id().to_string(),
        signature: BASE64.encode(key.sign(payload)),
        payload: BASE64.encode(payload),
    };
    let mut out = serde_json::to_vec_pretty(&envelope).expect("an envelope serializes");
    out.push(b'\n');
    out
}

/// Read an envelope and its payload without checking the signature (what
/// `fleet publish` needs to find the topic).
pub(crate) fn peek(bytes: &[u8]) -> Result<Payload, Refusal> {
    let envelope = envelope(bytes)?;
    let payload = decode(&envelope.payload, "payload")?;
    parse_payload(&payload)
}

/// Open a bundle that arrived on the topic of (`fleet`, `layer`): size,
/// envelope, key, signature, payload, target, in that order, so that junk
/// costs as little as possible. What passes is authentic and meant for
/// this layer; whether it may be accepted is [`accept`]'s question, asked
/// after the receiver has compared its version with the one in force (an
/// expired copy of the version in force is no news, not a refusal).
pub(crate) fn open(
    bytes: &[u8],
    fleet: &str,
    layer: &Target,
    trusted: &[PublicKey],
    max_bytes: usize,
) -> Result<Verified, Refusal> {
    if bytes.len() > max_bytes {
        return Err(Refusal::Oversized {
            bytes: bytes.len(),
            max: max_bytes,
        });
    }
    let envelope = envelope(bytes)?;
    let key_id: KeyId = envelope
        .key_id
        .parse()
        .map_err(|e| Refusal::Malformed(format!("key_id: {e}")))?;
    let key = trusted
        .iter()
        .find(|k| k.id() == key_id)
        .ok_or_else(|| Refusal::UntrustedKey(key_id.to_string()))?;
    let signature = decode(&envelope.signature, "signature")?;
    if signature.len() != SIGNATURE_LEN {
        return Err(Refusal::BadSignature(key_id.to_string()));
    }
    let payload_bytes = decode(&envelope.payload, "payload")?;
    if !key.verifies(&payload_bytes, &signature) {
        return Err(Refusal::BadSignature(key_id.to_string()));
    }
    let payload = parse_payload(&payload_bytes)?;
    if payload.fleet != fleet || payload.target != *layer {
        return Err(Refusal::WrongTarget {
            claimed: format!("{} of fleet {}", payload.target, payload.fleet),
            topic: format!("{layer} of fleet {fleet}"),
        });
    }
    Ok(Verified {
        payload,
        key_id,
        sha256: sha256_hex(bytes),
    })
}

/// Whether an authentic bundle may be accepted now: its payload's own
/// rules ([`check_payload`]) and, when `now` is given, its expiry. A bundle
/// the node already holds is checked without `now`: expiry bounds when a
/// bundle may be accepted, not how long it stays in force.
pub(crate) fn accept(v: &Verified, now: Option<SystemTime>) -> Result<(), Refusal> {
    let problems = check_payload(&v.payload);
    if !problems.is_empty() {
        return Err(Refusal::Content(problems));
    }
    if let (Some(expires), Some(now)) = (v.payload.expires(), now)
        && expires <= now
    {
        return Err(Refusal::Expired(
            v.payload.expires_at.clone().unwrap_or_default(),
        ));
    }
    Ok(())
}

fn envelope(bytes: &[u8]) -> Result<Envelope, Refusal> {
    // The schema first, so a newer envelope with fields this version does
    // not know says "newer" rather than "unknown field".
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Refusal::Malformed(format!("the envelope is not JSON: {e}")))?;
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(SCHEMA) => {}
        Some(n) if n > SCHEMA => return Err(Refusal::Schema(n)),
        _ => {
            return Err(Refusal::Malformed(
                "the envelope has no \"schema\": 1".into(),
            ));
        }
    }
    // An unsigned bundle says so, rather than "missing field".
    let signature = value.get("signature").and_then(serde_json::Value::as_str);
    if signature.is_none_or(str::is_empty) {
        return Err(Refusal::Unsigned);
    }
    serde_json::from_value(value).map_err(|e| Refusal::Malformed(format!("envelope: {e}")))
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, Refusal> {
    BASE64
        .decode(text)
        .map_err(|e| Refusal::Malformed(format!("{what} is not base64: {e}")))
}

fn parse_payload(bytes: &[u8]) -> Result<Payload, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Refusal::Malformed(format!("the payload is not JSON: {e}")))?;
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(SCHEMA) => {}
        Some(n) if n > SCHEMA => return Err(Refusal::Schema(n)),
        _ => {
            return Err(Refusal::Malformed(
                "the payload has no \"schema\": 1".into(),
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| Refusal::Malformed(format!("payload: {e}")))
}

/// What a payload must satisfy on its own: a version, times that parse,
/// rule file names that are one safe path component.
pub(crate) fn check_payload(p: &Payload) -> Vec<Problem> {
    let mut problems = Vec::new();
    if p.version == 0 {
        problems.push(Problem::new("version", "must be 1 or more"));
    }
    if humantime::parse_rfc3339_weak(&p.created_at).is_err() {
        problems.push(Problem::new(
            "created_at",
            format!("\"{}\" is not an RFC 3339 time", p.created_at),
        ));
    }
    if let Some(t) = &p.expires_at
        && humantime::parse_rfc3339_weak(t).is_err()
    {
        problems.push(Problem::new(
            "expires_at",
            format!("\"{t}\" is not an RFC 3339 time"),
        ));
    }
    if p.rules.len() > MAX_RULE_FILES {
        problems.push(Problem::new(
            "rules",
            format!(
                "{} rule files; a bundle carries at most {MAX_RULE_FILES}",
                p.rules.len()
            ),
        ));
    }
    for name in p.rules.keys() {
        if let Err(reason) = check_rule_name(name) {
            problems.push(Problem::new(format!("rules.\"{name}\""), reason));
        }
    }
    problems
}

/// A rule file name becomes a file under the state directory: one path
/// component of safe characters, ending in `.yaml` or `.yml`.
pub(crate) fn check_rule_name(name: &str) -> Result<(), String> {
    let safe = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if name.is_empty() || name.len() > MAX_RULE_NAME {
        return Err(format!(
            "a rule file name must have 1 to {MAX_RULE_NAME} characters"
        ));
    }
    if !safe || name.starts_with('.') {
        return Err(
            "a rule file name is one path component of letters, digits, '.', '-' and '_', not starting with '.'"
                .into(),
        );
    }
    if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
        return Err("a rule file name ends in .yaml or .yml".into());
    }
    Ok(())
}

/// RFC 3339 (UTC, seconds) for `t`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key() -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ops.key");
        super::super::keys::generate(&out).unwrap();
        let k = SigningKey::read(&out).unwrap();
        (dir, k)
    }

    fn payload(target: Target, version: u64) -> Payload {
        Payload {
            schema: SCHEMA,
            fleet: "f1".into(),
            target,
            version,
            created_at: rfc3339(SystemTime::now()),
            expires_at: None,
            overlay: "[metrics]\ninterval = \"10s\"\n".into(),
            rules: BTreeMap::new(),
        }
    }

    const MAX: usize = 1 << 20;

    #[test]
    fn a_sealed_bundle_opens_on_its_own_topic_with_its_key() {
        let (_d, k) = key();
        let p = payload(Target::Group("eu".into()), 3);
        let bytes = seal(&p, &k);
        let v = open(
            &bytes,
            "f1",
            &Target::Group("eu".into()),
            &[k.public()],
            MAX,
        )
        .unwrap();
        assert_eq!(v.payload, p);
        assert_eq!(v.key_id, k.public().id());
        assert_eq!(v.sha256, sha256_hex(&bytes));
    }

    #[test]
    fn a_bundle_replayed_on_another_node_or_layer_or_fleet_is_refused() {
        let (_d, k) = key();
        let bytes = seal(&payload(Target::Node("n1".into()), 1), &k);
        for (fleet, layer) in [
            ("f1", Target::Node("n2".into())),
            ("f1", Target::Fleet),
            ("f1", Target::Group("n1".into())),
            ("f2", Target::Node("n1".into())),
        ] {
            let e = open(&bytes, fleet, &layer, &[k.public()], MAX).unwrap_err();
            assert_eq!(e.code(), "wrong_target", "{fleet} {layer}: {e}");
        }
    }

    #[test]
    fn a_changed_payload_byte_breaks_the_signature() {
        let (_d, k) = key();
        let p = serde_json::to_vec(&payload(Target::Fleet, 1)).unwrap();
        let mut env: Envelope = serde_json::from_slice(&seal_bytes(&p, &k)).unwrap();
        let mut altered = p.clone();
        let i = altered.iter().position(|b| *b == b'1').unwrap();
        altered[i] = b'2';
        env.payload = BASE64.encode(&altered);
        let bytes = serde_json::to_vec(&env).unwrap();
        let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "bad_signature", "{e}");
    }

    #[test]
    fn a_bundle_without_a_signature_is_refused_as_unsigned() {
        let (_d, k) = key();
        let good: serde_json::Value =
            serde_json::from_slice(&seal(&payload(Target::Fleet, 1), &k)).unwrap();
        for change in ["remove", "empty"] {
            let mut env = good.clone();
            let obj = env.as_object_mut().unwrap();
            if change == "remove" {
                obj.remove("signature");
            } else {
                obj.insert("signature".into(), "".into());
            }
            let bytes = serde_json::to_vec(&env).unwrap();
            let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
            assert_eq!(e.code(), "unsigned", "{change}: {e}");
        }
    }

    #[test]
    fn a_bundle_signed_by_another_key_is_refused_naming_the_key() {
        let (_d, k) = key();
        let (_d2, other) = key();
        let bytes = seal(&payload(Target::Fleet, 1), &other);
        let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "untrusted_key");
        assert!(
            e.to_string().contains(&other.public().id().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_signature_from_a_trusted_key_id_but_another_key_is_refused() {
        let (_d, k) = key();
        let (_d2, other) = key();
        let p = serde_json::to_vec(&payload(Target::Fleet, 1)).unwrap();
        let mut env: Envelope = serde_json::from_slice(&seal_bytes(&p, &other)).unwrap();
        env.key_id = k.public().id().to_string();
        let bytes = serde_json::to_vec(&env).unwrap();
        let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "bad_signature");
    }

    #[test]
    fn oversized_expired_malformed_and_newer_bundles_are_refused() {
        let (_d, k) = key();
        let bytes = seal(&payload(Target::Fleet, 1), &k);
        let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], 10).unwrap_err();
        assert_eq!(e.code(), "oversized");

        let mut p = payload(Target::Fleet, 1);
        p.expires_at = Some(rfc3339(SystemTime::now() - Duration::from_secs(60)));
        let v = open(&seal(&p, &k), "f1", &Target::Fleet, &[k.public()], MAX).unwrap();
        assert!(
            accept(&v, None).is_ok(),
            "a held bundle outlives its expiry"
        );
        let e = accept(&v, Some(SystemTime::now())).unwrap_err();
        assert_eq!(e.code(), "expired");

        let e = open(b"{not json", "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "malformed");

        let newer = br#"{"schema": 2, "something": "else"}"#;
        let e = open(newer, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "schema");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn an_unknown_payload_field_is_refused() {
        let (_d, k) = key();
        let mut v = serde_json::to_value(payload(Target::Fleet, 1)).unwrap();
        v["surprise"] = serde_json::json!(1);
        let bytes = seal_bytes(&serde_json::to_vec(&v).unwrap(), &k);
        let e = open(&bytes, "f1", &Target::Fleet, &[k.public()], MAX).unwrap_err();
        assert_eq!(e.code(), "malformed");
        assert!(e.to_string().contains("surprise"), "{e}");
    }

    #[test]
    fn rule_file_names_cannot_leave_their_directory() {
        for bad in [
            "../x.yaml",
            "a/b.yaml",
            "/etc/x.yaml",
            ".hidden.yaml",
            "x.txt",
            "",
            "..",
            "a\\b.yaml",
            "x .yaml",
        ] {
            assert!(check_rule_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["50-fleet.yaml", "x.yml", "A_b.c.yaml"] {
            assert!(check_rule_name(good).is_ok(), "{good:?} refused");
        }
        let (_d, k) = key();
        let mut p = payload(Target::Fleet, 1);
        p.rules
            .insert("../../etc/passwd.yaml".into(), "- list: x\n".into());
        let v = open(&seal(&p, &k), "f1", &Target::Fleet, &[k.public()], MAX).unwrap();
        let e = accept(&v, Some(SystemTime::now())).unwrap_err();
        assert_eq!(e.code(), "invalid");
        assert!(e.to_string().contains("passwd"), "{e}");
    }

    #[test]
    fn targets_and_topics_map_both_ways() {
        for (t, topic) in [
            (Target::Fleet, "edge/f1/all/config"),
            (Target::Group("eu".into()), "edge/f1/group/eu/config"),
            (Target::Node("n1".into()), "edge/f1/n1/config"),
        ] {
            assert_eq!(t.topic("f1"), topic);
            assert_eq!(Target::from_topic(topic), Some(("f1", t.clone())));
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        assert_eq!(Target::from_topic("edge/f1/n1/config/result"), None);
        assert_eq!(Target::from_topic("edge/f1/group/config"), None);
        assert!("node:all".parse::<Target>().is_err());
        assert!("node:group".parse::<Target>().is_err());
        assert!("group:a/b".parse::<Target>().is_err());
        assert!("fleets".parse::<Target>().is_err());
    }
}
