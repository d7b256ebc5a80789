//! edge-agent: the node agent for K3s edge fleets, as a library. The binary
//! (`main.rs`) only parses flags and maps results to exit codes.
//!
//! Data flow (see `docs/ARCHITECTURE.md`): sensor -> rules -> reports; metrics and
//! bootstrap -> reports; reports -> outbox (disk) -> uplink (MQTT). Every
//! stage publishes a status snapshot read by the control socket.
//!
//! The public surface is only what `main.rs`, the benches (`agent/benches`),
//! the integration tests and benches (the `tests` crate) and the fuzz
//! targets (`fuzz/`, through the entry points in [`fuzz`] alone) use; everything
//! else is `pub(crate)`, so that the compiler reports dead code. A module
//! below is `pub` only when one of them names a path through it. To use
//! something new from outside, make it and the modules on its path `pub`.

#![warn(unreachable_pub)]

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod event;
pub mod fds;
pub mod fleet;
// Entry points for the fuzz targets in fuzz/ (scripts/fuzz.sh); not an API.
#[doc(hidden)]
pub mod fuzz;
mod logging;
pub mod metrics;
pub mod outbox;
pub mod reload;
pub mod report;
pub mod rules;
pub mod sensor;
pub mod stage;
pub mod status;
mod systemd;
mod unix_time;
mod uplink;

/// This build's version (from Cargo.toml).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this binary was built for.
pub(crate) const TARGET: &str = env!("EDGE_AGENT_TARGET");
