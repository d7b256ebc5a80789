//! Shared helpers for the integration tests (spawning the real binary, brokers, scratch roots).
