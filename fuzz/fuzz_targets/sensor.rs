//! Fuzz target: see `edge_agent::fuzz::sensor_records`.
#![cfg_attr(feature = "libfuzzer", no_main)]
edge_agent_fuzz::target!(edge_agent::fuzz::sensor_records);
