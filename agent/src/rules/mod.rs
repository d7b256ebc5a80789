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

pub mod compile;
pub mod condition;
pub mod engine;
pub mod eval;
pub mod glob;
pub mod guard;
pub mod history;
mod journal;
mod json_file;
pub mod loader;
pub mod output;
pub mod sinks;
pub mod stage;
pub mod strset;
pub mod yaml;

#[cfg(test)]
mod falco_tests;
#[cfg(test)]
mod shipped_tests;

pub use engine::Engine;
pub use loader::{Loaded, Problem, RuleSet, Severity, load_paths, load_sources};
pub use stage::start;
