//! `[bridge]`: the operator-side consumer `edge-agent fleet bridge` (never
//! read on a node). It lives in `ops.toml`, a file in agent.toml's format
//! whose `[node] fleet` names the fleet and whose `[uplink]` holds the
//! operator's broker connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{ByteSize, HumanDuration, Problem, check_topic_level, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BridgeConfig {
    /// MQTT shared-subscription group: bridges with the same group split
    /// the fleet's messages between them.
    pub(crate) share_group: String,
    /// MQTT client id (the persistent session). Empty: `<fleet>-bridge-<hostname>`.
    pub(crate) client_id: String,
    /// Prometheus remote-write endpoint. Empty: metrics are not consumed.
    pub(crate) remote_write_url: String,
    /// Extra HTTP headers on every remote-write request (e.g. `X-Scope-OrgID`).
    pub(crate) remote_write_headers: BTreeMap<String, String>,
    /// URLs that get every alert (Falco's JSON) by HTTP POST. Empty: alerts
    /// are not consumed.
    pub(crate) alert_webhooks: Vec<String>,
    /// URLs that get every node event (JSON) by HTTP POST. Empty: events
    /// are not consumed.
    pub(crate) event_webhooks: Vec<String>,
    /// PEM CA bundle trusted for https remote-write and webhook URLs.
    pub(crate) ca_file: PathBuf,
    /// How long a delivered (node, seq) is remembered to refuse duplicates.
    pub(crate) dedup_window: HumanDuration,
    /// A write that keeps failing for this long is given up (counted).
    pub(crate) give_up_after: HumanDuration,
    /// Deadline of one HTTP request.
    pub(crate) request_timeout: HumanDuration,
    /// Messages larger than this are refused as bad input.
    pub(crate) max_message_bytes: ByteSize,
    /// The bridge's own `/metrics` and `/status`. Empty: off.
    pub(crate) listen: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            share_group: "edge-bridge".into(),
            client_id: String::new(),
            remote_write_url: String::new(),
            remote_write_headers: BTreeMap::new(),
            alert_webhooks: Vec::new(),
            event_webhooks: Vec::new(),
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            dedup_window: HumanDuration::from_secs(24 * 3600),
            give_up_after: HumanDuration::from_secs(6 * 3600),
            request_timeout: HumanDuration::from_secs(10),
            max_message_bytes: ByteSize(2 * 1024 * 1024),
            listen: "127.0.0.1:9102".into(),
        }
    }
}

impl BridgeConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.ca_file);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        check_topic_level("bridge.share_group", &self.share_group, problems);
        if !self.client_id.is_empty() {
            check_topic_level("bridge.client_id", &self.client_id, problems);
        }
        if !self.remote_write_url.is_empty() {
            check_http_url("bridge.remote_write_url", &self.remote_write_url, problems);
        }
        for (i, u) in self.alert_webhooks.iter().enumerate() {
            check_http_url(&format!("bridge.alert_webhooks[{i}]"), u, problems);
        }
        for (i, u) in self.event_webhooks.iter().enumerate() {
            check_http_url(&format!("bridge.event_webhooks[{i}]"), u, problems);
        }
        for name in self.remote_write_headers.keys() {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(Problem::new(
                    format!("bridge.remote_write_headers.{name}"),
                    "is not a valid HTTP header name",
                ));
            }
        }
        if self.dedup_window.get().as_secs() < 60 {
            problems.push(Problem::new(
                "bridge.dedup_window",
                "must be at least \"1m\"",
            ));
        }
        if self.give_up_after.get().as_secs() < 1 {
            problems.push(Problem::new(
                "bridge.give_up_after",
                "must be at least \"1s\"",
            ));
        }
        if self.request_timeout.get().as_millis() < 100 {
            problems.push(Problem::new(
                "bridge.request_timeout",
                "must be at least \"100ms\"",
            ));
        }
        if self.max_message_bytes.0 < 1024 {
            problems.push(Problem::new(
                "bridge.max_message_bytes",
                "must be at least 1 KiB",
            ));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(Problem::new(
                "bridge.listen",
                format!(
                    "expected address:port such as \"127.0.0.1:9102\" (or \"\" to switch it off), got \"{}\"",
                    self.listen
                ),
            ));
        }
    }
}

impl Section for BridgeConfig {
    const ID: SectionId = SectionId::Bridge;
    /// A node ignores the section; the bridge reads it once at start.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}

fn check_http_url(key: &str, url: &str, problems: &mut Vec<Problem>) {
    let ok = url
        .parse::<hyper::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if ok.is_none() {
        problems.push(Problem::new(
            key,
            format!("expected an http:// or https:// URL, got \"{url}\""),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    #[test]
    fn the_shipped_example_documents_the_bridge_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let c = AgentConfig::load(&path).unwrap().config;
        assert_eq!(c.bridge, BridgeConfig::default());
    }

    #[test]
    fn bad_urls_and_headers_name_their_key() {
        let e = AgentConfig::from_toml(
            "[bridge]\nremote_write_url = \"ftp://x\"\nalert_webhooks = [\"http://ok:1/\", \"nope\"]\n[bridge.remote_write_headers]\n\"bad header\" = \"x\"\n",
            Path::new("ops.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ops.toml: bridge.remote_write_url: expected an http"),
            "{e}"
        );
        assert!(e.contains("bridge.alert_webhooks[1]"), "{e}");
        assert!(!e.contains("alert_webhooks[0]"), "{e}");
        assert!(e.contains("bridge.remote_write_headers.bad header"), "{e}");
    }
}
