//! Fleet config: operators push signed, layered, versioned config bundles
//! over MQTT; the node verifies them, applies them through the ordinary
//! reload path, keeps them only if every stage is healthy within a trial
//! window, and reports each outcome through the outbox.
//!
//! Two sides live here. The operator's (`edge-agent fleet ...`, on a
//! workstation): [`bundle`] (the signed format), [`keys`] (Ed25519 key
//! files) and [`ops`] (`ops.toml` and
//! the operator's MQTT connection), [`bridge`] (the fleet's alerts and
//! metrics to webhooks and remote-write) and [`alerts`] (the operator's
//! tail). The node's side grows beside them.
//! Neither side ever rewrites the node's local agent.toml.

pub mod alerts;
pub mod bridge;
pub mod bundle;
pub mod held;
pub mod keys;
pub mod link;
pub mod ops;
pub mod overlay;
pub mod receiver;
pub mod sources;
pub mod stage;
pub mod state;
pub mod summary;
