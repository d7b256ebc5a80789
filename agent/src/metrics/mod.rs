//! Host metrics: node_exporter-compatible collectors, the local Prometheus
//! endpoint, and metrics batches for the outbox. Owns reading /proc and /sys
//! for metrics. Never blocks on the uplink.
//! (Built in the host metrics issue.)
