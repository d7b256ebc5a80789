//! Turning rumqttc's connection errors into what an operator can act on:
//! a stable code (for scripts and metrics) and a sentence that names the
//! config key to check.

use std::io;

use rumqttc::{ConnectReturnCode, ConnectionError};

use crate::config::{BrokerAddress, UplinkConfig};

/// Why the link is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} [{code}]")]
pub(crate) struct Failure {
    /// Stable: `tls_server_untrusted`, `tls_rejected_by_broker`,
    /// `refused`, `unreachable`, `timeout`, `dns`, `connection_closed`,
    /// `tls_config`, `protocol`, `error`.
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// The first rustls error in `e`'s chain, looking inside `io::Error`s
/// (whose `source()` skips the error they wrap).
fn find_rustls(e: &ConnectionError) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

fn find_io(e: &ConnectionError) -> Option<&io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// Describe a connection error. `connecting`: it happened before the
/// broker accepted the connection (no CONNACK yet).
pub(crate) fn describe(
    e: &ConnectionError,
    config: &UplinkConfig,
    broker: &BrokerAddress,
    connecting: bool,
) -> Failure {
    let at = format!("{}:{}", broker.host, broker.port);
    if let Some(r) = find_rustls(e) {
        return match r {
            rustls::Error::InvalidCertificate(why) => Failure {
                code: "tls_server_untrusted",
                message: format!(
                    "the broker's certificate at {at} was refused ({why:?}): it must be signed by a CA in uplink.ca_file ({}) and name the host \"{}\"",
                    config.ca_file.display(),
                    broker.host
                ),
            },
            rustls::Error::AlertReceived(alert) => Failure {
                code: "tls_rejected_by_broker",
                message: format!(
                    "the broker at {at} ended the TLS handshake ({alert:?}): it does not accept this node's client certificate (uplink.cert_file {}); check that the fleet CA signed it and that it is valid",
                    config.cert_file.display()
                ),
            },
            other => Failure {
                code: "tls_error",
                message: format!("TLS with {at} failed: {other}"),
            },
        };
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::NotAuthorized => {
                    "not authorized: the broker's access rules do not admit this node (its certificate identity or client id)"
                }
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
                ConnectReturnCode::Success => "success (unexpected)",
            };
            return Failure {
                code: "refused",
                message: format!("the broker at {at} refused the connection: {why}"),
            };
        }
        ConnectionError::NetworkTimeout => {
            return Failure {
                code: "timeout",
                message: format!(
                    "no answer from {at} in time (network down, or a firewall drops the packets)"
                ),
            };
        }
        ConnectionError::NotConnAck(p) => {
            return Failure {
                code: "protocol",
                message: format!(
                    "{at} answered the MQTT CONNECT with {p:?}, not a CONNACK: is it an MQTT broker?"
                ),
            };
        }
        _ => {}
    }
    if let Some(io) = find_io(e) {
        let code = match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                return Failure {
                    code: "unreachable",
                    message: format!(
                        "nothing accepts connections at {at} (connection refused): is the broker running, and is uplink.url right?"
                    ),
                };
            }
            io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => "unreachable",
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe => "connection_closed",
            _ if io.to_string().contains("lookup address") => "dns",
            _ => "error",
        };
        let handshake = io.to_string().contains("handshake");
        let message = match (code, connecting, broker.tls) {
            ("connection_closed", true, true) if handshake => format!(
                "the connection to {at} was closed during the TLS handshake ({io}): something between the agent and the broker cut it (a proxy, a firewall, a broker going down), or {at} is not the broker's TLS port"
            ),
            ("connection_closed", true, _) => format!(
                "the broker at {at} closed the connection before accepting this node ({io}); if this repeats, it refuses this node's identity (client id, or the certificate in uplink.cert_file {})",
                config.cert_file.display()
            ),
            ("connection_closed", _, _) => {
                format!("the broker at {at} closed the connection ({io})")
            }
            ("dns", _, _) => format!(
                "cannot resolve \"{}\" ({io}): check uplink.url and DNS",
                broker.host
            ),
            _ => format!("connection to {at} failed: {io}"),
        };
        return Failure { code, message };
    }
    let code = match e {
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => "connection_closed",
        ConnectionError::MqttState(_) => "protocol",
        _ => "error",
    };
    Failure {
        code,
        message: format!("connection to {at}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerAddress {
        BrokerAddress::parse("mqtts://broker.example:8883").unwrap()
    }

    #[test]
    fn a_refusal_by_the_broker_says_not_authorized() {
        let f = describe(
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
            &UplinkConfig::default(),
            &broker(),
            true,
        );
        assert_eq!(f.code, "refused");
        assert!(f.message.contains("not authorized"), "{}", f.message);
    }

    #[test]
    fn an_untrusted_server_certificate_names_the_ca_file() {
        let cfg = UplinkConfig {
            ca_file: "/etc/edge-agent/ca.pem".into(),
            ..UplinkConfig::default()
        };
        let err = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = ConnectionError::Io(io::Error::new(io::ErrorKind::InvalidData, err));
        let f = describe(&e, &cfg, &broker(), true);
        assert_eq!(f.code, "tls_server_untrusted");
        assert!(
            f.message
                .contains("uplink.ca_file (/etc/edge-agent/ca.pem)"),
            "{}",
            f.message
        );
    }

    #[test]
    fn connection_refused_at_the_socket_is_unreachable() {
        let e = ConnectionError::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = describe(&e, &UplinkConfig::default(), &broker(), true);
        assert_eq!(f.code, "unreachable");
        assert!(f.message.contains("broker.example:8883"), "{}", f.message);
    }
}
