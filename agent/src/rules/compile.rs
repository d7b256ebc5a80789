//! The condition compiler: a parsed [`Expr`] plus the rule set's lists and
//! macros become a [`Node`] tree for the evaluator ([`super::eval`]).
//!
//! Owns what each field and operator means to a rule. Work that can be done
//! once is done here: literals are parsed into the field's kind, `in` lists
//! become sets, `icontains` literals are lowered, globs and regexes
//! compile, `evt.arg.flags contains O_TRUNC` becomes a bit test, and
//! `evt.res` / `evt.arg.request` / `evt.arg.domain` predicates become table
//! look-ups on the raw value, so the renderer in `event/render.rs` is never
//! called for them; user names compared with `evt.arg.uid` become uids
//! (from the node's `/etc/passwd`, read once at load). Tests likely to
//! decide cheaply are ordered first, constants fold. Refuses conditions on fields the sensor
//! never fills.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::{Arg, Event, EventType, Field, FieldError, FieldKind, Read, exe_flags};

use super::condition::{self, Check, Expr, FieldExpr, Literal, Op, Operand, Transformer};
use super::eval::{
    ALL_TYPES, CmpOp, FlagMatch, IntTest, IpNet, IpTest, Node, Pred, Reader, ResTable, StrTest,
    Test, TypeMask, type_bit,
};
use super::glob::Glob;
use super::strany::StrAny;
use super::strset::StrSet;

/// A named list as the compiler sees it (items already unquoted).
#[derive(Debug, Clone, Default)]
pub(crate) struct ListDef {
    pub(crate) items: Vec<Literal>,
}

/// A macro: its parsed condition (or why it does not parse).
#[derive(Debug, Clone)]
pub(crate) struct MacroDef {
    pub(crate) parsed: Result<Expr, condition::SyntaxError>,
}

/// Lists and macros a condition may name.
pub(crate) struct Env<'a> {
    pub(crate) lists: &'a HashMap<String, ListDef>,
    pub(crate) macros: &'a HashMap<String, MacroDef>,
}

/// Why a condition does not compile. `Display` is the precise reason shown
/// in `rules check`, status and logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum CompileError {
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
    #[error("{}", too_large(.what, .limit, .within))]
    TooLarge {
        what: Measure,
        limit: Limit,
        within: Vec<String>,
    },
}

/// What a condition's size is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Condition nodes with every macro expanded where it is used: a macro
    /// used twice by the macro above it doubles at each level.
    Nodes,
    /// List items with every list named inside a list expanded.
    ListItems,
    /// Levels of nesting with every macro expanded.
    Depth,
}

/// One cap on a condition's size, and whose cap it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) max: usize,
    pub(crate) scope: Scope,
}

/// Whose budget a [`Limit`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The rule's own cap.
    Rule,
    /// What the rules of the same file had left of the file's cap.
    File,
}

fn too_large(what: &Measure, limit: &Limit, within: &[String]) -> String {
    let (what, how) = match what {
        Measure::Nodes => (
            "condition nodes",
            "with its macros expanded where they are used (a macro that uses another twice doubles it)",
        ),
        Measure::ListItems => (
            "list items",
            "with the lists named in its lists expanded (a list that names another twice doubles it)",
        ),
        Measure::Depth => ("levels of nesting", "with its macros expanded"),
    };
    let scope = match limit.scope {
        Scope::Rule => "the limit for one rule".to_string(),
        Scope::File => "what the limit for one file left to this rule".to_string(),
    };
    format!(
        "the condition expands to more than {} {what} {how}; {} is {}: refused so that loading cannot exhaust the node's memory{}",
        limit.max,
        scope,
        limit.max,
        in_macro(within)
    )
}

/// How large one rule's condition may grow when macros and lists are
/// expanded (see [`Budget::per_rule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) nodes: Limit,
    pub(crate) items: Limit,
}

/// Condition nodes one rule may expand to. The largest rule of Falco's
/// three official files ("Write below etc") expands to 561, and all 88
/// that compile to 2,799 together: the caps leave an order of magnitude
/// of room over real rule sets, and hold one rule to a few MiB of memory
/// and milliseconds of compile time.
pub(crate) const MAX_NODES_PER_RULE: usize = 10_000;
/// List items one rule may expand to (Falco's largest: 534).
pub(crate) const MAX_ITEMS_PER_RULE: usize = 20_000;
/// Condition nodes the rules of one file may expand to together, so that
/// a file of many rules each just under the rule cap is refused too
/// (Falco's three files: 2,799 in all).
pub(crate) const MAX_NODES_PER_FILE: usize = 100_000;
/// List items the rules of one file may expand to together (Falco's three
/// files: 3,920 in all).
pub(crate) const MAX_ITEMS_PER_FILE: usize = 200_000;
/// Levels of nesting with every macro expanded. The evaluator and the
/// compiler's passes recurse once per level, so this bounds their stack
/// (a few hundred bytes a level) well inside a 2 MiB thread stack.
pub(crate) const MAX_EXPANDED_DEPTH: usize = 256;

impl Budget {
    /// A rule's own caps.
    #[cfg(test)]
    pub(crate) const fn per_rule() -> Budget {
        Budget {
            nodes: Limit {
                max: MAX_NODES_PER_RULE,
                scope: Scope::Rule,
            },
            items: Limit {
                max: MAX_ITEMS_PER_RULE,
                scope: Scope::Rule,
            },
        }
    }

    /// The rule's caps, lowered to what its file has left.
    pub(crate) fn within_file(nodes_left: usize, items_left: usize) -> Budget {
        let cap = |rule: usize, left: usize| {
            if left < rule {
                Limit {
                    max: left,
                    scope: Scope::File,
                }
            } else {
                Limit {
                    max: rule,
                    scope: Scope::Rule,
                }
            }
        };
        Budget {
            nodes: cap(MAX_NODES_PER_RULE, nodes_left),
            items: cap(MAX_ITEMS_PER_RULE, items_left),
        }
    }
}

impl CompileError {
    /// Whether `skip-if-unknown-filter: true` turns this failure into a skip.
    pub(crate) fn is_unknown_filter(&self) -> bool {
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
        f if f.starts_with("k8s.pod.label") || f.starts_with("k8s.ns.label") => {
            " (pod labels need the Kubernetes API; the agent reads only the runtime bundle)"
        }
        f if f.starts_with("evt.buffer") => {
            " (the sensor does not capture the data that reads and writes carry)"
        }
        _ => "",
    }
}

/// A compiled condition: the evaluator plus the event types it can match.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) node: Node,
    pub(crate) types: TypeMask,
    /// `evt.type` names the sensor never produces (the branches naming them
    /// can never be true); a warning when `types` is still non-empty.
    pub(crate) unknown_types: Vec<String>,
    /// Condition nodes it expanded to (macros expanded), before folding.
    pub(crate) nodes: usize,
    /// List items it expanded to.
    pub(crate) items: usize,
}

#[cfg(test)]
thread_local! {
    /// Off: compile without [`Node::merge_string_tests`], so that tests can
    /// compare whole rule sets compiled both ways.
    pub(crate) static MERGE_STRING_TESTS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Compile a parsed condition within a rule's own caps.
#[cfg(test)]
pub(crate) fn compile(expr: &Expr, env: &Env<'_>) -> Result<Compiled, CompileError> {
    compile_within(expr, env, Budget::per_rule())
}

/// Compile a parsed condition; refuse it as soon as it expands past
/// `budget` (counted while expanding, so a condition that would expand to
/// billions of nodes costs no more than the budget to refuse).
pub(crate) fn compile_within(
    expr: &Expr,
    env: &Env<'_>,
    budget: Budget,
) -> Result<Compiled, CompileError> {
    let mut c = Compiler {
        env,
        stack: Vec::new(),
        unknown_types: Vec::new(),
        budget,
        nodes: std::cell::Cell::new(0),
        items: std::cell::Cell::new(0),
        depth: 0,
    };
    let node = c.expr(expr)?.simplify();
    #[cfg(test)]
    let node = if MERGE_STRING_TESTS.get() {
        node.merge_string_tests()
    } else {
        node
    };
    #[cfg(not(test))]
    let node = node.merge_string_tests();
    let node = node.order_by_cost();
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
        nodes: c.nodes.get(),
        items: c.items.get(),
    })
}

// ---- passes over the compiled tree -----------------------------------------

impl Node {
    /// Event types for which the node may be true.
    pub(crate) fn may_types(&self) -> TypeMask {
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
    pub(crate) fn cost(&self) -> u32 {
        match self {
            Node::Const(_) | Node::Types(_) => 0,
            Node::And(items) | Node::Or(items) => items.iter().map(Node::cost).sum(),
            Node::Not(n) => n.cost(),
            Node::Pred(p) => p.cost(),
        }
    }

    /// A guess of how often the node is true on the events it meets, from
    /// the operator's shape alone: a rule's positive tests (`fd.name
    /// startswith /etc`, `proc.name in (shell_binaries)`) are rarely true,
    /// the exceptions after them (`not proc.name in (...)`, `!=`, `exists`)
    /// almost always are.
    pub(crate) fn p_true(&self) -> f32 {
        match self {
            Node::Const(b) => f32::from(u8::from(*b)),
            Node::Types(_) => 0.5,
            Node::Pred(p) => p.p_true(),
            Node::Not(n) => 1.0 - n.p_true(),
            Node::And(items) => items.iter().map(Node::p_true).product(),
            Node::Or(items) => 1.0 - items.iter().map(|n| 1.0 - n.p_true()).product::<f32>(),
        }
    }

    /// Read each field once per junction: the string tests of one field
    /// that are branches of one `or` become one [`Pred::AnyStr`], and so
    /// do negated ones in one `and` (`not f in (a) and not f startswith b`
    /// is `not (f in (a) or f startswith b)`). Only plain string tests of
    /// the same field merge (no transformers, no ancestor or mount lists):
    /// their absent, partial and list values are decided alike, so the
    /// merged test answers what the branches answered.
    fn merge_string_tests(self) -> Node {
        match self {
            Node::Or(items) => {
                let items = items.into_vec().into_iter().map(Node::merge_string_tests);
                junction(merge_by_field(items.collect(), false), false)
            }
            Node::And(items) => {
                let items = items.into_vec().into_iter().map(Node::merge_string_tests);
                junction(merge_by_field(items.collect(), true), true)
            }
            Node::Not(n) => Node::Not(Box::new(n.merge_string_tests())),
            n => n,
        }
    }

    /// Put the children of every `and` in the order that decides soonest on
    /// average: by cost over the chance of being false (the classic order
    /// for independent tests), and those of every `or` by cost over the
    /// chance of being true. Stable, so equal keys keep the author's order.
    /// Evaluation is pure, so order changes only how soon a short circuit
    /// happens, never the result. Falco's rules put a selective test and a
    /// long tail of exceptions in one `and`: the selective test goes first,
    /// so an event that is not the rule's business costs one test.
    fn order_by_cost(self) -> Node {
        fn key(n: &Node, p_decides: f32) -> f32 {
            (1 + n.cost()) as f32 / p_decides.clamp(0.01, 1.0)
        }
        match self {
            Node::And(items) | Node::Or(items) if items.is_empty() => Node::Const(true),
            Node::And(items) => {
                let mut v: Vec<Node> = items
                    .into_vec()
                    .into_iter()
                    .map(Node::order_by_cost)
                    .collect();
                v.sort_by(|a, b| key(a, 1.0 - a.p_true()).total_cmp(&key(b, 1.0 - b.p_true())));
                Node::And(v.into_boxed_slice())
            }
            Node::Or(items) => {
                let mut v: Vec<Node> = items
                    .into_vec()
                    .into_iter()
                    .map(Node::order_by_cost)
                    .collect();
                v.sort_by(|a, b| key(a, a.p_true()).total_cmp(&key(b, b.p_true())));
                Node::Or(v.into_boxed_slice())
            }
            Node::Not(n) => Node::Not(Box::new(n.order_by_cost())),
            n => n,
        }
    }

    /// The node as evaluated behind the event-type index: `evt.type` tests
    /// at the top of the condition that every indexed type passes are dropped.
    pub(crate) fn behind_index(self, types: TypeMask) -> Node {
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

/// An `and` or `or` of `items`, or the one item.
fn junction(mut items: Vec<Node>, is_and: bool) -> Node {
    match items.len() {
        1 => items.pop().expect("one"),
        _ if is_and => Node::And(items.into_boxed_slice()),
        _ => Node::Or(items.into_boxed_slice()),
    }
}

/// The field of a plain string test (`negated`: under one `not`), the only
/// kind [`StrAny`] merges.
fn plain_string_field(n: &Node, negated: bool) -> Option<Field> {
    let inner = match (n, negated) {
        (Node::Not(inner), true) => &**inner,
        (n, false) => n,
        _ => return None,
    };
    match inner {
        Node::Pred(p) => match &**p {
            Pred::Value {
                reader: Reader::Field(f),
                transformers,
                test: Test::Str(_),
            } if transformers.is_empty() => Some(*f),
            _ => None,
        },
        _ => None,
    }
}

/// Merge the plain string tests of each field among `items` (the branches
/// of an `or`, or with `negated` the `not`s of an `and`) into one
/// [`Pred::AnyStr`] at the place of the field's first test.
fn merge_by_field(items: Vec<Node>, negated: bool) -> Vec<Node> {
    let fields: Vec<Option<Field>> = items
        .iter()
        .map(|n| plain_string_field(n, negated))
        .collect();
    let repeated = |f: &Option<Field>| f.is_some() && fields.iter().filter(|g| *g == f).count() > 1;
    if !fields.iter().any(repeated) {
        return items;
    }
    let mut out: Vec<Node> = Vec::with_capacity(items.len());
    let mut groups: Vec<(Field, usize, Vec<StrTest>, f32)> = Vec::new();
    for (n, f) in items.into_iter().zip(&fields) {
        let Some(field) = f.filter(|_| repeated(f)) else {
            out.push(n);
            continue;
        };
        let p_true = if negated {
            1.0 - n.p_true()
        } else {
            n.p_true()
        };
        let pred = match n {
            Node::Not(inner) => *inner,
            n => n,
        };
        let Node::Pred(p) = pred else {
            unreachable!("plain_string_field saw a predicate")
        };
        let Pred::Value {
            test: Test::Str(t), ..
        } = *p
        else {
            unreachable!("plain_string_field saw a string test")
        };
        match groups.iter_mut().find(|g| g.0 == field) {
            Some(g) => {
                g.2.push(t);
                g.3 *= 1.0 - p_true;
            }
            None => {
                groups.push((field, out.len(), vec![t], 1.0 - p_true));
                out.push(Node::Const(false)); // replaced below
            }
        }
    }
    for (field, at, tests, p_false) in groups {
        let any = StrAny::new(tests, 1.0 - p_false);
        let pred = Node::Pred(Box::new(Pred::AnyStr {
            field,
            any: Box::new(any),
        }));
        out[at] = if negated {
            Node::Not(Box::new(pred))
        } else {
            pred
        };
    }
    out
}

impl Reader {
    fn kind(&self) -> FieldKind {
        match self {
            Reader::Field(f) => f.kind(),
            Reader::AncestorNames => FieldKind::List,
            Reader::AncestorPids => FieldKind::Int,
            Reader::MountDests | Reader::MountSources => FieldKind::List,
        }
    }
}

impl Pred {
    /// See [`Node::p_true`]: equality and set membership are rarely true,
    /// their negations and `exists` nearly always, ranges and booleans are
    /// a coin toss.
    fn p_true(&self) -> f32 {
        const RARE: f32 = 0.1;
        const EVEN: f32 = 0.5;
        const USUAL: f32 = 0.9;
        match self {
            Pred::Flags { .. } | Pred::EnumArg { .. } => EVEN,
            Pred::Res(t) => {
                if t.success {
                    USUAL
                } else {
                    RARE
                }
            }
            Pred::FieldEq { negate, .. } => {
                if *negate {
                    USUAL
                } else {
                    RARE
                }
            }
            Pred::AnyStr { any, .. } | Pred::FastAnyStr { any, .. } => any.p_true(),
            // Made after compiling (`Node::read_fast`); answered as the
            // general form would be.
            Pred::FastStr { field, test } => Pred::Value {
                reader: Reader::Field(field.field()),
                transformers: Box::new([]),
                test: Test::Str(test.clone()),
            }
            .p_true(),
            Pred::Value { reader, test, .. } => match test {
                Test::Exists => USUAL,
                // An open's access mode is part of the event's class: the
                // index sends the rule only opens whose mode can pass, so
                // on the events the rule meets the test nearly always holds
                // (`open_read` is four tests that a read-only open passes).
                Test::Bool { want, negate }
                    if matches!(
                        reader,
                        Reader::Field(Field::EvtIsOpenRead | Field::EvtIsOpenWrite)
                    ) =>
                {
                    if want != negate {
                        USUAL
                    } else {
                        RARE
                    }
                }
                Test::Bool { .. } if few_values(reader) => RARE,
                Test::Bool { .. } => EVEN,
                Test::Int(IntTest::Cmp(CmpOp::Eq, _) | IntTest::In(_)) => RARE,
                Test::Int(IntTest::Cmp(CmpOp::Ne, _)) => USUAL,
                // `fd.num >= 0`, `evt.rawres >= 0`: every success.
                Test::Int(IntTest::Cmp(CmpOp::Ge | CmpOp::Gt, 0)) => USUAL,
                Test::Int(IntTest::Cmp(CmpOp::Lt | CmpOp::Le, 0)) => RARE,
                Test::Int(IntTest::Cmp(..)) => EVEN,
                Test::Str(StrTest::Eq(_) | StrTest::In(_) | StrTest::Ne(_))
                    if few_values(reader) =>
                {
                    EVEN
                }
                Test::Str(StrTest::Ne(_)) => USUAL,
                Test::Str(StrTest::Lt(_) | StrTest::Le(_) | StrTest::Gt(_) | StrTest::Ge(_)) => {
                    EVEN
                }
                Test::Str(_) => RARE,
                Test::Ip(IpTest::Ne(_) | IpTest::NotInNet(_)) => USUAL,
                Test::Ip(IpTest::InNet(_)) => EVEN,
                Test::Ip(_) => RARE,
            },
        }
    }

    fn cost(&self) -> u32 {
        match self {
            Pred::Flags { .. } | Pred::Res(_) | Pred::EnumArg { .. } => 1,
            Pred::FieldEq { .. } => 4,
            Pred::AnyStr { field, any } => {
                read_cost(&Reader::Field(*field)) + any.cost(str_test_cost)
            }
            Pred::FastAnyStr { field, any } => {
                read_cost(&Reader::Field(field.field())) + any.cost(str_test_cost)
            }
            Pred::FastStr { field, test } => {
                read_cost(&Reader::Field(field.field())) + str_test_cost(test)
            }
            Pred::Value {
                reader,
                transformers,
                test,
            } => {
                let t = match test {
                    Test::Exists | Test::Bool { .. } | Test::Int(IntTest::Cmp(..)) => 0,
                    Test::Int(IntTest::In(_)) | Test::Ip(_) => 1,
                    Test::Str(t) => str_test_cost(t),
                };
                read_cost(reader) + t + 8 * transformers.len() as u32
            }
        }
    }
}

/// What reading a value costs, in [`Pred::cost`]'s units.
fn read_cost(reader: &Reader) -> u32 {
    match reader {
        Reader::Field(f) => match f.read_cost() {
            Read::Stored => 1,
            Read::Rendered => 6,
        },
        Reader::AncestorNames | Reader::AncestorPids => 6,
        Reader::MountDests | Reader::MountSources => 4,
    }
}

/// What a string test costs once the value is read.
fn str_test_cost(t: &StrTest) -> u32 {
    match t {
        StrTest::Eq(_) | StrTest::Ne(_) | StrTest::StartsWith(_) | StrTest::EndsWith(_) => 1,
        StrTest::Lt(_) | StrTest::Le(_) | StrTest::Gt(_) | StrTest::Ge(_) => 1,
        StrTest::In(_) | StrTest::Intersects(_) => 2,
        StrTest::PMatch(p) => 1 + p.len() as u32,
        StrTest::Contains(_) => 3,
        StrTest::IContains(_) | StrTest::Glob(_) => 5,
        StrTest::Regex(_) => 10,
    }
}

// ---- compiling -------------------------------------------------------------

/// Fields with a handful of values (or a boolean that is rarely true),
/// where `=` guesses neither rare nor usual: `fd.typechar = f` holds for
/// most opens, `container.id = host` for every host event.
fn few_values(r: &Reader) -> bool {
    matches!(
        r,
        Reader::Field(
            Field::FdType
                | Field::FdTypechar
                | Field::FdL4proto
                | Field::FdSockfamily
                | Field::EvtDir
                | Field::ContainerId
                | Field::ContainerPrivileged
        )
    )
}

/// Falco open flags as `evt.arg.flags` prints them (event/render.rs renders the
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
    budget: Budget,
    /// Nodes and items expanded so far (cells: list expansion reads `self`).
    nodes: std::cell::Cell<usize>,
    items: std::cell::Cell<usize>,
    /// Nesting of the expression being compiled, macros expanded.
    depth: usize,
}

impl Compiler<'_, '_> {
    fn within(&self) -> Vec<String> {
        self.stack.clone()
    }

    fn too_large(&self, what: Measure, limit: Limit) -> CompileError {
        CompileError::TooLarge {
            what,
            limit,
            within: self.within(),
        }
    }

    /// Count `n` more of `what`; an error once past its limit.
    fn spend(&self, what: Measure, n: usize) -> Result<(), CompileError> {
        let (used, limit) = match what {
            Measure::ListItems => (&self.items, self.budget.items),
            _ => (&self.nodes, self.budget.nodes),
        };
        let total = used.get().saturating_add(n);
        used.set(total);
        if total > limit.max {
            return Err(self.too_large(what, limit));
        }
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<Node, CompileError> {
        self.spend(Measure::Nodes, 1)?;
        if self.depth >= MAX_EXPANDED_DEPTH {
            return Err(self.too_large(
                Measure::Depth,
                Limit {
                    max: MAX_EXPANDED_DEPTH,
                    scope: Scope::Rule,
                },
            ));
        }
        self.depth += 1;
        let node = self.expr_inner(e);
        self.depth -= 1;
        node
    }

    fn expr_inner(&mut self, e: &Expr) -> Result<Node, CompileError> {
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
                _ => {
                    self.spend(Measure::ListItems, 1)?;
                    out.push(it.text.clone());
                }
            }
        }
        Ok(())
    }

    fn resolve_field(&self, f: &FieldExpr) -> Result<Reader, CompileError> {
        let name = f.name.as_str();
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
            Operand::Value(l) => {
                self.spend(Measure::ListItems, 1)?;
                Ok(vec![l.text.clone()])
            }
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
    use crate::rules::eval::type_names;

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

    /// A write to `/a/a/x`, a path known only by its last components.
    fn partial_write() -> Event {
        let mut e = open("/a/a/x", libc::O_WRONLY | libc::O_CREAT);
        e.fd.as_mut().expect("fd").name_truncated = true;
        e
    }

    #[test]
    fn comparisons_on_a_partial_path_answer_so_that_the_rule_matches() {
        let e = partial_write();
        for (cond, want) in [
            // The path may lie below any prefix, be any file.
            ("fd.name startswith /etc/", true),
            ("fd.name pmatch (/etc, /usr/bin)", true),
            ("fd.name glob '/dev/shm/*'", true),
            ("fd.directory in (/etc, /dev/shm)", true),
            ("fd.directory = /etc", true),
            ("fd.name = /etc/shadow", true),
            ("fd.name in (/etc/shadow)", true),
            ("fd.name endswith .so", true),
            ("fd.name contains /.ssh/", true),
            ("fd.name regex '^/root/'", true),
            ("fd.filename = passwd", true),
            ("fd.name != /a/a/x", true),
            ("tolower(fd.name) startswith /etc", true),
            ("basename(fd.name) = authorized_keys", true),
            ("len(fd.name) > 4096", true),
            ("fd.name = val(proc.exepath)", true),
            // Under a `not` they fail, so the `not` holds: an exception on
            // a partial path excuses nothing.
            ("not fd.name startswith /tmp/", true),
            ("not fd.directory in (/var/lib/app)", true),
            ("not fd.name != /etc/shadow", true),
            (
                "not (fd.name startswith /tmp/ or fd.name pmatch (/var))",
                true,
            ),
            ("not (fd.name startswith /tmp/ and proc.name = cat)", true),
            ("not not fd.name startswith /etc", true),
            (
                "fd.name startswith /etc and not fd.name startswith /etc/app/",
                true,
            ),
            // Exact fields still decide, exceptions on them included.
            ("fd.name startswith /etc and not proc.name = cat", false),
            ("fd.name startswith /etc and proc.name = vim", false),
            ("proc.exepath startswith /etc", false),
            // `exists` is decided, and the flag is an ordinary boolean, so
            // a rule can opt out of the fail-closed answer.
            ("fd.name exists", true),
            ("not fd.name exists", false),
            ("fd.name_truncated = true", true),
            ("fd.name_truncated = false", false),
            ("not fd.name_truncated = true", false),
            (
                "fd.name_truncated = false and fd.name startswith /etc",
                false,
            ),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
        // The same path known in full is compared as usual.
        let mut whole = partial_write();
        whole.fd.as_mut().expect("fd").name_truncated = false;
        for (cond, want) in [
            ("fd.name startswith /etc/", false),
            ("not fd.name startswith /tmp/", true),
            ("fd.name = /a/a/x", true),
            ("fd.name_truncated = true", false),
        ] {
            assert_eq!(c(cond).node.eval(&whole), want, "{cond}");
        }
    }

    #[test]
    fn partial_executable_and_working_directory_paths_fail_closed_too() {
        let mut e = exec("/a/a/payload", &["payload"]);
        {
            let p = Arc::make_mut(&mut e.proc);
            p.exepath_truncated = true;
            p.cwd = Some("/b/b".into());
            p.cwd_truncated = true;
        }
        let mut parent = Process::new(1, 0, "/c/c/loader", &["loader"]);
        parent.exepath_truncated = true;
        e.ancestors[0] = Arc::new(parent);
        for (cond, want) in [
            ("proc.exepath startswith /dev/shm/", true),
            ("not proc.exepath in (/usr/bin/apt, /usr/bin/dpkg)", true),
            ("proc.cwd startswith /root", true),
            ("proc.pexepath = /usr/sbin/nginx", true),
            ("not proc.aexepath[1] pmatch (/usr/sbin)", true),
            // The grandparent's path is whole.
            ("proc.aexepath[2] = /sbin/init", true),
            ("not proc.aexepath[2] = /sbin/init", false),
            (
                "proc.exepath_truncated = true and proc.cwd_truncated = true",
                true,
            ),
            // proc.exe is argv[0] as given: never partial.
            ("proc.exe startswith /dev/shm/", false),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
        // Path arguments too.
        let mut mkdir = exec("/usr/bin/mkdir", &["mkdir", ".x"]);
        mkdir.evt.ty = EventType::Mkdirat;
        mkdir.evt.args.path = Some("/a/a/.x".into());
        assert!(!c("evt.arg.path pmatch (/usr/bin)").node.eval(&mkdir));
        mkdir.evt.args.path_truncated = true;
        assert!(c("evt.arg.path pmatch (/usr/bin)").node.eval(&mkdir));
        assert!(c("not evt.arg[path] startswith /tmp").node.eval(&mkdir));
        assert!(c("evt.arg.path_truncated = true").node.eval(&mkdir));
        let whole = exec("/a/a/payload", &["payload"]);
        assert!(!c("proc.exepath startswith /dev/shm/").node.eval(&whole));
        assert!(
            c("proc.exepath_truncated = false and proc.cwd_truncated = false")
                .node
                .eval(&whole)
        );
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
        let e =
            compile_with("evt.type in (sendfile, splice) and fd.num > 0", &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the condition can match no event type this agent's sensor produces (evt.type values it names that the sensor never produces: sendfile, splice)"
        );
        let ok = compile_with("evt.type in (sendfile, connect)", &[], &[]).unwrap();
        assert_eq!(ok.unknown_types, ["sendfile"]);
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
    fn a_rules_selective_test_runs_before_its_exceptions_and_an_or_tries_the_likely_branch_first() {
        // Falco's shape: cheap but nearly always true exceptions, one
        // selective test. The selective test decides most events alone.
        let comp = c("evt.type = openat and not proc.name in (a, b) \
             and not proc.cmdline startswith x and fd.typechar = f \
             and fd.name startswith /etc");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::And(items) = &node else {
            panic!("{node:?}")
        };
        let first = format!("{:?}", items[0]);
        assert!(
            first.contains("FdName") && first.contains("StartsWith"),
            "{node:?}"
        );
        assert!(matches!(items[items.len() - 1], Node::Not(_)), "{node:?}");
        // In an `or`, the branch most likely true comes first.
        let comp = c("evt.type = execve and (proc.name = sh or proc.exe != x)");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::Or(alts) = &node else {
            panic!("{node:?}")
        };
        assert!(format!("{:?}", alts[0]).contains("Ne("), "{node:?}");
        // Reordering never changes an answer.
        assert!(node.eval(&exec("/bin/sh", &["sh"])));
        let comp = c("evt.type = execve and not proc.name in (a, b) and proc.name = sh");
        assert!(comp.node.eval(&exec("/bin/sh", &["sh"])));
        assert!(!comp.node.eval(&exec("/bin/a", &["a"])));
    }

    #[test]
    fn an_opens_access_mode_test_runs_after_the_selective_test() {
        // The index already sent the rule only opens whose mode can pass.
        let comp = c("evt.type = openat and evt.is_open_read = true \
             and fd.name in (/etc/shadow, /etc/sudoers)");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::And(items) = &node else {
            panic!("{node:?}")
        };
        assert!(format!("{:?}", items[0]).contains("FdName"), "{node:?}");
        let mut e = open("/etc/shadow", libc::O_RDONLY);
        assert!(node.eval(&e));
        e.evt.args.flags = Some(libc::O_WRONLY as u64);
        assert!(!node.eval(&e));
    }

    #[test]
    fn string_tests_of_one_field_in_one_junction_read_the_field_once() {
        let comp = c("evt.type = openat and (fd.name endswith /.aws/credentials \
             or fd.name startswith /etc/cron or fd.name in (/etc/shadow) \
             or proc.name = vi or fd.name glob '/root/*.pem')");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::Or(alts) = &node else {
            panic!("{node:?}")
        };
        assert_eq!(alts.len(), 2, "fd.name's four tests are one: {node:?}");
        for (path, fires) in [
            ("/root/.aws/credentials", true),
            ("/etc/crontab", true),
            ("/etc/shadow", true),
            ("/etc/shadow-", false),
            ("/root/k.pem", true),
            ("/root/k.pem.txt", false),
        ] {
            assert_eq!(node.eval(&open(path, libc::O_RDONLY)), fires, "{path}");
        }
        // Exceptions (negated tests of one field in an `and`) merge too.
        let comp = c("evt.type = openat and not proc.name in (a, b) \
             and not proc.name startswith kube and fd.name startswith /etc");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::And(items) = &node else {
            panic!("{node:?}")
        };
        assert_eq!(items.len(), 2, "{node:?}");
        assert!(node.eval(&open("/etc/x", libc::O_RDONLY)));
        // Different fields, transformers and list fields stay apart.
        let comp = c("evt.type = execve and (proc.name = a or proc.pname = a \
             or tolower(proc.name) = b or proc.aname = c or proc.aname = d)");
        let node = comp.node.clone().behind_index(comp.types);
        let Node::Or(alts) = &node else {
            panic!("{node:?}")
        };
        assert_eq!(alts.len(), 5, "{node:?}");
    }

    #[test]
    fn a_merged_test_on_a_partial_path_is_undecided_as_each_test_was() {
        let comp = c("evt.type = openat and (fd.name startswith /etc or fd.name endswith .pem)");
        let mut e = open("/a/b", libc::O_RDONLY);
        e.fd.as_mut().expect("fd").name_truncated = true;
        assert!(comp.node.eval(&e), "undecided lets the rule match");
        let comp =
            c("evt.type = openat and not fd.name startswith /etc and not fd.name endswith .pem");
        assert!(comp.node.eval(&e), "under a not, undecided is false");
        let comp =
            c("evt.type = openat and not (fd.name startswith /etc or fd.name endswith .pem)");
        assert!(comp.node.eval(&e));
        let mut absent = open("/a/b", libc::O_RDONLY);
        absent.fd = None;
        let comp = c("evt.type = openat and (fd.name startswith /etc or fd.name endswith .pem)");
        assert!(!comp.node.eval(&absent), "absent fails every test");
        let comp =
            c("evt.type = openat and not fd.name startswith /etc and not fd.name endswith .pem");
        assert!(comp.node.eval(&absent), "and its negations hold");
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
        let macros = &[("outer", "inner"), ("inner", "k8s.pod.label.app = x")];
        let e = compile_with("evt.type = connect and outer", &[], macros).unwrap_err();
        assert!(e.is_unknown_filter());
        assert!(
            e.to_string()
                .starts_with("unknown field k8s.pod.label.app (pod labels need"),
            "{e}"
        );
        assert!(e.to_string().ends_with("(in macro outer > inner)"), "{e}");
        let e = compile_with("evt.type = open and evt.buffer contains x", &[], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("unknown field evt.buffer (the sensor does not capture the data"),
            "{e}"
        );
        let e = compile_with("container.mount.dest[proc] = x", &[], &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("field container.mount.dest: bad index \"proc\""),
            "{e}"
        );
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
                    options: Vec::new(),
                },
                Mount {
                    source: "/data".into(),
                    dest: "/data".into(),
                    options: Vec::new(),
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
            // Falco's lookups: the destination of the mount whose source
            // matches a glob, the source by destination, or the Nth.
            ("container.mount.dest[/et*] = /host/etc", true),
            ("container.mount.dest[/data] = /data", true),
            ("container.mount.source[/host/etc] = /etc", true),
            ("container.mount.source[1] = /data", true),
            ("container.mount[0] = \"/etc:/host/etc::true:\"", true),
            // No such mount reads <NA>, as Falco's sensitive_mount expects.
            ("container.mount.dest[/proc*] = \"<NA>\"", true),
            (
                "not container.mount.dest[/proc*] in (\"<NA>\",\"N/A\")",
                false,
            ),
            ("not container.mount.dest[/etc] in (\"<NA>\",\"N/A\")", true),
            ("container.mount.dest[7] = \"<NA>\"", true),
        ] {
            assert_eq!(c(cond).node.eval(&e), want, "{cond}");
        }
        // On the host there is no container, so no mount at all.
        e.container = Container::host();
        for cond in [
            "container.mount.dest[/etc] = \"<NA>\"",
            "not container.mount.dest[/etc] in (\"<NA>\",\"N/A\")",
        ] {
            assert!(c(cond).node.eval(&e) == cond.starts_with("not"), "{cond}");
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

    /// Ten lists, each naming the one before it eight times: 8^10 items.
    pub(crate) fn exploding_lists() -> Vec<(String, Vec<String>)> {
        let mut lists = vec![("l0".to_string(), (0..8).map(|i| format!("x{i}")).collect())];
        for i in 1..10 {
            lists.push((format!("l{i}"), vec![format!("l{}", i - 1); 8]));
        }
        lists
    }

    /// Thirty macros, each `(m or m)` of the one before it: 2^30 nodes.
    pub(crate) fn exploding_macros() -> Vec<(String, String)> {
        let mut macros = vec![("m0".to_string(), "proc.name = a".to_string())];
        for i in 1..30 {
            macros.push((format!("m{i}"), format!("(m{p} or m{p})", p = i - 1)));
        }
        macros
    }

    #[test]
    fn lists_that_double_at_every_level_are_refused_at_the_item_cap() {
        let lists = exploding_lists();
        let lists: Vec<(&str, Vec<&str>)> = lists
            .iter()
            .map(|(n, i)| (n.as_str(), i.iter().map(String::as_str).collect()))
            .collect();
        let refs: Vec<(&str, &[&str])> = lists.iter().map(|(n, i)| (*n, i.as_slice())).collect();
        let e = compile_with("evt.type = execve and proc.name in (l9)", &refs, &[]).unwrap_err();
        assert!(
            matches!(
                e,
                CompileError::TooLarge {
                    what: Measure::ListItems,
                    limit: Limit {
                        max: MAX_ITEMS_PER_RULE,
                        scope: Scope::Rule
                    },
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("more than 20000 list items"), "{e}");
        // Within the cap, the same lists compile.
        let c = compile_with("evt.type = execve and proc.name in (l3)", &refs, &[]).unwrap();
        assert_eq!(c.items, 8usize.pow(4) + 1, "the items and `execve`");
    }

    #[test]
    fn macros_that_double_at_every_level_are_refused_at_the_node_cap() {
        let macros = exploding_macros();
        let refs: Vec<(&str, &str)> = macros
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_str()))
            .collect();
        let e = compile_with("evt.type = execve and m29", &[], &refs).unwrap_err();
        let CompileError::TooLarge {
            what,
            limit,
            within,
        } = &e
        else {
            panic!("{e}");
        };
        assert_eq!(*what, Measure::Nodes);
        assert_eq!(limit.max, MAX_NODES_PER_RULE);
        assert_eq!(within.first().map(String::as_str), Some("m29"), "{e}");
        // Ten levels (1,023 checks) are fine.
        let c = compile_with("evt.type = execve and m9", &[], &refs).unwrap();
        assert!(
            c.nodes > 1023 && c.nodes < MAX_NODES_PER_RULE,
            "{}",
            c.nodes
        );
    }

    #[test]
    fn what_a_file_has_left_caps_its_next_rule_and_says_so() {
        let (l, m) = env_with(&[("big", &["a", "b", "c"])], &[]);
        let env = Env {
            lists: &l,
            macros: &m,
        };
        let expr = condition::parse("evt.type = execve and proc.name in (big)").unwrap();
        // Four items: `execve` and the list's three.
        let e =
            compile_within(&expr, &env, Budget::within_file(MAX_NODES_PER_FILE, 3)).unwrap_err();
        assert!(
            e.to_string()
                .contains("what the limit for one file left to this rule is 3"),
            "{e}"
        );
        assert!(compile_within(&expr, &env, Budget::within_file(10, 4)).is_ok());
    }

    #[test]
    fn nesting_across_macros_is_capped_before_it_can_exhaust_a_thread_stack() {
        // 31 macros (under the macro depth cap), each 100 `not`s deep:
        // 3,100 levels if expanded. The cap refuses it; compiling happens
        // on a thread with a 2 MiB stack, as the daemon's blocking pool has.
        let deep = |inner: &str| format!("{}{inner}", "not ".repeat(100));
        let mut macros = vec![("n0".to_string(), deep("proc.name = a"))];
        for i in 1..31 {
            macros.push((format!("n{i}"), deep(&format!("n{}", i - 1))));
        }
        let e = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let refs: Vec<(&str, &str)> = macros
                    .iter()
                    .map(|(n, c)| (n.as_str(), c.as_str()))
                    .collect();
                compile_with("evt.type = execve and n30", &[], &refs)
                    .unwrap_err()
                    .to_string()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(e.contains("levels of nesting"), "{e}");
    }
}
