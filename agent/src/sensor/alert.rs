//! What the sensor itself reports to the fleet: an alert for every exec the
//! deny list killed and every exec or open a BPF-LSM hook refused (in
//! Falco's alert shape, so Falco consumers read it),
//! and node events for lost records and for a sensor that cannot start or
//! runs without some probes.
//!
//! Owns only the shape of those reports; the stage sends them through the
//! [`crate::report::ReportSender`]. Never evaluates rules.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::decode::{DenyList, Refusal};
use crate::event::{Event, Field};
use crate::report::Report;

/// The rule name kills are reported under.
pub(crate) const KILL_RULE: &str = "Denied executable killed";
/// The rule names BPF-LSM refusals are reported under.
pub(crate) const EXEC_REFUSED_RULE: &str = "Denied executable refused";
pub(crate) const OPEN_REFUSED_RULE: &str = "Denied file open refused";

/// The fields a kill alert carries, in Falco's names.
const KILL_FIELDS: &[&str] = &[
    "evt.type",
    "proc.pid",
    "proc.ppid",
    "proc.name",
    "proc.exepath",
    "proc.cmdline",
    "proc.pname",
    "proc.pcmdline",
    "user.name",
    "user.uid",
    "user.loginuid",
    "container.id",
    "container.name",
    "container.image.repository",
    "k8s.ns.name",
    "k8s.pod.name",
];

/// Falco's time format: RFC 3339 with nanoseconds, UTC.
pub(crate) fn falco_time(unix_ns: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(unix_ns)).to_string()
}

/// `event`'s fields, in Falco's names, as an alert's `output_fields`.
fn output_fields(event: &Event) -> Map<String, Value> {
    let mut fields = Map::new();
    for name in KILL_FIELDS {
        let Ok(f) = Field::parse(name, None) else {
            continue;
        };
        let v = match event.field(&f) {
            crate::event::FieldValue::Absent => Value::Null,
            crate::event::FieldValue::Int(i) => Value::from(i),
            crate::event::FieldValue::Bool(b) => Value::from(b),
            other => Value::from(other.to_string()),
        };
        fields.insert((*name).to_string(), v);
    }
    fields
}

/// The critical alert for an exec the kernel killed because `entry` of
/// `deny_exec` matched.
pub(crate) fn kill_alert(event: &Event, hostname: &str) -> Report {
    let fields = output_fields(event);
    let get = |k: &str| {
        fields
            .get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => "<NA>".to_string(),
                v => v.to_string(),
            })
            .unwrap_or_default()
    };
    let time = falco_time(event.evt.time);
    let output = format!(
        "{time}: Critical {KILL_RULE} before it ran (exe={} cmdline={} pid={} parent={} user={} container_id={} k8s.pod={} k8s.ns={})",
        get("proc.exepath"),
        get("proc.cmdline"),
        get("proc.pid"),
        get("proc.pname"),
        get("user.name"),
        get("container.id"),
        get("k8s.pod.name"),
        get("k8s.ns.name"),
    );
    let payload = json!({
        "time": time,
        "rule": KILL_RULE,
        "priority": "Critical",
        "output": output,
        "output_fields": fields,
        "tags": ["edge-agent", "enforcement", "process", "mitre_execution"],
        "hostname": hostname,
        "source": "syscall",
    });
    let Value::Object(payload) = payload else {
        unreachable!("json! of an object literal is an object")
    };
    Report::alert(true, payload)
}

/// The critical alert for an exec or open a BPF-LSM hook refused (the call
/// failed with EPERM; nothing of it ran). `deny_open_path` is the
/// `deny_open` entry that refused an open.
pub(crate) fn refusal_alert(
    event: &Event,
    refusal: &Refusal,
    deny_open_path: Option<&str>,
    hostname: &str,
) -> Report {
    let mut fields = output_fields(event);
    fields.insert("evt.res".into(), "EPERM".into());
    let (rule, what, tags) = match refusal.list {
        DenyList::Exec => {
            fields.insert("evt.arg.filename".into(), refusal.path.clone().into());
            (
                EXEC_REFUSED_RULE,
                format!("exec of {} refused by deny_exec", refusal.path),
                ["edge-agent", "enforcement", "process", "mitre_execution"],
            )
        }
        DenyList::Open => {
            fields.insert("fd.name".into(), refusal.path.clone().into());
            let flags = event.evt.args.flags.unwrap_or(0) as i32 & libc::O_ACCMODE;
            let access = match flags {
                libc::O_RDONLY => "reading",
                libc::O_WRONLY => "writing",
                _ => "reading and writing",
            };
            fields.insert("evt.arg.flags".into(), access.into());
            (
                OPEN_REFUSED_RULE,
                format!(
                    "open of {} for {access} refused by deny_open {}",
                    refusal.path,
                    deny_open_path.unwrap_or("?")
                ),
                [
                    "edge-agent",
                    "enforcement",
                    "filesystem",
                    "mitre_persistence",
                ],
            )
        }
    };
    let s = |k: &str| match fields.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "<NA>".to_string(),
        Some(v) => v.to_string(),
    };
    let time = falco_time(event.evt.time);
    let output = format!(
        "{time}: Critical {rule}: {what} (process={} cmdline={} pid={} parent={} user={} container_id={} k8s.pod={} k8s.ns={})",
        s("proc.exepath"),
        s("proc.cmdline"),
        s("proc.pid"),
        s("proc.pname"),
        s("user.name"),
        s("container.id"),
        s("k8s.pod.name"),
        s("k8s.ns.name"),
    );
    let Value::Object(payload) = json!({
        "time": time,
        "rule": rule,
        "priority": "Critical",
        "output": output,
        "output_fields": fields,
        "tags": tags,
        "hostname": hostname,
        "source": "syscall",
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    Report::alert(true, payload)
}

/// A node event: the kernel lost `lost` records in the last `over`.
pub(crate) fn loss_event(lost: u64, lost_total: u64, over: Duration) -> Report {
    let mut f = Map::new();
    f.insert("lost".into(), lost.into());
    f.insert("lost_total".into(), lost_total.into());
    f.insert("over_secs".into(), over.as_secs().into());
    Report::node_event(
        "sensor_events_lost",
        format!(
            "the sensor's ring buffer was full: {lost} kernel events were lost in the last {}s; rules did not see them (raise [sensor] ring_buffer_bytes or exclude noisy processes)",
            over.as_secs().max(1)
        ),
        f,
    )
}

/// A node event: the sensor could not start; the rest of the agent runs.
pub(crate) fn unavailable_event(code: &str, reason: &str) -> Report {
    let mut f = Map::new();
    f.insert("code".into(), code.into());
    Report::node_event(
        "sensor_unavailable",
        format!(
            "the eBPF sensor could not start, so no runtime threat detection runs on this node: {reason}"
        ),
        f,
    )
}

/// A node event: the sensor runs without some optional probes.
pub(crate) fn degraded_event(missing: &[(&'static str, String)]) -> Report {
    let mut f = Map::new();
    f.insert(
        "missing_probes".into(),
        missing.iter().map(|(n, _)| Value::from(*n)).collect(),
    );
    Report::node_event(
        "sensor_degraded",
        format!(
            "the eBPF sensor runs without {} optional probe(s): {}",
            missing.len(),
            missing
                .iter()
                .map(|(n, r)| format!("{n} ({r})"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        f,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{EventType, Process};
    use crate::report::Class;

    #[test]
    fn a_kill_alert_has_falcos_shape_and_is_critical() {
        let mut e = Event::new(
            EventType::Execve,
            Arc::new(Process::new(42, 1, "/tmp/xmrig", &["xmrig", "-o", "pool"])),
        );
        e.evt.time = 1_700_000_000_123_456_789;
        let r = kill_alert(&e, "node-1");
        assert_eq!(r.class, Class::CriticalAlert);
        let p = &r.payload;
        for key in [
            "time",
            "rule",
            "priority",
            "output",
            "output_fields",
            "tags",
            "hostname",
            "source",
        ] {
            assert!(p.contains_key(key), "missing {key}: {p:?}");
        }
        assert_eq!(p["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(p["priority"], "Critical");
        assert_eq!(p["hostname"], "node-1");
        assert_eq!(p["output_fields"]["proc.exepath"], "/tmp/xmrig");
        assert_eq!(p["output_fields"]["proc.pid"], 42);
        assert_eq!(p["output_fields"]["k8s.pod.name"], Value::Null);
        let out = p["output"].as_str().unwrap();
        assert!(
            out.starts_with("2023-11-14T22:13:20.123456789Z: Critical"),
            "{out}"
        );
        assert!(out.contains("cmdline=xmrig -o pool"), "{out}");
    }

    #[test]
    fn a_refused_open_is_a_critical_alert_of_its_own_rule_naming_the_file() {
        let mut e = Event::new(
            EventType::Openat,
            Arc::new(Process::new(7, 1, "/bin/busybox", &["sh", "-c", "echo"])),
        );
        e.evt.args.flags = Some(libc::O_WRONLY as u64);
        let refusal = Refusal {
            list: DenyList::Open,
            path: "/etc/rancher/k3s/config.yaml".into(),
            rule: Some(0),
        };
        let r = refusal_alert(&e, &refusal, Some("/etc/rancher/k3s"), "node-1");
        assert_eq!(r.class, Class::CriticalAlert);
        let p = &r.payload;
        assert_eq!(p["rule"], OPEN_REFUSED_RULE);
        assert_eq!(
            p["output_fields"]["fd.name"],
            "/etc/rancher/k3s/config.yaml"
        );
        assert_eq!(p["output_fields"]["evt.res"], "EPERM");
        let out = p["output"].as_str().unwrap();
        assert!(
            out.contains("open of /etc/rancher/k3s/config.yaml for writing refused by deny_open /etc/rancher/k3s"),
            "{out}"
        );
        let refusal = Refusal {
            list: DenyList::Exec,
            path: "/tmp/xmrig".into(),
            rule: None,
        };
        let r = refusal_alert(&e, &refusal, None, "node-1");
        assert_eq!(r.payload["rule"], EXEC_REFUSED_RULE);
        assert_eq!(r.payload["output_fields"]["evt.arg.filename"], "/tmp/xmrig");
    }
}
