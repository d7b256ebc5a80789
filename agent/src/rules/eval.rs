//! The evaluator: a compiled condition ([`Node`]) tested against one
//! [`Event`] without parsing, formatting or allocating.
//!
//! Owns what each compiled predicate means on the hot path: the tree of
//! `and` / `or` / `not`, the event-type bit sets, value tests by kind, and
//! the table look-ups the compiler ([`super::compile`]) prepared for
//! `evt.arg.flags`, `evt.res` and the named arguments. Never reads anything
//! but the event it is given.
//!
//! Absent values follow Falco: every comparison with an absent value is
//! false (`!=` too), `exists` is false, and `not` inverts the result.
//!
//! Partial paths ([`FieldValue::Partial`]: `fd.name`, `fd.directory`,
//! `fd.filename`, `proc.exepath`, `proc.pexepath`, `proc.aexepath[N]`,
//! `proc.cwd` and the resolved `evt.arg.*` paths when the sensor could not
//! read the whole path) fail closed.
//! `exists` holds on them; every other comparison (`=`, `!=`, `in`,
//! `startswith`, `endswith`, `contains`, `glob`, `pmatch`, `regex`, with or
//! without transformers, `a = val(b)`) is *undecided* and takes the value
//! that lets the rule match: true under an even number of `not`s, false
//! under an odd number (an exception is a `not`). A path too deep to read
//! is so treated as lying inside every directory a rule watches and
//! outside every directory a rule excuses; a rule that wants otherwise
//! tests `fd.name_truncated` (or `proc.exepath_truncated`,
//! `proc.cwd_truncated`, `evt.arg.path_truncated`) itself, which is an
//! ordinary boolean.

use std::net::IpAddr;

use crate::event::fields::{StrField, StrValue};
use crate::event::{Arg, Event, EventType, Field, FieldValue};

use super::condition::Transformer;
use super::glob::Glob;
use super::strany::StrAny;
use super::strset::StrSet;

/// Bit set of event types ([`EventType::index`]).
pub(crate) type TypeMask = u64;

const _: () = assert!(
    EventType::COUNT < 64,
    "TypeMask is a u64: widen it before adding a 64th event type"
);

pub(crate) const ALL_TYPES: TypeMask = (1u64 << EventType::ALL.len()) - 1;

pub(crate) fn type_bit(t: EventType) -> TypeMask {
    1u64 << t.index()
}

/// The names in a mask, for messages and `rules list`.
pub(crate) fn type_names(mask: TypeMask) -> Vec<&'static str> {
    EventType::ALL
        .iter()
        .filter(|t| mask & type_bit(**t) != 0)
        .map(|t| t.as_str())
        .collect()
}

/// What the rule index knows of an event before any rule runs: besides
/// its type, the access mode of an open and whether it happened on the
/// host. Rules whose condition is false for an event's class
/// ([`Node::decide`]) are not indexed under it: a read-only open never
/// meets the rules about writes, a host event never meets `container.id
/// != host` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventClass {
    pub(crate) ty: EventType,
    /// `O_RDONLY`, `O_WRONLY`, `O_RDWR` of an open; [`EventClass::OTHER_ACCESS`]
    /// for any other event, an open without flags or access mode 3.
    pub(crate) access: u8,
    pub(crate) host: bool,
}

impl EventClass {
    pub(crate) const OTHER_ACCESS: u8 = 3;
    /// Classes per event type: four access values times host or not.
    pub(crate) const PER_TYPE: usize = 8;

    #[inline]
    pub(crate) fn of(e: &Event) -> EventClass {
        let access = match e.evt.args.flags {
            Some(f) if e.evt.ty.is_open() => (f & libc::O_ACCMODE as u64) as u8,
            _ => Self::OTHER_ACCESS,
        };
        EventClass {
            ty: e.evt.ty,
            access,
            host: e.container.is_host(),
        }
    }

    /// The class's slot in the index.
    #[inline]
    pub(crate) fn slot(self) -> usize {
        self.ty.index() * Self::PER_TYPE + usize::from(self.access) + 4 * usize::from(self.host)
    }

    /// Every class of type `ty`.
    pub(crate) fn all(ty: EventType) -> impl Iterator<Item = EventClass> {
        (0..=Self::OTHER_ACCESS)
            .flat_map(move |access| [false, true].map(|host| EventClass { ty, access, host }))
    }

    /// The access mode, when it is a real one.
    fn mode(self) -> Option<u64> {
        (self.ty.is_open() && self.access < Self::OTHER_ACCESS).then_some(u64::from(self.access))
    }
}

/// The compiled form of a condition.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(bool),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    /// `evt.type` in a set.
    Types(TypeMask),
    Pred(Box<Pred>),
}

impl Node {
    /// Whether the condition holds on `e`.
    #[inline]
    pub(crate) fn eval(&self, e: &Event) -> bool {
        self.eval_as(e, true)
    }

    /// `undecided`: what a comparison that cannot be decided (on a partial
    /// path) answers, so that the whole condition holds: true at the top,
    /// flipped by every `not` on the way down.
    #[inline]
    fn eval_as(&self, e: &Event, undecided: bool) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::And(items) => items.iter().all(|n| n.eval_as(e, undecided)),
            Node::Or(items) => items.iter().any(|n| n.eval_as(e, undecided)),
            Node::Not(n) => !n.eval_as(e, !undecided),
            Node::Types(m) => m & type_bit(e.evt.ty) != 0,
            Node::Pred(p) => p.eval_as(e, undecided),
        }
    }
}

impl Node {
    /// The node's value on every event of class `c`, if the class alone
    /// decides it (`None`: the event's other fields do). Never decides a
    /// comparison that a partial path could leave undecided, so the answer
    /// holds under any number of `not`s.
    pub(crate) fn decide(&self, c: EventClass) -> Option<bool> {
        match self {
            Node::Const(b) => Some(*b),
            Node::Types(m) => Some(m & type_bit(c.ty) != 0),
            Node::Not(n) => n.decide(c).map(|b| !b),
            Node::And(items) => {
                let mut all = Some(true);
                for n in items.iter() {
                    match n.decide(c) {
                        Some(false) => return Some(false),
                        None => all = None,
                        Some(true) => {}
                    }
                }
                all
            }
            Node::Or(items) => {
                let mut all = Some(false);
                for n in items.iter() {
                    match n.decide(c) {
                        Some(true) => return Some(true),
                        None => all = None,
                        Some(false) => {}
                    }
                }
                all
            }
            Node::Pred(p) => p.decide(c),
        }
    }
}

impl Node {
    /// The same condition with its string tests on the fields of
    /// [`StrField`] read by the fast readers ([`Pred::FastStr`],
    /// [`Pred::FastAnyStr`]). Done after the rule is indexed:
    /// [`Node::decide`] knows the general forms only.
    pub(crate) fn read_fast(self) -> Node {
        match self {
            Node::And(items) => Node::And(items.into_iter().map(Node::read_fast).collect()),
            Node::Or(items) => Node::Or(items.into_iter().map(Node::read_fast).collect()),
            Node::Not(n) => Node::Not(Box::new(n.read_fast())),
            Node::Pred(p) => Node::Pred(Box::new(match *p {
                Pred::Value {
                    reader: Reader::Field(f),
                    transformers,
                    test: Test::Str(test),
                } if transformers.is_empty() && StrField::of(f).is_some() => Pred::FastStr {
                    field: StrField::of(f).expect("checked"),
                    test,
                },
                Pred::AnyStr { field, any } => match StrField::of(field) {
                    Some(field) => Pred::FastAnyStr { field, any },
                    None => Pred::AnyStr { field, any },
                },
                other => other,
            })),
            other @ (Node::Const(_) | Node::Types(_)) => other,
        }
    }
}

impl Pred {
    /// See [`Node::decide`]: `evt.is_open_read`/`evt.is_open_write` and the
    /// access-mode flags of opens, `container.id` compared with `host`.
    fn decide(&self, c: EventClass) -> Option<bool> {
        let (o_wronly, o_rdwr) = (libc::O_WRONLY as u64, libc::O_RDWR as u64);
        match self {
            Pred::Value {
                reader: Reader::Field(f @ (Field::EvtIsOpenRead | Field::EvtIsOpenWrite)),
                transformers,
                test: Test::Bool { want, negate },
            } if transformers.is_empty() => {
                if !c.ty.is_open() {
                    // Absent: every comparison is false.
                    return Some(false);
                }
                let mode = c.mode()?;
                let v = if *f == Field::EvtIsOpenRead {
                    mode != o_wronly
                } else {
                    mode != libc::O_RDONLY as u64
                };
                Some((v == *want) != *negate)
            }
            Pred::Flags { open: Some(m), .. } if c.ty.is_open() => match m {
                FlagMatch::Never => Some(false),
                FlagMatch::AccMode(want) => c.mode().map(|mode| mode == *want),
                FlagMatch::ReadOnly => c.mode().map(|mode| mode != o_wronly && mode != o_rdwr),
                FlagMatch::Bits(_) => None,
            },
            Pred::Value {
                reader: Reader::Field(Field::ContainerId),
                transformers,
                test: Test::Str(t),
            } if transformers.is_empty() => match (c.host, t) {
                (true, t) => Some(t.test(crate::event::Container::HOST_ID)),
                (false, StrTest::Eq(v)) if &**v == crate::event::Container::HOST_ID => Some(false),
                (false, StrTest::Ne(v)) if &**v == crate::event::Container::HOST_ID => Some(true),
                _ => None,
            },
            Pred::AnyStr {
                field: Field::ContainerId,
                any,
            } if c.host => Some(any.test(crate::event::Container::HOST_ID)),
            _ => None,
        }
    }
}

/// Where a predicate reads its value.
#[derive(Debug, Clone)]
pub(crate) enum Reader {
    Field(Field),
    /// `proc.aname` / `proc.apid` without index: true if any ancestor matches.
    AncestorNames,
    AncestorPids,
    /// `container.mount.dest` / `.source`: Falco's list-field semantics.
    MountDests,
    MountSources,
}

/// One comparison.
#[derive(Debug, Clone)]
pub(crate) enum Pred {
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
    /// Several string tests of one field that were branches of one `or`
    /// (see [`StrAny`]): the field is read once. Absent, partial and
    /// list values are handled as [`Pred::Value`] handles them.
    AnyStr { field: Field, any: Box<StrAny> },
    /// [`Pred::Value`] with a string test on a [`StrField`] and no
    /// transformer: the same answers, read without a [`FieldValue`].
    /// Made by [`Node::read_fast`] once the rule is indexed.
    FastStr { field: StrField, test: StrTest },
    /// [`Pred::AnyStr`] on a [`StrField`].
    FastAnyStr { field: StrField, any: Box<StrAny> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagMatch {
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
pub(crate) struct ResTable {
    pub(super) success: bool,
    /// Bit `n` set: the predicate holds for result `-n`.
    pub(super) errno: [u64; 64],
    /// The predicate itself, for results beyond the table.
    pub(super) slow: Pred,
}

/// A value test, by the value's kind.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Exists,
    Str(StrTest),
    Int(IntTest),
    Bool { want: bool, negate: bool },
    Ip(IpTest),
}

#[derive(Debug, Clone)]
pub(crate) enum StrTest {
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
pub(crate) enum IntTest {
    Cmp(CmpOp, i64),
    In(Box<[i64]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub(crate) enum IpTest {
    Eq(IpAddr),
    Ne(IpAddr),
    In(Box<[IpAddr]>),
    /// CIDR networks (`fd.net`, `fd.snet`, ...).
    InNet(Box<[IpNet]>),
    NotInNet(Box<[IpNet]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl IpNet {
    pub(crate) fn parse(s: &str) -> Option<IpNet> {
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

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
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
    /// Whether the predicate holds on `e`, as a condition of its own.
    #[inline]
    pub(crate) fn eval(&self, e: &Event) -> bool {
        self.eval_as(e, true)
    }

    /// `undecided`: the answer when the value is a partial path (see
    /// [`Node::eval_as`]).
    #[inline]
    fn eval_as(&self, e: &Event, undecided: bool) -> bool {
        match self {
            Pred::Value {
                reader,
                transformers,
                test,
            } => eval_value(reader, transformers, test, e, undecided),
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
                    None => slow.eval_as(e, undecided),
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
                    t.slow.eval_as(e, undecided)
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
            Pred::FastStr { field, test } => match field.get(e) {
                StrValue::Absent => false,
                StrValue::Partial => undecided,
                StrValue::Whole(s) => test.test(s),
            },
            Pred::FastAnyStr { field, any } => match field.get(e) {
                StrValue::Absent => false,
                StrValue::Partial => undecided,
                StrValue::Whole(s) => any.test(s),
            },
            Pred::AnyStr { field, any } => match e.field(field) {
                FieldValue::Absent | FieldValue::Bool(_) | FieldValue::Ip(_) => false,
                FieldValue::Partial(_) => undecided,
                FieldValue::Str(s) => any.test(&s),
                FieldValue::Int(i) => any.test(&i.to_string()),
                FieldValue::List(items) => items.iter().any(|s| any.test(s)),
            },
            Pred::FieldEq { a, b, negate } => {
                let (va, vb) = (read_plain(a, e), read_plain(b, e));
                if va.is_absent() || vb.is_absent() {
                    return false;
                }
                if matches!(va, FieldValue::Partial(_)) || matches!(vb, FieldValue::Partial(_)) {
                    return undecided;
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
        Reader::AncestorNames => e.field(&Field::ProcAnameAny),
        Reader::AncestorPids => e.field(&Field::ProcApidAny),
        Reader::MountDests => e.field(&Field::ContainerMountDest),
        Reader::MountSources => e.field(&Field::ContainerMountSource),
    }
}

fn eval_value(
    reader: &Reader,
    transformers: &[Transformer],
    test: &Test,
    e: &Event,
    undecided: bool,
) -> bool {
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
        Reader::Field(f) => {
            let v = e.field(f);
            match (&v, test) {
                (FieldValue::Absent, _) => false,
                (FieldValue::List(items), Test::Exists) => !items.is_empty(),
                (_, Test::Exists) => true,
                (FieldValue::Partial(_), _) => undecided,
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
    pub(crate) fn test(&self, s: &str) -> bool {
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
pub(super) fn path_under(path: &str, prefix: &str) -> bool {
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
    pub(crate) fn test(&self, v: i64) -> bool {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Process;

    fn event() -> Event {
        Event::new(
            EventType::Execve,
            Arc::new(Process::new(7, 1, "/usr/bin/Curl", &["curl"])),
        )
    }

    fn value(field: Field, test: Test) -> Node {
        Node::Pred(Box::new(Pred::Value {
            reader: Reader::Field(field),
            transformers: Box::new([]),
            test,
        }))
    }

    #[test]
    fn icontains_ignores_ascii_case_against_a_lowered_needle() {
        assert!(icontains(b"/usr/bin/Curl", b"curl"));
        assert!(icontains(b"abc", b""));
        assert!(!icontains(b"cu", b"curl"));
        assert!(!icontains(b"/usr/bin/wget", b"curl"));
    }

    #[test]
    fn pmatch_takes_whole_path_components_only() {
        assert!(path_under("/etc/ssl/cert.pem", "/etc"));
        assert!(path_under("/etc", "/etc"));
        assert!(!path_under("/etcetera", "/etc"));
        assert!(path_under("/anything", "/"));
        assert!(!path_under("relative", "/"));
    }

    #[test]
    fn networks_contain_their_addresses_and_mapped_v4() {
        let net = IpNet::parse("10.42.0.0/16").unwrap();
        assert!(net.contains("10.42.9.1".parse().unwrap()));
        assert!(!net.contains("10.43.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.42.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert_eq!(IpNet::parse("10.0.0.0/33"), None);
    }

    #[test]
    fn an_absent_value_fails_even_a_negated_comparison_and_exists() {
        let e = event();
        let ne = value(Field::K8sPodName, Test::Str(StrTest::Ne("web".into())));
        assert!(!ne.eval(&e));
        assert!(!value(Field::K8sPodName, Test::Exists).eval(&e));
        assert!(Node::Not(Box::new(ne)).eval(&e));
        assert!(value(Field::ProcName, Test::Exists).eval(&e));
    }

    #[test]
    fn type_sets_test_the_events_type_bit() {
        let e = event();
        assert!(Node::Types(type_bit(EventType::Execve)).eval(&e));
        assert!(!Node::Types(ALL_TYPES & !type_bit(EventType::Execve)).eval(&e));
        assert_eq!(type_names(type_bit(EventType::Openat)), ["openat"]);
    }
}
