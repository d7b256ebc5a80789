//! Fuzz target: see `edge_agent::fuzz::fleet_bundle`.
#![cfg_attr(feature = "libfuzzer", no_main)]
edge_agent_fuzz::target!(edge_agent::fuzz::fleet_bundle);
