//! `[outbox]`: the durable queue of everything the node must report.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ByteSize, Problem};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Byte budget of the outbox file. When full, metrics go first, then node
    /// events, then alerts; critical alerts last. Sized for a small eMMC.
    pub max_bytes: ByteSize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(256),
        }
    }
}

impl OutboxConfig {
    pub(super) fn resolve(&mut self, _base: &Path) {}

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        // Below this the budget cannot hold even one metrics batch plus alerts.
        const MIN_BYTES: ByteSize = ByteSize::mib(1);
        if self.max_bytes < MIN_BYTES {
            problems.push(Problem::new(
                "outbox.max_bytes",
                format!("must be at least {MIN_BYTES}, got {}", self.max_bytes),
            ));
        }
    }
}
