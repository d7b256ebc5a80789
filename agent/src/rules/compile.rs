//! The condition compiler and evaluator: a parsed [`Expr`] plus the rule
//! set's lists and macros become a [`Node`] tree that evaluates an
//! [`Event`] without parsing, formatting or allocating.
//!
//! Owns what each field and operator means on the hot path. Work that can be
//! done once is done here: literals are parsed into the field's kind, `in`
//! lists become sets, `icontains` literals are lowered, globs and regexes
//! compile, `evt.arg.flags contains O_TRUNC` becomes a bit test, and
//! `evt.res` / `evt.arg.request` / `evt.arg.domain` predicates become table
//! look-ups on the raw value, so the renderer in `event.rs` is never called
//! for them, and user names compared with `evt.arg.uid` become uids (from
//! the node's `/etc/passwd`, read once at load). Never reads anything but
//! the event it is given while evaluating.
//!
//! Absent values follow Falco: every comparison with an absent value is
//! false (`!=` too), `exists` is false, and `not` inverts the result.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Arg, Event, EventType, Field, FieldError, FieldKind, FieldValue, exe_flags};

use super::condition::{self, Check, Expr, FieldExpr, Literal, Op, Operand, Transformer};
use super::glob::Glob;
use super::strset::StrSet;

/// Bit set of event types ([`EventType::index`]); 38 types fit in a `u64`.
pub type TypeMask = u64;

pub const ALL_TYPES: TypeMask = (1u64 << EventType::ALL.len()) - 1;

pub fn type_bit(t: EventType) -> TypeMask {
    1u64 << t.index()
}

/// The names in a mask, for messages and `rules list`.
pub fn type_names(mask: TypeMask) -> Vec<&'static str> {
    EventType::ALL
        .iter()
        .filter(|t| mask & type_bit(**t) != 0)
        .map(|t| t.as_str())
        .collect()
}

/// A named list as the compiler sees it (items already unquoted).
#[derive(Debug, Clone, Default)]
pub struct ListDef {
    pub items: Vec<Literal>,
}

/// A macro: its parsed condition (or why it does not parse).
#[derive(Debug, Clone)]
pub struct MacroDef {
    pub parsed: Result<Expr, condition::SyntaxError>,
}

/// Lists and macros a condition may name.
pub struct Env<'a> {
    pub lists: &'a HashMap<String, ListDef>,
    pub macros: &'a HashMap<String, MacroDef>,
}

/// Why a condition does not compile. `Display` is the precise reason shown
/// in `rules check`, status and logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("syntax error{}: {error}", in_macro(.within))]
    Syntax {
        error: condition::SyntaxError,
        within: Vec<String>,
    },
    #[error("unknown field {field}{}{}", hint(.field), in_macro(.within))]
    UnknownField { field: String, within: Vec<String> },
    #[error("{error}{}", in_macro(.within))]
    BadField {
        error: FieldError,
        within: Vec<String>,
    },
    #[error("field {field} is never filled by this agent's sensor, so a condition on it could never be true (outputs may still print it){}", in_macro(.within))]
    NotCollected { field: String, within: Vec<String> },
    #[error("unknown macro or list {name}{}", in_macro(.within))]
    UnknownName { name: String, within: Vec<String> },
    #[error("macro {name} nests macros deeper than {max} levels")]
    MacroDepth { name: String, max: usize },
    #[error("macro {name} refers to itself{}", in_macro(.within))]
    MacroCycle { name: String, within: Vec<String> },
    #[error("{field} {op}: {reason}{}", in_macro(.within))]
    Operator {
        field: String,
        op: &'static str,
        reason: String,
        within: Vec<String>,
    },
    #[error("the condition can match no event type this agent's sensor produces{}", unknown_types(.unknown))]
    NoEventType { unknown: Vec<String> },
}

impl CompileError {
    /// Whether `skip-if-unknown-filter: true` turns this failure into a skip.
    pub fn is_unknown_filter(&self) -> bool {
        matches!(self, CompileError::UnknownField { .. })
    }
}

fn in_macro(within: &[String]) -> String {
    if within.is_empty() {
        String::new()
    } else {
        format!(" (in macro {})", within.join(" > "))
    }
}

fn unknown_types(unknown: &[String]) -> String {
    if unknown.is_empty() {
        String::new()
    } else {
        format!(
            " (evt.type values it names that the sensor never produces: {})",
            unknown.join(", ")
        )
    }
}

/// Why well-known Falco fields are missing here, for a precise reason.
fn hint(field: &str) -> &'static str {
    match field {
        "fd.sip.name" | "fd.cip.name" | "fd.rip.name" | "fd.lip.name" => {
            " (Falco resolves peer host names through DNS; this agent does not: compare fd.sip with the address instead)"
        }
        "fd.connected" | "fd.name_changed" => {
            " (the sensor keeps no per-fd socket state; it reports connect/accept results only)"
        }
        f if f.starts_with("k8s.pod.label") || f.starts_with("k8s.ns.label") => {
            " (pod labels need the Kubernetes API; the agent reads only the runtime bundle)"
        }
        f if f.starts_with("proc.exe_ino") => {
            " (the sensor does not record executable inode times)"
        }
        _ => "",
    }
}

/// A compiled condition: the evaluator plus the event types it can match.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub node: Node,
    pub types: TypeMask,
    /// `evt.type` names the sensor never produces (the branches naming them
    /// can never be true); a warning when `types` is still non-empty.
    pub unknown_types: Vec<String>,
}

/// Compile a parsed condition.
pub fn compile(expr: &Expr, env: &Env<'_>) -> Result<Compiled, CompileError> {
    let mut c = Compiler {
        env,
        stack: Vec::new(),
        unknown_types: Vec::new(),
    };
    let node = c.expr(expr)?.simplify().order_by_cost();
    let types = node.may_types();
    let mut unknown = c.unknown_types;
    unknown.sort();
    unknown.dedup();
    if types == 0 {
        return Err(CompileError::NoEventType { unknown });
    }
    Ok(Compiled {
        node,
        types,
        unknown_types: unknown,
    })
}

// ---- the evaluator ---------------------------------------------------------

/// The compiled form of a condition.
#[derive(Debug, Clone)]
pub enum Node {
    Const(bool),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    /// `evt.type` in a set.
    Types(TypeMask),
    Pred(Box<Pred>),
}

impl Node {
    #[inline]
    pub fn eval(&self, e: &Event) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::And(items) => items.iter().all(|n| n.eval(e)),
            Node::Or(items) => items.iter().any(|n| n.eval(e)),
            Node::Not(n) => !n.eval(e),
            Node::Types(m) => m & type_bit(e.evt.ty) != 0,
            Node::Pred(p) => p.eval(e),
        }
    }

    /// Event types for which the node may be true.
    pub fn may_types(&self) -> TypeMask {
        match self {
            Node::Const(b) => {
                if *b {
                    ALL_TYPES
                } else {
                    0
                }
            }
            Node::Types(m) => *m,
            Node::Pred(_) => ALL_TYPES,
            Node::And(items) => items.iter().fold(ALL_TYPES, |a, n| a & n.may_types()),
            Node::Or(items) => items.iter().fold(0, |a, n| a | n.may_types()),
            Node::Not(n) => ALL_TYPES & !n.must_types(),
        }
    }

    /// Event types for which the node is true whatever the event's other fields.
    fn must_types(&self) -> TypeMask {
        match self {
            Node::Const(b) => {
                if *b {
                    ALL_TYPES
                } else {
                    0
                }
            }
            Node::Types(m) => *m,
            Node::Pred(_) => 0,
            Node::And(items) => items.iter().fold(ALL_TYPES, |a, n| a & n.must_types()),
            Node::Or(items) => items.iter().fold(0, |a, n| a | n.must_types()),
            Node::Not(n) => ALL_TYPES & !n.may_types(),
        }
    }

    /// A rough cost of evaluating the node, to test cheap things first.
    pub fn cost(&self) -> u32 {
        match self {
            Node::Const(_) | Node::Types(_) => 0,
            Node::And(items) | Node::Or(items) => items.iter().map(Node::cost).sum(),
            Node::Not(n) => n.cost(),
            Node::Pred(p) => p.cost(),
        }
    }

    /// Put the children of every `and` / `or` in order of cost (stable, so
    /// equal costs keep the author's order). Evaluation is pure, so order
    /// changes only how soon a short circuit happens, never the result.
    fn order_by_cost(self) -> Node {
        match self {
            Node::And(items) | Node::Or(items) if items.is_empty() => Node::Const(true),
            Node::And(items) => {
                let mut v: Vec<Node> = items
                    .into_vec()
                    .into_iter()
                    .map(Node::order_by_cost)
                    .collect();
                v.sort_by_key(Node::cost);
                Node::And(v.into_boxed_slice())
            }
            Node::Or(items) => {
                let mut v: Vec<Node> = items
                    .into_vec()
                    .into_iter()
                    .map(Node::order_by_cost)
                    .collect();
                v.sort_by_key(Node::cost);
                Node::Or(v.into_boxed_slice())
            }
            Node::Not(n) => Node::Not(Box::new(n.order_by_cost())),
            n => n,
        }
    }

    /// The node as evaluated behind the event-type index: `evt.type` tests
    /// at the top of the condition that every indexed type passes are dropped.
    pub fn behind_index(self, types: TypeMask) -> Node {
        match self {
            Node::Types(m) if types & !m == 0 => Node::Const(true),
            Node::And(items) => {
                let mut v: Vec<Node> = items
                    .into_vec()
                    .into_iter()
                    .filter(|n| !matches!(n, Node::Types(m) if types & !m == 0))
                    .collect();
                match v.len() {
                    0 => Node::Const(true),
                    1 => v.pop().expect("one"),
                    _ => Node::And(v.into_boxed_slice()),
                }
            }
            n => n,
        }
    }

    /// Fold constants (`never_true` style macros, empty lists) and flatten.
    fn simplify(self) -> Node {
        match self {
            Node::And(items) => fold_junction(items, true),
            Node::Or(items) => fold_junction(items, false),
            Node::Not(n) => match n.simplify() {
                Node::Const(b) => Node::Const(!b),
                Node::Not(inner) => *inner,
                n => Node::Not(Box::new(n)),
            },
            n => n,
        }
    }

    /// Number of nodes (for `rules list` and memory figures).
    pub fn size(&self) -> usize {
        match self {
            Node::And(items) | Node::Or(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Node::Not(n) => 1 + n.size(),
            _ => 1,
        }
    }
}

/// Simplify the items of an `and` (`is_and`) or an `or`: the junction's
/// identity constant disappears, its absorbing constant decides the whole,
/// nested junctions of the same kind are flattened.
fn fold_junction(items: Box<[Node]>, is_and: bool) -> Node {
    let identity = is_and;
    let mut out = Vec::new();
    for n in items.into_vec() {
        match n.simplify() {
            Node::Const(b) if b == identity => {}
            Node::Const(_) => return Node::Const(!identity),
            Node::And(inner) if is_and => out.extend(inner.into_vec()),
            Node::Or(inner) if !is_and => out.extend(inner.into_vec()),
            n => out.push(n),
        }
    }
    match out.len() {
        0 => Node::Const(identity),
        1 => out.pop().expect("one"),
        _ if is_and => Node::And(out.into_boxed_slice()),
        _ => Node::Or(out.into_boxed_slice()),
    }
}

/// Where a predicate reads its value.
#[derive(Debug, Clone)]
pub enum Reader {
    Field(Field),
    /// `proc.duration`: event time minus process start (absent when unknown).
    ProcDuration,
    /// `proc.aname` / `proc.apid` without index: true if any ancestor matches.
    AncestorNames,
    AncestorPids,
    /// `container.mount.dest` / `.source`: Falco's list-field semantics.
    MountDests,
    MountSources,
}

impl Reader {
    fn kind(&self) -> FieldKind {
        match self {
            Reader::Field(f) => f.kind(),
            Reader::ProcDuration => FieldKind::Int,
            Reader::AncestorNames => FieldKind::List,
            Reader::AncestorPids => FieldKind::Int,
            Reader::MountDests | Reader::MountSources => FieldKind::List,
        }
    }
}

/// One comparison.
#[derive(Debug, Clone)]
pub enum Pred {
    /// A value test on a field (optionally transformed).
    Value {
        reader: Reader,
        transformers: Box<[Transformer]>,
        test: Test,
    },
    /// `evt.arg.flags contains NAME` on open and exec events: a bit test on
    /// the raw flags; other event types use `slow`.
    Flags {
        open: Option<FlagMatch>,
        exec: Option<FlagMatch>,
        slow: Box<Pred>,
    },
    /// `evt.res` predicates as a table over the raw result.
    Res(Box<ResTable>),
    /// Predicates on an argument rendered from a small table of names
    /// (`evt.arg.request`, `evt.arg.domain`, `evt.arg.type`).
    EnumArg {
        arg: Arg,
        /// Every raw value that has a name, with the predicate's answer.
        table: Box<[(u64, bool)]>,
        /// The answer for raw values without a name.
        otherwise: bool,
    },
    /// `a = val(b)` / `a != val(b)`.
    FieldEq { a: Reader, b: Reader, negate: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagMatch {
    /// The name is printed when these bits are all set.
    Bits(u64),
    /// `O_RDONLY` / `O_WRONLY` / `O_RDWR`: the access mode equals this.
    AccMode(u64),
    /// `O_RDONLY`: printed for any access mode that is not write or read-write.
    ReadOnly,
    /// The name is never printed for this event type.
    Never,
}

impl FlagMatch {
    #[inline]
    fn test(self, flags: u64) -> bool {
        match self {
            FlagMatch::Bits(b) => flags & b == b,
            FlagMatch::AccMode(m) => flags & libc::O_ACCMODE as u64 == m,
            FlagMatch::ReadOnly => !matches!(
                (flags & libc::O_ACCMODE as u64) as i32,
                libc::O_WRONLY | libc::O_RDWR
            ),
            FlagMatch::Never => false,
        }
    }
}

/// `evt.res` answers: for success, and for each errno up to 4095.
#[derive(Debug, Clone)]
pub struct ResTable {
    success: bool,
    errno: [u64; 64],
    slow: Pred,
}

/// A value test, by the value's kind.
#[derive(Debug, Clone)]
pub enum Test {
    Exists,
    Str(StrTest),
    Int(IntTest),
    Bool { want: bool, negate: bool },
    Ip(IpTest),
}

#[derive(Debug, Clone)]
pub enum StrTest {
    Eq(Box<str>),
    Ne(Box<str>),
    Lt(Box<str>),
    Le(Box<str>),
    Gt(Box<str>),
    Ge(Box<str>),
    /// A substring searcher built once (std's `contains` rebuilds one per call).
    Contains(Box<memchr::memmem::Finder<'static>>),
    /// The literal, lowered once.
    IContains(Box<[u8]>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    Glob(Glob),
    Regex(regex::Regex),
    In(StrSet),
    /// Falco's `intersects` on list fields: any value in the set.
    Intersects(StrSet),
    /// Path prefixes without trailing slash (`/` kept as is).
    PMatch(Box<[Box<str>]>),
}

#[derive(Debug, Clone)]
pub enum IntTest {
    Cmp(CmpOp, i64),
    In(Box<[i64]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub enum IpTest {
    Eq(IpAddr),
    Ne(IpAddr),
    In(Box<[IpAddr]>),
    /// CIDR networks (`fd.net`, `fd.snet`, ...).
    InNet(Box<[IpNet]>),
    NotInNet(Box<[IpNet]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim().parse().ok()?
        };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            (IpAddr::V4(n), IpAddr::V6(a)) => a.to_ipv4_mapped().is_some_and(|a| {
                IpNet {
                    addr: IpAddr::V4(n),
                    prefix: self.prefix,
                }
                .contains(IpAddr::V4(a))
            }),
            _ => false,
        }
    }
}

impl Pred {
    fn cost(&self) -> u32 {
        match self {
            Pred::Flags { .. } | Pred::Res(_) | Pred::EnumArg { .. } => 1,
            Pred::FieldEq { .. } => 4,
            Pred::Value {
                reader,
                transformers,
                test,
            } => {
                let read = match reader {
                    Reader::Field(
                        Field::EvtArgs
                        | Field::ThreadCapEffective
                        | Field::EvtRes
                        | Field::EvtArg(_)
                        | Field::EvtArgIndex(_),
                    ) => 6,
                    Reader::Field(_) | Reader::ProcDuration => 1,
                    Reader::AncestorNames | Reader::AncestorPids => 6,
                    Reader::MountDests | Reader::MountSources => 4,
                };
                let t = match test {
                    Test::Exists | Test::Bool { .. } | Test::Int(IntTest::Cmp(..)) => 0,
                    Test::Int(IntTest::In(_)) | Test::Ip(_) => 1,
                    Test::Str(
                        StrTest::Eq(_)
                        | StrTest::Ne(_)
                        | StrTest::StartsWith(_)
                        | StrTest::EndsWith(_),
                    ) => 1,
                    Test::Str(
                        StrTest::Lt(_) | StrTest::Le(_) | StrTest::Gt(_) | StrTest::Ge(_),
                    ) => 1,
                    Test::Str(StrTest::In(_) | StrTest::Intersects(_)) => 2,
                    Test::Str(StrTest::PMatch(p)) => 1 + p.len() as u32,
                    Test::Str(StrTest::Contains(_)) => 3,
                    Test::Str(StrTest::IContains(_) | StrTest::Glob(_)) => 5,
                    Test::Str(StrTest::Regex(_)) => 10,
                };
                read + t + 8 * transformers.len() as u32
            }
        }
    }

    #[inline]
    pub fn eval(&self, e: &Event) -> bool {
        match self {
            Pred::Value {
                reader,
                transformers,
                test,
            } => eval_value(reader, transformers, test, e),
            Pred::Flags { open, exec, slow } => {
                let ty = e.evt.ty;
                let fast = if ty.is_open() {
                    open
                } else if ty.is_exec() {
                    exec
                } else {
                    &None
                };
                match fast {
                    Some(m) => e.evt.args.flags.is_some_and(|f| m.test(f)),
                    None => slow.eval(e),
                }
            }
            Pred::Res(t) => {
                let r = e.evt.res;
                if r >= 0 {
                    t.success
                } else if r >= -4095 {
                    let n = (-r) as usize;
                    t.errno[n / 64] & (1u64 << (n % 64)) != 0
                } else {
                    t.slow.eval(e)
                }
            }
            Pred::EnumArg {
                arg,
                table,
                otherwise,
            } => {
                let a = &e.evt.args;
                let raw = match arg {
                    Arg::Request => a.request,
                    Arg::Domain => a.domain.map(u64::from),
                    Arg::Type => a.sock_type.map(u64::from),
                    _ => None,
                };
                match raw {
                    None => false,
                    Some(v) => match table.binary_search_by_key(&v, |(k, _)| *k) {
                        Ok(i) => table[i].1,
                        Err(_) => *otherwise,
                    },
                }
            }
            Pred::FieldEq { a, b, negate } => {
                let (va, vb) = (read_plain(a, e), read_plain(b, e));
                if va.is_absent() || vb.is_absent() {
                    return false;
                }
                let eq = match (&va, &vb) {
                    (FieldValue::Int(x), FieldValue::Str(y))
                    | (FieldValue::Str(y), FieldValue::Int(x)) => y.parse::<i64>().ok() == Some(*x),
                    _ => va == vb,
                };
                eq != *negate
            }
        }
    }
}

/// Read a single value (lists are read whole; only used off the hot path).
fn read_plain<'e>(r: &Reader, e: &'e Event) -> FieldValue<'e> {
    match r {
        Reader::Field(f) => e.field(f),
        Reader::ProcDuration => proc_duration(e),
        Reader::AncestorNames => e.field(&Field::ProcAnameAny),
        Reader::AncestorPids => e.field(&Field::ProcApidAny),
        Reader::MountDests => e.field(&Field::ContainerMountDest),
        Reader::MountSources => e.field(&Field::ContainerMountSource),
    }
}

/// `proc.duration` in nanoseconds.
pub fn proc_duration(e: &Event) -> FieldValue<'static> {
    if e.proc.start_time == 0 || e.evt.time < e.proc.start_time {
        FieldValue::Absent
    } else {
        FieldValue::Int((e.evt.time - e.proc.start_time) as i64)
    }
}

fn eval_value(reader: &Reader, transformers: &[Transformer], test: &Test, e: &Event) -> bool {
    match reader {
        Reader::AncestorNames => {
            if matches!(test, Test::Exists) {
                return !e.ancestors.is_empty();
            }
            e.ancestors
                .iter()
                .any(|p| test_str_value(&p.name, transformers, test))
        }
        Reader::AncestorPids => {
            if matches!(test, Test::Exists) {
                return !e.ancestors.is_empty();
            }
            e.ancestors.iter().any(|p| match test {
                Test::Int(t) => t.test(i64::from(p.pid)),
                _ => test_str_value(&p.pid.to_string(), transformers, test),
            })
        }
        Reader::MountDests | Reader::MountSources => {
            let dest = matches!(reader, Reader::MountDests);
            let mut values = e.container.mounts.iter().map(|m| {
                if dest {
                    m.dest.as_str()
                } else {
                    m.source.as_str()
                }
            });
            match test {
                Test::Exists => !e.container.mounts.is_empty(),
                // Falco: `in` on a list field holds when every value is in the set.
                Test::Str(StrTest::In(set)) => {
                    !e.container.mounts.is_empty() && values.all(|v| set.contains(v))
                }
                _ => values.any(|v| test_str_value(v, transformers, test)),
            }
        }
        Reader::ProcDuration => match (proc_duration(e), test) {
            (FieldValue::Absent, _) => false,
            (_, Test::Exists) => true,
            (FieldValue::Int(v), Test::Int(t)) => t.test(v),
            _ => false,
        },
        Reader::Field(f) => {
            let v = e.field(f);
            match (&v, test) {
                (FieldValue::Absent, _) => false,
                (FieldValue::List(items), Test::Exists) => !items.is_empty(),
                (_, Test::Exists) => true,
                (FieldValue::Str(s), _) => test_str_value(s, transformers, test),
                (FieldValue::Int(i), Test::Int(t)) if transformers.is_empty() => t.test(*i),
                (FieldValue::Int(i), _) => test_str_value(&i.to_string(), transformers, test),
                (FieldValue::Bool(b), Test::Bool { want, negate }) => (b == want) != *negate,
                (FieldValue::Ip(ip), Test::Ip(t)) => t.test(*ip),
                (FieldValue::List(items), _) => {
                    items.iter().any(|s| test_str_value(s, transformers, test))
                }
                _ => false,
            }
        }
    }
}

/// Apply transformers (innermost first) and test a string value.
fn test_str_value(s: &str, transformers: &[Transformer], test: &Test) -> bool {
    if transformers.is_empty() {
        return match test {
            Test::Str(t) => t.test(s),
            _ => false,
        };
    }
    let mut cur = std::borrow::Cow::Borrowed(s);
    for t in transformers.iter().rev() {
        match t {
            Transformer::ToLower => cur = std::borrow::Cow::Owned(cur.to_ascii_lowercase()),
            Transformer::ToUpper => cur = std::borrow::Cow::Owned(cur.to_ascii_uppercase()),
            Transformer::Basename => {
                cur = match cur {
                    std::borrow::Cow::Borrowed(b) => std::borrow::Cow::Borrowed(basename(b)),
                    std::borrow::Cow::Owned(o) => std::borrow::Cow::Owned(basename(&o).to_string()),
                }
            }
            Transformer::Len => {
                let n = cur.len() as i64;
                return match test {
                    Test::Int(t) => t.test(n),
                    _ => false,
                };
            }
        }
    }
    match test {
        Test::Str(t) => t.test(&cur),
        _ => false,
    }
}

fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

impl StrTest {
    #[inline]
    pub fn test(&self, s: &str) -> bool {
        match self {
            StrTest::Eq(v) => s == &**v,
            StrTest::Ne(v) => s != &**v,
            StrTest::Lt(v) => s < &**v,
            StrTest::Le(v) => s <= &**v,
            StrTest::Gt(v) => s > &**v,
            StrTest::Ge(v) => s >= &**v,
            StrTest::Contains(f) => f.find(s.as_bytes()).is_some(),
            StrTest::IContains(v) => icontains(s.as_bytes(), v),
            StrTest::StartsWith(v) => s.starts_with(&**v),
            StrTest::EndsWith(v) => s.ends_with(&**v),
            StrTest::Glob(g) => g.matches(s),
            StrTest::Regex(r) => r.is_match(s),
            StrTest::In(set) | StrTest::Intersects(set) => set.contains(s),
            StrTest::PMatch(prefixes) => prefixes.iter().any(|p| path_under(s, p)),
        }
    }
}

/// Case-insensitive (ASCII) substring search against a lowered needle.
fn icontains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.len() < needle.len() {
        return false;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).any(|i| {
        hay[i].to_ascii_lowercase() == first
            && hay[i + 1..i + needle.len()]
                .iter()
                .zip(&needle[1..])
                .all(|(h, n)| h.to_ascii_lowercase() == *n)
    })
}

/// `pmatch`: `path` is `prefix` or lies below it.
fn path_under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl IntTest {
    #[inline]
    pub fn test(&self, v: i64) -> bool {
        match self {
            IntTest::Cmp(op, x) => match op {
                CmpOp::Eq => v == *x,
                CmpOp::Ne => v != *x,
                CmpOp::Lt => v < *x,
                CmpOp::Le => v <= *x,
                CmpOp::Gt => v > *x,
                CmpOp::Ge => v >= *x,
            },
            IntTest::In(set) => set.contains(&v),
        }
    }
}

impl IpTest {
    fn test(&self, ip: IpAddr) -> bool {
        match self {
            IpTest::Eq(a) => ip == *a,
            IpTest::Ne(a) => ip != *a,
            IpTest::In(set) => set.contains(&ip),
            IpTest::InNet(nets) => nets.iter().any(|n| n.contains(ip)),
            IpTest::NotInNet(nets) => !nets.iter().any(|n| n.contains(ip)),
        }
    }
}

// ---- compiling -------------------------------------------------------------

/// Falco open flags as `evt.arg.flags` prints them (event.rs renders the
/// same table; a unit test below keeps the two in step).
fn open_flag(name: &str) -> Option<FlagMatch> {
    let bits = |b: i32| {
        if b == 0 {
            FlagMatch::Never
        } else {
            FlagMatch::Bits(b as u64)
        }
    };
    Some(match name {
        "O_RDONLY" => FlagMatch::ReadOnly,
        "O_WRONLY" => FlagMatch::AccMode(libc::O_WRONLY as u64),
        "O_RDWR" => FlagMatch::AccMode(libc::O_RDWR as u64),
        "O_CREAT" => bits(libc::O_CREAT),
        "O_EXCL" => bits(libc::O_EXCL),
        "O_NOCTTY" => bits(libc::O_NOCTTY),
        "O_TRUNC" => bits(libc::O_TRUNC),
        "O_APPEND" => bits(libc::O_APPEND),
        "O_NONBLOCK" => bits(libc::O_NONBLOCK),
        "O_DSYNC" => bits(libc::O_DSYNC),
        // "O_DIRECT" is also part of "O_DIRECTORY": the slow path decides.
        "O_LARGEFILE" => bits(libc::O_LARGEFILE),
        "O_DIRECTORY" => bits(libc::O_DIRECTORY),
        "O_NOFOLLOW" => bits(libc::O_NOFOLLOW),
        "O_NOATIME" => bits(libc::O_NOATIME),
        "O_CLOEXEC" => bits(libc::O_CLOEXEC),
        "O_SYNC" => bits(libc::O_SYNC),
        "O_PATH" => bits(libc::O_PATH),
        "O_TMPFILE" => bits(libc::O_TMPFILE),
        _ => return None,
    })
}

fn exec_flag(name: &str) -> Option<FlagMatch> {
    Some(FlagMatch::Bits(match name {
        "EXE_WRITABLE" => exe_flags::EXE_WRITABLE,
        "EXE_UPPER_LAYER" => exe_flags::EXE_UPPER_LAYER,
        "EXE_FROM_MEMFD" => exe_flags::EXE_FROM_MEMFD,
        "EXE_LOWER_LAYER" => exe_flags::EXE_LOWER_LAYER,
        _ => return None,
    }))
}

struct Compiler<'a, 'e> {
    env: &'a Env<'e>,
    /// Macros being expanded, outermost first (for cycle checks and messages).
    stack: Vec<String>,
    unknown_types: Vec<String>,
}

impl Compiler<'_, '_> {
    fn within(&self) -> Vec<String> {
        self.stack.clone()
    }

    fn expr(&mut self, e: &Expr) -> Result<Node, CompileError> {
        Ok(match e {
            Expr::And(items) => Node::And(
                items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_boxed_slice(),
            ),
            Expr::Or(items) => Node::Or(
                items
                    .iter()
                    .map(|i| self.expr(i))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_boxed_slice(),
            ),
            Expr::Not(inner) => Node::Not(Box::new(self.expr(inner)?)),
            Expr::Macro { name, .. } => self.macro_ref(name)?,
            Expr::Check(c) => self.check(c)?,
        })
    }

    fn macro_ref(&mut self, name: &str) -> Result<Node, CompileError> {
        let Some(m) = self.env.macros.get(name) else {
            return Err(CompileError::UnknownName {
                name: name.to_string(),
                within: self.within(),
            });
        };
        /// Macros nest a few levels in real rule sets; a longer chain is a
        /// mistake or an attack on the stack.
        const MAX_MACRO_DEPTH: usize = 32;
        if self.stack.len() >= MAX_MACRO_DEPTH {
            return Err(CompileError::MacroDepth {
                name: name.to_string(),
                max: MAX_MACRO_DEPTH,
            });
        }
        if self.stack.iter().any(|s| s == name) {
            return Err(CompileError::MacroCycle {
                name: name.to_string(),
                within: self.within(),
            });
        }
        self.stack.push(name.to_string());
        let result = match &m.parsed {
            Ok(expr) => self.expr(expr),
            Err(error) => Err(CompileError::Syntax {
                error: error.clone(),
                within: self.within(),
            }),
        };
        self.stack.pop();
        result
    }

    /// Items of a list literal, with list names expanded (recursively).
    fn expand(
        &self,
        items: &[Literal],
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), CompileError> {
        /// Falco's lists nest a few levels; deeper means a cycle.
        const MAX_LIST_DEPTH: usize = 16;
        for it in items {
            match self.env.lists.get(&it.text) {
                Some(list) => {
                    if depth >= MAX_LIST_DEPTH {
                        return Err(CompileError::UnknownName {
                            name: format!(
                                "{} (lists nest too deep or refer to themselves)",
                                it.text
                            ),
                            within: self.within(),
                        });
                    }
                    self.expand(&list.items, out, depth + 1)?;
                }
                _ => out.push(it.text.clone()),
            }
        }
        Ok(())
    }

    fn resolve_field(&self, f: &FieldExpr) -> Result<Reader, CompileError> {
        let name = f.name.as_str();
        if name == "proc.duration" && f.index.is_none() {
            return Ok(Reader::ProcDuration);
        }
        let field = Field::parse(name, f.index.as_deref()).map_err(|error| match error {
            FieldError::Unknown(field) => CompileError::UnknownField {
                field,
                within: self.within(),
            },
            error => CompileError::BadField {
                error,
                within: self.within(),
            },
        })?;
        if !field.is_collected() {
            return Err(CompileError::NotCollected {
                field: f.to_string(),
                within: self.within(),
            });
        }
        Ok(match field {
            Field::ProcAnameAny => Reader::AncestorNames,
            Field::ProcApidAny => Reader::AncestorPids,
            Field::ContainerMountDest => Reader::MountDests,
            Field::ContainerMountSource => Reader::MountSources,
            f => Reader::Field(f),
        })
    }

    fn op_error(&self, field: &FieldExpr, op: Op, reason: impl Into<String>) -> CompileError {
        CompileError::Operator {
            field: field.to_string(),
            op: op.as_str(),
            reason: reason.into(),
            within: self.within(),
        }
    }

    /// The operand as a list of strings (lists expanded), or a single value.
    fn operand_values(&self, c: &Check) -> Result<Vec<String>, CompileError> {
        match &c.operand {
            Operand::Value(l) => Ok(vec![l.text.clone()]),
            Operand::List(items) => {
                let mut out = Vec::new();
                self.expand(items, &mut out, 0)?;
                Ok(out)
            }
            Operand::ListRef(name) => match self.env.lists.get(name) {
                Some(list) => {
                    let mut out = Vec::new();
                    self.expand(&list.items, &mut out, 1)?;
                    Ok(out)
                }
                None => Err(CompileError::UnknownName {
                    name: name.clone(),
                    within: self.within(),
                }),
            },
            Operand::None | Operand::Field(_) => Ok(Vec::new()),
        }
    }

    fn check(&mut self, c: &Check) -> Result<Node, CompileError> {
        // Network fields that mean "either end": compile into an `or`.
        if c.field.transformers.is_empty()
            && c.field.index.is_none()
            && let Some(node) = self.either_end(c)?
        {
            return Ok(node);
        }
        let reader = self.resolve_field(&c.field)?;
        if matches!(c.op, Op::BContains | Op::BStartsWith) {
            return Err(self.op_error(
                &c.field,
                c.op,
                "binary operators are not supported (the sensor keeps no raw buffers)",
            ));
        }
        if c.op == Op::Exists {
            return Ok(Node::Pred(Box::new(Pred::Value {
                reader,
                transformers: c.field.transformers.clone().into_boxed_slice(),
                test: Test::Exists,
            })));
        }
        if let Operand::Field(other) = &c.operand {
            let b = self.resolve_field(other)?;
            if !matches!(c.op, Op::Eq | Op::Ne) || !c.field.transformers.is_empty() {
                return Err(self.op_error(
                    &c.field,
                    c.op,
                    "val() is supported with = and != on plain fields",
                ));
            }
            return Ok(Node::Pred(Box::new(Pred::FieldEq {
                a: reader,
                b,
                negate: c.op == Op::Ne,
            })));
        }
        let values = self.operand_values(c)?;
        let transformers = c.field.transformers.clone().into_boxed_slice();

        if transformers.is_empty()
            && let Reader::Field(f) = &reader
            && let Some(node) = self.special(*f, c, &values)?
        {
            return Ok(node);
        }

        let kind = match transformers.first() {
            Some(Transformer::Len) => FieldKind::Int,
            Some(_) => FieldKind::Str,
            None => reader.kind(),
        };
        let test = self.test(kind, c, values)?;
        Ok(Node::Pred(Box::new(Pred::Value {
            reader,
            transformers,
            test,
        })))
    }

    /// `fd.ip`, `fd.port`, `fd.net`, `fd.cnet`, `fd.snet`, `fd.lnet`, `fd.rnet`:
    /// "either end" fields become an `or` of the ends (`!=`: an `and`).
    fn either_end(&mut self, c: &Check) -> Result<Option<Node>, CompileError> {
        let (ends, net): (&[&str], bool) = match c.field.name.as_str() {
            "fd.ip" => (&["fd.cip", "fd.sip"], false),
            "fd.port" => (&["fd.cport", "fd.sport"], false),
            "fd.net" => (&["fd.cip", "fd.sip"], true),
            "fd.cnet" => (&["fd.cip"], true),
            "fd.snet" => (&["fd.sip"], true),
            "fd.lnet" => (&["fd.lip"], true),
            "fd.rnet" => (&["fd.rip"], true),
            _ => return Ok(None),
        };
        let negate = c.op == Op::Ne;
        let mut parts = Vec::new();
        for end in ends {
            let mut sub = c.clone();
            sub.field.name = (*end).to_string();
            if net {
                if !matches!(c.op, Op::Eq | Op::Ne | Op::In) {
                    return Err(self.op_error(&c.field, c.op, "network fields take =, != or in"));
                }
                let mut nets = Vec::new();
                for v in &self.operand_values(c)? {
                    nets.push(IpNet::parse(v).ok_or_else(|| {
                        self.op_error(
                            &c.field,
                            c.op,
                            format!("\"{v}\" is not a network such as 10.0.0.0/8"),
                        )
                    })?);
                }
                let nets = nets.into_boxed_slice();
                parts.push(Node::Pred(Box::new(Pred::Value {
                    reader: self.resolve_field(&sub.field)?,
                    transformers: Box::new([]),
                    test: Test::Ip(if negate {
                        IpTest::NotInNet(nets)
                    } else {
                        IpTest::InNet(nets)
                    }),
                })));
            } else {
                parts.push(self.check(&sub)?);
            }
        }
        let parts = parts.into_boxed_slice();
        Ok(Some(if negate {
            Node::And(parts)
        } else {
            Node::Or(parts)
        }))
    }

    /// Fields with a faster form than "render, then compare".
    fn special(
        &mut self,
        f: Field,
        c: &Check,
        values: &[String],
    ) -> Result<Option<Node>, CompileError> {
        match f {
            Field::EvtType => {
                if !matches!(c.op, Op::Eq | Op::Ne | Op::In) {
                    return Ok(None);
                }
                let mut mask = 0;
                for v in values {
                    match v.parse::<EventType>() {
                        Ok(t) => mask |= type_bit(t),
                        Err(()) => self.unknown_types.push(v.clone()),
                    }
                }
                Ok(Some(if c.op == Op::Ne {
                    Node::Types(ALL_TYPES & !mask)
                } else {
                    Node::Types(mask)
                }))
            }
            Field::EvtArg(Arg::Flags) if c.op == Op::Contains && values.len() == 1 => {
                let slow = self.generic(f, c, values)?;
                let name = values[0].as_str();
                Ok(Some(Node::Pred(Box::new(Pred::Flags {
                    open: open_flag(name),
                    exec: exec_flag(name).or(
                        if name.starts_with("O_") && open_flag(name).is_some() {
                            Some(FlagMatch::Never)
                        } else {
                            None
                        },
                    ),
                    slow: Box::new(slow),
                }))))
            }
            Field::EvtRes => {
                let slow = self.generic(f, c, values)?;
                let mut t = ResTable {
                    success: false,
                    errno: [0; 64],
                    slow,
                };
                let probe = |res: i64| {
                    let mut e = probe_event(EventType::Openat);
                    e.evt.res = res;
                    t.slow.eval(&e)
                };
                let success = probe(0);
                let mut errno = [0u64; 64];
                for n in 1..4096usize {
                    if probe(-(n as i64)) {
                        errno[n / 64] |= 1u64 << (n % 64);
                    }
                }
                t.success = success;
                t.errno = errno;
                Ok(Some(Node::Pred(Box::new(Pred::Res(Box::new(t))))))
            }
            Field::EvtArg(arg @ (Arg::Request | Arg::Domain | Arg::Type)) => {
                let slow = self.generic(f, c, values)?;
                let candidates: Vec<u64> = match arg {
                    Arg::Request => (0..=24).chain(0x4200..=0x4208).collect(),
                    Arg::Domain => (0..=64).collect(),
                    _ => (0..=16).collect(),
                };
                let probe = |raw: u64| {
                    let mut e = probe_event(EventType::Socket);
                    match arg {
                        Arg::Request => e.evt.args.request = Some(raw),
                        Arg::Domain => e.evt.args.domain = Some(raw as u32),
                        _ => e.evt.args.sock_type = Some(raw as u32),
                    }
                    slow.eval(&e)
                };
                let table: Vec<(u64, bool)> = candidates.iter().map(|v| (*v, probe(*v))).collect();
                // A raw value far outside every table renders as the "unknown" name.
                let otherwise = probe(0xdead);
                Ok(Some(Node::Pred(Box::new(Pred::EnumArg {
                    arg,
                    table: table.into_boxed_slice(),
                    otherwise,
                }))))
            }
            _ => Ok(None),
        }
    }

    fn generic(&self, f: Field, c: &Check, values: &[String]) -> Result<Pred, CompileError> {
        Ok(Pred::Value {
            reader: Reader::Field(f),
            transformers: Box::new([]),
            test: self.test(f.kind(), c, values.to_vec())?,
        })
    }

    fn test(&self, kind: FieldKind, c: &Check, values: Vec<String>) -> Result<Test, CompileError> {
        let op = c.op;
        let field = &c.field;
        let one = |values: &Vec<String>| -> Result<String, CompileError> {
            match values.as_slice() {
                [v] => Ok(v.clone()),
                _ => Err(self.op_error(field, op, "expects a single value")),
            }
        };
        match kind {
            FieldKind::Str | FieldKind::List => {
                Ok(Test::Str(match op {
                    Op::Eq => StrTest::Eq(one(&values)?.into()),
                    Op::Ne => StrTest::Ne(one(&values)?.into()),
                    Op::Lt => StrTest::Lt(one(&values)?.into()),
                    Op::Le => StrTest::Le(one(&values)?.into()),
                    Op::Gt => StrTest::Gt(one(&values)?.into()),
                    Op::Ge => StrTest::Ge(one(&values)?.into()),
                    Op::Contains => StrTest::Contains(Box::new(
                        memchr::memmem::Finder::new(one(&values)?.as_bytes()).into_owned(),
                    )),
                    Op::IContains => {
                        StrTest::IContains(one(&values)?.to_ascii_lowercase().into_bytes().into())
                    }
                    Op::StartsWith => StrTest::StartsWith(one(&values)?.into()),
                    Op::EndsWith => StrTest::EndsWith(one(&values)?.into()),
                    Op::Glob => StrTest::Glob(Glob::new(&one(&values)?, false)),
                    Op::IGlob => StrTest::Glob(Glob::new(&one(&values)?, true)),
                    Op::Regex => {
                        let v = one(&values)?;
                        // libsinsp matches the whole value (RE2::FullMatch).
                        let re = regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                            self.op_error(field, op, format!("bad regular expression: {e}"))
                        })?;
                        StrTest::Regex(re)
                    }
                    Op::In => StrTest::In(StrSet::new(values)),
                    // libsinsp compares the field's values with the set; a
                    // single-valued field has one, so `intersects` is `in`.
                    Op::Intersects => StrTest::Intersects(StrSet::new(values)),
                    Op::PMatch => StrTest::PMatch(
                        values
                            .into_iter()
                            .map(|p| {
                                let t = p.trim_end_matches('/');
                                if t.is_empty() { "/".into() } else { t.into() }
                            })
                            .collect(),
                    ),
                    Op::Exists | Op::BContains | Op::BStartsWith => {
                        unreachable!("handled by the caller")
                    }
                }))
            }
            FieldKind::Int => {
                let user_arg = matches!(
                    field.name.as_str(),
                    "evt.arg.uid" | "evt.arg.ruid" | "evt.arg.euid" | "evt.arg.suid"
                );
                let parse = |v: &str| -> Result<i64, CompileError> {
                    match parse_int(v) {
                        Some(n) => Ok(n),
                        // Falco prints a uid argument as its user's name.
                        None if user_arg => Ok(node_user_uid(v).map_or(NO_SUCH_USER, i64::from)),
                        None => Err(self.op_error(field, op, format!("\"{v}\" is not a number"))),
                    }
                };
                Ok(Test::Int(match op {
                    Op::In | Op::Intersects => IntTest::In(
                        values
                            .iter()
                            .map(|v| parse(v))
                            .collect::<Result<Vec<_>, _>>()?
                            .into_boxed_slice(),
                    ),
                    Op::Eq => IntTest::Cmp(CmpOp::Eq, parse(&one(&values)?)?),
                    Op::Ne => IntTest::Cmp(CmpOp::Ne, parse(&one(&values)?)?),
                    Op::Lt => IntTest::Cmp(CmpOp::Lt, parse(&one(&values)?)?),
                    Op::Le => IntTest::Cmp(CmpOp::Le, parse(&one(&values)?)?),
                    Op::Gt => IntTest::Cmp(CmpOp::Gt, parse(&one(&values)?)?),
                    Op::Ge => IntTest::Cmp(CmpOp::Ge, parse(&one(&values)?)?),
                    _ => return Err(self.op_error(field, op, "is not defined on a numeric field")),
                }))
            }
            FieldKind::Bool => {
                let v = one(&values)?;
                let want = match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(self.op_error(
                            field,
                            op,
                            format!("\"{v}\" is not true or false"),
                        ));
                    }
                };
                match op {
                    Op::Eq => Ok(Test::Bool {
                        want,
                        negate: false,
                    }),
                    Op::Ne => Ok(Test::Bool { want, negate: true }),
                    _ => Err(self.op_error(field, op, "a boolean field takes = or !=")),
                }
            }
            FieldKind::Ip => {
                let parse = |v: &str| -> Result<IpAddr, CompileError> {
                    v.trim().parse().map_err(|_| {
                        self.op_error(field, op, format!("\"{v}\" is not an IP address"))
                    })
                };
                Ok(Test::Ip(match op {
                    Op::Eq => IpTest::Eq(parse(&one(&values)?)?),
                    Op::Ne => IpTest::Ne(parse(&one(&values)?)?),
                    Op::In => IpTest::In(
                        values
                            .iter()
                            .map(|v| parse(v))
                            .collect::<Result<Vec<_>, _>>()?
                            .into_boxed_slice(),
                    ),
                    _ => {
                        return Err(self.op_error(
                            field,
                            op,
                            "an address field takes =, != or in (use fd.snet/fd.net for networks)",
                        ));
                    }
                }))
            }
        }
    }
}

/// A uid no user has: `evt.arg.uid = ghost` for a name the node does not
/// know is never true, as Falco's comparison of the printed name would be.
const NO_SUCH_USER: i64 = i64::MIN;

/// The uid of `name` in the node's `/etc/passwd`, read once per process:
/// a user name in an `evt.arg.uid` comparison resolves when rules load,
/// never on the event path. (Falco resolves inside containers with their
/// own passwd; a name that maps to another uid there is compared as the
/// node's.)
fn node_user_uid(name: &str) -> Option<u32> {
    static USERS: std::sync::OnceLock<HashMap<String, u32>> = std::sync::OnceLock::new();
    USERS
        .get_or_init(|| {
            std::fs::read_to_string("/etc/passwd")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?.to_string();
                    let uid = f.nth(1)?.parse().ok()?;
                    Some((name, uid))
                })
                .collect()
        })
        .get(name)
        .copied()
}

fn parse_int(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok();
    }
    v.parse().ok()
}

/// A bare event used to evaluate a predicate at compile time.
fn probe_event(ty: EventType) -> Event {
    Event::new(ty, Arc::new(crate::event::Process::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Container, Fd, L4Proto, Mount, Process, Role};

    fn env_with(
        lists: &[(&str, &[&str])],
        macros: &[(&str, &str)],
    ) -> (HashMap<String, ListDef>, HashMap<String, MacroDef>) {
        let lists = lists
            .iter()
            .map(|(n, items)| {
                (
                    n.to_string(),
                    ListDef {
                        items: items.iter().map(|i| condition::unquote_item(i)).collect(),
                    },
                )
            })
            .collect();
        let macros = macros
            .iter()
            .map(|(n, c)| {
                (
                    n.to_string(),
                    MacroDef {
                        parsed: condition::parse(c),
                    },
                )
            })
            .collect();
        (lists, macros)
    }

    fn compile_with(
        cond: &str,
        lists: &[(&str, &[&str])],
        macros: &[(&str, &str)],
    ) -> Result<Compiled, CompileError> {
        let (l, m) = env_with(lists, macros);
        let env = Env {
            lists: &l,
            macros: &m,
        };
        compile(&condition::parse(cond).expect("parses"), &env)
    }

    fn c(cond: &str) -> Compiled {
        compile_with(cond, &[], &[]).unwrap_or_else(|e| panic!("{cond}: {e}"))
    }

    fn exec(path: &str, argv: &[&str]) -> Event {
        let mut e = Event::new(
            EventType::Execve,
            Arc::new(Process::new(100, 1, path, argv)),
        );
        e.ancestors = vec![
            Arc::new(Process::new(1, 0, "/usr/sbin/nginx", &["nginx"])),
            Arc::new(Process::new(0, 0, "/sbin/init", &["init"])),
        ];
        e
    }

    fn open(path: &str, flags: i32) -> Event {
        let mut e = Event::new(
            EventType::Openat,
            Arc::new(Process::new(10, 1, "/usr/bin/cat", &["cat"])),
        );
        e.evt.args.flags = Some(flags as u64);
        e.evt.args.name = Some(path.into());
        e.evt.res = 3;
        e.fd = Some(Fd::file(3, path));
        e
    }

    #[test]
    fn constants_fold_and_nested_junctions_flatten() {
        use Node::{And, Const, Not, Or, Types};
        let t = |bit: u32| Types(1 << bit);
        let shape = |n: Node| format!("{:?}", n.simplify());
        // The identity constant disappears; one item left stands alone.
        assert_eq!(shape(And(Box::new([Const(true), t(1)]))), "Types(2)");
        assert_eq!(shape(Or(Box::new([Const(false), t(1)]))), "Types(2)");
        // The absorbing constant decides the junction.
        assert_eq!(shape(And(Box::new([t(1), Const(false)]))), "Const(false)");
        assert_eq!(shape(Or(Box::new([t(1), Const(true)]))), "Const(true)");
        // Nothing left: the identity.
        assert_eq!(shape(And(Box::new([Const(true)]))), "Const(true)");
        assert_eq!(shape(Or(Box::new([Const(false)]))), "Const(false)");
        // Same-kind nesting flattens, the other kind does not.
        assert_eq!(
            shape(And(Box::new([t(1), And(Box::new([t(2), t(3)]))]))),
            "And([Types(2), Types(4), Types(8)])"
        );
        assert_eq!(
            shape(And(Box::new([t(1), Or(Box::new([t(2), t(3)]))]))),
            "And([Types(2), Or([Types(4), Types(8)])])"
        );
        // `not` of a constant folds, a double `not` cancels.
        assert_eq!(shape(Not(Box::new(Const(false)))), "Const(true)");
        assert_eq!(shape(Not(Box::new(Not(Box::new(t(1)))))), "Types(2)");
    }

    #[test]
    fn string_operators_follow_falco() {
        let e = exec("/bin/bash", &["bash", "-c", "Curl http://x"]);
        for (cond, want) in [
            ("proc.name = bash", true),
            ("proc.name == bash", true),
            ("proc.name != bash", false),
            ("proc.cmdline contains \"-c Curl\"", true),
            ("proc.cmdline icontains curl", true),
            ("proc.cmdline contains curl", false),
            ("proc.exepath startswith /bin/", true),
            ("proc.exepath endswith /bash", true),
            ("proc.exepath glob '/bin/*sh'", true),
            ("proc.exepath iglob '/BIN/*SH'", true),
            ("proc.exepath regex '/bin/(ba|z)sh'", true),
            ("proc.exepath regex 'bash'", false),
            ("proc.name in (sh, bash)", true),
            ("proc.name in ()", false),
            ("proc.exepath pmatch (/bin, /usr)", true),
            ("proc.exepath pmatch (/bi)", false),
            ("proc.name < c", true),
            ("proc.name >= bash", true),
            ("proc.pname exists", true),
            ("proc.aname[2] = init", true),
            ("proc.aname = init", true),
            ("proc.aname in (nginx, httpd)", true),
            ("proc.aname = cat", false),
            ("tolower(proc.cmdline) contains curl", true),
            ("toupper(proc.name) = BASH", true),
            ("basename(proc.exepath) = bash", true),
            ("len(proc.name) = 4", true),
            ("len(proc.name) > 4", false),
            ("proc.pid = 100 and proc.ppid < 2", true),
            ("proc.pid in (1, 2, 0x64)", true),
            ("proc.name = val(proc.name)", true),
            ("proc.name != val(proc.pname)", true),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
    }

    #[test]
    fn absent_values_fail_every_comparison_but_not_negations() {
        let e = exec("/bin/sh", &["sh"]);
        for (cond, want) in [
            ("k8s.ns.name = x", false),
            ("k8s.ns.name != x", false),
            ("not k8s.ns.name = x", true),
            ("k8s.ns.name exists", false),
            ("not k8s.ns.name exists", true),
            ("fd.name startswith /", false),
            ("proc.aname[5] = x", false),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
    }

    #[test]
    fn event_types_index_rules_and_negations_invert_only_what_they_must() {
        let t = |cond| type_names(c(cond).types);
        assert_eq!(t("evt.type = execve"), ["execve"]);
        assert_eq!(
            t("evt.type in (open, openat) and fd.name = x"),
            ["open", "openat"]
        );
        assert_eq!(
            t("evt.type = execve or evt.type = connect"),
            ["execve", "connect"]
        );
        assert_eq!(t("not evt.type != ptrace"), ["ptrace"]);
        // `not (evt.type = execve and proc.name = x)` can be true for execve too.
        assert_eq!(
            c("not (evt.type = execve and proc.name = x)").types,
            ALL_TYPES
        );
        assert!(compile_with("evt.type = execve and not evt.type = execve", &[], &[]).is_err());
    }

    #[test]
    fn a_condition_that_can_match_no_produced_type_is_refused_with_the_names() {
        let e = compile_with("evt.type in (sendto, sendmsg) and fd.num > 0", &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the condition can match no event type this agent's sensor produces (evt.type values it names that the sensor never produces: sendmsg, sendto)"
        );
        let ok = compile_with("evt.type in (sendto, connect)", &[], &[]).unwrap();
        assert_eq!(ok.unknown_types, ["sendto"]);
    }

    #[test]
    fn cheap_tests_run_first_and_the_index_drops_implied_type_tests() {
        let comp = c("evt.type = execve and proc.cmdline regex '.*x' and proc.name = sh");
        let Node::And(items) = &comp.node else {
            panic!("{:?}", comp.node)
        };
        assert!(matches!(items[0], Node::Types(_)));
        assert!(
            matches!(&items[1], Node::Pred(p) if matches!(**p, Pred::Value { test: Test::Str(StrTest::Eq(_)), .. }))
        );
        let indexed = comp.node.clone().behind_index(comp.types);
        let Node::And(items) = &indexed else {
            panic!("{indexed:?}")
        };
        assert_eq!(items.len(), 2, "{indexed:?}");
        // A type test that does not cover every indexed type stays.
        let comp = c("evt.type in (execve, openat) and (evt.type = execve or fd.name = x)");
        let indexed = comp.node.clone().behind_index(comp.types);
        let Node::Or(alts) = &indexed else {
            panic!("{indexed:?}")
        };
        assert!(
            alts.iter().any(|n| matches!(n, Node::Types(_))),
            "{indexed:?}"
        );
        let e = exec("/bin/sh", &["sh"]);
        assert!(indexed.eval(&e));
    }

    #[test]
    fn lists_expand_recursively_and_macros_inline() {
        let lists: &[(&str, &[&str])] = &[
            ("shells", &["sh", "bash"]),
            ("all", &["shells", "\"(systemd)\""]),
        ];
        let macros = &[
            ("spawned", "evt.type in (execve, execveat)"),
            ("shell", "proc.name in (all)"),
        ];
        let comp = compile_with("spawned and shell", lists, macros).unwrap();
        assert!(comp.node.eval(&exec("/bin/bash", &["bash"])));
        let mut sd = exec("/lib/systemd/systemd", &["(systemd)"]);
        Arc::make_mut(&mut sd.proc).name = "(systemd)".into();
        assert!(comp.node.eval(&sd));
        assert_eq!(type_names(comp.types), ["execve", "execveat"]);
    }

    #[test]
    fn unknown_fields_and_macros_name_where_they_are() {
        let macros = &[("outer", "inner"), ("inner", "fd.sip.name = x")];
        let e = compile_with("evt.type = connect and outer", &[], macros).unwrap_err();
        assert!(e.is_unknown_filter());
        assert!(
            e.to_string()
                .starts_with("unknown field fd.sip.name (Falco resolves"),
            "{e}"
        );
        assert!(e.to_string().ends_with("(in macro outer > inner)"), "{e}");
        let e = compile_with("nope", &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "unknown macro or list nope");
        let e = compile_with("a", &[], &[("a", "b"), ("b", "a")]).unwrap_err();
        assert!(matches!(e, CompileError::MacroCycle { .. }), "{e}");
        let chain: Vec<(String, String)> = (0..100)
            .map(|i| (format!("m{i}"), format!("m{}", i + 1)))
            .chain([("m100".to_string(), "proc.name = x".to_string())])
            .collect();
        let chain: Vec<(&str, &str)> = chain
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let e = compile_with("m0", &[], &chain).unwrap_err();
        assert!(matches!(e, CompileError::MacroDepth { .. }), "{e}");
        let e = compile_with("evt.is_open_exec = true", &[], &[]).unwrap_err();
        assert!(matches!(e, CompileError::NotCollected { .. }), "{e}");
        let e = compile_with("proc.pid = abc", &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "proc.pid =: \"abc\" is not a number");
    }

    #[test]
    fn a_uid_argument_compares_with_a_user_name_as_falco_prints_it() {
        let setuid = |uid: u32| {
            let mut e = probe_event(EventType::Setuid);
            e.evt.args.uid = Some(uid);
            e
        };
        let root = compile_with("evt.arg.uid = root", &[], &[]).unwrap();
        assert!(root.node.eval(&setuid(0)));
        assert!(!root.node.eval(&setuid(1000)));
        // A name the node does not know matches no uid; != holds.
        let ghost = compile_with("evt.arg.uid = no-such-user-here", &[], &[]).unwrap();
        assert!(!ghost.node.eval(&setuid(0)));
        let not_ghost = compile_with("evt.arg.uid != no-such-user-here", &[], &[]).unwrap();
        assert!(not_ghost.node.eval(&setuid(0)));
        // Other numeric fields still refuse words.
        assert!(compile_with("user.uid = root", &[], &[]).is_err());
    }

    #[test]
    fn intersects_on_a_single_valued_field_is_in_as_in_libsinsp() {
        // Falco's "Mount Launched in Privileged Container" relies on it.
        let c = compile_with(r#"proc.args intersects ("-V", "-l")"#, &[], &[]).unwrap();
        let run = |args: &[&str]| {
            let mut e = probe_event(EventType::Execve);
            let mut argv = vec!["mount"];
            argv.extend_from_slice(args);
            e.proc = Arc::new(crate::event::Process::new(5, 1, "/bin/mount", &argv));
            c.node.eval(&e)
        };
        assert!(run(&["-V"]));
        assert!(run(&["-l"]));
        assert!(!run(&["-t", "tmpfs", "none", "/mnt"]));
        assert!(!run(&["-Vx"]), "whole values, not substrings");
    }

    #[test]
    fn flag_bit_tests_agree_with_the_rendered_flags() {
        let names = [
            "O_RDONLY",
            "O_WRONLY",
            "O_RDWR",
            "O_CREAT",
            "O_EXCL",
            "O_NOCTTY",
            "O_TRUNC",
            "O_APPEND",
            "O_NONBLOCK",
            "O_DSYNC",
            "O_DIRECT",
            "O_LARGEFILE",
            "O_DIRECTORY",
            "O_NOFOLLOW",
            "O_NOATIME",
            "O_CLOEXEC",
            "O_SYNC",
            "O_PATH",
            "O_TMPFILE",
            "EXE_WRITABLE",
            "EXE_UPPER_LAYER",
            "EXE_FROM_MEMFD",
        ];
        // A deterministic spread of flag words: every single bit, and mixes.
        let mut words: Vec<u64> = (0..32).map(|b| 1u64 << b).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            words.push(x & 0x7fff_ffff);
        }
        words.extend([0, 1, 2, 3, 0o1101, 0o100000]);
        for name in names {
            let fast = c(&format!("evt.arg.flags contains {name}"));
            assert!(matches!(&fast.node, Node::Pred(p) if matches!(**p, Pred::Flags { .. })));
            for ty in [EventType::Openat, EventType::Execve, EventType::MemfdCreate] {
                for w in &words {
                    let mut e = probe_event(ty);
                    e.evt.args.flags = Some(*w);
                    let rendered = e.field(&Field::EvtArg(Arg::Flags)).to_string();
                    assert_eq!(
                        fast.node.eval(&e),
                        rendered.contains(name),
                        "{name} on {ty} flags {w:#x} = {rendered}"
                    );
                }
            }
        }
    }

    #[test]
    fn res_and_enum_arguments_become_tables_that_agree_with_rendering() {
        for cond in [
            "evt.res = SUCCESS",
            "evt.res startswith E",
            "evt.res = ENOENT",
            "evt.res != EPERM",
            "evt.res in (EACCES, EPERM)",
        ] {
            let comp = c(cond);
            assert!(
                matches!(&comp.node, Node::Pred(p) if matches!(**p, Pred::Res(_))),
                "{cond}"
            );
            let Node::Pred(p) = &comp.node else {
                unreachable!()
            };
            let Pred::Res(t) = &**p else { unreachable!() };
            for res in [0, 5, -1, -2, -13, -115, -4095, -5000] {
                let mut e = probe_event(EventType::Openat);
                e.evt.res = res;
                assert_eq!(comp.node.eval(&e), t.slow.eval(&e), "{cond} res {res}");
            }
        }
        let attach = c("evt.arg.request contains PTRACE_ATTACH");
        let getregs = c("evt.arg.request contains PTRACE_GETREGS");
        let mut e = probe_event(EventType::Ptrace);
        for (req, a, g) in [
            (16, true, false),
            (12, false, true),
            (0x4204, false, true),
            (0x9999, false, false),
        ] {
            e.evt.args.request = Some(req);
            assert_eq!(attach.node.eval(&e), a, "{req:#x}");
            assert_eq!(getregs.node.eval(&e), g, "{req:#x}");
        }
        let packet = c("evt.arg.domain contains AF_PACKET");
        let mut s = probe_event(EventType::Socket);
        s.evt.args.domain = Some(libc::AF_PACKET as u32);
        assert!(packet.node.eval(&s));
        s.evt.args.domain = Some(libc::AF_INET as u32);
        assert!(!packet.node.eval(&s));
    }

    #[test]
    fn networks_ports_and_list_fields() {
        let mut e = Event::new(
            EventType::Connect,
            Arc::new(Process::new(5, 1, "/usr/bin/curl", &["curl"])),
        );
        e.fd = Some(Fd::socket(
            4,
            "10.42.0.7:40000".parse().unwrap(),
            "10.43.0.1:443".parse().unwrap(),
            Role::Client,
            L4Proto::Tcp,
        ));
        for (cond, want) in [
            ("fd.sip = 10.43.0.1", true),
            ("fd.sip in (10.43.0.1, ::1)", true),
            ("fd.snet = \"10.43.0.0/16\"", true),
            ("fd.net in (\"192.168.0.0/16\")", false),
            ("fd.net != \"127.0.0.0/8\"", true),
            ("fd.ip = 10.42.0.7", true),
            ("fd.port = 443", true),
            ("fd.sport in (443, 6443)", true),
            ("fd.typechar = 4", true),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
        let ct = Container {
            id: "abc".into(),
            mounts: vec![
                Mount {
                    source: "/etc".into(),
                    dest: "/host/etc".into(),
                },
                Mount {
                    source: "/data".into(),
                    dest: "/data".into(),
                },
            ],
            ..Default::default()
        };
        e.container = Arc::new(ct);
        for (cond, want) in [
            ("container.mount.source intersects (/etc, /root)", true),
            ("container.mount.source in (/etc, /root)", false),
            ("container.mount.source in (/etc, /data)", true),
            ("container.mount.source pmatch (/data)", true),
            ("container.mount.dest = /data", true),
            ("container.mount.dest exists", true),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
    }

    #[test]
    fn open_events_read_their_fd_and_flags() {
        let e = open("/var/log/syslog", libc::O_WRONLY | libc::O_TRUNC);
        for (cond, want) in [
            ("evt.arg.flags contains O_TRUNC", true),
            ("evt.arg.flags contains \"O_TRUNC\"", true),
            ("evt.arg.flags contains O_APPEND", false),
            ("evt.is_open_write = true", true),
            ("fd.directory = /var/log", true),
            ("fd.filename in (syslog, auth.log)", true),
            ("fd.num >= 0", true),
            ("evt.rawres in (0, 1, 2)", false),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
    }
}
