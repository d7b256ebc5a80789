//! edge-agent: the node agent for K3s edge fleets, as a library. The binary
//! (`main.rs`) only parses flags and maps results to exit codes.
//!
//! Data flow (see `docs/ARCHITECTURE.md`): sensor -> rules -> reports; metrics and
//! bootstrap -> reports; reports -> outbox (disk) -> uplink (MQTT). Every
//! stage publishes a status snapshot read by the control socket.

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod event;
pub mod fds;
pub mod fleet;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod reload;
pub mod report;
pub mod rules;
pub mod sensor;
pub mod stage;
pub mod status;
pub mod systemd;
pub mod unix_time;
pub mod uplink;

/// This build's version (from Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this binary was built for.
pub const TARGET: &str = env!("EDGE_AGENT_TARGET");
