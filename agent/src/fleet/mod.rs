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

pub(crate) mod alerts;
pub(crate) mod bridge;
pub mod bundle;
pub(crate) mod held;
pub mod keys;
pub mod link;
pub(crate) mod ops;
pub(crate) mod overlay;
pub(crate) mod receiver;
pub(crate) mod sources;
pub(crate) mod stage;
pub(crate) mod state;
pub(crate) mod summary;
