//! Write what the fuzz targets start from and is generated rather than
//! written by hand: the sensor target's seed records
//! (`fuzz/corpus/sensor/seed-*`) and the rules target's dictionary
//! (`fuzz/dict/rules.dict`). Run it again when `ebpf/abi.h` or the rule
//! fields change: `cargo run -p edge-agent-fuzz --bin seeds`.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = fuzz.join("corpus/sensor");
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in edge_agent::fuzz::sensor_seeds() {
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, bytes)?;
        println!("{}", path.display());
    }
    let mut dict = String::from("# Written by `cargo run -p edge-agent-fuzz --bin seeds`.\n");
    for word in edge_agent::fuzz::rules_dictionary() {
        // libFuzzer's dictionary syntax: a quoted string, \\ and \" escaped.
        let quoted = word
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\x0A");
        writeln!(dict, "\"{quoted}\"").expect("writing to a String");
    }
    std::fs::create_dir_all(fuzz.join("dict"))?;
    let path = fuzz.join("dict/rules.dict");
    std::fs::write(&path, dict)?;
    println!("{}", path.display());
    Ok(())
}
