//! Falco's condition language, parsed into an [`Expr`] tree.
//!
//! Owns the syntax only: `and`, `or`, `not`, parentheses, macro references,
//! field checks with their operator and operand, list literals, quoting and
//! the field transformers. It knows nothing about which fields exist or what
//! they hold; the compiler ([`super::compile`]) decides that.
//!
//! The grammar follows libsinsp's filter parser:
//! ```text
//! expr    := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | primary
//! primary := "(" expr ")" | MACRO | check
//! check   := field "exists" | field CMP value | field LISTOP list
//! field   := TRANSFORMER "(" field ")" | NAME ["[" ARG "]"]
//! list    := "(" [value ("," value)*] ")" | LISTNAME
//! value   := QUOTED | BARE | "val(" field ")"
//! ```
//! Bare values run until whitespace, `(`, `)`, `,`, `=`, or a quote, as in
//! Falco, so `proc.pname in (runc:[0:PARENT], runc)` reads as written.

use std::fmt;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// A bare identifier: a macro name (resolved by the compiler).
    Macro {
        name: String,
        at: usize,
    },
    Check(Box<Check>),
}

/// `field op operand`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub(crate) field: FieldExpr,
    pub(crate) op: Op,
    pub(crate) operand: Operand,
    /// Byte offset of the check in the condition text.
    pub(crate) at: usize,
}

/// A field reference, possibly wrapped in transformers
/// (`tolower(proc.name)` is `transformers = [ToLower]`, innermost last).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldExpr {
    pub(crate) transformers: Vec<Transformer>,
    pub(crate) name: String,
    pub(crate) index: Option<String>,
}

impl fmt::Display for FieldExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.transformers {
            write!(f, "{}(", t.as_str())?;
        }
        f.write_str(&self.name)?;
        if let Some(i) = &self.index {
            write!(f, "[{i}]")?;
        }
        for _ in &self.transformers {
            f.write_str(")")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transformer {
    ToLower,
    ToUpper,
    Basename,
    Len,
}

impl Transformer {
    fn parse(s: &str) -> Option<Transformer> {
        Some(match s {
            "tolower" => Transformer::ToLower,
            "toupper" => Transformer::ToUpper,
            "basename" => Transformer::Basename,
            "len" => Transformer::Len,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transformer::ToLower => "tolower",
            Transformer::ToUpper => "toupper",
            Transformer::Basename => "basename",
            Transformer::Len => "len",
        }
    }
}

/// Falco's comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    IContains,
    BContains,
    StartsWith,
    BStartsWith,
    EndsWith,
    Glob,
    IGlob,
    Regex,
    In,
    Intersects,
    PMatch,
    Exists,
}

impl Op {
    const WORDS: [(&'static str, Op); 13] = [
        ("contains", Op::Contains),
        ("icontains", Op::IContains),
        ("bcontains", Op::BContains),
        ("startswith", Op::StartsWith),
        ("bstartswith", Op::BStartsWith),
        ("endswith", Op::EndsWith),
        ("glob", Op::Glob),
        ("iglob", Op::IGlob),
        ("regex", Op::Regex),
        ("in", Op::In),
        ("intersects", Op::Intersects),
        ("pmatch", Op::PMatch),
        ("exists", Op::Exists),
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            other => Op::WORDS
                .iter()
                .find(|(_, o)| *o == other)
                .map_or("?", |(w, _)| w),
        }
    }

    /// Operators whose operand is a list.
    pub(crate) fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::PMatch)
    }
}

/// A literal as written: its text after unquoting, and whether it was quoted
/// (a bare item in a list may name a list to expand; a quoted one never does
/// in our reading, but Falco expands either, so the compiler checks both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    pub(crate) text: String,
    pub(crate) quoted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// `exists` takes none.
    None,
    Value(Literal),
    /// `val(other.field)`: compare with another field of the same event.
    Field(FieldExpr),
    /// `(a, b, c)`; items may name lists.
    List(Vec<Literal>),
    /// `in shell_binaries` without parentheses: a list reference.
    ListRef(String),
}

/// A syntax error, with the byte offset where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at column {} (near \"{near}\")", at + 1)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) at: usize,
    pub(crate) near: String,
}

/// Parse a whole condition.
pub(crate) fn parse(text: &str) -> Result<Expr, SyntaxError> {
    let mut p = Parser {
        s: text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("empty condition"));
    }
    let e = p.or_expr()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("unexpected text after the end of the expression"));
    }
    Ok(e)
}

/// Unquote a list item written in a rules file list (`'"(systemd)"'` in YAML
/// is the item `(systemd)`); a bare item is returned as it is.
pub(crate) fn unquote_item(raw: &str) -> Literal {
    let t = raw.trim();
    let bytes = t.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        let mut p = Parser {
            s: t,
            pos: 0,
            depth: 0,
        };
        if let Ok(text) = p.quoted()
            && p.at_end()
        {
            return Literal { text, quoted: true };
        }
    }
    Literal {
        text: t.to_string(),
        quoted: false,
    }
}

/// Parentheses and `not`s nest at most this deep. Real rules nest a handful
/// of levels; the limit keeps a hostile rule file from overflowing the stack
/// of the recursive parser (and of the compiler and evaluator after it).
pub(crate) const MAX_NESTING: usize = 128;

struct Parser<'a> {
    s: &'a str,
    pos: usize,
    depth: usize,
}

fn is_bare_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '(' | ')' | ',' | '=' | '"' | '\''))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Field names: identifiers joined by dots (`proc.aname`, `k8s.ns.name`).
fn is_field_char(c: char) -> bool {
    is_ident_char(c) || c == '.'
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        let near: String = self.rest().chars().take(24).collect();
        SyntaxError {
            message: message.into(),
            at: self.pos,
            near,
        }
    }

    /// The keyword `kw` at the cursor, followed by a non-identifier char.
    fn keyword(&mut self, kw: &str) -> bool {
        let rest = self.rest();
        if rest.starts_with(kw)
            && !rest[kw.len()..]
                .chars()
                .next()
                .is_some_and(|c| is_field_char(c) || c == '-')
        {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let n = rest.find(|c: char| !f(c)).unwrap_or(rest.len());
        self.pos += n;
        &rest[..n]
    }

    fn or_expr(&mut self) -> Result<Expr, SyntaxError> {
        let mut items = vec![self.and_expr()?];
        loop {
            self.skip_ws();
            if self.keyword("or") {
                items.push(self.and_expr()?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, SyntaxError> {
        let mut items = vec![self.not_expr()?];
        loop {
            self.skip_ws();
            if self.keyword("and") {
                items.push(self.not_expr()?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Expr::And(items)
        })
    }

    fn not_expr(&mut self) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!("expressions nest deeper than {MAX_NESTING} levels")));
        }
        let result = if self.keyword("not") {
            self.not_expr().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(self.error("the condition ends where an expression was expected")),
            Some('(') => {
                self.pos += 1;
                let e = self.or_expr()?;
                self.skip_ws();
                if self.peek() == Some(')') {
                    self.pos += 1;
                    Ok(e)
                } else {
                    Err(self.error("expected ')'"))
                }
            }
            Some(c) if is_ident_start(c) => {
                let word = self.take_while(is_field_char);
                if word.contains('.') || self.peek() == Some('[') || self.peek() == Some('(') {
                    self.pos = start;
                    let field = self.field()?;
                    self.check(field, start)
                } else {
                    // A macro, unless an operator follows (a field without a dot
                    // is not a Falco field; report it as such, clearly).
                    let save = self.pos;
                    self.skip_ws();
                    if self.peek_operator().is_some() {
                        self.pos = save;
                        self.pos = start;
                        let field = self.field()?;
                        return self.check(field, start);
                    }
                    self.pos = save;
                    Ok(Expr::Macro {
                        name: word.to_string(),
                        at: start,
                    })
                }
            }
            Some(_) => Err(self.error("expected a field, a macro name, 'not' or '('")),
        }
    }

    fn field(&mut self) -> Result<FieldExpr, SyntaxError> {
        self.skip_ws();
        let start = self.pos;
        let word = self.take_while(is_field_char);
        if word.is_empty() {
            return Err(self.error("expected a field name"));
        }
        if self.peek() == Some('(') {
            let Some(t) = Transformer::parse(word) else {
                self.pos = start;
                return Err(self.error(format!("unknown transformer {word}()")));
            };
            self.pos += 1;
            let mut inner = self.field()?;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error(format!("expected ')' to close {word}(")));
            }
            self.pos += 1;
            inner.transformers.insert(0, t);
            return Ok(inner);
        }
        let index = if self.peek() == Some('[') {
            self.pos += 1;
            let inner = self.take_while(|c| c != ']');
            if self.peek() != Some(']') {
                return Err(self.error("expected ']'"));
            }
            self.pos += 1;
            Some(
                inner
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string(),
            )
        } else {
            None
        };
        Ok(FieldExpr {
            transformers: Vec::new(),
            name: word.to_string(),
            index,
        })
    }

    fn peek_operator(&self) -> Option<(Op, usize)> {
        let rest = self.rest();
        for (sym, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if rest.starts_with(sym) {
                return Some((op, sym.len()));
            }
        }
        let word_len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
        let word = &rest[..word_len];
        Op::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, op)| (*op, word_len))
    }

    fn check(&mut self, field: FieldExpr, at: usize) -> Result<Expr, SyntaxError> {
        self.skip_ws();
        let Some((op, len)) = self.peek_operator() else {
            return Err(self.error(format!("expected an operator after {field}")));
        };
        self.pos += len;
        let operand = if op == Op::Exists {
            Operand::None
        } else if op.takes_list() {
            self.skip_ws();
            if self.peek() == Some('(') {
                Operand::List(self.list()?)
            } else if self.peek().is_some_and(is_ident_start) {
                let name = self.take_while(|c| is_ident_char(c) || c == '-' || c == '.');
                Operand::ListRef(name.to_string())
            } else {
                return Err(self.error(format!("expected a list after '{}'", op.as_str())));
            }
        } else {
            self.skip_ws();
            if self.rest().starts_with("val(") {
                self.pos += 4;
                let f = self.field()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(self.error("expected ')' to close val("));
                }
                self.pos += 1;
                Operand::Field(f)
            } else {
                Operand::Value(self.value()?)
            }
        };
        Ok(Expr::Check(Box::new(Check {
            field,
            op,
            operand,
            at,
        })))
    }

    fn list(&mut self) -> Result<Vec<Literal>, SyntaxError> {
        self.pos += 1; // '('
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.error("expected ',' or ')' in a list")),
            }
        }
    }

    fn value(&mut self) -> Result<Literal, SyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some('"' | '\'') => Ok(Literal {
                text: self.quoted()?,
                quoted: true,
            }),
            Some(c) if is_bare_char(c) => Ok(Literal {
                text: self.take_while(is_bare_char).to_string(),
                quoted: false,
            }),
            _ => Err(self.error("expected a value")),
        }
    }

    /// A quoted string with backslash escapes, as libsinsp reads them.
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        let mut chars = self.rest().char_indices();
        let (_, q) = chars.next().expect("caller saw a quote");
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.pos += i + c.len_utf8();
                return Ok(out);
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, e @ ('\\' | '"' | '\''))) => out.push(e),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        self.pos = start;
        Err(self.error("unterminated quoted string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: &Expr) -> &Check {
        match e {
            Expr::Check(c) => c,
            other => panic!("not a check: {other:?}"),
        }
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let e = parse("a or not b and c").unwrap();
        let Expr::Or(items) = e else { panic!() };
        assert_eq!(
            items[0],
            Expr::Macro {
                name: "a".into(),
                at: 0
            }
        );
        let Expr::And(inner) = &items[1] else {
            panic!()
        };
        assert!(matches!(&inner[0], Expr::Not(_)));
    }

    #[test]
    fn operators_without_spaces_and_bare_values_with_brackets_parse() {
        let e = parse("proc.name!=sshd").unwrap();
        assert_eq!(check(&e).op, Op::Ne);
        let e = parse("proc.pname in (runc:[0:PARENT], runc, \"a b\")").unwrap();
        let Operand::List(items) = &check(&e).operand else {
            panic!()
        };
        assert_eq!(items[0].text, "runc:[0:PARENT]");
        assert_eq!(items[2].text, "a b");
        assert!(items[2].quoted);
        let e = parse("fd.typechar=4").unwrap();
        assert_eq!(
            check(&e).operand,
            Operand::Value(Literal {
                text: "4".into(),
                quoted: false
            })
        );
    }

    #[test]
    fn indexed_fields_transformers_and_exists_parse() {
        let e = parse(
            "proc.aname[2]=sshd and tolower(basename(proc.exe)) = bash and proc.pname exists",
        )
        .unwrap();
        let Expr::And(items) = e else { panic!() };
        assert_eq!(check(&items[0]).field.index.as_deref(), Some("2"));
        let f = &check(&items[1]).field;
        assert_eq!(
            f.transformers,
            vec![Transformer::ToLower, Transformer::Basename]
        );
        assert_eq!(f.name, "proc.exe");
        assert_eq!(check(&items[2]).op, Op::Exists);
    }

    #[test]
    fn quoting_follows_falco() {
        let e = parse(r#"proc.cmdline = "sh -c \"x\"" and fd.name='it''s'"#);
        // Falco has no '' escape inside single quotes: that is two strings.
        assert!(e.is_err(), "{e:?}");
        let e = parse(r#"proc.cmdline = "sh -c \"x\"""#).unwrap();
        assert_eq!(
            check(&e).operand,
            Operand::Value(Literal {
                text: "sh -c \"x\"".into(),
                quoted: true
            })
        );
        assert_eq!(unquote_item("\"(systemd)\"").text, "(systemd)");
        assert_eq!(unquote_item("bash").text, "bash");
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = parse("proc.name = bash and (fd.name = x").unwrap_err();
        assert!(e.to_string().contains("expected ')'"), "{e}");
        let e = parse("proc.name bash").unwrap_err();
        assert!(e.message.contains("expected an operator"), "{e}");
        assert_eq!(e.at, 10);
        assert!(parse("").is_err());
        assert!(parse("a and").is_err());
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "{}proc.name = x{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nest deeper than"), "{e}");
        let nots = format!("{}proc.name = x", "not ".repeat(100_000));
        assert!(parse(&nots).is_err());
        let ok = format!("{}proc.name = x{}", "(".repeat(50), ")".repeat(50));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn empty_lists_and_list_references_parse() {
        let e = parse("proc.name in ()").unwrap();
        assert_eq!(check(&e).operand, Operand::List(vec![]));
        let e = parse("proc.name in shell_binaries").unwrap();
        assert_eq!(check(&e).operand, Operand::ListRef("shell_binaries".into()));
    }
}
