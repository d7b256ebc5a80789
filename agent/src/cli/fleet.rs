//! `edge-agent fleet ...`: the operator's commands (keys, bundles, pushing
//! them, watching what nodes did). They run on an operator's workstation
//! against the fleet's broker, configured by `--config ops.toml` (a file in
//! agent.toml's format: `[node] fleet`, `[uplink]`).

mod sign;
mod watch;

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::Exit;
use crate::config::HumanDuration;
use crate::fleet::ops::{Ops, OpsError};

#[derive(Debug, Subcommand)]
pub(crate) enum FleetCommand {
    /// Make an Ed25519 key pair for signing bundles: FILE (private, mode 0600) and FILE.pub (what nodes list in fleet.trusted_keys).
    Keygen {
        /// Where to write the private key; never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make a signed config bundle for the whole fleet, a group or one node.
    Bundle {
        /// Which layer: fleet, group:NAME or node:ID.
        #[arg(long, value_name = "fleet|group:NAME|node:ID")]
        target: String,
        /// The bundle's version: above every version published for this target before.
        #[arg(long, value_name = "N")]
        version: u64,
        /// TOML in agent.toml's format laid over the nodes' local files ([rules], [sensor], [metrics], [outbox], [bootstrap], log.level, uplink.inflight, uplink.keep_alive).
        #[arg(long, value_name = "FILE")]
        overlay: Option<PathBuf>,
        /// A rule file to ship (repeatable); nodes load it after their local rule files, in name order.
        #[arg(long = "rules-file", value_name = "FILE")]
        rules_files: Vec<PathBuf>,
        /// The private key that signs it (from `fleet keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the bundle.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The fleet it is for (default: [node] fleet of --config ops.toml).
        #[arg(long, value_name = "NAME")]
        fleet: Option<String>,
        /// Nodes refuse it after this long (e.g. "7d"); default: never.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<HumanDuration>,
    },
    /// Publish a bundle (retained, QoS 1) on its target's config topic and wait for the broker's acknowledgement.
    Publish {
        /// The bundle file `edge-agent fleet bundle` wrote; sent byte for byte.
        bundle: PathBuf,
    },
    /// What each node did with each bundle: the last result per node and layer; exit 2 if one is not `applied`.
    Results {
        /// Keep printing results as nodes report them (Ctrl-C to stop).
        #[arg(long)]
        watch: bool,
        /// Only this node.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// One JSON object per line (the node's result record, with `node`).
        #[arg(long)]
        json: bool,
    },
    /// Every node from its retained state: online or not, last seen, version, backlog, config per layer; exit 2 if one is offline or its last result is not `applied`.
    Nodes {
        /// One JSON document (every node's state message, with `node`); with --watch, one line per state message instead.
        #[arg(long)]
        json: bool,
        /// Keep printing a line whenever a node's state changes (Ctrl-C to stop).
        #[arg(long)]
        watch: bool,
    },
    /// Run the fleet bridge: alerts and events to webhooks, metrics to Prometheus remote-write (a long-running service).
    Bridge {
        /// Print the running bridge's status (from its bridge.listen endpoint) and exit.
        #[arg(long)]
        status: bool,
        /// With --status: print the status document as JSON.
        #[arg(long, requires = "status")]
        json: bool,
    },
    /// The fleet's alerts, de-duplicated: what arrived since the last run, or --follow. Alerts a filter leaves out are kept for the next run.
    Alerts {
        /// Keep printing new alerts until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this node.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// Only alerts at or above this priority (emergency ... debug).
        #[arg(long, value_name = "P")]
        priority: Option<String>,
        /// Only alerts at most this old (e.g. "1h").
        #[arg(long, value_name = "DURATION")]
        since: Option<crate::config::HumanDuration>,
        /// One JSON object per line (the alert as the node sent it).
        #[arg(long)]
        json: bool,
    },
}

impl FleetCommand {
    /// Whether the command is a long-running service with its own logging.
    pub(crate) fn is_service(&self) -> bool {
        matches!(self, FleetCommand::Bridge { status: false, .. })
    }
}

pub(crate) fn run(config: &Path, cmd: FleetCommand) -> anyhow::Result<Exit> {
    match cmd {
        FleetCommand::Keygen { out } => Ok(sign::keygen(&out)),
        FleetCommand::Bundle {
            target,
            version,
            overlay,
            rules_files,
            key,
            out,
            fleet,
            expires_in,
        } => Ok(sign::bundle(
            config,
            &sign::BundleArgs {
                target,
                version,
                overlay,
                rules_files,
                key,
                out,
                fleet,
                expires_in: expires_in.map(HumanDuration::get),
            },
        )),
        FleetCommand::Publish { bundle } => super::block_on(sign::publish(config, &bundle)),
        FleetCommand::Results { watch, node, json } => {
            super::block_on(watch::results(config, watch, node.as_deref(), json))
        }
        FleetCommand::Nodes { json, watch } => super::block_on(watch::nodes(config, json, watch)),
        FleetCommand::Bridge { status, json } => super::fleet_bridge::bridge(config, status, json),
        FleetCommand::Alerts {
            follow,
            node,
            priority,
            since,
            json,
        } => super::fleet_bridge::alerts(config, follow, node, priority, since, json),
    }
}

/// Load `ops.toml` for a command that talks to the broker; a bad or
/// incomplete file is printed and becomes exit 78.
pub(crate) fn load_ops(config: &Path) -> Result<Ops, Exit> {
    Ops::load(config).map_err(|e| {
        print_ops_error(&e);
        exit_for(&e)
    })
}

/// Print an operator-side error the way every fleet command does.
pub(crate) fn print_ops_error(e: &OpsError) {
    eprintln!("edge-agent fleet: {e}");
    if let OpsError::Config(crate::config::ConfigError::Read { .. }) = e {
        eprintln!("(fleet commands read the operator's own file: pass --config ops.toml)");
    }
}

/// 78 for a bad `ops.toml` or unreadable TLS files, 1 for the rest.
pub(crate) fn exit_for(e: &OpsError) -> Exit {
    if e.is_config() {
        Exit::Config
    } else {
        Exit::Failure
    }
}
