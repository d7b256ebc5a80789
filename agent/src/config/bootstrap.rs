//! `[bootstrap]`: the desired state of the node's K3s host files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Problem, resolve_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Run the reconciler in the daemon (drift checks on a timer).
    pub enabled: bool,
    /// Root under which every managed path lives (`/` on a real node).
    pub root: PathBuf,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            root: PathBuf::from("/"),
        }
    }
}

impl BootstrapConfig {
    pub(super) fn resolve(&mut self, base: &Path) {
        resolve_path(base, &mut self.root);
    }

    pub(super) fn validate(&self, _problems: &mut Vec<Problem>) {}
}
