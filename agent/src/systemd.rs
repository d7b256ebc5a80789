//! The service manager's side channel: `sd_notify` messages (READY, STATUS,
//! RELOADING, WATCHDOG, STOPPING) and the watchdog interval.
//!
//! Owns the notify socket address and the watchdog period, both read once from
//! the environment before any thread exists, and then removed from it so that
//! child processes (modprobe, systemctl, ...) can neither notify on the
//! agent's behalf nor be mistaken for it. Never decides *when* to notify: the
//! daemon does.
//!
//! The message format is systemd's (`sd_notify(3)`): newline-separated
//! `KEY=VALUE` assignments in one datagram, formatted by `sd_notify`'s
//! [`NotifyState`]. `NOTIFY_SOCKET` may name a path or, with a leading `@`, an
//! abstract socket.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub(crate) use sd_notify::NotifyState;

/// Where notifications go, and whether the watchdog is armed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    socket: Option<OsString>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier that sends nothing (not started by systemd, or tests).
    #[cfg(test)]
    pub(crate) fn disabled() -> Self {
        Self::default()
    }

    /// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, then remove
    /// them (and `NOTIFY_SOCKET`'s companions) from the environment.
    ///
    /// # Safety
    /// Changes the process environment: call it before any other thread
    /// exists (before the tokio runtime is built), as `std::env::remove_var`
    /// requires.
    pub(crate) unsafe fn from_env_and_unset() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            // SAFETY: the caller guarantees no other thread runs yet, so no
            // one reads the environment while it changes.
            unsafe { std::env::remove_var(var) };
        }
        Self { socket, watchdog }
    }

    /// Is there a service manager listening?
    #[cfg(test)]
    pub(crate) fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the timeout, as `sd_watchdog_enabled(3)`
    /// recommends, so one late tick never trips it.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| (d / 2).max(Duration::from_millis(1)))
    }

    /// Send `states` in one datagram. A no-op without a notify socket.
    pub(crate) fn notify(&self, states: &[NotifyState]) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        let mut msg = String::new();
        for s in states {
            // Writing to a String cannot fail.
            let _ = writeln!(msg, "{s}");
        }
        let sock = UnixDatagram::unbound()?;
        let bytes = socket.as_bytes();
        let sent = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(msg.as_bytes(), &addr)?
            }
            None => sock.send_to(msg.as_bytes(), socket)?,
        };
        if sent == msg.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the notify socket",
            ))
        }
    }
}

/// `WATCHDOG_USEC` applies to us unless `WATCHDOG_PID` names another process
/// (systemd sets it when the main process is not the one it started).
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid.map(|p| p.trim().parse::<u32>()) {
        Some(Ok(p)) if p != own_pid => None,
        Some(Err(_)) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_armed_only_for_the_process_systemd_names() {
        assert_eq!(
            watchdog_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("soon"), None, 7), None);
        assert_eq!(watchdog_from(None, Some("7"), 7), None);
    }

    #[test]
    fn notifications_arrive_as_one_datagram_of_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some(path.into_os_string()),
            watchdog: None,
        };
        n.notify(&[NotifyState::Ready, NotifyState::Status("running")])
            .unwrap();
        let mut buf = [0u8; 256];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=running\n");
    }

    #[test]
    fn abstract_notify_sockets_are_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("edge-agent-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            socket: Some(format!("@{name}").into()),
            watchdog: None,
        };
        n.notify(&[NotifyState::Watchdog]).unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_does_not_fail() {
        assert!(Notifier::disabled().notify(&[NotifyState::Ready]).is_ok());
        assert!(!Notifier::disabled().enabled());
    }
}
