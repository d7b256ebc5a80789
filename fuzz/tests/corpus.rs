//! Every committed corpus input, crashes found in the past included, runs
//! through its target in the ordinary test suite (no libFuzzer, no
//! instrumentation): a fix that regresses fails here before CI fuzzes.

use std::path::Path;

fn replays(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let inputs = edge_agent_fuzz::inputs(&dir).expect("the corpus directory");
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    for input in inputs {
        let data = std::fs::read(&input).expect("a corpus file");
        eprintln!("{}", input.display());
        f(&data);
    }
}

#[test]
fn the_rules_corpus_loads_without_a_panic() {
    replays("rules", edge_agent::fuzz::rules);
}

#[test]
fn the_config_corpus_parses_without_a_panic() {
    replays("config", edge_agent::fuzz::config);
}

#[test]
fn the_control_corpus_is_answered_without_a_panic() {
    replays("control", edge_agent::fuzz::control);
}

#[test]
fn the_fleet_corpus_is_inspected_without_a_panic() {
    replays("fleet", edge_agent::fuzz::fleet_bundle);
}

#[test]
fn the_sensor_corpus_decodes_without_a_panic() {
    replays("sensor", edge_agent::fuzz::sensor_records);
}
