//! Rule files: YAML in, a [`RuleSet`] plus every [`Problem`] out.
//!
//! Owns Falco's rules-file semantics: `list`, `macro` and `rule` items,
//! `append: true` and `override: {key: append|replace}`, rule exceptions,
//! the legacy "only `enabled`" rule item, `required_engine_version`, and
//! `skip-if-unknown-filter`. Files load in order; later items change
//! earlier ones. Loading is partial success: a rule that does not compile
//! is left out and listed with its file, line, column and the precise
//! reason, and the rest load. Never touches the event path: the result is
//! an immutable [`RuleSet`] that the engine swaps in whole.
//!
//! YAML comes from [`super::yaml`] as a marked tree (Falco's indentation
//! leniency, hard limits on nesting, aliases and size). We walk it instead
//! of deriving serde types so that every problem carries the line and
//! column of the exact item and key, and scalars keep their source text
//! (`'"(systemd)"'` stays quoted for the condition language).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::config::Priority;
use crate::event::{Event, EventType};

use super::compile::{self, CompileError, ListDef, MacroDef};
use super::condition::{self, Literal};
use super::eval::{self, EventClass, Node, TypeMask};
use super::output::OutputFormat;
use super::yaml::{self, Node as Yaml, Style, Value};

/// The highest Falco engine version whose rule syntax this engine reads
/// (the stable rules of 2026 ask for 0.57.0; the items they use are here).
pub(crate) const ENGINE_VERSION: &str = "0.57.0";

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// The file, item or rule did not load.
    Error,
    /// Skipped as the rule asked (`skip-if-unknown-filter`) or by source.
    Skipped,
    /// Loaded, but something deserves a look (an unknown output field).
    Warning,
}

/// One thing wrong with the rule files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub(crate) severity: Severity,
    pub(crate) file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// `rule`, `macro`, `list`, or `file`.
    pub(crate) kind: &'static str,
    /// The rule, macro or list name ("" for the file).
    pub name: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Skipped => "skipped",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: ")?;
        if !self.name.is_empty() {
            write!(f, "{} \"{}\": ", self.kind, self.name)?;
        }
        f.write_str(&self.reason)
    }
}

/// A rule file as loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileInfo {
    pub path: PathBuf,
    /// Hex SHA-256 of the bytes read.
    pub(crate) sha256: String,
    pub(crate) bytes: usize,
    pub(crate) required_engine_version: Option<String>,
    /// Rules this file defined (not counting appends and overrides).
    pub(crate) rules: usize,
    /// Why the file did not load, when it did not.
    pub error: Option<String>,
}

/// A rule as `rules list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleInfo {
    pub name: String,
    pub(crate) priority: Priority,
    pub(crate) enabled: bool,
    /// `loaded`, `failed`, `skipped` or `disabled`.
    pub state: &'static str,
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) tags: Vec<String>,
    /// Event types the rule is indexed under (empty unless loaded).
    pub(crate) event_types: Vec<&'static str>,
}

/// A compiled, enabled rule.
#[derive(Debug)]
pub struct CompiledRule {
    pub name: Arc<str>,
    pub(crate) priority: Priority,
    pub tags: Vec<String>,
    pub(crate) output: OutputFormat,
    pub(crate) node: Node,
    /// The condition as compiled, before [`Node::read_fast`]: what the
    /// tests compare the evaluated form with.
    #[cfg(test)]
    pub(crate) tree: Node,
    pub(crate) types: TypeMask,
}

/// An immutable, compiled rule set, indexed by event type.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    /// For each event class ([`EventClass::slot`]: the type, an open's
    /// access mode, host or container), the rules (indexes into `rules`)
    /// it must meet.
    index: Vec<Box<[u32]>>,
    pub catalog: Vec<RuleInfo>,
    pub files: Vec<FileInfo>,
}

impl RuleSet {
    /// Call `f` with each rule that matches `e`, in load order.
    #[inline]
    pub fn for_each_match(&self, e: &Event, mut f: impl FnMut(usize, &CompiledRule)) {
        if let Some(ids) = self.index.get(EventClass::of(e).slot()) {
            for &i in ids.iter() {
                let rule = &self.rules[i as usize];
                if rule.node.eval(e) {
                    f(i as usize, rule);
                }
            }
        }
    }

    /// Rules an event of type `t` meets (the most of any of its classes).
    #[cfg(test)]
    pub(crate) fn rules_for(&self, t: EventType) -> usize {
        EventClass::all(t)
            .map(|c| self.rules_for_class(c))
            .max()
            .unwrap_or(0)
    }

    /// Rules an event of class `c` meets.
    #[cfg(test)]
    pub(crate) fn rules_for_class(&self, c: EventClass) -> usize {
        self.index.get(c.slot()).map_or(0, |v| v.len())
    }

    pub(crate) fn count(&self, state: &str) -> usize {
        self.catalog.iter().filter(|r| r.state == state).count()
    }
}

/// Partial success: the set that loaded and everything that did not.
#[derive(Debug)]
pub struct Loaded {
    pub set: RuleSet,
    pub(crate) problems: Vec<Problem>,
}

impl Loaded {
    /// Errors (not warnings or skips): a reload with any is refused.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// One file's text (or why it could not be read).
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    pub(crate) text: Result<String, String>,
}

/// Expand globs in order (each glob's matches sorted), keeping plain paths
/// that do not exist so their absence is reported.
pub(crate) fn expand_files(patterns: &[PathBuf]) -> (Vec<PathBuf>, Vec<Problem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in patterns {
        let s = p.to_string_lossy();
        if !s.contains(['*', '?', '[']) {
            files.push(p.clone());
            continue;
        }
        let matched = glob_paths(p);
        if matched.is_empty() {
            problems.push(Problem {
                severity: Severity::Error,
                file: p.clone(),
                line: 0,
                column: 0,
                kind: "file",
                name: String::new(),
                reason: "no rule file matches this pattern (check rules.files in agent.toml)"
                    .into(),
            });
        }
        for m in matched {
            if !files.contains(&m) {
                files.push(m);
            }
        }
    }
    (files, problems)
}

/// Files matching a glob whose wildcards are in the last path component.
fn glob_paths(pattern: &Path) -> Vec<PathBuf> {
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let Some(name) = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    let g = super::glob::Glob::new(&name, false);
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !n.starts_with('.') && g.matches(&n)
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Read and load rule files (paths or globs), in order.
pub fn load_paths(patterns: &[PathBuf]) -> Loaded {
    let (sources, problems) = read_paths(patterns);
    load_read(sources, problems)
}

/// Read rule files (paths or globs), in order, without loading them; the
/// problems are those of the patterns (a plain path that does not exist).
pub(crate) fn read_paths(patterns: &[PathBuf]) -> (Vec<Source>, Vec<Problem>) {
    let (files, problems) = expand_files(patterns);
    let sources = files
        .into_iter()
        .map(|path| {
            let text = read_bounded(&path);
            Source { path, text }
        })
        .collect();
    (sources, problems)
}

/// Load what [`read_paths`] read, its problems first.
pub(crate) fn load_read(sources: Vec<Source>, mut problems: Vec<Problem>) -> Loaded {
    let mut loaded = load_sources(sources);
    problems.append(&mut loaded.problems);
    loaded.problems = problems;
    loaded
}

/// A rules file's text, refusing one over [`yaml::MAX_FILE_BYTES`]
/// without reading more than one byte past the limit.
fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut bytes = Vec::new();
    file.take(yaml::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() > yaml::MAX_FILE_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len(), |m| m.len() as usize);
        return Err(yaml::too_large(size));
    }
    text_of_file(bytes)
}

/// A rules file's bytes as text, or why they are not.
pub(crate) fn text_of_file(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > yaml::MAX_FILE_BYTES {
        return Err(yaml::too_large(bytes.len()));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the file is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Load rule files from their text, in order.
pub(crate) fn load_sources(sources: Vec<Source>) -> Loaded {
    let mut b = Builder::default();
    for (fi, src) in sources.iter().enumerate() {
        b.file(fi, src);
    }
    b.finish()
}

#[derive(Debug, Clone, Copy, Default)]
struct Loc {
    file: usize,
    line: usize,
    column: usize,
}

struct MacroEntry {
    condition: String,
    at: Loc,
}

#[derive(Clone)]
struct ExceptionDef {
    name: String,
    fields: Vec<String>,
    /// `fields: proc.name` (one field, not a list): values are plain items.
    single: bool,
    comps: Vec<String>,
    values: Vec<ExcValue>,
}

#[derive(Clone)]
enum ExcValue {
    Scalar(String, bool),
    Tuple(Vec<ExcValue>),
}

struct RuleEntry {
    name: String,
    at: Loc,
    condition: String,
    output: String,
    priority: Priority,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<ExceptionDef>,
    source: String,
    skip_if_unknown: bool,
}

#[derive(Default)]
struct Builder {
    files: Vec<FileInfo>,
    lists: HashMap<String, ListDef>,
    macros: HashMap<String, MacroEntry>,
    rules: Vec<RuleEntry>,
    problems: Vec<Problem>,
}

type Map = [(Yaml, Yaml)];

/// A scalar's text (any scalar, null-looking ones included).
fn text_of(n: &Yaml) -> Option<Cow<'_, str>> {
    match &n.value {
        Value::Scalar(s, _) => Some(Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

fn is_null(n: &Yaml) -> bool {
    matches!(&n.value, Value::Scalar(s, Style::Plain) if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
}

fn is_quoted(n: &Yaml) -> bool {
    matches!(&n.value, Value::Scalar(_, Style::Quoted))
}

fn get<'m>(m: &'m Map, key: &str) -> Option<&'m Yaml> {
    m.iter()
        .find(|(k, _)| text_of(k).as_deref() == Some(key))
        .map(|(_, v)| v)
}

fn keys(m: &Map) -> Vec<(String, &Yaml)> {
    m.iter()
        .filter_map(|(k, _)| text_of(k).map(|t| (t.into_owned(), k)))
        .collect()
}

fn parse_bool(n: &Yaml) -> Option<bool> {
    match text_of(n)?.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn seq(n: &Yaml) -> Option<&Vec<Yaml>> {
    match &n.value {
        Value::Seq(s) => Some(s),
        _ => None,
    }
}

/// Scalars of a sequence (or a single scalar), as text.
fn strings(n: &Yaml) -> Option<Vec<String>> {
    if is_null(n) {
        return Some(Vec::new());
    }
    match &n.value {
        Value::Seq(items) => items
            .iter()
            .filter(|i| !is_null(i))
            .map(|i| text_of(i).map(Cow::into_owned))
            .collect(),
        _ => text_of(n).map(|t| vec![t.into_owned()]),
    }
}

impl Builder {
    fn problem(
        &mut self,
        severity: Severity,
        at: Loc,
        kind: &'static str,
        name: &str,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            severity,
            file: self.files[at.file].path.clone(),
            line: at.line,
            column: at.column,
            kind,
            name: name.to_string(),
            reason: reason.into(),
        });
    }

    fn loc(&self, file: usize, n: &Yaml) -> Loc {
        Loc {
            file,
            line: n.line as usize,
            column: n.column as usize,
        }
    }

    fn file(&mut self, fi: usize, src: &Source) {
        let (sha256, bytes) = match &src.text {
            Ok(t) => (sha256_hex(t.as_bytes()), t.len()),
            Err(_) => (String::new(), 0),
        };
        self.files.push(FileInfo {
            path: src.path.clone(),
            sha256,
            bytes,
            required_engine_version: None,
            rules: 0,
            error: None,
        });
        let whole = Loc {
            file: fi,
            line: 0,
            column: 0,
        };
        let text = match &src.text {
            Ok(t) => t,
            Err(e) => {
                self.files[fi].error = Some(e.clone());
                self.problem(Severity::Error, whole, "file", "", e.clone());
                return;
            }
        };
        let docs = match yaml::parse(text) {
            Ok(d) => d,
            Err(e) => {
                let at = Loc {
                    file: fi,
                    line: e.line,
                    column: e.column,
                };
                self.files[fi].error = Some(if e.line > 0 {
                    format!("line {}, column {}: {}", e.line, e.column, e.reason)
                } else {
                    e.reason.clone()
                });
                self.problem(Severity::Error, at, "file", "", e.reason);
                return;
            }
        };
        for doc in &docs {
            if is_null(doc) {
                continue;
            }
            let Some(items) = seq(doc) else {
                let at = self.loc(fi, doc);
                let reason = "a rules file is a YAML sequence of items (- rule: ..., - macro: ..., - list: ...)";
                self.files[fi].error = Some(reason.into());
                self.problem(Severity::Error, at, "file", "", reason);
                return;
            };
            for item in items {
                self.item(fi, item);
            }
        }
    }

    fn item(&mut self, fi: usize, item: &Yaml) {
        let at = self.loc(fi, item);
        let Value::Map(m) = &item.value else {
            self.problem(
                Severity::Error,
                at,
                "file",
                "",
                "each item must be a mapping such as \"- rule: NAME\"",
            );
            return;
        };
        if let Some(v) = get(m, "required_engine_version") {
            let version = text_of(v).map(|s| s.into_owned()).unwrap_or_default();
            if version_newer(&version, ENGINE_VERSION) {
                self.problem(
                    Severity::Warning,
                    at,
                    "file",
                    "",
                    format!("requires Falco engine version {version}; this engine reads the syntax of {ENGINE_VERSION} (rules using newer syntax report their own errors)"),
                );
            }
            self.files[fi].required_engine_version = Some(version);
            return;
        }
        if get(m, "required_plugin_versions").is_some() {
            return;
        }
        if let Some(name) = get(m, "list") {
            self.list(fi, at, m, name);
        } else if let Some(name) = get(m, "macro") {
            self.macro_item(at, m, name);
        } else if let Some(name) = get(m, "rule") {
            self.rule(fi, at, m, name);
        } else {
            let kinds: Vec<String> = keys(m).into_iter().map(|(k, _)| k).collect();
            self.problem(
                Severity::Error,
                at,
                "file",
                "",
                format!(
                    "unknown item ({}): expected rule, macro, list or required_engine_version",
                    kinds.join(", ")
                ),
            );
        }
    }

    /// `append: true` or `override: {key: append|replace}` for `key`.
    fn how(&mut self, at: Loc, kind: &'static str, name: &str, m: &Map, key: &str) -> Option<How> {
        if let Some(o) = get(m, "override") {
            let Value::Map(om) = &o.value else {
                self.problem(
                    Severity::Error,
                    at,
                    kind,
                    name,
                    "override must map keys to append or replace",
                );
                return None;
            };
            return match get(om, key).and_then(text_of).as_deref() {
                Some("append") => Some(How::Append),
                Some("replace") => Some(How::Replace),
                Some(other) => {
                    self.problem(
                        Severity::Error,
                        at,
                        kind,
                        name,
                        format!("override.{key}: \"{other}\" is neither append nor replace"),
                    );
                    None
                }
                None => Some(How::Keep),
            };
        }
        match get(m, "append").map(parse_bool) {
            Some(Some(true)) => Some(How::Append),
            Some(None) => {
                self.problem(
                    Severity::Error,
                    at,
                    kind,
                    name,
                    "append must be true or false",
                );
                None
            }
            _ => Some(How::Define),
        }
    }

    fn list(&mut self, fi: usize, at: Loc, m: &Map, name: &Yaml) {
        let Some(name) = text_of(name).map(Cow::into_owned) else {
            self.problem(Severity::Error, at, "list", "", "the list has no name");
            return;
        };
        let items = match get(m, "items") {
            None => {
                self.problem(Severity::Error, at, "list", &name, "missing key items");
                return;
            }
            Some(n) => match &n.value {
                Value::Seq(seq) => seq
                    .iter()
                    .filter(|i| !is_null(i))
                    .map(|i| {
                        let t = text_of(i).unwrap_or_default();
                        if is_quoted(i) {
                            // A YAML-quoted item may still carry condition quoting inside.
                            let inner = condition::unquote_item(&t);
                            if inner.quoted {
                                inner
                            } else {
                                Literal {
                                    text: t.into_owned(),
                                    quoted: false,
                                }
                            }
                        } else {
                            condition::unquote_item(&t)
                        }
                    })
                    .collect::<Vec<_>>(),
                _ if is_null(n) => Vec::new(),
                _ => {
                    let at = self.loc(fi, n);
                    self.problem(
                        Severity::Error,
                        at,
                        "list",
                        &name,
                        "items must be a sequence such as [a, b]",
                    );
                    return;
                }
            },
        };
        let Some(how) = self.how(at, "list", &name, m, "items") else {
            return;
        };
        match (how, self.lists.get_mut(&name)) {
            (How::Append, Some(l)) => l.items.extend(items),
            (How::Append, None) => self.problem(
                Severity::Error,
                at,
                "list",
                &name,
                "appends to a list that is not defined earlier",
            ),
            (How::Keep, _) => {}
            _ => {
                self.lists.insert(name, ListDef { items });
            }
        }
    }

    fn macro_item(&mut self, at: Loc, m: &Map, name: &Yaml) {
        let Some(name) = text_of(name).map(Cow::into_owned) else {
            self.problem(Severity::Error, at, "macro", "", "the macro has no name");
            return;
        };
        let Some(cond) = get(m, "condition").and_then(text_of).map(Cow::into_owned) else {
            self.problem(Severity::Error, at, "macro", &name, "missing key condition");
            return;
        };
        let Some(how) = self.how(at, "macro", &name, m, "condition") else {
            return;
        };
        match (how, self.macros.get_mut(&name)) {
            (How::Append, Some(e)) => {
                e.condition.push(' ');
                e.condition.push_str(&cond);
            }
            (How::Append, None) => self.problem(
                Severity::Error,
                at,
                "macro",
                &name,
                "appends to a macro that is not defined earlier",
            ),
            (How::Keep, _) => {}
            _ => {
                self.macros.insert(
                    name,
                    MacroEntry {
                        condition: cond,
                        at,
                    },
                );
            }
        }
    }

    fn rule(&mut self, fi: usize, at: Loc, m: &Map, name_node: &Yaml) {
        let Some(name) = text_of(name_node).map(Cow::into_owned) else {
            self.problem(Severity::Error, at, "rule", "", "the rule has no name");
            return;
        };
        const KNOWN: [&str; 16] = [
            "rule",
            "desc",
            "condition",
            "output",
            "priority",
            "tags",
            "enabled",
            "exceptions",
            "source",
            "skip-if-unknown-filter",
            "append",
            "override",
            "warn_evttypes",
            "capture",
            "capture_duration",
            "required_plugin_versions",
        ];
        for (k, kn) in keys(m) {
            if !KNOWN.contains(&k.as_str()) {
                let kat = self.loc(fi, kn);
                self.problem(
                    Severity::Warning,
                    kat,
                    "rule",
                    &name,
                    format!("unknown key {k} (ignored)"),
                );
            }
        }
        let existing = self.rules.iter().position(|r| r.name == name);
        let modifies =
            get(m, "override").is_some() || get(m, "append").and_then(parse_bool) == Some(true);
        // Legacy: `- rule: X` with only `enabled:` switches an existing rule.
        let only_enabled = keys(m).iter().all(|(k, _)| k == "rule" || k == "enabled")
            && get(m, "enabled").is_some();
        if only_enabled && !modifies {
            match (existing, get(m, "enabled").and_then(parse_bool)) {
                (Some(i), Some(en)) => self.rules[i].enabled = en,
                (None, _) => self.problem(
                    Severity::Error,
                    at,
                    "rule",
                    &name,
                    "enables or disables a rule that is not defined earlier",
                ),
                (_, None) => self.problem(
                    Severity::Error,
                    at,
                    "rule",
                    &name,
                    "enabled must be true or false",
                ),
            }
            return;
        }
        if modifies {
            let Some(i) = existing else {
                self.problem(
                    Severity::Error,
                    at,
                    "rule",
                    &name,
                    "appends to or overrides a rule that is not defined earlier",
                );
                return;
            };
            self.modify_rule(fi, i, at, m, &name);
            return;
        }
        let mut missing = Vec::new();
        let cond = get(m, "condition").and_then(text_of).map(Cow::into_owned);
        let output = get(m, "output").and_then(text_of).map(Cow::into_owned);
        let prio_text = get(m, "priority").and_then(text_of).map(Cow::into_owned);
        for (k, v) in [
            ("condition", cond.is_some()),
            ("output", output.is_some()),
            ("priority", prio_text.is_some()),
        ] {
            if !v {
                missing.push(k);
            }
        }
        if !missing.is_empty() {
            self.push_failed_placeholder(&name, at, Priority::Debug);
            self.problem(
                Severity::Error,
                at,
                "rule",
                &name,
                format!("missing key {}", missing.join(", ")),
            );
            return;
        }
        let priority = match Priority::parse_falco(prio_text.as_deref().unwrap_or_default()) {
            Some(p) => p,
            None => {
                let pat = get(m, "priority").map_or(at, |n| self.loc(fi, n));
                self.push_failed_placeholder(&name, at, Priority::Debug);
                self.problem(
                    Severity::Error,
                    pat,
                    "rule",
                    &name,
                    format!(
                        "priority \"{}\" is not one of emergency, alert, critical, error, warning, notice, informational, debug",
                        prio_text.unwrap_or_default()
                    ),
                );
                return;
            }
        };
        let Some(exceptions) = self.exceptions(fi, at, &name, m) else {
            self.push_failed_placeholder(&name, at, priority);
            return;
        };
        if let Some(ex) = exceptions.iter().find(|e| e.fields.is_empty()) {
            let reason = format!("exception {} has no fields", ex.name);
            self.push_failed_placeholder(&name, at, priority);
            self.problem(Severity::Error, at, "rule", &name, reason);
            return;
        }
        let tags = get(m, "tags").and_then(strings).unwrap_or_default();
        let enabled = match get(m, "enabled") {
            None => true,
            Some(n) => match parse_bool(n) {
                Some(b) => b,
                None => {
                    self.problem(
                        Severity::Error,
                        at,
                        "rule",
                        &name,
                        "enabled must be true or false",
                    );
                    return;
                }
            },
        };
        let entry = RuleEntry {
            name: name.clone(),
            at,
            condition: cond.unwrap_or_default(),
            output: output.unwrap_or_default(),
            priority,
            tags,
            enabled,
            exceptions,
            source: get(m, "source")
                .and_then(text_of)
                .map_or_else(|| "syscall".into(), Cow::into_owned),
            skip_if_unknown: get(m, "skip-if-unknown-filter")
                .and_then(parse_bool)
                .unwrap_or(false),
        };
        self.files[fi].rules += 1;
        match existing {
            Some(i) => {
                self.problem(
                    Severity::Warning,
                    at,
                    "rule",
                    &name,
                    "redefines a rule of the same name; the later definition replaces it",
                );
                self.rules[i] = entry;
            }
            None => self.rules.push(entry),
        }
    }

    /// A rule that failed before it could be recorded still appears in
    /// `rules list` as failed; an empty condition marks it.
    fn push_failed_placeholder(&mut self, name: &str, at: Loc, priority: Priority) {
        if self.rules.iter().any(|r| r.name == name) {
            return;
        }
        self.rules.push(RuleEntry {
            name: name.to_string(),
            at,
            condition: String::new(),
            output: String::new(),
            priority,
            tags: Vec::new(),
            enabled: false,
            exceptions: Vec::new(),
            source: "invalid".into(),
            skip_if_unknown: false,
        });
    }

    fn modify_rule(&mut self, fi: usize, i: usize, at: Loc, m: &Map, name: &str) {
        let legacy_append = get(m, "override").is_none();
        let text = |k: &str| get(m, k).and_then(text_of).map(Cow::into_owned);
        let keys_present: Vec<String> = keys(m)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !matches!(k.as_str(), "rule" | "append" | "override"))
            .collect();
        let exceptions = if get(m, "exceptions").is_some() {
            match self.exceptions(fi, at, name, m) {
                Some(e) => Some(e),
                None => return,
            }
        } else {
            None
        };
        for key in keys_present {
            let how = if legacy_append {
                // The older `append: true` appends conditions and exceptions;
                // other keys replace (Falco's documented behaviour).
                if matches!(key.as_str(), "condition" | "exceptions") {
                    How::Append
                } else {
                    How::Replace
                }
            } else {
                match self.how(at, "rule", name, m, &key) {
                    Some(How::Keep) => {
                        self.problem(
                            Severity::Error,
                            at,
                            "rule",
                            name,
                            format!(
                                "{key} is given but override does not say append or replace for it"
                            ),
                        );
                        continue;
                    }
                    Some(h) => h,
                    None => return,
                }
            };
            let r = &mut self.rules[i];
            match (key.as_str(), how) {
                ("condition", How::Append) => {
                    r.condition.push(' ');
                    r.condition.push_str(&text("condition").unwrap_or_default());
                }
                ("condition", _) => r.condition = text("condition").unwrap_or_default(),
                ("output", How::Append) => {
                    r.output.push(' ');
                    r.output.push_str(&text("output").unwrap_or_default());
                }
                ("output", _) => r.output = text("output").unwrap_or_default(),
                ("desc", _) => {}
                ("tags", How::Append) => r
                    .tags
                    .extend(get(m, "tags").and_then(strings).unwrap_or_default()),
                ("tags", _) => r.tags = get(m, "tags").and_then(strings).unwrap_or_default(),
                ("priority", _) => {
                    match text("priority").as_deref().and_then(Priority::parse_falco) {
                        Some(p) => r.priority = p,
                        None => self.problem(
                            Severity::Error,
                            at,
                            "rule",
                            name,
                            "priority is not a Falco priority",
                        ),
                    }
                }
                ("enabled", _) => match get(m, "enabled").and_then(parse_bool) {
                    Some(b) => r.enabled = b,
                    None => self.problem(
                        Severity::Error,
                        at,
                        "rule",
                        name,
                        "enabled must be true or false",
                    ),
                },
                ("exceptions", how) => {
                    let new = exceptions.clone().unwrap_or_default();
                    if how == How::Replace {
                        r.exceptions = new;
                    } else {
                        for ex in new {
                            match r.exceptions.iter_mut().find(|e| e.name == ex.name) {
                                Some(old) => {
                                    let fits = |v: &ExcValue| {
                                        old.single
                                            || matches!(v, ExcValue::Tuple(t) if t.len() == old.fields.len())
                                    };
                                    if ex.values.iter().all(fits) {
                                        old.values.extend(ex.values);
                                    } else {
                                        let n = old.fields.len();
                                        let en = ex.name.clone();
                                        self.problem(Severity::Error, at, "rule", name, format!("exception {en}: each appended value must be a list of {n} items, one per field"));
                                        return;
                                    }
                                }
                                None if ex.fields.is_empty() => {
                                    let en = ex.name.clone();
                                    self.problem(Severity::Error, at, "rule", name, format!("exception {en} has no fields and no earlier exception of that name to append to"));
                                    return;
                                }
                                None => r.exceptions.push(ex),
                            }
                        }
                    }
                }
                ("source", _) => r.source = text("source").unwrap_or_default(),
                ("skip-if-unknown-filter", _) => {
                    r.skip_if_unknown = get(m, "skip-if-unknown-filter")
                        .and_then(parse_bool)
                        .unwrap_or(false)
                }
                _ => {}
            }
        }
    }

    fn exceptions(&mut self, fi: usize, at: Loc, name: &str, m: &Map) -> Option<Vec<ExceptionDef>> {
        let Some(n) = get(m, "exceptions") else {
            return Some(Vec::new());
        };
        if is_null(n) {
            return Some(Vec::new());
        }
        let Some(items) = seq(n) else {
            self.problem(
                Severity::Error,
                at,
                "rule",
                name,
                "exceptions must be a sequence of {name, fields, comps, values}",
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items {
            let eat = self.loc(fi, item);
            let Value::Map(em) = &item.value else {
                self.problem(
                    Severity::Error,
                    eat,
                    "rule",
                    name,
                    "each exception is a mapping with name, fields, comps, values",
                );
                return None;
            };
            let Some(ename) = get(em, "name").and_then(text_of).map(Cow::into_owned) else {
                self.problem(
                    Severity::Error,
                    eat,
                    "rule",
                    name,
                    "an exception has no name",
                );
                return None;
            };
            let has_fields = get(em, "fields").is_some();
            let (fields, single) = match get(em, "fields") {
                Some(f) => match seq(f) {
                    Some(_) => (strings(f).unwrap_or_default(), false),
                    None => (strings(f).unwrap_or_default(), true),
                },
                None => (Vec::new(), false),
            };
            let comps = match get(em, "comps") {
                Some(c) => strings(c).unwrap_or_default(),
                None => vec!["=".to_string(); fields.len()],
            };
            if !single && comps.len() != fields.len() {
                self.problem(
                    Severity::Error,
                    eat,
                    "rule",
                    name,
                    format!(
                        "exception {ename}: {} fields but {} comps",
                        fields.len(),
                        comps.len()
                    ),
                );
                return None;
            }
            let values = match get(em, "values") {
                None => Vec::new(),
                Some(v) if is_null(v) => Vec::new(),
                Some(v) => match exc_value(v) {
                    ExcValue::Tuple(vs) => vs,
                    one => vec![one],
                },
            };
            // Without `fields`, this appends values to an exception of the
            // same name; their shape is checked against it when merged.
            if !single && has_fields {
                for v in &values {
                    let ok = matches!(v, ExcValue::Tuple(t) if t.len() == fields.len());
                    if !ok {
                        self.problem(
                            Severity::Error,
                            eat,
                            "rule",
                            name,
                            format!("exception {ename}: each value must be a list of {} items, one per field", fields.len()),
                        );
                        return None;
                    }
                }
            }
            out.push(ExceptionDef {
                name: ename,
                fields,
                single,
                comps,
                values,
            });
        }
        Some(out)
    }

    fn finish(mut self) -> Loaded {
        let macros: HashMap<String, MacroDef> = self
            .macros
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    MacroDef {
                        parsed: condition::parse(&e.condition),
                    },
                )
            })
            .collect();
        // Report macros that do not parse once, where they are defined.
        let mut bad: Vec<(String, Loc, String)> = self
            .macros
            .iter()
            .filter_map(|(n, e)| match &macros[n].parsed {
                Err(err) => Some((n.clone(), e.at, format!("syntax error in condition: {err}"))),
                Ok(_) => None,
            })
            .collect();
        bad.sort_by_key(|(_, at, _)| (at.file, at.line));
        for (n, at, reason) in bad {
            self.problem(Severity::Error, at, "macro", &n, reason);
        }

        let env = compile::Env {
            lists: &self.lists,
            macros: &macros,
        };
        let mut set = RuleSet::default();
        let mut problems = Vec::new();
        // What each file's rules have expanded to so far (nodes, items).
        let mut spent: HashMap<usize, (usize, usize)> = HashMap::new();
        for r in &self.rules {
            let file = self.files[r.at.file].path.clone();
            let mut info = RuleInfo {
                name: r.name.clone(),
                priority: r.priority,
                enabled: r.enabled,
                state: "failed",
                file: file.clone(),
                line: r.at.line,
                tags: r.tags.clone(),
                event_types: Vec::new(),
            };
            let problem = |severity, reason: String| Problem {
                severity,
                file: file.clone(),
                line: r.at.line,
                column: r.at.column,
                kind: "rule",
                name: r.name.clone(),
                reason,
            };
            if r.source == "invalid" {
                set.catalog.push(info);
                continue;
            }
            if r.source != "syscall" {
                info.state = "skipped";
                problems.push(problem(
                    Severity::Skipped,
                    format!(
                        "source {} is not handled by this agent (only syscall events)",
                        r.source
                    ),
                ));
                set.catalog.push(info);
                continue;
            }
            let text = with_exceptions(&r.condition, &r.exceptions);
            let file_spent = spent.entry(r.at.file).or_default();
            let budget = compile::Budget::within_file(
                compile::MAX_NODES_PER_FILE.saturating_sub(file_spent.0),
                compile::MAX_ITEMS_PER_FILE.saturating_sub(file_spent.1),
            );
            let compiled = condition::parse(&text)
                .map_err(|error| CompileError::Syntax {
                    error,
                    within: Vec::new(),
                })
                .and_then(|expr| compile::compile_within(&expr, &env, budget));
            if let Ok(c) = &compiled
                && r.enabled
            {
                file_spent.0 += c.nodes;
                file_spent.1 += c.items;
            }
            match compiled {
                Err(e) if r.skip_if_unknown && e.is_unknown_filter() => {
                    info.state = "skipped";
                    problems.push(problem(
                        Severity::Skipped,
                        format!("{e} (skip-if-unknown-filter)"),
                    ));
                }
                Err(e) => problems.push(problem(Severity::Error, e.to_string())),
                Ok(c) => {
                    if !c.unknown_types.is_empty() {
                        problems.push(problem(
                            Severity::Warning,
                            format!(
                                "evt.type values the sensor never produces: {}",
                                c.unknown_types.join(", ")
                            ),
                        ));
                    }
                    if c.types == eval::ALL_TYPES {
                        problems.push(problem(
                            Severity::Warning,
                            "the condition does not restrict evt.type, so every event meets this rule (slow)".into(),
                        ));
                    }
                    let (output, unknown) = OutputFormat::parse(&r.output);
                    if !unknown.is_empty() {
                        problems.push(problem(
                            Severity::Warning,
                            format!(
                                "output fields unknown to this engine print <NA>: {}",
                                unknown.join(", ")
                            ),
                        ));
                    }
                    info.event_types = eval::type_names(c.types);
                    if r.enabled {
                        info.state = "loaded";
                        set.rules.push(CompiledRule {
                            name: r.name.as_str().into(),
                            priority: r.priority,
                            tags: r.tags.clone(),
                            output,
                            #[cfg(test)]
                            tree: c.node.clone().behind_index(c.types),
                            node: c.node.behind_index(c.types),
                            types: c.types,
                        });
                    } else {
                        info.state = "disabled";
                    }
                }
            }
            set.catalog.push(info);
        }
        let mut index: Vec<Vec<u32>> =
            vec![Vec::new(); EventType::ALL.len() * EventClass::PER_TYPE];
        for (i, r) in set.rules.iter().enumerate() {
            for t in EventType::ALL {
                if r.types & eval::type_bit(t) == 0 {
                    continue;
                }
                for c in EventClass::all(t) {
                    if r.node.decide(c) != Some(false) {
                        index[c.slot()].push(i as u32);
                    }
                }
            }
        }
        set.index = index.into_iter().map(Vec::into_boxed_slice).collect();
        for r in &mut set.rules {
            r.node = std::mem::replace(&mut r.node, Node::Const(false)).read_fast();
        }
        set.files = self.files;
        let mut all = self.problems;
        all.extend(problems);
        Loaded { set, problems: all }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// A new definition (replaces one of the same name).
    Define,
    Append,
    Replace,
    /// `override` present but silent on this key.
    Keep,
}

fn exc_value(n: &Yaml) -> ExcValue {
    match &n.value {
        Value::Seq(items) => ExcValue::Tuple(items.iter().map(exc_value).collect()),
        _ => ExcValue::Scalar(
            text_of(n).map(Cow::into_owned).unwrap_or_default(),
            is_quoted(n),
        ),
    }
}

/// Quote a value for the condition language.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn operand_text(v: &ExcValue, comp: &str) -> String {
    let list_op = matches!(comp, "in" | "intersects" | "pmatch");
    match v {
        ExcValue::Tuple(items) => {
            let inner: Vec<String> = items.iter().map(|i| operand_text(i, "=")).collect();
            format!("({})", inner.join(", "))
        }
        // A bare name after `in` may be a list reference: leave it bare.
        ExcValue::Scalar(s, false) if list_op && !s.contains([' ', ',', '(', ')']) => {
            format!("({s})")
        }
        ExcValue::Scalar(s, _) if list_op => format!("({})", quote(s)),
        ExcValue::Scalar(s, _) => {
            // Condition-style quoting written inside YAML quotes is kept.
            let l = condition::unquote_item(s);
            quote(&l.text)
        }
    }
}

/// `(condition) and not (exception or exception ...)`, as Falco builds it.
fn with_exceptions(cond: &str, exceptions: &[ExceptionDef]) -> String {
    let mut alts = Vec::new();
    for ex in exceptions {
        if ex.single {
            let (Some(f), Some(c)) = (ex.fields.first(), ex.comps.first()) else {
                continue;
            };
            if ex.values.is_empty() {
                continue;
            }
            if matches!(c.as_str(), "in" | "intersects" | "pmatch") {
                let items: Vec<String> = ex
                    .values
                    .iter()
                    .map(|v| match v {
                        ExcValue::Scalar(s, _) => {
                            let l = condition::unquote_item(s);
                            if l.quoted { quote(&l.text) } else { s.clone() }
                        }
                        ExcValue::Tuple(_) => String::new(),
                    })
                    .collect();
                alts.push(format!("{f} {c} ({})", items.join(", ")));
            } else {
                for v in &ex.values {
                    alts.push(format!("{f} {c} {}", operand_text(v, c)));
                }
            }
            continue;
        }
        for v in &ex.values {
            let ExcValue::Tuple(items) = v else { continue };
            let parts: Vec<String> = ex
                .fields
                .iter()
                .zip(&ex.comps)
                .zip(items)
                .map(|((f, c), v)| format!("{f} {c} {}", operand_text(v, c)))
                .collect();
            alts.push(format!("({})", parts.join(" and ")));
        }
    }
    if alts.is_empty() {
        cond.to_string()
    } else {
        format!("({cond}) and not ({})", alts.join(" or "))
    }
}

/// Whether dotted version `a` is newer than `b` (`0.58.0` > `0.57.0`);
/// bare integers are Falco's old engine numbers, all older than 0.x.y.
fn version_newer(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.trim()
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (va, vb) = (parse(a), parse(b));
    if va.len() == 1 {
        return false;
    }
    va > vb
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(files: &[(&str, &str)]) -> Loaded {
        load_sources(
            files
                .iter()
                .map(|(p, t)| Source {
                    path: PathBuf::from(p),
                    text: Ok(t.to_string()),
                })
                .collect(),
        )
    }

    fn one(text: &str) -> Loaded {
        load(&[("r.yaml", text)])
    }

    fn errors(l: &Loaded) -> Vec<String> {
        l.errors().map(|p| p.to_string()).collect()
    }

    fn fires(l: &Loaded, e: &Event) -> Vec<String> {
        let mut v = Vec::new();
        l.set.for_each_match(e, |_, r| v.push(r.name.to_string()));
        v
    }

    fn exec(name: &str) -> Event {
        use crate::event::Process;
        Event::new(
            EventType::Execve,
            Arc::new(Process::new(3, 1, &format!("/bin/{name}"), &[name])),
        )
    }

    const BASE: &str = r#"
- list: shells
  items: [sh, bash]
- macro: spawned
  condition: evt.type = execve
- rule: Shell
  desc: shell
  condition: spawned and proc.name in (shells)
  output: shell %proc.name
  priority: WARNING
  tags: [a]
"#;

    #[test]
    fn all_eight_priorities_parse_in_any_case() {
        for (text, p) in [
            ("EMERGENCY", Priority::Emergency),
            ("Alert", Priority::Alert),
            ("critical", Priority::Critical),
            ("ERROR", Priority::Error),
            ("Warning", Priority::Warning),
            ("NOTICE", Priority::Notice),
            ("INFORMATIONAL", Priority::Info),
            ("info", Priority::Info),
            ("DEBUG", Priority::Debug),
        ] {
            let l = one(&BASE.replace("WARNING", text));
            assert!(errors(&l).is_empty(), "{text}: {:?}", errors(&l));
            assert_eq!(l.set.rules[0].priority, p, "{text}");
        }
        let l = one(&BASE.replace("WARNING", "LOUD"));
        assert_eq!(
            errors(&l),
            [
                "r.yaml:10:13: error: rule \"Shell\": priority \"LOUD\" is not one of emergency, alert, critical, error, warning, notice, informational, debug"
            ]
        );
        assert_eq!(l.set.catalog[0].state, "failed");
    }

    #[test]
    fn yaml_errors_carry_file_line_and_column() {
        let l = one("- rule: x\n  condition: [unclosed\n");
        let e = &l.problems[0];
        assert_eq!((e.line, e.kind), (2, "file"), "{e}");
        assert!(e.to_string().starts_with("r.yaml:2:14:"), "{e}");
        assert!(e.reason.starts_with("not valid YAML"), "{e}");
        assert!(l.set.files[0].error.is_some());
        let l = one("rule: x\n");
        assert!(
            errors(&l)[0].contains("a rules file is a YAML sequence"),
            "{:?}",
            errors(&l)
        );
    }

    #[test]
    fn a_bad_rule_is_listed_and_the_others_load() {
        let text = format!(
            "{BASE}\n- rule: Bad\n  desc: x\n  condition: spawned and k8s.pod.label.app = x\n  output: x\n  priority: INFO\n- rule: Missing\n  desc: x\n  condition: spawned\n"
        );
        let l = one(&text);
        assert_eq!(l.set.rules.len(), 1);
        assert_eq!(
            errors(&l),
            [
                "r.yaml:18:3: error: rule \"Missing\": missing key output, priority",
                "r.yaml:13:3: error: rule \"Bad\": unknown field k8s.pod.label.app (pod labels need the Kubernetes API; the agent reads only the runtime bundle)",
            ]
        );
        let states: Vec<_> = l
            .set
            .catalog
            .iter()
            .map(|r| (r.name.as_str(), r.state))
            .collect();
        assert_eq!(
            states,
            [
                ("Shell", "loaded"),
                ("Bad", "failed"),
                ("Missing", "failed")
            ]
        );
    }

    #[test]
    fn skip_if_unknown_filter_skips_instead_of_failing() {
        let text = "- rule: Labels\n  desc: x\n  condition: evt.type = execve and k8s.pod.label.app = x\n  output: x\n  priority: INFO\n  skip-if-unknown-filter: true\n";
        let l = one(text);
        assert!(!l.has_errors(), "{:?}", errors(&l));
        assert_eq!(l.problems[0].severity, Severity::Skipped);
        assert_eq!(l.set.catalog[0].state, "skipped");
        // Other errors are not unknown filters and still fail.
        let l = one(&text.replace("k8s.pod.label.app = x", "proc.pid = abc"));
        assert!(l.has_errors());
    }

    #[test]
    fn lists_macros_and_rules_append_and_override_across_files() {
        let local = r#"
- list: shells
  items: [zsh]
  append: true
- macro: spawned
  condition: and proc.pid > 0
  override:
    condition: append
- rule: Shell
  condition: and not proc.name = sh
  tags: [b]
  override:
    condition: append
    tags: append
- rule: Shell
  priority: CRITICAL
  override:
    priority: replace
"#;
        let l = load(&[("base.yaml", BASE), ("local.yaml", local)]);
        assert!(errors(&l).is_empty(), "{:?}", errors(&l));
        assert_eq!(fires(&l, &exec("zsh")), ["Shell"]);
        assert_eq!(fires(&l, &exec("bash")), ["Shell"]);
        assert!(fires(&l, &exec("sh")).is_empty());
        assert_eq!(l.set.rules[0].tags, ["a", "b"]);
        assert_eq!(l.set.rules[0].priority, Priority::Critical);
        // Replacing a list.
        let replace = "- list: shells\n  items: [ksh]\n  override:\n    items: replace\n";
        let l = load(&[("base.yaml", BASE), ("local.yaml", replace)]);
        assert_eq!(fires(&l, &exec("ksh")), ["Shell"]);
        assert!(fires(&l, &exec("bash")).is_empty());
        // Appending to something undefined is an error that names it.
        let l = load(&[("local.yaml", "- list: nope\n  items: [a]\n  append: true\n")]);
        assert_eq!(
            errors(&l),
            ["local.yaml:1:3: error: list \"nope\": appends to a list that is not defined earlier"]
        );
    }

    #[test]
    fn the_older_append_and_enabled_only_items_work() {
        let local = "- rule: Shell\n  condition: and proc.name = bash\n  append: true\n";
        let l = load(&[("base.yaml", BASE), ("local.yaml", local)]);
        assert_eq!(fires(&l, &exec("bash")), ["Shell"]);
        assert!(fires(&l, &exec("sh")).is_empty());
        let off = "- rule: Shell\n  enabled: false\n";
        let l = load(&[("base.yaml", BASE), ("local.yaml", off)]);
        assert!(l.set.rules.is_empty());
        assert_eq!(l.set.catalog[0].state, "disabled");
        assert!(errors(&l).is_empty());
    }

    #[test]
    fn exceptions_exclude_matching_tuples_and_append_by_name() {
        let text = r#"
- rule: Shell
  desc: x
  condition: evt.type = execve and proc.name in (sh, bash, zsh)
  output: x
  priority: INFO
  exceptions:
    - name: by_name_and_parent
      fields: [proc.name, proc.pname]
      comps: [=, in]
      values:
        - [bash, [sshd, login]]
    - name: by_name
      fields: proc.name
      comps: in
      values: [zsh]
"#;
        let local = "- rule: Shell\n  exceptions:\n    - name: by_name\n      values: [sh]\n  append: true\n";
        let with_parent = |name: &str, parent: &str| {
            let mut e = exec(name);
            e.ancestors = vec![Arc::new(crate::event::Process::new(
                1,
                0,
                &format!("/usr/sbin/{parent}"),
                &[parent],
            ))];
            e
        };
        let l = one(text);
        assert!(errors(&l).is_empty(), "{:?}", errors(&l));
        assert!(fires(&l, &with_parent("bash", "sshd")).is_empty());
        assert_eq!(fires(&l, &with_parent("bash", "nginx")), ["Shell"]);
        assert!(fires(&l, &with_parent("zsh", "nginx")).is_empty());
        assert_eq!(fires(&l, &with_parent("sh", "nginx")), ["Shell"]);
        let l = load(&[("base.yaml", text), ("local.yaml", local)]);
        assert!(errors(&l).is_empty(), "{:?}", errors(&l));
        assert!(fires(&l, &with_parent("sh", "nginx")).is_empty());
        // A tuple of the wrong length is an error.
        let bad = text.replace("[bash, [sshd, login]]", "[bash]");
        assert!(errors(&one(&bad))[0].contains("each value must be a list of 2 items"));
    }

    #[test]
    fn required_engine_version_is_recorded_and_a_newer_one_warned() {
        let l = one(&format!("- required_engine_version: 0.57.0\n{BASE}"));
        assert_eq!(
            l.set.files[0].required_engine_version.as_deref(),
            Some("0.57.0")
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        let l = one(&format!("- required_engine_version: 0.99.0\n{BASE}"));
        assert_eq!(l.problems[0].severity, Severity::Warning);
        assert_eq!(l.set.rules.len(), 1);
    }

    #[test]
    fn other_sources_are_skipped_not_failed() {
        let l = one(
            "- rule: Audit\n  desc: x\n  condition: ka.verb = create\n  output: x\n  priority: INFO\n  source: k8s_audit\n",
        );
        assert!(!l.has_errors());
        assert_eq!(l.set.catalog[0].state, "skipped");
    }

    #[test]
    fn globs_expand_in_order_and_an_empty_glob_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20-b.yaml"), BASE).unwrap();
        std::fs::write(
            dir.path().join("10-a.yaml"),
            "- list: shells\n  items: [x]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("30-c.yml"), "").unwrap();
        let (files, problems) = expand_files(&[dir.path().join("*.yaml")]);
        assert!(problems.is_empty());
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.yaml", "20-b.yaml"]);
        let (_, problems) = expand_files(&[dir.path().join("*.json")]);
        assert!(
            problems[0].reason.contains("no rule file matches"),
            "{:?}",
            problems
        );
        let l = load_paths(&[dir.path().join("missing.yaml")]);
        assert!(
            errors(&l)[0].contains("cannot read the file"),
            "{:?}",
            errors(&l)
        );
        // Paths from a config are used as given: a traversal is just a path that is read or not.
        let l = load_paths(&[dir.path().join("../nope/../*.yaml")]);
        assert!(l.has_errors());
    }
}
