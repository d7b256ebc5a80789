//! Log set-up: `tracing` to stderr, one line per event. Plain text by default
//! (journald adds time and unit, so none are printed), JSON on request.
//! `EDGE_AGENT_LOG` (an `EnvFilter` directive) overrides the configured level.
//!
//! Owns the global subscriber and the handle that changes the level on a
//! config reload (`log.level` applies live; `log.format` needs a restart).
//! Never logs anything itself.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat, LogLevel};

/// Libraries that are chatty at `info`: their warnings are enough unless
/// `EDGE_AGENT_LOG` asks for more.
const QUIET_LIBRARIES: &str = "aya=warn,rumqttc=warn";

/// Changes the log level of the running process.
#[derive(Clone)]
pub struct LogHandle {
    /// `None` when `EDGE_AGENT_LOG` set the filter (it wins over the config)
    /// or when the subscriber could not be installed.
    reload: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogHandle {
    /// A handle that changes nothing (tests).
    pub fn detached() -> Self {
        Self { reload: None }
    }

    /// Apply `level`. Returns false when the level is pinned by `EDGE_AGENT_LOG`.
    pub fn set_level(&self, level: LogLevel) -> bool {
        match &self.reload {
            Some(h) => h.reload(config_filter(level)).is_ok(),
            None => false,
        }
    }
}

fn config_filter(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("{},{QUIET_LIBRARIES}", level.as_str()))
}

/// Install the global subscriber. Call once, before anything logs; a second
/// call (tests) leaves the first subscriber in place.
pub fn init(cfg: &LogConfig) -> LogHandle {
    let (filter, pinned) = match EnvFilter::try_from_env("EDGE_AGENT_LOG") {
        Ok(f) => (f, true),
        Err(_) => (config_filter(cfg.level), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        (LogFormat::Plain, true) => fmt.without_time().with_target(false).boxed(),
        (LogFormat::Plain, false) => fmt.with_target(false).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok();
    LogHandle {
        reload: (installed && !pinned).then_some(handle),
    }
}
