//! `edge-agent config check [FILE]`.

use std::path::Path;

use super::Exit;
use crate::config::AgentConfig;

pub(crate) fn check(path: &Path) -> Exit {
    match AgentConfig::load(path) {
        Ok(loaded) => {
            let c = &loaded.config;
            let onoff = |b: bool| if b { "on" } else { "off" };
            println!("{}: OK", path.display());
            println!(
                "  node {} in fleet {}{}",
                c.node.id,
                c.node.fleet,
                groups(&c.node.groups)
            );
            println!(
                "  state {}  socket {}",
                c.paths.state_dir.display(),
                c.paths.control_socket().display()
            );
            println!(
                "  uplink {}  sensor {}  metrics {}  bootstrap {}",
                if c.uplink.enabled() {
                    c.uplink.url.as_str()
                } else {
                    "off (reports stay in the outbox)"
                },
                onoff(c.sensor.enabled),
                onoff(c.metrics.enabled),
                onoff(c.bootstrap.enabled),
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Config
        }
    }
}

fn groups(g: &[String]) -> String {
    if g.is_empty() {
        String::new()
    } else {
        format!(", groups {}", g.join(", "))
    }
}

/// `edge-agent config show [--effective] [--origin]`: the config as the
/// agent reads it, every key with its value (defaults included, relative
/// paths resolved). `--effective`: with the fleet layers the node holds
/// laid over it (what the agent starts with). `--origin`: one dotted key
/// per line, each with the file or layer it came from (still valid TOML).
pub(crate) fn show(path: &Path, effective: bool, origin: bool) -> Exit {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(source) => {
            eprintln!(
                "{}",
                crate::config::ConfigError::Read {
                    path: path.to_path_buf(),
                    source
                }
            );
            return Exit::Config;
        }
    };
    let local = match AgentConfig::from_toml(&text, path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Config;
        }
    };
    let (state, state_note) = crate::fleet::state::Dir::new(&local.paths.state_dir).load_quiet();
    let start = if effective {
        crate::fleet::held::start(&text, path, &local, &state)
    } else {
        let alone = AgentConfig {
            fleet: Default::default(),
            ..local.clone()
        };
        crate::fleet::held::start(&text, path, &alone, &state)
    };
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Config;
        }
    };
    let e = &start.effective;
    let mut sources = vec![path.display().to_string()];
    sources.extend(start.layers.iter().map(|l| l.label()));
    println!(
        "# {} config of node {} in fleet {}: {}",
        if effective { "effective" } else { "local" },
        e.config.node.id,
        e.config.node.fleet,
        sources.join(" + ")
    );
    println!("# effective_sha256 {}", e.sha256);
    if effective {
        if !local.fleet.enabled() {
            println!("# fleet config is off (fleet.trusted_keys is empty)");
        }
        if let Some(note) = &state_note {
            println!("# note: {note}");
        }
        if let Some(t) = &state.trial {
            println!(
                "# a trial of {} v{} is in progress (since {}); it joins the layers above if every stage stays healthy",
                t.target, t.version, t.started_at
            );
        }
    }
    for note in &start.notes {
        println!("# note: {note}");
    }
    println!();
    if origin {
        print_with_origins(path, e);
    } else {
        print!(
            "{}",
            toml::to_string(&e.config).expect("a config serializes")
        );
    }
    Exit::Ok
}

fn print_with_origins(path: &Path, e: &crate::fleet::overlay::Effective) {
    use crate::fleet::overlay::{Origin, leaves};
    let lines: Vec<(String, String)> = leaves(&e.config)
        .into_iter()
        .map(|(key, value)| {
            let plain = key.replace('"', "");
            let mut origin = match e.origin(&plain) {
                Origin::Default => "default".to_string(),
                Origin::Local => path.display().to_string(),
                Origin::Layer(l) => l,
            };
            if plain == "rules.files" && !e.rule_layers.is_empty() {
                origin = format!("{origin} + rule files of {}", e.rule_layers.join(", "));
            }
            (format!("{key} = {value}"), origin)
        })
        .collect();
    let width = lines
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0)
        .min(60);
    for (line, origin) in lines {
        println!("{line:<width$}  # {origin}");
    }
}
