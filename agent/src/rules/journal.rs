//! One journald entry per alert at the rule's priority (Falco's
//! `syslog_output`), so `journalctl -u edge-agent -p warning` lists
//! warnings and worse. Written with journald's native protocol (one
//! datagram to `/run/systemd/journal/socket`): `MESSAGE` is Falco's
//! output line, `PRIORITY` the syslog level of the rule's priority (Falco
//! priorities are syslog's levels, emergency 0 to debug 7), plus
//! `SYSLOG_IDENTIFIER=edge-agent`, `FALCO_RULE` and `FALCO_PRIORITY`.
//! Without journald (no socket) it writes nothing and says so once.
//! `EDGE_AGENT_JOURNAL_SOCKET` names another socket (tests).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::Priority;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A message longer than this is cut: journald takes datagrams up to its
/// socket buffer, and an alert line is for people.
const MAX_MESSAGE: usize = 8 * 1024;

pub(crate) struct Journal {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    said_absent: bool,
    pub(crate) sent: u64,
    pub(crate) errors: u64,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    pub(crate) fn new() -> Journal {
        let path = std::env::var_os("EDGE_AGENT_JOURNAL_SOCKET")
            .map_or_else(|| PathBuf::from(JOURNAL_SOCKET), PathBuf::from);
        Journal {
            path,
            socket: None,
            said_absent: false,
            sent: 0,
            errors: 0,
        }
    }

    /// Send one alert (Falco's JSON object).
    pub(crate) fn send(&mut self, alert: &Map<String, Value>) {
        if !self.path.exists() {
            if !self.said_absent {
                info!(socket = %self.path.display(), "no journald socket: rules.syslog_output writes nothing");
                self.said_absent = true;
            }
            return;
        }
        if self.socket.is_none() {
            match UnixDatagram::unbound() {
                Ok(s) => self.socket = Some(s),
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
        let datagram = entry(alert);
        let socket = self.socket.as_ref().expect("just made");
        match socket.send_to(&datagram, &self.path) {
            Ok(_) => self.sent += 1,
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        self.errors += 1;
        if self.errors.is_power_of_two() {
            warn!(socket = %self.path.display(), error = %e, errors = self.errors, "cannot write an alert to journald");
        }
    }
}

/// The native-protocol datagram for `alert`.
pub(crate) fn entry(alert: &Map<String, Value>) -> Vec<u8> {
    let str_of = |k: &str| alert.get(k).and_then(Value::as_str).unwrap_or("");
    let priority = Priority::parse_falco(str_of("priority")).unwrap_or(Priority::Warning);
    let mut message = str_of("output").to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let mut out = Vec::with_capacity(message.len() + 256);
    field(&mut out, "MESSAGE", &message);
    field(&mut out, "PRIORITY", &(priority as u8).to_string());
    field(&mut out, "SYSLOG_IDENTIFIER", "edge-agent");
    field(&mut out, "FALCO_RULE", str_of("rule"));
    field(&mut out, "FALCO_PRIORITY", str_of("priority"));
    out
}

/// `KEY=value\n`, or the binary-safe form for a value with a newline:
/// `KEY\n`, its length as 64-bit little-endian, the value, `\n`.
fn field(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_alert_becomes_a_native_journal_entry_at_its_syslog_level() {
        let a = json!({"rule": "Shell", "priority": "Critical", "output": "10:00:00.0: Critical shell"});
        let e = entry(a.as_object().unwrap());
        let text = String::from_utf8(e).unwrap();
        assert_eq!(
            text,
            "MESSAGE=10:00:00.0: Critical shell\nPRIORITY=2\nSYSLOG_IDENTIFIER=edge-agent\nFALCO_RULE=Shell\nFALCO_PRIORITY=Critical\n"
        );
        let a = json!({"rule": "two\nlines", "priority": "Informational", "output": "x"});
        let e = entry(a.as_object().unwrap());
        assert!(e.windows(11).any(|w| w == b"PRIORITY=6\n"));
        let mut bin = b"FALCO_RULE\n".to_vec();
        bin.extend_from_slice(&9u64.to_le_bytes());
        bin.extend_from_slice(b"two\nlines\n");
        assert!(e.windows(bin.len()).any(|w| w == bin.as_slice()));
    }
}
