//! Rule outputs: Falco's `%field` substitution and the alert object.
//!
//! Owns the alert's JSON shape, which is Falco's (`time`, `rule`,
//! `priority`, `output`, `output_fields`, `tags`, `hostname`, `source`) so
//! existing Falco consumers read our alerts unchanged. Formats are parsed
//! once per rule; rendering happens only for events that matched. Absent
//! fields print `<NA>` in the text and `null` in `output_fields`. A field
//! name the engine does not know is a load-time warning, never a failure:
//! outputs are for people, and `<NA>` tells them what is missing.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::Priority;
use crate::event::{Event, Field, FieldValue};

/// A parsed output format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputFormat {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field {
        /// As written (`proc.aname[2]`): the key in `output_fields`.
        key: Box<str>,
        source: Source,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Field(Field),
    /// Unknown to this engine: always `<NA>`.
    Unknown,
}

impl OutputFormat {
    /// Parse `text`; returns the format and the field names it does not know.
    pub(crate) fn parse(text: &str) -> (OutputFormat, Vec<String>) {
        // Folded YAML (`output: >`) ends with a newline; alerts are one line.
        let text = text.trim();
        let mut parts = Vec::new();
        let mut unknown = Vec::new();
        let mut lit = String::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                let next = text[i..].find('%').map_or(text.len(), |n| i + n);
                lit.push_str(&text[i..next]);
                i = next;
                continue;
            }
            // "%%" is a literal percent sign.
            if b.get(i + 1) == Some(&b'%') {
                lit.push('%');
                i += 2;
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while end < b.len()
                && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b'.')
            {
                end += 1;
            }
            // A sentence-ending dot is not part of the name.
            while end > start && b[end - 1] == b'.' {
                end -= 1;
            }
            let name = &text[start..end];
            let mut index = None;
            if end < b.len()
                && b[end] == b'['
                && let Some(close) = text[end..].find(']')
            {
                index = Some(&text[end + 1..end + close]);
                end += close + 1;
            }
            if name.is_empty() || !name.contains('.') {
                lit.push('%');
                i += 1;
                continue;
            }
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            let source = match Field::parse(name, index) {
                Ok(f) => Source::Field(f),
                Err(_) => {
                    unknown.push(text[start..end].to_string());
                    Source::Unknown
                }
            };
            parts.push(Part::Field {
                key: text[start..end].into(),
                source,
            });
            i = end;
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        (OutputFormat { parts }, unknown)
    }

    /// The text, and the fields as Falco's `output_fields`.
    pub(crate) fn render(&self, e: &Event) -> (String, Map<String, Value>) {
        let mut out = String::new();
        let mut fields = Map::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { key, source } => {
                    let v = match source {
                        Source::Field(f) => e.field(f),
                        Source::Unknown => FieldValue::Absent,
                    };
                    use std::fmt::Write as _;
                    let _ = write!(out, "{v}");
                    fields.insert(key.to_string(), json_value(&v));
                }
            }
        }
        (out, fields)
    }
}

fn json_value(v: &FieldValue<'_>) -> Value {
    match v {
        FieldValue::Absent => Value::Null,
        FieldValue::Str(s) => Value::from(s.as_ref()),
        FieldValue::Int(i) => Value::from(*i),
        FieldValue::Bool(b) => Value::from(*b),
        FieldValue::Ip(ip) => Value::from(ip.to_string()),
        FieldValue::Partial(_) => Value::from(v.to_string()),
        FieldValue::List(items) => {
            Value::Array(items.iter().map(|s| Value::from(s.as_ref())).collect())
        }
    }
}

/// What an alert says besides the event: which rule, how bad, where.
pub(crate) struct AlertHead<'a> {
    pub(crate) rule: &'a str,
    pub(crate) priority: Priority,
    pub(crate) tags: &'a [String],
    pub(crate) hostname: &'a str,
}

/// Falco's alert object for `e`.
pub(crate) fn alert(head: &AlertHead<'_>, format: &OutputFormat, e: &Event) -> Map<String, Value> {
    let (text, fields) = format.render(e);
    let at = UNIX_EPOCH + Duration::from_nanos(e.evt.time);
    let rfc = humantime::format_rfc3339_nanos(at).to_string();
    // Falco prefixes the text with the event time and the priority.
    let clock = rfc.get(11..29).unwrap_or("00:00:00.000000000");
    let mut m = Map::new();
    m.insert("time".into(), Value::from(rfc.clone()));
    m.insert("rule".into(), Value::from(head.rule));
    m.insert("priority".into(), Value::from(head.priority.falco_name()));
    m.insert(
        "output".into(),
        Value::from(format!("{clock}: {} {text}", head.priority.falco_name())),
    );
    m.insert("output_fields".into(), Value::Object(fields));
    m.insert(
        "tags".into(),
        Value::Array(head.tags.iter().map(|t| Value::from(t.as_str())).collect()),
    );
    m.insert("hostname".into(), Value::from(head.hostname));
    m.insert("source".into(), Value::from("syscall"));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, Process};
    use std::sync::Arc;

    fn ev() -> Event {
        let mut e = Event::new(
            EventType::Execve,
            Arc::new(Process::new(7, 1, "/bin/sh", &["sh", "-c", "id"])),
        );
        e.evt.time = 1_700_000_000_123_456_789;
        e.ancestors = vec![Arc::new(Process::new(1, 0, "/sbin/init", &["init"]))];
        e
    }

    #[test]
    fn fields_substitute_and_absent_prints_na() {
        let (f, unknown) = OutputFormat::parse(
            "Shell %proc.name (parent=%proc.pname gp=%proc.aname[2] pod=%k8s.pod.name vgname=%proc.vpgid.name) 100%% sure. pid=%proc.pid.",
        );
        assert_eq!(unknown, ["proc.vpgid.name"]);
        let (text, fields) = f.render(&ev());
        assert_eq!(
            text,
            "Shell sh (parent=init gp=<NA> pod=<NA> vgname=<NA>) 100% sure. pid=7."
        );
        assert_eq!(fields["proc.name"], "sh");
        assert_eq!(fields["proc.pid"], 7);
        assert_eq!(fields["proc.aname[2]"], Value::Null);
        assert_eq!(fields["k8s.pod.name"], Value::Null);
    }

    #[test]
    fn alerts_have_falcos_shape() {
        let (f, _) = OutputFormat::parse("cmd=%proc.cmdline");
        let tags = vec!["container".to_string(), "shell".to_string()];
        let a = alert(
            &AlertHead {
                rule: "Terminal shell",
                priority: Priority::Info,
                tags: &tags,
                hostname: "node-1",
            },
            &f,
            &ev(),
        );
        let keys: Vec<_> = a.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "time",
                "rule",
                "priority",
                "output",
                "output_fields",
                "tags",
                "hostname",
                "source"
            ]
        );
        assert_eq!(a["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(a["priority"], "Informational");
        assert_eq!(
            a["output"],
            "22:13:20.123456789: Informational cmd=sh -c id"
        );
        assert_eq!(a["source"], "syscall");
        assert_eq!(a["tags"][1], "shell");
    }
}
