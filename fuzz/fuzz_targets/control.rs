//! Fuzz target: see `edge_agent::fuzz::control`.
#![cfg_attr(feature = "libfuzzer", no_main)]
edge_agent_fuzz::target!(edge_agent::fuzz::control);
