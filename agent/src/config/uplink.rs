//! `[uplink]`: the MQTT connection to the fleet's broker.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HumanDuration, Problem, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtts://host:port`, or `mqtt://host:port` only with
    /// `insecure_plaintext = true`. Empty: no uplink; the outbox keeps
    /// everything (within its budget) until one is configured.
    pub url: String,
    /// PEM CA bundle that signs the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain) presented to the broker.
    pub cert_file: PathBuf,
    /// PEM private key for `cert_file`.
    pub key_file: PathBuf,
    /// Allow `mqtt://` without TLS. For local tries only.
    pub insecure_plaintext: bool,
    /// QoS 1 publishes awaiting PUBACK at once.
    pub inflight: u16,
    /// MQTT keep-alive interval.
    pub keep_alive: HumanDuration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            insecure_plaintext: false,
            inflight: 100,
            keep_alive: HumanDuration::from_secs(30),
        }
    }
}

impl UplinkConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.ca_file);
        resolve_path(base, &mut self.cert_file);
        resolve_path(base, &mut self.key_file);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.inflight == 0 {
            problems.push(Problem::new("uplink.inflight", "must be at least 1"));
        }
        if self.keep_alive.get().as_secs() < 5 {
            problems.push(Problem::new("uplink.keep_alive", "must be at least \"5s\""));
        }
        if !self.enabled() {
            return;
        }
        if let Some(rest) = self.url.strip_prefix("mqtts://") {
            if rest.is_empty() {
                problems.push(Problem::new(
                    "uplink.url",
                    "has no host; expected mqtts://host:port",
                ));
            }
            for (key, path) in [
                ("uplink.ca_file", &self.ca_file),
                ("uplink.cert_file", &self.cert_file),
                ("uplink.key_file", &self.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    problems.push(Problem::new(
                        key,
                        "is required with an mqtts:// url (a PEM file path)",
                    ));
                }
            }
        } else if let Some(rest) = self.url.strip_prefix("mqtt://") {
            if rest.is_empty() {
                problems.push(Problem::new(
                    "uplink.url",
                    "has no host; expected mqtt://host:port",
                ));
            }
            if !self.insecure_plaintext {
                problems.push(Problem::new(
                    "uplink.url",
                    "mqtt:// sends everything in clear text; use mqtts:// or set uplink.insecure_plaintext = true",
                ));
            }
        } else {
            problems.push(Problem::new(
                "uplink.url",
                format!(
                    "\"{}\" must start with mqtts:// (or mqtt:// with insecure_plaintext = true)",
                    self.url
                ),
            ));
        }
    }
}
