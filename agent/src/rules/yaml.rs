//! Rule-file YAML: text in, a small marked tree out, within hard limits.
//!
//! Owns which YAML a rules file may be written in and what it may cost.
//! Falco reads rule files with yaml-cpp, which is more lenient than the
//! YAML 1.2 specification: a flow collection may be continued at its key's
//! indentation (Falco's sandbox file closes `items: [` with a `]` under
//! `items`), and quoted scalars may continue under-indented. We parse with
//! `granit-parser`, a maintained fork of saphyr-parser whose default
//! indentation rules are libyaml's (PyYAML, ruamel), which accept what
//! those files use, and build the tree from its event stream ourselves:
//! without recursion, so no input can exhaust the stack, and with every
//! node counted, so no input can exhaust memory. Each refusal carries the
//! line and the limit it crossed. Never reads files: the loader hands text
//! in and walks the tree out.

use std::collections::HashMap;

use granit_parser::{ErrorKind, Event, Parser, ScalarStyle};

/// Largest rules file read. Falco's largest official file is 95 KB; this
/// leaves room for generated allow-lists while bounding what a dropped-in
/// file can make the loader read into memory.
pub(crate) const MAX_FILE_BYTES: usize = 4 << 20;

/// Deepest nesting of sequences and mappings. Falco's files nest 4 levels
/// (item, exceptions, values, tuple); a recursive walk of 64 levels is
/// nothing for any thread's stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// Alias uses (`*name`) per file. Falco's files use none; each one copies
/// its anchor's content, so they are counted and their copies are charged
/// to [`MAX_TREE_BYTES`].
pub(crate) const MAX_ALIASES: usize = 1_000;

/// Memory the tree of one file may take, alias copies included: about a
/// hundred times what Falco's largest official file needs (~250 KB), and
/// small next to the agent's whole memory budget.
pub(crate) const MAX_TREE_BYTES: usize = 16 << 20;

/// A node with where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// How a scalar was written: quoting matters to the condition language
/// (`'"(systemd)"'` keeps its inner quotes) and to null detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Quoted,
    /// A `|` or `>` block scalar.
    Block,
}

/// Why a file is not loadable YAML, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) reason: String,
}

/// Cost charged for every node, on top of a scalar's text.
const NODE_BYTES: usize = std::mem::size_of::<Node>();

/// Parse every document of `text` into a tree.
pub(crate) fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(YamlError {
            line: 0,
            column: 0,
            reason: too_large(text.len()),
        });
    }
    // Nesting past the limit stops the parser itself, flow or block, so
    // its own state stays bounded too; the builder checks the two combined.
    let options = granit_parser::options! {
        block_nesting_limit: MAX_DEPTH,
        flow_nesting_limit: MAX_DEPTH,
        emit_comments: false,
    };
    let mut b = Builder::default();
    for ev in Parser::new_from_str_with_options(text, options) {
        let (ev, span) = ev.map_err(|e| {
            let m = e.marker();
            let reason = match e.kind() {
                ErrorKind::RecursionLimitExceeded => too_deep(),
                _ => format!("not valid YAML: {}", e.info()),
            };
            YamlError {
                line: m.line(),
                column: m.col() + 1,
                reason,
            }
        })?;
        let at = (span.start.line() as u32, span.start.col() as u32 + 1);
        b.event(ev, at).map_err(|reason| YamlError {
            line: at.0 as usize,
            column: at.1 as usize,
            reason,
        })?;
    }
    Ok(b.docs)
}

/// The message for a file over [`MAX_FILE_BYTES`].
pub(crate) fn too_large(bytes: usize) -> String {
    format!(
        "the file is {bytes} bytes, over the limit of {MAX_FILE_BYTES} bytes for one rules file; split it"
    )
}

fn too_deep() -> String {
    format!(
        "sequences and mappings nest deeper than {MAX_DEPTH} levels (rules files need 4); the file is refused"
    )
}

/// A collection being read, with what it has cost so far.
struct Frame {
    at: (u32, u32),
    anchor: usize,
    bytes: usize,
    open: Open,
}

enum Open {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    /// Anchored nodes by id, with the bytes a copy costs.
    anchors: HashMap<usize, (Node, usize)>,
    aliases: usize,
    spent: usize,
}

impl Builder {
    fn event(&mut self, ev: Event<'_>, at: (u32, u32)) -> Result<(), String> {
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                let bytes = NODE_BYTES + text.len();
                self.charge(bytes)?;
                let node = Node {
                    line: at.0,
                    column: at.1,
                    value: Value::Scalar(text.into_owned(), style),
                };
                self.complete(node, bytes, anchor)
            }
            Event::SequenceStart(_, anchor, _) => self.open(at, anchor, Open::Seq(Vec::new())),
            Event::MappingStart(_, anchor, _) => self.open(at, anchor, Open::Map(Vec::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(f) = self.stack.pop() else {
                    return Err("not valid YAML: a collection ends that never started".into());
                };
                let value = match f.open {
                    Open::Seq(items) => Value::Seq(items),
                    Open::Map(pairs, _) => Value::Map(pairs),
                };
                let node = Node {
                    line: f.at.0,
                    column: f.at.1,
                    value,
                };
                self.complete(node, f.bytes, f.anchor)
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > MAX_ALIASES {
                    return Err(format!(
                        "more than {MAX_ALIASES} aliases (*name) in one file; the file is refused"
                    ));
                }
                let Some((node, bytes)) = self.anchors.get(&id) else {
                    return Err("not valid YAML: an alias to an unknown anchor".into());
                };
                let (mut node, bytes) = (node.clone(), *bytes);
                self.charge(bytes)?;
                node.line = at.0;
                node.column = at.1;
                self.complete(node, bytes, 0)
            }
            // Stream and document markers carry nothing; a document's root
            // arrives as a completed node.
            _ => Ok(()),
        }
    }

    fn open(&mut self, at: (u32, u32), anchor: usize, open: Open) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.charge(NODE_BYTES)?;
        self.stack.push(Frame {
            at,
            anchor,
            bytes: NODE_BYTES,
            open,
        });
        Ok(())
    }

    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > MAX_TREE_BYTES {
            return Err(format!(
                "the file expands to more than {MAX_TREE_BYTES} bytes of YAML nodes (aliases copy their anchor's content); the file is refused"
            ));
        }
        Ok(())
    }

    /// A node is read: remember it if anchored, and hand it to its parent.
    fn complete(&mut self, node: Node, bytes: usize, anchor: usize) -> Result<(), String> {
        if anchor != 0 {
            // The stored copy is memory too.
            self.charge(bytes)?;
            self.anchors.insert(anchor, (node.clone(), bytes));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.docs.push(node);
            return Ok(());
        };
        parent.bytes += bytes;
        match &mut parent.open {
            Open::Seq(items) => items.push(node),
            Open::Map(pairs, key) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(n: &Node) -> &str {
        match &n.value {
            Value::Scalar(s, _) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    fn seq(n: &Node) -> &[Node] {
        match &n.value {
            Value::Seq(s) => s,
            other => panic!("not a sequence: {other:?}"),
        }
    }

    fn map(n: &Node) -> &[(Node, Node)] {
        match &n.value {
            Value::Map(m) => m,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn a_flow_list_may_close_at_its_keys_indentation_as_in_falcos_sandbox_file() {
        let text = "- list: miner_domains\n  items: [\n    \"a.example\",\n    \"b.example\"\n  ]\n- list: next\n  items: [x]\n";
        let docs = parse(text).unwrap();
        let items = seq(&docs[0]);
        assert_eq!(items.len(), 2);
        let (k, v) = &map(&items[0])[1];
        assert_eq!(scalar(k), "items");
        let names: Vec<&str> = seq(v).iter().map(scalar).collect();
        assert_eq!(names, ["a.example", "b.example"]);
        assert_eq!((v.line, v.column), (2, 10));
        assert_eq!(scalar(&map(&items[1])[0].1), "next");
    }

    #[test]
    fn flow_items_may_sit_left_of_their_key() {
        let text = "- list: l\n  items: [\na,\n b]\n";
        let docs = parse(text).unwrap();
        let v = &map(&seq(&docs[0])[0])[1].1;
        let names: Vec<&str> = seq(v).iter().map(scalar).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_quoted_scalar_may_continue_under_indented() {
        let text = "- macro: m\n  condition: \"proc.name = a\nand proc.pid > 1\"\n";
        let docs = parse(text).unwrap();
        let (_, v) = &map(&seq(&docs[0])[0])[1];
        assert_eq!(scalar(v), "proc.name = a and proc.pid > 1");
        assert_eq!(v.value, Value::Scalar(scalar(v).into(), Style::Quoted));
    }

    #[test]
    fn block_scalars_keep_their_text_and_style() {
        let text = "- rule: r\n  condition: >\n    evt.type = execve\n    and proc.name = sh\n  output: |\n    a\n";
        let docs = parse(text).unwrap();
        let m = map(&seq(&docs[0])[0]);
        assert_eq!(scalar(&m[1].1), "evt.type = execve and proc.name = sh\n");
        assert_eq!(
            m[2].1.value,
            Value::Scalar("a\n".into(), Style::Block),
            "literal"
        );
    }

    #[test]
    fn ten_thousand_nested_sequences_are_refused_with_the_line_and_the_limit() {
        let text = "- ".repeat(10_000) + "x\n";
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("deeper than 64 levels"), "{e:?}");
        // Flow nesting, and the two mixed, stop at the same limit.
        let flow = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(parse(&flow).unwrap_err().reason.contains("deeper than 64"));
        let mixed = "- ".repeat(40) + &"[".repeat(40) + "x" + &"]".repeat(40);
        assert!(parse(&mixed).unwrap_err().reason.contains("deeper than 64"));
        // One level less than the limit loads.
        let ok = "- ".repeat(MAX_DEPTH) + "x\n";
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn deep_nesting_on_a_later_line_names_that_line() {
        let text = format!("- list: a\n  items: [b]\n{}x\n", "- ".repeat(200));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
    }

    #[test]
    fn aliases_copy_their_anchor_and_are_counted() {
        let docs = parse("- &x [a, b]\n- *x\n").unwrap();
        let items = seq(&docs[0]);
        assert_eq!(items[0].value, items[1].value);
        assert_eq!(items[1].line, 2, "an alias is placed where it is used");
        let many = format!("- &x a\n{}", "- *x\n".repeat(MAX_ALIASES + 1));
        let e = parse(&many).unwrap_err();
        assert!(e.reason.contains("more than 1000 aliases"), "{e:?}");
        assert_eq!(e.line as usize, MAX_ALIASES + 2);
    }

    #[test]
    fn a_billion_laughs_is_refused_by_the_tree_budget() {
        let mut text = String::from("- &a0 [\"lol lol lol lol lol lol lol lol lol lol\"]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "- &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
            ));
        }
        let e = parse(&text).unwrap_err();
        assert!(e.reason.contains("expands to more than"), "{e:?}");
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_before_parsing() {
        let text = "#".repeat(MAX_FILE_BYTES + 1);
        let e = parse(&text).unwrap_err();
        assert!(
            e.reason.contains("over the limit of 4194304 bytes"),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_keep_their_line_and_column() {
        let e = parse("- rule: x\n  condition: [unclosed\n").unwrap_err();
        assert_eq!(
            (e.line, e.column),
            (2, 14),
            "where the bracket opens: {e:?}"
        );
        assert!(e.reason.starts_with("not valid YAML"), "{e:?}");
    }

    #[test]
    fn several_documents_are_read_in_order() {
        let docs = parse("- a\n---\n- b\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(scalar(&seq(&docs[1])[0]), "b");
    }
}
