//! THE event model: one Rust type for everything the sensor sees, addressed
//! by the rules engine with Falco's field names.
//!
//! Three parts, one job each:
//! - [`model`]: [`Event`] and its parts as plain data, their JSON form
//!   (what `edge-agent sensor watch --json` prints and `edge-agent rules
//!   test --events` reads), and the event-type table ([`EventType`]);
//! - [`fields`]: the field table: [`Field::parse`] turns a Falco field name
//!   into a [`Field`], and [`Event::field`] reads it (its module doc says
//!   how to add a field or an event type);
//! - [`render`]: raw values as Falco prints them.
//!
//! The sensor fills events; the rules engine only reads them. Neither side
//! keeps its own idea of what a field means. Values that Falco renders as
//! text (`evt.arg.flags` as `O_WRONLY|O_TRUNC`, `evt.arg.request` as
//! `PTRACE_ATTACH`, `evt.res` as `ENOENT`) are stored raw and rendered on
//! access, so the sensor never formats strings for events no rule reads.

pub(crate) mod fields;
pub(crate) mod model;
pub(crate) mod render;

pub(crate) use fields::{Arg, Field, FieldError, FieldKind, FieldValue, MAX_ANCESTOR_DEPTH, Read};
pub(crate) use model::{Args, Caps, Evt, FdType, HostNames, Mount, User, exe_flags};
pub use model::{Container, Event, EventType, Fd, L4Proto, Process, Role};
