//! The joint between the uplink and the fleet stage: bundles that arrive on
//! the node's config topics go one way, what the retained state message
//! must say about fleet config and how the link is doing go the other.
//!
//! Owns only channel types. The uplink subscribes and forwards (never
//! looks inside a bundle); the fleet stage decides.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::bundle::Target;
use super::summary::Summary;
use crate::config::AgentConfig;

/// Bundles waiting for the fleet stage. A node has a handful of layers and
/// each gets one retained message per (re)subscription; more than this
/// waiting means a flood, which the uplink counts and drops (the retained
/// bundles come again with its next subscription).
pub(crate) const INBOX_CAPACITY: usize = 16;

/// A message that arrived on one of the node's config topics.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
}

/// How the uplink is doing, for the trial of a new config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LinkHealth {
    pub(crate) connected: bool,
    /// CONNACKs so far.
    pub(crate) connects: u64,
    /// PUBACKs so far (records and state messages).
    pub(crate) acks: u64,
    /// PUBACKs on the current connection.
    pub(crate) acks_this_connection: u64,
}

/// The uplink's end.
#[derive(Clone)]
pub struct UplinkSide {
    /// `None`: nothing takes bundles (fleet config off in this process).
    pub(crate) inbox: Option<mpsc::Sender<Incoming>>,
    /// What the state message says under `fleet`.
    pub(crate) summary: watch::Receiver<Summary>,
    pub(crate) health: watch::Sender<LinkHealth>,
}

/// The fleet stage's end.
pub(crate) struct FleetSide {
    pub(crate) inbox: mpsc::Receiver<Incoming>,
    pub(crate) summary: watch::Sender<Summary>,
    pub(crate) health: watch::Receiver<LinkHealth>,
}

/// A connected pair.
pub(crate) fn pair() -> (UplinkSide, FleetSide) {
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let (summary_tx, summary_rx) = watch::channel(Summary::default());
    let (health_tx, health_rx) = watch::channel(LinkHealth::default());
    (
        UplinkSide {
            inbox: Some(inbox_tx),
            summary: summary_rx,
            health: health_tx,
        },
        FleetSide {
            inbox: inbox_rx,
            summary: summary_tx,
            health: health_rx,
        },
    )
}

impl UplinkSide {
    /// An uplink with no fleet stage behind it (benchmarks, tests).
    pub fn detached() -> UplinkSide {
        let (_, summary) = watch::channel(Summary::default());
        let (health, _) = watch::channel(LinkHealth::default());
        UplinkSide {
            inbox: None,
            summary,
            health,
        }
    }
}

/// The topics the uplink subscribes to for `config`: none when fleet
/// config is off (no trusted keys), else the node's layers.
pub(crate) fn config_topics(config: &AgentConfig) -> Vec<String> {
    if !config.fleet.enabled() {
        return Vec::new();
    }
    super::held::node_layers(config)
        .iter()
        .map(|t: &Target| t.topic(&config.node.fleet))
        .collect()
}
