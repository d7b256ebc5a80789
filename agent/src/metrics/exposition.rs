//! The Prometheus text exposition format, version 0.0.4: what the local
//! `/metrics` endpoint serves and `promtool check metrics` accepts.
//!
//! Owns escaping and number formatting. Never invents series: it renders
//! exactly the snapshot it is given.

use std::fmt::Write as _;

use super::family::{Family, Snapshot};

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render a snapshot: per family a `# HELP` and a `# TYPE` line, then one
/// line per sample. Families without samples are left out (a HELP/TYPE pair
/// with no sample is legal but tells a reader nothing).
pub fn render(snapshot: &Snapshot) -> String {
    // About 80 bytes a series; one allocation for a typical node.
    let mut out = String::with_capacity(snapshot.series() * 80 + 4096);
    for family in &snapshot.families {
        render_family(&mut out, family);
    }
    out
}

fn render_family(out: &mut String, family: &Family) {
    if family.samples.is_empty() {
        return;
    }
    out.push_str("# HELP ");
    out.push_str(&family.name);
    out.push(' ');
    escape_help(out, &family.help);
    out.push_str("\n# TYPE ");
    out.push_str(&family.name);
    out.push(' ');
    out.push_str(family.kind.as_str());
    out.push('\n');
    for sample in &family.samples {
        out.push_str(&family.name);
        if !family.label_names.is_empty() {
            out.push('{');
            for (i, (name, value)) in family.label_names.iter().zip(&sample.labels).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(name);
                out.push_str("=\"");
                escape_label_value(out, value);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_value(out, sample.value);
        out.push('\n');
    }
}

/// HELP text: backslash and newline are escaped.
fn escape_help(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Label values: backslash, double quote and newline are escaped.
fn escape_label_value(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Prometheus spells the special floats `NaN`, `+Inf` and `-Inf`; Rust's
/// `Display` gives the shortest text that reads back as the same f64, which
/// the format accepts for every finite value.
pub(crate) fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Is `name` a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`)?
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::family::Kind;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut s = Snapshot::new();
        s.family(
            "x_bytes",
            "Help with \\ and\nnewline.",
            Kind::Gauge,
            &["path"],
        )
        .push(&["a\"b\\c\nd"], 1.5);
        let text = render(&s);
        assert_eq!(
            text,
            "# HELP x_bytes Help with \\\\ and\\nnewline.\n# TYPE x_bytes gauge\nx_bytes{path=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn special_floats_use_prometheus_spelling() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e21, 0.0, -2.5] {
            push_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 1000000000000000000000 0 -2.5 ");
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut s = Snapshot::new();
        s.family("nothing", "Nothing.", Kind::Gauge, &[]);
        assert_eq!(render(&s), "");
    }

    #[test]
    fn metric_names_are_checked_against_the_grammar() {
        assert!(is_valid_name("node_load1"));
        assert!(is_valid_name("_x:y"));
        assert!(!is_valid_name("1x"));
        assert!(!is_valid_name("a-b"));
        assert!(!is_valid_name(""));
    }
}
