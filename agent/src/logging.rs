//! Log set-up: `tracing` to stderr, one line per event. Plain text by default
//! (journald adds time and unit, so none are printed), JSON on request.
//! `EDGE_AGENT_LOG` (an `EnvFilter` directive) overrides the configured level.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Call once, before anything logs.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_env("EDGE_AGENT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{},aya=warn,rumqttc=warn", cfg.level.as_str()))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (LogFormat::Plain, true) => builder.without_time().with_target(false).try_init(),
        (LogFormat::Plain, false) => builder.with_target(false).try_init(),
    };
    // A second init (tests) is harmless.
    let _ = result;
}
