//! `edge-agent bootstrap plan|apply|rollback|preflight [--root DIR] [--force]`.
//!
//! Thin: load the config, build the [`Target`], call the reconciler, print,
//! map to an exit code. `plan` exits 0 when in sync and 2 when changes are
//! pending (or apply would refuse); `apply` and `rollback` exit 0 when done,
//! 2 when done only in part (a sysctl or a restart did not happen), 1 when
//! refused or failed (nothing, or only whole files, written); `preflight`
//! exits 2 when something fails. A bad config exits 78.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::Exit;
use crate::bootstrap::{self, ApplyOptions, Force, Target};
use crate::config::AgentConfig;

#[derive(Debug, Subcommand)]
pub(crate) enum BootstrapCommand {
    /// Show what apply would change (files, modules, sysctls, restarts). Exit 0 in sync, 2 pending.
    Plan {
        /// Scratch root instead of bootstrap.root (every managed path lives below it).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
    /// Render everything, then write the files atomically, load modules, set sysctls, restart what changed.
    Apply {
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Replace files edited by hand, take over files edge-agent did not write, ignore failing preflight.
        #[arg(long)]
        force: bool,
    },
    /// Restore the previous generation from the undo log.
    Rollback {
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        /// Roll back files edited by hand since the last apply (their content stays in the undo log).
        #[arg(long)]
        force: bool,
    },
    /// Check the node: kernel modules, cgroups, swap, tools for the kube-proxy mode, K3s, disk, systemd.
    Preflight {
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

pub(crate) fn run(config_path: &Path, cmd: BootstrapCommand) -> anyhow::Result<Exit> {
    let loaded = match AgentConfig::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Config);
        }
    };
    let root = match &cmd {
        BootstrapCommand::Plan { root }
        | BootstrapCommand::Apply { root, .. }
        | BootstrapCommand::Rollback { root, .. }
        | BootstrapCommand::Preflight { root } => root.clone(),
    };
    if let Some(r) = &root
        && !r.is_dir()
    {
        eprintln!(
            "edge-agent: --root {}: not a directory (create it first)",
            r.display()
        );
        return Ok(Exit::Usage);
    }
    let target = Target::new(&loaded.config, config_path, root.as_deref());
    // Run as root, the reconciler writes under the root: someone else who
    // can write there could point its writes elsewhere.
    if target.root != Path::new("/")
        && nix::unistd::geteuid().is_root()
        && let Some(why) =
            bootstrap::unsafe_root(root.as_deref().unwrap_or(&loaded.config.bootstrap.root))
    {
        let from = if root.is_some() {
            "--root"
        } else {
            "bootstrap.root"
        };
        eprintln!(
            "edge-agent: {from} {}: refused: {why}",
            target.root.display()
        );
        return Ok(if root.is_some() {
            Exit::Usage
        } else {
            Exit::Config
        });
    }
    if target.cfg.role.is_none() && !matches!(cmd, BootstrapCommand::Preflight { .. }) {
        eprintln!(
            "{}",
            bootstrap::BootstrapError::NoDesiredState {
                config: config_path.display().to_string()
            }
        );
        return Ok(Exit::Config);
    }
    match cmd {
        BootstrapCommand::Plan { .. } => {
            let a = bootstrap::assess(&target, Force::none())?;
            print!("{}", a.text(&target.root));
            Ok(if a.plan.in_sync() && a.interrupted.is_none() {
                Exit::Ok
            } else {
                Exit::Pending
            })
        }
        BootstrapCommand::Apply { force, .. } => {
            let opts = ApplyOptions {
                force: if force { Force::all() } else { Force::none() },
                action: "apply",
            };
            finish(&target, bootstrap::apply(&target, opts))
        }
        BootstrapCommand::Rollback { force, .. } => {
            finish(&target, bootstrap::rollback(&target, force))
        }
        BootstrapCommand::Preflight { .. } => {
            let (k3s, findings) = bootstrap::preflight(&target);
            println!(
                "preflight for root {} (K3s {})",
                target.root.display(),
                k3s.describe()
            );
            for f in &findings {
                println!("  {:<4} {}", f.severity.as_str(), f.message);
            }
            let fails = findings
                .iter()
                .filter(|f| f.severity == bootstrap::preflight::Severity::Fail)
                .count();
            if fails > 0 {
                println!("{fails} failing check{}", if fails == 1 { "" } else { "s" });
                Ok(Exit::Pending)
            } else {
                println!("no failing checks");
                Ok(Exit::Ok)
            }
        }
    }
}

fn finish(
    target: &Target,
    result: Result<bootstrap::ApplyReport, bootstrap::BootstrapError>,
) -> anyhow::Result<Exit> {
    match result {
        Ok(report) => {
            print!("{}", report.text(&target.root));
            Ok(if report.outcome() == "ok" {
                Exit::Ok
            } else {
                Exit::Pending
            })
        }
        Err(e) => {
            eprintln!("edge-agent: {e}");
            Ok(Exit::Failure)
        }
    }
}
