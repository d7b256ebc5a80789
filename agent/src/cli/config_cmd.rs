//! `edge-agent config check [FILE]`.

use std::path::Path;

use super::Exit;
use crate::config::AgentConfig;

pub fn check(path: &Path) -> Exit {
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
