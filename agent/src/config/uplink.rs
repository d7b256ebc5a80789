//! `[uplink]`: the MQTT connection to the fleet's broker.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::{RestartOnly, Section, SectionId};
use super::{HumanDuration, Problem, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct UplinkConfig {
    /// `mqtts://host:port`, or `mqtt://host:port` only with
    /// `insecure_plaintext = true`. Empty: no uplink; the outbox keeps
    /// everything (within its budget) until one is configured.
    pub(crate) url: String,
    /// PEM CA bundle that signs the broker's certificate.
    pub(crate) ca_file: PathBuf,
    /// PEM client certificate (chain) presented to the broker.
    pub(crate) cert_file: PathBuf,
    /// PEM private key for `cert_file`.
    pub(crate) key_file: PathBuf,
    /// Allow `mqtt://` without TLS. For local tries only.
    pub(crate) insecure_plaintext: bool,
    /// QoS 1 publishes awaiting PUBACK at once.
    pub(crate) inflight: u16,
    /// MQTT keep-alive interval.
    pub(crate) keep_alive: HumanDuration,
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

/// Where the broker is, from `uplink.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddress {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `mqtts://`: TLS with a client certificate.
    pub(crate) tls: bool,
}

impl BrokerAddress {
    /// The default ports of the two schemes (IANA: 8883 for MQTT over TLS,
    /// 1883 for plain MQTT).
    const MQTTS_PORT: u16 = 8883;
    const MQTT_PORT: u16 = 1883;

    /// Parse `mqtts://host[:port]` or `mqtt://host[:port]`; an IPv6 host is
    /// written in brackets (`mqtts://[fd00::1]:8883`).
    pub(crate) fn parse(url: &str) -> Result<BrokerAddress, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!(
                "\"{url}\" must start with mqtts:// (or mqtt:// with insecure_plaintext = true)"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(format!(
                "\"{url}\": expected only a host and a port, such as mqtts://broker.example:8883"
            ));
        }
        let default_port = if tls {
            Self::MQTTS_PORT
        } else {
            Self::MQTT_PORT
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("\"{url}\": an IPv6 host needs a closing ']'"))?;
            match after {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("\"{url}\": expected ':port' after ']'")),
                },
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("\"{url}\" has no host; expected mqtts://host:port"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("\"{url}\": \"{p}\" is not a port number (1-65535)"))?,
        };
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl UplinkConfig {
    /// In-flight publishes beyond this cost memory (each holds its payload)
    /// for no gain: rumqttc got about 110K QoS 1 acknowledgements/s of 512 B
    /// over mTLS from a local mosquitto at 1,000 in flight (70-80K at 100).
    pub(crate) const MAX_INFLIGHT: u16 = 10_000;

    pub(crate) fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The broker address, when `url` is set and valid.
    pub(crate) fn broker(&self) -> Option<BrokerAddress> {
        BrokerAddress::parse(&self.url).ok()
    }

    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.ca_file);
        resolve_path(base, &mut self.cert_file);
        resolve_path(base, &mut self.key_file);
    }

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if self.inflight == 0 || self.inflight > Self::MAX_INFLIGHT {
            problems.push(Problem::new(
                "uplink.inflight",
                format!(
                    "must be between 1 and {}, got {}",
                    Self::MAX_INFLIGHT,
                    self.inflight
                ),
            ));
        }
        if self.keep_alive.get().as_secs() < 5 {
            problems.push(Problem::new("uplink.keep_alive", "must be at least \"5s\""));
        }
        if !self.enabled() {
            return;
        }
        let address = match BrokerAddress::parse(&self.url) {
            Ok(a) => a,
            Err(reason) => {
                problems.push(Problem::new("uplink.url", reason));
                return;
            }
        };
        if address.tls {
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
        } else if !self.insecure_plaintext {
            problems.push(Problem::new(
                "uplink.url",
                "mqtt:// sends everything in clear text; use mqtts:// or set uplink.insecure_plaintext = true",
            ));
        }
    }
}

impl Section for UplinkConfig {
    const ID: SectionId = SectionId::Uplink;
    /// A change reconnects with the new settings.
    const RESTART_ONLY: RestartOnly<Self> = RestartOnly::Nothing;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports_and_ipv6() {
        let a = BrokerAddress::parse("mqtts://broker.example").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.example", 8883, true)
        );
        let a = BrokerAddress::parse("mqtt://127.0.0.1:18830").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("127.0.0.1", 18830, false)
        );
        let a = BrokerAddress::parse("mqtts://[fd00::1]:9000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("fd00::1", 9000));
    }

    #[test]
    fn bad_broker_urls_say_what_is_wrong() {
        assert!(
            BrokerAddress::parse("tcp://x")
                .unwrap_err()
                .contains("mqtts://")
        );
        assert!(
            BrokerAddress::parse("mqtts://")
                .unwrap_err()
                .contains("no host")
        );
        assert!(
            BrokerAddress::parse("mqtts://h:99999")
                .unwrap_err()
                .contains("port")
        );
        assert!(
            BrokerAddress::parse("mqtts://h:8883/x")
                .unwrap_err()
                .contains("only a host")
        );
    }
}
