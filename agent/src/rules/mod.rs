//! The rules engine: Falco's rule language over [`crate::event::Event`]s,
//! alerts into the outbox.
//!
//! Owns loading rule files ([`yaml`], [`loader`]), parsing conditions
//! ([`condition`]), compiling them ([`compile`]) into evaluators
//! ([`eval`]), rendering alerts
//! ([`output`]), per-rule rate limits and counters ([`engine`]), and the
//! daemon stage that ties them to the event channel, the outbox, reloads
//! and the control socket ([`stage`]). Alerts also go to the node's own
//! sinks on a thread of their own ([`sinks`]): the history kept for
//! `edge-agent alerts` ([`history`]), `rules.json_file` and journald.
//! Never reads the kernel or the disk on the hot path: rule files are read and compiled off it, and the
//! compiled set is swapped in whole.

pub(crate) mod compile;
pub(crate) mod condition;
pub mod engine;
pub(crate) mod eval;
pub(crate) mod glob;
pub(crate) mod guard;
pub(crate) mod history;
mod journal;
mod json_file;
pub(crate) mod loader;
pub(crate) mod output;
pub(crate) mod sinks;
pub(crate) mod stage;
pub(crate) mod strany;
pub(crate) mod strset;
pub(crate) mod yaml;

#[cfg(test)]
mod falco_tests;
#[cfg(test)]
mod shipped_tests;

pub use loader::load_paths;
pub(crate) use loader::{Loaded, Severity};
pub(crate) use stage::start;
