//! The command line: one module per subcommand. Each returns an [`Exit`]
//! (or an error that `main` prints); none of them calls `process::exit`.
//!
//! Exit codes are part of the interface (documented in the README):
//! see [`Exit`].

mod alerts;
mod bootstrap;
mod config_cmd;
pub(crate) mod fleet;
mod fleet_bridge;
mod outbox_cmd;
mod rules;
mod run;
mod sensor;
mod status;
mod test_alert;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Exit codes. Stable: scripts and systemd (`RestartPreventExitStatus=78`) rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success; for `bootstrap plan`: the node is in sync.
    Ok = 0,
    /// A runtime failure (the message says which).
    Failure = 1,
    /// Not a failure, but attention needed: changes pending (`bootstrap
    /// plan`), rules that did not load (`rules check`).
    Pending = 2,
    /// The daemon is not running (commands that need it).
    NotRunning = 3,
    /// The control socket refused us: run as root or join the control group.
    PermissionDenied = 4,
    /// Bad command-line usage (EX_USAGE).
    Usage = 64,
    /// The config file is missing or invalid (EX_CONFIG); systemd does not
    /// restart the agent on it, since a restart would fail the same way.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "edge-agent",
    version = crate::VERSION,
    about = "Node agent for K3s edge fleets: prepares the node, watches it, keeps what it must report, and syncs it over MQTT.",
    after_help = "On a node, start with `edge-agent status`: it says whether the agent runs, is connected, is protecting the node, and what it is waiting to send.\nExit codes: 0 ok, 1 failure, 2 attention needed, 3 daemon not running, 4 permission denied, 64 usage, 78 bad config."
)]
pub struct Cli {
    /// Config file.
    #[arg(long, short = 'c', global = true, value_name = "PATH", env = "EDGE_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub(crate) config: PathBuf,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent in the foreground (what systemd starts).
    Run,
    /// Is this node healthy, connected, protected, and what is it waiting to send?
    Status {
        /// Print the status as one JSON document (stable keys, `schema` versioned).
        #[arg(long)]
        json: bool,
        /// Also list every number each stage reports (the default is one line per stage).
        #[arg(short, long)]
        verbose: bool,
    },
    /// Work with the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Reconcile the node's K3s host files (plan, apply, rollback, preflight).
    #[command(subcommand)]
    Bootstrap(bootstrap::BootstrapCommand),
    /// Check, list and try out detection rules (Falco's rule language).
    #[command(subcommand)]
    Rules(RulesCommand),
    /// What is waiting to be sent, by class (in drain order), oldest first.
    Outbox {
        /// Print one JSON document (stable keys, `schema` versioned).
        #[arg(long)]
        json: bool,
        /// Records listed per class (the daemon lists at most 1000).
        #[arg(long, default_value_t = 10, value_name = "N")]
        limit: usize,
    },
    /// Send synthetic alerts through the running daemon to the broker, to check a node end to end.
    #[command(name = "test-alert")]
    TestAlert {
        /// Falco priority: emergency, alert, critical, error, warning, notice, info, debug.
        #[arg(long, default_value = "critical", value_name = "P")]
        priority: String,
        /// How many alerts (1-1000).
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: u64,
        /// How long to wait for the broker's acknowledgement (e.g. "10s"; "0s": only store them).
        #[arg(long, default_value = "10s", value_name = "DURATION")]
        wait: crate::config::HumanDuration,
        /// Print the daemon's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What fired on this node: the alerts kept after delivery (rules.history), newest last.
    Alerts {
        /// Keep printing new alerts until Ctrl-C (needs the running daemon).
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only alerts at most this old (e.g. "1h", "1d").
        #[arg(long, value_name = "DURATION")]
        since: Option<crate::config::HumanDuration>,
        /// Only this rule (any case; globs such as "Terminal*" work).
        #[arg(long, value_name = "R")]
        rule: Option<String>,
        /// Falco's JSON, one alert per line.
        #[arg(long)]
        json: bool,
    },
    /// The eBPF sensor.
    #[command(subcommand)]
    Sensor(SensorCommand),
    /// Operator commands against ops.toml, not on a node: keys, signed config bundles, the fleet bridge, the fleet's alerts.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Print the version and build target.
    Version,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check a config file (default: the one given with --config) and print every problem.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
    /// Print the config with every key (defaults included); --effective adds the fleet layers this node holds.
    Show {
        /// The local file with the fleet's layers (fleet, groups, node) laid over it: what the agent runs.
        #[arg(long)]
        effective: bool,
        /// One key per line with the file or layer it came from.
        #[arg(long)]
        origin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Load rule files as the daemon would and list every problem (default: the config's rules.files).
    Check {
        /// Rule files, loaded in order.
        files: Vec<PathBuf>,
    },
    /// The daemon's rules with priority, state and hit counts.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded events (JSON lines, as `sensor watch --json` prints) and print the alerts.
    Test {
        /// Events file, one event per line; `-` reads standard input.
        #[arg(long, value_name = "FILE")]
        events: PathBuf,
        /// Rule files to use instead of the config's rules.files.
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SensorCommand {
    /// Stream the sensor's decoded events until Ctrl-C (from the daemon; a
    /// sensor of its own when no daemon runs).
    Watch {
        /// One JSON event per line (what `rules test --events` reads).
        #[arg(long)]
        json: bool,
        /// Run a sensor in this process even if the daemon runs (root needed; never kills).
        #[arg(long)]
        local: bool,
    },
}

impl Command {
    /// Long-running commands set up their own logging (and keep SIGPIPE ignored).
    pub(crate) fn is_service(&self) -> bool {
        match self {
            Command::Run => true,
            Command::Fleet(f) => f.is_service(),
            _ => false,
        }
    }
}

impl Cli {
    /// Whether the command is long-running (see [`Command::is_service`]).
    pub fn is_service(&self) -> bool {
        self.command.is_service()
    }

    /// Parse argv; usage errors print clap's message and map to [`Exit::Usage`]
    /// (clap's own code 2 is taken by "attention needed").
    pub fn parse_or_exit() -> Result<Cli, ExitCode> {
        match Cli::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) => {
                let _ = e.print();
                Err(match e.kind() {
                    clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion => Exit::Ok.into(),
                    _ => Exit::Usage.into(),
                })
            }
        }
    }
}

/// Run the command. Errors are for `main` to print; exit codes for
/// expected outcomes come back as `Ok(Exit)`.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run => run::run(&cli.config),
        Command::Status { json, verbose } => {
            let detail = if verbose {
                status::Detail::All
            } else {
                status::Detail::Summary
            };
            block_on(status::status(&cli.config, json, detail))
        }
        Command::Outbox { json, limit } => block_on(outbox_cmd::outbox(&cli.config, json, limit)),
        Command::TestAlert {
            priority,
            count,
            wait,
            json,
        } => block_on(test_alert::test_alert(
            &cli.config,
            &priority,
            count,
            wait.get(),
            json,
        )),
        Command::Config(ConfigCommand::Check { file }) => {
            Ok(config_cmd::check(file.as_deref().unwrap_or(&cli.config)))
        }
        Command::Config(ConfigCommand::Show { effective, origin }) => {
            Ok(config_cmd::show(&cli.config, effective, origin))
        }
        Command::Bootstrap(cmd) => bootstrap::run(&cli.config, cmd),
        Command::Rules(RulesCommand::Check { files }) => rules::check(&cli.config, &files),
        Command::Rules(RulesCommand::List { json }) => block_on(rules::list(&cli.config, json)),
        Command::Rules(RulesCommand::Test { events, rules }) => {
            rules::test(&cli.config, &events, &rules)
        }
        Command::Sensor(SensorCommand::Watch { json, local }) => {
            block_on(sensor::watch(&cli.config, json, local))
        }
        Command::Alerts {
            follow,
            since,
            rule,
            json,
        } => block_on(alerts::alerts(
            &cli.config,
            alerts::Options {
                follow,
                since: since.map(|d| d.get()),
                rule,
                json,
            },
        )),
        Command::Fleet(cmd) => fleet::run(&cli.config, cmd),
        Command::Version => {
            version::print();
            Ok(Exit::Ok)
        }
    }
}

/// A small runtime for the one-shot commands.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime for a CLI command")
        .block_on(f)
}

/// Start logging for one-shot commands: warnings and errors only.
pub fn init_cli_logging() {
    crate::logging::init(&crate::config::LogConfig {
        level: crate::config::LogLevel::Warn,
        ..Default::default()
    });
}
