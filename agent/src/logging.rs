//! Log set-up: `tracing` to stderr, one line per event. Plain text by default
//! (journald adds time and unit, so none are printed), JSON on request.
//! `EDGE_AGENT_LOG` (`level` and `target=level` directives, comma-separated,
//! e.g. "debug,rumqttc=info") overrides the configured level. The filter
//! is tracing-subscriber's `Targets`, not `EnvFilter`: `EnvFilter`'s span and
//! field directives need a regex DFA builder that cost the static binary
//! about 150 KiB, for a debugging aid nobody used.
//!
//! Owns the global subscriber and the handle that changes the level on a
//! config reload (`log.level` applies live; `log.format` needs a restart).
//! Never logs anything itself.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat, LogLevel};

/// Libraries that are chatty at `info`: their warnings are enough unless
/// `EDGE_AGENT_LOG` asks for more.
const QUIET_LIBRARIES: &str = "aya=warn,rumqttc=warn";

/// Changes the log level of the running process.
#[derive(Clone)]
pub(crate) struct LogHandle {
    /// `None` when `EDGE_AGENT_LOG` set the filter (it wins over the config)
    /// or when the subscriber could not be installed.
    reload: Option<reload::Handle<Targets, Registry>>,
}

impl LogHandle {
    /// Apply `level`. Returns false when the level is pinned by `EDGE_AGENT_LOG`.
    pub(crate) fn set_level(&self, level: LogLevel) -> bool {
        match &self.reload {
            Some(h) => h.reload(config_filter(level)).is_ok(),
            None => false,
        }
    }
}

fn config_filter(level: LogLevel) -> Targets {
    format!("{},{QUIET_LIBRARIES}", level.as_str())
        .parse()
        .expect("a level and QUIET_LIBRARIES are valid directives")
}

/// `EDGE_AGENT_LOG`, when it is set and parses.
fn env_filter() -> Option<Targets> {
    let directives = std::env::var("EDGE_AGENT_LOG").ok()?;
    match directives.parse() {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "edge-agent: EDGE_AGENT_LOG={directives:?} ignored ({e}): expected directives such as \"debug,rumqttc=info\""
            );
            None
        }
    }
}

/// Install the global subscriber. Call once, before anything logs; a second
/// call (tests) leaves the first subscriber in place.
pub(crate) fn init(cfg: &LogConfig) -> LogHandle {
    let (filter, pinned) = match env_filter() {
        Some(f) => (f, true),
        None => (config_filter(cfg.level), false),
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

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing::level_filters::LevelFilter;

    use super::*;

    #[test]
    fn every_configured_level_is_a_filter_that_keeps_libraries_quieter() {
        for (level, want) in [
            (LogLevel::Error, LevelFilter::ERROR),
            (LogLevel::Warn, LevelFilter::WARN),
            (LogLevel::Info, LevelFilter::INFO),
            (LogLevel::Debug, LevelFilter::DEBUG),
            (LogLevel::Trace, LevelFilter::TRACE),
        ] {
            let f = config_filter(level);
            assert_eq!(f.default_level(), Some(want), "{level:?}");
        }
        let f = config_filter(LogLevel::Debug);
        assert!(f.would_enable("edge_agent::uplink", &Level::DEBUG));
        assert!(!f.would_enable("rumqttc::state", &Level::INFO));
        assert!(f.would_enable("rumqttc::state", &Level::WARN));
    }

    #[test]
    fn edge_agent_log_directives_name_a_level_per_target() {
        let f: Targets = "debug,rumqttc=info".parse().unwrap();
        assert!(f.would_enable("edge_agent::fleet", &Level::DEBUG));
        assert!(f.would_enable("rumqttc::eventloop", &Level::INFO));
        assert!(!f.would_enable("rumqttc::eventloop", &Level::DEBUG));
    }
}
