//! The field table: every Falco field this agent knows, one entry each.
//!
//! Owns [`Field`], what each field reads from an [`Event`], its kind, and
//! whether the sensor ever fills it. [`Field::parse`] turns a Falco field
//! name (and its optional `[index]`) into a [`Field`] once, when a rule or
//! an output format compiles; [`Event::field`] reads it on the hot path.
//! The argument table ([`Arg`], `evt.arg.*`) lives here too. Never
//! formats a value itself: text that Falco renders from raw values comes
//! from [`super::render`].
//!
//! A field the event cannot know is *absent* ([`FieldValue::Absent`]), and
//! Falco's rules for absent fields apply (every comparison with an absent
//! value is false; `exists` is false; outputs print `<NA>`).
//!
//! A path the sensor could not read in full is *partial*
//! ([`FieldValue::Partial`], from [`path`]): the kernel's dentry walk stops
//! after 32 levels and keeps the last components, a string is cut at
//! PATH_MAX, a relative path's starting directory could not be read. Such a
//! value says so in its own flag field (`fd.name_truncated`,
//! `proc.exepath_truncated`, `proc.cwd_truncated`,
//! `evt.arg.path_truncated`); the evaluator decides no
//! comparison on it but `exists` (see `rules::eval`), and outputs print it
//! after `...`. A path field's accessor returns `path(text, truncated)`.
//!
//! # How to add a field
//!
//! Add one entry to the `fields!` table below:
//!
//! ```text
//! /// `proc.vpid`: the pid in the process's own pid namespace.
//! ProcVpid = "proc.vpid", Int, Filled, Stored,
//!     |e| Int(e.proc.vpid.into());
//! ```
//!
//! - the variant, then every name a rule may write (`"fd.rip" | "fd.dip"`
//!   for Falco's aliases);
//! - the [`FieldKind`]: how a rule's literal is parsed (`Str`, `Int`,
//!   `Bool`, `Ip`, `List`);
//! - [`Collected`]: `Filled` if the sensor fills it, `Never` if not (the
//!   rules loader then refuses conditions on it, while outputs may still
//!   print it as `<NA>`);
//! - [`Read`]: `Stored` for a value read as it is stored, `Rendered` when
//!   reading formats new text (the evaluator tests such fields last);
//! - the accessor: an expression of the event `e` returning a
//!   [`FieldValue`]; what the event does not know is `Absent`.
//!
//! Every part is required by the macro's grammar and every generated
//! `match` is exhaustive, so a missing part does not compile. An indexed
//! field (`proc.aname[N]`) names its index type, which implements
//! [`FieldIndex`]: `ProcAname(n: Depth) = "proc.aname", ...`; the index is
//! in scope in the accessor. A name may have both a plain and an indexed
//! entry (`proc.aname` and `proc.aname[N]`). If the value is new data, add
//! it to the model first ([`super::model`]: `Process`, `Fd`, `Container`,
//! ...) with `#[serde(default)]` so older JSON events still read, and let
//! the sensor fill it (`sensor/decode.rs`, `sensor/proctable.rs`). Tests:
//! a case in this module's tests for the value and for absence, and a
//! condition in `rules/compile.rs`'s tests if the kind is new to an
//! operator. An argument is one entry of the `args!` table (name, kind,
//! accessor) plus its place in the event types' `args(...)` column.
//!
//! # How to add an event type
//!
//! 1. `ebpf/abi.h`: a new `EA_EVT_*` id (ids are never renumbered), the
//!    hook in `ebpf/`, and the record layout; `sensor/abi.rs` mirrors the
//!    id in `Kind` (and `Kind::event_type`) and the layout.
//! 2. One entry in the `event_types!` table in [`super::model`]: Falco's
//!    name, its arguments in Falco's order, how its flags print.
//! 3. `sensor/decode.rs`: turn the record into the event's args and fd.
//! 4. Tests: decoding in `sensor/decode.rs`'s tests, a real syscall in the
//!    sensor integration tests, and a rule on it in `rules/`' tests.
//!
//! Rule conditions may also write the "either end" network fields
//! (`fd.ip`, `fd.port`, `fd.net`, `fd.cnet`, `fd.snet`, `fd.lnet`,
//! `fd.rnet`): they are not fields of their own but are compiled into an
//! `or` of the ends' entries by the rules compiler.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::model::{Event, Fd, FdType, HostNames, Mount};
use super::render::{
    af_name, bpf_cmd_name, prctl_option_name, ptrace_request_name, render_caps, render_flags,
    render_mode, render_nstype, render_res, sock_type_name,
};

/// A field's value on one event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue<'a> {
    Absent,
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    Ip(IpAddr),
    /// Several values (`proc.aname` without index, `container.mount.dest`).
    List(Vec<Cow<'a, str>>),
    /// A path known only in part (the event's `*_truncated` flag is set):
    /// the text is the part the sensor read. No comparison can be decided
    /// on it; `exists` holds.
    Partial(Cow<'a, str>),
}

impl FieldValue<'_> {
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, FieldValue::Absent)
    }
}

impl fmt::Display for FieldValue<'_> {
    /// How an output (`%field`) prints the value: absent is `<NA>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Absent => f.write_str("<NA>"),
            FieldValue::Str(s) => f.write_str(s),
            // `...` says that the start is missing (or all of it, or the end
            // after a cut at PATH_MAX: the flag field tells which path).
            FieldValue::Partial(s) if s.is_empty() || s.starts_with('/') => write!(f, "...{s}"),
            FieldValue::Partial(s) => write!(f, ".../{s}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            FieldValue::Ip(ip) => write!(f, "{ip}"),
            FieldValue::List(items) => {
                f.write_str("(")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(it)?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What kind of value a field holds; decides how a rule's literal is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldKind {
    Str,
    Int,
    Bool,
    Ip,
    List,
}

/// Whether this agent's sensor ever fills a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collected {
    /// The sensor fills it (on the event types that have it).
    Filled,
    /// Never filled: a *condition* on it could never be true, so the rules
    /// loader refuses it; outputs may still name it and print `<NA>`.
    #[expect(
        dead_code,
        reason = "no field in the table is `Never` today; the loader's refusal stays for the next one"
    )]
    Never,
}

/// What reading a field costs, for the evaluator's "cheap tests first".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The value as stored: a number, a flag, borrowed text.
    Stored,
    /// Formatted into new text on every read (`evt.res`, `evt.arg.flags`).
    Rendered,
}

/// Why a field name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FieldError {
    #[error("unknown field {0}")]
    Unknown(String),
    #[error("field {field} needs an index such as {field}[1]")]
    IndexRequired { field: String },
    #[error("field {field} takes no index")]
    IndexNotAllowed { field: String },
    #[error("field {field}: bad index \"{index}\"")]
    BadIndex { field: String, index: String },
}

/// The deepest ancestor an index may name. The sensor's ancestor lists are
/// bounded to this depth too.
pub(crate) const MAX_ANCESTOR_DEPTH: u8 = 16;

/// What may stand in a field's `[index]`.
pub(crate) trait FieldIndex: Sized {
    /// The index from its text (already trimmed); `None` if it is not one.
    fn parse_index(index: &str) -> Option<Self>;
}

/// An ancestor in `proc.aname[N]` and friends: 0 is the process itself, 1
/// its parent, ... at most [`MAX_ANCESTOR_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Depth(u8);

impl Depth {
    pub(crate) fn get(self) -> usize {
        self.0.into()
    }
}

impl FieldIndex for Depth {
    fn parse_index(index: &str) -> Option<Self> {
        index
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= MAX_ANCESTOR_DEPTH)
            .map(Depth)
    }
}

/// A container mount in `container.mount.dest[...]` and friends, as Falco
/// names one: by its place in the runtime's list (`[0]`) or by a glob on
/// its other end (`container.mount.dest[/proc*]` is the destination of the
/// first mount whose source matches `/proc*`; `container.mount.source[..]`
/// looks up by destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum MountKey {
    Nth(u16),
    /// Interned: a field is `Copy`, and rules name few distinct patterns.
    Path(&'static str),
}

impl FieldIndex for MountKey {
    fn parse_index(index: &str) -> Option<Self> {
        if let Ok(n) = index.parse::<u16>() {
            return Some(MountKey::Nth(n));
        }
        index
            .starts_with('/')
            .then(|| MountKey::Path(intern(index)))
    }
}

/// One copy of each mount pattern for the process's lifetime (bounded by
/// the distinct patterns the loaded rule files ever named).
fn intern(pattern: &str) -> &'static str {
    static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = seen.iter().find(|p| **p == pattern) {
        return p;
    }
    let p: &'static str = Box::leak(pattern.into());
    seen.push(p);
    p
}

/// The mount `key` names in the event's container: `Ok(None)` on the host,
/// `Err(())` for a container without such a mount.
fn mount_at(e: &Event, key: MountKey, by_dest: bool) -> Result<Option<&Mount>, ()> {
    if e.container.is_host() {
        return Ok(None);
    }
    let found = match key {
        MountKey::Nth(n) => e.container.mounts.get(usize::from(n)),
        MountKey::Path(p) => {
            let glob = crate::rules::glob::Glob::new(p, false);
            e.container
                .mounts
                .iter()
                .find(|m| glob.matches(if by_dest { &m.dest } else { &m.source }))
        }
    };
    found.map(Some).ok_or(())
}

/// A container's mount as a field: `<NA>` when the container has no such
/// mount, so that Falco's own test for one (`not container.mount.dest[/etc]
/// in ("<NA>","N/A")`) reads as its authors meant; absent on the host.
fn mount_field<'e>(
    e: &'e Event,
    key: MountKey,
    by_dest: bool,
    part: impl Fn(&'e Mount) -> FieldValue<'e>,
) -> FieldValue<'e> {
    match mount_at(e, key, by_dest) {
        Ok(None) => FieldValue::Absent,
        Ok(Some(m)) => part(m),
        Err(()) => text("<NA>"),
    }
}

/// `evt.arg[N]`: the Nth argument in the event type's order.
impl FieldIndex for u8 {
    fn parse_index(index: &str) -> Option<Self> {
        index.parse().ok()
    }
}

/// `evt.arg[name]`.
impl FieldIndex for Arg {
    fn parse_index(index: &str) -> Option<Self> {
        Arg::parse(index)
    }
}

// ---- accessor helpers -------------------------------------------------------

fn text(v: &str) -> FieldValue<'_> {
    FieldValue::Str(Cow::Borrowed(v))
}

fn opt_text(v: &Option<String>) -> FieldValue<'_> {
    v.as_deref().map_or(FieldValue::Absent, text)
}

/// A path: [`FieldValue::Partial`] when the sensor could not read it in full.
fn path(v: &str, truncated: bool) -> FieldValue<'_> {
    if truncated {
        FieldValue::Partial(Cow::Borrowed(v))
    } else {
        text(v)
    }
}

fn opt_path(v: &Option<String>, truncated: bool) -> FieldValue<'_> {
    v.as_deref()
        .map_or(FieldValue::Absent, |v| path(v, truncated))
}

fn owned(v: String) -> FieldValue<'static> {
    FieldValue::Str(Cow::Owned(v))
}

fn opt_int<T: Into<i64>>(v: Option<T>) -> FieldValue<'static> {
    v.map_or(FieldValue::Absent, |x| FieldValue::Int(x.into()))
}

fn opt_bool(v: Option<bool>) -> FieldValue<'static> {
    v.map_or(FieldValue::Absent, FieldValue::Bool)
}

fn dirname(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => path,
    }
}

fn ip<'a>(a: Option<SocketAddr>) -> FieldValue<'a> {
    a.map_or(FieldValue::Absent, |a| FieldValue::Ip(a.ip()))
}

fn port<'a>(a: Option<SocketAddr>) -> FieldValue<'a> {
    a.map_or(FieldValue::Absent, |a| FieldValue::Int(a.port().into()))
}

/// An address's host names: one name as text; several as a list, which a
/// comparison matches when any of them does.
fn host_names(names: Option<&HostNames>) -> FieldValue<'_> {
    match names.map(|n| &n[..]) {
        None | Some([]) => FieldValue::Absent,
        Some([one]) => text(one),
        Some(many) => FieldValue::List(many.iter().map(|n| Cow::Borrowed(&**n)).collect()),
    }
}

// ---- the argument table -----------------------------------------------------

/// Generates [`Arg`] and [`Event::arg`] from one entry per argument:
/// `Variant = "name", Kind, |e| accessor;`.
macro_rules! args {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $name:literal, $kind:ident, |$e:ident| $read:expr;
    )*) => {
        /// `evt.arg.<name>` names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(
            clippy::enum_variant_names,
            reason = "`Arg2Str` and `Arg2Int` are Falco's `arg2_str` and `arg2_int`"
        )]
        pub(crate) enum Arg {
            $( $(#[$doc])* $variant, )*
        }

        impl Arg {
            const ALL: &'static [Arg] = &[$(Arg::$variant),*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $( Arg::$variant => $name, )*
                }
            }

            fn kind(self) -> FieldKind {
                match self {
                    $( Arg::$variant => FieldKind::$kind, )*
                }
            }
        }

        impl Event {
            /// `evt.arg.<name>`, rendered the way Falco renders it.
            pub(crate) fn arg(&self, arg: Arg) -> FieldValue<'_> {
                use FieldValue::Absent;
                match arg {
                    $( Arg::$variant => {
                        let $e = self;
                        $read
                    } )*
                }
            }
        }
    };
}

args! {
    /// Open flags (`O_*`), memfd (`MFD_*`), exec (`EXE_*`), renameat2
    /// (`RENAME_*`), unlinkat (`AT_REMOVEDIR`), mount (`MS_*`), clone
    /// (`CLONE_*`), dup3 (`O_CLOEXEC`): see the event types' `flags` column.
    Flags = "flags", Str,
        |e| e.evt.args.flags.map_or(Absent, |f| FieldValue::Str(render_flags(e.evt.ty, f)));
    /// chmod's by Falco's bit names (`S_ISUID|S_IXUSR|...`), others in octal.
    Mode = "mode", Str,
        |e| e.evt.args.mode.map_or(Absent, |m| owned(render_mode(e.evt.ty, m)));
    /// exec: the path as given (whole); chmod family: resolved, partial
    /// when `path_truncated`.
    Filename = "filename", Str, |e| opt_path(&e.evt.args.filename, e.evt.args.path_truncated);
    Name = "name", Str, |e| opt_text(&e.evt.args.name);
    Path = "path", Str, |e| opt_path(&e.evt.args.path, e.evt.args.path_truncated);
    Oldpath = "oldpath", Str, |e| opt_path(&e.evt.args.oldpath, e.evt.args.path_truncated);
    Newpath = "newpath", Str, |e| opt_path(&e.evt.args.newpath, e.evt.args.path_truncated);
    Target = "target", Str, |e| opt_text(&e.evt.args.target);
    Linkpath = "linkpath", Str, |e| opt_path(&e.evt.args.linkpath, e.evt.args.path_truncated);
    /// Not a syscall argument: the event's resolved path arguments
    /// (`filename`, `path`, `oldpath`, `newpath`, `linkpath`) are known only
    /// in part (a relative path from a directory deeper than the sensor
    /// reads); comparisons on them then decide nothing.
    PathTruncated = "path_truncated", Bool, |e| FieldValue::Bool(e.evt.args.path_truncated);
    /// ptrace's request, by Falco's name (`PTRACE_ATTACH`).
    Request = "request", Str,
        |e| e.evt.args.request.map_or(Absent, |r| text(ptrace_request_name(r)));
    Pid = "pid", Int, |e| opt_int(e.evt.args.pid);
    Uid = "uid", Int, |e| opt_int(e.evt.args.uid);
    Gid = "gid", Int, |e| opt_int(e.evt.args.gid);
    Ruid = "ruid", Int, |e| opt_int(e.evt.args.ruid);
    Euid = "euid", Int, |e| opt_int(e.evt.args.euid);
    Suid = "suid", Int, |e| opt_int(e.evt.args.suid);
    Rgid = "rgid", Int, |e| opt_int(e.evt.args.rgid);
    Egid = "egid", Int, |e| opt_int(e.evt.args.egid);
    Sgid = "sgid", Int, |e| opt_int(e.evt.args.sgid);
    Fd = "fd", Int, |e| opt_int(e.evt.args.fd);
    Oldfd = "oldfd", Int, |e| opt_int(e.evt.args.oldfd);
    Newfd = "newfd", Int, |e| opt_int(e.evt.args.newfd);
    /// socket's family, by Falco's name (`AF_INET`).
    Domain = "domain", Str,
        |e| e.evt.args.domain.map_or(Absent, |d| text(af_name(d)));
    /// socket's type, by Falco's name (`SOCK_STREAM`).
    Type = "type", Str,
        |e| e.evt.args.sock_type.map_or(Absent, |t| text(sock_type_name(t)));
    Proto = "proto", Int, |e| opt_int(e.evt.args.proto);
    Dev = "dev", Str, |e| opt_text(&e.evt.args.dev);
    Dir = "dir", Str, |e| opt_text(&e.evt.args.dir);
    Fstype = "fstype", Str, |e| opt_text(&e.evt.args.fstype);
    Status = "status", Int, |e| opt_int(e.evt.args.status);
    /// connect/accept: the socket's `fd.name`.
    Tuple = "tuple", Str,
        |e| e.fd.as_ref()
            .filter(|f| f.ty.is_ip() || f.ty == FdType::Unix)
            .map_or(Absent, |f| text(&f.name));
    /// The result, as `evt.res` prints it.
    Res = "res", Str, |e| FieldValue::Str(render_res(e.evt.res));
    Dirfd = "dirfd", Int, |e| opt_int(e.evt.args.dirfd);
    /// setns's namespace type (`CLONE_NEWNET`).
    Nstype = "nstype", Str,
        |e| e.evt.args.nstype.map_or(Absent, |n| owned(render_nstype(n)));
    /// bpf's command (`BPF_PROG_LOAD`).
    Cmd = "cmd", Str, |e| e.evt.args.cmd.map_or(Absent, |c| FieldValue::Str(bpf_cmd_name(c)));
    /// prctl's option (`PR_SET_NAME`).
    Option = "option", Str,
        |e| e.evt.args.option.map_or(Absent, |o| FieldValue::Str(prctl_option_name(o)));
    Arg2Str = "arg2_str", Str, |e| opt_text(&e.evt.args.arg2_str);
    Arg2Int = "arg2_int", Int, |e| opt_int(e.evt.args.arg2_int);
    Pgid = "pgid", Int, |e| opt_int(e.evt.args.pgid);
    Backlog = "backlog", Int, |e| opt_int(e.evt.args.backlog);
}

impl Arg {
    pub(crate) fn parse(name: &str) -> Option<Arg> {
        Arg::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

// ---- the field table --------------------------------------------------------

/// A field's names and how a rule's text becomes the [`Field`].
struct Entry {
    names: &'static [&'static str],
    make: Make,
}

enum Make {
    /// The name alone.
    Plain(Field),
    /// The name with an `[index]`; `None` when the index is not one.
    Indexed(fn(&str) -> Option<Field>),
}

/// Builds an [`Entry`]'s [`Make`] for a plain or an indexed entry.
macro_rules! make {
    ($variant:path) => {
        Make::Plain($variant)
    };
    ($variant:path, $index:ty) => {
        Make::Indexed(|index| <$index as FieldIndex>::parse_index(index).map($variant))
    };
}

/// Generates [`Field`], its spellings, facts and [`Event::field`] from one
/// entry per field. See the module doc for an entry's parts.
macro_rules! fields {
    ($(
        $(#[$doc:meta])*
        $variant:ident $(($index:ident: $index_ty:ty))? = $($name:literal)|+,
            $kind:expr, $collected:ident, $cost:ident,
            |$e:ident| $read:expr;
    )*) => {
        /// A Falco field this agent knows. Parsed once when a rule compiles.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Field {
            $( $(#[$doc])* $variant $(($index_ty))?, )*
        }

        /// Every field's names, in table order.
        const ENTRIES: &[Entry] = &[
            $( Entry { names: &[$($name),+], make: make!(Field::$variant $(, $index_ty)?) }, )*
        ];

        impl Field {
            /// The kind of value; a rule's literal is read as this kind.
            #[allow(unused_variables)]
            pub(crate) fn kind(&self) -> FieldKind {
                use FieldKind::*;
                match *self {
                    $( Field::$variant $(($index))? => $kind, )*
                }
            }

            /// Whether the sensor ever fills the field.
            pub(crate) fn collected(&self) -> Collected {
                match self {
                    $( Field::$variant { .. } => Collected::$collected, )*
                }
            }

            /// What reading the field costs.
            pub(crate) fn read_cost(&self) -> Read {
                match self {
                    $( Field::$variant { .. } => Read::$cost, )*
                }
            }
        }

        impl Event {
            /// Read a field. Never panics; what the event does not know is `Absent`.
            pub(crate) fn field(&self, f: &Field) -> FieldValue<'_> {
                use FieldValue::{Absent, Bool, Int};
                match *f {
                    $( Field::$variant $(($index))? => {
                        let $e = self;
                        $read
                    } )*
                }
            }
        }
    };
}

fields! {
    // ---- evt.*
    /// Falco's name of the event type.
    EvtType = "evt.type", Str, Filled, Stored,
        |e| text(e.evt.ty.as_str());
    /// Nanoseconds since the Unix epoch.
    EvtTime = "evt.time", Int, Filled, Stored,
        |e| Int(e.evt.time as i64);
    EvtRawtime = "evt.rawtime", Int, Filled, Stored,
        |e| Int(e.evt.time as i64);
    EvtNum = "evt.num", Int, Filled, Stored,
        |e| Int(e.evt.num as i64);
    /// `SUCCESS` or the errno's name (`ENOENT`).
    EvtRes = "evt.res", Str, Filled, Rendered,
        |e| FieldValue::Str(render_res(e.evt.res));
    EvtRawres = "evt.rawres", Int, Filled, Stored,
        |e| Int(e.evt.res);
    /// Always `<`: the sensor reports calls on exit.
    EvtDir = "evt.dir", Str, Filled, Stored,
        |_e| text("<");
    EvtIsOpenRead = "evt.is_open_read", Bool, Filled, Stored,
        |e| e.open_flags().map_or(Absent, |fl| {
            Bool(fl & libc::O_ACCMODE as u64 != libc::O_WRONLY as u64)
        });
    EvtIsOpenWrite = "evt.is_open_write", Bool, Filled, Stored,
        |e| e.open_flags().map_or(Absent, |fl| {
            Bool(fl & libc::O_ACCMODE as u64 != libc::O_RDONLY as u64)
        });
    /// An open that creates a file with an execute bit in its mode.
    EvtIsOpenExec = "evt.is_open_exec", Bool, Filled, Stored,
        |e| e.open_flags().map_or(Absent, |fl| {
            let creates = fl & (libc::O_CREAT | libc::O_TMPFILE) as u64 != 0;
            Bool(creates && e.evt.args.mode.is_some_and(|m| m & 0o111 != 0))
        });
    /// Every present argument as `name=value`.
    EvtArgs = "evt.args", Str, Filled, Rendered,
        |e| owned(e.render_args());
    /// `evt.arg[name]`; also spelled `evt.arg.name` and `evt.rawarg.name`
    /// (see [`Field::parse`]).
    EvtArg(arg: Arg) = "evt.arg", arg.kind(), Filled, Rendered,
        |e| e.arg(arg);
    /// `evt.arg[N]`: the Nth argument in the event type's order.
    EvtArgIndex(n: u8) = "evt.arg", Str, Filled, Rendered,
        |e| e.evt.ty.arg_order().get(usize::from(n)).map_or(Absent, |arg| e.arg(*arg));

    // ---- proc.*
    ProcPid = "proc.pid" | "thread.pid", Int, Filled, Stored,
        |e| Int(e.proc.pid.into());
    ProcPpid = "proc.ppid", Int, Filled, Stored,
        |e| Int(e.proc.ppid.into());
    /// Kept by exec, fork, setsid and setpgid.
    ProcSid = "proc.sid", Int, Filled, Stored,
        |e| Int(e.proc.sid.into());
    ProcName = "proc.name", Str, Filled, Stored,
        |e| text(&e.proc.name);
    ProcExe = "proc.exe", Str, Filled, Stored,
        |e| text(&e.proc.exe);
    /// Partial when `proc.exepath_truncated`.
    ProcExepath = "proc.exepath", Str, Filled, Stored,
        |e| path(&e.proc.exepath, e.proc.exepath_truncated);
    /// `proc.exepath` is not the whole path: the executable lies deeper
    /// than the kernel's path walk goes (32 levels), or its path could not
    /// be read. Comparisons on `proc.exepath` then decide nothing.
    ProcExepathTruncated = "proc.exepath_truncated", Bool, Filled, Stored,
        |e| Bool(e.proc.exepath_truncated);
    ProcCmdline = "proc.cmdline", Str, Filled, Stored,
        |e| if e.proc.cmdline.is_empty() {
            let mut p = (*e.proc).clone();
            p.finish();
            owned(p.cmdline)
        } else {
            text(&e.proc.cmdline)
        };
    ProcArgs = "proc.args", Str, Filled, Stored,
        |e| FieldValue::Str(e.proc.args_str());
    /// Partial when `proc.cwd_truncated`.
    ProcCwd = "proc.cwd", Str, Filled, Stored,
        |e| match &e.proc.cwd {
            Some(cwd) => path(cwd, e.proc.cwd_truncated),
            None if e.proc.cwd_truncated => path("", true),
            None => Absent,
        };
    /// `proc.cwd` (as of the exec) is not the whole path, as for
    /// `proc.exepath_truncated`.
    ProcCwdTruncated = "proc.cwd_truncated", Bool, Filled, Stored,
        |e| Bool(e.proc.cwd_truncated);
    ProcTty = "proc.tty", Int, Filled, Stored,
        |e| Int(e.proc.tty.into());
    ProcPname = "proc.pname", Str, Filled, Stored,
        |e| e.ancestor(1).map_or(Absent, |p| text(&p.name));
    ProcPexe = "proc.pexe", Str, Filled, Stored,
        |e| e.ancestor(1).map_or(Absent, |p| text(&p.exe));
    ProcPexepath = "proc.pexepath", Str, Filled, Stored,
        |e| e.ancestor(1).map_or(Absent, |p| path(&p.exepath, p.exepath_truncated));
    ProcPcmdline = "proc.pcmdline", Str, Filled, Stored,
        |e| e.ancestor(1).map_or(Absent, |p| text(&p.cmdline));
    ProcAname(n: Depth) = "proc.aname", Str, Filled, Stored,
        |e| e.ancestor(n.get()).map_or(Absent, |p| text(&p.name));
    ProcApid(n: Depth) = "proc.apid", Int, Filled, Stored,
        |e| e.ancestor(n.get()).map_or(Absent, |p| Int(p.pid.into()));
    ProcAexe(n: Depth) = "proc.aexe", Str, Filled, Stored,
        |e| e.ancestor(n.get()).map_or(Absent, |p| text(&p.exe));
    ProcAexepath(n: Depth) = "proc.aexepath", Str, Filled, Stored,
        |e| e.ancestor(n.get()).map_or(Absent, |p| path(&p.exepath, p.exepath_truncated));
    /// `proc.aname` without index: every ancestor's name; a comparison
    /// holds if it holds for any of them.
    ProcAnameAny = "proc.aname", List, Filled, Stored,
        |e| FieldValue::List(e.ancestors.iter().map(|p| Cow::Borrowed(p.name.as_str())).collect());
    ProcApidAny = "proc.apid", List, Filled, Rendered,
        |e| FieldValue::List(e.ancestors.iter().map(|p| Cow::Owned(p.pid.to_string())).collect());
    ProcIsExeUpperLayer = "proc.is_exe_upper_layer", Bool, Filled, Stored,
        |e| opt_bool(e.proc.exe_upper_layer);
    ProcIsExeFromMemfd = "proc.is_exe_from_memfd", Bool, Filled, Stored,
        |e| opt_bool(e.proc.exe_from_memfd);
    /// Nanoseconds since the Unix epoch; absent when unknown.
    ProcStartTs = "proc.start_ts", Int, Filled, Stored,
        |e| if e.proc.start_time == 0 { Absent } else { Int(e.proc.start_time as i64) };
    /// Event time minus process start, in nanoseconds; absent when unknown.
    ProcDuration = "proc.duration", Int, Filled, Stored,
        |e| if e.proc.start_time == 0 || e.evt.time < e.proc.start_time {
            Absent
        } else {
            Int((e.evt.time - e.proc.start_time) as i64)
        };

    /// The pid in the process's own pid namespace (1 for a container's first process).
    ProcVpid = "proc.vpid", Int, Filled, Stored,
        |e| if e.proc.vpid == 0 { Absent } else { Int(e.proc.vpid.into()) };
    /// The process group in the process's own pid namespace.
    ProcVpgid = "proc.vpgid", Int, Filled, Stored,
        |e| if e.proc.vpgid == 0 { Absent } else { Int(e.proc.vpgid.into()) };
    /// The process leads its process group (typed at a terminal, not run by a script).
    ProcIsVpgidLeader = "proc.is_vpgid_leader", Bool, Filled, Stored,
        |e| if e.proc.vpid == 0 || e.proc.vpgid == 0 {
            Absent
        } else {
            Bool(e.proc.vpid == e.proc.vpgid)
        };
    /// The session leader's name: the eldest known ancestor in the same session.
    ProcSname = "proc.sname", Str, Filled, Stored,
        |e| if e.proc.sid == 0 {
            Absent
        } else {
            std::iter::once(&*e.proc)
                .chain(e.ancestors.iter().map(|a| &**a))
                .take_while(|p| p.sid == e.proc.sid)
                .last()
                .map_or(Absent, |p| text(&p.name))
        };
    /// The environment at exec, `NAME=value` entries joined by spaces.
    ProcEnv = "proc.env", Str, Filled, Stored,
        |e| e.proc.env.as_deref().map_or(Absent, text);
    /// The executable's inode number.
    ProcExeIno = "proc.exe_ino", Int, Filled, Stored,
        |e| opt_int(e.proc.exe_ino.map(|v| v as i64));
    /// The executable's ctime, ns since the Unix epoch.
    ProcExeInoCtime = "proc.exe_ino.ctime", Int, Filled, Stored,
        |e| opt_int(e.proc.exe_ino_ctime.map(|v| v as i64));
    /// The executable's mtime, ns since the Unix epoch.
    ProcExeInoMtime = "proc.exe_ino.mtime", Int, Filled, Stored,
        |e| opt_int(e.proc.exe_ino_mtime.map(|v| v as i64));
    /// Process start minus the executable's ctime, ns: small for a binary
    /// written just before it ran.
    ProcExeInoCtimeDurationProcStart = "proc.exe_ino.ctime_duration_proc_start", Int, Filled, Stored,
        |e| match e.proc.exe_ino_ctime {
            Some(c) if e.proc.start_time >= c && c > 0 => Int((e.proc.start_time - c) as i64),
            _ => Absent,
        };

    // ---- thread.*
    ThreadTid = "thread.tid", Int, Filled, Stored,
        |e| Int(e.tid.into());
    /// At the event for setns/unshare (from before the call), else as of the exec.
    ThreadCapEffective = "thread.cap_effective", Str, Filled, Rendered,
        |e| e.caps.map(|c| c.effective).or(e.proc.cap_effective)
            .map_or(Absent, |c| owned(render_caps(c)));
    ThreadCapPermitted = "thread.cap_permitted", Str, Filled, Rendered,
        |e| e.caps.map(|c| c.permitted).or(e.proc.cap_permitted)
            .map_or(Absent, |c| owned(render_caps(c)));
    ThreadCapInheritable = "thread.cap_inheritable", Str, Filled, Rendered,
        |e| e.caps.map(|c| c.inheritable).or(e.proc.cap_inheritable)
            .map_or(Absent, |c| owned(render_caps(c)));

    // ---- user.*, group.*
    UserUid = "user.uid", Int, Filled, Stored,
        |e| Int(e.user.uid.into());
    UserName = "user.name", Str, Filled, Stored,
        |e| e.user.name.as_deref().map_or(Absent, text);
    /// -1 when unset, as Falco prints it.
    UserLoginuid = "user.loginuid", Int, Filled, Stored,
        |e| Int(e.user.loginuid.map_or(-1, i64::from));
    UserLoginname = "user.loginname", Str, Filled, Stored,
        |e| e.user.loginname.as_deref().map_or(Absent, text);
    GroupGid = "group.gid", Int, Filled, Stored,
        |e| Int(e.user.gid.into());
    GroupName = "group.name", Str, Filled, Stored,
        |e| e.user.group.as_deref().map_or(Absent, text);

    // ---- fd.*
    FdNum = "fd.num", Int, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| Int(f.num));
    FdType = "fd.type", Str, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| text(f.ty.as_str()));
    FdTypechar = "fd.typechar", Str, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| text(f.ty.typechar()));
    /// Partial when `fd.name_truncated`.
    FdName = "fd.name", Str, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| path(&f.name, f.name_truncated));
    /// `fd.name` is a path the sensor could not read in full: deeper than
    /// the kernel's path walk (32 levels), longer than PATH_MAX, or relative
    /// to a directory it could not read. Comparisons on `fd.name`,
    /// `fd.directory` and `fd.filename` then decide nothing.
    FdNameTruncated = "fd.name_truncated", Bool, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| Bool(f.name_truncated));
    /// The path as the call gave it (`/etc/../etc/shadow`, `../x`), before
    /// it was made absolute and normalised; other fds: `fd.name`.
    FdNameraw = "fd.nameraw", Str, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| match &e.evt.args.name {
            Some(given) if f.is_path() && e.evt.ty.is_open() => text(given),
            _ => path(&f.name, f.name_truncated),
        });
    /// Files and directories only.
    FdDirectory = "fd.directory", Str, Filled, Stored,
        |e| e.fd.as_ref()
            .filter(|f| f.is_path())
            .map_or(Absent, |f| path(dirname(&f.name), f.name_truncated));
    FdFilename = "fd.filename", Str, Filled, Stored,
        |e| e.fd.as_ref()
            .filter(|f| f.is_path())
            .map_or(Absent, |f| path(f.name.rsplit('/').next().unwrap_or(&f.name), f.name_truncated));
    FdSip = "fd.sip", Ip, Filled, Stored,
        |e| ip(e.fd.as_ref().and_then(Fd::server));
    FdSport = "fd.sport", Int, Filled, Stored,
        |e| port(e.fd.as_ref().and_then(Fd::server));
    FdCip = "fd.cip", Ip, Filled, Stored,
        |e| ip(e.fd.as_ref().and_then(Fd::client));
    FdCport = "fd.cport", Int, Filled, Stored,
        |e| port(e.fd.as_ref().and_then(Fd::client));
    FdLip = "fd.lip", Ip, Filled, Stored,
        |e| ip(e.fd.as_ref().and_then(|f| f.local));
    FdLport = "fd.lport", Int, Filled, Stored,
        |e| port(e.fd.as_ref().and_then(|f| f.local));
    FdRip = "fd.rip" | "fd.dip", Ip, Filled, Stored,
        |e| ip(e.fd.as_ref().and_then(|f| f.remote));
    FdRport = "fd.rport" | "fd.dport", Int, Filled, Stored,
        |e| port(e.fd.as_ref().and_then(|f| f.remote));
    /// The host name the node resolved to the server's address (from the
    /// DNS answers the sensor saw; absent when it saw none for it).
    FdSipName = "fd.sip.name", Str, Filled, Stored,
        |e| host_names(e.fd.as_ref().and_then(Fd::server_names));
    FdCipName = "fd.cip.name", Str, Filled, Stored,
        |e| host_names(e.fd.as_ref().and_then(Fd::client_names));
    FdRipName = "fd.rip.name", Str, Filled, Stored,
        |e| host_names(e.fd.as_ref().and_then(|f| f.remote_names.as_ref()));
    FdLipName = "fd.lip.name", Str, Filled, Stored,
        |e| host_names(e.fd.as_ref().and_then(|f| f.local_names.as_ref()));
    FdL4proto = "fd.l4proto", Str, Filled, Stored,
        |e| e.fd.as_ref().and_then(|f| f.l4proto).map_or(Absent, |p| text(p.as_str()));
    /// The socket is connected (a connected UDP socket too), from the
    /// kernel's socket state at the event.
    FdConnected = "fd.connected", Bool, Filled, Stored,
        |e| e.fd.as_ref().and_then(|f| f.connected).map_or(Absent, Bool);
    /// The event gave the fd a new name (a datagram to or from a new peer).
    FdNameChanged = "fd.name_changed", Bool, Filled, Stored,
        |e| e.fd.as_ref().map_or(Absent, |f| Bool(f.name_changed));
    FdSockfamily = "fd.sockfamily", Str, Filled, Stored,
        |e| match e.fd.as_ref().map(|f| f.ty) {
            Some(FdType::Ipv4 | FdType::Ipv6) => text("ip"),
            Some(FdType::Unix) => text("unix"),
            _ => Absent,
        };

    // ---- container.*, k8s.*
    /// `host` for host processes.
    ContainerId = "container.id", Str, Filled, Stored,
        |e| text(&e.container.id);
    ContainerName = "container.name", Str, Filled, Stored,
        |e| if e.container.is_host() { text("host") } else { opt_text(&e.container.name) };
    ContainerImage = "container.image", Str, Filled, Stored,
        |e| opt_text(&e.container.image);
    ContainerImageRepository = "container.image.repository", Str, Filled, Stored,
        |e| opt_text(&e.container.image_repository);
    ContainerImageTag = "container.image.tag", Str, Filled, Stored,
        |e| opt_text(&e.container.image_tag);
    ContainerPrivileged = "container.privileged", Bool, Filled, Stored,
        |e| opt_bool(e.container.privileged);
    ContainerMountDest = "container.mount.dest", List, Filled, Stored,
        |e| FieldValue::List(e.container.mounts.iter().map(|m| Cow::Borrowed(m.dest.as_str())).collect());
    ContainerMountSource = "container.mount.source", List, Filled, Stored,
        |e| FieldValue::List(e.container.mounts.iter().map(|m| Cow::Borrowed(m.source.as_str())).collect());
    /// The destination of the mount whose source matches (or the Nth).
    ContainerMountDestAt(k: MountKey) = "container.mount.dest", Str, Filled, Stored,
        |e| mount_field(e, k, false, |m| text(&m.dest));
    /// The source of the mount whose destination matches (or the Nth).
    ContainerMountSourceAt(k: MountKey) = "container.mount.source", Str, Filled, Stored,
        |e| mount_field(e, k, true, |m| text(&m.source));
    /// `source:dest:mode:rdrw:propagation` of the mount whose source matches.
    ContainerMountAt(k: MountKey) = "container.mount", Str, Filled, Rendered,
        |e| mount_field(e, k, false, |m| FieldValue::Str(Cow::Owned(m.describe())));
    /// Every mount, `source:dest:mode:rdrw:propagation`, comma-separated.
    ContainerMounts = "container.mounts", Str, Filled, Rendered,
        |e| if e.container.is_host() {
            Absent
        } else {
            FieldValue::Str(Cow::Owned(e.container.mounts.iter().map(Mount::describe).collect::<Vec<_>>().join(",")))
        };
    ContainerStartTs = "container.start_ts", Int, Filled, Stored,
        |e| e.container.start_ts.map_or(Absent, |t| Int(t as i64));
    K8sPodName = "k8s.pod.name", Str, Filled, Stored,
        |e| opt_text(&e.container.pod_name);
    K8sNsName = "k8s.ns.name", Str, Filled, Stored,
        |e| opt_text(&e.container.pod_namespace);
    K8sPodUid = "k8s.pod.uid", Str, Filled, Stored,
        |e| opt_text(&e.container.pod_uid);
}

impl Field {
    /// Parse `name` (without brackets) and its optional `[index]` content.
    /// `evt.arg.flags`, `evt.rawarg.flags` and `evt.arg[flags]` are the
    /// same field.
    pub(crate) fn parse(name: &str, index: Option<&str>) -> Result<Field, FieldError> {
        // Falco's dotted spellings of an argument.
        if let Some(arg) = name
            .strip_prefix("evt.arg.")
            .or_else(|| name.strip_prefix("evt.rawarg."))
        {
            let arg = Arg::parse(arg).ok_or_else(|| FieldError::Unknown(name.to_string()))?;
            return match index {
                None => Ok(Field::EvtArg(arg)),
                Some(_) => Err(FieldError::IndexNotAllowed {
                    field: name.to_string(),
                }),
            };
        }
        let mut entries = ENTRIES
            .iter()
            .filter(|e| e.names.contains(&name))
            .peekable();
        if entries.peek().is_none() {
            return Err(FieldError::Unknown(name.to_string()));
        }
        match index {
            None => entries
                .find_map(|e| match e.make {
                    Make::Plain(f) => Some(f),
                    Make::Indexed(_) => None,
                })
                .ok_or_else(|| FieldError::IndexRequired {
                    field: name.to_string(),
                }),
            Some(i) => {
                let mut indexed = false;
                for e in entries {
                    if let Make::Indexed(make) = e.make {
                        indexed = true;
                        if let Some(f) = make(i.trim()) {
                            return Ok(f);
                        }
                    }
                }
                Err(if indexed {
                    FieldError::BadIndex {
                        field: name.to_string(),
                        index: i.to_string(),
                    }
                } else {
                    FieldError::IndexNotAllowed {
                        field: name.to_string(),
                    }
                })
            }
        }
    }

    /// Whether this agent's sensor ever fills the field. A rule whose
    /// *condition* reads a field that is never filled would silently never
    /// match, so the rules loader refuses it; outputs may still name it and
    /// print `<NA>`.
    pub(crate) fn is_collected(&self) -> bool {
        self.collected() == Collected::Filled
    }

    /// Every field name a rule may write, in table order (indexed names
    /// once per index type; `evt.arg.<name>` spellings not included).
    pub(crate) fn names() -> impl Iterator<Item = &'static str> {
        ENTRIES.iter().flat_map(|e| e.names.iter().copied())
    }
}

impl Event {
    fn open_flags(&self) -> Option<u64> {
        if self.evt.ty.is_open() {
            self.evt.args.flags
        } else {
            None
        }
    }

    /// `evt.args`: every present argument as `name=value`, space separated.
    pub(crate) fn render_args(&self) -> String {
        let mut out = String::new();
        for arg in std::iter::once(&Arg::Res).chain(self.evt.ty.arg_order()) {
            let v = self.arg(*arg);
            if v.is_absent() {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(arg.as_str());
            out.push('=');
            out.push_str(&v.to_string());
        }
        out
    }
}

// ---- string fields read without a FieldValue -------------------------------

/// The string fields that rules test most (Falco's corpus: `proc.name`,
/// `fd.typechar`, `fd.name`, `fd.directory`, ...), read straight from the
/// event for the evaluator's hot path: no [`FieldValue`] to build, match
/// and drop. Each reads what [`Event::field`] reads for its [`Field`]
/// (unit test `fast_string_fields_read_what_the_field_table_reads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrField {
    ProcName,
    ProcExe,
    ProcExepath,
    ProcCwd,
    ProcPname,
    ProcAname(Depth),
    UserName,
    ContainerId,
    ContainerImageRepository,
    FdTypechar,
    FdName,
    FdDirectory,
    FdFilename,
}

/// A [`StrField`]'s value: the three cases of [`FieldValue`] a string
/// field can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrValue<'a> {
    Absent,
    Whole(&'a str),
    /// [`FieldValue::Partial`]: no comparison is decided on it.
    Partial,
}

fn str_path(v: &str, truncated: bool) -> StrValue<'_> {
    if truncated {
        StrValue::Partial
    } else {
        StrValue::Whole(v)
    }
}

impl StrField {
    /// The fast reader of `f`, if it has one.
    pub(crate) fn of(f: Field) -> Option<StrField> {
        Some(match f {
            Field::ProcName => StrField::ProcName,
            Field::ProcExe => StrField::ProcExe,
            Field::ProcExepath => StrField::ProcExepath,
            Field::ProcCwd => StrField::ProcCwd,
            Field::ProcPname => StrField::ProcPname,
            Field::ProcAname(n) => StrField::ProcAname(n),
            Field::UserName => StrField::UserName,
            Field::ContainerId => StrField::ContainerId,
            Field::ContainerImageRepository => StrField::ContainerImageRepository,
            Field::FdTypechar => StrField::FdTypechar,
            Field::FdName => StrField::FdName,
            Field::FdDirectory => StrField::FdDirectory,
            Field::FdFilename => StrField::FdFilename,
            _ => return None,
        })
    }

    /// The field it reads.
    pub(crate) fn field(self) -> Field {
        match self {
            StrField::ProcName => Field::ProcName,
            StrField::ProcExe => Field::ProcExe,
            StrField::ProcExepath => Field::ProcExepath,
            StrField::ProcCwd => Field::ProcCwd,
            StrField::ProcPname => Field::ProcPname,
            StrField::ProcAname(n) => Field::ProcAname(n),
            StrField::UserName => Field::UserName,
            StrField::ContainerId => Field::ContainerId,
            StrField::ContainerImageRepository => Field::ContainerImageRepository,
            StrField::FdTypechar => Field::FdTypechar,
            StrField::FdName => Field::FdName,
            StrField::FdDirectory => Field::FdDirectory,
            StrField::FdFilename => Field::FdFilename,
        }
    }

    /// The value on `e`, as [`Event::field`] reads it.
    #[inline]
    pub(crate) fn get(self, e: &Event) -> StrValue<'_> {
        use StrValue::{Absent, Whole};
        fn name(p: Option<&super::model::Process>) -> StrValue<'_> {
            p.map_or(StrValue::Absent, |p| StrValue::Whole(&p.name))
        }
        let file = || e.fd.as_ref().filter(|f| f.is_path());
        match self {
            StrField::ProcName => Whole(&e.proc.name),
            StrField::ProcExe => Whole(&e.proc.exe),
            StrField::ProcExepath => str_path(&e.proc.exepath, e.proc.exepath_truncated),
            StrField::ProcCwd => match &e.proc.cwd {
                Some(cwd) => str_path(cwd, e.proc.cwd_truncated),
                None if e.proc.cwd_truncated => StrValue::Partial,
                None => Absent,
            },
            StrField::ProcPname => name(e.ancestor(1)),
            StrField::ProcAname(n) => name(e.ancestor(n.get())),
            StrField::UserName => e.user.name.as_deref().map_or(Absent, Whole),
            StrField::ContainerId => Whole(&e.container.id),
            StrField::ContainerImageRepository => e
                .container
                .image_repository
                .as_deref()
                .map_or(Absent, Whole),
            StrField::FdTypechar => e.fd.as_ref().map_or(Absent, |f| Whole(f.ty.typechar())),
            StrField::FdName => {
                e.fd.as_ref()
                    .map_or(Absent, |f| str_path(&f.name, f.name_truncated))
            }
            StrField::FdDirectory => {
                file().map_or(Absent, |f| str_path(dirname(&f.name), f.name_truncated))
            }
            StrField::FdFilename => file().map_or(Absent, |f| {
                str_path(
                    f.name.rsplit('/').next().unwrap_or(&f.name),
                    f.name_truncated,
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use super::*;
    use crate::event::{EventType, L4Proto, Process, Role};

    fn open_event(path: &str, flags: i32) -> Event {
        let mut e = Event::new(
            EventType::Openat,
            Arc::new(Process::new(10, 1, "/usr/bin/cat", &["cat", path])),
        );
        e.evt.args.flags = Some(flags as u64);
        e.evt.args.name = Some(path.into());
        e.evt.res = 3;
        e.fd = Some(Fd::file(3, path));
        e
    }

    fn get<'a>(e: &'a Event, name: &str, index: Option<&str>) -> FieldValue<'a> {
        e.field(&Field::parse(name, index).unwrap())
    }

    #[test]
    fn paths_known_only_in_part_are_partial_and_print_after_dots() {
        let mut e = open_event("/a/a/x", libc::O_WRONLY);
        assert_eq!(get(&e, "fd.name_truncated", None), FieldValue::Bool(false));
        assert_eq!(get(&e, "fd.name", None).to_string(), "/a/a/x");
        e.fd.as_mut().unwrap().name_truncated = true;
        assert_eq!(get(&e, "fd.name_truncated", None), FieldValue::Bool(true));
        assert_eq!(
            get(&e, "fd.name", None),
            FieldValue::Partial("/a/a/x".into())
        );
        assert_eq!(get(&e, "fd.name", None).to_string(), ".../a/a/x");
        assert_eq!(get(&e, "fd.directory", None).to_string(), ".../a/a");
        assert_eq!(get(&e, "fd.filename", None).to_string(), ".../x");
        // The path as the call gave it is whole.
        assert_eq!(
            get(&e, "fd.nameraw", None),
            FieldValue::Str("/a/a/x".into())
        );
        let p = Arc::make_mut(&mut e.proc);
        p.exepath_truncated = true;
        p.cwd = None;
        p.cwd_truncated = true;
        assert_eq!(get(&e, "proc.exepath", None).to_string(), ".../usr/bin/cat");
        assert_eq!(
            get(&e, "proc.exepath_truncated", None),
            FieldValue::Bool(true)
        );
        // Nothing of the working directory had room: partial and empty.
        assert_eq!(get(&e, "proc.cwd", None), FieldValue::Partial("".into()));
        assert_eq!(get(&e, "proc.cwd", None).to_string(), "...");
        assert_eq!(get(&e, "proc.cwd_truncated", None), FieldValue::Bool(true));
        // No fd: the flag is absent like the path.
        e.fd = None;
        assert_eq!(get(&e, "fd.name_truncated", None), FieldValue::Absent);
    }

    #[test]
    fn process_fields_follow_falco_names() {
        let mut e = open_event("/etc/shadow", libc::O_RDONLY);
        let parent = Arc::new(Process::new(
            1,
            0,
            "/bin/bash",
            &["bash", "-c", "cat /etc/shadow"],
        ));
        let grand = Arc::new(Process::new(0, 0, "/sbin/init", &["init"]));
        e.ancestors = vec![parent, grand];
        assert_eq!(get(&e, "proc.name", None).to_string(), "cat");
        assert_eq!(get(&e, "proc.cmdline", None).to_string(), "cat /etc/shadow");
        assert_eq!(get(&e, "proc.args", None).to_string(), "/etc/shadow");
        assert_eq!(get(&e, "proc.pname", None).to_string(), "bash");
        assert_eq!(
            get(&e, "proc.pcmdline", None).to_string(),
            "bash -c cat /etc/shadow"
        );
        assert_eq!(get(&e, "proc.aname", Some("2")).to_string(), "init");
        assert_eq!(get(&e, "proc.aname", Some("0")).to_string(), "cat");
        assert!(get(&e, "proc.aname", Some("3")).is_absent());
        assert_eq!(
            get(&e, "proc.aname", None),
            FieldValue::List(vec!["bash".into(), "init".into()])
        );
    }

    #[test]
    fn open_flags_render_like_falco_and_drive_is_open_write() {
        let e = open_event("/etc/x", libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        let flags = get(&e, "evt.arg.flags", None).to_string();
        assert!(flags.starts_with("O_WRONLY|"), "{flags}");
        assert!(
            flags.contains("O_TRUNC") && flags.contains("O_CREAT"),
            "{flags}"
        );
        assert_eq!(get(&e, "evt.is_open_write", None), FieldValue::Bool(true));
        assert_eq!(get(&e, "evt.is_open_read", None), FieldValue::Bool(false));
        assert_eq!(get(&e, "evt.arg", Some("flags")).to_string(), flags);
        assert_eq!(get(&e, "evt.arg", Some("0")).to_string(), "/etc/x");
        assert_eq!(get(&e, "fd.directory", None).to_string(), "/etc");
        assert_eq!(get(&e, "fd.filename", None).to_string(), "x");
        assert_eq!(get(&e, "fd.typechar", None).to_string(), "f");
        assert_eq!(get(&e, "evt.res", None).to_string(), "SUCCESS");
    }

    #[test]
    fn the_raw_name_is_the_path_as_given_and_fd_name_the_resolved_one() {
        let mut e = open_event("/etc/shadow", libc::O_RDONLY);
        e.evt.args.name = Some("../../etc/./shadow".into());
        assert_eq!(get(&e, "fd.name", None).to_string(), "/etc/shadow");
        assert_eq!(
            get(&e, "fd.nameraw", None).to_string(),
            "../../etc/./shadow"
        );
        // Not an open: the fd's own name.
        e.evt.ty = EventType::Fchmod;
        assert_eq!(get(&e, "fd.nameraw", None).to_string(), "/etc/shadow");
        e.fd = None;
        assert!(get(&e, "fd.nameraw", None).is_absent());
    }

    #[test]
    fn failed_calls_render_the_errno_name() {
        let mut e = open_event("/nope", libc::O_RDONLY);
        e.evt.res = -(libc::ENOENT as i64);
        assert_eq!(get(&e, "evt.res", None).to_string(), "ENOENT");
        assert_eq!(get(&e, "evt.rawres", None), FieldValue::Int(-2));
    }

    #[test]
    fn socket_fields_distinguish_client_server_local_remote() {
        let mut e = Event::new(
            EventType::Connect,
            Arc::new(Process::new(5, 1, "/usr/bin/curl", &["curl"])),
        );
        let local: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let remote: SocketAddr = "10.43.0.1:443".parse().unwrap();
        e.fd = Some(Fd::socket(4, local, remote, Role::Client, L4Proto::Tcp));
        assert_eq!(
            get(&e, "fd.name", None).to_string(),
            "10.0.0.2:40000->10.43.0.1:443"
        );
        assert_eq!(get(&e, "fd.sip", None).to_string(), "10.43.0.1");
        assert_eq!(get(&e, "fd.sport", None), FieldValue::Int(443));
        assert_eq!(get(&e, "fd.cport", None), FieldValue::Int(40000));
        assert_eq!(get(&e, "fd.lport", None), FieldValue::Int(40000));
        assert_eq!(get(&e, "fd.rport", None), FieldValue::Int(443));
        assert_eq!(get(&e, "fd.typechar", None).to_string(), "4");
        assert!(get(&e, "fd.directory", None).is_absent());
    }

    #[test]
    fn absent_fields_print_na_and_unknown_fields_are_errors() {
        let e = open_event("/x", 0);
        assert_eq!(get(&e, "k8s.pod.name", None).to_string(), "<NA>");
        assert_eq!(get(&e, "container.id", None).to_string(), "host");
        assert_eq!(
            Field::parse("k8s.pod.label", None),
            Err(FieldError::Unknown("k8s.pod.label".into()))
        );
        assert!(matches!(
            Field::parse("proc.aexepath", None),
            Err(FieldError::IndexRequired { .. })
        ));
        assert!(matches!(
            Field::parse("proc.name", Some("1")),
            Err(FieldError::IndexNotAllowed { .. })
        ));
    }

    #[test]
    fn args_render_by_type() {
        let mut e = Event::new(
            EventType::Ptrace,
            Arc::new(Process::new(5, 1, "/usr/bin/gdb", &["gdb"])),
        );
        e.evt.args.request = Some(16);
        e.evt.args.pid = Some(42);
        assert_eq!(
            get(&e, "evt.arg.request", None).to_string(),
            "PTRACE_ATTACH"
        );
        assert_eq!(
            get(&e, "evt.args", None).to_string(),
            "res=SUCCESS request=PTRACE_ATTACH pid=42"
        );
        let mut s = Event::new(
            EventType::Socket,
            Arc::new(Process::new(5, 1, "/x", &["x"])),
        );
        s.evt.args.domain = Some(libc::AF_PACKET as u32);
        assert_eq!(get(&s, "evt.arg.domain", None).to_string(), "AF_PACKET");
    }

    #[test]
    fn every_name_in_the_table_parses_to_its_entry_and_reads_without_panic() {
        let mut e = open_event("/etc/x", libc::O_RDONLY);
        e.ancestors = vec![Arc::new(Process::new(1, 0, "/sbin/init", &["init"]))];
        let mut seen = 0;
        for name in Field::names() {
            let field = match Field::parse(name, None) {
                Ok(f) => f,
                Err(FieldError::IndexRequired { .. }) => {
                    Field::parse(name, Some("1")).unwrap_or_else(|err| panic!("{name}[1]: {err}"))
                }
                Err(err) => panic!("{name}: {err}"),
            };
            let _ = e.field(&field).to_string();
            seen += 1;
        }
        assert!(seen > 70, "{seen} names");
    }

    #[test]
    fn aliases_name_the_same_field() {
        for (a, b) in [
            ("thread.pid", "proc.pid"),
            ("fd.dip", "fd.rip"),
            ("fd.dport", "fd.rport"),
            ("evt.rawarg.flags", "evt.arg.flags"),
        ] {
            assert_eq!(Field::parse(a, None), Field::parse(b, None), "{a}");
        }
        assert_eq!(
            Field::parse("evt.arg", Some("flags")),
            Field::parse("evt.arg.flags", None)
        );
    }

    #[test]
    fn indexes_are_checked_per_field() {
        assert_eq!(
            Field::parse("proc.aname", Some(" 2 ")).map(|f| f.kind()),
            Ok(FieldKind::Str)
        );
        assert_eq!(
            Field::parse("proc.aname", None).map(|f| f.kind()),
            Ok(FieldKind::List)
        );
        assert!(matches!(
            Field::parse("proc.aname", Some("17")),
            Err(FieldError::BadIndex { .. })
        ));
        assert!(matches!(
            Field::parse("evt.arg", Some("nope")),
            Err(FieldError::BadIndex { .. })
        ));
        assert!(matches!(
            Field::parse("evt.arg", None),
            Err(FieldError::IndexRequired { .. })
        ));
        assert!(matches!(
            Field::parse("evt.arg.flags", Some("1")),
            Err(FieldError::IndexNotAllowed { .. })
        ));
        assert_eq!(
            Field::parse("evt.arg.nope", None),
            Err(FieldError::Unknown("evt.arg.nope".into()))
        );
        // An argument's kind is the field's kind.
        assert_eq!(
            Field::parse("evt.arg.pid", None).unwrap().kind(),
            FieldKind::Int
        );
    }

    #[test]
    fn every_field_in_the_table_is_one_the_sensor_fills() {
        for name in Field::names() {
            if let Ok(f) = Field::parse(name, None) {
                assert!(f.is_collected(), "{name}");
            }
        }
    }

    #[test]
    fn namespace_session_environment_and_inode_fields_read_the_process() {
        let mut e = Event::new(
            EventType::Execve,
            Arc::new(Process::new(4000, 3999, "/bin/sh", &["sh"])),
        );
        for f in [
            "proc.vpid",
            "proc.vpgid",
            "proc.is_vpgid_leader",
            "proc.sname",
            "proc.env",
        ] {
            assert!(get(&e, f, None).is_absent(), "{f} unknown is absent");
        }
        let shell = Process {
            sid: 3000,
            ..Process::new(3999, 3000, "/bin/bash", &["bash"])
        };
        let sshd = Process {
            sid: 3000,
            ..Process::new(3000, 1, "/usr/sbin/sshd", &["sshd"])
        };
        let init = Process {
            sid: 1,
            ..Process::new(1, 0, "/sbin/init", &["init"])
        };
        e.ancestors = vec![Arc::new(shell), Arc::new(sshd), Arc::new(init)];
        let p = Arc::make_mut(&mut e.proc);
        (p.vpid, p.vpgid, p.sid) = (1, 1, 3000);
        p.env = Some(Arc::from("PATH=/bin GLIBC_TUNABLES=x"));
        p.start_time = 10_000;
        p.exe_ino_ctime = Some(9_000);
        assert_eq!(get(&e, "proc.vpid", None), FieldValue::Int(1));
        assert_eq!(
            get(&e, "proc.is_vpgid_leader", None),
            FieldValue::Bool(true)
        );
        assert_eq!(get(&e, "proc.sname", None).to_string(), "sshd");
        assert_eq!(
            get(&e, "proc.env", None).to_string(),
            "PATH=/bin GLIBC_TUNABLES=x"
        );
        assert_eq!(
            get(&e, "proc.exe_ino.ctime_duration_proc_start", None),
            FieldValue::Int(1_000)
        );
    }

    #[test]
    fn thread_capabilities_prefer_those_read_at_the_event() {
        let mut e = open_event("/x", 0);
        Arc::make_mut(&mut e.proc).cap_permitted = Some(1 << 21);
        assert_eq!(
            get(&e, "thread.cap_permitted", None).to_string(),
            "CAP_SYS_ADMIN"
        );
        e.caps = Some(crate::event::Caps {
            permitted: 1 << 12,
            ..Default::default()
        });
        assert_eq!(
            get(&e, "thread.cap_permitted", None).to_string(),
            "CAP_NET_ADMIN"
        );
        assert_eq!(get(&e, "thread.cap_inheritable", None).to_string(), "");
    }

    #[test]
    fn open_exec_is_a_creating_open_with_an_execute_bit() {
        let mut e = open_event("/tmp/x", libc::O_WRONLY | libc::O_CREAT);
        e.evt.args.mode = Some(0o755);
        assert_eq!(get(&e, "evt.is_open_exec", None), FieldValue::Bool(true));
        e.evt.args.mode = Some(0o644);
        assert_eq!(get(&e, "evt.is_open_exec", None), FieldValue::Bool(false));
        let r = open_event("/tmp/x", libc::O_RDONLY);
        assert_eq!(get(&r, "evt.is_open_exec", None), FieldValue::Bool(false));
        let mut s = open_event("/tmp/x", 0);
        s.fd.as_mut().unwrap().connected = Some(false);
        s.fd.as_mut().unwrap().name_changed = true;
        assert_eq!(get(&s, "fd.connected", None), FieldValue::Bool(false));
        assert_eq!(get(&s, "fd.name_changed", None), FieldValue::Bool(true));
    }

    #[test]
    fn process_duration_is_event_time_minus_start() {
        let mut e = open_event("/x", 0);
        assert!(get(&e, "proc.duration", None).is_absent());
        Arc::make_mut(&mut e.proc).start_time = 1_000;
        e.evt.time = 5_000;
        assert_eq!(get(&e, "proc.duration", None), FieldValue::Int(4_000));
        e.evt.time = 500;
        assert!(get(&e, "proc.duration", None).is_absent());
    }
}
